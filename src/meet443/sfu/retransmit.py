"""Answering a subscriber's NACKs (RFC 4585 §6.2.1) from what was sent to it, RTX-wrapped (RFC 4588).

One :class:`RetransmitBuffer` per outgoing stream holds the last ``capacity`` packets by their
*outgoing* (rewritten) sequence number, unprotected: SRTP protects each (re)transmission, and an
RTX packet is a new packet with its own sequence number (RFC 4588 §4). Limits keep a lossy or
hostile subscriber from turning the SFU into an amplifier: packets older than ``max_age`` are not
resent, each packet at most once per ``min_interval`` (about an RTT), at most ``max_per_nack``
packets per NACK, and at most ``max_bytes_per_second`` (a token bucket) overall.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from meet443.proto.rtp.packet import wrap_rtx

#: The smallest burst :meth:`RetransmitBuffer.limit` allows: a few full-size packets, or a slow
#: path could never resend one.
MIN_BURST_BYTES = 4 * 1500


@dataclass(frozen=True, slots=True)
class RtxSettings:
    """RFC 4588 §8: the RTX stream negotiated for this outgoing stream (``a=ssrc-group:FID``)."""

    ssrc: int
    payload_type: int
    first_sequence: int = 0


class RetransmitBuffer:
    """A ring of sent packets indexed by outgoing sequence number; answers NACK lists."""

    __slots__ = (
        "_last_refill",
        "_mask",
        "_packets",
        "_resent_at",
        "_rtx_sequence",
        "_sent_at",
        "_seqs",
        "_tokens",
        "burst_bytes",
        "max_age",
        "max_bytes_per_second",
        "max_per_nack",
        "min_interval",
        "missing",
        "resent",
        "rtx",
        "suppressed",
        "throttled",
    )

    def __init__(
        self,
        *,
        capacity: int = 1024,
        max_age: float = 1.0,
        min_interval: float = 0.1,
        max_per_nack: int = 64,
        max_bytes_per_second: float | None = 1_000_000,
        burst_bytes: int = 256_000,
        rtx: RtxSettings | None = None,
    ) -> None:
        if capacity <= 0 or capacity & (capacity - 1) or capacity > 0x8000:
            raise ValueError("capacity must be a power of two up to 32768")
        self._mask = capacity - 1
        self._seqs = [-1] * capacity
        self._packets: list[bytes | None] = [None] * capacity
        self._sent_at = [-math.inf] * capacity
        self._resent_at = [-math.inf] * capacity
        self.max_age = max_age
        #: Raise towards the subscriber's RTT when it is known: one resend per round trip suffices.
        self.min_interval = min_interval
        self.max_per_nack = max_per_nack
        self.max_bytes_per_second = max_bytes_per_second
        self.burst_bytes = burst_bytes
        self._tokens = float(burst_bytes)
        self._last_refill: float | None = None
        self.rtx = rtx
        self._rtx_sequence = rtx.first_sequence & 0xFFFF if rtx is not None else 0
        #: Counters: packets resent; asked for but gone (never stored, overwritten or too old);
        #: asked for again within min_interval; refused by the per-NACK or byte-rate limit.
        self.resent = 0
        self.missing = 0
        self.suppressed = 0
        self.throttled = 0

    def store(self, seq: int, packet: bytes, now: float) -> None:
        """Keep a packet just sent (unprotected, with its outgoing sequence number)."""
        index = seq & self._mask
        self._seqs[index] = seq
        self._packets[index] = packet
        self._sent_at[index] = now
        self._resent_at[index] = -math.inf

    def get(self, seq: int, now: float) -> bytes | None:
        """The stored packet ``seq`` if it is still held and young enough to resend."""
        index = seq & self._mask
        if self._seqs[index] != seq or now > self._sent_at[index] + self.max_age:
            return None
        return self._packets[index]

    def answer(self, lost: Iterable[int], now: float) -> list[bytes]:
        """RFC 4585 §6.2.1 / RFC 4588 §3: the packets to resend for a NACK's sequence numbers.

        Returns unprotected packets in the order asked: the originals, or RTX packets when RTX
        was negotiated. A transport-wide sequence number in them (if any) still needs renumbering.
        """
        self._refill(now)
        out: list[bytes] = []
        rtx = self.rtx
        for asked in lost:
            seq = asked & 0xFFFF
            packet = self.get(seq, now)
            if packet is None:
                self.missing += 1
                continue
            index = seq & self._mask
            if now < self._resent_at[index] + self.min_interval:
                self.suppressed += 1
                continue
            if len(out) >= self.max_per_nack or (
                self.max_bytes_per_second is not None and self._tokens < len(packet)
            ):
                self.throttled += 1
                continue
            self._tokens -= len(packet)
            self._resent_at[index] = now
            if rtx is not None:
                packet = wrap_rtx(
                    packet, sequence_number=self._rtx_sequence, ssrc=rtx.ssrc, payload_type=rtx.payload_type
                )
                self._rtx_sequence = (self._rtx_sequence + 1) & 0xFFFF
            out.append(packet)
        self.resent += len(out)
        return out

    def limit(self, bytes_per_second: float, burst_seconds: float) -> None:
        """Resend at most ``bytes_per_second`` with bursts of ``burst_seconds`` of it: what the
        subscriber's path can spare, so that repairs do not add to the congestion they repair."""
        self.max_bytes_per_second = bytes_per_second
        self.burst_bytes = max(int(bytes_per_second * burst_seconds), MIN_BURST_BYTES)
        self._tokens = min(self._tokens, float(self.burst_bytes))

    def next_rtx_sequence(self) -> int:
        """The RTX stream's next sequence number, for a packet that is not a retransmission
        (a padding probe): RTX packets share one sequence space (RFC 4588 §4)."""
        seq = self._rtx_sequence
        self._rtx_sequence = (seq + 1) & 0xFFFF
        return seq

    def _refill(self, now: float) -> None:
        if self.max_bytes_per_second is None:
            return
        if self._last_refill is not None and now > self._last_refill:
            self._tokens = min(
                float(self.burst_bytes), self._tokens + (now - self._last_refill) * self.max_bytes_per_second
            )
        if self._last_refill is None or now > self._last_refill:
            self._last_refill = now
