"""KeyframeRequester: PLI (RFC 4585 §6.3.1) and FIR (RFC 5104 §4.3.1) towards a publisher, throttled."""

from __future__ import annotations

from meet443.proto.rtp.rtcp import (
    FirEntry,
    FullIntraRequest,
    PictureLossIndication,
    parse_rtcp,
    serialize_rtcp,
)
from meet443.sfu.keyframes import KeyframeMethod, KeyframeRequester

from .harness import FakeClock

SFU = 0xF00D


class TestPliThrottle:
    def test_first_request_goes_out_at_once(self) -> None:
        clock = FakeClock()
        requester = KeyframeRequester(SFU)
        assert requester.request(0xA, clock.now) == [PictureLossIndication(SFU, 0xA)]
        assert requester.get_timer() is None

    def test_many_subscribers_one_pli_per_interval(self) -> None:
        clock = FakeClock()
        requester = KeyframeRequester(SFU, min_interval=0.5)
        start = clock.now
        requester.request(0xA, clock.now)
        for _ in range(20):  # twenty subscribers lost the keyframe within 200 ms
            assert requester.request(0xA, clock.advance(0.01)) == []
        assert requester.throttled == 20
        assert requester.get_timer() == start + 0.5
        assert requester.handle_timer(start + 0.49) == []
        assert requester.handle_timer(start + 0.5) == [PictureLossIndication(SFU, 0xA)]
        assert requester.handle_timer(start + 2.0) == []
        assert requester.sent == 2

    def test_a_keyframe_answers_deferred_requests(self) -> None:
        clock = FakeClock()
        requester = KeyframeRequester(SFU)
        requester.request(0xA, clock.now)
        requester.request(0xA, clock.advance(0.1))
        requester.keyframe_received(0xA)
        requester.keyframe_received(0xB)  # unknown sources are fine
        assert requester.get_timer() is None
        assert requester.handle_timer(clock.advance(1.0)) == []

    def test_sources_are_throttled_separately(self) -> None:
        clock = FakeClock()
        requester = KeyframeRequester(SFU)
        assert requester.request(0xA, clock.now)
        assert requester.request(0xB, clock.now)
        requester.request(0xA, clock.now)
        requester.request(0xB, clock.now)
        requester.keyframe_received(0xB)
        deadline = requester.get_timer()
        assert deadline is not None
        assert requester.handle_timer(deadline) == [PictureLossIndication(SFU, 0xA)]
        assert requester.get_timer() is None

    def test_remove_source(self) -> None:
        clock = FakeClock()
        requester = KeyframeRequester(SFU)
        requester.request(0xA, clock.now)
        requester.request(0xA, clock.now)
        requester.remove_source(0xA)
        assert requester.get_timer() is None


class TestRfc5104Fir:
    def test_sequence_numbers_and_aggregation(self) -> None:
        clock = FakeClock()
        requester = KeyframeRequester(SFU)
        requester.add_source(0xA, KeyframeMethod.FIR)
        requester.add_source(0xB, KeyframeMethod.FIR)
        requester.add_source(0xC)
        assert requester.request(0xA, clock.now) == [FullIntraRequest(SFU, (FirEntry(0xA, 1),))]
        requester.request(0xA, clock.advance(0.1))
        requester.request(0xB, clock.now)
        requester.request(0xB, clock.now)
        requester.request(0xC, clock.now)
        requester.request(0xC, clock.now)
        packets = requester.handle_timer(clock.advance(0.5))
        # RFC 5104 §4.3.1.2: a new request, a new sequence number; due FIRs share one packet.
        assert packets == [
            PictureLossIndication(SFU, 0xC),
            FullIntraRequest(SFU, (FirEntry(0xA, 2), FirEntry(0xB, 2))),
        ]
        assert parse_rtcp(serialize_rtcp(packets)) == packets

    def test_sequence_number_wraps(self) -> None:
        clock = FakeClock()
        requester = KeyframeRequester(SFU, min_interval=0.0)
        requester.add_source(0xA, KeyframeMethod.FIR)
        numbers = []
        for _ in range(300):
            (packet,) = requester.request(0xA, clock.advance(0.001))
            assert isinstance(packet, FullIntraRequest)
            numbers.append(packet.entries[0].sequence_number)
        assert numbers[254:258] == [255, 0, 1, 2]
