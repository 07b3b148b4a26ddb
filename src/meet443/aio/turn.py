"""asyncio adapter for the TURN core: it moves bytes between sockets and :class:`TurnServer`.

Nothing here decides anything about TURN; it only knows where bytes come from and go to. The one
exception is speed: a ChannelData datagram from a UDP client is handed straight to
``TurnServer.relay_channel_data`` and sent, without building intermediate lists.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from meet443.aio.sfu import SfuService
from meet443.aio.sockets import RELAY_UDP_BUFFER_BYTES, enlarge_udp_buffers
from meet443.exceptions import ParseError
from meet443.proto.addresses import Address, Transport
from meet443.proto.demux import KIND_BY_FIRST_BYTE, PacketKind
from meet443.proto.shares import RefusalTally
from meet443.proto.turn.allocation import ClientFlow
from meet443.proto.turn.channeldata import StreamFramer
from meet443.proto.turn.server import Output, ServerPort, ToClient, ToClientFrom, ToPeer, TurnServer

logger = logging.getLogger(__name__)

#: A slow TCP/TLS client must not make us buffer media without bound: past this, packets drop.
STREAM_WRITE_LIMIT = 1 << 20
#: A TCP/TLS connection without an allocation this long after its accept is closed: TURN clients
#: allocate at once (one 401 round trip), and until then the connection counts as pending.
ALLOCATE_DEADLINE = 30.0
_UDP = Transport.UDP
_CHANNEL_DATA = PacketKind.CHANNEL_DATA
_STUN = PacketKind.STUN


class RelayProtocol(asyncio.DatagramProtocol):
    """One relay port (RFC 8656 §2: the relayed transport address) and the peers that reach it."""

    def __init__(self, service: TurnService, relay: Address) -> None:
        self.service = service
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None
        self._ipv6 = ":" in relay[0]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport does not subclass asyncio.DatagramTransport, so no isinstance here.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        # IPv6 sockets report (host, port, flowinfo, scope_id); the core keys peers by (host, port).
        peer = addr[:2] if self._ipv6 else addr
        out = self.service.turn.receive_from_peer(self.relay, peer, data, time.time())
        if out is not None:
            self.service.to_client(out.flow, out.data)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors from peers (port unreachable) are normal on the Internet; nothing to do.
        self.service.turn.counters.drop("relay_socket_error")


class RelayPool:
    """Binds relay sockets in the configured port range (implements ``RelayPortPool``).

    Sockets are bound synchronously, so the TURN core gets its answer at once; the asyncio
    transport is attached right after, and until then sends go straight to the socket.
    """

    def __init__(
        self,
        service: TurnService,
        bind_host: str,
        public_ip: str,
        port_range: tuple[int, int],
        public_ipv6: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.bind_host = bind_host
        self.public_ip = public_ip
        self.public_ipv6 = public_ipv6
        self.low, self.high = port_range
        self._rng = rng or random.SystemRandom()
        self.sockets: dict[Address, socket.socket] = {}
        self.protocols: dict[Address, RelayProtocol] = {}
        self._attaching: set[asyncio.Task[tuple[asyncio.DatagramTransport, RelayProtocol]]] = set()
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
                self.service.turn.counters.drop("relay_socket_unavailable")
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
            protocol = RelayProtocol(self.service, relay)
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
                self.service.turn.counters.drop("relay_send_error")

    def close_all(self) -> None:
        for relay in list(self.sockets):
            self.close(relay)


class MainUdpProtocol(asyncio.DatagramProtocol):
    """The one public UDP port (RFC 7983): STUN/TURN and ChannelData for the relay; ICE checks,
    DTLS and SRTP for the SFU."""

    def __init__(self, service: TurnService, sfu: SfuService | None = None) -> None:
        self.service = service
        self.sfu = sfu

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.service.udp_transport = cast(asyncio.DatagramTransport, transport)
        if self.sfu is not None:
            self.sfu.udp_transport = self.service.udp_transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        service = self.service
        address: Address = addr if len(addr) == 2 else addr[:2]
        if not data:
            return
        kind = KIND_BY_FIRST_BYTE[data[0]]
        sfu = self.sfu
        if address[0] in service.own_addresses and service.is_own_relay(address):
            # No TURN-through-TURN chaining: our own relays may reach media sessions only (a
            # client behind a firewall reaches the SFU through the relay; the hop stays local).
            if sfu is None or (kind is _STUN and not sfu.check(data, address)):
                service.turn.counters.drop("from_own_relay")
            elif kind is not _STUN:
                sfu.datagram(data, address)
            return
        if sfu is not None and kind is not _STUN and kind is not _CHANNEL_DATA:
            sfu.datagram(data, address)
            return
        if kind is _CHANNEL_DATA:
            allocation = service.turn.udp_allocations.get(address)
            if allocation is None:
                service.turn.counters.drop("channel_data_without_allocation")
                return
            sent = service.turn.relay_channel_data(allocation, data, time.time())
            if sent is not None:
                service.relays.send(allocation.relay, sent[0], sent[1])
        elif kind is _STUN:
            if sfu is not None and sfu.check(data, address):
                return
            service.dispatch(service.turn.receive(data, ClientFlow(_UDP, address, 0), time.time()))
        else:
            service.turn.counters.drop(f"udp_{kind.value}")

    def error_received(self, exc: Exception) -> None:
        self.service.turn.counters.drop("udp_socket_error")


class OtherUdpProtocol(asyncio.DatagramProtocol):
    """The second UDP port: RFC 5780 "change port" Binding requests (never TURN), and the SFU for
    browsers, which ignore ICE candidates on ports below 1024 such as a main port of 443."""

    def __init__(self, service: TurnService, sfu: SfuService | None = None) -> None:
        self.service = service
        self.sfu = sfu

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.service.other_transport = cast(asyncio.DatagramTransport, transport)
        if self.sfu is not None:
            self.sfu.other_transport = self.service.other_transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        service = self.service
        address: Address = addr if len(addr) == 2 else addr[:2]
        if not data:
            return
        sfu = self.sfu
        kind = KIND_BY_FIRST_BYTE[data[0]]
        if sfu is not None:
            if kind is not _STUN:
                sfu.datagram(data, address)
                return
            if sfu.check(data, address, other_port=True):
                return
        if service.is_own_relay(address):
            service.turn.counters.drop("from_own_relay")
            return
        service.dispatch(service.turn.receive_on_other_port(data, address, time.time()))

    def error_received(self, exc: Exception) -> None:
        self.service.turn.counters.drop("udp_socket_error")


class StreamTurnProtocol(asyncio.Protocol):
    """TURN over one TCP or TLS connection (RFC 8656 §3.1, framing per §12.5).

    The connection is pending (see :mod:`meet443.aio.tcp`) until it holds an allocation, and closed
    if it has none :data:`ALLOCATE_DEADLINE` after its accept.
    """

    def __init__(
        self,
        service: TurnService,
        transport_kind: Transport,
        accepted_at: float,
        settled: Callable[[], None],
    ) -> None:
        self.service = service
        self.kind = transport_kind
        self.framer = StreamFramer()
        self.flow: ClientFlow | None = None
        self.transport: asyncio.Transport | None = None
        self._accepted_at = accepted_at
        self._settled: Callable[[], None] | None = settled
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.flow = ClientFlow(self.kind, (str(peer[0]), int(peer[1])), self.service.next_connection_id())
        self.service.streams[self.flow.connection] = self.transport
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_at(self._accepted_at + ALLOCATE_DEADLINE, self._no_allocation)

    def _no_allocation(self) -> None:
        assert self.flow is not None and self.transport is not None
        logger.debug("closing %s connection %d: no allocation", self.kind.value, self.flow.connection)
        self.service.turn.counters.drop(f"{self.kind.value}_no_allocation")
        self.transport.close()

    def _settle(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._settled is not None:
            self._settled()
            self._settled = None

    def data_received(self, data: bytes) -> None:
        assert self.flow is not None and self.transport is not None
        try:
            messages = self.framer.feed(data)
        except ParseError as exc:
            logger.debug("closing %s connection %d: %s", self.kind.value, self.flow.connection, exc)
            self.service.turn.counters.drop(f"{self.kind.value}_framing")
            self.transport.close()
            return
        turn = self.service.turn
        for message in messages:
            self.service.dispatch(turn.receive(message, self.flow, time.time()))
        if self._deadline is not None and self.flow in turn.allocations:
            self._settle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle()
        if self.flow is not None:
            self.service.streams.pop(self.flow.connection, None)
            self.service.turn.connection_closed(self.flow, time.time())


class TurnService:
    """Ties the TURN core to the main UDP socket, the relay sockets and the stream connections."""

    def __init__(
        self,
        turn_factory: Callable[[RelayPool], TurnServer],
        bind_host: str,
        public_ip: str,
        relay_ports: tuple[int, int],
        own_addresses: Iterable[str],
        public_ipv6: str | None = None,
    ) -> None:
        self.relays = RelayPool(self, bind_host, public_ip, relay_ports, public_ipv6)
        self.turn = turn_factory(self.relays)
        self.udp_transport: asyncio.DatagramTransport | None = None
        #: The second UDP port (RFC 5780 CHANGE-REQUEST), opened by :meth:`open_other_port`.
        self.other_transport: asyncio.DatagramTransport | None = None
        self.other_port: int | None = None
        self.streams: dict[int, asyncio.Transport] = {}
        self._connection_ids = 0
        self.own_addresses = frozenset(own_addresses)
        self._timer: asyncio.Task[None] | None = None

    def is_own_relay(self, address: Address) -> bool:
        """Did this datagram come from one of our relay sockets? (Not merely from a port in the
        relay range: clients on the server's own host use ephemeral ports in that range too.)"""
        sockets = self.relays.sockets
        return address[0] in self.own_addresses and (
            (self.relays.public_ip, address[1]) in sockets or (self.relays.public_ipv6, address[1]) in sockets
        )

    def next_connection_id(self) -> int:
        self._connection_ids += 1
        return self._connection_ids

    def stream_protocol(
        self, transport_kind: Transport, accepted_at: float, settled: Callable[[], None]
    ) -> StreamTurnProtocol:
        return StreamTurnProtocol(self, transport_kind, accepted_at, settled)

    def dispatch(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, ToPeer):
                self.relays.send(output.relay, output.peer, output.data)
            elif isinstance(output, ToClient):
                self.to_client(output.flow, output.data)
            elif isinstance(output, ToClientFrom):
                port = self.udp_transport if output.port is ServerPort.MAIN else self.other_transport
                if port is not None:
                    port.sendto(output.data, output.address)

    async def open_other_port(
        self, bind_host: str, port: int, *, fixed: bool = False, sfu: SfuService | None = None
    ) -> int:
        """Bind the second UDP port (RFC 5780 "change port") and return its number.

        ``port`` 0, or a ``port`` that is taken when not ``fixed``, gives a random free port outside
        the relay range and the privileged ports: reaching it shows that UDP to arbitrary ports of
        the server works, not only to the main port or the relay range (``meet443 check``).
        """
        family = socket.AF_INET6 if ":" in bind_host else socket.AF_INET
        loop = asyncio.get_running_loop()
        low, high = self.relays.low, self.relays.high
        choices = [*range(1024, low), *range(high + 1, 65536)] or list(range(low, high + 1))
        rng = random.SystemRandom()
        candidates = [port] if port else []
        if not fixed or not port:
            candidates += [rng.choice(choices) for _ in range(64)]
        for index, candidate in enumerate(candidates):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((bind_host, candidate))
                enlarge_udp_buffers(sock, RELAY_UDP_BUFFER_BYTES)
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES) and index < len(candidates) - 1:
                    if index == 0 and candidate == port:
                        logger.warning("UDP port %d is taken; the second STUN port is a random one", port)
                    continue
                raise
            sock.setblocking(False)
            await loop.create_datagram_endpoint(lambda: OtherUdpProtocol(self, sfu), sock=sock)
            self.other_port = candidate
            return candidate
        raise OSError(errno.EADDRINUSE, "no free UDP port for the second STUN port")

    def to_client(self, flow: ClientFlow, data: bytes) -> None:
        if flow.transport is _UDP:
            if self.udp_transport is not None:
                self.udp_transport.sendto(data, flow.address)
            return
        stream = self.streams.get(flow.connection)
        if stream is None or stream.is_closing():
            return
        if stream.get_write_buffer_size() > STREAM_WRITE_LIMIT:
            self.turn.counters.drop("stream_backlog")
            return
        stream.write(data)

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.turn.handle_timer(time.time())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.other_transport is not None:
            self.other_transport.close()
        for stream in list(self.streams.values()):
            stream.close()
        self.relays.close_all()
