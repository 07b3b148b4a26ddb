"""Who holds how many TURN allocations, and whose credentials were taken back.

Both are counts for the whole server: a participant's quota, the network-check pool's share per
source address and a revocation must hold however many processes or nodes relay for one
deployment. The TURN core therefore asks a :class:`QuotaLedger` and keeps neither table itself;
:class:`MemoryLedger` is the single-process implementation. A distributed one (a Redis hash of
counts, revocations published to every node, each node answering from its replica) fits the same
five methods; the node that receives a revocation deletes the allocations it holds
(:meth:`~meet443.proto.turn.server.TurnServer.revoke`).

Keys are the TURN core's: ``user:<participant>`` for the allocations a participant holds under all
its REST usernames, ``check:<address>`` for the check allocations of one source address (IPv6 by
its /64), ``check-relay:<ip>:<port>`` for the relayed address of a live check allocation (what
other check allocations may reach, whichever process holds it). Revocations are by participant
(the user part of ``expiry:user``), each until the last
credential handed to that participant expires; after that the credentials are dead anyway.

Pure: ``now`` is a parameter; nothing here reads a clock.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["MemoryLedger", "QuotaLedger"]


class QuotaLedger(Protocol):
    """Server-wide allocation counts by key and revoked participants."""

    def held(self, key: str) -> int:
        """Allocations now held under ``key``."""

    def allocated(self, key: str) -> None:
        """One more allocation under ``key``."""

    def released(self, key: str) -> None:
        """One allocation under ``key`` is gone."""

    def revoke(self, user: str, until: float) -> None:
        """Refuse ``user``'s credentials until ``until`` (a UNIX time; a later one extends it)."""

    def is_revoked(self, user: str, now: float) -> bool:
        """Are ``user``'s credentials revoked at ``now``?"""

    def expire(self, now: float) -> None:
        """Forget revocations that have run out."""

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has a revocation to forget, or None."""


class MemoryLedger:
    """:class:`QuotaLedger` for one process: two dictionaries."""

    __slots__ = ("_held", "_revoked")

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._revoked: dict[str, float] = {}

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    def allocated(self, key: str) -> None:
        self._held[key] = self._held.get(key, 0) + 1

    def released(self, key: str) -> None:
        left = self._held.get(key, 0) - 1
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)

    def revoke(self, user: str, until: float) -> None:
        self._revoked[user] = max(until, self._revoked.get(user, until))

    def is_revoked(self, user: str, now: float) -> bool:
        return self._revoked.get(user, now) > now

    def expire(self, now: float) -> None:
        for user in [u for u, until in self._revoked.items() if until <= now]:
            del self._revoked[user]

    def next_expiry(self) -> float | None:
        return min(self._revoked.values(), default=None)

    def __len__(self) -> int:
        """Keys and revocations remembered (tests check that both tables drain)."""
        return len(self._held) + len(self._revoked)
