"""The one public TCP port: a first-byte sniff tells TLS from plain TURN and HTTP; inside TLS the
first decrypted byte tells TURN from HTTP.

RFC 8489 §6 makes STUN's first byte 0x00-0x03; a TLS record starts with 0x16 (handshake); HTTP
starts with an ASCII method name. The sniff peeks (``MSG_PEEK``), so
the bytes stay in the socket for whichever protocol takes over.

With media workers (``--workers``, docs/workers.md) TURN is theirs, TLS included: the port peeks
at the whole ClientHello (:mod:`meet443.proto.tls.client_hello`) before any handshake. A client
whose ALPN offers HTTP and no STUN protocol (every browser's HTTPS and WSS) has its TLS terminated
here; any other (browsers' TURN clients send no ALPN, coturn's offer ``stun.turn``) goes to a
worker as the raw TCP socket, and the worker terminates TLS. HTTP that a worker finds inside such a
connection (clients without ALPN, such as aiohttp's) comes back decrypted
(:meth:`SniffingTcpPort.serve_bridged_http`).

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
from collections.abc import Callable, Iterable
from typing import cast

from meet443.exceptions import ParseError
from meet443.proto.addresses import Transport, address_key
from meet443.proto.shares import Grant, RefusalTally, SharedCap
from meet443.proto.tls.client_hello import MAX_FLIGHT, ClientHello

logger = logging.getLogger(__name__)

TLS_HANDSHAKE = 0x16
SNIFF_TIMEOUT = 10.0
TLS_HANDSHAKE_TIMEOUT = 10.0
ACCEPT_BACKOFF_FIRST = 0.1
ACCEPT_BACKOFF_MAX = 1.0
#: ALPN protocols (RFC 7301) that say the client speaks HTTP: browsers offer both for HTTPS and WSS.
HTTP_ALPN = frozenset({b"http/1.1", b"h2"})
#: ALPN protocols of STUN and TURN (RFC 7443 §6). coturn's clients offer them after ``http/1.1``
#: (``turnutils_uclient -S``: http/1.1, stun.turn, stun.nat-discovery), so they decide.
STUN_ALPN = frozenset({b"stun.turn", b"stun.nat-discovery"})
#: Errors that say "no resources for another socket", not "this one connection failed".
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: ``(accepted_at, settled)``: the loop time of the accept, and what to call once the connection has
#: shown it is a real client (idempotent; closing the connection calls it too).
TurnFactory = Callable[[Transport, float, Callable[[], None]], asyncio.Protocol]
HttpFactory = Callable[[bool, float, Callable[[], None]], asyncio.Protocol]
#: ``(connection, transport, peer, accepted_at, settled)``: give a TURN connection's socket (plain
#: TCP, or TLS before its handshake) to another process (a media worker, ``--workers``), which
#: then settles it.
TurnHandoff = Callable[[socket.socket, Transport, tuple[str, int], float, Callable[[], None]], None]


def is_turn_first_byte(first: int) -> bool:
    """A TURN connection opens with STUN (RFC 8489 §6: top two bits zero).

    ChannelData (0x40-0x4F) cannot come first, since a channel needs an allocation, and those
    bytes are also ASCII 'A' to 'O', how GET, HEAD, DELETE and OPTIONS requests begin.
    """
    return first < 0x40


def is_http_alpn(alpn: tuple[bytes, ...] | None) -> bool:
    """A ClientHello offering these ALPN protocols is HTTPS (the control process terminates TLS):
    it offers HTTP and no STUN protocol. Without ALPN it may be either (TURN clients of browsers
    send none; neither does aiohttp), and goes to a worker."""
    return alpn is not None and not HTTP_ALPN.isdisjoint(alpn) and STUN_ALPN.isdisjoint(alpn)


class FirstBytesRouter(asyncio.Protocol):
    """Inside TLS: waits (bounded) for the first decrypted bytes, then hands the connection to the
    protocol they say: TURN (``turn_factory``) or HTTP (``http_factory``)."""

    def __init__(
        self,
        turn_factory: TurnFactory,
        http_factory: HttpFactory,
        accepted_at: float,
        settled: Callable[[], None],
    ) -> None:
        self.turn_factory = turn_factory
        self.http_factory = http_factory
        self.accepted_at = accepted_at
        self.settled = settled
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
            protocol = self.turn_factory(Transport.TLS, self.accepted_at, self.settled)
        else:
            protocol = self.http_factory(True, self.accepted_at, self.settled)
        self.routed = True
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timeout is not None:
            self._timeout.cancel()
        if not self.routed:
            self.settled()


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
        turn_factory: TurnFactory | None,
        http_factory: HttpFactory,
        ssl_context: ssl.SSLContext,
        pending: SharedCap,
        turn_handoff: TurnHandoff | None = None,
    ) -> None:
        """``pending`` counts pending connections, in total and per address, for the whole server.
        TURN goes to ``turn_factory`` (one process), or with ``turn_handoff`` (media workers) to
        another process: plain TCP after the sniff, TLS before its handshake unless its ALPN offers
        HTTP."""
        assert (turn_factory is None) != (turn_handoff is None)
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
            async with asyncio.timeout_at(pending.accepted_at + SNIFF_TIMEOUT):
                await _readable(conn)
                first = conn.recv(1, socket.MSG_PEEK)
                if not first:
                    conn.close()
                    return
                offers_http = False
                if first[0] == TLS_HANDSHAKE and self.turn_handoff is not None:
                    offers_http = is_http_alpn((await _client_hello(conn)).alpn)
            # From here on, the protocol (or the TLS router, or the worker) settles the connection.
            routed = True
            handoff, turn_factory = self.turn_handoff, self.turn_factory
            if first[0] == TLS_HANDSHAKE and offers_http:
                await loop.connect_accepted_socket(
                    lambda: self.http_factory(True, pending.accepted_at, pending.settle),
                    conn,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                )
            elif (first[0] == TLS_HANDSHAKE or is_turn_first_byte(first[0])) and handoff is not None:
                kind = Transport.TLS if first[0] == TLS_HANDSHAKE else Transport.TCP
                peer = conn.getpeername()
                handoff(conn, kind, (str(peer[0]), int(peer[1])), pending.accepted_at, pending.settle)
            elif first[0] == TLS_HANDSHAKE:
                assert turn_factory is not None
                await loop.connect_accepted_socket(
                    lambda: FirstBytesRouter(
                        turn_factory, self.http_factory, pending.accepted_at, pending.settle
                    ),
                    conn,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                )
            elif is_turn_first_byte(first[0]):
                assert turn_factory is not None
                await loop.connect_accepted_socket(
                    lambda: turn_factory(Transport.TCP, pending.accepted_at, pending.settle), conn
                )
            else:
                await loop.connect_accepted_socket(
                    lambda: self.http_factory(False, pending.accepted_at, pending.settle), conn
                )
        except ParseError as exc:
            logger.debug("refused a first flight: %s", exc)
            self.refusals.refused("not a TLS ClientHello", loop.time())
            conn.close()
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            logger.debug("connection dropped before routing: %r", exc)
            conn.close()
            # A failed TLS handshake never reached connection_made, so nobody else settles it.
            pending.settle()
        finally:
            if not routed:
                pending.settle()

    def serve_bridged_http(self, sock: socket.socket, peer: tuple[str, int], age: float) -> None:
        """HTTPS that a media worker found inside a TLS connection it terminated (a client without
        ALPN), as the decrypted stream on ``sock``: served as HTTPS from ``peer``, accepted ``age``
        seconds ago. It is pending here again (the worker no longer counts it), under ``peer``'s
        share."""
        loop = asyncio.get_running_loop()
        key = address_key(peer[0])
        grant = self.pending.acquire(key)
        if grant is not Grant.GRANTED:
            self.refusals.refused(f"over the {grant.value} of pending connections", loop.time())
            sock.close()
            return
        pending = _Pending(self.pending, key, loop.time() - age)
        sock.setblocking(False)

        def protocol() -> asyncio.Protocol:
            inner = self.http_factory(True, pending.accepted_at, pending.settle)
            return _Bridged(inner, {"peername": peer, "sslcontext": self.ssl_context})

        task = loop.create_task(_connect(loop, protocol, sock, pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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


async def _readable(conn: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(conn.fileno(), on_readable)
    try:
        await readable
    finally:
        loop.remove_reader(conn.fileno())


async def _client_hello(conn: socket.socket) -> ClientHello:
    """The connection's ClientHello, peeked: its bytes stay in the socket for the handshake.

    A ClientHello can span TCP segments (a post-quantum key share makes a browser's about 2 kB).
    While it is incomplete, ``SO_RCVLOWAT`` keeps the socket unreadable until the bytes still
    missing are in, so waiting costs a wake-up per segment, not a spin on the peeked bytes. A
    wake-up that brings nothing new is the peer's FIN (or an error): ``ConnectionError``.
    """
    seen = 0
    try:
        while True:
            flight = conn.recv(MAX_FLIGHT, socket.MSG_PEEK)
            missing = ClientHello.missing(flight)
            if not missing:
                return ClientHello.parse(flight)
            if len(flight) <= seen:
                raise ConnectionError("closed in the middle of its ClientHello")
            seen = len(flight)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, len(flight) + missing)
            await _readable(conn)
    finally:
        if seen:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


async def _connect(
    loop: asyncio.AbstractEventLoop,
    protocol: Callable[[], asyncio.Protocol],
    sock: socket.socket,
    pending: _Pending,
) -> None:
    try:
        await loop.connect_accepted_socket(protocol, sock)
    except OSError as exc:
        logger.debug("bridged connection failed: %r", exc)
        sock.close()
        pending.settle()


class WrappingProtocol(asyncio.Protocol):
    """Passes every callback on to ``inner``; subclasses step in where they need to."""

    def __init__(self, inner: asyncio.Protocol) -> None:
        self.inner = inner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)


class _Bridged(WrappingProtocol):
    """The protocol of a connection that reaches us decrypted through a unix socket from a media
    worker: ``inner`` sees a transport that tells the client's address and the TLS context (so
    aiohttp's ``request.remote`` and ``request.secure`` are the client's)."""

    def __init__(self, inner: asyncio.Protocol, extra: dict[str, object]) -> None:
        super().__init__(inner)
        self.extra = extra

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(_RelabelledTransport(cast(asyncio.Transport, transport), self.extra))


class _RelabelledTransport(asyncio.Transport):
    """``transport`` with some of its extra info replaced; everything else is passed on."""

    def __init__(self, transport: asyncio.Transport, extra: dict[str, object]) -> None:
        super().__init__(extra)
        self.extra = extra
        self.transport = transport

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name in self.extra:
            return self.extra[name]
        return self.transport.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self.transport.write_eof()

    def can_write_eof(self) -> bool:
        return self.transport.can_write_eof()

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def is_reading(self) -> bool:
        return self.transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.transport.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()
