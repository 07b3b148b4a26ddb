"""NackGenerator: NACKs towards a publisher for ingress losses (RFC 4585 §6.2.1, §3.5.3)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meet443.proto.rtp.rtcp import GenericNack
from meet443.sfu.nack import NackGenerator

from .harness import FakeClock


class TestIngressNack:
    def test_gap_is_nacked_at_once_then_every_rtt(self) -> None:
        clock = FakeClock()
        nacks = NackGenerator(rtt=0.125)
        for seq in (10, 11, 14):
            nacks.received(seq, clock.now)
        assert nacks.missing == [12, 13]
        assert nacks.get_timer() == clock.now
        assert nacks.handle_timer(clock.now) == [12, 13]
        assert nacks.handle_timer(clock.advance(0.0625)) == []
        assert nacks.get_timer() == clock.now + 0.0625
        assert nacks.handle_timer(clock.advance(0.0625)) == [12, 13]
        assert GenericNack.for_lost(1, 2, [12, 13]).pairs == ((12, 1),)

    def test_recovered_packets_leave_the_list(self) -> None:
        clock = FakeClock()
        nacks = NackGenerator()
        nacks.received(1, clock.now)
        nacks.received(5, clock.now)
        nacks.received(3, clock.now)  # arrived late, or unwrapped from RTX
        nacks.received(3, clock.now)  # and again: not counted twice
        assert nacks.missing == [2, 4]
        assert nacks.recovered == 1

    def test_gives_up_after_attempts_or_age(self) -> None:
        clock = FakeClock()
        nacks = NackGenerator(rtt=0.125, max_attempts=3, max_age=10.0)
        nacks.received(1, clock.now)
        nacks.received(3, clock.now)
        sent = [nacks.handle_timer(clock.advance(0.125)) for _ in range(5)]
        assert sent == [[2], [2], [2], [], []]
        assert nacks.given_up == 1
        aged = NackGenerator(rtt=0.125, max_attempts=100, max_age=0.3125)
        aged.received(1, clock.now)
        aged.received(3, clock.now)
        assert [aged.handle_timer(clock.advance(0.125)) for _ in range(4)] == [[2], [2], [], []]
        assert aged.get_timer() is None

    def test_polling_at_the_deadline_always_makes_progress(self) -> None:
        """A timer armed for get_timer() must find work there, never spin (float rounding)."""
        clock = FakeClock()
        nacks = NackGenerator(rtt=0.1, max_attempts=4, max_age=0.35)
        nacks.received(1, clock.now)
        nacks.received(3, clock.now)
        polls = 0
        while (deadline := nacks.get_timer()) is not None:
            polls += 1
            assert polls < 10
            nacks.handle_timer(deadline)
        assert nacks.given_up == 1

    def test_wraps_around(self) -> None:
        clock = FakeClock()
        nacks = NackGenerator()
        nacks.received(65534, clock.now)
        nacks.received(1, clock.now)
        assert nacks.handle_timer(clock.now) == [65535, 0]

    def test_huge_gap_asks_for_a_keyframe(self) -> None:
        clock = FakeClock()
        nacks = NackGenerator(max_missing=100)
        nacks.received(0, clock.now)
        nacks.received(50, clock.now)
        assert nacks.received(500, clock.now)
        assert nacks.missing == []
        assert nacks.given_up == 49

    def test_list_is_bounded(self) -> None:
        clock = FakeClock()
        nacks = NackGenerator(max_missing=100)
        nacks.received(0, clock.now)
        for seq in range(2, 400, 2):
            assert not nacks.received(seq, clock.now)
        assert len(nacks.missing) == 100
        assert nacks.missing[0] == 199

    @settings(deadline=None)
    @given(st.lists(st.integers(0, 5), min_size=1, max_size=300), st.integers(0, 0xFFFF))
    def test_missing_is_exactly_what_never_arrived(self, steps: list[int], start: int) -> None:
        clock = FakeClock()
        nacks = NackGenerator(max_missing=10_000)
        seq = start
        arrived = {seq}
        nacks.received(seq, clock.now)
        for step in steps:
            seq += step or 1
            arrived.add(seq)
            nacks.received(seq & 0xFFFF, clock.now)
        expected = [s & 0xFFFF for s in range(start, seq + 1) if s not in arrived]
        assert nacks.missing == expected
