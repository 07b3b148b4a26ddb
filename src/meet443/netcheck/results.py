"""What one check found, and the statistics of a short burst of packets. Pure: no I/O, no clock."""

from __future__ import annotations

import enum
import itertools
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from meet443.proto.addresses import Address

__all__ = ["CHECK_ORDER", "BurstStats", "CheckResult", "Failure", "burst_stats"]

Transport = Literal["tcp", "tls", "udp"]

#: Every check, in the order of the report (the network contract's order).
CHECK_ORDER = (
    "https",
    "wss",
    "stun",
    "sfu-udp",
    "turn-udp",
    "turn-tcp",
    "turn-tls",
    "direct-udp",
    "p2p-inbound",
)


class Failure(enum.Enum):
    """How a path was blocked; the value is what the report says."""

    REFUSED = "refused"
    TIMEOUT = "timed out"
    RESET = "connection reset"
    UNREACHABLE = "unreachable"
    #: The server's certificate does not verify with the system's (or --ca-file's) trust anchors.
    TLS_INTERCEPTED = "TLS intercepted"
    #: The TLS handshake itself failed or stalled after the TCP connection was accepted.
    TLS_FAILED = "TLS handshake failed"
    #: The TCP connection was accepted, then the exchange stalled: something inspects the payload.
    STALLED = "blocked after connecting"
    PROXY_REFUSED = "proxy refused"
    UNEXPECTED = "unexpected answer"
    NOT_TESTED = "not tested"


@dataclass(frozen=True, slots=True)
class BurstStats:
    """Round trips of a burst of numbered packets."""

    sent: int
    received: int
    #: Median round-trip time.
    rtt_ms: float | None
    #: Mean difference between consecutive round trips (RFC 3550 §6.4.1's D, unsmoothed).
    jitter_ms: float | None
    #: Fraction of packets that did not come back.
    loss: float
    #: Payload bits that came back per second, first send to last receive. A lower bound: the
    #: burst is short and paced.
    throughput_kbps: float | None


def burst_stats(
    sent_at: Mapping[int, float], received_at: Mapping[int, float], payload_bytes: int
) -> BurstStats:
    """Statistics of a burst: ``sent_at``/``received_at`` map sequence numbers to times in seconds.

    Answers for sequence numbers never sent are ignored; a duplicate is counted once (a mapping).
    """
    back = sorted(seq for seq in received_at if seq in sent_at)
    sent = len(sent_at)
    if not sent:
        return BurstStats(0, 0, None, None, 1.0, None)
    rtts = [(received_at[seq] - sent_at[seq]) * 1000.0 for seq in back]
    rtt = statistics.median(rtts) if rtts else None
    jitter = None
    if len(rtts) >= 2:
        jitter = statistics.fmean(abs(b - a) for a, b in itertools.pairwise(rtts))
    throughput = None
    if back:
        elapsed = max(received_at[seq] for seq in back) - min(sent_at.values())
        if elapsed > 0:
            throughput = len(back) * payload_bytes * 8 / elapsed / 1000.0
    return BurstStats(sent, len(back), rtt, jitter, 1.0 - len(back) / sent, throughput)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One row of the report. ``to_json`` gives exactly the documented keys; the rest feeds the verdict."""

    name: str
    transport: Transport
    port: int
    ok: bool
    rtt_ms: float | None = None
    jitter_ms: float | None = None
    loss: float | None = None
    detail: str = ""
    failure: Failure | None = None
    #: The server-reflexive address the server saw (STUN checks).
    reflexive: Address | None = None
    #: direct-udp: one socket got the same reflexive address from the main and the other port
    #: (None: unknown). RFC 4787 "endpoint-independent mapping", as far as one server IP can tell.
    stable_mapping: bool | None = None
    throughput_kbps: float | None = None
    #: Went through the HTTP CONNECT proxy.
    via_proxy: bool = False

    @classmethod
    def blocked(
        cls, name: str, transport: Transport, port: int, failure: Failure, detail: str
    ) -> CheckResult:
        return cls(name, transport, port, False, detail=detail, failure=failure)

    def with_burst(self, stats: BurstStats) -> CheckResult:
        return replace(
            self,
            rtt_ms=stats.rtt_ms,
            jitter_ms=stats.jitter_ms,
            loss=stats.loss,
            throughput_kbps=stats.throughput_kbps,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transport": self.transport,
            "port": self.port,
            "ok": self.ok,
            "rtt_ms": _rounded(self.rtt_ms),
            "jitter_ms": _rounded(self.jitter_ms),
            "loss": None if self.loss is None else round(self.loss, 3),
            "detail": self.detail,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
