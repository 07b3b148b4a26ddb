"""The control process's side of ``meet443 serve --workers N``: the media workers' sockets and lives.

:class:`MediaWorkers` opens every UDP socket the workers serve, once, and keeps its own copy for
the life of the server: the N sockets of the main port's SO_REUSEPORT group (closing one would
re-hash the flows of the others), the SFU ports ``BASE+k`` and the forwarding inboxes. It spawns
worker k (:mod:`meet443.aio.worker`) with its sockets, and when a worker dies it logs it, counts
it (``meet443_worker_restarts_total``), spawns it again on the very same sockets and has the node
tell the participants of that worker's rooms ``sfu-restart``
(:meth:`~meet443.node.NodeCore.worker_died`).

TURN over TCP and TLS: after the sniff, the accepted socket itself goes to a worker
(``SCM_RIGHTS``); for TLS that is before the handshake, unless the ClientHello's ALPN says HTTPS
(:func:`~meet443.aio.tcp.is_http_alpn`), and the worker terminates TLS with the certificate it
is told of (:class:`~meet443.ipc.TlsFiles`, again after each SIGHUP). HTTP that a worker finds
inside such a connection comes back decrypted (:class:`~meet443.ipc.HttpConnection`) and is
served here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
import time
import zlib
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from meet443 import ipc
from meet443.aio.http import render_metrics, sum_expositions
from meet443.aio.ipc import IpcChannel, channel_pair, inbox_pair
from meet443.aio.node import NodeService
from meet443.aio.sockets import MAIN_UDP_BUFFER_BYTES, enlarge_udp_buffers
from meet443.aio.turn import bind_port_block
from meet443.config import ServeConfig
from meet443.exceptions import StartupError
from meet443.node import Output, ToWorker
from meet443.proto.addresses import Transport, address_key
from meet443.proto.signaling.room import LeftSfu, RevokeTurn, ToSfu
from meet443.sfu.conference import RoomSignal, Signal
from meet443.workers import ClusterTurnState, share_of, split_range

logger = logging.getLogger(__name__)

#: How long a worker has to answer a metrics query before the scrape goes on without it.
METRICS_TIMEOUT = 2.0
#: After SIGTERM, how long a worker has to close before it is killed.
STOP_SECONDS = 3.0
#: How long the workers may take to start.
START_SECONDS = 30.0
#: A worker that dies within this long of its spawn is respawned after this long, not at once,
#: so that a worker that cannot start does not spin the machine.
RESPAWN_BACKOFF = 1.0


def main_group(host: str, count: int) -> list[socket.socket]:
    """The main UDP port's ``count`` SO_REUSEPORT sockets, one per worker, not yet bound: they
    are bound (:func:`bind_group`) once every worker serves its own, so that the port answers
    as soon as it is open."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    group = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(count)]
    for sock in group:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        enlarge_udp_buffers(sock, MAIN_UDP_BUFFER_BYTES)
        sock.setblocking(False)
    return group


def bind_group(group: list[socket.socket], host: str, port: int) -> None:
    for sock in group:
        sock.bind((host, port))


@dataclass
class _Worker:
    index: int
    main: socket.socket
    sfu: socket.socket
    inbox: socket.socket
    channel: IpcChannel | None = None
    pid: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    spawned_at: float = 0.0
    #: Relay ports it holds and allocations it holds by quota key, as it told us.
    relays: set[int] = field(default_factory=set)
    quotas: dict[str, int] = field(default_factory=dict)


