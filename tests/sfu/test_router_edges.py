"""Router: what a real peer may send that the main paths in test_router.py do not (a stream that
restarts or stops, feedback for SSRCs the SFU never used, RFC 8285 two-byte extensions, teardown)."""

from __future__ import annotations

import pytest

from meet443.proto.rtp.packet import HeaderExtension, RawExtension, RtpPacket, TwoByteExtensions
from meet443.proto.rtp.rtcp import (
    FirEntry,
    FullIntraRequest,
    GenericNack,
    Goodbye,
    PictureLossIndication,
    ReceiverReport,
    Remb,
    ReportBlock,
    SdesChunk,
    SdesItem,
    SenderReport,
    SourceDescription,
)
from meet443.sfu.events import DominantSpeaker
from meet443.sfu.router import Router
from meet443.sfu.tracks import PcRole, PublishedTrack, SubscriberProfile

from . import test_router
from .harness import SimulcastPublisher
from .test_router import (
    PROFILE,
    PUB_ABS,
    PUB_EXTENSIONS,
    PUB_MID,
    PUB_RID,
    PUB_RRID,
    SUB_ABS,
    SUB_MID,
    VP8,
    Room,
    camera,
    extensions,
    feedback,
    media,
    microphone,
    opus,
    three_in_a_room,
    vp8,
)


def plis(out: list, name: str) -> list[int]:
    return [p.media_ssrc for p in feedback(out, name) if isinstance(p, PictureLossIndication)]


class TestMembership:
    def test_joining_twice_is_refused_and_leaving_twice_is_harmless(self) -> None:
        room = three_in_a_room()
        with pytest.raises(ValueError, match="already in the room"):
            room.join("bob")
        room.keep(room.router.remove_participant("bob", room.clock.now))
        assert room.router.remove_participant("bob", room.clock.now) == []
        assert [s.participant for s in room.router.slots("carol")] == ["alice", "alice"]

    def test_the_dominant_speaker_leaving_is_announced(self) -> None:
        room = Room()
        room.join("alice", "bob")
        room.publish("alice", microphone(0xA0))
        for seq in range(50):
            room.rtp("alice", opus(0xA0, seq, level=20))
            room.run(0.02)
        assert DominantSpeaker("alice") in room.events
        room.events.clear()
        room.keep(room.router.remove_participant("alice", room.clock.now))
        assert DominantSpeaker(None) in room.events

    def test_an_empty_room_has_no_timers(self) -> None:
        room = three_in_a_room()
        assert room.router.get_timer() is not None
        for name in ("alice", "bob", "carol"):
            room.keep(room.router.remove_participant(name, room.clock.now))
        assert room.router.get_timer() is None
        assert room.handle_timer() == []

    def test_pausing_a_slot_that_is_not_a_bound_video_is_refused(self) -> None:
        """A client's pause for a stale mid, an audio section, or from someone gone is counted."""
        room = three_in_a_room()
        audio = room.slot("bob", "alice", "0").mid
        for name, mid in (("bob", "v99"), ("bob", audio), ("nobody", "v0")):
            assert room.router.set_paused(name, mid, True, room.clock.now) == []
        assert room.router.counters.dropped == {"unknown_slot": 3}
        assert len(media(room.rtp("alice", vp8(0xA1, 1, key=True)), "bob")) == 1

    def test_ssrcs_stay_distinct_and_nonzero_when_the_random_source_repeats(self) -> None:
        """RFC 3550 §8.1: a collision is resolved at once, and 0 (rejected by some stacks) never used."""
        router = Router(token_bytes=bytes)  # all zeros, every time
        for name in ("alice", "bob", "carol"):
            router.add_participant(name, PROFILE, 0.0)
        router.publish("alice", [camera(0xA1), microphone(0xA0)], 0.0)
        ssrcs = [
            x for name in ("bob", "carol") for s in router.slots(name) for x in (s.ssrc, s.rtx_ssrc) if x
        ]
        assert len(ssrcs) == 6 and len(set(ssrcs)) == 6 and 0 not in ssrcs


