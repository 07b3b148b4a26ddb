"""RTCP reports an SFU sends (RFC 3550 §6.4): RRs to publishers, SRs to subscribers.

- :class:`ReceptionStatistics` follows one incoming source (RFC 3550 Appendix A.1 extended
  sequence numbers, A.3 loss, A.8 interarrival jitter, §6.4.1 LSR/DLSR) and fills a report block.
- :class:`SenderStatistics` counts one outgoing stream's packets and payload octets (§6.4.1) and
  builds its SR; its NTP/RTP pair comes from the caller, ideally the publisher's SR translated
  with :meth:`~meet443.sfu.rewrite.StreamRewriter.map_timestamp` so lip sync survives the SFU.
"""

from __future__ import annotations

from collections.abc import Sequence

from meet443.proto.rtp.rtcp import ReportBlock, SenderReport, ntp_middle


class ReceptionStatistics:
    """What an RR report block says about one incoming SSRC."""

    __slots__ = (
        "_base",
        "_expected_prior",
        "_highest",
        "_jitter",
        "_last_arrival",
        "_last_sr",
        "_last_sr_at",
        "_last_timestamp",
        "_received",
        "_received_prior",
        "clock_rate",
        "ssrc",
    )

    def __init__(self, ssrc: int, clock_rate: int) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._base: int | None = None
        self._highest = 0
        self._received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        self._last_arrival: float | None = None
        self._last_timestamp = 0
        self._last_sr = 0
        self._last_sr_at: float | None = None

    def received(self, seq: int, timestamp: int, now: float) -> None:
        """One packet of this source arrived at ``now``."""
        self._received += 1
        if self._base is None:
            self._base = self._highest = seq
            self._last_arrival, self._last_timestamp = now, timestamp
            return
        highest = self._highest
        extended = highest + (((seq - highest + 0x8000) & 0xFFFF) - 0x8000)
        if extended <= highest:
            return  # reordered or duplicate: counts as received, not for jitter
        self._highest = extended
        if timestamp != self._last_timestamp and self._last_arrival is not None:
            # RFC 3550 A.8: D = (Rj - Ri) - (Sj - Si) in timestamp units; J += (|D| - J) / 16.
            # Only on a new timestamp: a video frame's packets share one and arrive spread out.
            sent = ((timestamp - self._last_timestamp + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            difference = (now - self._last_arrival) * self.clock_rate - sent
            self._jitter += (abs(difference) - self._jitter) / 16
        self._last_arrival, self._last_timestamp = now, timestamp

    def sender_report(self, ntp_timestamp: int, now: float) -> None:
        """The source's SR arrived: remember LSR and when, for DLSR (RFC 3550 §6.4.1)."""
        self._last_sr = ntp_middle(ntp_timestamp)
        self._last_sr_at = now

    def report_block(self, now: float) -> ReportBlock:
        """RFC 3550 §6.4.1 / A.3: the block for an RR sent now (starts a new loss interval)."""
        if self._base is None:
            return ReportBlock(self.ssrc, 0, 0, 0, 0, 0, 0)
        expected = self._highest - self._base + 1
        lost = expected - self._received
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior, self._received_prior = expected, self._received
        lost_interval = expected_interval - received_interval
        fraction = (
            0 if expected_interval <= 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        )
        delay = 0 if self._last_sr_at is None else round((now - self._last_sr_at) * 65536) & 0xFFFFFFFF
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(fraction, 255),
            packets_lost=lost,
            highest_sequence=max(0, self._highest) & 0xFFFFFFFF,
            jitter=int(self._jitter),
            last_sr=self._last_sr,
            delay_since_last_sr=delay,
        )


class SenderStatistics:
    """RFC 3550 §6.4.1 sender info of one outgoing stream."""

    __slots__ = ("octets", "packets", "ssrc")

    def __init__(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.packets = 0
        self.octets = 0

    def sent(self, payload_size: int) -> None:
        """A packet went out; count its payload octets (no header, no padding)."""
        self.packets += 1
        self.octets += payload_size

    def sender_report(
        self, ntp_timestamp: int, rtp_timestamp: int, reports: Sequence[ReportBlock] = ()
    ) -> SenderReport:
        return SenderReport(
            ssrc=self.ssrc,
            ntp_timestamp=ntp_timestamp,
            rtp_timestamp=rtp_timestamp & 0xFFFFFFFF,
            packet_count=self.packets & 0xFFFFFFFF,
            octet_count=self.octets & 0xFFFFFFFF,
            reports=tuple(reports),
        )
