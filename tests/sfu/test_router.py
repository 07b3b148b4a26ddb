"""Router: the room's forwarding core (RFC 7667 §3.7), driven with handmade packets and a fake clock.

Every output packet is decoded with the typed codecs (RtpPacket, parse_rtcp) as the oracle.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from meet443.proto.rtp.codecs import Vp8PayloadDescriptor
from meet443.proto.rtp.packet import HeaderExtension, OneByteExtensions, RtpPacket, unwrap_rtx, wrap_rtx
from meet443.proto.rtp.rtcp import (
    GenericNack,
    PictureLossIndication,
    ReceiverReport,
    Remb,
    ReportBlock,
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
from meet443.sfu.events import DominantSpeaker, RouterEvent, SlotsAssigned, SlotsGrown
from meet443.sfu.router import Router
from meet443.sfu.tracks import Outgoing, PcRole, PublishedTrack, Slot, SubscriberProfile, TrackCodec

from .harness import FakeClock, SimulcastPublisher

# The publisher's extension ids (its own offer) and the SFU's ids on subscribe PCs differ on purpose.
PUB_MID, PUB_RID, PUB_RRID, PUB_LEVEL, PUB_ABS, PUB_TCC = 9, 10, 11, 1, 2, 3
PUB_EXTENSIONS = (
    (URI_MID, PUB_MID),
    (URI_RID, PUB_RID),
    (URI_REPAIRED_RID, PUB_RRID),
    (URI_AUDIO_LEVEL, PUB_LEVEL),
    (URI_ABS_SEND_TIME, PUB_ABS),
    (URI_TRANSPORT_CC, PUB_TCC),
)
SUB_MID, SUB_LEVEL, SUB_ABS = 4, 5, 6
PROFILE = SubscriberProfile(
    payload_types=(("opus", 109, None), ("vp8", 120, 121), ("h264", 125, 126)),
    extensions=((URI_MID, SUB_MID), (URI_AUDIO_LEVEL, SUB_LEVEL), (URI_ABS_SEND_TIME, SUB_ABS)),
)
OPUS = TrackCodec("opus", 111, 48000)
VP8 = TrackCodec("vp8", 96, 90000, rtx_payload_type=97)


def camera(ssrc: int, track_id: str = "cam", **kwargs: object) -> PublishedTrack:
    return PublishedTrack(track_id, "video", "camera", (VP8,), (ssrc,), extensions=PUB_EXTENSIONS, **kwargs)  # type: ignore[arg-type]


def microphone(ssrc: int, track_id: str = "0") -> PublishedTrack:
    return PublishedTrack(track_id, "audio", "microphone", (OPUS,), (ssrc,), extensions=PUB_EXTENSIONS)


def extensions(*elements: tuple[int, bytes]) -> OneByteExtensions | None:
    return OneByteExtensions(tuple(HeaderExtension(i, v) for i, v in elements)) if elements else None


def vp8(
    ssrc: int, seq: int, *, key: bool = False, ts: int | None = None, ext: Sequence[tuple[int, bytes]] = ()
) -> bytes:
    """One VP8 frame in one packet; RFC 7741 §4.3: P bit 0 marks a keyframe."""
    payload = bytes(Vp8PayloadDescriptor(True, picture_id=seq & 0x7FFF)) + bytes((0 if key else 1, 0, 0, 7))
    timestamp = seq * 3000 if ts is None else ts
    return bytes(RtpPacket(96, seq & 0xFFFF, timestamp, ssrc, payload, True, extension=extensions(*ext)))


def opus(ssrc: int, seq: int, level: int = 127) -> bytes:
    ext = extensions((PUB_LEVEL, bytes((0x80 | level,))))
    return bytes(RtpPacket(111, seq, seq * 960, ssrc, b"opus" * 10, extension=ext))


class Room:
    """A router, a fake clock and the outputs so far."""

    def __init__(self, **kwargs: int) -> None:
        self.clock = FakeClock()
        self.router = Router(token_bytes=random.Random(443).randbytes, **kwargs)  # type: ignore[arg-type]
        self.events: list[RouterEvent] = []

    def keep(self, out: Sequence[Outgoing | RouterEvent]) -> list[Outgoing]:
        self.events += [item for item in out if not isinstance(item, Outgoing)]
        return [item for item in out if isinstance(item, Outgoing)]

    def join(self, *names: str) -> list[Outgoing]:
        out = []
        for name in names:
            out += self.keep(self.router.add_participant(name, PROFILE, self.clock.now))
        return out

    def publish(self, name: str, *tracks: PublishedTrack) -> list[Outgoing]:
        return self.keep(self.router.publish(name, tracks, self.clock.now))

    def rtp(self, name: str, packet: bytes) -> list[Outgoing]:
        return self.router.receive_rtp(name, PcRole.PUBLISH, packet, self.clock.now)

    def rtcp(self, name: str, role: PcRole, *packets: object) -> list[Outgoing]:
        data = serialize_rtcp(packets)  # type: ignore[arg-type]
        return self.keep(self.router.receive_rtcp(name, role, data, self.clock.now))

    def handle_timer(self) -> list[Outgoing]:
        return self.keep(self.router.handle_timer(self.clock.now))

    def run(self, seconds: float) -> list[Outgoing]:
        """Poll at every deadline for ``seconds`` of fake time."""
        out = []
        end = self.clock.now + seconds
        while (deadline := self.router.get_timer()) is not None and deadline <= end:
            self.clock.now = max(self.clock.now, deadline)
            out += self.handle_timer()
        self.clock.now = end
        return out

    def slot(self, viewer: str, publisher: str, track_id: str) -> Slot:
        return next(
            s for s in self.router.slots(viewer) if (s.participant, s.track_id) == (publisher, track_id)
        )


def media(out: Sequence[Outgoing], name: str) -> list[RtpPacket]:
    return [RtpPacket.parse(o.data) for o in out if o.participant == name and not o.rtcp]


def feedback(out: Sequence[Outgoing], name: str) -> list[object]:
    return [p for o in out if o.participant == name and o.rtcp for p in parse_rtcp(o.data)]


def three_in_a_room(**kwargs: int) -> Room:
    room = Room(**kwargs)
    room.join("alice", "bob", "carol")
    room.publish("alice", camera(0xA1), microphone(0xA0))
    return room


class TestRfc7667Forwarding:
    def test_two_subscribers_get_their_own_ssrc_pt_and_extension_ids(self) -> None:
        room = three_in_a_room()
        tcc = (PUB_TCC, b"\x12\x34")
        packet = vp8(0xA1, 1000, key=True, ext=[(PUB_MID, b"cam"), (PUB_ABS, b"\x00\x00\x01"), tcc])
        out = room.rtp("alice", packet)
        original = RtpPacket.parse(packet)
        for viewer in ("bob", "carol"):
            slot = room.slot(viewer, "alice", "cam")
            [forwarded] = media(out, viewer)
            assert (forwarded.ssrc, forwarded.payload_type) == (slot.ssrc, 120)
            assert forwarded.payload[4:] == original.payload[4:]  # VP8 picture ID renumbered only
            [raw] = [o.data for o in out if o.participant == viewer]
            assert len(raw) == len(packet)  # rewritten in place: blanked elements stay as padding
            assert isinstance(forwarded.extension, OneByteExtensions)
            # RFC 9143 §15: the MID names the subscriber's m-section; transport-cc is blanked.
            ids = {element.id: element.value for element in forwarded.extension.elements}
            assert ids.keys() == {SUB_MID, SUB_ABS}
            assert ids[SUB_MID] == slot.mid.encode()
        assert room.slot("bob", "alice", "cam").ssrc != room.slot("carol", "alice", "cam").ssrc
        assert room.router.counters.packets_forwarded == 2

    def test_audio_level_renumbered_and_a_mid_too_long_for_the_element_blanked(self) -> None:
        room = three_in_a_room()
        packet = bytes(
            RtpPacket(111, 5, 960, 0xA0, b"opus", extension=extensions((PUB_MID, b"0"), (PUB_LEVEL, b"\x9e")))
        )
        [forwarded] = media(room.rtp("alice", packet), "bob")
        assert (forwarded.ssrc, forwarded.payload_type) == (room.slot("bob", "alice", "0").ssrc, 109)
        assert forwarded.extension is not None
        assert forwarded.extension.get(SUB_LEVEL) == b"\x9e"
        assert forwarded.extension.get(SUB_MID) is None  # "a0" does not fit where "0" was
        assert forwarded.payload == b"opus"

    def test_sequence_continues_and_the_publisher_never_gets_its_own_media(self) -> None:
        room = three_in_a_room()
        out = room.rtp("alice", vp8(0xA1, 65534, key=True))
        for seq in (65535, 0, 1):
            out += room.rtp("alice", vp8(0xA1, seq))
        seqs = [p.sequence_number for p in media(out, "bob")]
        assert [(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)] == [1, 1, 1]
        assert media(out, "alice") == []

    def test_a_codec_the_subscriber_lacks_is_dropped(self) -> None:
        room = Room()
        room.join("alice", "bob")
        av1 = TrackCodec("av1", 45, 90000)
        room.publish("alice", PublishedTrack("cam", "video", "camera", (av1,), (0xA1,)))
        packet = bytes(RtpPacket(45, 1, 1, 0xA1, b"frame"))
        room.rtp("alice", packet)
        assert media(room.rtp("alice", packet), "bob") == []

    def test_a_subscriber_is_sent_only_the_codecs_its_answer_accepted(self) -> None:
        """RFC 3264 §6.1: Firefox without H.264 answers VP8 only; an H.264 publisher's packets
        reach Bob (both) but never Carol, and once the publisher sends VP8 both get it."""
        room = three_in_a_room()
        assert room.router.set_decodable("carol", frozenset({"opus", "vp8"}), room.clock.now) == []
        h264 = TrackCodec("h264", 102, 90000)
        room.publish(
            "alice", PublishedTrack("cam", "video", "camera", (h264, VP8), (0xA1,)), microphone(0xA0)
        )
        idr = bytes(RtpPacket(102, 1, 3000, 0xA1, bytes((0x65, 0x88, 0x80)), True))  # RFC 6184: NAL type 5
        out = room.rtp("alice", idr)
        assert [p.payload_type for p in media(out, "bob")] == [125]
        assert media(out, "carol") == []
        assert room.router.counters.dropped["codec_not_negotiated"] == 1
        out = room.rtp("alice", vp8(0xA1, 2, key=True))
        assert [p.payload_type for p in media(out, "carol")] == [120]

    def test_a_slot_that_can_forward_again_asks_for_a_keyframe(self) -> None:
        room = three_in_a_room()
        room.router.set_decodable("bob", frozenset({"opus"}), room.clock.now)  # no video section yet
        assert media(room.rtp("alice", vp8(0xA1, 1, key=True)), "bob") == []
        room.clock.now += 1  # past the keyframe requester's throttle
        out = room.router.set_decodable("bob", frozenset({"opus", "vp8"}), room.clock.now)
        assert any(
            isinstance(p, PictureLossIndication) and p.media_ssrc == 0xA1 for p in feedback(out, "alice")
        )
        assert media(room.rtp("alice", vp8(0xA1, 2, key=True)), "bob") != []

    def test_rtx_from_the_publisher_fills_a_gap(self) -> None:
        """RFC 4588 §4: the original inside the publisher's RTX packet is forwarded in its place."""
        room = three_in_a_room()
        room.publish("alice", camera(0xA1, rtx_ssrcs=((0xA1, 0xA2),)), microphone(0xA0))
        out = room.rtp("alice", vp8(0xA1, 10, key=True)) + room.rtp("alice", vp8(0xA1, 12))
        lost = vp8(0xA1, 11)
        rtx = bytes(RtpPacket(97, 500, 11 * 3000, 0xA2, b"\x00\x0b" + RtpPacket.parse(lost).payload))
        out += room.rtp("alice", rtx)
        seqs = [p.sequence_number for p in media(out, "bob")]
        assert [(s - seqs[0]) & 0xFFFF for s in seqs] == [0, 2, 1]
        padding_probe = bytes(RtpPacket(97, 501, 0, 0xA2, b"", padding=200))
        assert room.rtp("alice", padding_probe) == []
        assert room.router.counters.dropped["rtx_padding"] == 1


