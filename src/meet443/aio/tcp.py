"""The one public TCP port: a first-byte sniff tells TLS from plain TURN and HTTP; inside TLS the
first decrypted byte tells TURN from HTTP.

RFC 8489 §6 makes STUN's first byte 0x00-0x03; a TLS record starts with 0x16 (handshake); HTTP
starts with an ASCII method name. The sniff peeks (``MSG_PEEK``), so
the bytes stay in the socket for whichever protocol takes over.

Connections that have not yet shown what they are (no first byte, TLS handshake running) are
"pending": they are bounded in number and in time, so half-open connections cannot exhaust memory.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import cast

from meet443.proto.addresses import Transport

logger = logging.getLogger(__name__)

TLS_HANDSHAKE = 0x16
SNIFF_TIMEOUT = 10.0
TLS_HANDSHAKE_TIMEOUT = 10.0

ProtocolFactory = Callable[[], asyncio.Protocol]


def is_turn_first_byte(first: int) -> bool:
    """A TURN connection opens with STUN (RFC 8489 §6: top two bits zero).

    ChannelData (0x40-0x4F) cannot come first, since a channel needs an allocation, and those
    bytes are also ASCII 'A' to 'O', how GET, HEAD, DELETE and OPTIONS requests begin.
    """
    return first < 0x40


class _FirstBytesRouter(asyncio.Protocol):
    """Inside TLS: waits (bounded) for the first decrypted bytes, then hands the connection on."""

    def __init__(self, port: SniffingTcpPort) -> None:
        self.port = port
        self.transport: asyncio.Transport | None = None
        self._timeout: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._timeout = asyncio.get_running_loop().call_later(SNIFF_TIMEOUT, transport.close)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None and self._timeout is not None
        self._timeout.cancel()
        if is_turn_first_byte(data[0]):
            protocol = self.port.turn_factory(Transport.TLS)
        else:
            protocol = self.port.http_factory(True)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timeout is not None:
            self._timeout.cancel()


class SniffingTcpPort:
    """Accepts on one TCP socket and routes each connection by what it sends first."""

    def __init__(
        self,
        turn_factory: Callable[[Transport], asyncio.Protocol],
        http_factory: Callable[[bool], asyncio.Protocol],
        ssl_context: ssl.SSLContext,
        max_pending: int = 1024,
    ) -> None:
        self.turn_factory = turn_factory
        self.http_factory = http_factory
        self.ssl_context = ssl_context
        self.max_pending = max_pending
        self.pending = 0
        self.refused = 0
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
        for _ in range(64):
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: shed load, keep listening
                logger.warning("accept failed: %s", exc)
                return
            if self.pending >= self.max_pending:
                self.refused += 1
                conn.close()
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.pending += 1
            task = asyncio.get_running_loop().create_task(self._route(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _route(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
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
            elif first[0] == TLS_HANDSHAKE:
                await loop.connect_accepted_socket(
                    lambda: _FirstBytesRouter(self),
                    conn,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                )
            elif is_turn_first_byte(first[0]):
                await loop.connect_accepted_socket(lambda: self.turn_factory(Transport.TCP), conn)
            else:
                await loop.connect_accepted_socket(lambda: self.http_factory(False), conn)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            logger.debug("connection dropped before routing: %r", exc)
            conn.close()
        finally:
            self.pending -= 1

    def close(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for task in self._tasks:
            task.cancel()
