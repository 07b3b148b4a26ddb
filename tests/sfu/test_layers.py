"""SimulcastSelector: layer choice from bandwidth and wishes, with hysteresis and keyframe-gated switches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meet443.sfu.events import KeyframeNeeded, LayerSwitched, LayerTargetChanged
from meet443.sfu.layers import SimulcastSelector, SubscriberWish

from .harness import FakeClock

HEIGHTS = (180, 360, 720)
RATES = (150_000.0, 500_000.0, 2_500_000.0)


def settled(clock: FakeClock, estimate: float = 3_500_000) -> SimulcastSelector:
    selector = SimulcastSelector(HEIGHTS)
    selector.update(clock.now, estimate, RATES)
    assert selector.target is not None
    selector.switched(selector.target, clock.now)
    return selector


class TestStart:
    def test_best_fitting_layer_at_once(self) -> None:
        clock = FakeClock()
        selector = SimulcastSelector(HEIGHTS)
        assert selector.update(clock.now, 1_000_000, RATES) == [
            LayerTargetChanged(None, 1),
            KeyframeNeeded(1),
        ]
        assert selector.pending
        assert selector.switched(1, clock.now) == [LayerSwitched(None, 1)]
        assert not selector.pending
        assert selector.switched(1, clock.now) == []

    def test_without_an_estimate_start_low(self) -> None:
        selector = SimulcastSelector(HEIGHTS)
        assert selector.update(0.0, None, RATES)[0] == LayerTargetChanged(None, 0)
        assert selector.update(0.0, None, RATES) == []

    def test_nothing_flowing_yet(self) -> None:
        selector = SimulcastSelector(HEIGHTS)
        assert selector.update(0.0, 1e6, (0.0, 0.0, 0.0)) == []
        assert selector.target is None

    def test_below_the_lowest_layer(self) -> None:
        assert SimulcastSelector(HEIGHTS).update(0.0, 50_000, RATES)[0] == LayerTargetChanged(None, 0)
        pausing = SimulcastSelector(HEIGHTS, pause_below_lowest=True)
        assert pausing.update(0.0, 50_000, RATES) == []
        assert pausing.target is None

    def test_validation(self) -> None:
        with pytest.raises(ValueError, match="one layer"):
            SimulcastSelector(())
        with pytest.raises(ValueError, match="one bitrate per layer"):
            SimulcastSelector(HEIGHTS).update(0.0, 1e6, (1.0,))


class TestHysteresis:
    def test_down_fast(self) -> None:
        clock = FakeClock()
        selector = settled(clock)
        assert selector.current == 2
        events = selector.update(clock.advance(0.1), 2_000_000, RATES)
        assert events == [LayerTargetChanged(2, 1), KeyframeNeeded(1)]
        assert selector.current == 2  # still flowing until the keyframe of layer 1 arrives
        assert selector.switched(1, clock.now) == [LayerSwitched(2, 1)]

    def test_fits_without_margin_stays(self) -> None:
        clock = FakeClock()
        selector = settled(clock)
        assert selector.update(clock.advance(1), 2_600_000, RATES) == []

    def test_up_only_after_sustained_headroom(self) -> None:
        clock = FakeClock()
        selector = settled(clock, 1_000_000)
        assert selector.current == 1
        # 3.1 Mbps >= 1.2 x 2.5 Mbps: headroom from now on, but it must last up_hold (2 s).
        assert selector.update(clock.advance(0.5), 3_100_000, RATES) == []
        assert selector.update(clock.advance(1.0), 3_100_000, RATES) == []
        assert selector.update(clock.advance(0.5), 3_100_000, RATES) == []
        assert selector.update(clock.advance(0.5), 3_100_000, RATES) == [
            LayerTargetChanged(1, 2),
            KeyframeNeeded(2),
        ]

    def test_headroom_must_be_uninterrupted(self) -> None:
        clock = FakeClock()
        selector = settled(clock, 1_000_000)
        selector.update(clock.advance(0.5), 3_100_000, RATES)
        selector.update(clock.advance(1.0), 2_900_000, RATES)  # fits 2.5 Mbps, but not with margin
        assert selector.update(clock.advance(1.0), 3_100_000, RATES) == []
        assert selector.update(clock.advance(1.0), 3_100_000, RATES) == []
        assert selector.update(clock.advance(1.0), 3_100_000, RATES)[0] == LayerTargetChanged(1, 2)

    def test_pending_up_switch_cancelled_by_a_drop(self) -> None:
        clock = FakeClock()
        selector = settled(clock, 1_000_000)
        selector.update(clock.advance(0), 3_100_000, RATES)
        selector.update(clock.advance(2), 3_100_000, RATES)
        assert selector.target == 2
        # Back to what is flowing: no keyframe needed for that.
        assert selector.update(clock.advance(0.1), 1_000_000, RATES) == [LayerTargetChanged(2, 1)]
        assert not selector.pending
        assert selector.handle_timer(clock.advance(5)) == []

    def test_inactive_layer_is_left(self) -> None:
        clock = FakeClock()
        selector = settled(clock)
        events = selector.update(clock.advance(0.1), 3_500_000, (150_000.0, 500_000.0, 0.0))
        assert events == [LayerTargetChanged(2, 1), KeyframeNeeded(1)]


class TestWishes:
    def test_max_height(self) -> None:
        clock = FakeClock()
        selector = settled(clock)
        events = selector.set_wish(SubscriberWish(max_height=360), clock.now)
        assert events == [LayerTargetChanged(2, 1), KeyframeNeeded(1)]
        assert selector.set_wish(SubscriberWish(max_height=100), clock.now)[0] == LayerTargetChanged(1, 0)

    def test_pause_is_immediate_and_resume_needs_a_keyframe(self) -> None:
        clock = FakeClock()
        selector = settled(clock)
        assert selector.set_wish(SubscriberWish(paused=True), clock.now) == [
            LayerTargetChanged(2, None),
            LayerSwitched(2, None),
        ]
        assert selector.update(clock.advance(1), 3_500_000, RATES) == []
        assert selector.get_timer() is None
        assert selector.set_wish(SubscriberWish(), clock.advance(1)) == [
            LayerTargetChanged(None, 2),
            KeyframeNeeded(2),
        ]


class TestKeyframeRetry:
    def test_asks_again_until_the_switch(self) -> None:
        clock = FakeClock()
        selector = SimulcastSelector(HEIGHTS, keyframe_retry=1.0)
        selector.update(clock.now, 3_500_000, RATES)
        assert selector.get_timer() == clock.now + 1.0
        assert selector.handle_timer(clock.advance(0.5)) == []
        deadline = selector.get_timer()
        assert deadline is not None
        assert selector.handle_timer(deadline) == [KeyframeNeeded(2)]
        selector.switched(2, clock.advance(1.0))
        assert selector.get_timer() is None
        assert selector.handle_timer(clock.advance(5.0)) == []

    def test_no_request_for_a_layer_the_publisher_stopped(self) -> None:
        """A camera turned off mid-switch: asking every second for a keyframe it cannot send only
        costs the publisher; when the layer flows again, the retries resume."""
        clock = FakeClock()
        selector = SimulcastSelector(HEIGHTS, keyframe_retry=1.0)
        selector.update(clock.now, 3_500_000, RATES)
        selector.update(clock.advance(0.1), 3_500_000, (0.0, 0.0, 0.0))
        assert [selector.handle_timer(clock.advance(1.0)) for _ in range(5)] == [[]] * 5
        selector.update(clock.advance(0.1), 3_500_000, RATES)
        assert selector.handle_timer(clock.advance(1.0)) == [KeyframeNeeded(2)]


class TestProperties:
    @settings(deadline=None)
    @given(st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0, 5e6), st.booleans()), max_size=80))
    def test_invariants(self, script: list[tuple[float, float, bool]]) -> None:
        """The target is an active layer (or nothing); it fits the estimate unless it is the lowest;
        it rises only after up_hold of headroom; a keyframe is asked for on every new target."""
        clock = FakeClock()
        selector = SimulcastSelector(HEIGHTS)
        rising_since: float | None = None
        for step, estimate, keyframe_arrives in script:
            before = selector.target
            events = selector.update(clock.advance(step), estimate, RATES)
            target = selector.target
            assert target is not None
            assert target == 0 or RATES[target] <= estimate
            if before is not None and target > before:
                assert rising_since is not None and clock.now - rising_since >= selector.up_hold - 1e-9
            if target not in (before, selector.current):
                assert KeyframeNeeded(target) in events
            higher = before is not None and any(RATES[i] * 1.2 <= estimate for i in range(before + 1, 3))
            rising_since = (rising_since or clock.now) if higher and target == before else None
            if keyframe_arrives:
                selector.switched(target, clock.now)
                assert not selector.pending


class TestEdges:
    def test_reported_switch_to_something_else(self) -> None:
        """If the rewriter reports a layer other than the target, the selector believes it and keeps
        waiting for the target."""
        clock = FakeClock()
        selector = SimulcastSelector(HEIGHTS)
        selector.update(clock.now, 3_500_000, RATES)
        assert selector.switched(1, clock.now) == [LayerSwitched(None, 1)]
        assert selector.pending
        assert selector.get_timer() is not None

    def test_pause_while_only_pending(self) -> None:
        clock = FakeClock()
        selector = SimulcastSelector(HEIGHTS)
        selector.update(clock.now, 3_500_000, RATES)
        assert selector.set_wish(SubscriberWish(paused=True), clock.now) == [LayerTargetChanged(2, None)]
        assert not selector.pending