class TestRfc8853Simulcast:
    def simulcast_room(self) -> tuple[Room, SimulcastPublisher]:
        room = Room()
        room.join("alice", "bob")
        publisher = SimulcastPublisher()
        track = PublishedTrack(
            "cam", "video", "camera", (VP8,), tuple(layer.ssrc for layer in publisher.layers)
        )
        room.publish("alice", track)
        return room, publisher

    def frame(self, room: Room, publisher: SimulcastPublisher) -> list[RtpPacket]:
        """One frame on every layer; PLIs reach the publisher. Returns what bob got."""
        out = []
        for _, packet in publisher.frame():
            out += room.rtp("alice", packet)
        out += room.run(1 / 30)
        self.deliver(out, publisher)
        return media(out, "bob")

    def deliver(self, out: list[Outgoing], publisher: SimulcastPublisher) -> None:
        for pli in feedback(out, "alice"):
            if isinstance(pli, PictureLossIndication):
                publisher.request_keyframe(pli.media_ssrc)

    def test_starts_low_goes_up_after_remb_and_down_at_once(self) -> None:
        room, publisher = self.simulcast_room()
        received: list[RtpPacket] = []
        for _ in range(30):
            received += (got := self.frame(room, publisher))
        assert len(got) == 1  # 180p: one packet a frame, no estimate yet
        room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 10_000_000, ()))
        switched_at = None
        for i in range(150):
            received += (got := self.frame(room, publisher))
            if len(got) == 8 and switched_at is None:
                switched_at = i
        assert switched_at is not None
        assert 2.0 * 30 <= switched_at <= 3.5 * 30  # the selector holds 2 s before going up
        self.deliver(room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 100_000, ())), publisher)
        received += self.frame(room, publisher)
        received += (got := self.frame(room, publisher))
        assert len(got) == 1  # down at the next keyframe of the low layer, asked for at once
        assert room.router.counters.layer_switches == 2
        seqs = [p.sequence_number for p in received]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        assert {p.ssrc for p in received} == {room.slot("bob", "alice", "cam").ssrc}

    def probes(self, out: list[Outgoing]) -> list[RtpPacket]:
        return [p for p in media(out, "bob") if p.padding and not p.payload]

    def second(self, room: Room, publisher: SimulcastPublisher) -> list[RtpPacket]:
        """A second of frames; the padding probes bob got meanwhile."""
        out: list[Outgoing] = []
        for _ in range(30):
            out += self.frame_out(room, publisher)
        return self.probes(out)

    def rr(self, room: Room, lost: float) -> list[Outgoing]:
        slot = room.slot("bob", "alice", "cam")
        block = ReportBlock(slot.ssrc, int(lost * 256), 0, 0, 0, 0, 0)
        return room.rtcp("bob", PcRole.SUBSCRIBE, ReceiverReport(0xB0B, (block,)))

    def test_a_probe_without_loss_lifts_the_layer_past_a_stalled_remb(self) -> None:
        """Padding on the RTX SSRC (RFC 3550 §5.1, RFC 4588 §4) with abs-send-time up to what the
        next layer needs; no loss and a steady REMB meanwhile: the path carries it, layers go up
        although the REMB itself stays low."""
        room, publisher = self.simulcast_room()
        slot = room.slot("bob", "alice", "cam")
        room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 300_000, ()))
        pads: list[RtpPacket] = []
        packets_per_frame = set()
        for _ in range(10):
            for _ in range(30):
                out = self.frame_out(room, publisher)
                got = media(out, "bob")
                pads += [q for q in got if q.padding and not q.payload]
                packets_per_frame.add(len([q for q in got if q.ssrc == slot.ssrc]))
            self.rr(room, 0.0)
            room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 300_000, ()))
        assert pads, "no probe"
        for pad in pads:
            assert (pad.ssrc, pad.payload_type, pad.padding) == (slot.rtx_ssrc, 121, 240)
            assert pad.extension_value(dict(PROFILE.extensions)[URI_ABS_SEND_TIME]) is not None
        assert max(packets_per_frame) >= 3, "still on the 180p layer (one packet a frame)"
        assert room.router.counters.probe_packets == len(pads)

    def test_loss_during_a_probe_fails_it_and_later_ones_wait_longer(self) -> None:
        """The path is full: no switch up, and the pauses between probes double."""
        room, publisher = self.simulcast_room()
        room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 300_000, ()))
        probing: list[bool] = []
        for _ in range(12):
            out: list[Outgoing] = []
            for _ in range(30):
                out += self.frame_out(room, publisher)
            probing.append(bool(self.probes(out)))
            self.rr(room, 0.1)  # 10% lost in every report
        slot = room.slot("bob", "alice", "cam")
        assert len([q for q in media(out, "bob") if q.ssrc == slot.ssrc]) <= 30, "went up anyway"
        assert probing[0], probing
        assert probing.count(True) <= 5, f"probing did not back off: {probing}"

    def test_heavy_loss_steps_down_at_once_though_the_remb_stays_high(self) -> None:
        """draft-ietf-rmcat-gcc-02 §6: a report that lost 40% caps the budget at 80% of what was
        sent, and every further lossy report cuts again, while the REMB (which a browser lowers
        only over seconds) still covers the top layer; no probe pads into the full path meanwhile."""
        room, publisher = self.simulcast_room()
        slot = room.slot("bob", "alice", "cam")
        room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 50_000_000, ()))
        for _ in range(120):
            got = self.frame(room, publisher)
        assert len([q for q in got if q.ssrc == slot.ssrc]) == 8, "not on the 720p layer"
        per_frame: list[int] = []
        probing = False
        for _ in range(3):
            self.deliver(self.rr(room, 0.4), publisher)  # the keyframe request for the lower layer
            room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 50_000_000, ()))
            for _ in range(30):
                out = self.frame_out(room, publisher)
                probing = probing or bool(self.probes(out))
                per_frame.append(len([q for q in media(out, "bob") if q.ssrc == slot.ssrc]))
        assert per_frame[-1] == 1, f"still above the 180p layer: {per_frame[::10]}"
        assert min(i for i, n in enumerate(per_frame) if n < 8) < 30, "the first lossy report changed nothing"
        assert not probing

    def test_after_the_loss_clean_reports_and_a_probe_bring_the_top_layer_back(self) -> None:
        room, publisher = self.simulcast_room()
        slot = room.slot("bob", "alice", "cam")
        room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 50_000_000, ()))
        for _ in range(120):
            self.frame(room, publisher)
        for _ in range(3):
            self.deliver(self.rr(room, 0.4), publisher)
            for _ in range(30):
                self.frame(room, publisher)
        pads: list[RtpPacket] = []
        for _ in range(12):
            self.deliver(self.rr(room, 0.0), publisher)
            room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 50_000_000, ()))
            pads += self.second(room, publisher)
        assert pads, "no probe lifted the loss cap"
        got = self.frame(room, publisher)
        assert len([q for q in got if q.ssrc == slot.ssrc]) == 8, "not back on the 720p layer"

    def test_rtx_payload_padding_is_not_counted_into_the_layer(self) -> None:
        """Chromium pads its uplink by resending old packets on a layer's RTX SSRC (RFC 4588 §4):
        ~700 kbit/s on the lowest layer against ~100 kbit/s of its media with H.264, measured in
        the browser lab. Counted into that layer, it looks bigger than the next one, no probe
        starts (what bob gets seems to exceed what he would need), and bob stays on 180p."""
        room = Room()
        room.join("alice", "bob")
        publisher = SimulcastPublisher()
        low = publisher.layers[0]
        rtx = {layer.ssrc: layer.ssrc + 1 for layer in publisher.layers}
        track = PublishedTrack("cam", "video", "camera", (VP8,), tuple(rtx), rtx_ssrcs=tuple(rtx.items()))
        room.publish("alice", track)
        slot = room.slot("bob", "alice", "cam")
        most = rtx_sequence = 0
        for _ in range(10):
            room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 300_000, ()))
            for _ in range(30):
                out: list[Outgoing] = []
                for _, packet in publisher.frame():
                    out += room.rtp("alice", packet)
                for old in low.sent[-3:]:
                    padding = wrap_rtx(old, sequence_number=rtx_sequence, ssrc=rtx[low.ssrc], payload_type=97)
                    rtx_sequence += 1
                    out += room.rtp("alice", padding)
                out += room.run(1 / 30)
                self.deliver(out, publisher)
                most = max(most, len([q for q in media(out, "bob") if q.ssrc == slot.ssrc]))
            self.deliver(self.rr(room, 0.0), publisher)
        assert room.router.counters.probe_packets > 0, "no probe: the padding was measured as 180p"
        assert most >= 3, "still on the 180p layer"

    def test_no_probing_once_the_estimate_covers_the_top_layer(self) -> None:
        room, publisher = self.simulcast_room()
        room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 50_000_000, ()))
        out: list[Outgoing] = []
        for _ in range(120):
            out += self.frame_out(room, publisher)
        assert self.probes(out) == [] and room.router.counters.probe_packets == 0

    def frame_out(self, room: Room, publisher: SimulcastPublisher) -> list[Outgoing]:
        out = []
        for _, packet in publisher.frame():
            out += room.rtp("alice", packet)
        out += room.run(1 / 30)
        self.deliver(out, publisher)
        return out

    def test_unknown_ssrc_learnt_from_mid_and_rid(self) -> None:
        """RFC 8852 §3.1, RFC 9143 §15: RID simulcast names no SSRC in SDP; the packets do."""
        room = Room()
        room.join("alice", "bob")
        track = PublishedTrack("cam", "video", "camera", (VP8,), rids=("q", "h"), extensions=PUB_EXTENSIONS)
        room.publish("alice", track)
        assert room.rtp("alice", vp8(0x51, 1, key=True)) == []
        assert room.router.counters.dropped["unknown_ssrc"] == 1
        first = vp8(0x51, 2, key=True, ext=[(PUB_MID, b"cam"), (PUB_RID, b"q")])
        out = room.rtp("alice", first)
        assert len(media(out, "bob")) == 1
        # Once learnt, the extensions may stop (browsers drop them after an RR).
        assert len(media(room.rtp("alice", vp8(0x51, 3)), "bob")) == 1
        # The RTX stream names the layer it repairs with the repaired RID (RFC 8852 §3.2).
        original = RtpPacket.parse(vp8(0x51, 4))
        ext = extensions((PUB_MID, b"cam"), (PUB_RRID, b"q"))
        rtx = RtpPacket(97, 9, original.timestamp, 0x52, b"\x00\x04" + original.payload, extension=ext)
        assert len(media(room.rtp("alice", bytes(rtx)), "bob")) == 1
        assert room.router.counters.dropped == {"unknown_ssrc": 1}


