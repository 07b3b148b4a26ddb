"""RFC 3550 §6.4 reports: reception statistics (A.1, A.3, A.8) against aiortc's, and sender info."""

from __future__ import annotations

import random

import pytest
from aiortc import rtcrtpreceiver
from aiortc.rtp import RtpPacket as AiortcRtpPacket

from meet443.proto.rtp.rtcp import ReportBlock, SenderReport, ntp_from_unix, ntp_middle
from meet443.sfu.bitrate import BitrateMeter
from meet443.sfu.reports import ReceptionStatistics, SenderStatistics

from .harness import FakeClock


class TestRfc3550ReceptionStatistics:
    def test_loss_and_wrap(self) -> None:
        clock = FakeClock()
        stats = ReceptionStatistics(0xA, 90000)
        assert stats.report_block(clock.now) == ReportBlock(0xA, 0, 0, 0, 0, 0, 0)
        for i in range(100):
            if i % 10 != 3:
                stats.received((65500 + i) & 0xFFFF, i * 3000, clock.advance(1 / 30))
        block = stats.report_block(clock.now)
        assert (block.packets_lost, block.fraction_lost) == (10, 10 * 256 // 100)
        assert block.highest_sequence == (1 << 16) | ((65500 + 99) & 0xFFFF)  # one cycle
        # The next interval starts afresh (A.3): no loss since.
        stats.received((65500 + 100) & 0xFFFF, 300_000, clock.advance(1 / 30))
        assert stats.report_block(clock.now).fraction_lost == 0

    def test_lsr_and_dlsr(self) -> None:
        clock = FakeClock()
        stats = ReceptionStatistics(0xA, 90000)
        stats.received(1, 0, clock.now)
        ntp = ntp_from_unix(1_800_000_000.0)
        stats.sender_report(ntp, clock.now)
        block = stats.report_block(clock.advance(1.5))
        assert (block.last_sr, block.delay_since_last_sr) == (ntp_middle(ntp), 98304)  # 1.5 s in 1/65536

    @pytest.mark.parametrize("seed", range(5))
    def test_same_as_aiortc(self, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
        """aiortc's StreamStatistics (RFC 3550 A.3/A.8 in Q4 fixed point) agrees on the same arrivals."""
        rng = random.Random(seed)
        clock = FakeClock(1000.0)
        monkeypatch.setattr("aiortc.rtcrtpreceiver.time.time", lambda: clock.now)
        theirs = rtcrtpreceiver.StreamStatistics(90000)
        ours = ReceptionStatistics(0xA, 90000)
        seq, timestamp = rng.randrange(0x10000), rng.randrange(1 << 31)
        for frame in range(300):
            timestamp += 3000
            clock.advance(1 / 30 + rng.uniform(-0.01, 0.01))
            for _ in range(rng.randrange(1, 4)):
                seq = (seq + 1) & 0xFFFF
                if rng.random() < 0.05:
                    continue
                clock.advance(rng.uniform(0, 0.002))
                packet = AiortcRtpPacket(sequence_number=seq, timestamp=timestamp)
                theirs.add(packet)
                ours.received(seq, timestamp, clock.now)
            if frame % 100 == 99:
                block = ours.report_block(clock.now)
                assert block.fraction_lost == theirs.fraction_lost
                assert block.packets_lost == theirs.packets_lost
                assert abs(block.jitter - theirs.jitter) <= 2

    def test_reordering_does_not_move_the_highest(self) -> None:
        stats = ReceptionStatistics(0xA, 90000)
        for seq in (10, 12, 11):
            stats.received(seq, 0, 0.0)
        assert stats.report_block(0.0).highest_sequence == 12
        assert stats.report_block(0.0).packets_lost == 0


class TestRfc3550SenderStatistics:
    def test_sender_report(self) -> None:
        stats = SenderStatistics(0x5555)
        for _ in range(10):
            stats.sent(1088)
        block = ReportBlock(1, 2, 3, 4, 5, 6, 7)
        assert stats.sender_report(123, 1 << 33, [block]) == SenderReport(0x5555, 123, 0, 10, 10880, (block,))


class TestBitrateMeter:
    def test_window(self) -> None:
        clock = FakeClock(100.0)
        meter = BitrateMeter(window=1.0, buckets=10)
        for _ in range(100):  # 100 packets of 1250 bytes over one second: 1 Mbps
            meter.add(1250, clock.advance(0.01))
        assert meter.bitrate(clock.now) == pytest.approx(1_000_000, rel=0.11)
        assert meter.bitrate(clock.advance(2.0)) == 0

    def test_validation(self) -> None:
        with pytest.raises(ValueError, match="positive"):
            BitrateMeter(window=0)
