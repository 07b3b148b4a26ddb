"""A media worker process of ``meet443 serve --workers N``: ``python -m meet443.aio.worker FD``.

``FD`` is its end of the channel to the control process (:mod:`meet443.ipc`). The first message,
:class:`~meet443.ipc.Hello`, brings its settings and its sockets, which the control process opened
and keeps (so a respawned worker serves the very same sockets): its socket of the main UDP port's
SO_REUSEPORT group, its SFU port, its forwarding inbox and every worker's inbox. Then it runs a
:class:`~meet443.node.NodeCore` with a TURN core and an SFU and no signaling, in a
:class:`~meet443.aio.node.NodeService`, until SIGTERM or until the control process is gone.

TURN clients' TCP connections come from the control process's sniff (:mod:`meet443.aio.tcp`).
TLS ones come before their handshake: the worker terminates TLS with the TCP port's certificate,
and if the first decrypted bytes are HTTP rather than STUN (a client without ALPN) it sends the
control process one end of a socketpair and pipes the plaintext through it (:class:`HttpBridge`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import cast

import uvloop

from meet443 import ipc
from meet443.aio.certs import make_server_ssl_context
from meet443.aio.http import render_metrics
from meet443.aio.ipc import MAX_FDS, MAX_RECORD, ForwardingInbox, IpcChannel, forward
from meet443.aio.node import STREAM_WRITE_LIMIT, NodeService
from meet443.aio.tcp import TLS_HANDSHAKE_TIMEOUT, FirstBytesRouter
from meet443.aio.turn import RelayPool, StreamTurnProtocol
from meet443.app import build_turn_server, sfu_addresses
from meet443.config import ServeConfig
from meet443.exceptions import ParseError
from meet443.node import Forward, NodeCore, Output
from meet443.proto.addresses import Address, ServerPort, Transport, address_key
from meet443.proto.dtls.certificate import DtlsCertificate
from meet443.proto.shares import Grant, LocalSharedCap, RefusalTally
from meet443.proto.signaling.admission import Refusal, RoomAdmission
from meet443.proto.signaling.room import LeftSfu, RevokeTurn, ToSfu
from meet443.sfu.conference import Conference, RoomSignal, Signal
from meet443.workers import MainPortRoutes, ReplicatedLedger, apply_cluster_turn, ufrag_tag

logger = logging.getLogger("meet443.worker")

_TRANSPORTS = {"tcp": Transport.TCP, "tls": Transport.TLS}


class _WorkerRelayPool(RelayPool):
    """Relay sockets that tell the control process which ports they hold."""

    worker = 0
    #: The channel to the control process, once it is up.
    tell: IpcChannel | None = None

    def open(self, family: int, *, even: bool = False, port: int | None = None) -> Address | None:
        relay = super().open(family, even=even, port=port)
        if relay is not None and self.tell is not None:
            self.tell.send(ipc.RelaysChanged(self.worker, [relay[1]], []))
        return relay

    def close(self, relay: Address) -> None:
        if relay in self.sockets and self.tell is not None:
            self.tell.send(ipc.RelaysChanged(self.worker, [], [relay[1]]))
        super().close(relay)


def serve_config(settings: ipc.WorkerSettings) -> ServeConfig:
    """The :class:`ServeConfig` the shared builders read, from what the worker was told."""
    return ServeConfig(
        listen=settings.listen,
        port=settings.port,
        public_ip=settings.public_ip,
        public_ipv6=settings.public_ipv6,
        relay_ports=settings.all_relay_ports,
        turn_secret=settings.turn_secret,
        turn_users=types.MappingProxyType(dict(settings.turn_users)),
        allow_peers=tuple(ipaddress.ip_network(cidr) for cidr in settings.allow_peers),
        public_url="",
        realm=settings.realm,
        data_dir=Path(),
        max_allocations_per_user=settings.max_allocations_per_user,
        max_allocations=settings.max_allocations,
        allocation_bandwidth=settings.allocation_bandwidth,
        unauth_rate=settings.unauth_rate,
        sfu_last_n=settings.sfu_last_n,
        sfu_nack=settings.sfu_nack,
    )


async def _no_directory(room: str, room_key: str | None, now: float) -> RoomAdmission | Refusal:
    raise AssertionError("a media worker has no signaling")


class MediaWorker:
    """One worker: its node, its sockets, its channel; see the module docstring."""

    def __init__(self, hello: ipc.Hello, fds: list[int], stop: asyncio.Event) -> None:
        settings = hello.settings
        self.index = index = settings.index
        self.stop = stop
        main, sfu, inbox, *inboxes = (socket.socket(fileno=fd) for fd in fds)
        self._inboxes = inboxes
        config = serve_config(settings)
        relays = _WorkerRelayPool(
            settings.listen, settings.public_ip, settings.relay_ports, settings.public_ipv6
        )
        relays.worker = index
        self.ledger = ReplicatedLedger(self._quota_changed)
        turn = build_turn_server(config, relays, self.ledger)
        for port in settings.sfu_ports:
            turn.policy.allow_server_port(port)  # a relay's hop to any worker's SFU
        conference = Conference(
            DtlsCertificate.generate(time.time(), os.urandom),
            sfu_addresses(config, settings.sfu_ports[index]),
            os.urandom,
            last_n=settings.sfu_last_n,
            nack=settings.sfu_nack,
            ufrag_tag=ufrag_tag(index),
        )
        self.node = NodeCore(None, turn, conference, routes=MainPortRoutes(index, settings.count))
        self.service = NodeService(
            self.node, relays, directory=_no_directory, public_url="", to_process=self._to_process
        )
        self._sockets = (main, sfu)
        self.channel: IpcChannel | None = None
        self.relays = relays
        self.inbox = inbox
        #: Handed-over connections not yet allocated (aio/tcp.py: "pending").
        self.pending = LocalSharedCap(settings.max_pending, settings.pending_per_address)
        self.refusals = RefusalTally(logger, "handed-over TCP connections refused")
        files = settings.tls_files
        # RFC 7443 §6: a client offering stun.turn (and http/1.1, as coturn's do) is told TURN.
        self.ssl_context = make_server_ssl_context(
            Path(files.cert), Path(files.key), alpn_protocols=("stun.turn", "http/1.1")
        )

    async def start(self, channel_sock: socket.socket) -> None:
        self.channel = IpcChannel(channel_sock, self._receive, self.stop.set)
        self.relays.tell = self.channel
        main, sfu = self._sockets
        await self.service.listen_udp(ServerPort.MAIN, main)
        await self.service.listen_udp(ServerPort.OTHER, sfu)
        self.forwarded = ForwardingInbox(
            self.inbox, lambda source, data: self.service.datagram(ServerPort.MAIN, data, source)
        )

    def _quota_changed(self, key: str, held: int) -> None:
        if self.channel is not None:
            self.channel.send(ipc.QuotaHeld(self.index, key, held))

    def _to_process(self, output: Output) -> None:
        channel = self.channel
        assert channel is not None
        if isinstance(output, Forward):
            if not forward(self._inboxes[output.worker], output.source, output.data):
                self.service.drop("forward_backlog")
        elif isinstance(output, Signal):
            channel.send(ipc.SfuSignal(output.room, output.participant, output.message))
        elif isinstance(output, RoomSignal):
            channel.send(ipc.RoomSignal(output.room, output.message))

    def _receive(self, message: ipc.IpcMessage, fds: list[int]) -> None:
        node, now = self.node, time.time()
        turn = node.turn
        assert turn is not None
        if isinstance(message, ipc.SfuCall):
            self.service.dispatch(
                node.from_control(ToSfu(message.room, message.participant, message.request), now)
            )
        elif isinstance(message, ipc.SfuLeave):
            self.service.dispatch(node.from_control(LeftSfu(message.room, message.participant), now))
        elif isinstance(message, ipc.Revoke):
            self.service.dispatch(node.from_control(RevokeTurn(message.participant, message.until), now))
        elif isinstance(message, ipc.ClusterTurn):
            apply_cluster_turn(turn, message)
        elif isinstance(message, ipc.TurnConnection) and len(fds) == 1:
            self._adopt(message, socket.socket(fileno=fds[0]))
            return
        elif isinstance(message, ipc.TlsFiles):
            try:
                self.ssl_context.load_cert_chain(message.cert, message.key)
            except (OSError, ssl.SSLError) as exc:
                logger.error("TLS certificate reload failed, keeping the old one: %s", exc)
        elif isinstance(message, ipc.RelaysChanged):
            turn.sibling_relay_ports.difference_update(message.closed)
            turn.sibling_relay_ports.update(message.opened)
        elif isinstance(message, ipc.QuotaHeld):
            self.ledger.others_hold(message.worker, message.key, message.held)
        elif isinstance(message, ipc.WorkerGone):
            self.ledger.worker_gone(message.worker)
        elif isinstance(message, ipc.MetricsQuery):
            assert self.channel is not None
            text = render_metrics(turn, None, node.conference)
            self.channel.send(ipc.MetricsReport(message.query, text))
        for fd in fds:  # descriptors no message of this kind should carry
            os.close(fd)

    def _adopt(self, message: ipc.TurnConnection, sock: socket.socket) -> None:
        """A TURN client's connection, handed over by the control process after its sniff."""
        kind = _TRANSPORTS.get(message.transport)
        peer = (message.peer[0], message.peer[1])
        key = address_key(peer[0])
        if kind is None:
            logger.error("handed a connection of unknown transport %r", message.transport)
            sock.close()
            return
        grant = self.pending.acquire(key)
        if grant is not Grant.GRANTED:
            self.refusals.refused(f"over the {grant.value} of pending connections", time.monotonic())
            sock.close()
            return
        loop = asyncio.get_running_loop()
        accepted_at = loop.time() - message.age
        settled = _Once(lambda: self.pending.release(key))

        def turn(kind: Transport, accepted_at: float, settled: Callable[[], None]) -> StreamTurnProtocol:
            return StreamTurnProtocol(self.service, kind, accepted_at, settled, peer)

        def http(secure: bool, accepted_at: float, settled: Callable[[], None]) -> HttpBridge:
            return HttpBridge(lambda pipe: self._http_to_control(pipe, peer, accepted_at), settled)

        def protocol() -> asyncio.Protocol:
            if kind is Transport.TLS:
                return FirstBytesRouter(turn, http, accepted_at, settled)
            return turn(kind, accepted_at, settled)

        tls = self.ssl_context if kind is Transport.TLS else None
        timeout = TLS_HANDSHAKE_TIMEOUT if kind is Transport.TLS else None
        connecting = loop.connect_accepted_socket(protocol, sock, ssl=tls, ssl_handshake_timeout=timeout)
        task = loop.create_task(connecting)
        task.add_done_callback(lambda t: _adopted(t, sock, settled))

    def _http_to_control(self, pipe: socket.socket, peer: tuple[str, int], accepted_at: float) -> bool:
        """Sends the control process its end of an HTTP connection's plaintext pipe; False if the
        control process is gone."""
        if self.channel is None:
            return False
        age = asyncio.get_running_loop().time() - accepted_at
        self.channel.send(ipc.HttpConnection(peer, age), [pipe.fileno()])
        return True

    async def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.forwarded.close()
        await self.service.close()