class TestRfc4585Feedback:
    def test_nack_answered_as_rtx(self) -> None:
        """RFC 4585 §6.2.1 answered per RFC 4588 §4 on the slot's RTX SSRC and PT."""
        room = three_in_a_room()
        out = room.rtp("alice", vp8(0xA1, 1, key=True))
        out += room.rtp("alice", vp8(0xA1, 2))
        sent = [o.data for o in out if o.participant == "bob" and not o.rtcp]
        slot = room.slot("bob", "alice", "cam")
        assert slot.rtx_ssrc is not None
        lost = RtpPacket.parse(sent[1]).sequence_number
        answer = room.rtcp("bob", PcRole.SUBSCRIBE, GenericNack.for_lost(0xB0B, slot.ssrc, [lost]))
        [rtx] = [o for o in answer if o.participant == "bob"]
        assert (rtx.role, rtx.rtcp) == (PcRole.SUBSCRIBE, False)
        parsed = RtpPacket.parse(rtx.data)
        assert (parsed.ssrc, parsed.payload_type) == (slot.rtx_ssrc, 121)
        assert unwrap_rtx(rtx.data, ssrc=slot.ssrc, payload_type=120) == sent[1]
        assert (room.router.counters.nacks_received, room.router.counters.retransmissions) == (1, 1)

    def test_a_subscriber_connecting_asks_its_sources_for_keyframes(self) -> None:
        """What was forwarded before its DTLS was up reached nobody: start it with keyframes."""
        room = three_in_a_room()
        room.rtp("alice", vp8(0xA1, 1, key=True))
        room.run(1.0)  # past the keyframe requester's interval
        [pli] = feedback(room.keep(room.router.subscriber_connected("bob", room.clock.now)), "alice")
        assert isinstance(pli, PictureLossIndication) and pli.media_ssrc == 0xA1
        assert room.router.subscriber_connected("nobody", room.clock.now) == []

    def test_nack_switched_off_is_not_answered(self) -> None:
        room = three_in_a_room(nack=False)
        out = room.rtp("alice", vp8(0xA1, 1, key=True))
        lost = media(out, "bob")[0].sequence_number
        slot = room.slot("bob", "alice", "cam")
        answer = room.rtcp("bob", PcRole.SUBSCRIBE, GenericNack.for_lost(0xB0B, slot.ssrc, [lost]))
        assert answer == [] and room.router.counters.retransmissions == 0

    def test_plis_of_two_subscribers_become_one_to_the_publisher(self) -> None:
        """RFC 4585 §6.3.1: one PLI per source per interval; a later one is deferred, not lost."""
        room = three_in_a_room()
        room.rtp("alice", vp8(0xA1, 1, key=True))
        room.run(1.0)
        bob, carol = room.slot("bob", "alice", "cam"), room.slot("carol", "alice", "cam")
        out = room.rtcp("bob", PcRole.SUBSCRIBE, PictureLossIndication(0xB0B, bob.ssrc))
        out += room.rtcp("carol", PcRole.SUBSCRIBE, PictureLossIndication(0xCA1, carol.ssrc))
        [pli] = feedback(out, "alice")
        assert isinstance(pli, PictureLossIndication)
        assert pli.media_ssrc == 0xA1
        assert all(o.role is PcRole.PUBLISH for o in out)
        later = [p for p in feedback(room.run(0.6), "alice") if isinstance(p, PictureLossIndication)]
        assert [p.media_ssrc for p in later] == [0xA1]

    def test_reports_to_publishers_and_subscribers(self) -> None:
        """RFC 3550 §6.4: RR + REMB to the publisher; SR per slot from the publisher's SR."""
        room = three_in_a_room(publisher_max_bitrate=1_500_000)
        room.rtp("alice", vp8(0xA1, 1, key=True, ts=90000))
        room.rtcp("alice", PcRole.PUBLISH, SenderReport(0xA1, 0x1234_5678_0000_0000, 90000, 1, 100))
        out = room.run(1.0)
        to_alice = feedback(out, "alice")
        [rr] = [p for p in to_alice if isinstance(p, ReceiverReport)]
        assert [block.ssrc for block in rr.reports] == [0xA1, 0xA0]
        [remb] = [p for p in to_alice if isinstance(p, Remb)]
        assert (remb.bitrate, remb.ssrcs) == (1_500_000, (0xA1,))
        [sr] = [p for p in feedback(out, "bob") if isinstance(p, SenderReport)]
        assert (sr.ssrc, sr.packet_count) == (room.slot("bob", "alice", "cam").ssrc, 1)


