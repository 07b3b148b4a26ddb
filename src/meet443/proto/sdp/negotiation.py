"""The SFU side of offer/answer (RFC 3264, JSEP RFC 8829) for one browser peer connection.

Two builders, both pure functions from typed descriptions to a typed description:

* :func:`build_answer` answers a browser's *publish* offer: every accepted audio/video section is
  ``recvonly`` (the SFU only receives on it), uses one BUNDLE group (RFC 9143), rtcp-mux (RFC 5761),
  the SFU's ICE-lite credentials and one host candidate per server UDP address (RFC 8839 §5.1,
  RFC 8445 §2.5), ``a=setup:passive`` (the SFU is always the DTLS server, RFC 5763 §5 / RFC 8842),
  Opus, VP8 and H.264 (packetization-mode 1, Constrained Baseline first) with the chosen feedback
  types and header extensions, and ``a=simulcast:recv`` for the offered RIDs (RFC 8853 §5.3).
  Sections it cannot take (data channels, other protocols, no common codec, no rtcp-mux, outside the
  BUNDLE group) are rejected with port 0 as RFC 3264 §6 says.
* :func:`build_subscriber_offer` writes the SFU's own offer of ``sendonly`` sections, one per
  forwarded track, reusing the payload types and extension ids negotiated with the publisher so
  forwarding needs no payload-type rewrite.

:func:`remote_transport` reads what the ICE-lite and DTLS layers need from a remote description.
A well-formed description the SFU cannot negotiate raises :class:`UnacceptableDescription`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from meet443.exceptions import UnacceptableDescription
from meet443.proto.addresses import Address
from meet443.proto.sdp.attributes import (
    Attribute,
    Candidate,
    Direction,
    DirectionAttribute,
    EndOfCandidates,
    ExtMap,
    ExtmapAllowMixed,
    Fingerprint,
    Group,
    IceLite,
    IcePwd,
    IceUfrag,
    Mid,
    Msid,
    Rid,
    RidDirection,
    RtcpMux,
    RtcpRsize,
    Setup,
    SetupRole,
    Simulcast,
    SimulcastList,
    SimulcastStream,
    Ssrc,
    SsrcGroup,
)
from meet443.proto.sdp.codecs import Codec, h264_profile
from meet443.proto.sdp.description import (
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
)

RTP_PROTO = "UDP/TLS/RTP/SAVPF"

# RTP header extensions (RFC 8285) the SFU understands.
URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"  # RFC 9143 §15.2
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"  # RFC 8852 §4.3
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"  # RFC 8852 §4.4
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"  # RFC 6464
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

#: RFC 8839 §5.4: at least 24 bits of randomness in 4 ice-chars, 128 bits in 22.
MIN_UFRAG_LENGTH = 4
MIN_PWD_LENGTH = 22
#: RFC 8445 §5.1.2.2: type preference of host candidates.
HOST_TYPE_PREFERENCE = 126


@dataclass(frozen=True, slots=True)
class LocalTransport:
    """What the SFU writes into every section: ICE-lite credentials, certificate, UDP addresses."""

    ice_ufrag: str
    ice_pwd: str = field(repr=False)
    fingerprint: Fingerprint
    addresses: tuple[Address, ...]

    def __post_init__(self) -> None:
        if len(self.ice_ufrag) < MIN_UFRAG_LENGTH or len(self.ice_pwd) < MIN_PWD_LENGTH:
            raise ValueError("ICE ufrag must have 4 and pwd 22 characters at least (RFC 8839 §5.4)")
        if not self.addresses:
            raise ValueError("the SFU needs at least one UDP address")
        for host, _ in self.addresses:
            ipaddress.ip_address(host)  # candidates carry IP literals, never names

    def candidates(self) -> list[Candidate]:
        """RFC 8839 §5.1: one host candidate per address, the first preferred (RFC 8445 §5.1.2.1)."""
        result = []
        for index, (host, port) in enumerate(self.addresses):
            local_preference = 65535 - index
            priority = (HOST_TYPE_PREFERENCE << 24) | (local_preference << 8) | (256 - 1)
            result.append(Candidate(str(index + 1), 1, "udp", priority, host, port, "host"))
        return result


@dataclass(frozen=True, slots=True)
class RemoteTransport:
    """ICE and DTLS parameters of the remote peer, from its description (RFC 8839, RFC 8122)."""

    ice_ufrag: str
    ice_pwd: str = field(repr=False)
    fingerprints: tuple[Fingerprint, ...]
    setup: SetupRole
    ice_lite: bool = False


@dataclass(frozen=True, slots=True)
class MediaPolicy:
    """What the SFU accepts from a publisher; names are lower-case encoding names."""

    audio_codecs: tuple[str, ...] = ("opus",)
    video_codecs: tuple[str, ...] = ("vp8", "h264")
    #: RFC 4585 feedback types kept in the answer (``(type, parameter)``).
    feedback: frozenset[tuple[str, str | None]] = frozenset(
        {("nack", None), ("nack", "pli"), ("ccm", "fir"), ("goog-remb", None), ("transport-cc", None)}
    )
    audio_extensions: frozenset[str] = frozenset(
        {URI_MID, URI_AUDIO_LEVEL, URI_ABS_SEND_TIME, URI_TRANSPORT_CC}
    )
    video_extensions: frozenset[str] = frozenset(
        {URI_MID, URI_RID, URI_REPAIRED_RID, URI_ABS_SEND_TIME, URI_TRANSPORT_CC}
    )
    #: RFC 8853: the SFU forwards up to three spatial layers.
    max_simulcast_layers: int = 3


DEFAULT_POLICY = MediaPolicy()


# -- reading a remote description ------------------------------------------------------------------


def remote_transport(description: SessionDescription) -> RemoteTransport:
    """The remote ICE credentials, fingerprints and DTLS role of the BUNDLE transport.

    With BUNDLE (RFC 9143 §7) the transport is described by the tagged section: the first mid of
    the first BUNDLE group; without a group, by the first section that is not rejected.
    """
    media = _tagged_section(description)
    credentials = description.ice_credentials(media)
    if credentials is None:
        raise UnacceptableDescription("no ICE ufrag/pwd")
    ufrag, pwd = credentials
    if len(ufrag) < MIN_UFRAG_LENGTH or len(pwd) < MIN_PWD_LENGTH:
        raise UnacceptableDescription("ICE ufrag or pwd too short (RFC 8839 §5.4)")
    fingerprints = description.fingerprints(media)
    if not fingerprints:
        raise UnacceptableDescription("no DTLS fingerprint (RFC 8122)")
    setup = description.setup_of(media) or SetupRole.ACTIVE  # RFC 4145 §4: the default is active
    return RemoteTransport(ufrag, pwd, tuple(fingerprints), setup, description.ice_lite)


def _tagged_section(description: SessionDescription) -> MediaDescription:
    for group in description.bundle_groups():
        for mid in group.mids:
            media = description.media_by_mid(mid)
            if media is not None and not media.rejected:
                return media
    for media in description.media:
        if not media.rejected:
            return media
    raise UnacceptableDescription("every media section is rejected")


# -- answering a publisher -------------------------------------------------------------------------


def build_answer(
    offer: SessionDescription,
    local: LocalTransport,
    *,
    session_id: int,
    session_version: int = 1,
    policy: MediaPolicy = DEFAULT_POLICY,
) -> SessionDescription:
    """RFC 8829 §5.3.1 / RFC 3264 §6: the SFU's answer to a browser's offer (see module docstring)."""
    bundle = offer.bundle_groups()
    if not bundle:
        # All sections share the one ICE-lite transport, so unbundled sections cannot be told apart.
        raise UnacceptableDescription("the offer has no BUNDLE group (RFC 9143)")
    remote = remote_transport(offer)
    if remote.setup is SetupRole.PASSIVE or remote.setup is SetupRole.HOLDCONN:
        raise UnacceptableDescription("the SFU is always the DTLS server; offer setup:actpass or active")
    bundled = set(bundle[0].mids)

    answer = SessionDescription(
        origin=Origin("-", session_id, session_version, "IN", "IP4", "127.0.0.1"),
        times=[Timing()],
    )
    accepted: list[str] = []
    for media in offer.media:
        mid = media.mid
        if mid is None and not media.rejected:
            raise UnacceptableDescription("an offered section has no a=mid (RFC 8829 §5.2.1)")
        if mid is None or mid not in bundled or media.rejected:
            answer.media.append(_rejected(media, local))
            continue
        section = _answer_section(offer, media, mid, local, policy)
        if section is None:
            answer.media.append(_rejected(media, local))
        else:
            answer.media.append(section)
            accepted.append(mid)
    if not accepted:
        raise UnacceptableDescription("no offered section can be accepted")
    # RFC 9143 §7.3: the group lists the accepted mids; the first is the answerer-tagged section.
    order = [mid for mid in bundle[0].mids if mid in accepted]
    answer.attributes = [Group("BUNDLE", tuple(order)), IceLite()]
    if offer.has(ExtmapAllowMixed):
        answer.attributes.append(ExtmapAllowMixed())
    return answer


def _rejected(media: MediaDescription, local: LocalTransport) -> MediaDescription:
    """RFC 3264 §6: port zero, one of the offered formats, and the mid (RFC 8829 §5.3.1).

    The ICE, DTLS and rtcp-mux lines are not needed, but aiortc refuses any section without them.
    """
    section = MediaDescription(
        media.kind, 0, media.proto, media.formats[:1] or ["0"], connections=[Connection()]
    )
    section.attributes += _transport_attributes(local, SetupRole.PASSIVE)
    if media.mid is not None:
        section.attributes.append(Mid(media.mid))
    if media.kind in ("audio", "video"):
        section.attributes.append(RtcpMux())
    return section


def _transport_attributes(local: LocalTransport, setup: SetupRole) -> list[Attribute]:
    return [IceUfrag(local.ice_ufrag), IcePwd(local.ice_pwd), local.fingerprint, Setup(setup)]


def _candidate_attributes(local: LocalTransport) -> list[Attribute]:
    # ICE-lite (RFC 8445 §2.5) has nothing to trickle: all candidates are known up front.
    return [*local.candidates(), EndOfCandidates()]


def _answer_section(
    offer: SessionDescription,
    media: MediaDescription,
    mid: str,
    local: LocalTransport,
    policy: MediaPolicy,
) -> MediaDescription | None:
    if media.kind not in ("audio", "video") or media.proto != RTP_PROTO or not media.rtcp_mux:
        return None
    codecs = _select_codecs(media, policy)
    if not codecs:
        return None
    uris = policy.audio_extensions if media.kind == "audio" else policy.video_extensions
    extensions = [ExtMap(e.id, e.uri) for e in media.extmaps if e.uri in uris]
    offered = offer.direction_of(media)
    # The SFU receives what the browser publishes and sends nothing back on this section.
    direction = Direction.RECVONLY if offered.sends else Direction.INACTIVE

    host, port = local.addresses[0]
    section = MediaDescription(
        media.kind,
        port,
        RTP_PROTO,
        [str(c.payload_type) for c in codecs],
        connections=[Connection.for_address(host)],
    )
    attributes = section.attributes
    attributes += _transport_attributes(local, SetupRole.PASSIVE)
    attributes.append(Mid(mid))
    attributes += extensions
    attributes.append(DirectionAttribute(direction))
    attributes.append(RtcpMux())
    if media.has(RtcpRsize):
        attributes.append(RtcpRsize())
    for codec in codecs:
        attributes += codec.attributes()
    if direction is Direction.RECVONLY and any(e.uri == URI_RID for e in extensions):
        attributes += _simulcast_answer(media, {c.payload_type for c in codecs}, policy)
    attributes += _candidate_attributes(local)
    return section


def offered_codecs(media: MediaDescription, policy: MediaPolicy = DEFAULT_POLICY) -> tuple[str, ...]:
    """RFC 3264 §6.1: the codecs of an offered section that the SFU takes, in the offerer's order
    of preference (lower-case names, each once)."""
    names = policy.audio_codecs if media.kind == "audio" else policy.video_codecs
    found: list[str] = []
    for codec in media.codecs():
        name = codec.mime_subtype
        if name in names and name not in found and _usable(codec):
            found.append(name)
    return tuple(found)


def _select_codecs(media: MediaDescription, policy: MediaPolicy) -> list[Codec]:
    """The policy's preference order; one payload type per codec name, then the RTX formats repairing them."""
    offered = media.codecs()
    names = policy.audio_codecs if media.kind == "audio" else policy.video_codecs
    chosen: list[Codec] = []
    for name in names:
        candidates = [c for c in offered if c.mime_subtype == name and _usable(c)]
        if name == "h264":
            # Constrained Baseline decodes everywhere (RFC 7742 §6.2); prefer it over Baseline.
            candidates.sort(key=lambda c: not _constrained_baseline(c))
        if candidates:
            chosen.append(_with_feedback(candidates[0], policy))
    result: list[Codec] = []
    for codec in chosen:
        result.append(codec)
        result += [_with_feedback(c, policy) for c in offered if c.apt == codec.payload_type][:1]
    return result


