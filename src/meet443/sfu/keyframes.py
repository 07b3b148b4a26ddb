"""Keyframe requests towards publishers: PLI (RFC 4585 §6.3.1) or FIR (RFC 5104 §4.3.1), throttled.

Many subscribers losing the same keyframe, and every layer switch, all want a keyframe from one
publisher; a keyframe costs it several times a delta frame, so the SFU sends at most one request
per source per ``min_interval`` (500 ms by default). A request that arrives inside that interval is
not lost: it is sent when the interval ends, unless a keyframe from that source arrived first.

FIR carries a command sequence number that grows by one per new request (RFC 5104 §4.3.1.2);
requests due at the same moment to several FIR sources travel as one FIR packet.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meet443.proto.rtp.rtcp import FirEntry, FullIntraRequest, PictureLossIndication, RtcpPacket


class KeyframeMethod(enum.Enum):
    """What the publisher negotiated: ``a=rtcp-fb:* nack pli`` or ``a=rtcp-fb:* ccm fir``."""

    PLI = "pli"
    FIR = "fir"


@dataclass(slots=True)
class _Source:
    method: KeyframeMethod
    last_sent: float | None = None
    pending: bool = False
    fir_sequence: int = 0


class KeyframeRequester:
    """Per publisher connection: aggregates keyframe requests per source SSRC and throttles them.

    :meth:`request` returns what to send now; :meth:`handle_timer` sends deferred requests when their
    interval ends (:meth:`get_timer` says when); :meth:`keyframe_received` cancels them.
    """

    __slots__ = ("_sources", "min_interval", "sender_ssrc", "sent", "throttled")

    def __init__(self, sender_ssrc: int, *, min_interval: float = 0.5) -> None:
        #: The SFU's RTCP SSRC on this publisher connection (the "SSRC of packet sender").
        self.sender_ssrc = sender_ssrc
        self.min_interval = min_interval
        self._sources: dict[int, _Source] = {}
        #: Counters: requests sent, and requests merged into an earlier or a deferred one.
        self.sent = 0
        self.throttled = 0

    def add_source(self, ssrc: int, method: KeyframeMethod = KeyframeMethod.PLI) -> None:
        self._sources.setdefault(ssrc, _Source(method))

    def remove_source(self, ssrc: int) -> None:
        self._sources.pop(ssrc, None)

    def request(self, ssrc: int, now: float) -> list[RtcpPacket]:
        """A subscriber's PLI/FIR or a pending layer switch wants a keyframe of ``ssrc``."""
        source = self._sources.get(ssrc)
        if source is None:
            source = self._sources[ssrc] = _Source(KeyframeMethod.PLI)
        if source.last_sent is not None and now < source.last_sent + self.min_interval:
            source.pending = True
            self.throttled += 1
            return []
        return self._send({ssrc: source}, now)

    def keyframe_received(self, ssrc: int) -> None:
        """A keyframe of ``ssrc`` arrived: requests made before it are answered."""
        source = self._sources.get(ssrc)
        if source is not None:
            source.pending = False

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` has a deferred request to send, or ``None``."""
        deadlines = [
            source.last_sent + self.min_interval
            for source in self._sources.values()
            if source.pending and source.last_sent is not None
        ]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> list[RtcpPacket]:
        """The deferred requests whose interval has ended."""
        due = {
            ssrc: source
            for ssrc, source in self._sources.items()
            if source.pending and source.last_sent is not None and now >= source.last_sent + self.min_interval
        }
        return self._send(due, now) if due else []

    def _send(self, sources: dict[int, _Source], now: float) -> list[RtcpPacket]:
        packets: list[RtcpPacket] = []
        fir_entries: list[FirEntry] = []
        for ssrc, source in sources.items():
            source.pending = False
            source.last_sent = now
            if source.method is KeyframeMethod.FIR:
                source.fir_sequence = (source.fir_sequence + 1) & 0xFF
                fir_entries.append(FirEntry(ssrc, source.fir_sequence))
            else:
                packets.append(PictureLossIndication(self.sender_ssrc, ssrc))
        if fir_entries:
            packets.append(FullIntraRequest(self.sender_ssrc, tuple(fir_entries)))
        self.sent += len(sources)
        return packets