class TestUnpublish:
    def test_a_track_left_out_stops_and_frees_its_slots(self) -> None:
        """A publisher that removes its camera (renegotiation without the m-section's SSRCs):
        its packets, and its RTX stream, are unknown from then on; the slot goes idle."""
        room = three_in_a_room()
        room.publish("alice", camera(0xA1, rtx_ssrcs=((0xA1, 0xA2),)), microphone(0xA0))
        assert len(media(room.rtp("alice", vp8(0xA1, 1, key=True)), "bob")) == 1
        room.publish("alice", microphone(0xA0))
        assert [s.participant for s in room.router.slots("bob") if s.kind == "video"] == [None]
        rtx = bytes(RtpPacket(97, 1, 3000, 0xA2, b"\x00\x01" + RtpPacket.parse(vp8(0xA1, 1)).payload))
        assert room.rtp("alice", vp8(0xA1, 2)) == [] and room.rtp("alice", rtx) == []
        assert room.router.counters.dropped == {"unknown_ssrc": 2}
        assert len(media(room.rtp("alice", opus(0xA0, 1)), "bob")) == 1

    def test_republished_rid_layers_keep_their_learnt_ssrcs(self) -> None:
        """Renegotiation changes the m-section (here its codecs) but not the RIDs: the SSRCs
        learnt from RID extensions stay, since Chrome sends no RID on them any more."""
        room = Room()
        room.join("alice", "bob")
        track = PublishedTrack("cam", "video", "camera", (VP8,), rids=("q",), extensions=PUB_EXTENSIONS)
        room.publish("alice", track)
        first = vp8(0x51, 1, key=True, ext=[(PUB_MID, b"cam"), (PUB_RID, b"q")])
        assert len(media(room.rtp("alice", first), "bob")) == 1
        ext = extensions((PUB_MID, b"cam"), (PUB_RRID, b"q"))
        original = RtpPacket.parse(vp8(0x51, 3))
        learn_rtx = RtpPacket(97, 9, original.timestamp, 0x52, b"\x00\x03" + original.payload, extension=ext)
        assert len(media(room.rtp("alice", bytes(learn_rtx)), "bob")) == 1
        h264 = VP8.__class__("h264", 102, 90000)
        room.publish(
            "alice",
            PublishedTrack("cam", "video", "camera", (VP8, h264), rids=("q",), extensions=PUB_EXTENSIONS),
        )
        # Rebound, the slot starts again at a keyframe; no extension names the SSRCs now.
        assert len(media(room.rtp("alice", vp8(0x51, 4, key=True)), "bob")) == 1
        assert len(media(room.rtp("alice", vp8(0x51, 6)), "bob")) == 1
        lost = RtpPacket.parse(vp8(0x51, 5))
        rtx = RtpPacket(97, 10, lost.timestamp, 0x52, b"\x00\x05" + lost.payload)
        assert len(media(room.rtp("alice", bytes(rtx)), "bob")) == 1
        assert "unknown_ssrc" not in room.router.counters.dropped


