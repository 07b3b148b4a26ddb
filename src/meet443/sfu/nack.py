"""NACKs towards a publisher for packets lost on the way to the SFU (RFC 4585 §6.2.1, §3.5.3).

Subscribers can only be answered from what the SFU has, so the SFU repairs its own ingress: a gap
in a source's sequence numbers becomes a list of missing packets, asked for at once and again
every ``rtt`` up to ``max_attempts`` times or ``max_age`` seconds. A packet that arrives late (or
inside an RTX packet, RFC 4588) leaves the list; the rewriter then forwards it as a reordered
packet. A gap wider than ``max_missing`` is not worth repairing: :meth:`NackGenerator.received`
returns True and the caller asks for a keyframe instead.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Missing:
    first: float
    last: float | None = None
    attempts: int = 0


class NackGenerator:
    """Tracks one incoming source's missing sequence numbers and when to NACK them."""

    __slots__ = (
        "_highest",
        "_missing",
        "given_up",
        "max_age",
        "max_attempts",
        "max_missing",
        "recovered",
        "requested",
        "rtt",
    )

    def __init__(
        self, *, rtt: float = 0.1, max_attempts: int = 10, max_age: float = 1.0, max_missing: int = 1000
    ) -> None:
        self.rtt = rtt
        self.max_attempts = max_attempts
        self.max_age = max_age
        self.max_missing = max_missing
        self._highest: int | None = None
        # By extended sequence number. Gaps are only ever added above the highest number, so the
        # insertion order is the numeric order: the first entry is always the oldest.
        self._missing: dict[int, _Missing] = {}
        #: Counters: sequence numbers NACKed (with repeats), recovered, given up.
        self.requested = 0
        self.recovered = 0
        self.given_up = 0

    @property
    def missing(self) -> list[int]:
        """The sequence numbers still missing, oldest first."""
        return [seq & 0xFFFF for seq in self._missing]

    def received(self, seq: int, now: float) -> bool:
        """A packet (or the original inside an RTX packet) arrived; True: gap too wide, get a keyframe."""
        highest = self._highest
        if highest is None:
            self._highest = seq
            return False
        extended = highest + (((seq - highest + 0x8000) & 0xFFFF) - 0x8000)
        if extended == highest + 1:
            self._highest = extended
            return False
        if extended <= highest:
            if self._missing.pop(extended, None) is not None:
                self.recovered += 1
            return False
        self._highest = extended
        if extended - highest - 1 > self.max_missing:
            self.given_up += len(self._missing)
            self._missing.clear()
            return True
        for missing in range(highest + 1, extended):
            self._missing[missing] = _Missing(now)
        while len(self._missing) > self.max_missing:
            del self._missing[next(iter(self._missing))]
            self.given_up += 1
        return False

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` has sequence numbers to NACK (or to give up on)."""
        return min(
            (
                entry.first if entry.last is None else min(entry.last + self.rtt, entry.first + self.max_age)
                for entry in self._missing.values()
            ),
            default=None,
        )

    def handle_timer(self, now: float) -> list[int]:
        """The sequence numbers to put in a NACK now (build it with ``GenericNack.for_lost``)."""
        out = []
        for extended in list(self._missing):
            entry = self._missing[extended]
            if entry.attempts >= self.max_attempts or now >= entry.first + self.max_age:
                del self._missing[extended]
                self.given_up += 1
                continue
            if entry.last is None or now >= entry.last + self.rtt:
                entry.last = now
                entry.attempts += 1
                out.append(extended & 0xFFFF)
        self.requested += len(out)
        return out