class _Once:
    """Calls ``action`` the first time it is called."""

    __slots__ = ("_action",)

    def __init__(self, action: Callable[[], None]) -> None:
        self._action: Callable[[], None] | None = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


def _adopted(task: asyncio.Task[object], sock: socket.socket, settled: _Once) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("handed-over connection failed: %r", task.exception())
        sock.close()
        settled()


class HttpBridge(asyncio.Protocol):
    """HTTP inside a TLS connection this worker terminated: the decrypted bytes to the control
    process through a stream socketpair, and back. ``send(pipe)`` sends the control process its
    end (:class:`~meet443.ipc.HttpConnection`); from then on the connection is the control
    process's to count as pending, so it is ``settled`` here.

    Each side pauses the other when its write buffer passes :data:`STREAM_WRITE_LIMIT`, so a slow
    client or control process cannot make the worker buffer without bound.
    """

    def __init__(self, send: Callable[[socket.socket], bool], settled: Callable[[], None]) -> None:
        self.send = send
        self.settled = settled
        self.tls: asyncio.Transport | None = None
        self.pipe: asyncio.Transport | None = None
        self._early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tls = tls = cast(asyncio.Transport, transport)
        tls.set_write_buffer_limits(high=STREAM_WRITE_LIMIT)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sent = self.send(theirs)
        theirs.close()
        self.settled()
        if not sent:
            ours.close()
            tls.close()
            return
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.connect_accepted_socket(lambda: _BridgePipe(self), ours))
        task.add_done_callback(lambda t: self._pipe_failed(t, ours))

    def _pipe_failed(self, task: asyncio.Task[object], sock: socket.socket) -> None:
        if task.cancelled() or task.exception() is not None:
            sock.close()
            if self.tls is not None:
                self.tls.close()

    def data_received(self, data: bytes) -> None:
        if self.pipe is None:
            self._early.append(data)
        elif not self.pipe.is_closing():
            self.pipe.write(data)

    def pause_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.pause_reading()

    def resume_writing(self) -> None:
        if self.pipe is not None and not self.pipe.is_closing():
            self.pipe.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pipe is not None:
            self.pipe.close()
        self.tls = None

    def pipe_up(self, pipe: asyncio.Transport) -> None:
        self.pipe = pipe
        pipe.set_write_buffer_limits(high=STREAM_WRITE_LIMIT)
        if self.tls is None:
            pipe.close()
            return
        for data in self._early:
            pipe.write(data)
        self._early.clear()


