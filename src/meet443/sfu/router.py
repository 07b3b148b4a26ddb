"""The forwarding core of a group room: RFC 7667 §3.7 "Selective Forwarding Middlebox", without I/O.

One :class:`Router` per room. Every participant has two peer connections (as in LiveKit): a
*publish* one that only sends to the SFU and a *subscribe* one that only receives from it. The
caller hands the router plaintext (already SRTP-unprotected) RTP and RTCP with the connection's
role and ``now``; the router returns :class:`Outgoing` packets (plaintext, for the caller to
SRTP-protect and send) and small events. Random initial values come from ``token_bytes``.

A subscriber receives on a pool of *slots*, one per m-section of its subscribe connection, each
with a fixed outgoing SSRC (and RTX SSRC). Which publisher's track a slot carries changes with the
conversation (last-N, dominant speaker: :mod:`.slots`) without renegotiation: the slot's
:class:`~meet443.sfu.rewrite.StreamRewriter` continues one sequence across sources, switching at
a keyframe it asks the new source for. Only when every slot of a kind is busy does the pool grow
(:class:`~meet443.sfu.events.SlotsGrown`: the caller sends a new offer built from
:meth:`Router.slots`).

What each subscriber may be sent is its :class:`~meet443.sfu.budget.SubscriberBudget` (REMB,
what padding probes verified, the loss-based cap of draft-ietf-rmcat-gcc-02 §6), split among its
videos by :meth:`Router._distribute`; the router feeds it the subscriber's RTCP and sends the
probes' padding.

The per-packet path reads headers in place (``proto/rtp/packet.py``) and rewrites a copy of the
packet without changing its length; everything per track and slot is precomputed at binding time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from meet443.exceptions import ParseError
from meet443.proto.rtp.codecs import h264_is_keyframe, vp8_is_keyframe, vp8_picture_fields
from meet443.proto.rtp.extensions import media_id, rtp_stream_id
from meet443.proto.rtp.packet import (
    HEADER_SIZE,
    ONE_BYTE_PROFILE,
    TWO_BYTE_PROFILE,
    TWO_BYTE_PROFILE_MASK,
    Buffer,
    find_extension,
    is_rtcp,
    padding_packet,
    rewrite_header,
    rtp_header,
    unwrap_rtx,
)
from meet443.proto.rtp.rtcp import (
    FullIntraRequest,
    GenericNack,
    PictureLossIndication,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    parse_rtcp,
    serialize_rtcp,
)
from meet443.proto.sdp.negotiation import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
    URI_TRANSPORT_CC,
)
from meet443.sfu.bitrate import BitrateMeter
from meet443.sfu.budget import (
    PROBE_PADDING_BYTES,
    RETRANSMIT_BURST,
    Probing,
    SubscriberBudget,
    repair_rate,
    share_out,
)
from meet443.sfu.events import (
    DominantSpeaker,
    DominantSpeakerChanged,
    KeyframeNeeded,
    LayerSwitched,
    LayerTargetChanged,
    RouterEvent,
    SlotsAssigned,
    SlotsGrown,
    SpeakingChanged,
)
from meet443.sfu.keyframes import KeyframeRequester
from meet443.sfu.layers import Event as LayerEvent
from meet443.sfu.layers import SimulcastSelector, SubscriberWish
from meet443.sfu.nack import NackGenerator
from meet443.sfu.reports import ReceptionStatistics, SenderStatistics
from meet443.sfu.retransmit import RetransmitBuffer, RtxSettings
from meet443.sfu.rewrite import StreamRewriter, Vp8PictureRewriter
from meet443.sfu.slots import LastN, fill
from meet443.sfu.speaker import ActiveSpeakerDetector
from meet443.sfu.tracks import Outgoing, PcRole, PublishedTrack, Slot, SubscriberProfile

#: RFC 3550 §6.2 suggests 5 s for RTCP; browsers' bandwidth estimation and lip sync settle faster
#: with one report a second, which is still far below 5% of any video stream's bitrate.
REPORT_INTERVAL = 1.0
#: How often measured layer bitrates reach the simulcast selectors (their up-switch hold is 2 s).
LAYER_INTERVAL = 0.5
#: Ring sizes of the retransmission buffers: ``max_age`` (1 s) of the web client's top simulcast
#: layer (1.5 Mbit/s, ~170 packets a second), ~0.6 s of a 2.5 Mbit/s screen share (a NACK comes
#: within a round trip; Janus keeps 0.5 s), or 1 s of 50 audio packets a second. A slot holds
#: ``capacity`` packets however busy: 256 of 1,100 bytes are most of a subscriber's memory.
VIDEO_BUFFER_PACKETS = 256
AUDIO_BUFFER_PACKETS = 64

#: Header extensions never forwarded: a subscriber gets one layer on one SSRC (no RID, RFC 8852),
#: and transport-wide numbers belong to the publisher's transport; without them the subscriber's
#: browser estimates receive-side and sends REMB, which is what the SFU listens to.
_NEVER_FORWARDED = frozenset({URI_RID, URI_REPAIRED_RID, URI_TRANSPORT_CC})


@dataclass(slots=True)
class RouterCounters:
    """What the router did and dropped; ``dropped`` is keyed by reason."""

    packets_forwarded: int = 0
    bytes_forwarded: int = 0
    nacks_received: int = 0
    retransmissions: int = 0
    plis_sent: int = 0
    layer_switches: int = 0
    probe_packets: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


# --- internal state ---------------------------------------------------------------------------------


class _Source:
    """One incoming media SSRC: a track's simulcast layer (or its only stream)."""

    __slots__ = ("layer", "meter", "nack", "sr", "ssrc", "stats", "track")

    def __init__(self, ssrc: int, track: _Track, layer: int, nack: bool) -> None:
        self.ssrc = ssrc
        self.track = track
        self.layer = layer
        self.stats = ReceptionStatistics(ssrc, track.clock_rate)
        self.meter = BitrateMeter()
        self.nack = NackGenerator() if nack and track.video else None
        #: The publisher's last SR: (NTP timestamp, RTP timestamp, arrival), RFC 3550 §6.4.1.
        self.sr: tuple[int, int, float] | None = None