def _usable(codec: Codec) -> bool:
    match codec.mime_subtype:
        case "opus":
            # RFC 7587 §7: opus/48000/2 whatever the actual channel count.
            return codec.clock_rate == 48000 and codec.channels == 2
        case "vp8":
            return codec.clock_rate == 90000
        case "h264":
            # RFC 6184: packetization-mode 1 (FU-A/STAP-A), which every browser sends.
            profile = h264_profile(codec)
            return (
                codec.clock_rate == 90000
                and codec.fmtp.get("packetization-mode") == "1"
                and profile is not None
                and profile.baseline_family
            )
        case _:
            return codec.clock_rate > 0


def _constrained_baseline(codec: Codec) -> bool:
    profile = h264_profile(codec)
    return profile is not None and profile.constrained_baseline


def _with_feedback(codec: Codec, policy: MediaPolicy) -> Codec:
    feedback = tuple(f for f in codec.feedback if f in policy.feedback)
    return Codec(codec.payload_type, codec.name, codec.clock_rate, codec.channels, codec.parameters, feedback)


def _simulcast_answer(
    media: MediaDescription, payload_types: set[int], policy: MediaPolicy
) -> list[Attribute]:
    """RFC 8853 §5.3 / RFC 8851 §7: receive the offered send RIDs the SFU can take."""
    simulcast = media.simulcast
    if simulcast is None or not simulcast.send:
        return []
    rids: dict[str, Rid] = {}
    for rid in media.rids:
        if rid.direction is not RidDirection.SEND:
            continue
        restricted = rid.payload_types
        kept = [pt for pt in restricted if pt in payload_types]
        if restricted and not kept:
            continue  # RFC 8851 §7: a RID whose formats are all refused is removed
        rids[rid.rid] = Rid(rid.rid, RidDirection.RECV, _restrict_pt(rid.restrictions, kept))
    streams: list[tuple[tuple[str, bool], ...]] = []
    for stream in simulcast.send:
        alternatives = tuple((a.rid, a.paused) for a in stream if a.rid in rids)
        if alternatives:
            streams.append(alternatives)
    streams = streams[: policy.max_simulcast_layers]
    if not streams:
        return []
    used = {rid for stream in streams for rid, _ in stream}
    recv: SimulcastList = tuple(tuple(SimulcastStream(r, p) for r, p in stream) for stream in streams)
    lines: list[Attribute] = [rids[r] for r in rids if r in used]
    lines.append(Simulcast(recv=recv))
    return lines