class TestRfc8852Learning:
    def room(self, *rids: str) -> Room:
        room = Room()
        room.join("alice", "bob")
        track = PublishedTrack("cam", "video", "camera", (VP8,), rids=rids, extensions=PUB_EXTENSIONS)
        room.publish("alice", track)
        return room

    def test_rids_the_offer_did_not_name_are_not_learnt(self) -> None:
        room = self.room("q", "h")
        assert room.rtp("alice", vp8(0x51, 1, key=True, ext=[(PUB_MID, b"cam"), (PUB_RID, b"f")])) == []
        repair = vp8(0x52, 1, ext=[(PUB_MID, b"cam"), (PUB_RRID, b"f")])
        assert room.rtp("alice", repair) == []
        # Several layers, no RID: which one is it?
        assert room.rtp("alice", vp8(0x53, 1, key=True, ext=[(PUB_MID, b"cam")])) == []
        assert room.router.counters.dropped == {"unknown_ssrc": 3}

    def test_a_single_stream_without_ssrcs_in_sdp_is_learnt_by_mid(self) -> None:
        """No a=ssrc lines and no simulcast: the MID alone names the track; the RTX PT marks
        its repair stream (RFC 4588 §4)."""
        room = Room()
        room.join("alice", "bob")
        room.publish("alice", PublishedTrack("cam", "video", "camera", (VP8,), extensions=PUB_EXTENSIONS))
        out = room.rtp("alice", vp8(0x71, 1, key=True, ext=[(PUB_MID, b"cam")]))
        assert len(media(out, "bob")) == 1
        room.rtp("alice", vp8(0x71, 3))
        lost = RtpPacket.parse(vp8(0x71, 2))
        rtx = RtpPacket(
            97, 1, lost.timestamp, 0x72, b"\x00\x02" + lost.payload, extension=extensions((PUB_MID, b"cam"))
        )
        [repaired] = media(room.rtp("alice", bytes(rtx)), "bob")
        assert repaired.payload[4:] == lost.payload[4:]

    def test_an_rtx_stream_of_a_layer_not_yet_seen_is_dropped(self) -> None:
        room = self.room("q", "h")
        repair = vp8(0x52, 1, ext=[(PUB_MID, b"cam"), (PUB_RRID, b"h")])
        assert room.rtp("alice", repair) == []
        assert room.router.counters.dropped == {"rtx_unknown_media": 1}

    def test_an_encoder_restart_under_a_new_ssrc_replaces_the_layer(self) -> None:
        """The browser's encoder restarts (e.g. a codec or resolution change) with a new SSRC
        on the same RID: forwarding moves to it at its keyframe, the old SSRC is forgotten."""
        room = self.room("q")
        first = vp8(0x51, 1, key=True, ext=[(PUB_MID, b"cam"), (PUB_RID, b"q")])
        [before] = media(room.rtp("alice", first), "bob")
        restarted = vp8(0x61, 500, key=True, ext=[(PUB_MID, b"cam"), (PUB_RID, b"q")])
        [after] = media(room.rtp("alice", restarted), "bob")
        assert after.ssrc == before.ssrc and after.sequence_number == (before.sequence_number + 1) & 0xFFFF
        assert room.rtp("alice", vp8(0x51, 2)) == []
        assert room.router.counters.dropped == {"unknown_ssrc": 1}


class TestBadMedia:
    def test_rtcp_on_the_rtp_path_and_unknown_payload_types_are_dropped(self) -> None:
        """RFC 5761 §4: the second byte tells RTCP from RTP; a PT the offer did not name is not
        forwarded (the subscriber could not decode it)."""
        room = three_in_a_room()
        sr = bytes(SenderReport(0xA1, 0, 0, 0, 0))
        assert room.rtp("alice", sr) == []
        assert room.rtp("alice", bytes(RtpPacket(100, 1, 0, 0xA1, b"x" * 20))) == []
        rtx = bytes(RtpPacket(98, 1, 0, 0xA2, b"\x00\x01" + b"x" * 20))
        room.publish("alice", camera(0xA1, rtx_ssrcs=((0xA1, 0xA2),)), microphone(0xA0))
        assert room.rtp("alice", rtx) == []  # 98 is not the RTX PT of any codec
        assert room.router.counters.dropped == {
            "rtcp_as_rtp": 1,
            "unknown_payload_type": 1,
            "rtx_unknown_media": 1,
        }

    def test_a_gap_too_wide_to_repair_asks_for_a_keyframe(self) -> None:
        """RFC 4585 §3.5.3: more missing than NACKs could repair; a PLI at once instead."""
        room = three_in_a_room()
        room.rtp("alice", vp8(0xA1, 1, key=True))
        room.run(1.0)
        assert plis(room.rtp("alice", vp8(0xA1, 3000)), "alice") == [0xA1]

    def test_a_small_gap_is_nacked_to_the_publisher(self) -> None:
        """RFC 4585 §6.2.1: the SFU repairs its own ingress; the NACK names what is missing."""
        room = three_in_a_room()
        room.rtp("alice", vp8(0xA1, 1, key=True))
        room.rtp("alice", vp8(0xA1, 4))
        [nack] = [p for p in feedback(room.handle_timer(), "alice") if isinstance(p, GenericNack)]
        assert (nack.media_ssrc, nack.lost()) == (0xA1, [2, 3])
        room.rtp("alice", vp8(0xA1, 2))
        room.rtp("alice", vp8(0xA1, 3))
        room.clock.advance(0.2)
        assert not [p for p in feedback(room.handle_timer(), "alice") if isinstance(p, GenericNack)]


