"""SubscriberBudget: REMB, probe-verified rate and loss cap of one subscriber, on a fake clock.

Rates in bits per second; loss fractions as RFC 3550 §6.4.1 reports them, over 256, given as 0-1.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meet443.sfu.budget import (
    CAP_GROWTH,
    CONGESTION_PAUSE,
    LOSS_CAP_FLOOR,
    PROBE_DURATION,
    PROBE_HEADROOM,
    PROBE_MAX_BACKOFF,
    PROBE_MAX_BPS,
    PROBE_MAX_PACKETS_PER_POLL,
    PROBE_MIN_BACKOFF,
    Probing,
    SubscriberBudget,
    repair_rate,
    share_out,
    water_fill,
)

from .harness import FakeClock

PACKET = 300  # bytes per padding packet on the wire, as the router counts them
TICK = 0.02  # the router's poll


class Sent:
    """What the subscriber is being sent, and how often the budget asked."""

    def __init__(self, bps: float) -> None:
        self.bps = bps
        self.asked = 0

    def __call__(self) -> float:
        self.asked += 1
        return self.bps


def budget_at(remb: int) -> SubscriberBudget:
    budget = SubscriberBudget()
    budget.remb(remb)
    return budget


def start(budget: SubscriberBudget, clock: FakeClock, wanted: float, forwarded: float) -> None:
    assert budget.probe(clock.now) is Probing.MAY_START
    assert budget.start_probe(clock.now, wanted, forwarded)


def run_out(budget: SubscriberBudget, clock: FakeClock) -> Probing | None:
    """Poll through the probe's duration; the step after it."""
    end = clock.now + PROBE_DURATION
    while clock.now < end:
        assert budget.probe(clock.now) is Probing.PADDING
        clock.advance(TICK)
    return budget.probe(clock.now)


class TestCeiling:
    def test_none_before_the_first_remb_then_the_remb(self) -> None:
        budget = SubscriberBudget()
        assert budget.ceiling() is None
        assert budget.probe(FakeClock().now) is None
        budget.remb(800_000)
        assert budget.ceiling() == 800_000

    def test_a_verified_rate_above_the_remb_counts_under_the_loss_cap(self) -> None:
        budget = budget_at(800_000)
        budget.verified = 1_200_000
        assert budget.ceiling() == 1_200_000
        budget.loss_cap = 1_000_000
        assert budget.ceiling() == 1_000_000
        budget.remb(500_000)
        budget.verified = 0.0
        assert budget.ceiling() == 500_000  # a cap above the REMB does not raise it


class TestGcc02Section6LossControl:
    """draft-ietf-rmcat-gcc-02 §6: loss above 10% cuts at once, under 2% lets the cap grow back."""

    def test_heavy_loss_caps_at_what_was_sent_less_half_the_loss(self) -> None:
        clock = FakeClock()
        budget = budget_at(50_000_000)
        budget.verified = 60_000_000
        assert budget.receiver_report(0.4, Sent(2_000_000), clock.now)
        assert budget.loss_cap == pytest.approx(2_000_000 * 0.8)
        assert budget.verified == 0.0
        assert budget.ceiling() == pytest.approx(1_600_000)

    def test_every_further_lossy_report_cuts_from_the_cap_or_what_was_sent(self) -> None:
        clock = FakeClock()
        budget = budget_at(50_000_000)
        budget.receiver_report(0.4, Sent(2_000_000), clock.now)
        assert budget.receiver_report(0.2, Sent(3_000_000), clock.now)  # the cap is below that
        assert budget.loss_cap == pytest.approx(1_600_000 * 0.9)
        assert budget.receiver_report(0.2, Sent(1_000_000), clock.now)  # what was sent is below the cap
        assert budget.loss_cap == pytest.approx(1_000_000 * 0.9)

    def test_the_cap_stops_at_its_floor(self) -> None:
        budget = budget_at(50_000_000)
        budget.receiver_report(0.9, Sent(50_000), FakeClock().now)
        assert budget.loss_cap == LOSS_CAP_FLOOR

    def test_clean_reports_grow_the_cap_until_the_remb_bounds_again(self) -> None:
        clock = FakeClock()
        budget = budget_at(2_000_000)
        budget.receiver_report(0.4, Sent(1_000_000), clock.now)
        caps = []
        for _ in range(100):
            if budget.loss_cap is None:
                break
            caps.append(budget.loss_cap)
            assert budget.receiver_report(0.0, Sent(1_000_000), clock.advance(1.0))
        assert caps[1] == pytest.approx(caps[0] * CAP_GROWTH)
        assert caps[-1] * CAP_GROWTH >= 2_000_000 > caps[-1]
        assert budget.ceiling() == 2_000_000

    def test_moderate_loss_neither_cuts_nor_grows_the_cap(self) -> None:
        budget = budget_at(2_000_000)
        budget.receiver_report(0.4, Sent(1_000_000), FakeClock().now)
        cap = budget.loss_cap
        sent = Sent(1_000_000)
        assert not budget.receiver_report(0.05, sent, FakeClock().now)
        assert (budget.loss_cap, sent.asked) == (cap, 0)

    def test_no_probe_starts_for_a_while_after_heavy_loss(self) -> None:
        clock = FakeClock()
        budget = budget_at(300_000)
        budget.receiver_report(0.3, Sent(300_000), clock.now)
        assert budget.probe(clock.advance(CONGESTION_PAUSE - TICK)) is None
        assert budget.probe(clock.advance(TICK)) is Probing.MAY_START

    def test_what_was_sent_is_asked_only_when_a_rule_needs_it(self) -> None:
        budget = budget_at(300_000)
        sent = Sent(300_000)
        assert not budget.receiver_report(0.0, sent, FakeClock().now)
        assert not budget.receiver_report(0.05, sent, FakeClock().now)
        assert sent.asked == 0