class TestSlotsAndLastN:
    def test_pool_grows_then_reuses_idle_slots(self) -> None:
        room = Room()
        room.join("alice", "bob")
        room.publish("alice", camera(0xA1), microphone(0xA0))
        room.events.clear()
        room.join("carol")
        assert SlotsGrown("carol") in room.events
        assert {(s.kind, s.participant) for s in room.router.slots("carol")} == {
            ("audio", "alice"),
            ("video", "alice"),
        }
        room.publish("bob", camera(0xB1), microphone(0xB0))
        assert SlotsGrown("carol") in room.events
        before = room.router.slots("carol")
        room.events.clear()
        room.keep(room.router.remove_participant("alice", room.clock.now))
        assert not any(isinstance(e, SlotsGrown) for e in room.events)
        assert sum(s.participant is None for s in room.router.slots("carol")) == 2
        room.events.clear()
        room.join("dave")
        room.publish("dave", camera(0xD1), microphone(0xD0))
        assert SlotsGrown("carol") not in room.events  # dave took alice's idle slots
        after = room.router.slots("carol")
        assert [(s.mid, s.ssrc) for s in after] == [(s.mid, s.ssrc) for s in before]
        assert {s.participant for s in after} == {"bob", "dave"}
        assert any(isinstance(e, SlotsAssigned) and e.participant == "carol" for e in room.events)

    def test_last_n_gives_the_dominant_speaker_a_slot(self) -> None:
        room = Room(last_n=2)
        names = ["p1", "p2", "p3", "p4"]
        room.join("viewer", *names)
        for i, name in enumerate(names):
            room.publish(name, camera(0x100 + i), microphone(0x200 + i))
        video = [s for s in room.router.slots("viewer") if s.kind == "video"]
        assert [s.participant for s in video] == ["p1", "p2"]
        room.events.clear()
        for seq in range(50):
            room.rtp("p4", opus(0x203, seq, level=20))
            room.run(0.02)
        assert DominantSpeaker("p4") in room.events
        assigned = [e for e in room.events if isinstance(e, SlotsAssigned) and e.participant == "viewer"]
        assert assigned
        video = [s for s in assigned[-1].slots if s.kind == "video"]
        assert len(video) == 2
        assert "p4" in {s.participant for s in video}
        assert room.router.slots("viewer") == list(assigned[-1].slots)

    def test_pause_stops_forwarding_to_that_subscriber_only(self) -> None:
        room = three_in_a_room()
        room.rtp("alice", vp8(0xA1, 1, key=True))
        mid = room.slot("bob", "alice", "cam").mid
        room.keep(room.router.set_paused("bob", mid, True, room.clock.now))
        out = room.rtp("alice", vp8(0xA1, 2))
        assert (media(out, "bob"), len(media(out, "carol"))) == ([], 1)
        room.clock.advance(1.0)
        resumed = room.keep(room.router.set_paused("bob", mid, False, room.clock.now))
        assert [p.media_ssrc for p in feedback(resumed, "alice") if isinstance(p, PictureLossIndication)] == [
            0xA1
        ]
        assert media(room.rtp("alice", vp8(0xA1, 3)), "bob") == []  # waits for the keyframe
        assert len(media(room.rtp("alice", vp8(0xA1, 4, key=True)), "bob")) == 1