def _restrict_pt(restrictions: str | None, kept: list[int]) -> str | None:
    if restrictions is None:
        return None
    items = []
    for item in restrictions.split(";"):
        key, _, _ = item.partition("=")
        items.append(f"pt={','.join(map(str, kept))}" if key == "pt" else item)
    return ";".join(items)


# -- offering to a subscriber ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendSection:
    """One section of an SFU offer: a track the SFU forwards to the subscriber.

    ``stopped`` sections keep their place with port 0 (RFC 8829 §5.2.2: m= sections are never
    removed, only recycled). RTX needs both ``rtx_ssrc`` and an ``rtx`` codec in ``codecs``.
    """

    mid: str
    kind: str
    codecs: tuple[Codec, ...]
    extensions: tuple[ExtMap, ...] = ()
    ssrc: int | None = None
    rtx_ssrc: int | None = None
    cname: str | None = None
    stream_id: str | None = None
    track_id: str | None = None
    direction: Direction = Direction.SENDONLY
    stopped: bool = False


def send_section_from(
    published: MediaDescription,
    *,
    mid: str,
    ssrc: int,
    rtx_ssrc: int | None,
    cname: str,
    stream_id: str,
    track_id: str,
) -> SendSection:
    """A subscriber section that forwards what a publisher's accepted section carries.

    ``published`` is a section of the SFU's *answer* to the publisher: its payload types and
    extension ids are what the publisher sends, so the forwarder can leave them untouched. RID
    extensions are left out: a subscriber receives one layer on one SSRC.
    """
    codecs = tuple(published.codecs())
    if rtx_ssrc is None:
        codecs = tuple(c for c in codecs if c.mime_subtype != "rtx")
    extensions = tuple(
        ExtMap(e.id, e.uri) for e in published.extmaps if e.uri not in (URI_RID, URI_REPAIRED_RID)
    )
    return SendSection(
        mid=mid,
        kind=published.kind,
        codecs=codecs,
        extensions=extensions,
        ssrc=ssrc,
        rtx_ssrc=rtx_ssrc,
        cname=cname,
        stream_id=stream_id,
        track_id=track_id,
    )


