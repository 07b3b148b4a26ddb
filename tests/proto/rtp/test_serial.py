"""RFC 1982 serial number arithmetic for RTP sequence numbers and timestamps (RFC 3550 §5.1)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meet443.proto.rtp.serial import SequenceUnwrapper, seq_delta, seq_newer, ts_delta


class TestRfc1982SerialNumbers:
    def test_wrap(self) -> None:
        assert seq_delta(0, 65535) == 1
        assert seq_delta(65535, 0) == -1
        assert seq_delta(0x8000, 0) == -0x8000
        assert seq_newer(2, 65530)
        assert not seq_newer(65530, 2)
        assert ts_delta(5, 0xFFFFFFFB) == 10
        assert ts_delta(0xFFFFFFFB, 5) == -10

    @given(st.integers(0, 0xFFFF), st.integers(-0x8000, 0x7FFF))
    def test_delta_inverts_addition(self, base: int, step: int) -> None:
        assert seq_delta((base + step) & 0xFFFF, base) == step

    @given(st.integers(0, 0xFFFFFFFF), st.integers(-(1 << 31), (1 << 31) - 1))
    def test_timestamp_delta(self, base: int, step: int) -> None:
        assert ts_delta((base + step) & 0xFFFFFFFF, base) == step


class TestRfc3550AppendixA1Unwrapping:
    @given(st.integers(0, 0xFFFF), st.lists(st.integers(-100, 3000), max_size=200))
    def test_extended_numbers_follow_the_true_ones(self, start: int, steps: list[int]) -> None:
        unwrapper = SequenceUnwrapper()
        true = start
        assert unwrapper.unwrap(start) == start
        highest = start
        for step in steps:
            true += step
            true = max(true, highest - 0x7FFF)  # stay within half the space of the highest
            assert unwrapper.unwrap(true & 0xFFFF) == true
            highest = max(highest, true)
            assert unwrapper.highest == highest