class TestProbeVerification:
    """A probe without loss and without the REMB falling back verifies the rate it padded up to."""

    def test_starts_only_for_a_need_above_the_ceiling_and_what_flows(self) -> None:
        clock = FakeClock()
        budget = budget_at(300_000)
        assert budget.probe(clock.now) is Probing.MAY_START
        assert not budget.start_probe(clock.now, 300_000, 100_000)  # the REMB covers it
        assert not budget.start_probe(clock.now, 400_000, 400_000)  # it already flows
        assert budget.probe(clock.now) is Probing.MAY_START
        assert budget.start_probe(clock.now, 650_000, 150_000)
        assert budget.probe(clock.now) is Probing.PADDING

    def test_no_probe_without_an_estimate(self) -> None:
        budget = SubscriberBudget()
        assert not budget.start_probe(FakeClock().now, 650_000, 150_000)

    def test_success_verifies_the_need_with_headroom_and_lifts_the_loss_cap(self) -> None:
        clock = FakeClock()
        budget = budget_at(300_000)
        start(budget, clock, 650_000, 150_000)
        budget.loss_cap = 400_000  # e.g. a cap that clean reports had been growing back
        assert run_out(budget, clock) is Probing.VERIFIED
        assert budget.verified == pytest.approx(650_000 * PROBE_HEADROOM)
        assert budget.loss_cap is None
        assert budget.ceiling() == pytest.approx(650_000 * PROBE_HEADROOM)
        # The new layers settle before the next probe.
        assert budget.probe(clock.advance(PROBE_MIN_BACKOFF - TICK)) is None
        assert budget.probe(clock.advance(TICK)) is Probing.MAY_START

    def test_padding_keeps_the_rate_of_the_missing_part(self) -> None:
        clock = FakeClock()
        budget = budget_at(300_000)
        start(budget, clock, 650_000, 150_000)
        assert budget.padding_due(clock.now, PACKET) == 0
        # 500 kbit/s for 20 ms: 1,250 bytes, four whole packets.
        assert budget.padding_due(clock.advance(TICK), PACKET) == 4
        # Less than a packet due: nothing sent, and the time is not lost.
        assert budget.padding_due(clock.advance(0.004), PACKET) == 0
        assert budget.padding_due(clock.advance(0.004), PACKET) == 1
        sent = 0
        for _ in range(50):  # a second
            sent += budget.padding_due(clock.advance(TICK), PACKET)
        assert sent * PACKET * 8 == pytest.approx(500_000, rel=0.25)

    def test_padding_is_capped_per_poll_and_in_rate(self) -> None:
        clock = FakeClock()
        budget = budget_at(300_000)
        start(budget, clock, 50_000_000, 0)
        assert budget.padding_due(clock.advance(0.01), PACKET) == int(PROBE_MAX_BPS / 8 * 0.01 / PACKET)
        assert budget.padding_due(clock.advance(1.0), PACKET) == PROBE_MAX_PACKETS_PER_POLL

    def test_loss_later_withdraws_the_verified_rate(self) -> None:
        clock = FakeClock()
        budget = budget_at(300_000)
        start(budget, clock, 650_000, 150_000)
        run_out(budget, clock)
        assert not budget.receiver_report(0.03, Sent(700_000), clock.now)  # tolerated
        assert budget.verified > 0
        assert budget.receiver_report(0.06, Sent(700_000), clock.now)
        assert (budget.verified, budget.ceiling()) == (0.0, 300_000)

    def test_clean_reports_let_the_verified_rate_follow_what_flows(self) -> None:
        clock = FakeClock()
        budget = budget_at(300_000)
        start(budget, clock, 650_000, 150_000)
        run_out(budget, clock)
        verified = budget.verified
        assert not budget.receiver_report(0.0, Sent(500_000), clock.now)
        assert budget.verified == verified
        assert not budget.receiver_report(0.0, Sent(1_000_000), clock.now)
        assert budget.verified == 1_000_000