class TestRfc4585FeedbackEdges:
    def test_fir_becomes_a_keyframe_request_to_the_publisher(self) -> None:
        """RFC 5104 §4.3.1: Firefox asks with FIR where Chrome sends PLI; both reach the source."""
        room = three_in_a_room()
        room.rtp("alice", vp8(0xA1, 1, key=True))
        room.run(1.0)
        slot = room.slot("bob", "alice", "cam")
        out = room.rtcp("bob", PcRole.SUBSCRIBE, FullIntraRequest(0xB0B, (FirEntry(slot.ssrc, 1),)))
        assert plis(out, "alice") == [0xA1]

    def test_feedback_for_ssrcs_the_sfu_never_sent_is_ignored(self) -> None:
        """A subscriber's late NACK/PLI for an SSRC of an old offer, or for its audio, asks nothing."""
        room = three_in_a_room()
        room.rtp("alice", vp8(0xA1, 1, key=True))
        room.run(1.0)
        audio = room.slot("bob", "alice", "0").ssrc
        out = room.rtcp("bob", PcRole.SUBSCRIBE, GenericNack.for_lost(0xB0B, 0xDEAD, [1]))
        out += room.rtcp("bob", PcRole.SUBSCRIBE, PictureLossIndication(0xB0B, 0xDEAD))
        out += room.rtcp("bob", PcRole.SUBSCRIBE, PictureLossIndication(0xB0B, audio))
        assert out == []
        assert room.router.counters.dropped == {"nack_for_unknown_ssrc": 1}

    def test_sdes_and_bye_change_nothing(self) -> None:
        room = three_in_a_room()
        sdes = SourceDescription((SdesChunk(0xB0B, (SdesItem(1, b"bob"),)),))
        assert room.rtcp("bob", PcRole.SUBSCRIBE, sdes, Goodbye((0xB0B,))) == []
        assert room.router.counters.dropped == {}

    def test_a_sender_report_for_an_unknown_ssrc_gives_no_sr_downstream(self) -> None:
        """RFC 3550 §6.4.1: without the publisher's own NTP/RTP pair there is no SR to translate."""
        room = three_in_a_room()
        room.rtp("alice", vp8(0xA1, 1, key=True))
        room.rtcp("alice", PcRole.PUBLISH, SenderReport(0xDEAD, 1 << 32, 90000, 1, 100))
        assert not [p for p in feedback(room.run(1.0), "bob") if isinstance(p, SenderReport)]

    def test_an_audio_only_publisher_gets_receiver_reports_without_remb(self) -> None:
        """draft-alvestrand-rmcat-remb §2: REMB caps video bitrate; audio has none to cap."""
        room = Room()
        room.join("alice", "bob")
        room.publish("alice", microphone(0xA0))
        room.rtp("alice", opus(0xA0, 1))
        to_alice = feedback(room.run(1.0), "alice")
        assert [type(p) for p in to_alice] == [ReceiverReport]


class TestBandwidthEdges:
    def test_no_probe_without_abs_send_time(self) -> None:
        """Padding reaches a receive-side estimator only with abs-send-time (its REMB input): a
        subscriber that did not negotiate it gets none, where test_router's bob is probed."""
        room = Room()
        profile = SubscriberProfile(
            PROFILE.payload_types, tuple(e for e in PROFILE.extensions if e[1] != SUB_ABS)
        )
        room.keep(room.router.add_participant("bob", profile, room.clock.now))
        room.join("alice")
        publisher = SimulcastPublisher()
        room.publish(
            "alice", PublishedTrack("cam", "video", "camera", (VP8,), tuple(x.ssrc for x in publisher.layers))
        )
        slot = room.slot("bob", "alice", "cam")
        padding = 0
        for _ in range(5):
            room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 300_000, ()))
            for _ in range(30):
                out = [o for _, packet in publisher.frame() for o in room.rtp("alice", packet)]
                out += room.run(1 / 30)
                for ssrc in plis(out, "alice"):
                    publisher.request_keyframe(ssrc)
                padding += len([p for p in media(out, "bob") if p.padding and not p.payload])
            room.rtcp(
                "bob", PcRole.SUBSCRIBE, ReceiverReport(0xB0B, (ReportBlock(slot.ssrc, 0, 0, 0, 0, 0, 0),))
            )
        assert padding == 0 and room.router.counters.probe_packets == 0


