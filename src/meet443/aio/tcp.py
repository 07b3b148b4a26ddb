"""The one public TCP port: a first-byte sniff tells TLS from plain TURN and HTTP; inside TLS the
first decrypted byte tells TURN from HTTP.

RFC 8489 §6 makes STUN's first byte 0x00-0x03; a TLS record starts with 0x16 (handshake); HTTP
starts with an ASCII method name. The sniff peeks (``MSG_PEEK``), so
the bytes stay in the socket for whichever protocol takes over.

Connections that have not yet shown what they are are "pending": from the accept until an HTTP
connection has sent the headers of its first request, or a TURN connection holds an allocation
(the protocol taking over calls ``settled``). Pending connections are bounded in time (the sniff,
the TLS handshake, then the protocol's own deadline counted from the accept) and in number, in
total and per source address (:class:`~meet443.proto.shares.SharedCap`), so that neither
half-open nor slowloris connections from one client can take every descriptor or lock everyone
else out.

Out of descriptors (EMFILE, ENFILE) or kernel memory, ``accept`` fails while the connection stays
queued; retrying at once would spin the loop at 100% CPU, so accepting pauses for 100 ms, doubling
up to 1 s while the failures last, and the failures are logged once per 10 s with a count.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable
from typing import cast

from meet443.proto.addresses import Transport, address_key
from meet443.proto.shares import Grant, RefusalTally, SharedCap

logger = logging.getLogger(__name__)

TLS_HANDSHAKE = 0x16
SNIFF_TIMEOUT = 10.0
TLS_HANDSHAKE_TIMEOUT = 10.0
ACCEPT_BACKOFF_FIRST = 0.1
ACCEPT_BACKOFF_MAX = 1.0
#: Errors that say "no resources for another socket", not "this one connection failed".
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: ``(accepted_at, settled)``: the loop time of the accept, and what to call once the connection has
#: shown it is a real client (idempotent; closing the connection calls it too).
TurnFactory = Callable[[Transport, float, Callable[[], None]], asyncio.Protocol]
HttpFactory = Callable[[bool, float, Callable[[], None]], asyncio.Protocol]
#: ``(connection, transport, peer, accepted_at, settled)``: give a plain TURN connection's socket
#: to another process (a media worker, ``--workers``), which then settles it.
TurnHandoff = Callable[[socket.socket, Transport, tuple[str, int], float, Callable[[], None]], None]


def is_turn_first_byte(first: int) -> bool:
    """A TURN connection opens with STUN (RFC 8489 §6: top two bits zero).

    ChannelData (0x40-0x4F) cannot come first, since a channel needs an allocation, and those
    bytes are also ASCII 'A' to 'O', how GET, HEAD, DELETE and OPTIONS requests begin.
    """
    return first < 0x40


class _FirstBytesRouter(asyncio.Protocol):
    """Inside TLS: waits (bounded) for the first decrypted bytes, then hands the connection on."""

    def __init__(self, port: SniffingTcpPort, pending: _Pending) -> None:
        self.port = port
        self.pending = pending
        self.routed = False
        self.transport: asyncio.Transport | None = None
        self._timeout: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._timeout = asyncio.get_running_loop().call_later(SNIFF_TIMEOUT, transport.close)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None and self._timeout is not None
        self._timeout.cancel()
        if is_turn_first_byte(data[0]):
            protocol = self.port.turn_factory(Transport.TLS, self.pending.accepted_at, self.pending.settle)
        else:
            protocol = self.port.http_factory(True, self.pending.accepted_at, self.pending.settle)
        self.routed = True
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timeout is not None:
            self._timeout.cancel()
        if not self.routed:
            self.pending.settle()


class _Pending:
    """One pending connection's hold on the shares; :meth:`settle` gives it back, once."""

    __slots__ = ("accepted_at", "key", "shares")

    def __init__(self, shares: SharedCap, key: str, accepted_at: float) -> None:
        self.shares: SharedCap | None = shares
        self.key = key
        self.accepted_at = accepted_at

    def settle(self) -> None:
        if self.shares is not None:
            self.shares.release(self.key)
            self.shares = None


