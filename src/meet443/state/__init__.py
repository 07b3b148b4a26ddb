"""Shared state of a meet443 service behind one interface (docs/cluster.md).

A single node keeps it in memory (:class:`~meet443.state.memory.MemoryState`); nodes of a cluster
share it in Redis (:class:`~meet443.state.redis_backend.RedisState`). The same test suite runs
against both (``tests/state/test_state.py``). What lives here, and the promise of each channel:

* the node registry: each node's :class:`NodeInfo`, announced every :data:`HEARTBEAT_SECONDS` and
  forgotten :data:`NODE_TTL_SECONDS` after its last heartbeat;
* room placement: a room's home is a :class:`Lease` (node id and fencing epoch) taken atomically
  with :meth:`SharedState.claim` and kept alive by its home with :meth:`SharedState.renew`; a node
  that wakes up after a pause finds its epoch gone and cannot act on a room that moved;
* revocations of TURN credentials: published for speed (at most once) and kept until they expire,
  so a node that missed the publication reads them on :meth:`SharedState.revocations`;
* the chat of each room, appended at least once per message with its ``(epoch, seq)`` id;
* each room's latest snapshot (:mod:`meet443.proto.signaling.snapshot`), written by its home with
  its lease's epoch and refused once a later claim exists (fencing), read by the node that takes
  the room over when its home died (docs/cluster.md "Failover").

Sans-I/O cores never see this: the adapters (:mod:`meet443.aio.cluster`) talk to it. What a
single node keeps beyond its process (room snapshots for a restart) is in :mod:`meet443.state.rooms`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

import msgspec

__all__ = [
    "HEARTBEAT_SECONDS",
    "LEASE_SECONDS",
    "NODE_TTL_SECONDS",
    "Lease",
    "NodeInfo",
    "RevocationSink",
    "SharedState",
    "node_id_of",
    "wait_forever",
]

#: How often a node announces itself, and how long after its last announcement it is gone.
HEARTBEAT_SECONDS = 1.0
NODE_TTL_SECONDS = 3.0
#: A room's lease; its home renews it every third of this, so one lost renewal costs nothing.
LEASE_SECONDS = 10.0
#: Registry entries are versioned; an entry of a newer version keeps the fields we know.
NODE_INFO_VERSION = 1


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One node as the registry describes it: where clients and other nodes reach it, and its load.

    Unknown fields (from a newer node) are ignored, so nodes of two versions can share a cluster.
    """

    v: int = NODE_INFO_VERSION
    node_id: str
    node_url: str
    region: str = ""
    #: Public IP addresses: the SFU's and the TURN relay's.
    addresses: tuple[str, ...]
    #: The main port, for TCP (HTTPS, TURN) and UDP (TURN, SFU).
    port: int
    #: UDP ports the SFU receives media on (the main port and the second UDP port).
    sfu_ports: tuple[int, ...]
    relay_ports: tuple[int, int]
    #: Participants now, and how many the node takes (``--max-participants``).
    load: int = 0
    capacity: int = 1
    draining: bool = False

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, data: bytes | str) -> NodeInfo:
        """Raises ``msgspec.DecodeError`` (a ``ValueError``) for anything but a registry entry."""
        return msgspec.json.decode(data, type=cls)

    @property
    def accepts_rooms(self) -> bool:
        return not self.draining and self.load < self.capacity


class Lease(msgspec.Struct, frozen=True):
    """A room's home and the fencing epoch of its claim (one more on every claim of that room)."""

    node_id: str
    epoch: int

    def encode(self) -> str:
        return f"{self.node_id} {self.epoch}"

    @classmethod
    def decode(cls, text: str) -> Lease:
        node_id, _, epoch = text.rpartition(" ")
        return cls(node_id, int(epoch))


def node_id_of(node_url: str) -> str:
    """A node's id: the ``host[:port]`` of its ``--node-url``, lower-cased."""
    return urlsplit(node_url).netloc.lower()