class TestProbeBackoff:
    """A failed probe means the path is full: the pause before the next one doubles, up to a limit."""

    def fail(self, budget: SubscriberBudget, clock: FakeClock, wanted: float = 650_000) -> float:
        """Start a probe, fail it by loss; how long until the next may start."""
        start(budget, clock, wanted, 150_000)
        budget.receiver_report(0.03, Sent(150_000), clock.advance(0.5))
        assert budget.probe(clock.now) is None
        failed_at = clock.now
        while budget.probe(clock.now) is None:
            clock.advance(TICK)
        return clock.now - failed_at

    def test_pauses_double_up_to_the_maximum(self) -> None:
        clock = FakeClock()
        budget = budget_at(300_000)
        pauses = [self.fail(budget, clock) for _ in range(7)]
        expected = [min(PROBE_MIN_BACKOFF * 2**i, PROBE_MAX_BACKOFF) for i in range(7)]
        assert pauses == pytest.approx(expected, abs=TICK)

    def test_the_remb_falling_back_fails_it_too(self) -> None:
        clock = FakeClock()
        budget = budget_at(400_000)
        start(budget, clock, 650_000, 150_000)
        budget.remb(310_000)
        assert budget.probe(clock.advance(TICK)) is Probing.PADDING  # above 3/4 of 400k
        budget.remb(290_000)
        assert budget.probe(clock.advance(TICK)) is None
        assert budget.verified == 0.0

    def test_a_success_resets_the_pause(self) -> None:
        clock = FakeClock()
        budget = budget_at(300_000)
        for _ in range(3):
            self.fail(budget, clock)
        start(budget, clock, 650_000, 150_000)
        assert run_out(budget, clock) is Probing.VERIFIED
        clock.advance(PROBE_MIN_BACKOFF)
        assert self.fail(budget, clock, wanted=2_000_000) == pytest.approx(PROBE_MIN_BACKOFF, abs=TICK)

    def test_a_lossy_report_between_probes_does_not_fail_the_next(self) -> None:
        clock = FakeClock()
        budget = budget_at(300_000)
        budget.receiver_report(0.05, Sent(150_000), clock.now)
        start(budget, clock, 650_000, 150_000)
        assert run_out(budget, clock) is Probing.VERIFIED


class TestSharing:
    def test_water_fill_is_max_min_fair(self) -> None:
        assert water_fill(10.0, [8.0, 2.0, 8.0]) == [4.0, 2.0, 4.0]
        assert water_fill(100.0, [8.0, 2.0]) == [8.0, 2.0]
        assert water_fill(-5.0, [1.0, 2.0]) == [0.0, 0.0]
        assert water_fill(10.0, []) == []

    @given(st.floats(-1e7, 1e8), st.lists(st.floats(0, 1e7), max_size=12))
    def test_water_fill_never_gives_more_than_needed_nor_than_there_is(
        self, budget: float, needs: list[float]
    ) -> None:
        shares = water_fill(budget, needs)
        assert all(0 <= share <= need for share, need in zip(shares, needs, strict=True))
        assert sum(shares) <= max(budget, 0.0) * (1 + 1e-9) + 1e-6

    def test_earlier_groups_are_served_first(self) -> None:
        screens, cameras = [2_000_000.0], [600_000.0, 600_000.0]
        assert share_out(2_500_000, [screens, cameras]) == [[2_000_000.0], [250_000.0, 250_000.0]]
        assert share_out(1_000_000, [screens, cameras]) == [[1_000_000.0], [0.0, 0.0]]

    def test_retransmissions_take_a_quarter_but_at_least_200_kbits(self) -> None:
        assert repair_rate(4_000_000) == 1_000_000 / 8
        assert repair_rate(300_000) == 200_000 / 8