class TestVerifiedRate:
    def test_moderate_loss_withdraws_what_a_probe_showed(self) -> None:
        """A probe lifted bob above his stalled REMB; later reports lose 7% (above VERIFIED_LOSS,
        below the congestion threshold): the path no longer carries it, so the REMB rules again
        and bob goes back to the layer it covers."""
        sim = test_router.TestRfc8853Simulcast()
        room, publisher = sim.simulcast_room()
        slot = room.slot("bob", "alice", "cam")

        def packets_per_frame(seconds: int, lost: float) -> int:
            most = 0
            for _ in range(seconds):
                room.rtcp("bob", PcRole.SUBSCRIBE, Remb(0xB0B, 300_000, ()))
                for _ in range(30):
                    got = media(sim.frame_out(room, publisher), "bob")
                    most = len([q for q in got if q.ssrc == slot.ssrc])
                sim.deliver(sim.rr(room, lost), publisher)
            return most

        assert packets_per_frame(10, 0.0) >= 3, "the probe did not lift the layer"
        assert packets_per_frame(3, 0.07) == 1, "still above what the REMB covers"


class TestRfc8285TwoByteExtensions:
    def forward(self, packet: bytes) -> RtpPacket | None:
        room = three_in_a_room()
        got = media(room.rtp("alice", packet), "bob")
        return got[0] if got else None

    def test_two_byte_elements_are_renumbered_in_place(self) -> None:
        """RFC 8285 §4.3 (Chrome with extmap-allow-mixed): MID, abs-send-time renumbered, RID blanked."""
        elements = (
            HeaderExtension(PUB_MID, b"cam"),
            HeaderExtension(PUB_RID, b"q"),
            HeaderExtension(PUB_ABS, b"\x00\x00\x01"),
        )
        base = RtpPacket.parse(vp8(0xA1, 1, key=True))
        packet = bytes(
            RtpPacket(96, 1, 3000, 0xA1, base.payload, True, extension=TwoByteExtensions(elements))
        )
        forwarded = self.forward(packet)
        assert forwarded is not None and isinstance(forwarded.extension, TwoByteExtensions)
        ids = {e.id: e.value for e in forwarded.extension.elements}
        assert ids.keys() == {SUB_MID, SUB_ABS}
        assert ids[SUB_MID] == b"v0"

    def test_a_one_byte_block_stops_at_id_15(self) -> None:
        """RFC 8285 §4.2: id 15 ends the block; nothing after it is read or forwarded."""
        packet = bytearray(vp8(0xA1, 1, key=True, ext=[(PUB_MID, b"cam"), (PUB_ABS, b"\x00\x00\x01")]))
        packet[16] = 0xF0 | (packet[16] & 0x0F)  # the MID element becomes the terminator
        forwarded = self.forward(bytes(packet))
        assert forwarded is not None and forwarded.extension is not None
        assert forwarded.extension.get(SUB_MID) is None and forwarded.extension.get(SUB_ABS) is None

    def test_another_profile_is_forwarded_untouched(self) -> None:
        """RFC 3550 §5.3.1: a profile the SFU does not know is opaque to it and to receivers."""
        base = RtpPacket.parse(vp8(0xA1, 1, key=True))
        raw = RawExtension(0xABCD, b"\x01\x02\x03\x04")
        forwarded = self.forward(bytes(RtpPacket(96, 1, 3000, 0xA1, base.payload, True, extension=raw)))
        assert forwarded is not None and forwarded.extension == raw

    @pytest.mark.parametrize(
        "block",
        [
            bytes((PUB_ABS, 8, 0, 0)),  # the element overruns the block
            bytes((0, 0, 0, PUB_ABS)),  # an id with no length byte
        ],
    )
    def test_a_malformed_two_byte_block_is_dropped(self, block: bytes) -> None:
        base = RtpPacket.parse(vp8(0xA1, 1, key=True))
        packet = bytearray(
            bytes(RtpPacket(96, 1, 3000, 0xA1, base.payload, True, extension=RawExtension(0x1000, block)))
        )
        room = three_in_a_room()
        assert media(room.rtp("alice", bytes(packet)), "bob") == []
        assert room.router.counters.dropped == {"malformed_rtp": 1}