class TestBadInput:
    def test_malformed_and_misdirected_packets_are_counted(self) -> None:
        room = three_in_a_room()
        router, now = room.router, room.clock.now
        assert router.receive_rtp("alice", PcRole.PUBLISH, b"\x80\x60", now) == []
        assert router.receive_rtp("alice", PcRole.PUBLISH, b"\x40" + bytes(20), now) == []
        assert router.receive_rtp("alice", PcRole.SUBSCRIBE, vp8(0xA1, 1, key=True), now) == []
        assert router.receive_rtp("mallory", PcRole.PUBLISH, vp8(0xA1, 1, key=True), now) == []
        assert router.receive_rtcp("bob", PcRole.SUBSCRIBE, b"\x81\xcd\x00\x09", now) == []
        assert router.counters.dropped == {
            "malformed_rtp": 2,
            "rtp_on_subscribe_pc": 1,
            "unknown_participant": 1,
            "malformed_rtcp": 1,
        }

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["mallory", "bob", "nobody"]),
                st.sampled_from(PcRole),
                st.booleans(),
                st.one_of(
                    st.binary(max_size=64),
                    st.binary(max_size=64).map(
                        lambda tail: b"\x90\x60\x00\x01\x00\x00\x00\x01\x00\x00\x0e\x01" + tail
                    ),
                    st.binary(max_size=40).map(lambda tail: b"\x81\xcd\x00\x03" + tail),
                    st.binary(max_size=40).map(lambda tail: b"\x8f\xce\x00\x04" + tail),
                ),
            ),
            max_size=8,
        )
    )
    def test_random_bytes_never_raise_nor_disturb_others(
        self, junk: list[tuple[str, PcRole, bool, bytes]]
    ) -> None:
        room = three_in_a_room()
        room.join("mallory")
        room.publish("mallory", camera(0xE01, track_id="cam"))
        first = media(room.rtp("alice", vp8(0xA1, 1, key=True)), "bob")
        for name, role, rtcp, data in junk:
            if rtcp:
                room.router.receive_rtcp(name, role, data, room.clock.now)
            else:
                room.router.receive_rtp(name, role, data, room.clock.now)
        then = media(room.rtp("alice", vp8(0xA1, 2)), "bob")
        assert len(first) == len(then) == 1
        assert (then[0].sequence_number - first[0].sequence_number) & 0xFFFF == 1
