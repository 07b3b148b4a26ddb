"""The media plane split over worker processes, sans I/O (``meet443 serve --workers N``).

The shape is mediasoup's: one control process (TCP port, TLS, HTTP, REST, signaling, meetings)
and N media workers, each a TURN core and an SFU behind its own sockets. This module holds the
decisions that shape needs, each testable without a process:

* :class:`WorkerPlacement` (control): which worker an SFU room lives on. A new room goes to the
  worker with the fewest group participants (then the fewest rooms, then the lowest index); a room
  stays where it is until its last participant leaves, also across a respawn of its worker.
* :class:`MainPortRoutes` (worker): the main UDP port is one SO_REUSEPORT group, and the kernel
  hands a flow to a worker by a hash of its addresses, not by room. An SFU connection reached on
  the main port (aioice and browsers that take port-443 candidates do) may therefore land on any
  worker. Each worker's ICE username fragments start with its own tag character, so the worker
  that receives a check knows the owner, forwards it there, and remembers the source address so
  that the DTLS and SRTP that follow from it go the same way.
* :class:`ReplicatedLedger` (worker): the TURN quotas of :mod:`meet443.proto.turn.quota` counted
  across workers: its own counts plus the last count each other worker published.
* :class:`ClusterTurnState` (control): what the cluster link sets on TURN (docs/cluster.md), kept
  for the workers: sent to them when it changes, and to a (re)spawned worker at its hello.

Pure: ``now`` and messages in, decisions out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from meet443 import ipc
from meet443.proto.addresses import Address
from meet443.proto.ice.lite import ICE_ALPHABET, UFRAG_LENGTH
from meet443.proto.stun.attributes import Username
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.proto.turn.quota import MemoryLedger
from meet443.proto.turn.server import TurnServer

__all__ = [
    "MAX_WORKERS",
    "ClusterTurnState",
    "MainPortRoutes",
    "ReplicatedLedger",
    "WorkerPlacement",
    "apply_cluster_turn",
    "ufrag_tag",
]

#: One ICE character tags a worker's ufrags (RFC 8839 §5.4 has 64 of them).
MAX_WORKERS = len(ICE_ALPHABET)
#: Source addresses a worker remembers as another worker's SFU connections on the main port;
#: the oldest goes first (every ICE consent check, RFC 7675: about every 5 s, refreshes one).
MAX_ROUTES = 65536


def ufrag_tag(worker: int) -> str:
    """The first character of every ICE ufrag worker ``worker``'s SFU hands out."""
    return ICE_ALPHABET[worker]


class WorkerPlacement:
    """Which worker runs each SFU room, by load; see the module docstring."""

    def __init__(self, count: int) -> None:
        if not 1 <= count <= MAX_WORKERS:
            raise ValueError(f"1 to {MAX_WORKERS} workers, not {count}")
        self.count = count
        self._room_worker: dict[str, int] = {}
        self._members: dict[str, set[str]] = {}
        self._participants = [0] * count
        self._rooms = [0] * count

    def worker_of(self, room: str) -> int | None:
        return self._room_worker.get(room)

    def joined(self, room: str, participant: str) -> int:
        """A participant is in ``room``'s SFU: the worker that runs the room (placed now if new)."""
        worker = self._room_worker.get(room)
        if worker is None:
            worker = min(range(self.count), key=lambda k: (self._participants[k], self._rooms[k], k))
            self._room_worker[room] = worker
            self._members[room] = set()
            self._rooms[worker] += 1
        members = self._members[room]
        if participant not in members:
            members.add(participant)
            self._participants[worker] += 1
        return worker

    def left(self, room: str, participant: str) -> int | None:
        """A participant left ``room``'s SFU: the worker to tell, or None if the room has none."""
        worker = self._room_worker.get(room)
        if worker is None:
            return None
        members = self._members[room]
        if participant in members:
            members.discard(participant)
            self._participants[worker] -= 1
        if not members:
            del self._room_worker[room], self._members[room]
            self._rooms[worker] -= 1
        return worker

    def members(self, room: str) -> list[str]:
        return sorted(self._members.get(room, ()))

    def rooms_on(self, worker: int) -> list[str]:
        return sorted(room for room, k in self._room_worker.items() if k == worker)

    def load(self, worker: int) -> tuple[int, int]:
        """(group participants, rooms) on ``worker``."""
        return self._participants[worker], self._rooms[worker]


