"""Serial number arithmetic (RFC 1982 §3) for 16-bit RTP sequence numbers and 32-bit timestamps.

RTP sequence numbers wrap at 2^16 and timestamps at 2^32 (RFC 3550 §5.1); "newer" means ahead by
less than half the space. These helpers are tiny on purpose: the data path inlines the same
expressions, and the tests check that both agree.
"""

from __future__ import annotations

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


def seq_delta(a: int, b: int) -> int:
    """``a - b`` for 16-bit sequence numbers, in ``[-32768, 32767]``."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def ts_delta(a: int, b: int) -> int:
    """``a - b`` for 32-bit RTP timestamps, in ``[-2^31, 2^31 - 1]``."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def seq_newer(a: int, b: int) -> bool:
    """RFC 1982 §3.2: ``a`` is after ``b`` (16 bits)."""
    return seq_delta(a, b) > 0


class SequenceUnwrapper:
    """Extends 16-bit sequence numbers to unbounded integers (RFC 3550 Appendix A.1's "cycles").

    Each number is placed within half the space of the highest seen so far, so a reordered packet
    gets a smaller extended number and a wrap adds 2^16.
    """

    __slots__ = ("highest",)

    def __init__(self) -> None:
        self.highest: int | None = None

    def unwrap(self, seq: int) -> int:
        highest = self.highest
        if highest is None:
            self.highest = seq
            return seq
        extended = highest + (((seq - highest + 0x8000) & 0xFFFF) - 0x8000)
        if extended > highest:
            self.highest = extended
        return extended