class PendingDeadline:
    """A pending connection as the protocol that took it over sees it: it stays pending until it
    :meth:`settle` s (it showed it is a real client, or it ended), and ``expire`` runs if it has
    not by ``accepted_at + seconds``."""

    __slots__ = ("_settled", "_timer")

    def __init__(
        self, accepted_at: float, seconds: float, settled: Callable[[], None], expire: Callable[[], None]
    ) -> None:
        self._settled: Callable[[], None] | None = settled
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_at(
            accepted_at + seconds, expire
        )

    @property
    def pending(self) -> bool:
        return self._settled is not None

    def settle(self) -> None:
        """No longer pending: the deadline is off and the port's share is given back, once."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._settled is not None:
            self._settled()
            self._settled = None


class SniffingTcpPort:
    """Accepts on one TCP socket and routes each connection by what it sends first."""

    def __init__(
        self,
        turn_factory: TurnFactory,
        http_factory: HttpFactory,
        ssl_context: ssl.SSLContext,
        pending: SharedCap,
        turn_handoff: TurnHandoff | None = None,
    ) -> None:
        """``pending`` counts pending connections, in total and per address, for the whole server;
        ``turn_handoff`` takes TURN over plain TCP instead of ``turn_factory``."""
        self.turn_factory = turn_factory
        self.turn_handoff = turn_handoff
        self.http_factory = http_factory
        self.ssl_context = ssl_context
        self.pending = pending
        self.refusals = RefusalTally(logger, "TCP connections refused")
        self.accept_failures = RefusalTally(logger, "accepting paused, out of resources")
        self._backoff = 0.0
        self._resume: asyncio.TimerHandle | None = None
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def listen(self, host: str, port: int, backlog: int = 1024) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
        self._listener = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept)
        return sock

    def _accept(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        for _ in range(64):
            try:
                conn, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._pause_accepting(exc, loop)
                    return
                logger.debug("accept failed: %r", exc)  # ECONNABORTED and such: that one client
                continue
            self._backoff = 0.0
            key = address_key(str(peer[0]))
            grant = self.pending.acquire(key)
            if grant is not Grant.GRANTED:
                self.refusals.refused(f"over the {grant.value} of pending connections", loop.time())
                conn.close()
                continue
            try:
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # reset before we got to it
                self.pending.release(key)
                conn.close()
                continue
            task = loop.create_task(self._route(conn, _Pending(self.pending, key, loop.time())))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _pause_accepting(self, exc: OSError, loop: asyncio.AbstractEventLoop) -> None:
        assert self._listener is not None
        self._backoff = min(ACCEPT_BACKOFF_MAX, 2 * self._backoff or ACCEPT_BACKOFF_FIRST)
        self.accept_failures.refused(exc.strerror or errno.errorcode.get(exc.errno or 0, "?"), loop.time())
        loop.remove_reader(self._listener.fileno())
        self._resume = loop.call_later(self._backoff, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self._resume = None
        if self._listener is not None:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)
            self._accept()

    async def _route(self, conn: socket.socket, pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        routed = False
        try:
            readable: asyncio.Future[None] = loop.create_future()

            def on_readable() -> None:
                if not readable.done():
                    readable.set_result(None)

            loop.add_reader(conn.fileno(), on_readable)
            try:
                await asyncio.wait_for(readable, SNIFF_TIMEOUT)
            finally:
                loop.remove_reader(conn.fileno())
            first = conn.recv(1, socket.MSG_PEEK)
            if not first:
                conn.close()
                return
            # From here on, the protocol (or the TLS router) settles the connection.
            routed = True
            if first[0] == TLS_HANDSHAKE:
                await loop.connect_accepted_socket(
                    lambda: _FirstBytesRouter(self, pending),
                    conn,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                )
            elif is_turn_first_byte(first[0]) and self.turn_handoff is not None:
                peer = conn.getpeername()
                self.turn_handoff(
                    conn, Transport.TCP, (str(peer[0]), int(peer[1])), pending.accepted_at, pending.settle
                )
            elif is_turn_first_byte(first[0]):
                await loop.connect_accepted_socket(
                    lambda: self.turn_factory(Transport.TCP, pending.accepted_at, pending.settle), conn
                )
            else:
                await loop.connect_accepted_socket(
                    lambda: self.http_factory(False, pending.accepted_at, pending.settle), conn
                )
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            logger.debug("connection dropped before routing: %r", exc)
            conn.close()
            # A failed TLS handshake never reached connection_made, so nobody else settles it.
            pending.settle()
        finally:
            if not routed:
                pending.settle()

    def close(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for task in self._tasks:
            task.cancel()
