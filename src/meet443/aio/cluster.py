"""A node's link to the other nodes of its service, through the shared state (docs/cluster.md).

:class:`Cluster` is the adapter between one :class:`~meet443.aio.node.NodeService` and a
:class:`~meet443.state.SharedState`. It

* announces the node every second and keeps the live nodes' view, from which the TURN peer policy
  learns the other nodes' media ports and, while draining, the TURN alternates;
* places rooms (:meth:`Cluster.route`): a room this node holds the lease of is served here with no
  Redis round trip; any other is claimed through the shared placement rule
  (:func:`~meet443.regions.place_room`: its first joiner's closest region, the least loaded node
  there) and served here or relayed (:mod:`meet443.aio.relay`);
* renews the leases of its rooms while they exist and releases them when they empty; a lease found
  taken by another node (a pause longer than the lease) closes the room's sockets here, so their
  clients reconnect to its new home;
* takes rooms over from a home that died (docs/cluster.md "Failover"): a join for a room whose home
  left the registry, or could not be reached, claims it with the next epoch once the home's
  registry entry expired, and restores it from the snapshot the home wrote to the shared state;
* holds the signaling input after a pause of the whole node (SIGSTOP, a frozen VM) longer than its
  registry entry lives, until a heartbeat and its lease renewals have told it which rooms are
  still its own, so it never serves a room that moved meanwhile;
* publishes revocations and chat messages in order through a bounded outbox that retries while
  Redis is away, and applies other nodes' revocations to its TURN server.

A Redis outage stops none of this node's calls: rooms already here go on (their leases are renewed
again, or claimed again, when Redis is back), only rooms not yet placed fail with ``unavailable``.
Outages are logged once when they start and once when they end.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from meet443.aio.node import NodeService
from meet443.aio.relay import (
    HomeUnreachable,
    RoomElsewhere,
    cluster_key,
    relay_frames,
    relay_header,
    verify_relay_header,
)
from meet443.exceptions import ParseError, StateUnavailable
from meet443.network import NetworkDescription
from meet443.proto.addresses import Address
from meet443.proto.signaling.admission import is_valid_room_name
from meet443.proto.signaling.messages import encode
from meet443.proto.signaling.room import ChatPosted, Close, RevokeTurn
from meet443.proto.signaling.snapshot import RoomSnapshot
from meet443.regions import place_room
from meet443.state import (
    HEARTBEAT_SECONDS,
    LEASE_SECONDS,
    NODE_TTL_SECONDS,
    Lease,
    NodeInfo,
    SharedState,
    node_id_of,
)

__all__ = ["Cluster", "ClusterNodeTurn", "NodeAddresses", "SetTurn"]

#: Another live node as TURN's peer policy sees it: (addresses, SFU ports, relay ports).
ClusterNodeTurn = tuple[tuple[str, ...], tuple[int, ...], tuple[int, int]]
#: Takes the other live nodes and, while draining, the Try Alternate addresses (None: unchanged).
SetTurn = Callable[[list[ClusterNodeTurn], "list[Address] | None"], None]

logger = logging.getLogger(__name__)

_NO_RTTS: Mapping[str, float] = {}
#: Leases are renewed this often: a third of their life, so one lost renewal costs nothing.
RENEW_SECONDS = LEASE_SECONDS / 3
#: A room claimed for this node that has not been made yet (the directory is still answering) is
#: not released before this.
CLAIM_GRACE_SECONDS = 15.0
#: Messages waiting for Redis (revocations and chat); past this the oldest are dropped and counted.
OUTBOX_LIMIT = 10_000
RETRY_FIRST, RETRY_MAX = 0.1, 2.0
#: RFC 6455 §7.4.1 1012 (service restart): the room moved, reconnect.
CLOSE_SERVICE_RESTART = 1012
#: A home whose relay failed is not relayed to again for this long: joins for its rooms wait for
#: its registry entry to expire and take the rooms over.
UNREACHABLE_SECONDS = NODE_TTL_SECONDS + HEARTBEAT_SECONDS
#: Relays a join may go through when homes die under it.
RELAY_ATTEMPTS = 3


@dataclass(frozen=True)
class NodeAddresses:
    """Where clients and other nodes reach this node (the registry's :class:`NodeInfo`)."""

    addresses: tuple[str, ...]
    port: int
    sfu_ports: tuple[int, ...]
    relay_ports: tuple[int, int]
    capacity: int


@dataclass
class _Owned:
    lease: Lease
    since: float


@dataclass
class _Outbox:
    """Writes to the shared state in order, retrying while it is away; bounded."""

    items: deque[Callable[[], Awaitable[None]]] = field(default_factory=deque)
    dropped: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, write: Callable[[], Awaitable[None]]) -> None:
        if len(self.items) >= OUTBOX_LIMIT:
            self.items.popleft()
            self.dropped += 1
        self.items.append(write)
        self.wake.set()


