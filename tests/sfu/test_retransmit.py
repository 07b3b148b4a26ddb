"""RetransmitBuffer: NACKs (RFC 4585 §6.2.1) answered from what was sent, RTX-wrapped (RFC 4588 §4)."""

from __future__ import annotations

import pytest
from aiortc import rtp as aiortc_rtp

from meet443.proto.rtp.packet import RtpPacket, unwrap_rtx
from meet443.proto.rtp.rtcp import GenericNack, parse_rtcp
from meet443.sfu.retransmit import RetransmitBuffer, RtxSettings

from .harness import FakeClock


def sent(seq: int, size: int = 1100) -> bytes:
    return bytes(RtpPacket(96, seq & 0xFFFF, seq * 3000 & 0xFFFFFFFF, 0x5555, bytes(size - 12)))


def filled(clock: FakeClock, seqs: range, **kwargs: object) -> RetransmitBuffer:
    buffer = RetransmitBuffer(**kwargs)  # type: ignore[arg-type]
    for seq in seqs:
        buffer.store(seq & 0xFFFF, sent(seq), clock.now)
    return buffer


class TestRfc4585NackFromBuffer:
    def test_answers_from_the_buffer(self) -> None:
        clock = FakeClock()
        buffer = filled(clock, range(100, 200))
        nack = parse_rtcp(bytes(GenericNack.for_lost(1, 0x5555, [120, 121, 150])))[0]
        assert isinstance(nack, GenericNack)
        assert buffer.answer(nack.lost(), clock.advance(0.05)) == [sent(120), sent(121), sent(150)]
        assert buffer.resent == 3

    def test_unknown_and_overwritten_packets_are_missing(self) -> None:
        clock = FakeClock()
        buffer = filled(clock, range(0, 2000), capacity=1024)
        assert buffer.answer([5, 1500, 4000], clock.now) == [sent(1500)]
        assert buffer.missing == 2

    def test_too_old_packets_are_not_resent(self) -> None:
        clock = FakeClock()
        buffer = filled(clock, range(10), max_age=1.0)
        assert buffer.answer([3], clock.advance(1.5)) == []
        assert buffer.missing == 1

    def test_sequence_numbers_wrap(self) -> None:
        clock = FakeClock()
        buffer = filled(clock, range(65530, 65540))
        assert buffer.answer([65535, 0, 3], clock.now) == [sent(65535), sent(65536), sent(65539)]

    def test_once_per_interval(self) -> None:
        """A packet is resent at most once per min_interval (about an RTT): repeated NACKs for a
        retransmission still in flight do not multiply it."""
        clock = FakeClock()
        buffer = filled(clock, range(10), min_interval=0.125)
        assert len(buffer.answer([4], clock.now)) == 1
        assert buffer.answer([4], clock.advance(0.0625)) == []
        assert buffer.suppressed == 1
        assert len(buffer.answer([4], clock.advance(0.0625))) == 1

    def test_limit_per_nack(self) -> None:
        clock = FakeClock()
        buffer = filled(clock, range(100), max_per_nack=16)
        assert len(buffer.answer(range(100), clock.now)) == 16
        assert buffer.throttled == 84

    def test_byte_rate_limit(self) -> None:
        """A token bucket: a burst, then max_bytes_per_second."""
        clock = FakeClock()
        buffer = filled(
            clock, range(1000), max_bytes_per_second=88_000, burst_bytes=11_000, max_per_nack=1000
        )
        assert len(buffer.answer(range(0, 100), clock.now)) == 10
        assert len(buffer.answer(range(100, 200), clock.advance(0.5))) == 10  # bucket holds 10 packets
        assert len(buffer.answer(range(200, 300), clock.advance(0.0625))) == 5
        assert buffer.throttled == 90 + 90 + 95
        unlimited = filled(clock, range(100), max_bytes_per_second=None, max_per_nack=1000)
        assert len(unlimited.answer(range(100), clock.now)) == 100

    def test_limit_follows_the_path(self) -> None:
        """``limit``: the router's share of a subscriber's budget; a burst of that many seconds,
        never less than a few packets, and a full bucket shrinks with it at once."""
        clock = FakeClock()
        buffer = filled(clock, range(1000), max_per_nack=1000)
        buffer.limit(44_000, burst_seconds=0.25)  # 11,000-byte burst: 10 packets
        assert len(buffer.answer(range(0, 100), clock.now)) == 10
        assert len(buffer.answer(range(100, 200), clock.advance(0.125))) == 5
        buffer.limit(1_000, burst_seconds=0.25)  # a 250-byte burst would never fit a packet
        clock.advance(10.0)
        for seq in range(200, 300):
            buffer.store(seq, sent(seq), clock.now)
        assert len(buffer.answer(range(200, 300), clock.now)) == 5  # MIN_BURST_BYTES: 6,000 bytes

    def test_get(self) -> None:
        clock = FakeClock()
        buffer = filled(clock, range(3))
        assert buffer.get(2, clock.now) == sent(2)
        assert buffer.get(3, clock.now) is None

    @pytest.mark.parametrize("capacity", [0, 1000, 65536])
    def test_capacity_is_a_power_of_two(self, capacity: int) -> None:
        with pytest.raises(ValueError, match="power of two"):
            RetransmitBuffer(capacity=capacity)


class TestRfc4588Rtx:
    def test_wrapped_with_own_sequence_numbers(self) -> None:
        clock = FakeClock()
        buffer = filled(
            clock, range(300, 310), rtx=RtxSettings(ssrc=0x6666, payload_type=97, first_sequence=65535)
        )
        out = buffer.answer([301, 305], clock.now)
        packets = [RtpPacket.parse(p) for p in out]
        assert [(p.ssrc, p.payload_type, p.sequence_number) for p in packets] == [
            (0x6666, 97, 65535),
            (0x6666, 97, 0),
        ]
        # RFC 4588 §4: the payload starts with the original sequence number.
        assert [p.payload[:2] for p in packets] == [(301).to_bytes(2, "big"), (305).to_bytes(2, "big")]
        assert unwrap_rtx(out[1], ssrc=0x5555, payload_type=96) == sent(305)
        theirs = aiortc_rtp.unwrap_rtx(aiortc_rtp.RtpPacket.parse(out[0]), payload_type=96, ssrc=0x5555)
        assert theirs.serialize() == sent(301)


def test_token_bucket_ignores_a_clock_that_does_not_advance() -> None:
    clock = FakeClock()
    buffer = filled(clock, range(100), max_bytes_per_second=88_000, burst_bytes=2_200, max_per_nack=100)
    assert len(buffer.answer(range(10), clock.now)) == 2
    assert buffer.answer(range(10, 20), clock.now - 1.0) == []  # time went backwards: no refill
    assert len(buffer.answer(range(20, 30), clock.advance(0.125))) == 2  # refilled, capped at the burst
