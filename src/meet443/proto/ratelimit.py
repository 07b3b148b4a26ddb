"""Token buckets with time passed in, for bandwidth quotas and message rates.

RFC 8656 §21.1.7 and §21.3.1 ask a TURN server to limit the bandwidth an allocation or a user
may consume, and RFC 8489 §16.1.2 warns that a STUN server answering unauthenticated requests
can be used as a reflector towards a spoofed source, with responses larger than the requests.
:class:`TokenBucket` meters one flow (bytes per allocation, messages per session);
:class:`KeyedRateLimiter` keeps one bucket per key (the source IP of unauthenticated requests)
within a fixed memory bound.

Nothing here reads a clock: ``now`` is the caller's monotonic time in seconds, so tests drive
the buckets with a fake clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable

from meet443.exceptions import ConfigError

__all__ = ["KeyedRateLimiter", "TokenBucket"]


def _check_rate_and_burst(rate: float, burst: float) -> None:
    # A zero rate would be a one-off budget, not a rate limit, and inf/nan would make every
    # comparison below meaningless; refuse them where the configuration is read.
    if not (math.isfinite(rate) and rate > 0):
        raise ConfigError(f"rate must be a positive finite number, not {rate!r}")
    if not (math.isfinite(burst) and burst > 0):
        raise ConfigError(f"burst must be a positive finite number, not {burst!r}")


class TokenBucket:
    """Admit ``amount`` units when enough tokens are left; tokens refill at ``rate`` per second.

    The bucket starts full and holds at most ``burst`` tokens, so a flow that was idle may send
    ``burst`` units at once and ``rate`` units per second on average after that. A request for
    more than ``burst`` units never succeeds. A refused request takes nothing, so a caller that
    drops the datagram is not charged for it. ``amount`` must not be negative; it is not
    checked, because :meth:`take` runs once per relayed datagram.

    Time that runs backwards (``now`` earlier than a previous call) adds no tokens and does not
    rewind the bucket, so a clock step cannot be used to refill it twice.
    """

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        _check_rate_and_burst(rate, burst)
        self._rate = float(rate)
        self._burst = float(burst)
        self._tokens = self._burst
        # -inf: the first call sees an infinite idle time, which only caps a full bucket.
        self._last = -math.inf

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    @property
    def burst(self) -> float:
        """The most tokens the bucket holds."""
        return self._burst

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Remove ``amount`` tokens at time ``now`` and return ``True``, or return ``False``."""
        elapsed = now - self._last
        if elapsed > 0.0:
            tokens = self._tokens + elapsed * self._rate
            self._tokens = tokens if tokens < self._burst else self._burst
            self._last = now
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False


class KeyedRateLimiter:
    """One :class:`TokenBucket` per key, with at most ``max_keys`` buckets kept.

    Used where the key is chosen by the network, e.g. the source IP of unauthenticated STUN
    Binding requests (RFC 8489 §16.1.2: do not become a reflector towards a spoofed victim).
    Memory must not grow with the number of distinct sources an attacker can forge, so when
    ``max_keys`` buckets exist the least recently used one is dropped.

    Trade-off: a dropped key seen again starts with a full bucket. An attacker who cycles
    through more than ``max_keys`` sources gets ``burst`` units per source per cycle instead of
    the steady ``rate``; each victim still receives at most ``burst`` units per cycle, which is
    the amplification bound we care about. Size ``max_keys`` above the number of sources that
    are active within ``burst / rate`` seconds, and put a global :class:`TokenBucket` in front
    if the total answer rate must be bounded as well.
    """

    __slots__ = ("_buckets", "_burst", "_max_keys", "_rate")

    def __init__(self, rate: float, burst: float, max_keys: int = 65536) -> None:
        _check_rate_and_burst(rate, burst)
        if max_keys < 1:
            raise ConfigError(f"max_keys must be at least 1, not {max_keys!r}")
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        """The number of keys that currently have a bucket."""
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def allow(self, key: Hashable, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens from ``key``'s bucket at time ``now``; see :meth:`TokenBucket.take`."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self._max_keys:
                buckets.popitem(last=False)
            bucket = buckets[key] = TokenBucket(self._rate, self._burst)
        else:
            buckets.move_to_end(key)
        return bucket.take(now, amount)
