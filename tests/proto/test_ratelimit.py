"""Token buckets driven by explicit ``now`` values (RFC 8656 §21.3.1, RFC 8489 §16.1.2)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meet443.exceptions import ConfigError
from meet443.proto.ratelimit import KeyedRateLimiter, TokenBucket

# An arbitrary monotonic origin: loop.time() is not zero-based, and the buckets must not care.
T0 = 5_000.0


def _drain(bucket: TokenBucket, now: float, amount: float = 1.0) -> int:
    """How many ``amount`` takes succeed at ``now`` before the bucket refuses."""
    taken = 0
    while bucket.take(now, amount):
        taken += 1
        assert taken <= 1_000_000, "bucket never empties"
    return taken


class TestTokenBucketBurst:
    def test_starts_full(self) -> None:
        assert _drain(TokenBucket(rate=10, burst=5), T0) == 5

    def test_first_call_at_any_time_sees_a_full_bucket(self) -> None:
        for now in (0.0, -1e9, 1e12):
            assert _drain(TokenBucket(rate=1, burst=3), now) == 3

    def test_amount_is_taken_as_a_whole(self) -> None:
        bucket = TokenBucket(rate=1000, burst=1500)
        assert bucket.take(T0, 1200)
        assert not bucket.take(T0, 400)  # 300 left
        assert bucket.take(T0, 300)
        assert not bucket.take(T0, 1)

    def test_refused_take_costs_nothing(self) -> None:
        bucket = TokenBucket(rate=1, burst=10)
        assert bucket.take(T0, 6)
        assert not bucket.take(T0, 5)
        assert bucket.take(T0, 4)

    def test_more_than_burst_never_succeeds(self) -> None:
        bucket = TokenBucket(rate=1000, burst=1200)
        assert not bucket.take(T0, 1201)
        assert not bucket.take(T0 + 3600, 1201)
        assert bucket.take(T0 + 3600, 1200)

    def test_zero_amount_always_succeeds(self) -> None:
        bucket = TokenBucket(rate=1, burst=1)
        assert bucket.take(T0)
        assert bucket.take(T0, 0.0)


class TestTokenBucketRefill:
    def test_refills_at_rate(self) -> None:
        bucket = TokenBucket(rate=4, burst=4)
        assert _drain(bucket, T0) == 4
        assert not bucket.take(T0 + 0.125)  # half a token
        assert bucket.take(T0 + 0.25)  # the second half arrives: one token
        assert not bucket.take(T0 + 0.25)
        assert _drain(bucket, T0 + 0.75) == 2

    def test_fractional_tokens_accumulate_across_refused_calls(self) -> None:
        bucket = TokenBucket(rate=1, burst=1)
        assert bucket.take(T0)
        for step in range(1, 4):
            assert not bucket.take(T0 + step * 0.25)
        assert bucket.take(T0 + 1.0)

    def test_bytes_per_second(self) -> None:
        bucket = TokenBucket(rate=1000, burst=2000)
        assert bucket.take(T0, 2000)
        assert not bucket.take(T0 + 0.5, 1200)  # 500 bytes back
        assert bucket.take(T0 + 1.25, 1200)  # 1250 bytes back
        assert bucket.take(T0 + 1.25, 50)
        assert not bucket.take(T0 + 1.25, 1)

    def test_long_run_rate_is_bounded(self) -> None:
        rate, burst = 50.0, 10.0
        bucket = TokenBucket(rate, burst)
        admitted = sum(bucket.take(T0 + i / 1000) for i in range(10_000))  # 10 s, 1000 tries/s
        assert admitted <= burst + rate * 10 + 1
        assert admitted >= rate * 10 - 1


class TestTokenBucketCap:
    def test_idle_time_refills_only_to_burst(self) -> None:
        bucket = TokenBucket(rate=100, burst=3)
        assert _drain(bucket, T0) == 3
        assert _drain(bucket, T0 + 86_400) == 3

    def test_cap_applies_between_calls(self) -> None:
        bucket = TokenBucket(rate=10, burst=2)
        assert bucket.take(T0)
        assert _drain(bucket, T0 + 10) == 2


class TestTokenBucketClock:
    def test_time_going_backwards_adds_nothing(self) -> None:
        bucket = TokenBucket(rate=1, burst=2)
        assert _drain(bucket, T0 + 10) == 2
        assert not bucket.take(T0)  # the clock stepped back: no refill
        assert not bucket.take(T0 + 10)  # and no credit for the step when it comes back
        assert bucket.take(T0 + 11)

    def test_same_instant_adds_nothing(self) -> None:
        bucket = TokenBucket(rate=1000, burst=1)
        assert bucket.take(T0)
        assert not bucket.take(T0)


class TestTokenBucketConfig:
    @pytest.mark.parametrize(
        ("rate", "burst"),
        [(0, 1), (-1, 1), (1, 0), (1, -5), (math.inf, 1), (1, math.inf), (math.nan, 1), (1, math.nan)],
    )
    def test_invalid_rate_or_burst(self, rate: float, burst: float) -> None:
        with pytest.raises(ConfigError):
            TokenBucket(rate, burst)

    def test_properties(self) -> None:
        bucket = TokenBucket(2, 7)
        assert (bucket.rate, bucket.burst) == (2.0, 7.0)

    def test_slots(self) -> None:
        with pytest.raises(AttributeError):
            TokenBucket(1, 1).extra = 1  # type: ignore[attr-defined]


class TestKeyedRateLimiterIsolation:
    def test_each_key_has_its_own_bucket(self) -> None:
        limiter = KeyedRateLimiter(rate=1, burst=2)
        assert limiter.allow("198.51.100.1", T0)
        assert limiter.allow("198.51.100.1", T0)
        assert not limiter.allow("198.51.100.1", T0)
        assert limiter.allow("198.51.100.2", T0)  # a flood from one source does not starve another
        assert limiter.allow("198.51.100.2", T0)
        assert not limiter.allow("198.51.100.2", T0)

    def test_refill_per_key(self) -> None:
        limiter = KeyedRateLimiter(rate=2, burst=1)
        assert limiter.allow("a", T0)
        assert not limiter.allow("a", T0)
        assert limiter.allow("b", T0 + 0.25)
        assert limiter.allow("a", T0 + 0.5)
        assert not limiter.allow("b", T0 + 0.5)

    def test_any_hashable_key_and_amounts(self) -> None:
        limiter = KeyedRateLimiter(rate=100, burst=500)
        key = ("203.0.113.9", 3478)
        assert limiter.allow(key, T0, 400)
        assert not limiter.allow(key, T0, 200)
        assert limiter.allow(("203.0.113.9", 3479), T0, 500)


class TestKeyedRateLimiterEviction:
    def test_memory_bounded(self) -> None:
        limiter = KeyedRateLimiter(rate=1, burst=1, max_keys=100)
        for i in range(10_000):
            limiter.allow(i, T0)
            assert len(limiter) <= 100
        assert len(limiter) == 100
        assert 9_999 in limiter
        assert 0 not in limiter

    def test_least_recently_used_key_is_evicted(self) -> None:
        limiter = KeyedRateLimiter(rate=1, burst=1, max_keys=2)
        assert limiter.allow("old", T0)
        assert limiter.allow("busy", T0)
        assert not limiter.allow("old", T0)  # "old" is now the most recently used
        assert limiter.allow("new", T0)  # evicts "busy", not "old"
        assert "old" in limiter
        assert "busy" not in limiter
        assert "new" in limiter

    def test_evicted_key_starts_with_a_full_bucket(self) -> None:
        # The documented trade-off: forgetting a key forgets its debt.
        limiter = KeyedRateLimiter(rate=1, burst=3, max_keys=1)
        for _ in range(3):
            assert limiter.allow("a", T0)
        assert not limiter.allow("a", T0)
        assert limiter.allow("b", T0)  # evicts "a"
        for _ in range(3):
            assert limiter.allow("a", T0)
        assert not limiter.allow("a", T0)

    def test_refused_request_also_refreshes_recency(self) -> None:
        limiter = KeyedRateLimiter(rate=1, burst=1, max_keys=2)
        assert limiter.allow("flooder", T0)
        assert limiter.allow("other", T0)
        assert not limiter.allow("flooder", T0)
        limiter.allow("third", T0)
        # A source that keeps sending stays tracked, so it cannot reset itself by going quiet briefly.
        assert "flooder" in limiter
        assert "other" not in limiter

    @pytest.mark.parametrize("max_keys", [0, -1])
    def test_invalid_max_keys(self, max_keys: int) -> None:
        with pytest.raises(ConfigError):
            KeyedRateLimiter(1, 1, max_keys=max_keys)

    def test_invalid_rate(self) -> None:
        with pytest.raises(ConfigError):
            KeyedRateLimiter(0, 1)


class TestProperties:
    @given(
        rate=st.floats(0.01, 1e6),
        burst=st.floats(1, 1e6),
        steps=st.lists(
            st.tuples(st.floats(-10, 100), st.floats(0, 2e6)),
            max_size=50,
        ),
    )
    def test_admitted_never_exceeds_burst_plus_rate_times_elapsed(
        self, rate: float, burst: float, steps: list[tuple[float, float]]
    ) -> None:
        bucket = TokenBucket(rate, burst)
        now = T0
        latest = T0
        admitted = 0.0
        for delta, amount in steps:
            now += delta
            latest = max(latest, now)
            if bucket.take(now, amount):
                admitted += amount
        assert admitted <= burst + rate * (latest - T0) + 1e-6 * (burst + admitted)

    @given(keys=st.lists(st.integers(0, 50), max_size=300), max_keys=st.integers(1, 20))
    def test_keyed_limiter_never_holds_more_than_max_keys(self, keys: list[int], max_keys: int) -> None:
        limiter = KeyedRateLimiter(1, 1, max_keys=max_keys)
        for i, key in enumerate(keys):
            limiter.allow(key, T0 + i)
            assert len(limiter) <= max_keys
            assert key in limiter