class _BridgePipe(asyncio.Protocol):
    def __init__(self, bridge: HttpBridge) -> None:
        self.bridge = bridge

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.bridge.pipe_up(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        tls = self.bridge.tls
        if tls is not None and not tls.is_closing():
            tls.write(data)

    def pause_writing(self) -> None:
        if self.bridge.tls is not None:
            self.bridge.tls.pause_reading()

    def resume_writing(self) -> None:
        tls = self.bridge.tls
        if tls is not None and not tls.is_closing():
            tls.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.bridge.tls is not None:
            self.bridge.tls.close()


def _read_hello(channel: socket.socket) -> tuple[ipc.Hello, list[int]]:
    record, fds, _, _ = socket.recv_fds(channel, MAX_RECORD, MAX_FDS)
    if not record:
        raise SystemExit(0)  # the control process is gone already
    try:
        message = ipc.decode(record)
    except ParseError as exc:
        raise SystemExit(f"worker: bad first message: {exc}") from exc
    if not isinstance(message, ipc.Hello) or message.version != ipc.VERSION:
        raise SystemExit("worker: the control process speaks another version")
    return message, fds


async def _run(channel: socket.socket, hello: ipc.Hello, fds: list[int]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    worker = MediaWorker(hello, fds, stop)
    await worker.start(channel)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group: the control process stops the workers itself.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    assert worker.channel is not None
    worker.channel.send(ipc.Ready(os.getpid()))
    try:
        await stop.wait()
    finally:
        await worker.close()


def main() -> None:
    channel = socket.socket(fileno=int(sys.argv[1]))
    hello, fds = _read_hello(channel)
    logging.basicConfig(
        level=hello.settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s worker{hello.settings.index} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    uvloop.run(_run(channel, hello, fds))


if __name__ == "__main__":
    main()