class MainPortRoutes:
    """Worker ``me``'s view of SFU flows that reached it on the main port but are another's."""

    def __init__(self, me: int, count: int) -> None:
        self.me = me
        self._owner = {ufrag_tag(k): k for k in range(count)}
        self._routes: dict[Address, int] = {}

    def owner_of_check(self, message: Message) -> int | None:
        """The other worker whose ICE session this Binding request checks (RFC 8445 §7.2.2:
        USERNAME is ``<our ufrag>:<their ufrag>``), or None (ours, or not an ICE check)."""
        if message.method != Method.BINDING or message.klass != StunClass.REQUEST:
            return None
        username = message.get(Username)
        if username is None:
            return None
        local = username.value.partition(":")[0]
        if len(local) != UFRAG_LENGTH:
            return None
        owner = self._owner.get(local[0])
        return None if owner is None or owner == self.me else owner

    def learn(self, source: Address, worker: int) -> None:
        """Datagrams from ``source`` belong to ``worker``'s SFU (a check for it came from there)."""
        routes = self._routes
        routes.pop(source, None)
        routes[source] = worker
        if len(routes) > MAX_ROUTES:
            del routes[next(iter(routes))]

    def forget(self, source: Address) -> None:
        """``source`` now checks one of our own sessions."""
        self._routes.pop(source, None)

    def route(self, source: Address) -> int | None:
        return self._routes.get(source)

    def __len__(self) -> int:
        return len(self._routes)


class ReplicatedLedger(MemoryLedger):
    """:class:`~meet443.proto.turn.quota.QuotaLedger` for one of several workers.

    ``held`` is this worker's count plus the last count each other worker published
    (:meth:`others_hold`); every change of this worker's own count is told to ``publish(key,
    count)``. Two workers allocating for one key in the same instant can overshoot a quota by one
    each, the trade :mod:`meet443.proto.shares` describes; revocations arrive through the TURN
    core's ``revoke`` on every worker, so they need no replication here.
    """

    __slots__ = ("_others", "_publish")

    def __init__(self, publish: Callable[[str, int], None]) -> None:
        super().__init__()
        self._publish = publish
        #: key -> worker -> count.
        self._others: dict[str, dict[int, int]] = {}

    def held(self, key: str) -> int:
        return super().held(key) + sum(self._others.get(key, {}).values())

    def allocated(self, key: str) -> None:
        super().allocated(key)
        self._publish(key, super().held(key))

    def released(self, key: str) -> None:
        super().released(key)
        self._publish(key, super().held(key))

    def others_hold(self, worker: int, key: str, held: int) -> None:
        """Worker ``worker`` now holds ``held`` allocations under ``key``."""
        counts = self._others.setdefault(key, {})
        if held > 0:
            counts[worker] = held
        else:
            counts.pop(worker, None)
            if not counts:
                del self._others[key]

    def worker_gone(self, worker: int) -> None:
        """Worker ``worker`` died: its allocations died with it."""
        for key in [k for k, counts in self._others.items() if worker in counts]:
            self.others_hold(worker, key, 0)


class ClusterTurnState:
    """Control: the cluster's TURN settings (:class:`~meet443.ipc.ClusterTurn`) for the workers.

    The cluster link sets them at every heartbeat; :meth:`update` answers the message to send to
    every worker only when they changed, and :attr:`current` is what a (re)spawned worker is sent.
    """

    def __init__(self) -> None:
        self.current = ipc.ClusterTurn([], [])

    def update(
        self,
        nodes: Iterable[tuple[Iterable[str], Iterable[int], tuple[int, int]]],
        alternates: Iterable[tuple[str, int]] | None,
    ) -> ipc.ClusterTurn | None:
        """``nodes`` replaces the other live nodes; ``alternates`` None keeps the current ones."""
        message = ipc.ClusterTurn(
            [(list(addresses), list(ports), relay) for addresses, ports, relay in nodes],
            self.current.alternates if alternates is None else list(alternates),
        )
        if message == self.current:
            return None
        self.current = message
        return message


def apply_cluster_turn(turn: TurnServer, message: ipc.ClusterTurn) -> None:
    """Worker: what the control process's cluster link set, on this worker's TURN core."""
    turn.policy.set_cluster_nodes(message.nodes)
    turn.alternates = tuple((ip, port) for ip, port in message.alternates)


def share_of(total: int, count: int) -> int:
    """A per-worker share of a server-wide cap that no worker can round down to nothing."""
    return max(1, math.ceil(total / count))


def split_range(ports: tuple[int, int], count: int) -> list[tuple[int, int]]:
    """``--relay-ports`` cut into ``count`` disjoint slices, one per worker, in order."""
    low, high = ports
    size = (high - low + 1) // count
    if size < 1:
        raise ValueError(f"the relay port range {low}-{high} is smaller than {count} workers")
    return [(low + k * size, high if k == count - 1 else low + (k + 1) * size - 1) for k in range(count)]
