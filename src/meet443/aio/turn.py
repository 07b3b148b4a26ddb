"""asyncio pieces of the TURN side: relay sockets, the UDP ports, TURN over TCP/TLS.

They only move bytes to and from :class:`~meet443.aio.node.NodeService`; every decision (which core
a datagram is for, what to answer) is :class:`~meet443.node.NodeCore`'s.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from meet443.aio.sockets import RELAY_UDP_BUFFER_BYTES, enlarge_udp_buffers
from meet443.aio.tcp import PendingDeadline
from meet443.exceptions import ParseError
from meet443.proto.addresses import Address, ServerPort, Transport
from meet443.proto.shares import RefusalTally
from meet443.proto.turn.allocation import ClientFlow
from meet443.proto.turn.channeldata import StreamFramer

if TYPE_CHECKING:
    from meet443.aio.node import NodeService

logger = logging.getLogger(__name__)

#: A TCP/TLS connection without an allocation this long after its accept is closed: TURN clients
#: allocate at once (one 401 round trip), and until then the connection counts as pending.
ALLOCATE_DEADLINE = 30.0


def _ignore(*_: object) -> None:
    """Until :class:`NodeService` attaches a pool to its core, nothing listens."""


class RelayProtocol(asyncio.DatagramProtocol):
    """One relay port (RFC 8656 §2: the relayed transport address) and the peers that reach it."""

    def __init__(self, pool: RelayPool, relay: Address) -> None:
        self.pool = pool
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None
        self._ipv6 = ":" in relay[0]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport does not subclass asyncio.DatagramTransport, so no isinstance here.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # IPv6 sockets report (host, port, flowinfo, scope_id); the core keys peers by (host, port).
        self.pool.receive(self.relay, addr[:2] if self._ipv6 else addr, data)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from peers (port unreachable) are normal on the Internet; nothing to do.
        self.pool.drop("relay_socket_error")


class RelayPool:
    """Binds relay sockets in the configured port range (implements ``RelayPortPool``).

    Sockets are bound synchronously, so the TURN core gets its answer at once; the asyncio
    transport is attached right after, and until then sends go straight to the socket.
    """

    def __init__(
        self,
        bind_host: str,
        public_ip: str,
        port_range: tuple[int, int],
        public_ipv6: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.bind_host = bind_host
        self.public_ip = public_ip
        self.public_ipv6 = public_ipv6
        self.low, self.high = port_range
        self._rng = rng or random.SystemRandom()
        self.sockets: dict[Address, socket.socket] = {}
        self.protocols: dict[Address, RelayProtocol] = {}
        self._attaching: set[asyncio.Task[tuple[asyncio.DatagramTransport, RelayProtocol]]] = set()
        #: ``(relay, peer, data)`` for every datagram a peer sends to a relay socket.
        self.receive: Callable[[Address, Address, bytes], None] = _ignore
        #: Counts a datagram lost on a relay socket, by reason.
        self.drop: Callable[[str], None] = _ignore
        self._failures = RefusalTally(logger, "relay sockets unavailable (Allocate answered 508)")

    def open(self, family: int, *, even: bool = False, port: int | None = None) -> Address | None:
        if family == 6:
            if self.public_ipv6 is None:
                return None
            public, bind_host, socket_family = self.public_ipv6, self.public_ipv6, socket.AF_INET6
        else:
            public, bind_host, socket_family = self.public_ip, self.bind_host, socket.AF_INET
        candidates: Iterable[int]
        if port is not None:
            candidates = [port]
        else:
            # Random ports (RFC 8656 §7.2 step 6 recommends it): guessable relay ports help attackers.
            candidates = (self._rng.randint(self.low, self.high) for _ in range(64))
        for drawn in candidates:
            candidate = drawn - 1 if even and drawn % 2 else drawn
            if not self.low <= candidate <= self.high or (public, candidate) in self.sockets:
                continue
            try:
                sock = socket.socket(socket_family, socket.SOCK_DGRAM)
            except OSError as exc:
                # Out of descriptors (EMFILE, ENFILE) or memory: the core answers 508
                # (RFC 8656 §7.2 step 6, Insufficient Capacity).
                self.drop("relay_socket_unavailable")
                self._failures.refused(exc.strerror or "socket() failed", time.monotonic())
                return None
            try:
                if socket_family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((bind_host, candidate))
                enlarge_udp_buffers(sock, RELAY_UDP_BUFFER_BYTES)
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                raise
            sock.setblocking(False)
            relay = (public, candidate)
            self.sockets[relay] = sock
            protocol = RelayProtocol(self, relay)
            self.protocols[relay] = protocol
            loop = asyncio.get_running_loop()
            task = loop.create_task(loop.create_datagram_endpoint(lambda p=protocol: p, sock=sock))  # type: ignore[misc]
            self._attaching.add(task)
            task.add_done_callback(self._attaching.discard)
            return relay
        return None

    def close(self, relay: Address) -> None:
        protocol = self.protocols.pop(relay, None)
        sock = self.sockets.pop(relay, None)
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        elif sock is not None:
            sock.close()

    def send(self, relay: Address, peer: Address, data: bytes) -> None:
        protocol = self.protocols.get(relay)
        if protocol is None:
            return
        if protocol.transport is not None:
            protocol.transport.sendto(data, peer)
            return
        sock = self.sockets.get(relay)
        if sock is not None:
            try:
                sock.sendto(data, peer)
            except OSError:
                self.drop("relay_send_error")

    def close_all(self) -> None:
        for relay in list(self.sockets):
            self.close(relay)


class UdpPortProtocol(asyncio.DatagramProtocol):
    """One of the server's UDP ports (RFC 7983: STUN, TURN, ChannelData, DTLS, SRTP all arrive here)."""

    def __init__(self, service: NodeService, port: ServerPort) -> None:
        self.service = service
        self.port = port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.service.attach_udp(self.port, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.service.datagram(self.port, data, addr if len(addr) == 2 else addr[:2])

    def error_received(self, exc: Exception) -> None:
        self.service.drop("udp_socket_error")


class StreamTurnProtocol(asyncio.Protocol):
    """TURN over one TCP or TLS connection (RFC 8656 §3.1, framing per §12.5).

    The connection is pending (see :mod:`meet443.aio.tcp`) until it holds an allocation, and closed
    if it has none :data:`ALLOCATE_DEADLINE` after its accept.
    """

    def __init__(
        self,
        service: NodeService,
        transport_kind: Transport,
        accepted_at: float,
        settled: Callable[[], None],
        peer: Address | None = None,
    ) -> None:
        """``peer``: the client, when the transport is a pipe from the control process."""
        self.service = service
        self.kind = transport_kind
        self._peer = peer
        self.framer = StreamFramer()
        self.flow: ClientFlow | None = None
        self.transport: asyncio.Transport | None = None
        self._accepted_at = accepted_at
        self._settled = settled
        self._pending: PendingDeadline | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.flow = self.service.stream_opened(self.transport, self.kind, self._peer)
        self._pending = PendingDeadline(
            self._accepted_at, ALLOCATE_DEADLINE, self._settled, self._no_allocation
        )

    def _no_allocation(self) -> None:
        assert self.flow is not None and self.transport is not None
        logger.debug("closing %s connection %d: no allocation", self.kind.value, self.flow.connection)
        self.service.drop(f"{self.kind.value}_no_allocation")
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        assert self.flow is not None and self.transport is not None
        try:
            messages = self.framer.feed(data)
        except ParseError as exc:
            logger.debug("closing %s connection %d: %s", self.kind.value, self.flow.connection, exc)
            self.service.drop(f"{self.kind.value}_framing")
            self.transport.close()
            return
        for message in messages:
            self.service.stream_message(self.flow, message)
        if (
            self._pending is not None
            and self._pending.pending
            and self.service.node.has_allocation(self.flow)
        ):
            self._pending.settle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending is not None:
            self._pending.settle()
        if self.flow is not None:
            self.service.stream_closed(self.flow)


def bind_other_port(
    bind_host: str, port: int, relay_ports: tuple[int, int], *, fixed: bool = False
) -> socket.socket:
    """Bind the second UDP port (RFC 5780 "change port").

    ``port`` 0, or a ``port`` that is taken when not ``fixed``, gives a random free port outside
    the relay range and the privileged ports: reaching it shows that UDP to arbitrary ports of
    the server works, not only to the main port or the relay range (``meet443 check``).
    """
    return bind_port_block(bind_host, port, 1, relay_ports, fixed=fixed)[0]


def bind_port_block(
    bind_host: str,
    port: int,
    count: int,
    relay_ports: tuple[int, int],
    *,
    fixed: bool = False,
    avoid: int | None = None,
) -> list[socket.socket]:
    """Bind ``count`` consecutive UDP ports from ``port`` (the workers' SFU ports, ``--workers``):
    :func:`bind_other_port` for a block, which is moved as a whole when it must move. ``avoid``:
    a port the block must not take (the main port, bound later), as if it were taken."""
    family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
    low, high = relay_ports
    choices = [*range(1024, low - count + 1), *range(high + 1, 65537 - count)] or list(
        range(low, high + 2 - count)
    )
    rng = random.SystemRandom()
    candidates = [port] if port else []
    if not fixed or not port:
        candidates += [rng.choice(choices) for _ in range(64)]
    for index, candidate in enumerate(candidates):
        socks: list[socket.socket] = []
        try:
            if avoid is not None and candidate <= avoid < candidate + count:
                raise OSError(errno.EADDRINUSE, "the main port")
            for offset in range(count):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((bind_host, candidate + offset))
                enlarge_udp_buffers(sock, RELAY_UDP_BUFFER_BYTES)
        except OSError as exc:
            for sock in socks:
                sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES) and index < len(candidates) - 1:
                if index == 0 and candidate == port:
                    logger.warning(
                        "UDP port %d%s is taken; the second STUN port is a random one",
                        port,
                        f"-{port + count - 1}" if count > 1 else "",
                    )
                continue
            raise
        for sock in socks:
            sock.setblocking(False)
        return socks
    raise OSError(errno.EADDRINUSE, "no free UDP port for the second STUN port")
