"""Between SDP and the router: what a publisher sends, and what a subscriber is offered.

* :func:`published_tracks` reads the tracks of a publish connection from the browser's offer and
  the SFU's answer (:func:`~meet443.proto.sdp.negotiation.build_answer`): per accepted section its
  codecs with their payload types (RFC 8866 ``rtpmap``, RFC 4588 ``apt``), SSRCs (RFC 5576) or RIDs
  (RFC 8853 ``a=simulcast``, lowest first as browsers order their encodings) and header extension
  ids (RFC 8285).
* :func:`publisher_video_codecs` and :func:`accepted_codecs` read what
  :class:`~meet443.sfu.codecs.VideoCodecPlan` weighs: the video codecs a publisher offers, in its
  order, and those a subscriber's answer kept.
* :func:`subscriber_offer` writes the offer of a subscribe connection from the router's slots. Its
  payload types and extension ids are the SFU's own (:data:`SUBSCRIBER_PROFILE`), the same for every
  subscriber and every publisher behind a slot, so a slot can change hands without renegotiation:
  the router maps each publisher's numbers onto these per packet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from meet443.proto.sdp.attributes import Direction, ExtMap, SetupRole
from meet443.proto.sdp.codecs import Codec
from meet443.proto.sdp.description import MediaDescription, SessionDescription
from meet443.proto.sdp.negotiation import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
    LocalTransport,
    MediaPolicy,
    SendSection,
    build_subscriber_offer,
    offered_codecs,
)
from meet443.sfu.tracks import PublishedTrack, Slot, SubscriberProfile, TrackCodec

_VIDEO_FEEDBACK: tuple[tuple[str, str | None], ...] = (
    ("goog-remb", None),
    ("ccm", "fir"),
    ("nack", None),
    ("nack", "pli"),
)

#: The SFU's side of every subscribe connection (payload types as Chromium numbers them).
SUBSCRIBER_AUDIO_CODECS = (Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1"),)
SUBSCRIBER_VIDEO_CODECS = (
    Codec(96, "VP8", 90000, None, None, _VIDEO_FEEDBACK),
    Codec(97, "rtx", 90000, None, "apt=96"),
    Codec(
        102,
        "H264",
        90000,
        None,
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        _VIDEO_FEEDBACK,
    ),
    Codec(103, "rtx", 90000, None, "apt=102"),
)
#: Forwarded header extensions: abs-send-time lets the subscriber estimate bandwidth and send REMB
#: (the router picks simulcast layers from it); the audio level stays for the receiver's meters.
SUBSCRIBER_AUDIO_EXTENSIONS = (ExtMap(1, URI_AUDIO_LEVEL), ExtMap(2, URI_ABS_SEND_TIME))
SUBSCRIBER_VIDEO_EXTENSIONS = (ExtMap(2, URI_ABS_SEND_TIME),)

SUBSCRIBER_PROFILE = SubscriberProfile(
    payload_types=(("opus", 111, None), ("vp8", 96, 97), ("h264", 102, 103)),
    extensions=((URI_AUDIO_LEVEL, 1), (URI_ABS_SEND_TIME, 2)),
)

#: What the SFU accepts from publishers: no transport-wide congestion control, so browsers fall back
#: to REMB (receive-side estimation): the router's REMB then sets their target bitrate, and with it
#: how many simulcast layers they send. TWCC would need feedback the SFU does not write yet.
PUBLISH_POLICY = MediaPolicy(
    feedback=frozenset({("nack", None), ("nack", "pli"), ("ccm", "fir"), ("goog-remb", None)}),
    audio_extensions=frozenset({URI_MID, URI_AUDIO_LEVEL, URI_ABS_SEND_TIME}),
    video_extensions=frozenset({URI_MID, URI_RID, URI_REPAIRED_RID, URI_ABS_SEND_TIME}),
)

_DEFAULT_SOURCE = {"audio": "microphone", "video": "camera"}


def published_tracks(
    offer: SessionDescription, answer: SessionDescription, sources: Mapping[str, str]
) -> list[PublishedTrack]:
    """The tracks of every section the answer accepted (``recvonly``), in section order."""
    tracks: list[PublishedTrack] = []
    for accepted in answer.media:
        mid = accepted.mid
        if mid is None or accepted.rejected or accepted.direction is not Direction.RECVONLY:
            continue
        offered = offer.media_by_mid(mid)
        if offered is None:
            continue
        tracks.append(
            PublishedTrack(
                track_id=mid,
                kind=accepted.kind,
                source=sources.get(mid, _DEFAULT_SOURCE.get(accepted.kind, "camera")),
                codecs=_track_codecs(accepted),
                ssrcs=_media_ssrcs(offered),
                rtx_ssrcs=_rtx_pairs(offered),
                rids=_recv_rids(accepted),
                extensions=tuple((e.uri, e.id) for e in accepted.extmaps),
            )
        )
    return tracks


def _track_codecs(section: MediaDescription) -> tuple[TrackCodec, ...]:
    codecs = section.codecs()
    rtx_for = {c.apt: c.payload_type for c in codecs if c.apt is not None}
    return tuple(
        TrackCodec(c.mime_subtype, c.payload_type, c.clock_rate, rtx_for.get(c.payload_type))
        for c in codecs
        if c.mime_subtype != "rtx"
    )


def _media_ssrcs(section: MediaDescription) -> tuple[int, ...]:
    """RFC 5576: media SSRCs in order: the SIM group if any (low to high), else every SSRC not
    repairing another (the second of an FID pair is RTX, RFC 4588 §8.2)."""
    groups = section.ssrc_groups
    for group in groups:
        if group.semantics == "SIM":
            return group.ssrcs
    repairs = {g.ssrcs[1] for g in groups if g.semantics == "FID" and len(g.ssrcs) == 2}
    return tuple(s for s in section.ssrcs() if s not in repairs)


def _rtx_pairs(section: MediaDescription) -> tuple[tuple[int, int], ...]:
    return tuple(
        (g.ssrcs[0], g.ssrcs[1]) for g in section.ssrc_groups if g.semantics == "FID" and len(g.ssrcs) == 2
    )


def _recv_rids(section: MediaDescription) -> tuple[str, ...]:
    simulcast = section.simulcast
    if simulcast is None:
        return ()
    return tuple(stream[0].rid for stream in simulcast.recv if stream)


def publisher_video_codecs(offer: SessionDescription) -> tuple[str, ...]:
    """RFC 3264 §6.1: the video codecs of a publish offer that the SFU takes, in the offerer's order
    (its sections in turn: a camera and a screen share come from one client's preferences)."""
    found: list[str] = []
    for media in offer.media:
        if media.kind == "video" and not media.rejected:
            found += [name for name in offered_codecs(media, PUBLISH_POLICY) if name not in found]
    return tuple(found)


def accepted_codecs(answer: SessionDescription) -> dict[str, frozenset[str]]:
    """RFC 3264 §6.1: per media kind, the codecs of :data:`SUBSCRIBER_PROFILE` (lower-case names)
    that every accepted section of that kind in a subscriber's answer kept; a kind without such a
    section is absent. The answer's formats are a subset of the SFU's offer, with its payload
    types (RFC 8829 §5.3.1), so they are read by number."""
    names = {pt: name for name, pt, _ in SUBSCRIBER_PROFILE.payload_types}
    kept: dict[str, frozenset[str]] = {}
    for media in answer.media:
        if media.rejected or media.kind not in ("audio", "video"):
            continue
        found = frozenset(names[pt] for pt in media.payload_types if pt in names)
        kept[media.kind] = kept[media.kind] & found if media.kind in kept else found
    return kept


def subscriber_offer(
    local: LocalTransport,
    slots: Sequence[Slot],
    *,
    cname: str,
    session_id: int,
    session_version: int,
    setup: SetupRole,
    nack: bool = True,
) -> SessionDescription:
    """RFC 8829 §5.2: one ``sendonly`` section per slot, the SFU's codecs and extension ids.

    Each slot's section announces its fixed SSRC (and RTX SSRC) with a stream id of its own, so the
    browser keeps one receiver per slot however often the slot changes hands. Without ``nack`` the
    browser is not asked for generic NACKs (RFC 4585 §4.2) and gets no RTX format.
    """
    sections = []
    for slot in slots:
        audio = slot.kind == "audio"
        codecs: tuple[Codec, ...] = SUBSCRIBER_AUDIO_CODECS if audio else SUBSCRIBER_VIDEO_CODECS
        if slot.rtx_ssrc is None or not nack:
            codecs = tuple(c for c in codecs if c.mime_subtype != "rtx")
        if not nack:
            codecs = tuple(
                replace(c, feedback=tuple(f for f in c.feedback if f != ("nack", None))) for c in codecs
            )
        sections.append(
            SendSection(
                mid=slot.mid,
                kind=slot.kind,
                codecs=codecs,
                extensions=SUBSCRIBER_AUDIO_EXTENSIONS if audio else SUBSCRIBER_VIDEO_EXTENSIONS,
                ssrc=slot.ssrc,
                rtx_ssrc=slot.rtx_ssrc,
                cname=cname,
                stream_id=f"sfu-{slot.mid}",
                track_id=f"sfu-{slot.mid}",
            )
        )
    return build_subscriber_offer(
        local, sections, session_id=session_id, session_version=session_version, setup=setup
    )
