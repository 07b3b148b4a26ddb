"""asyncio adapter for :class:`~meet443.node.NodeCore`: it moves bytes and arms one timer.

Every socket of the node feeds the core through here (the two UDP ports, the relay sockets, TURN
over TCP/TLS, the signaling WebSockets), and everything the core returns leaves through
:meth:`NodeService.dispatch`. The timer is one ``loop.call_at`` at the core's deadline, re-armed
when it moves earlier; nothing polls.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, cast

from meet443.aio.signaling import SignalingEndpoint
from meet443.aio.turn import RelayPool, StreamTurnProtocol, UdpPortProtocol
from meet443.exceptions import StoreUnavailable
from meet443.node import NodeCore, Output
from meet443.proto.addresses import Address, ServerPort, ToClientFrom, Transport
from meet443.proto.signaling.admission import Refusal, RoomAdmission
from meet443.proto.signaling.room import (
    ChatPosted,
    Close,
    LookupRoom,
    MeetingEnded,
    RevokeTurn,
    RoomChanged,
    Send,
)
from meet443.proto.turn.allocation import ClientFlow
from meet443.proto.turn.server import ToClient, ToPeer
from meet443.state.rooms import RoomStateStore

if TYPE_CHECKING:
    from meet443.aio.cluster import Cluster

logger = logging.getLogger(__name__)

#: Asked on every join that is not a resume: ``(room, room_key, now)``.
Directory = Callable[[str, str | None, float], Awaitable[RoomAdmission | Refusal]]

#: A slow TCP/TLS client must not make us buffer media without bound: past this, packets drop.
STREAM_WRITE_LIMIT = 1 << 20
#: RFC 6455 §7.4.1: the server hit an unexpected condition (the directory failed).
CLOSE_INTERNAL_ERROR = 1011
#: RFC 6455 §7.4.1 (IANA registry): try again later (the meetings database cannot be reached now).
CLOSE_TRY_AGAIN_LATER = 1013
#: After a timer raised (a bug), when to run the timers again: the SFU's tick.
RETRY_AFTER_FAILURE = 0.02
#: Changes to one room within this long are written as one snapshot (a burst of chat, a join's
#: several steps). It is what a crash can lose; SIGTERM writes everything (BENCHMARKS.md).
SNAPSHOT_COALESCE_SECONDS = 0.1
_UDP = Transport.UDP


class NodeService:
    """One node's sockets around its :class:`NodeCore`."""

    def __init__(
        self,
        node: NodeCore,
        relays: RelayPool | None,
        *,
        directory: Directory,
        public_url: str,
        on_meeting_ended: Callable[[str], Awaitable[None]] | None = None,
        rooms: RoomStateStore | None = None,
        clock: Callable[[], float] = time.time,
        to_process: Callable[[Output], None] | None = None,
    ) -> None:
        """``rooms``: where room snapshots are written through (docs/signaling.md "Node restarts");
        None keeps rooms in memory only. ``to_process`` takes the outputs that leave for another
        process (``--workers``): :class:`~meet443.node.ToWorker` and
        :class:`~meet443.node.Forward`, and a worker's SFU signals."""
        self.relays = relays
        self._to_process = to_process
        self.node = node
        if relays is not None and node.turn is not None:
            # The pool is made before the TURN core that uses it, so it learns its listeners here.
            relays.receive = self._from_peer
            relays.drop = node.turn.counters.drop
        self.signaling = SignalingEndpoint(self, public_url)
        #: The UDP ports' transports, by :class:`ServerPort`.
        self.udp: list[asyncio.DatagramTransport | None] = [None, None]
        #: TURN over TCP/TLS, by the connection id in its :class:`ClientFlow`.
        self.streams: dict[int, asyncio.Transport] = {}
        self._connection_ids = 0
        self._directory = directory
        self._on_meeting_ended = on_meeting_ended
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._armed = float("inf")
        #: The node's link to the others (docs/cluster.md), set by :class:`~meet443.aio.cluster.Cluster`.
        self.cluster: Cluster | None = None
        self._rooms = rooms
        #: Rooms changed since the last write, and the one call that writes them.
        self._dirty: set[str] = set()
        self._flush: asyncio.TimerHandle | None = None
        #: One thread: the store's writes block, and must land in the order the rooms changed.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="room-state") if rooms is not None else None

    # -- inputs ---------------------------------------------------------------------------------

    def datagram(self, port: ServerPort, data: bytes, source: Address) -> None:
        """A datagram on one of our UDP ports."""
        self.dispatch(self.node.receive_datagram(port, data, source, self._clock()))

    def _from_peer(self, relay: Address, peer: Address, data: bytes) -> None:
        out = self.node.receive_from_peer(relay, peer, data, self._clock())
        if out is not None:
            self.to_client(out.flow, out.data)

    def stream_opened(
        self, transport: asyncio.Transport, kind: Transport, peer: Address | None = None
    ) -> ClientFlow:
        """A TURN client's TCP or TLS connection: its flow, for :meth:`stream_message`. ``peer``:
        the client, when ``transport`` is a pipe from the control process that holds its TLS."""
        peer = peer or transport.get_extra_info("peername")
        assert peer is not None
        self._connection_ids += 1
        flow = ClientFlow(kind, (str(peer[0]), int(peer[1])), self._connection_ids)
        self.streams[flow.connection] = transport
        return flow

    def stream_message(self, flow: ClientFlow, message: bytes) -> None:
        self.dispatch(self.node.receive_stream(flow, message, self._clock()))

    def stream_closed(self, flow: ClientFlow) -> None:
        self.streams.pop(flow.connection, None)
        self.node.stream_closed(flow, self._clock())

    def drop(self, reason: str) -> None:
        """A datagram or stream the sockets themselves lost, counted with TURN's drops."""
        turn = self.node.turn
        if turn is not None:
            turn.counters.drop(reason)

    def stream_protocol(
        self, kind: Transport, accepted_at: float, settled: Callable[[], None]
    ) -> StreamTurnProtocol:
        """TURN over a TCP or TLS connection the sniffing port accepted at ``accepted_at``;
        ``settled`` tells the port it is no longer pending (it holds an allocation, or it ended)."""
        return StreamTurnProtocol(self, kind, accepted_at, settled)

    def signaling_connect(self, conn: int, remote_ip: str) -> None:
        now = self._clock()
        if self.cluster is not None and self.cluster.paused(now):
            self.cluster.hold(conn, lambda: self.signaling_connect(conn, remote_ip))
            return
        self.dispatch(self.node.connect(conn, remote_ip, now))

    def signaling_message(self, conn: int, data: bytes | str, *, binary: bool = False) -> None:
        now = self._clock()
        if self.cluster is not None and self.cluster.paused(now):
            # docs/cluster.md "Failover": after a pause, nothing is served before the leases
            # say which rooms are still this node's.
            self.cluster.hold(conn, lambda: self.signaling_message(conn, data, binary=binary))
            return
        self.dispatch(self.node.receive_signaling(conn, data, now, binary=binary))

    def signaling_closed(self, conn: int) -> None:
        now = self._clock()
        if self.cluster is not None and self.cluster.paused(now):
            self.cluster.hold(conn, lambda: self.signaling_closed(conn))
            return
        self.dispatch(self.node.disconnected(conn, now))

    def revoke_turn(self, participant: str, until: float) -> None:
        """Another node revoked a participant's TURN credentials (docs/cluster.md)."""
        self.dispatch(self.node.revoke_turn(participant, until, self._clock()))

    def end_meeting(self, room: str) -> None:
        """The meeting of ``room`` was deleted through the API: send everyone in it away."""
        self.dispatch(self.node.end_meeting(room, self._clock()))

    # -- outputs --------------------------------------------------------------------------------

    def dispatch(self, outputs: list[Output]) -> None:
        # Once per forwarded copy: locals, no cast, no global or attribute lookups in the loop.
        udp, plain = self.udp, tuple
        for output in outputs:
            if output.__class__ is plain:  # the SFU's data path: (port, address, data)
                port, address, payload = output  # type: ignore[misc]
                transport = udp[port]  # type: ignore[index]
                if transport is not None:
                    transport.sendto(payload, address)
            else:
                self._dispatch_one(output)
        if self.node.deadline < self._armed:
            self._arm()

    def _dispatch_one(self, output: Output) -> None:
        if isinstance(output, ToPeer):
            assert self.relays is not None  # TURN, which sends these, has its relay pool
            self.relays.send(output.relay, output.peer, output.data)
        elif isinstance(output, ToClientFrom):
            transport = self.udp[output.port]
            if transport is not None:
                transport.sendto(output.data, output.address)
        elif isinstance(output, ToClient):
            self.to_client(output.flow, output.data)
        elif isinstance(output, Send):
            self.signaling.enqueue(output.conn, output.payload)
        elif isinstance(output, Close):
            self.signaling.enqueue(output.conn, output)
        elif isinstance(output, LookupRoom):
            self._spawn(self._lookup(output))
        elif isinstance(output, RoomChanged):
            if self._rooms is not None:
                self._dirty.add(output.room)
                if self._flush is None:
                    loop = asyncio.get_running_loop()
                    self._flush = loop.call_later(SNAPSHOT_COALESCE_SECONDS, self.write_rooms)
        elif isinstance(output, MeetingEnded):
            if self._on_meeting_ended is not None:
                self._spawn(self._on_meeting_ended(output.room))
        elif isinstance(output, RevokeTurn | ChatPosted):
            if self.cluster is not None:
                self.cluster.publish(output)
        elif self._to_process is not None:
            self._to_process(output)

    def to_client(self, flow: ClientFlow, data: bytes) -> None:
        if flow.transport is _UDP:
            transport = self.udp[ServerPort.MAIN]
            if transport is not None:
                transport.sendto(data, flow.address)
            return
        stream = self.streams.get(flow.connection)
        if stream is None or stream.is_closing():
            return
        if stream.get_write_buffer_size() > STREAM_WRITE_LIMIT:
            turn = self.node.turn
            assert turn is not None
            turn.counters.drop("stream_backlog")
            return
        stream.write(data)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lookup(self, lookup: LookupRoom) -> None:
        try:
            answer = await self._directory(lookup.room, lookup.room_key, self._clock())
        except StoreUnavailable as exc:
            logger.warning("conn %d: directory lookup for room %s: %s", lookup.conn, lookup.room, exc)
            self.signaling.enqueue(
                lookup.conn, Close(lookup.conn, CLOSE_TRY_AGAIN_LATER, "directory unavailable, try again")
            )
            return
        except Exception:
            # The room key is never logged; the traceback carries no arguments.
            logger.exception("conn %d: directory lookup for room %s failed", lookup.conn, lookup.room)
            self.signaling.enqueue(
                lookup.conn, Close(lookup.conn, CLOSE_INTERNAL_ERROR, "directory unavailable")
            )
            return
        self.dispatch(self.node.admit(lookup.conn, answer, self._clock()))

    # -- room snapshots -------------------------------------------------------------------------

    def write_rooms(self) -> None:
        """Hand the snapshots of the rooms changed since the last call to the store's thread: taken
        now, on the loop, so each is consistent; written there, in order."""
        self._flush = None
        if self._rooms is None or self._writer is None:
            return
        dirty, self._dirty = self._dirty, set()
        now = self._clock()
        for room in sorted(dirty):
            snapshot = self.node.signaling.snapshot(room)
            self._writer.submit(self._write_room, room, None if snapshot is None else bytes(snapshot), now)

    def _write_room(self, room: str, data: bytes | None, now: float) -> None:
        assert self._rooms is not None
        try:
            if data is None:
                self._rooms.delete(room)
            else:
                self._rooms.save(room, data, now)
        except Exception:
            # A full disk costs resuming after a restart, not the meeting going on now.
            logger.exception("room %s: its snapshot could not be written", room)

    async def flush_rooms(self) -> None:
        """Write every pending snapshot and wait until the store has them (SIGTERM)."""
        if self._flush is not None:
            self._flush.cancel()
        self.write_rooms()
        if self._writer is not None:
            # One worker, first in first out: this runs after every write queued before it.
            await asyncio.get_running_loop().run_in_executor(self._writer, lambda: None)

    # -- the timer ------------------------------------------------------------------------------

    def _arm(self) -> None:
        """One ``call_at`` at the core's deadline. The core's clock is ``time.time()``; the loop's
        is monotonic, so the deadline is taken as a delay from now."""
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.node.deadline
        self._armed = deadline
        if deadline == float("inf"):
            self._timer = None
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, deadline - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._armed = float("inf")
        try:
            self.dispatch(self.node.handle_timer(self._clock()))
        except Exception:
            # A bug in one core's expiry must not stop the others' timers: log it, try again soon.
            logger.exception("timer failed")
            self._armed = self._clock() + RETRY_AFTER_FAILURE
            self._timer = asyncio.get_running_loop().call_later(RETRY_AFTER_FAILURE, self._on_timer)
            return
        if self._timer is None and self.node.deadline != float("inf"):
            self._arm()

    # -- life cycle -----------------------------------------------------------------------------

    async def listen_udp(self, port: ServerPort, sock: socket.socket) -> None:
        """Serve ``port`` on the bound ``sock``."""
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: UdpPortProtocol(self, port), sock=sock)

    def attach_udp(self, port: ServerPort, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport does not subclass asyncio.DatagramTransport, so no isinstance here.
        self.udp[port] = cast(asyncio.DatagramTransport, transport)

    async def close(self) -> None:
        """Stop the timer, close every signaling socket (1012), write the rooms' snapshots, close
        every TURN connection and relay."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        await self.signaling.close()
        await self.flush_rooms()
        if self._writer is not None:
            # Its queue is empty (flush_rooms waited for it); what changes from here on (sockets
            # closing) is not durable, and is not written.
            self._writer.shutdown(wait=False)
            self._writer = None
        for port in (ServerPort.OTHER, ServerPort.MAIN):
            transport = self.udp[port]
            if transport is not None:
                transport.close()
        for stream in list(self.streams.values()):
            stream.close()
        if self.relays is not None:
            self.relays.close_all()