def build_subscriber_offer(
    local: LocalTransport,
    sections: Sequence[SendSection],
    *,
    session_id: int,
    session_version: int,
    setup: SetupRole = SetupRole.ACTPASS,
    extmap_allow_mixed: bool = True,
) -> SessionDescription:
    """RFC 8829 §5.2: an offer of ``sendonly`` sections from the SFU, all in one BUNDLE group.

    ``setup`` is ``actpass`` for a new DTLS association (RFC 8842 §5.2; browsers then answer
    ``active``, keeping the SFU the DTLS server); a re-offer on an established association passes
    the role it already has (``passive``), as RFC 8829 §5.2.2 asks.
    """
    if len({s.mid for s in sections}) != len(sections):
        raise ValueError("mids must be unique")
    offer = SessionDescription(
        origin=Origin("-", session_id, session_version, "IN", "IP4", "127.0.0.1"),
        times=[Timing()],
    )
    live = [s.mid for s in sections if not s.stopped]
    offer.attributes = [Group("BUNDLE", tuple(live)), IceLite()]
    if extmap_allow_mixed:
        offer.attributes.append(ExtmapAllowMixed())
    host, port = local.addresses[0]
    for section in sections:
        formats = [str(c.payload_type) for c in section.codecs] or ["0"]
        if section.stopped:
            # RFC 8829 §5.2.2: a stopped section keeps its place with port 0 until recycled.
            media = MediaDescription(section.kind, 0, RTP_PROTO, formats, connections=[Connection()])
            # aiortc refuses sections without ICE, DTLS, rtcp-mux and codec lines, even stopped ones.
            media.attributes += _transport_attributes(local, setup)
            media.attributes += [Mid(section.mid), DirectionAttribute(Direction.INACTIVE), RtcpMux()]
            for codec in section.codecs:
                media.attributes += codec.attributes()
            offer.media.append(media)
            continue
        media = MediaDescription(
            section.kind, port, RTP_PROTO, formats, connections=[Connection.for_address(host)]
        )
        attributes = media.attributes
        attributes += _transport_attributes(local, setup)
        attributes.append(Mid(section.mid))
        attributes += section.extensions
        attributes.append(DirectionAttribute(section.direction))
        if section.stream_id is not None:
            attributes.append(Msid(section.stream_id, section.track_id))
        attributes += [RtcpMux(), RtcpRsize()]
        for codec in section.codecs:
            attributes += codec.attributes()
        attributes += _ssrc_attributes(section)
        attributes += _candidate_attributes(local)
        offer.media.append(media)
    return offer


def _ssrc_attributes(section: SendSection) -> Iterable[Attribute]:
    """RFC 5576 §4: the SSRCs the SFU will send from, with an FID group pairing media and RTX."""
    if section.ssrc is None or not section.direction.sends:
        return []
    ssrcs = [section.ssrc] if section.rtx_ssrc is None else [section.ssrc, section.rtx_ssrc]
    lines: list[Attribute] = []
    if section.rtx_ssrc is not None:
        lines.append(SsrcGroup("FID", tuple(ssrcs)))
    for ssrc in ssrcs:
        if section.cname is not None:
            lines.append(Ssrc(ssrc, "cname", section.cname))
        if section.stream_id is not None:
            msid = (
                section.stream_id if section.track_id is None else f"{section.stream_id} {section.track_id}"
            )
            lines.append(Ssrc(ssrc, "msid", msid))
    return lines
