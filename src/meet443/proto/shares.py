"""Global caps with a per-address share: how many of a server-wide resource one client may hold.

A cap alone lets one address take all of it (every signaling socket, every half-open TCP
connection) and lock everybody else out; a share per source address keeps room for the rest. An
address is what :func:`~meet443.proto.addresses.address_key` makes of it: IPv4 as is, IPv6 by
its /64, one subscriber's prefix (RFC 6177), since a single host may hold a whole /64.

Every count is for the whole server. :class:`SharedCap` is the interface the adapters and cores
use; :class:`LocalSharedCap` is the single-process implementation. One for several processes or
nodes keeps the same synchronous interface (it sits on the accept path, which must not wait for a
network round trip): it counts its own holdings locally and adds the other nodes' counts from a
snapshot they publish (a Redis hash refreshed every second or so), accepting that a burst can
overshoot a share by what arrives within one refresh.
"""

from __future__ import annotations

import enum
import logging
import math
from typing import Protocol

__all__ = ["Grant", "LocalSharedCap", "RefusalTally", "SharedCap", "default_share"]

#: Without a configured share, an address may hold this fraction of a cap...
DEFAULT_SHARE_FRACTION = 0.1


def default_share(cap: int, minimum: int) -> int:
    """10% of ``cap``, at least ``minimum`` (an office behind one NAT address must still fit a
    large meeting), never more than ``cap``."""
    return min(cap, max(minimum, math.ceil(cap * DEFAULT_SHARE_FRACTION)))


class Grant(enum.Enum):
    """The answer to :meth:`SharedCap.acquire`."""

    GRANTED = "granted"
    #: The address holds its whole share.
    ADDRESS_SHARE = "address-share"
    #: The server holds the whole cap.
    CAP = "cap"


class SharedCap(Protocol):
    """A server-wide cap on some resource, with a share per address key."""

    @property
    def cap(self) -> int:
        """The most the whole server may hold."""

    @property
    def share(self) -> int:
        """The most one address key may hold."""

    def acquire(self, key: str) -> Grant:
        """Take one unit for ``key`` if both its share and the cap allow it."""

    def release(self, key: str) -> None:
        """Give back one unit ``key`` holds."""

    def held(self, key: str | None = None) -> int:
        """Units held by ``key``, or by everybody."""


class LocalSharedCap:
    """:class:`SharedCap` counted in this process (one node, one process)."""

    def __init__(self, cap: int, share: int) -> None:
        if cap < 1 or share < 1:
            raise ValueError(f"cap and share must be positive, got {cap} and {share}")
        self._cap = cap
        self._share = min(share, cap)
        self._total = 0
        #: Only keys holding something: the table is bounded by the cap.
        self._by_key: dict[str, int] = {}

    @property
    def cap(self) -> int:
        return self._cap

    @property
    def share(self) -> int:
        return self._share

    def acquire(self, key: str) -> Grant:
        if self._total >= self._cap:
            return Grant.CAP
        held = self._by_key.get(key, 0)
        if held >= self._share:
            return Grant.ADDRESS_SHARE
        self._by_key[key] = held + 1
        self._total += 1
        return Grant.GRANTED

    def release(self, key: str) -> None:
        held = self._by_key.get(key, 0)
        if held <= 0:
            raise ValueError(f"release without acquire for {key!r}")
        if held == 1:
            del self._by_key[key]
        else:
            self._by_key[key] = held - 1
        self._total -= 1

    def held(self, key: str | None = None) -> int:
        return self._total if key is None else self._by_key.get(key, 0)


class RefusalTally:
    """Counts refusals and logs them as one line per ``interval`` with the counts since the last
    line, so that a flood of refused clients cannot flood the log too."""

    def __init__(self, logger: logging.Logger, what: str, interval: float = 10.0) -> None:
        self._logger = logger
        self._what = what
        self._interval = interval
        self._next_log = -math.inf
        self._unlogged: dict[str, int] = {}
        self.total = 0

    def refused(self, reason: str, now: float) -> None:
        """One refusal for ``reason`` (no addresses: the line must not grow with the attackers)."""
        self.total += 1
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        if now >= self._next_log:
            counts = ", ".join(f"{n} {why}" for why, n in sorted(self._unlogged.items()))
            self._logger.warning(
                "%s: %s (at most one such line per %.0f s)", self._what, counts, self._interval
            )
            self._unlogged.clear()
            self._next_log = now + self._interval