class _Track:
    """A published track with everything the data path needs precomputed."""

    __slots__ = (
        "abs_send_time_id",
        "audio_level_id",
        "clock_rate",
        "info",
        "key",
        "keyframe",
        "layers",
        "media_pts",
        "mid_id",
        "order",
        "publisher",
        "rid_id",
        "rrid_id",
        "rtx_pts",
        "slots",
        "video",
        "vp8_pts",
    )

    def __init__(self, publisher: _Participant, info: PublishedTrack, order: int) -> None:
        self.publisher = publisher
        self.info = info
        self.key = (publisher.name, info.track_id)
        self.order = order
        self.video = info.kind == "video"
        self.media_pts = {codec.payload_type: codec for codec in info.codecs}
        self.rtx_pts = {
            codec.rtx_payload_type: codec.payload_type
            for codec in info.codecs
            if codec.rtx_payload_type is not None
        }
        self.clock_rate = info.codecs[0].clock_rate if info.codecs else (90000 if self.video else 48000)
        self.vp8_pts = frozenset(codec.payload_type for codec in info.codecs if codec.name == "vp8")
        self.keyframe: dict[int, Callable[[Buffer, int, int | None], bool]] = {}
        for codec in info.codecs:
            if codec.name == "vp8":
                self.keyframe[codec.payload_type] = vp8_is_keyframe
            elif codec.name == "h264":
                self.keyframe[codec.payload_type] = h264_is_keyframe
        ids = dict(info.extensions)
        self.mid_id = ids.get(URI_MID, 0)
        self.rid_id = ids.get(URI_RID, 0)
        self.rrid_id = ids.get(URI_REPAIRED_RID, 0)
        self.audio_level_id = ids.get(URI_AUDIO_LEVEL, 0) if info.source == "microphone" else 0
        self.abs_send_time_id = ids.get(URI_ABS_SEND_TIME, 0)
        count = len(info.rids) if info.rids else max(1, len(info.ssrcs))
        self.layers: list[_Source | None] = [None] * count
        self.slots: list[_SlotState] = []


class _SlotState:
    """One slot of a subscriber: its outgoing stream and the track bound to it."""

    __slots__ = (
        "buffer",
        "ext_table",
        "kind",
        "last_pt",
        "mid",
        "mid_value",
        "owner",
        "paused",
        "pictures",
        "pt_map",
        "rewriter",
        "rtx_ssrc",
        "selector",
        "sender",
        "ssrc",
        "track",
    )

    def __init__(
        self,
        owner: _Participant,
        mid: str,
        kind: str,
        ssrc: int,
        rtx_ssrc: int | None,
        rewriter: StreamRewriter,
        pictures: Vp8PictureRewriter,
        buffer: RetransmitBuffer,
    ) -> None:
        self.owner = owner
        self.mid = mid
        self.mid_value = mid.encode("ascii")
        self.kind = kind
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.rewriter = rewriter
        self.pictures = pictures
        self.buffer = buffer
        self.sender = SenderStatistics(ssrc)
        self.track: _Track | None = None
        self.selector: SimulcastSelector | None = None
        self.paused = False
        self.pt_map: dict[int, int] = {}
        self.ext_table = bytes(256)
        self.last_pt = -1

    def retarget_rtx(self, payload_type: int) -> None:
        """RFC 4588 §8: retransmit under the RTX PT the subscriber pairs with this packet's codec."""
        if self.rtx_ssrc is None:
            return
        rtx_pt = self.owner.rtx_pts.get(payload_type)
        self.buffer.rtx = None if rtx_pt is None else RtxSettings(self.rtx_ssrc, rtx_pt)

    def view(self) -> Slot:
        track = self.track
        if track is None:
            return Slot(self.mid, self.kind, self.ssrc, self.rtx_ssrc, None, None, None)
        return Slot(
            self.mid, self.kind, self.ssrc, self.rtx_ssrc, track.key[0], track.key[1], track.info.source
        )


class _Participant:
    """Both roles of one participant: its published tracks and its pool of slots."""

    __slots__ = (
        "budget",
        "codecs",
        "decodable",
        "extensions",
        "keyframes",
        "mid_ids",
        "name",
        "order",
        "profile",
        "rtcp_ssrc",
        "rtx_pts",
        "rtx_sources",
        "slot_by_ssrc",
        "slots",
        "sources",
        "tracks",
    )

    def __init__(self, name: str, profile: SubscriberProfile, order: int, rtcp_ssrc: int) -> None:
        self.name = name
        self.profile = profile
        self.order = order
        #: The SFU's SSRC as RTCP sender on this participant's publish PC (RR, REMB, PLI, NACK).
        self.rtcp_ssrc = rtcp_ssrc
        self.keyframes = KeyframeRequester(rtcp_ssrc)
        self.codecs = {name.lower(): pt for name, pt, _ in profile.payload_types}
        #: The codecs its subscribe answer accepted (None: all of the profile, until it answers).
        self.decodable: frozenset[str] | None = None
        self.rtx_pts = {pt: rtx for _, pt, rtx in profile.payload_types if rtx is not None and profile.rtx}
        self.extensions = dict(profile.extensions)
        self.tracks: dict[str, _Track] = {}
        self.sources: dict[int, _Source] = {}
        #: RTX SSRC (RFC 4588) -> the track and layer it repairs.
        self.rtx_sources: dict[int, tuple[_Track, int]] = {}
        self.mid_ids: tuple[int, ...] = ()
        self.slots: list[_SlotState] = []
        self.slot_by_ssrc: dict[int, _SlotState] = {}
        self.budget = SubscriberBudget()


# --- the router ---------------------------------------------------------------------------------------