#: Called with ``(participant, until)`` for every revocation, also those made before a
#: (re)subscription: applying one twice must be harmless.
RevocationSink = Callable[[str, float], None]


class SharedState(Protocol):
    """What nodes share. Every method raises :class:`~meet443.exceptions.StateUnavailable` when the
    store cannot be reached; none blocks longer than about a second."""

    async def heartbeat(self, node: NodeInfo) -> tuple[list[NodeInfo], bool]:
        """``node`` is alive, as described, for :data:`NODE_TTL_SECONDS`; returns the live nodes
        (``node`` among them) and whether someone asked this node to drain (``meet443 drain``)."""

    async def withdraw(self, node_id: str) -> None:
        """The node stops: forget it now rather than when its entry expires."""

    async def live_nodes(self) -> list[NodeInfo]:
        """Every node whose last heartbeat is younger than :data:`NODE_TTL_SECONDS`."""

    async def claim(self, room: str, node_id: str, lease_seconds: float = LEASE_SECONDS) -> Lease:
        """The room's home: the existing lease, or a new one for ``node_id`` with the next epoch.

        Atomic: of any number of concurrent claims of one room, all get the same lease.
        """

    async def home(self, room: str) -> Lease | None:
        """The room's current lease, if any."""

    async def renew(self, room: str, lease: Lease, lease_seconds: float = LEASE_SECONDS) -> bool:
        """Extend ``lease`` if it is still the room's; False when the room has moved or expired."""

    async def release(self, room: str, lease: Lease) -> None:
        """The room emptied: drop ``lease`` if it is still the room's."""

    async def take_over(self, room: str, dead: Lease, node_id: str) -> Lease | float:
        """Failover: a new lease for ``node_id`` with the next epoch if ``dead`` is still the room's
        lease and its node's registry entry is gone; the room's lease if it is another (someone
        took it over first, or there is none: then this is :meth:`claim`); else the seconds until
        ``dead``'s node is forgotten (its entry's expiry, at most :data:`NODE_TTL_SECONDS`)."""

    async def save_room(self, room: str, epoch: int, snapshot: bytes) -> bool:
        """Store ``room``'s snapshot, written under the lease of ``epoch``; refused (False) when a
        later claim of the room exists: a home that lost its room cannot overwrite its new home's."""

    async def delete_room(self, room: str, epoch: int) -> bool:
        """The room emptied or ended: drop its snapshot, fenced like :meth:`save_room`."""

    async def load_room(self, room: str) -> bytes | None:
        """``room``'s last stored snapshot, if any."""

    async def revoke(self, participant: str, until: float) -> None:
        """Refuse ``participant``'s TURN credentials on every node until ``until``."""

    async def revocations(self, now: float) -> list[tuple[str, float]]:
        """Every revocation still in force at ``now``."""

    async def watch_revocations(self, sink: RevocationSink, ready: Callable[[], None]) -> None:
        """Call ``sink`` for each revocation as it is made, until cancelled. After every
        (re)subscription it first replays :meth:`revocations`, then calls ``ready``, so nothing
        published while unsubscribed is missed. Reconnects by itself; never raises
        :class:`~meet443.exceptions.StateUnavailable`."""

    async def append_chat(self, room: str, epoch: int, seq: int, message: bytes) -> None:
        """Append a chat message (its JSON) to the room's history; an ``(epoch, seq)`` seen
        before is not appended again."""

    async def chat(self, room: str) -> list[tuple[int, int, bytes]]:
        """The room's kept history, oldest first: ``(epoch, seq, message)``."""

    async def request_drain(self, node_id: str) -> None:
        """``meet443 drain``: ask ``node_id`` to drain (its next heartbeat learns it)."""

    async def close(self) -> None:
        """Close connections."""


async def wait_forever() -> None:
    """For watchers that have nothing to wait on (the in-memory store pushes directly)."""
    await asyncio.Event().wait()
