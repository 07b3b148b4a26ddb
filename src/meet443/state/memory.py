"""The shared state of a single node, in memory (what ``meet443 serve`` uses without ``--redis``).

Behaves like :class:`~meet443.state.redis_backend.RedisState` for one process, so the same tests
hold for both; time comes from the injected ``clock``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from meet443.state import LEASE_SECONDS, NODE_TTL_SECONDS, Lease, NodeInfo, RevocationSink, wait_forever

__all__ = ["MemoryState"]

#: Chat messages kept per room, as the Redis stream's MAXLEN.
CHAT_KEPT = 500


class MemoryState:
    """:class:`~meet443.state.SharedState` in one process's memory."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._nodes: dict[str, tuple[float, NodeInfo]] = {}
        self._leases: dict[str, tuple[float, Lease]] = {}
        self._epochs: dict[str, int] = {}
        self._revoked: dict[str, float] = {}
        self._sinks: list[RevocationSink] = []
        self._chat: dict[str, deque[tuple[int, int, bytes]]] = {}
        self._drains: set[str] = set()
        self._snapshots: dict[str, bytes] = {}

    async def heartbeat(self, node: NodeInfo) -> tuple[list[NodeInfo], bool]:
        self._nodes[node.node_id] = (self._clock() + NODE_TTL_SECONDS, node)
        return await self.live_nodes(), node.node_id in self._drains

    async def withdraw(self, node_id: str) -> None:
        self._nodes.pop(node_id, None)

    async def live_nodes(self) -> list[NodeInfo]:
        now = self._clock()
        return [node for expires, node in self._nodes.values() if expires > now]

    def _current(self, room: str) -> Lease | None:
        held = self._leases.get(room)
        if held is None or held[0] <= self._clock():
            return None
        return held[1]

    async def claim(self, room: str, node_id: str, lease_seconds: float = LEASE_SECONDS) -> Lease:
        lease = self._current(room)
        if lease is None:
            self._epochs[room] = epoch = self._epochs.get(room, 0) + 1
            lease = Lease(node_id, epoch)
            self._leases[room] = (self._clock() + lease_seconds, lease)
        return lease

    async def home(self, room: str) -> Lease | None:
        return self._current(room)

    async def renew(self, room: str, lease: Lease, lease_seconds: float = LEASE_SECONDS) -> bool:
        if self._current(room) != lease:
            return False
        self._leases[room] = (self._clock() + lease_seconds, lease)
        return True

    async def release(self, room: str, lease: Lease) -> None:
        if self._current(room) == lease:
            del self._leases[room]

    async def take_over(self, room: str, dead: Lease, node_id: str) -> Lease | float:
        current = self._current(room)
        if current is None:
            return await self.claim(room, node_id)
        if current != dead:
            return current
        held = self._nodes.get(dead.node_id)
        if held is not None and held[0] > self._clock():
            return held[0] - self._clock()
        del self._leases[room]
        return await self.claim(room, node_id)

    async def save_room(self, room: str, epoch: int, snapshot: bytes) -> bool:
        if self._epochs.get(room, 0) > epoch:
            return False
        self._snapshots[room] = snapshot
        return True

    async def delete_room(self, room: str, epoch: int) -> bool:
        if self._epochs.get(room, 0) > epoch:
            return False
        self._snapshots.pop(room, None)
        return True

    async def load_room(self, room: str) -> bytes | None:
        return self._snapshots.get(room)

    async def revoke(self, participant: str, until: float) -> None:
        self._revoked[participant] = max(until, self._revoked.get(participant, 0.0))
        for sink in self._sinks:
            sink(participant, until)

    async def revocations(self, now: float) -> list[tuple[str, float]]:
        return [(p, until) for p, until in self._revoked.items() if until > now]

    async def watch_revocations(self, sink: RevocationSink, ready: Callable[[], None]) -> None:
        for participant, until in await self.revocations(self._clock()):
            sink(participant, until)
        self._sinks.append(sink)
        ready()
        try:
            await wait_forever()
        finally:
            self._sinks.remove(sink)

    async def append_chat(self, room: str, epoch: int, seq: int, message: bytes) -> None:
        kept = self._chat.setdefault(room, deque(maxlen=CHAT_KEPT))
        if any((e, s) == (epoch, seq) for e, s, _ in kept):
            return
        kept.append((epoch, seq, message))

    async def chat(self, room: str) -> list[tuple[int, int, bytes]]:
        return list(self._chat.get(room, ()))

    async def request_drain(self, node_id: str) -> None:
        self._drains.add(node_id)

    async def close(self) -> None:
        return None