class Router:
    """RFC 7667 §3.7 selective forwarding for one room; see the module docstring."""

    def __init__(
        self,
        *,
        token_bytes: Callable[[int], bytes],
        last_n: int = 9,
        max_audio_slots: int = 16,
        max_screen_slots: int = 2,
        publisher_max_bitrate: int = 2_500_000,
        nack: bool = True,
    ) -> None:
        self._token_bytes = token_bytes
        self.publisher_max_bitrate = publisher_max_bitrate
        self.nack = nack
        self.counters = RouterCounters()
        self._participants: dict[str, _Participant] = {}
        self._speakers: ActiveSpeakerDetector[str] = ActiveSpeakerDetector()
        self._last_n = LastN(
            last_n=last_n, max_audio_slots=max_audio_slots, max_screen_slots=max_screen_slots
        )
        self._ssrcs: set[int] = set()
        self._order = 0
        self._next_report: float | None = None
        self._next_layers: float | None = None

    # --- control plane ---------------------------------------------------------------------------

    def add_participant(
        self, participant: str, profile: SubscriberProfile, now: float
    ) -> list[Outgoing | RouterEvent]:
        """A participant joined; its subscribe PC negotiated ``profile`` (the SFU's offer fixes it)."""
        if participant in self._participants:
            raise ValueError(f"participant {participant!r} is already in the room")
        self._order += 1
        before = self._views()
        self._participants[participant] = _Participant(participant, profile, self._order, self._draw_ssrc())
        if self._next_report is None:
            self._next_report = now + REPORT_INTERVAL
            self._next_layers = now + LAYER_INTERVAL
        return self._reassign(before, now)

    def remove_participant(self, participant: str, now: float) -> list[Outgoing | RouterEvent]:
        """A participant left: its tracks stop, its slots go, others' slots are reassigned."""
        member = self._participants.get(participant)
        if member is None:
            return []
        before = self._views()
        out: list[Outgoing | RouterEvent] = []
        for track in member.tracks.values():
            for slot in list(track.slots):
                self._bind(slot, None)
        for slot in member.slots:
            self._bind(slot, None)
            self._ssrcs.discard(slot.ssrc)
            if slot.rtx_ssrc is not None:
                self._ssrcs.discard(slot.rtx_ssrc)
        self._ssrcs.discard(member.rtcp_ssrc)
        del self._participants[participant]
        before.pop(participant, None)
        self._last_n.forget(participant)
        was_dominant = self._speakers.dominant == participant
        self._speakers.remove(participant)
        if was_dominant:
            out.append(DominantSpeaker(None))
        if not self._participants:
            self._next_report = self._next_layers = None
        out += self._reassign(before, now)
        return out

    def publish(
        self, participant: str, tracks: Sequence[PublishedTrack], now: float
    ) -> list[Outgoing | RouterEvent]:
        """The participant's complete set of published tracks (a track left out is unpublished).

        A track whose description changed is replaced; SSRCs learnt from RIDs (RFC 8852) carry
        over when the RIDs stay, since browsers stop sending RID extensions once they got an RR.
        """
        member = self._participants[participant]
        before = self._views()
        wanted = {track.track_id: track for track in tracks}
        retired: dict[str, _Track] = {}
        for track_id, old in list(member.tracks.items()):
            info = wanted.get(track_id)
            if info == old.info:
                continue
            del member.tracks[track_id]
            if info is None:
                for slot in list(old.slots):
                    self._bind(slot, None)
            else:
                retired[track_id] = old
        for track_id, info in wanted.items():
            if track_id not in member.tracks:
                self._order += 1
                track = member.tracks[track_id] = self._new_track(member, info, retired.get(track_id))
                previous = retired.get(track_id)
                for slot in list(previous.slots if previous is not None else ()):
                    self._bind(slot, track)  # the subscriber keeps the same m-section for it
        self._drop_stale_sources(member)
        member.mid_ids = tuple(sorted({track.mid_id for track in member.tracks.values() if track.mid_id}))
        return self._reassign(before, now)

    def slots(self, participant: str) -> list[Slot]:
        """The subscriber's slots in creation order: the order of its subscribe PC's m-sections."""
        return [slot.view() for slot in self._participants[participant].slots]

    def set_decodable(self, participant: str, codecs: frozenset[str], now: float) -> list[Outgoing]:
        """RFC 3264 §6.1: the subscriber's answer accepted only ``codecs`` (lower-case names): no
        packet of another codec is forwarded to it. A slot that can forward again needs a keyframe."""
        member = self._participants.get(participant)
        if member is None or member.decodable == codecs:
            return []
        member.decodable = codecs
        out: list[Outgoing] = []
        for slot in member.slots:
            track = slot.track
            if track is None:
                continue
            before = slot.pt_map
            slot.pt_map = _payload_map(track, member)
            if slot.pt_map.keys() - before.keys():
                out += self._subscriber_wants_keyframe(member, slot.ssrc, now)
        return out

    def set_paused(
        self, participant: str, mid: str, paused: bool, now: float
    ) -> list[Outgoing | RouterEvent]:
        """The subscriber hides (or shows again) the video of slot ``mid``; it resets on rebinding."""
        member = self._participants.get(participant)
        slot = next((s for s in member.slots if s.mid == mid), None) if member is not None else None
        if member is None or slot is None or slot.selector is None or slot.kind != "video":
            self.counters.drop("unknown_slot")
            return []
        slot.paused = paused
        out: list[Outgoing | RouterEvent] = []
        out += self._layer_events(slot, slot.selector.set_wish(SubscriberWish(paused=paused), now), now)
        out += self._distribute(member, now)
        return out

    # --- RTP ----------------------------------------------------------------------------------------

    def receive_rtp(self, participant: str, role: PcRole, packet: bytes, now: float) -> list[Outgoing]:
        """RFC 7667 §3.7: forward a publisher's packet to every slot that selected its SSRC.

        Malformed packets are dropped and counted, never raised.
        """
        return self.forward_rtp(participant, role, packet, now, None)

    def forward_rtp(
        self,
        participant: str,
        role: PcRole,
        packet: bytes,
        now: float,
        copies: list[tuple[str, bytes]] | None,
    ) -> list[Outgoing]:
        """:meth:`receive_rtp` for the data path: the copies for subscribers' subscribe PCs go
        into ``copies`` as ``(participant, plaintext RTP)`` pairs instead of :class:`Outgoing`
        values (one object fewer per copy; ``bench/sfu_datapath.py``); what else the packet causes
        (keyframe requests to its publisher) is returned. ``copies`` None: everything is returned.
        """
        member = self._participants.get(participant)
        if member is None:
            self.counters.drop("unknown_participant")
            return []
        if role is not PcRole.PUBLISH:
            self.counters.drop("rtp_on_subscribe_pc")
            return []
        try:
            return self._forward(member, packet, now, copies)
        except ParseError:
            self.counters.drop("malformed_rtp")
            return []

    def _forward(
        self, member: _Participant, packet: bytes, now: float, copies: list[tuple[str, bytes]] | None
    ) -> list[Outgoing]:
        if is_rtcp(packet):
            self.counters.drop("rtcp_as_rtp")
            return []
        b1, seq, timestamp, ssrc, offset, end = rtp_header(packet)
        pt = b1 & 0x7F
        source = member.sources.get(ssrc)
        if source is None and ssrc not in member.rtx_sources and not self._learn(member, packet, ssrc, pt):
            self.counters.drop("unknown_ssrc")
            return []
        via_rtx = False
        if source is None:
            repaired = member.rtx_sources.get(ssrc)
            if repaired is not None:
                # RFC 4588 §4: an RTX packet repairs a loss on the way in; its original fills the hole.
                if end - offset < 2:
                    self.counters.drop("rtx_padding")
                    return []
                track, layer = repaired
                media = track.layers[layer]
                media_pt = track.rtx_pts.get(pt)
                if media is None or media_pt is None:
                    self.counters.drop("rtx_unknown_media")
                    return []
                packet = unwrap_rtx(packet, ssrc=media.ssrc, payload_type=media_pt)
                b1, seq, timestamp, ssrc, offset, end = rtp_header(packet)
                pt = media_pt
                via_rtx = True
            source = member.sources.get(ssrc)
            if source is None:
                self.counters.drop("unknown_ssrc")
                return []
        track = source.track
        if pt not in track.media_pts:
            self.counters.drop("unknown_payload_type")
            return []
        source.stats.received(seq, timestamp, now)
        if not via_rtx:
            # A browser probes its own uplink by resending old packets on RTX ("payload padding",
            # several times a layer's own rate with H.264): that is not what the layer costs.
            source.meter.add(len(packet), now)
        out: list[Outgoing] = []
        if source.nack is not None and source.nack.received(seq, now):
            out += self._request_keyframe(member, ssrc, now)  # too many lost to repair by NACK
        keyframe = False
        detect = track.keyframe.get(pt)
        if detect is not None and end > offset:
            keyframe = detect(packet, offset, end)
            if keyframe:
                member.keyframes.keyframe_received(ssrc)
        vp8 = pt in track.vp8_pts
        # Validated once, so no copy can fail halfway; every copy reuses the offsets.
        vp8_fields = vp8_picture_fields(packet, offset, end) if vp8 else None
        if track.audio_level_id:
            found = find_extension(packet, track.audio_level_id)
            if found is not None and found[1] >= 1:
                # RFC 6464 §3: the V flag depends on a VAD the browser may not run; the level suffices.
                self._speakers.observe(member.name, packet[found[0]] & 0x7F, now)
        extended = bool(packet[0] & 0x10)
        abs_value = round(now * 262144) & 0xFFFFFF  # abs-send-time: 6.18 fixed-point seconds
        templates: dict[tuple[bytes, bytes], bytes] = {}
        payload_size = end - offset
        forwarded = 0
        for slot in track.slots:
            rewriter = slot.rewriter
            selector = slot.selector
            if selector is not None and selector.target is None and not slot.paused:
                # The first packet of a newly bound track: its layer is measurable only now.
                out += self._distribute(slot.owner, now)
            if ssrc not in (rewriter.current, rewriter.target):
                continue
            pt_out = slot.pt_map.get(pt)
            if pt_out is None:
                self.counters.drop("codec_not_negotiated")
                continue
            if extended:
                # Subscribers with the same extension ids get the same block: rewrite it once per
                # packet, not once per copy (before the rewriter commits a sequence number, so a
                # malformed block raises here).
                table = slot.ext_table
                key = (table, slot.mid_value if table[track.mid_id] else b"")
                template = templates.get(key)
                if template is None:
                    rewritten_block = bytearray(packet)
                    _rewrite_extensions(
                        rewritten_block,
                        slot.ext_table,
                        track.mid_id,
                        slot.mid_value,
                        track.abs_send_time_id,
                        abs_value,
                    )
                    template = templates[key] = bytes(rewritten_block)
                buffer = bytearray(template)
            else:
                buffer = bytearray(packet)
            switches = rewriter.switches
            rewritten = rewriter.rewrite(ssrc, seq, timestamp, keyframe, now)
            if rewritten is None:
                continue
            out_seq = rewritten[0]
            rewrite_header(buffer, out_seq, rewritten[1], slot.ssrc)
            buffer[1] = (b1 & 0x80) | pt_out
            if vp8_fields is not None:
                slot.pictures.rewrite(buffer, offset, end, rewriter.switches, vp8_fields)
            if pt_out != slot.last_pt:
                slot.last_pt = pt_out
                slot.retarget_rtx(pt_out)
            if rewriter.switches != switches and selector is not None:
                out += self._layer_events(slot, selector.switched(source.layer, now), now)
            data = bytes(buffer)
            slot.buffer.store(out_seq, data, now)
            slot.sender.sent(payload_size)
            forwarded += 1
            if copies is None:
                out.append(Outgoing(slot.owner.name, PcRole.SUBSCRIBE, data, False))
            else:
                copies.append((slot.owner.name, data))
        if forwarded:
            counters = self.counters
            counters.packets_forwarded += forwarded
            counters.bytes_forwarded += forwarded * len(packet)
        return out

    def _learn(self, member: _Participant, packet: bytes, ssrc: int, pt: int) -> bool:
        """RFC 9143 §15, RFC 8852 §3: an SSRC the SDP did not name says its m-section and layer.

        Chrome's RID simulcast names no SSRCs in SDP; the first packets of each layer carry the
        MID and RID (RTX packets the repaired RID), until an RR acknowledges the SSRC.
        """
        track = None
        for mid_id in member.mid_ids:
            mid = media_id(packet, mid_id)
            if mid is not None:
                track = member.tracks.get(mid)
                break
        if track is None:
            return False
        rids = track.info.rids
        repaired = rtp_stream_id(packet, track.rrid_id) if track.rrid_id else None
        if repaired is not None:
            if repaired not in rids:
                return False
            member.rtx_sources[ssrc] = (track, rids.index(repaired))
            return True
        rid = rtp_stream_id(packet, track.rid_id) if track.rid_id else None
        if rid is not None:
            if rid not in rids:
                return False
            layer = rids.index(rid)
        elif len(track.layers) == 1:
            if pt in track.rtx_pts:
                member.rtx_sources[ssrc] = (track, 0)
                return True
            layer = 0
        else:
            return False
        self._add_source(member, track, layer, ssrc)
        return True

    def _add_source(self, member: _Participant, track: _Track, layer: int, ssrc: int) -> _Source:
        old = track.layers[layer]
        if old is not None:  # the encoder restarted under a new SSRC
            member.sources.pop(old.ssrc, None)
            member.keyframes.remove_source(old.ssrc)
        source = track.layers[layer] = member.sources[ssrc] = _Source(ssrc, track, layer, self.nack)
        member.keyframes.add_source(ssrc)
        for slot in track.slots:
            if slot.selector is not None and slot.selector.target == layer:
                slot.rewriter.select(ssrc)
        return source

    def _new_track(self, member: _Participant, info: PublishedTrack, previous: _Track | None) -> _Track:
        track = _Track(member, info, self._order)
        for layer, ssrc in enumerate(info.ssrcs[: len(track.layers)]):
            self._add_source(member, track, layer, ssrc)
        layer_of = {ssrc: layer for layer, ssrc in enumerate(info.ssrcs)}
        for media, rtx in info.rtx_ssrcs:
            if media in layer_of:
                member.rtx_sources[rtx] = (track, layer_of[media])
        if previous is not None and info.rids:
            # Layers learnt from RID extensions keep their SSRC while the RID stays the same.
            kept = {
                layer
                for layer, rid in enumerate(info.rids)
                if layer < len(previous.info.rids) and previous.info.rids[layer] == rid
            }
            for layer in kept:
                source = previous.layers[layer]
                if source is not None and track.layers[layer] is None and source.ssrc not in layer_of:
                    source.track = track
                    track.layers[layer] = source
            for rtx, (owner, layer) in list(member.rtx_sources.items()):
                if owner is previous and layer in kept:
                    member.rtx_sources[rtx] = (track, layer)
        return track

    def _drop_stale_sources(self, member: _Participant) -> None:
        live = set(member.tracks.values())
        for ssrc, source in list(member.sources.items()):
            if source.track not in live:
                del member.sources[ssrc]
                member.keyframes.remove_source(ssrc)
        for ssrc, (track, _) in list(member.rtx_sources.items()):
            if track not in live:
                del member.rtx_sources[ssrc]

    # --- RTCP ---------------------------------------------------------------------------------------

    def receive_rtcp(
        self, participant: str, role: PcRole, packet: bytes, now: float
    ) -> list[Outgoing | RouterEvent]:
        """RFC 3550 §6 / RFC 4585 §6: a compound RTCP packet from a publisher or a subscriber.

        From a subscriber: NACK (RFC 4585 §6.2.1) is answered from the slot's buffer (RTX per
        RFC 4588 when negotiated), PLI (§6.3.1) and FIR (RFC 5104 §4.3.1) become a throttled
        keyframe request to the publisher, REMB sets the subscriber's bandwidth. From a publisher:
        SR (RFC 3550 §6.4.1) feeds the RR's LSR/DLSR and the subscribers' SRs (lip sync).
        """
        member = self._participants.get(participant)
        if member is None:
            self.counters.drop("unknown_participant")
            return []
        try:
            packets = parse_rtcp(packet)
        except ParseError:
            self.counters.drop("malformed_rtcp")
            return []
        out: list[Outgoing | RouterEvent] = []
        if role is PcRole.PUBLISH:
            for part in packets:
                if isinstance(part, SenderReport):
                    source = member.sources.get(part.ssrc)
                    if source is not None:
                        source.stats.sender_report(part.ntp_timestamp, now)
                        source.sr = (part.ntp_timestamp, part.rtp_timestamp, now)
            return out
        for part in packets:
            match part:
                case GenericNack(media_ssrc=media_ssrc):
                    self.counters.nacks_received += 1
                    if not self.nack:
                        continue  # switched off (to measure what retransmission buys)
                    slot = member.slot_by_ssrc.get(media_ssrc)
                    if slot is None:
                        self.counters.drop("nack_for_unknown_ssrc")
                        continue
                    for data in slot.buffer.answer(part.lost(), now):
                        out.append(Outgoing(member.name, PcRole.SUBSCRIBE, data, False))
                        self.counters.retransmissions += 1
                case PictureLossIndication(media_ssrc=media_ssrc):
                    out += self._subscriber_wants_keyframe(member, media_ssrc, now)
                case FullIntraRequest(entries=entries):
                    for entry in entries:
                        out += self._subscriber_wants_keyframe(member, entry.ssrc, now)
                case Remb(bitrate=bitrate):
                    member.budget.remb(bitrate)
                    out += self._distribute(member, now)
                case ReceiverReport(reports=blocks):
                    out += self._losses(member, blocks, now)
                case _:
                    pass  # SDES, BYE, transport-cc: nothing the router acts on
        return out

    def subscriber_connected(self, participant: str, now: float) -> list[Outgoing]:
        """The subscriber's connection is up (or back): whatever was forwarded before reached
        nobody, so every video it receives needs a keyframe to start from (RFC 4585 §6.3.1)."""
        member = self._participants.get(participant)
        if member is None:
            return []
        out: list[Outgoing] = []
        for slot in member.slots:
            out += self._subscriber_wants_keyframe(member, slot.ssrc, now)
        return out

    def _subscriber_wants_keyframe(self, member: _Participant, ssrc: int, now: float) -> list[Outgoing]:
        slot = member.slot_by_ssrc.get(ssrc)
        track = slot.track if slot is not None else None
        if slot is None or track is None or not track.video:
            return []
        source = slot.rewriter.current if slot.rewriter.current is not None else slot.rewriter.target
        return [] if source is None else self._request_keyframe(track.publisher, source, now)

    def _request_keyframe(self, publisher: _Participant, ssrc: int, now: float) -> list[Outgoing]:
        return self._keyframe_requests(publisher, publisher.keyframes.request(ssrc, now))

    def _keyframe_requests(self, publisher: _Participant, packets: list[RtcpPacket]) -> list[Outgoing]:
        if not packets:
            return []
        self.counters.plis_sent += len(packets)
        return [Outgoing(publisher.name, PcRole.PUBLISH, serialize_rtcp(packets), True)]

    # --- timers -------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` has something to do (``None``: nothing until the next packet)."""
        if not self._participants:
            return None
        deadlines = [self._next_report, self._next_layers, self._speakers.get_timer()]
        for member in self._participants.values():
            deadlines.append(member.keyframes.get_timer())
            deadlines += [source.nack.get_timer() for source in member.sources.values() if source.nack]
            deadlines += [slot.selector.get_timer() for slot in member.slots if slot.selector]
        return min((deadline for deadline in deadlines if deadline is not None), default=None)

    def handle_timer(self, now: float) -> list[Outgoing | RouterEvent]:
        """Timers: speaker detection, deferred PLIs, NACKs, layer updates and RTCP reports."""
        out: list[Outgoing | RouterEvent] = []
        ranking_changed = False
        for event in self._speakers.handle_timer(now):
            match event:
                case DominantSpeakerChanged(speaker=speaker):
                    self._last_n.spoke(speaker, now)
                    out.append(DominantSpeaker(speaker))
                    ranking_changed = True
                case SpeakingChanged(source=speaker):
                    self._last_n.spoke(speaker, now)
                    ranking_changed = True
        if ranking_changed:
            out += self._reassign(self._views(), now)
        for member in self._participants.values():
            out += self._keyframe_requests(member, member.keyframes.handle_timer(now))
            nacks = []
            for source in member.sources.values():
                lost = source.nack.handle_timer(now) if source.nack is not None else None
                if lost:
                    nacks.append(GenericNack.for_lost(member.rtcp_ssrc, source.ssrc, lost))
            if nacks:
                out.append(Outgoing(member.name, PcRole.PUBLISH, serialize_rtcp(nacks), True))
            for slot in member.slots:
                if slot.selector is not None:
                    out += self._layer_events(slot, slot.selector.handle_timer(now), now)
        if self._next_layers is not None and now >= self._next_layers:
            self._next_layers = now + LAYER_INTERVAL
            for member in self._participants.values():
                out += self._distribute(member, now)
        for member in self._participants.values():
            step = member.budget.probe(now)
            if step is not None:  # mostly None: one call per subscriber and tick, as before the split
                out += self._probe(member, step, now)
        if self._next_report is not None and now >= self._next_report:
            self._next_report = now + REPORT_INTERVAL
            for member in self._participants.values():
                out += self._reports(member, now)
        return out

    def _reports(self, member: _Participant, now: float) -> list[Outgoing]:
        """RFC 3550 §6.4: RR + REMB to the publisher, one SR per forwarding slot to the subscriber."""
        out = []
        if member.sources:
            blocks = [source.stats.report_block(now) for source in member.sources.values()]
            packets: list[RtcpPacket] = [
                ReceiverReport(member.rtcp_ssrc, tuple(blocks[i : i + 31])) for i in range(0, len(blocks), 31)
            ]
            video = tuple(ssrc for ssrc, source in member.sources.items() if source.track.video)
            if video:
                # draft-alvestrand-rmcat-remb §2: the cap lets Chromium ramp up its simulcast layers.
                packets.append(Remb(member.rtcp_ssrc, self.publisher_max_bitrate, video))
            out.append(Outgoing(member.name, PcRole.PUBLISH, serialize_rtcp(packets), True))
        for slot in member.slots:
            report = self._sender_report(slot, now)
            if report is not None:
                out.append(Outgoing(member.name, PcRole.SUBSCRIBE, bytes(report), True))
        return out

    def _sender_report(self, slot: _SlotState, now: float) -> SenderReport | None:
        """RFC 3550 §6.4.1: the publisher's NTP/RTP pair carried over to the slot's timeline.

        Audio and video of one publisher then share its NTP clock at the subscriber (lip sync);
        without a publisher SR yet, no SR is better than one that pairs the wrong instants.
        """
        track = slot.track
        current = slot.rewriter.current
        if track is None or current is None:
            return None
        source = track.publisher.sources.get(current)
        if source is None or source.sr is None:
            return None
        ntp, rtp, at = source.sr
        elapsed = now - at
        rtp_out = slot.rewriter.map_timestamp(current, rtp + round(elapsed * track.clock_rate))
        if rtp_out is None:
            return None
        return slot.sender.sender_report((ntp + round(elapsed * 2**32)) & 0xFFFFFFFFFFFFFFFF, rtp_out)

    # --- slots and layers ---------------------------------------------------------------------------

    def _views(self) -> dict[str, tuple[Slot, ...]]:
        return {
            name: tuple(slot.view() for slot in member.slots) for name, member in self._participants.items()
        }

    def _reassign(self, before: dict[str, tuple[Slot, ...]], now: float) -> list[Outgoing | RouterEvent]:
        out: list[Outgoing | RouterEvent] = []
        for member in self._participants.values():
            if self._assign(member):
                out.append(SlotsGrown(member.name))
            out += self._distribute(member, now)
            views = tuple(slot.view() for slot in member.slots)
            if views != before.get(member.name, ()):
                out.append(SlotsAssigned(member.name, views))
        return out

    def _assign(self, member: _Participant) -> bool:
        """Last-N (:class:`~meet443.sfu.slots.LastN`): which of the other participants' tracks
        this subscriber receives; True if its pool grew."""
        others = (
            track
            for other in self._participants.values()
            if other is not member
            for track in other.tracks.values()
        )
        audio, video = self._last_n.choose(others, self._speakers.dominant)
        grown = self._fill(member, "audio", audio)
        return self._fill(member, "video", video) or grown

    def _fill(self, member: _Participant, kind: str, wanted: list[_Track]) -> bool:
        """Apply :func:`~meet443.sfu.slots.fill` to the subscriber's pool of ``kind``; True if grown."""
        pool = [slot for slot in member.slots if slot.kind == kind]
        plan = fill([slot.track for slot in pool], wanted)
        for position in plan.freed:
            self._bind(pool[position], None)
        for position, track in plan.bound:
            self._bind(pool[position] if position < len(pool) else self._grow(member, kind), track)
        return plan.grows(len(pool))

    def _grow(self, member: _Participant, kind: str) -> _SlotState:
        video = kind == "video"
        index = sum(1 for slot in member.slots if slot.kind == kind)
        ssrc = self._draw_ssrc()
        rtx_ssrc = self._draw_ssrc() if video and member.rtx_pts else None
        rewriter = StreamRewriter(
            ssrc,
            clock_rate=90000 if video else 48000,
            first_sequence=self._draw(2),
            first_timestamp=self._draw(4),
            keyframe_gated=video,
        )
        pictures = Vp8PictureRewriter(
            first_picture_id=self._draw(2) & 0x7FFF, first_tl0_pic_idx=self._draw(1)
        )
        # The RTX payload type is set per codec when the first packet goes out (retarget_rtx).
        rtx = RtxSettings(rtx_ssrc, 0, self._draw(2)) if rtx_ssrc is not None else None
        buffer = RetransmitBuffer(capacity=VIDEO_BUFFER_PACKETS if video else AUDIO_BUFFER_PACKETS, rtx=rtx)
        slot = _SlotState(
            member, f"{'v' if video else 'a'}{index}", kind, ssrc, rtx_ssrc, rewriter, pictures, buffer
        )
        member.slots.append(slot)
        member.slot_by_ssrc[ssrc] = slot
        return slot

    def _bind(self, slot: _SlotState, track: _Track | None) -> None:
        """Point a slot at a track (or nothing); the selector then picks a layer and asks for a keyframe."""
        old = slot.track
        if old is not None and slot in old.slots:
            old.slots.remove(slot)
        slot.rewriter.select(None)
        slot.selector = None
        slot.paused = False
        slot.track = track
        slot.pt_map = {}
        if track is None:
            return
        track.slots.append(slot)
        slot.pt_map = _payload_map(track, slot.owner)
        slot.ext_table = _extension_table(track.info.extensions, slot.owner.extensions)
        slot.rewriter.clock_rate = track.clock_rate
        slot.selector = SimulcastSelector(tuple(range(1, len(track.layers) + 1)))

    def _distribute(self, member: _Participant, now: float) -> list[Outgoing]:
        """Split the subscriber's budget (its ceiling) among its unpaused video slots, screen
        shares first.

        Audio is served first at its measured rate; then screens, then cameras, each group by
        water-filling (:func:`~meet443.sfu.budget.share_out`): a slot needs its best layer's
        bitrate plus the selector's up-switch margin, and what one slot does not need is shared by
        the others.
        """
        out: list[Outgoing] = []
        audio_bps = 0.0
        video: list[tuple[_SlotState, SimulcastSelector, _Track, list[float]]] = []
        for slot in member.slots:
            track, selector = slot.track, slot.selector
            if track is None or selector is None:
                continue
            bitrates = [0.0 if source is None else source.meter.bitrate(now) for source in track.layers]
            if track.video:
                video.append((slot, selector, track, bitrates))
            else:
                audio_bps += sum(bitrates)
                out += self._layer_events(slot, selector.update(now, None, bitrates), now)
        shares: list[float | None] = [None] * len(video)
        ceiling = member.budget.ceiling()
        if ceiling is not None:
            repairs = repair_rate(ceiling)
            shown = max(sum(1 for slot, *_ in video if not slot.paused), 1)
            for slot, *_ in video:
                slot.buffer.limit(repairs / shown, RETRANSMIT_BURST)
            groups = [
                [
                    i
                    for i, (slot, _, track, _) in enumerate(video)
                    if not slot.paused and (track.info.source == "screen") == screen
                ]
                for screen in (True, False)
            ]
            needs = [[max(video[i][3]) * video[i][1].up_margin for i in group] for group in groups]
            for group, given in zip(groups, share_out(max(0.0, ceiling - audio_bps), needs), strict=True):
                for i, amount in zip(group, given, strict=True):
                    shares[i] = amount
        for (slot, selector, _, bitrates), share in zip(video, shares, strict=True):
            out += self._layer_events(slot, selector.update(now, share, bitrates), now)
        return out

    def _probe(self, member: _Participant, step: Probing, now: float) -> list[Outgoing]:
        """What :meth:`~meet443.sfu.budget.SubscriberBudget.probe` asked for: padding, the
        verified rate shared out, or what the slots need to decide on a new probe."""
        if step is Probing.PADDING:
            return self._padding(member, now)
        if step is Probing.VERIFIED:
            return self._distribute(member, now)
        member.budget.start_probe(now, *self._probe_need(member, now))
        return []

    def _losses(self, member: _Participant, blocks: Sequence[ReportBlock], now: float) -> list[Outgoing]:
        """RFC 3550 §6.4.2: the subscriber's loss fraction on what the SFU sends it, for the
        loss-based control of draft-ietf-rmcat-gcc-02 §6 in its budget."""
        lost = max((b.fraction_lost for b in blocks if b.ssrc in member.slot_by_ssrc), default=0) / 256
        if member.budget.receiver_report(lost, lambda: self._probe_need(member, now)[1], now):
            return self._distribute(member, now)
        return []

    def _probe_need(self, member: _Participant, now: float) -> tuple[float, float]:
        """What the subscriber's slots would need with each video one layer up, and what they get."""
        forwarded = wanted = 0.0
        for slot in member.slots:
            track, selector = slot.track, slot.selector
            if track is None or selector is None or slot.paused:
                continue
            bitrates = [0.0 if source is None else source.meter.bitrate(now) for source in track.layers]
            current = selector.target if selector.target is not None else selector.current
            now_bps = bitrates[current] if current is not None else 0.0
            forwarded += now_bps
            higher = [b for b in bitrates[(current if current is not None else -1) + 1 :] if b > 0]
            wanted += higher[0] * selector.up_margin if track.video and higher else now_bps
        return wanted, forwarded

    def _padding(self, member: _Participant, now: float) -> list[Outgoing]:
        """RFC 3550 §5.1 padding-only packets on an RTX stream (RFC 4588) with abs-send-time, at
        the running probe's rate."""
        slot = next(
            (s for s in member.slots if s.kind == "video" and s.rtx_ssrc is not None and s.buffer.rtx),
            None,
        )
        abs_id = member.extensions.get(URI_ABS_SEND_TIME, 0)
        if slot is None or slot.buffer.rtx is None or not 1 <= abs_id <= 14:
            return []  # without RTX or abs-send-time, padding would not reach the estimator
        count = member.budget.padding_due(now, PROBE_PADDING_BYTES + HEADER_SIZE + 8)
        if count <= 0:
            return []
        abs_value = round(now * 262144) & 0xFFFFFF
        extension = bytes((abs_id << 4 | 2,)) + abs_value.to_bytes(3, "big")
        timestamp = slot.rewriter.timestamp_at(now)
        out = []
        for _ in range(count):
            data = padding_packet(
                ssrc=slot.buffer.rtx.ssrc,
                payload_type=slot.buffer.rtx.payload_type,
                sequence_number=slot.buffer.next_rtx_sequence(),
                timestamp=timestamp,
                extension=extension,
                size=PROBE_PADDING_BYTES,
            )
            out.append(Outgoing(member.name, PcRole.SUBSCRIBE, data, False))
        self.counters.probe_packets += count
        return out

    def _layer_events(self, slot: _SlotState, events: list[LayerEvent], now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        track = slot.track
        if track is None:
            return out
        for event in events:
            match event:
                case LayerTargetChanged(target=target):
                    source = None if target is None else track.layers[target]
                    slot.rewriter.select(None if source is None else source.ssrc)
                case KeyframeNeeded(layer=layer):
                    source = track.layers[layer]
                    if track.video and source is not None:
                        out += self._request_keyframe(track.publisher, source.ssrc, now)
                case LayerSwitched(previous=previous, current=current):
                    if previous is not None and current is not None:
                        self.counters.layer_switches += 1
        return out

    # --- the caller's randomness ----------------------------------------------------------------------

    def _draw(self, size: int) -> int:
        return int.from_bytes(self._token_bytes(size), "big")

    def _draw_ssrc(self) -> int:
        """RFC 3550 §8.1: random SSRCs; one room never uses one twice (nor 0, which some stacks reject)."""
        ssrc = self._draw(4) & 0xFFFFFFFF
        while ssrc == 0 or ssrc in self._ssrcs:
            ssrc = (ssrc + 1) & 0xFFFFFFFF
        self._ssrcs.add(ssrc)
        return ssrc


# --- header extensions, in place ---------------------------------------------------------------------


def _payload_map(track: _Track, subscriber: _Participant) -> dict[int, int]:
    """Publisher's payload type -> the subscriber's, for the codecs the subscriber decodes."""
    codecs, decodable = subscriber.codecs, subscriber.decodable
    return {
        pt: codecs[name]
        for pt, codec in track.media_pts.items()
        if (name := codec.name.lower()) in codecs and (decodable is None or name in decodable)
    }


def _extension_table(published: Sequence[tuple[str, int]], negotiated: dict[str, int]) -> bytes:
    """Publisher's extension id -> subscriber's id (0: blank the element), RFC 8285 §5 (extmap)."""
    table = bytearray(256)
    for uri, pub_id in published:
        sub_id = negotiated.get(uri)
        # The one-byte form holds ids 1-14 only; a subscriber id beyond that is not written.
        if uri not in _NEVER_FORWARDED and sub_id is not None and 1 <= sub_id <= 14 and 1 <= pub_id <= 255:
            table[pub_id] = sub_id
    return bytes(table)


def _rewrite_extensions(
    buffer: bytearray, table: bytes, mid_id: int, mid: bytes, abs_send_time_id: int, abs_send_time: int
) -> None:
    """RFC 8285 §4.2/§4.3: renumber elements to the subscriber's ids; blank the rest to padding.

    Nothing moves, so the packet keeps its length: a blanked element becomes zero bytes, which
    both forms skip as padding. The MID (RFC 9143 §15) must name the *subscriber's* m-section: it is
    written when it fits into the publisher's element (the rest padded), else blanked, and the
    subscriber demultiplexes by the SSRC from SDP. abs-send-time gets the SFU's send time, so the
    subscriber's receive-side estimate (REMB) measures the SFU-to-subscriber path.
    """
    pos = HEADER_SIZE + ((buffer[0] & 0x0F) << 2)
    profile = buffer[pos] << 8 | buffer[pos + 1]
    end = pos + 4 + ((buffer[pos + 2] << 8 | buffer[pos + 3]) << 2)
    pos += 4
    if profile == ONE_BYTE_PROFILE:
        header = 1
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        header = 2
    else:
        return  # RFC 3550 §5.3.1 extension of another profile: receivers ignore what they don't know
    while pos < end:
        ext_id = buffer[pos]
        if header == 1:
            ext_id >>= 4
            if ext_id == 15:  # RFC 8285 §4.2: stop processing here; nothing after it is read
                buffer[pos:end] = bytes(end - pos)
                return
        if ext_id == 0:
            pos += 1
            continue
        if header == 1:
            length = (buffer[pos] & 0x0F) + 1
        else:
            if pos + 2 > end:
                raise ParseError(f"two-byte header extension {ext_id} has no length")
            length = buffer[pos + 1]
        value = pos + header
        stop = value + length
        if stop > end:
            raise ParseError(f"header extension {ext_id} overruns the extension block")
        new_id = table[ext_id]
        if new_id == 0 or (ext_id == mid_id and len(mid) > length):
            buffer[pos:stop] = bytes(stop - pos)
        elif ext_id == mid_id:
            if header == 1:
                buffer[pos] = new_id << 4 | (len(mid) - 1)
            else:
                buffer[pos] = new_id
                buffer[pos + 1] = len(mid)
            buffer[value:stop] = mid + bytes(length - len(mid))
        else:
            if header == 1:
                buffer[pos] = new_id << 4 | (buffer[pos] & 0x0F)
            else:
                buffer[pos] = new_id
            if ext_id == abs_send_time_id and length == 3:
                buffer[value : value + 3] = abs_send_time.to_bytes(3, "big")
        pos = stop