class MediaWorkers:
    """N media worker processes and their sockets; see the module docstring."""

    def __init__(
        self, config: ServeConfig, pending_cap: int, pending_share: int, tls_files: ipc.TlsFiles
    ) -> None:
        """``pending_cap`` and ``pending_share``: the sniffing port's pending connections in all
        and per address, which the workers share for the connections handed to them;
        ``tls_files``: the TCP port's certificate and key, for the workers' TLS."""
        count = config.workers
        self.tls_files = tls_files
        #: Serves HTTP that a worker found inside TLS (:meth:`SniffingTcpPort.serve_bridged_http`),
        #: once the TCP port is up.
        self.serve_http: Callable[[socket.socket, tuple[str, int], float], None] | None = None
        self.pending_cap = pending_cap
        self.pending_share = pending_share
        self.config = config
        self.relay_slices = split_range(config.relay_ports, count)
        main = main_group(config.listen, count)
        sfu = bind_port_block(
            config.listen,
            config.other_udp_port,
            count,
            config.relay_ports,
            fixed=config.other_udp_port_fixed,
            avoid=config.port,
        )
        self.sfu_ports = [sock.getsockname()[1] for sock in sfu]
        inboxes = [inbox_pair() for _ in range(count)]
        self._senders = [sending for sending, _ in inboxes]
        self.workers = [_Worker(k, main[k], sfu[k], receiving) for k, (_, receiving) in enumerate(inboxes)]
        self.restarts = 0
        self.service: NodeService | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._queries: dict[int, asyncio.Future[str]] = {}
        self._query_ids = itertools.count(1)
        self.cluster_turn = ClusterTurnState()

    def settings(self, index: int) -> ipc.WorkerSettings:
        config = self.config
        return ipc.WorkerSettings(
            index=index,
            count=len(self.workers),
            listen=config.listen,
            public_ip=config.public_ip,
            public_ipv6=config.public_ipv6,
            port=config.port,
            sfu_ports=self.sfu_ports,
            relay_ports=self.relay_slices[index],
            all_relay_ports=config.relay_ports,
            realm=config.realm,
            turn_secret=config.turn_secret,
            turn_users=dict(config.turn_users),
            allow_peers=[str(network) for network in config.allow_peers],
            max_allocations_per_user=config.max_allocations_per_user,
            max_allocations=share_of(config.max_allocations, len(self.workers)),
            allocation_bandwidth=config.allocation_bandwidth,
            unauth_rate=config.unauth_rate,
            sfu_last_n=config.sfu_last_n,
            sfu_nack=config.sfu_nack,
            log_level=config.log_level,
            max_pending=share_of(self.pending_cap, len(self.workers)),
            pending_per_address=share_of(self.pending_share, len(self.workers)),
            tls_files=self.tls_files,
        )

    # -- lives ----------------------------------------------------------------------------------

    async def start(self, service: NodeService) -> None:
        """Spawn every worker and wait until each serves its sockets; their messages go to
        ``service``'s node."""
        self.service = service
        for worker in self.workers:
            self._spawn(worker)
        try:
            await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in self.workers)), START_SECONDS)
        except TimeoutError:
            raise StartupError(f"the media workers did not start within {START_SECONDS:.0f} s") from None
        bind_group([w.main for w in self.workers], self.config.listen, self.config.port)

    def _spawn(self, worker: _Worker) -> None:
        ours, theirs = channel_pair()
        worker.channel = IpcChannel(ours, lambda m, fds: self._receive(worker, m, fds), lambda: None)
        fds = [worker.main.fileno(), worker.sfu.fileno(), worker.inbox.fileno()]
        worker.channel.send(
            ipc.Hello(ipc.VERSION, self.settings(worker.index)), fds + [s.fileno() for s in self._senders]
        )
        worker.channel.send(self.cluster_turn.current)
        # What the others hold, so that its ledger and its relay guard start complete.
        for other in self.workers:
            if other is not worker:
                if other.relays:
                    worker.channel.send(ipc.RelaysChanged(other.index, sorted(other.relays), []))
                for key, held in other.quotas.items():
                    worker.channel.send(ipc.QuotaHeld(other.index, key, held))
        worker.spawned_at = time.monotonic()
        worker.ready.clear()
        self._run(self._live(worker, theirs))

    async def _live(self, worker: _Worker, theirs: socket.socket) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "meet443.aio.worker", str(theirs.fileno()), pass_fds=(theirs.fileno(),)
            )
        except OSError as exc:  # out of processes or memory: try again, as if it had died
            theirs.close()
            logger.error("worker %d could not be started: %s", worker.index, exc)
            pid, why = 0, "not started"
        else:
            theirs.close()
            worker.pid = pid = process.pid
            logger.info("worker %d started (pid %d)", worker.index, pid)
            code = await process.wait()
            why = f"signal {-code}" if code < 0 else f"exit code {code}"
        if self._stopping:
            return
        self.restarts += 1
        logger.error(
            "worker %d (pid %d) died (%s); respawning it on the same sockets", worker.index, pid, why
        )
        self._forget(worker)
        lived = time.monotonic() - worker.spawned_at
        if lived < RESPAWN_BACKOFF:
            await asyncio.sleep(RESPAWN_BACKOFF - lived)
            if self._stopping:
                return
        self._spawn(worker)
        service = self.service
        assert service is not None
        service.dispatch(service.node.worker_died(worker.index, time.time()))

    def _forget(self, worker: _Worker) -> None:
        """What a dead worker held is gone: its allocations, relays and pending connections."""
        if worker.channel is not None:
            worker.channel.close()
            worker.channel = None
        closed = sorted(worker.relays)
        worker.relays.clear()
        worker.quotas.clear()
        for other in self.workers:
            if other is not worker and other.channel is not None:
                other.channel.send(ipc.WorkerGone(worker.index))
                if closed:
                    other.channel.send(ipc.RelaysChanged(worker.index, [], closed))

    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """SIGTERM every worker, wait for them (killing the late), close every socket."""
        self._stopping = True
        pids = [w.pid for w in self.workers if w.pid is not None]
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=STOP_SECONDS)
            if late:
                for pid in pids:
                    _signal(pid, signal.SIGKILL)
                await asyncio.wait(late, timeout=STOP_SECONDS)
        for worker in self.workers:
            if worker.channel is not None:
                worker.channel.close()
            for sock in (worker.main, worker.sfu, worker.inbox):
                sock.close()
        for sock in self._senders:
            sock.close()

    # -- messages -------------------------------------------------------------------------------

    def to_process(self, output: Output) -> None:
        """The control node's :class:`ToWorker` outputs, as channel messages."""
        if not isinstance(output, ToWorker):
            return
        request = output.message
        message: ipc.IpcMessage
        if isinstance(request, ToSfu):
            message = ipc.SfuCall(request.room, request.participant, request.message)
        elif isinstance(request, LeftSfu):
            message = ipc.SfuLeave(request.room, request.participant)
        else:
            assert isinstance(request, RevokeTurn)
            message = ipc.Revoke(request.participant, request.until)
        targets = self.workers if output.worker is None else [self.workers[output.worker]]
        for worker in targets:
            if worker.channel is not None:
                worker.channel.send(message)

    def set_turn(
        self,
        nodes: Iterable[tuple[Iterable[str], Iterable[int], tuple[int, int]]],
        alternates: Iterable[tuple[str, int]] | None,
    ) -> None:
        """The cluster link's TURN settings (docs/cluster.md), to every worker when they change."""
        message = self.cluster_turn.update(nodes, alternates)
        if message is not None:
            for worker in self.workers:
                if worker.channel is not None:
                    worker.channel.send(message)

    def reload_tls(self, files: ipc.TlsFiles) -> None:
        """The TCP port's certificate was reloaded (SIGHUP): every worker loads it too, and a
        respawned one starts with it."""
        self.tls_files = files
        for worker in self.workers:
            if worker.channel is not None:
                worker.channel.send(files)

    def _receive(self, worker: _Worker, message: ipc.IpcMessage, fds: list[int]) -> None:
        if isinstance(message, ipc.HttpConnection) and len(fds) == 1 and self.serve_http is not None:
            self.serve_http(socket.socket(fileno=fds[0]), (message.peer[0], message.peer[1]), message.age)
            return
        for fd in fds:  # descriptors no message of this kind should carry
            os.close(fd)
        service = self.service
        assert service is not None
        if isinstance(message, ipc.Ready):
            logger.info("worker %d ready (pid %d)", worker.index, message.pid)
            worker.ready.set()
        elif isinstance(message, ipc.SfuSignal):
            signal_ = Signal(message.room, message.participant, message.message)
            service.dispatch(service.node.receive_from_worker(signal_))
        elif isinstance(message, ipc.RoomSignal):
            service.dispatch(service.node.receive_from_worker(RoomSignal(message.room, message.message)))
        elif isinstance(message, ipc.RelaysChanged) and message.worker == worker.index:
            worker.relays.difference_update(message.closed)
            worker.relays.update(message.opened)
            self._tell_others(worker, message)
        elif isinstance(message, ipc.QuotaHeld) and message.worker == worker.index:
            if message.held > 0:
                worker.quotas[message.key] = message.held
            else:
                worker.quotas.pop(message.key, None)
            self._tell_others(worker, message)
        elif isinstance(message, ipc.MetricsReport):
            future = self._queries.pop(message.query, None)
            if future is not None and not future.done():
                future.set_result(message.text)

    def _tell_others(self, worker: _Worker, message: ipc.IpcMessage) -> None:
        for other in self.workers:
            if other is not worker and other.channel is not None:
                other.channel.send(message)

    # -- TURN over TCP and TLS ------------------------------------------------------------------

    def hand_over(
        self,
        sock: socket.socket,
        kind: Transport,
        peer: tuple[str, int],
        accepted_at: float,
        settled: Callable[[], None],
    ) -> None:
        """Give a TURN client's connection to a worker; our copy is closed. It is no longer pending
        here (``settled``): the worker counts it against its share until it allocates.

        The worker is chosen by the client's address (IPv6: its /64), so one client's TCP and TLS
        allocations live together: the two of a network check (``meet443 check``, /check), which
        may only relay to each other, then need no word from another worker first."""
        count = len(self.workers)
        first = zlib.crc32(address_key(peer[0]).encode()) % count
        worker: _Worker | None = None
        for k in range(count):
            worker = self.workers[(first + k) % count]
            if worker.channel is not None:
                break
        if worker is not None and worker.channel is not None:
            age = asyncio.get_running_loop().time() - accepted_at
            worker.channel.send(ipc.TurnConnection(kind.value, peer, age), [sock.fileno()])
        sock.close()
        settled()

    # -- metrics --------------------------------------------------------------------------------

    async def metrics(self) -> str:
        """The control process's metrics and every worker's, summed."""
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[str]] = []
        for worker in self.workers:
            if worker.channel is not None:
                query = next(self._query_ids)
                future: asyncio.Future[str] = loop.create_future()
                self._queries[query] = future
                waits.append(future)
                worker.channel.send(ipc.MetricsQuery(query))
        texts: list[str] = []
        if waits:
            done, _ = await asyncio.wait(waits, timeout=METRICS_TIMEOUT)
            texts = [f.result() for f in done]
        service = self.service
        assert service is not None
        own = render_metrics(None, service.node.signaling, None)
        restarts = (
            "# HELP meet443_worker_restarts_total Media workers that died and were respawned.\n"
            "# TYPE meet443_worker_restarts_total counter\n"
            f"meet443_worker_restarts_total {self.restarts}\n"
            "# HELP meet443_workers Media worker processes.\n"
            "# TYPE meet443_workers gauge\n"
            f"meet443_workers {len(self.workers)}\n"
        )
        return sum_expositions([own, restarts, *texts])


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