class Cluster:
    """See the module docstring."""

    def __init__(
        self,
        state: SharedState,
        service: NodeService,
        *,
        node_url: str,
        public_url: str,
        region: str,
        where: NodeAddresses,
        turn_secret: str,
        client_ssl: ssl.SSLContext,
        max_msg_size: int,
        shared: bool = True,
        clock: Callable[[], float] = time.time,
        set_turn: SetTurn | None = None,
    ) -> None:
        """``set_turn``: where the TURN settings from the registry go (the media workers', with
        ``--workers N``); by default onto this process's TURN core."""
        self.state = state
        self.set_turn: SetTurn = set_turn or self._set_own_turn
        #: Other nodes share the state: revocations and chat are worth publishing. A single node
        #: (in-memory state) has applied its revocations already and keeps its chat in the room.
        self.shared = shared
        self.service = service
        service.cluster = self
        self.node_url = node_url
        self.public_url = public_url
        self.node_id = node_id_of(node_url)
        self.region = region
        self.where = where
        self._key = cluster_key(turn_secret)
        self._client_ssl = client_ssl
        self._max_msg_size = max_msg_size
        self._clock = clock
        #: Live nodes by id, from the last heartbeat (this node among them).
        self.live: dict[str, NodeInfo] = {}
        self.owned: dict[str, _Owned] = {}
        self.draining = False
        self.drain_deadline = float("inf")
        #: Set when a draining node has no one left, or its drain timeout passed.
        self.drained = asyncio.Event()
        self.relays = 0
        self._outbox = _Outbox()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._down_since: float | None = None
        self._drain_timeout = 0.0
        self.subscribed = asyncio.Event()
        #: Nodes whose relay failed, and when.
        self._unreachable: dict[str, float] = {}
        #: Rooms being restored from the shared state; joins for them wait.
        self._restoring: dict[str, asyncio.Future[None]] = {}
        #: When the last heartbeat was attempted; a longer gap than a registry entry lives means
        #: the node was paused and may have lost rooms (:meth:`paused`).
        self._beat_attempt = clock()
        #: Signaling input held while a pause is being checked (:meth:`hold`), in arrival order.
        self._held: list[tuple[int, Callable[[], None]]] = []
        self._checking: asyncio.Task[None] | None = None
        self.takeovers = 0

    # -- life cycle -----------------------------------------------------------------------------

    def start(self, drain_timeout: float) -> None:
        """Start the heartbeat, lease renewal, outbox and revocation watcher. Rooms restored from
        an earlier run are served here until their first renewal finds whether their lease is
        still this node's (then they are kept) or another node's (then they are closed here)."""
        self._drain_timeout = drain_timeout
        now = self._clock()
        for room in self.service.node.signaling.room_names():
            # Epoch 0 is never a real claim's: the first renewal fails and claims the room again.
            self.owned[room] = _Owned(Lease(self.node_id, 0), now)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._tasks = [
            asyncio.ensure_future(self._heartbeats()),
            asyncio.ensure_future(self._renewals()),
            asyncio.ensure_future(self._write_outbox()),
            asyncio.ensure_future(self.state.watch_revocations(self._revoked_elsewhere, self.subscribed.set)),
        ]

    async def close(self) -> None:
        """Leave the registry and release this node's rooms (best effort), then stop."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self._leave(), 2.0)
        except (StateUnavailable, TimeoutError):
            logger.warning("cluster: could not leave the registry cleanly; entries expire by themselves")
        if self._session is not None:
            await self._session.close()
        await self.state.close()

    async def _leave(self) -> None:
        # Pending revocations matter to other nodes' TURN servers: send what can be sent.
        while self._outbox.items:
            await self._outbox.items.popleft()()
        for room, owned in list(self.owned.items()):
            await self.state.release(room, owned.lease)
        await self.state.withdraw(self.node_id)

    # -- the registry ---------------------------------------------------------------------------

    def describe(self) -> NodeInfo:
        w = self.where
        return NodeInfo(
            node_id=self.node_id,
            node_url=self.node_url,
            region=self.region,
            addresses=w.addresses,
            port=w.port,
            sfu_ports=w.sfu_ports,
            relay_ports=w.relay_ports,
            load=self.service.node.signaling.participant_count,
            capacity=w.capacity,
            draining=self.draining,
        )

    async def _heartbeats(self) -> None:
        while True:
            await self.heartbeat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def heartbeat(self) -> None:
        """Announce this node, learn the others, and act on a drain request."""
        now = self._clock()
        self.paused(now)  # the first thing to run after a pause may be this: notice it
        self._beat_attempt = now
        try:
            nodes, drain = await self.state.heartbeat(self.describe())
        except StateUnavailable as exc:
            self._outage(exc)
            return
        self._recovered()
        self.live = {n.node_id: n for n in nodes}
        if drain and not self.draining:
            self.drain("meet443 drain")
        self._apply_registry()
        if self.draining and (self._idle() or self._clock() >= self.drain_deadline):
            self.drained.set()

    def _apply_registry(self) -> None:
        others = [n for n in self.live.values() if n.node_id != self.node_id]
        nodes = [(n.addresses, n.sfu_ports, n.relay_ports) for n in others]
        alternates = (
            [(a, n.port) for n in others if n.accepts_rooms for a in n.addresses] if self.draining else None
        )
        self.set_turn(nodes, alternates)

    def _set_own_turn(self, nodes: list[ClusterNodeTurn], alternates: list[Address] | None) -> None:
        turn = self.service.node.turn
        if turn is None:
            return
        turn.policy.set_cluster_nodes(nodes)
        if alternates is not None:
            turn.alternates = tuple(alternates)

    def _idle(self) -> bool:
        return self.service.node.signaling.participant_count == 0 and self.relays == 0

    def _outage(self, exc: Exception) -> None:
        if self._down_since is None:
            self._down_since = self._clock()
            logger.warning(
                "cluster: shared state unavailable (%s); calls go on, new rooms cannot be placed", exc
            )

    def _recovered(self) -> None:
        if self._down_since is not None:
            logger.info("cluster: shared state back after %.1f s", self._clock() - self._down_since)
            self._down_since = None

    # -- drain ----------------------------------------------------------------------------------

    def drain(self, why: str) -> None:
        """No new rooms here; new TURN allocations go to live nodes; rooms here go on until the
        drain timeout (docs/cluster.md "Drain")."""
        if self.draining:
            return
        self.draining = True
        self.drain_deadline = self._clock() + self._drain_timeout
        logger.info("draining (%s): no new rooms; rooms here may go on for %.0f s", why, self._drain_timeout)
        self._apply_registry()
        self._tasks.append(asyncio.ensure_future(self.heartbeat()))

    # -- placement ------------------------------------------------------------------------------

    async def route(
        self, room: str, *, relayed: bool, rtts: Mapping[str, float] = _NO_RTTS
    ) -> NodeInfo | None:
        """Where ``room`` lives: ``None`` for here, else the node to relay to. A new room goes to its
        first joiner's closest region (``rtts``, :func:`meet443.regions.place_room`); a room whose
        home died is taken over here (docs/cluster.md "Failover"). Raises
        :class:`StateUnavailable` (no shared state, or the room's home is not live and cannot be
        taken over yet) or :class:`RoomElsewhere` (a relayed join for a room that is no longer here)."""
        if room in self.owned or not is_valid_room_name(room):
            restoring = self._restoring.get(room)
            if restoring is not None:
                await asyncio.shield(restoring)
            return None  # ours; or a name the signaling core refuses anyway
        me = self.describe()
        # A relayed join was placed here by its edge; otherwise the shared rule decides, and when
        # no node takes rooms (all full or draining) the signaling core here answers for itself.
        choice = me if relayed else (place_room(me, list(self.live.values()), rtts) or me)
        lease = await self.state.claim(room, choice.node_id)
        if lease.node_id not in self.live and lease.node_id != self.node_id:
            # A node that joined after this one's last heartbeat is not dead: look again.
            self.live = {n.node_id: n for n in await self.state.live_nodes()}
            self._apply_registry()
        if lease.node_id != self.node_id and not relayed and not self._reachable(lease.node_id):
            lease = await self._take_over(room, lease)
        if lease.node_id == self.node_id:
            await self._own(room, lease)
            return None
        if relayed:
            raise RoomElsewhere(room)
        home = self.live.get(lease.node_id)
        if home is None:
            raise StateUnavailable(f"room {room}: its node {lease.node_id} is not live")
        return home

    def _reachable(self, node_id: str) -> bool:
        failed = self._unreachable.get(node_id)
        if failed is not None and self._clock() - failed > UNREACHABLE_SECONDS:
            del self._unreachable[node_id]
            failed = None
        return failed is None and node_id in self.live

    async def _take_over(self, room: str, dead: Lease) -> Lease:
        """docs/cluster.md "Failover": the room's lease for this node once ``dead``'s node has left
        the registry (waiting for its entry to expire, one timer per wait), or whoever has it."""
        deadline = self._clock() + UNREACHABLE_SECONDS
        while True:
            answer = await self.state.take_over(room, dead, self.node_id)
            if isinstance(answer, Lease):
                return answer
            if self._clock() + answer > deadline:
                raise StateUnavailable(f"room {room}: its node {dead.node_id} is still in the registry")
            await asyncio.sleep(answer + 0.01)

    async def _own(self, room: str, lease: Lease) -> None:
        """The room is placed here: keep its lease and restore what a previous home stored."""
        self.owned[room] = _Owned(lease, self._clock())
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._restoring[room] = done
        try:
            data = await self.state.load_room(room)
            if data is not None and not self.service.node.signaling.has_room(room):
                self._restore(room, lease, data)
            else:
                logger.info("room %s placed here (epoch %d)", room, lease.epoch)
        except StateUnavailable as exc:
            # The room starts afresh here: its participants join again rather than resume.
            logger.warning(
                "room %s placed here (epoch %d); its snapshot cannot be read: %s", room, lease.epoch, exc
            )
        finally:
            del self._restoring[room]
            done.set_result(None)

    def _restore(self, room: str, lease: Lease, data: bytes) -> None:
        try:
            snapshot = RoomSnapshot.parse(data)
        except ParseError as exc:
            logger.warning(
                "room %s: its stored snapshot is unreadable, the room starts afresh: %s", room, exc
            )
            return
        self.takeovers += 1
        self.service.node.restore([snapshot], self._clock(), new_chat_epoch=True)
        self.service.dispatch([])  # arms the resume windows' timer
        logger.info(
            "room %s taken over (epoch %d): %d participants may resume",
            room,
            lease.epoch,
            len(snapshot.participants),
        )

    def epoch_of(self, room: str) -> int | None:
        """The epoch of this node's lease on ``room``, for fenced snapshot writes."""
        owned = self.owned.get(room)
        return None if owned is None else owned.lease.epoch

    # -- pauses ---------------------------------------------------------------------------------

    def paused(self, now: float) -> bool:
        """True when no heartbeat was even attempted for longer than a registry entry lives (the
        node was stopped, SIGSTOP, or starved, and other nodes may have taken its rooms over),
        and until that has been checked. A Redis outage is no pause: heartbeats are attempted."""
        if not self.shared:
            return False
        if self._checking is None and now - self._beat_attempt > NODE_TTL_SECONDS:
            logger.warning(
                "cluster: woke after %.1f s without a heartbeat; checking leases", now - self._beat_attempt
            )
            self._checking = asyncio.ensure_future(self._check_after_pause())
        return self._checking is not None

    def hold(self, conn: int, handle: Callable[[], None]) -> None:
        """While :meth:`paused`: keep a signaling input until a heartbeat and the lease renewals
        have run; then it is handled, unless its socket belongs to a room that moved (whose
        sockets are closing)."""
        self._held.append((conn, handle))

    async def _check_after_pause(self) -> None:
        try:
            await self.heartbeat()
            await self.renew_leases()
        finally:
            held, self._held, self._checking = self._held, [], None
            signaling = self.service.node.signaling
            for conn, handle in held:
                room = signaling.room_of(conn)
                if room is None or room in self.owned:
                    handle()

    async def _renewals(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            await self.renew_leases()

    async def renew_leases(self) -> None:
        """Renew the leases of rooms here, release those of rooms gone; a lease lost to another
        node ends the room here."""
        signaling = self.service.node.signaling
        now = self._clock()
        for room, owned in list(self.owned.items()):
            try:
                if not signaling.has_room(room):
                    if now - owned.since > CLAIM_GRACE_SECONDS and self.owned.get(room) is owned:
                        del self.owned[room]
                        await self.state.release(room, owned.lease)
                    continue
                if await self.state.renew(room, owned.lease):
                    continue
                # Expired (Redis restarted, or was away longer than a lease): claim it again.
                lease = await self.state.claim(room, self.node_id)
            except StateUnavailable as exc:
                self._outage(exc)
                return
            if lease.node_id == self.node_id:
                owned.lease = lease
                logger.info("room %s: lease taken again (epoch %d)", room, lease.epoch)
                continue
            if self.owned.get(room) is not owned:
                continue  # a renewal running beside this one (after a pause) got there first
            del self.owned[room]
            logger.warning(
                "room %s moved to %s (epoch %d): closing it here", room, lease.node_id, lease.epoch
            )
            for conn in signaling.room_connections(room):
                self.service.signaling.enqueue(conn, Close(conn, CLOSE_SERVICE_RESTART, "room moved"))

    # -- relaying -------------------------------------------------------------------------------

    def verify_relay(self, header: str) -> str | None:
        """The client IP of a valid relay header addressed to this node."""
        return verify_relay_header(self._key, self.node_id, header, self._clock())

    async def relay(
        self, client: web.WebSocketResponse, home: NodeInfo, first: bytes, client_ip: str, room: str
    ) -> bool:
        """Relay a participant's socket to its room's home until either side closes. False when the
        home could not be reached and this node took the room over: the join is to be served here.
        Raises :class:`StateUnavailable` when the room can neither be reached nor taken over."""
        assert self._session is not None
        for _ in range(RELAY_ATTEMPTS):
            header = relay_header(self._key, home.node_id, client_ip, self._clock())
            self.relays += 1
            try:
                if not await relay_frames(
                    client,
                    self._session,
                    home.node_url + "/v1/ws",
                    header,
                    first,
                    self._client_ssl,
                    self._max_msg_size,
                ):
                    self._unreachable[home.node_id] = self._clock()
                return True
            except HomeUnreachable as exc:
                logger.warning("room %s: %s", room, exc)
                self._unreachable[home.node_id] = self._clock()
            finally:
                self.relays -= 1
            next_home = await self.route(room, relayed=False)
            if next_home is None:
                return False
            home = next_home
        raise StateUnavailable(f"room {room}: no home could be reached")

    # -- revocations and chat -------------------------------------------------------------------

    def publish(self, output: RevokeTurn | ChatPosted) -> None:
        """Hand a revocation or a chat message to the shared state, asynchronously and in order:
        no call waits on Redis."""
        if not self.shared:
            return
        state = self.state
        if isinstance(output, RevokeTurn):
            participant, until = output.participant, output.until
            self._outbox.put(lambda: state.revoke(participant, until))
        else:
            room, message = output.room, output.message
            self._outbox.put(lambda: state.append_chat(room, message.epoch, message.seq, encode(message)))

    async def _write_outbox(self) -> None:
        outbox, backoff = self._outbox, RETRY_FIRST
        while True:
            await outbox.wake.wait()
            while outbox.items:
                try:
                    await outbox.items[0]()
                except StateUnavailable as exc:
                    self._outage(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(RETRY_MAX, backoff * 2)
                    continue
                outbox.items.popleft()
                backoff = RETRY_FIRST
            outbox.wake.clear()

    def _revoked_elsewhere(self, participant: str, until: float) -> None:
        if until > self._clock():
            self.service.revoke_turn(participant, until)

    def network_nodes(self) -> NetworkDescription:
        """``/v1/network`` of a cluster: every live node (this one at least)."""
        live = dict(self.live)
        live.setdefault(self.node_id, self.describe())
        return NetworkDescription.from_registry(self.public_url, list(live.values()), self.node_id)

    def metrics(self) -> dict[str, tuple[str, str, int]]:
        """For ``--metrics-listen``: name → (type, help, value)."""
        return {
            "meet443_cluster_live_nodes": ("gauge", "Live nodes in the registry.", len(self.live)),
            "meet443_cluster_rooms_homed": ("gauge", "Rooms whose lease this node holds.", len(self.owned)),
            "meet443_cluster_relays": ("gauge", "Signaling sockets relayed to other nodes.", self.relays),
            "meet443_cluster_draining": ("gauge", "1 while the node drains.", int(self.draining)),
            "meet443_cluster_takeovers_total": (
                "counter",
                "Rooms restored here from a home that died.",
                self.takeovers,
            ),
            "meet443_cluster_outbox": (
                "gauge",
                "Writes waiting for the shared state.",
                len(self._outbox.items),
            ),
            "meet443_cluster_outbox_dropped_total": (
                "counter",
                "Writes dropped because the outbox was full.",
                self._outbox.dropped,
            ),
            "meet443_cluster_state_up": (
                "gauge",
                "1 while the shared state answers.",
                int(self._down_since is None),
            ),
        }
