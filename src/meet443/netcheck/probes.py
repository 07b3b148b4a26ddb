"""One coroutine per check. Thin asyncio code: the decisions are in :mod:`.verdict`, the bytes in
:mod:`.wire` and :mod:`meet443.proto.turn.client`, the connections in :mod:`.streams`.

Every probe returns a :class:`~meet443.netcheck.results.CheckResult` and never raises for a network
failure: a blocked path is a result, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from meet443.exceptions import ParseError
from meet443.netcheck.results import BurstStats, CheckResult, Failure, Transport, burst_stats
from meet443.netcheck.streams import (
    Proxy,
    StreamFailure,
    Target,
    exchange_failure,
    http_exchange,
    open_stream,
    presented_issuer,
    read_head,
)
from meet443.netcheck.wire import (
    OP_CLOSE,
    OP_TEXT,
    FrameReader,
    encode_frame,
    http_request,
    websocket_accept,
    websocket_key,
    websocket_request,
)
from meet443.proto.addresses import Address
from meet443.proto.stun.attributes import ChangeRequest, ErrorCode
from meet443.proto.stun.message import Message, StunClass
from meet443.proto.turn.channeldata import StreamFramer
from meet443.proto.turn.client import (
    Answer,
    ChannelMessage,
    TurnClientSession,
    binding_request,
    describe_error,
    mapped_address,
    relayed_address,
)

__all__ = ["CheckContext", "CheckCredentials", "UdpFacts"]

CHECK_CREDENTIALS_PATH = "/v1/network/check-credentials"
CHANNEL = 0x4000
#: First retransmission timeout of a UDP request (RFC 8489 §6.2.1 says 500 ms; a check is impatient).
UDP_RTO = 0.25
#: Bindings in the SFU port's burst: the server answers about 40 unauthenticated requests per address
#: in a burst, which the whole check shares.
#: A check allocation may learn of the other one's relay a few ms late (media workers).
CHECK_RELAY_RETRY_S = 0.2
SFU_BURST = 10
SFU_SPACING = 0.02


@dataclass(frozen=True, slots=True)
class CheckCredentials:
    """What ``POST /v1/network/check-credentials`` returned."""

    username: str
    password: str = field(repr=False)
    other_udp_port: int | None
    relay_ports: tuple[int, int] | None
    #: The SFU's ports, one per media worker (the first is ``other_udp_port``), if named.
    sfu_ports: tuple[int, int] | None = None

    @classmethod
    def from_json(cls, body: bytes) -> CheckCredentials:
        try:
            document = json.loads(body)
            username, password = document["username"], document["credential"]
            other = document.get("otherUdpPort")
            relay = document.get("relayPorts")
            sfu = document.get("sfuPorts")
        except (ValueError, KeyError, TypeError) as exc:
            raise ParseError(f"unexpected check-credentials answer: {exc!r}") from None
        if not isinstance(username, str) or not isinstance(password, str):
            raise ParseError("unexpected check-credentials answer")
        other_port = other if isinstance(other, int) and 0 < other < 65536 else None
        return cls(username, password, other_port, _port_range(relay), _port_range(sfu))


def _port_range(value: object) -> tuple[int, int] | None:
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(p, int) and 0 < p < 65536 for p in value)
        and value[0] <= value[1]
    ):
        return (value[0], value[1])
    return None


@dataclass
class CheckContext:
    target: Target
    tls: ssl.SSLContext
    proxy: Proxy | None
    timeout: float
    burst: int = 50
    payload_bytes: int = 1000
    #: Pause between two packets of a burst.
    spacing: float = 0.002
    ca_file_given: bool = False


def _blocked(
    name: str, transport: Transport, port: int, failure: StreamFailure, proxy: bool = False
) -> CheckResult:
    return CheckResult(
        name, transport, port, False, detail=failure.detail, failure=failure.failure, via_proxy=proxy
    )


async def _tls_detail(ctx: CheckContext, failure: StreamFailure) -> StreamFailure:
    """Name the issuer of a certificate that did not verify (TLS interception, or a private CA)."""
    if failure.failure is not Failure.TLS_INTERCEPTED:
        return failure
    issuer = await presented_issuer(ctx.target, ctx.proxy, ctx.timeout)
    trust = (
        "--ca-file" if ctx.ca_file_given else "the system's trust store (or pass --ca-file for a private CA)"
    )
    who = f"issued by {issuer}" if issuer else "of unknown issuer"
    return StreamFailure(
        failure.failure,
        f"{failure.detail}; the certificate is {who} and not trusted by {trust}: "
        "a TLS-inspecting proxy or firewall presents its own certificate",
    )


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


# --------------------------------------------------------------------------------------------------
# HTTPS and the check credentials


async def probe_https(ctx: CheckContext) -> tuple[CheckResult, CheckCredentials | None, str]:
    """GET /healthz twice on one connection (the second is the round trip), then get check credentials.

    Returns the result, the credentials (or None) and why there are none.
    """
    port, proxied = ctx.target.port, ctx.proxy is not None
    started = time.monotonic()
    try:
        stream = await open_stream(ctx.target, tls=ctx.tls, proxy=ctx.proxy, timeout=ctx.timeout)
    except StreamFailure as exc:
        return _blocked("https", "tls", port, await _tls_detail(ctx, exc), proxied), None, "HTTPS failed"
    connected_ms = (time.monotonic() - started) * 1000
    try:
        async with asyncio.timeout(ctx.timeout):
            get = http_request("GET", "/healthz", ctx.target.authority)
            head, _ = await http_exchange(stream, get)
            sent = time.monotonic()
            head, _ = await http_exchange(stream, get)
            rtt = (time.monotonic() - sent) * 1000
            if head.status != 200:
                failure = StreamFailure(
                    Failure.UNEXPECTED, f"GET /healthz answered {head.status} {head.reason}"
                )
                return _blocked("https", "tls", port, failure, proxied), None, "HTTPS failed"
            post = http_request("POST", CHECK_CREDENTIALS_PATH, ctx.target.authority)
            head, body = await http_exchange(stream, post)
    except (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError, ParseError) as exc:
        failure = exchange_failure(exc, f"HTTPS to {ctx.target.host}")
        return _blocked("https", "tls", port, failure, proxied), None, "HTTPS failed"
    finally:
        await _close(stream[1])
    result = CheckResult(
        "https",
        "tls",
        port,
        True,
        rtt_ms=rtt,
        detail=f"GET /healthz: 200 (TCP{' via proxy' if proxied else ''} and TLS took {connected_ms:.0f} ms)",
        via_proxy=proxied,
    )
    if head.status == 429:
        return result, None, "the server's network-check limit for this address is used up; try in a minute"
    if head.status != 200:
        return result, None, f"POST {CHECK_CREDENTIALS_PATH} answered {head.status} {head.reason}"
    try:
        return result, CheckCredentials.from_json(body), ""
    except ParseError as exc:
        return result, None, str(exc)


# --------------------------------------------------------------------------------------------------
# WSS signaling


async def probe_wss(ctx: CheckContext) -> CheckResult:
    """Open wss://host/v1/ws, send ``{"type":"ping"}``, expect ``error`` ``not-joined``."""
    port, proxied = ctx.target.port, ctx.proxy is not None
    try:
        reader, writer = await open_stream(ctx.target, tls=ctx.tls, proxy=ctx.proxy, timeout=ctx.timeout)
    except StreamFailure as exc:
        return _blocked("wss", "tls", port, await _tls_detail(ctx, exc), proxied)
    try:
        async with asyncio.timeout(ctx.timeout):
            key = websocket_key(os.urandom(16))
            writer.write(websocket_request("/v1/ws", ctx.target.authority, key, ctx.target.url))
            head, rest = await read_head(reader)
            if head.status != 101 or head.headers.get("sec-websocket-accept") != websocket_accept(key):
                failure = StreamFailure(
                    Failure.UNEXPECTED,
                    f"the WebSocket upgrade was answered {head.status} {head.reason} "
                    "(a proxy that does not pass WebSockets?)",
                )
                return _blocked("wss", "tls", port, failure, proxied)
            frames = FrameReader()
            pending = frames.feed(rest)
            sent = time.monotonic()
            writer.write(encode_frame(OP_TEXT, b'{"type":"ping"}', os.urandom(4)))
            answer = None
            while answer is None:
                for frame in pending:
                    if frame.opcode == OP_TEXT:
                        answer = frame.payload
                        break
                    if frame.opcode == OP_CLOSE:
                        raise StreamFailure(Failure.UNEXPECTED, "the server closed the WebSocket")
                else:
                    chunk = await reader.read(4096)
                    if not chunk:
                        raise asyncio.IncompleteReadError(b"", None)
                    pending = frames.feed(chunk)
            rtt = (time.monotonic() - sent) * 1000
            writer.write(encode_frame(OP_CLOSE, struct.pack("!H", 1000), os.urandom(4)))
    except (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError, ParseError, StreamFailure) as exc:
        return _blocked("wss", "tls", port, exchange_failure(exc, "the WebSocket"), proxied)
    finally:
        await _close(writer)
    try:
        message = json.loads(answer)
    except ValueError:
        message = None
    if not isinstance(message, dict) or message.get("type") != "error" or message.get("code") != "not-joined":
        failure = StreamFailure(Failure.UNEXPECTED, f"unexpected signaling answer {answer[:100]!r}")
        return _blocked("wss", "tls", port, failure, proxied)
    return CheckResult(
        "wss", "tls", port, True, rtt_ms=rtt, detail="ping answered with not-joined", via_proxy=proxied
    )


# --------------------------------------------------------------------------------------------------
# UDP: STUN on the main port, the SFU port's burst, the other port, unsolicited UDP


class _UdpEndpoint(asyncio.DatagramProtocol):
    """A UDP socket that matches STUN answers to requests and hands ChannelData to a callback."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiters: dict[bytes, asyncio.Future[tuple[Message, Address]]] = {}
        self.on_channel: Callable[[int, bytes], None] | None = None
        self.error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        incoming = TurnClientSession.receive(data)
        if isinstance(incoming, Answer):
            waiter = self.waiters.pop(incoming.message.transaction_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result((incoming.message, (addr[0], addr[1])))
        elif isinstance(incoming, ChannelMessage) and self.on_channel is not None:
            self.on_channel(incoming.number, incoming.payload)

    def error_received(self, exc: Exception) -> None:
        # A connected UDP socket reports ICMP port unreachable as ConnectionRefusedError.
        self.error = exc
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(exc)
        self.waiters.clear()

    def send(self, data: bytes, address: Address | None = None) -> None:
        assert self.transport is not None
        if address is None:
            self.transport.sendto(data)
        else:
            self.transport.sendto(data, address)

    async def transact(
        self, transaction_id: bytes, data: bytes, timeout: float, address: Address | None = None
    ) -> tuple[Message, Address, float]:
        """RFC 8489 §6.2.1: send, retransmit with a doubling timeout; returns the answer, where it came
        from and the round trip since the last transmission."""
        waiter: asyncio.Future[tuple[Message, Address]] = asyncio.get_running_loop().create_future()
        self.waiters[transaction_id] = waiter
        deadline = time.monotonic() + timeout
        rto = UDP_RTO
        try:
            while True:
                sent = time.monotonic()
                self.send(data, address)
                wait = min(rto, deadline - sent)
                if wait <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({waiter}, timeout=wait)
                if done:
                    message, source = waiter.result()
                    return message, source, (time.monotonic() - sent) * 1000
                rto *= 2
        finally:
            self.waiters.pop(transaction_id, None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _udp_endpoint(remote: Address | None = None, family: int = socket.AF_INET) -> _UdpEndpoint:
    loop = asyncio.get_running_loop()
    local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)  # noqa: S104 -- a client socket
    _, endpoint = await loop.create_datagram_endpoint(
        _UdpEndpoint, local_addr=None if remote else local, remote_addr=remote, family=family
    )
    return endpoint


async def resolve_udp(target: Target) -> tuple[Address | None, str]:
    """The server's address for UDP (IPv4 first); None and the reason if it does not resolve."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        return None, f"cannot resolve {target.host}: {exc}"
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    if not infos:
        return None, f"{target.host} has no address"
    address = infos[0][4]
    return (str(address[0]), int(address[1])), ""


@dataclass
class UdpFacts:
    """What the STUN check learnt, for the checks that follow it."""

    reachable: bool = False
    reflexive: Address | None = None


def _family(address: Address) -> int:
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET


async def probe_stun(ctx: CheckContext, server: Address | None, why: str, facts: UdpFacts) -> CheckResult:
    """RFC 8489 Binding to the main UDP port: reachable at all, and the server-reflexive address."""
    port = ctx.target.port
    if server is None:
        return CheckResult.blocked("stun", "udp", port, Failure.UNREACHABLE, why)
    # Connected, so that an ICMP port unreachable reads as "refused" rather than a timeout.
    endpoint = await _udp_endpoint(server, family=_family(server))
    try:
        transaction_id = os.urandom(12)
        message, _, rtt = await endpoint.transact(
            transaction_id, binding_request(transaction_id), ctx.timeout
        )
    except TimeoutError:
        return CheckResult.blocked(
            "stun",
            "udp",
            port,
            Failure.TIMEOUT,
            f"no answer to STUN Binding on UDP {port}: UDP {port} is blocked",
        )
    except OSError as exc:
        return CheckResult.blocked("stun", "udp", port, Failure.REFUSED, f"UDP {port}: {exc}")
    finally:
        endpoint.close()
    mapped = mapped_address(message)
    if mapped is None:
        return CheckResult.blocked(
            "stun", "udp", port, Failure.UNEXPECTED, f"Binding failed: {describe_error(message)}"
        )
    facts.reachable, facts.reflexive = True, mapped
    return CheckResult(
        "stun",
        "udp",
        port,
        True,
        rtt_ms=rtt,
        reflexive=mapped,
        detail=f"server-reflexive address {mapped[0]}:{mapped[1]}",
    )


async def probe_direct_udp(
    ctx: CheckContext, server: Address | None, credentials: CheckCredentials | None, why: str
) -> CheckResult:
    """Binding to the server's other UDP port (outside the main port and the relay range) from one
    socket that first asked the main port: UDP to an arbitrary port, and whether the NAT mapping stays."""
    other = credentials.other_udp_port if credentials else None
    port = other or 0
    if server is None:
        return CheckResult.blocked("direct-udp", "udp", port, Failure.UNREACHABLE, why)
    if other is None:
        reason = why or "the server did not name its other UDP port"
        return CheckResult.blocked("direct-udp", "udp", port, Failure.NOT_TESTED, f"not tested: {reason}")
    sfu = credentials.sfu_ports if credentials else None
    # The other media workers' SFU ports (the first one is ``other``), each asked once more.
    more = range(other + 1, sfu[1] + 1) if sfu is not None and sfu[0] == other else range(0)
    probing = other
    endpoint = await _udp_endpoint(family=_family(server))
    try:
        main_mapping: Address | None = None
        with contextlib.suppress(TimeoutError, OSError):
            first = os.urandom(12)
            answer, _, _ = await endpoint.transact(
                first, binding_request(first), min(ctx.timeout, 1.0), server
            )
            main_mapping = mapped_address(answer)
        transaction_id = os.urandom(12)
        message, _, rtt = await endpoint.transact(
            transaction_id, binding_request(transaction_id), ctx.timeout, (server[0], other)
        )
        for probing in more:
            transaction_id = os.urandom(12)
            await endpoint.transact(
                transaction_id, binding_request(transaction_id), min(ctx.timeout, 2.0), (server[0], probing)
            )
    except TimeoutError:
        return CheckResult.blocked(
            "direct-udp", "udp", probing, Failure.TIMEOUT,
            f"no answer from UDP port {probing} of the server: "
            f"UDP to ports other than {ctx.target.port} is blocked",
        )  # fmt: skip
    except OSError as exc:
        return CheckResult.blocked("direct-udp", "udp", other, Failure.REFUSED, f"UDP {other}: {exc}")
    finally:
        endpoint.close()
    port_text = f"{other}-{more[-1]} (the SFU's, one per media worker)" if more else str(other)
    mapped = mapped_address(message)
    if mapped is None:
        return CheckResult.blocked(
            "direct-udp", "udp", other, Failure.UNEXPECTED, f"Binding failed: {describe_error(message)}"
        )
    stable: bool | None = None
    if main_mapping is None:
        mapping = "(the main port did not answer this socket, so the NAT mapping is unknown)"
    elif main_mapping == mapped:
        mapping = "the NAT keeps one mapping for both ports (peer-to-peer hole punching works)"
        stable = True
    else:
        mapping = (
            f"the NAT mapped this socket to {main_mapping[1]} for port {ctx.target.port} and to {mapped[1]} "
            f"for port {other} (symmetric NAT: peer to peer needs the relay)"
        )
        stable = False
    return CheckResult(
        "direct-udp", "udp", other, True, rtt_ms=rtt, reflexive=mapped, stable_mapping=stable,
        detail=f"UDP port{'s' if more else ''} {port_text} reached; {mapping}",
    )  # fmt: skip


async def probe_sfu(ctx: CheckContext, server: Address | None, why: str) -> CheckResult:
    """A short burst of Binding requests to the main UDP port (where the SFU listens): RTT, jitter, loss."""
    port = ctx.target.port
    if server is None:
        return CheckResult.blocked("sfu-udp", "udp", port, Failure.UNREACHABLE, why)
    endpoint = await _udp_endpoint(server, family=_family(server))
    sent_at: dict[int, float] = {}
    received_at: dict[int, float] = {}
    ids: dict[bytes, int] = {}
    loop = asyncio.get_running_loop()
    waiters = []
    try:
        for seq in range(SFU_BURST):
            transaction_id = os.urandom(12)
            ids[transaction_id] = seq
            waiter: asyncio.Future[tuple[Message, Address]] = loop.create_future()
            endpoint.waiters[transaction_id] = waiter

            def record(done: asyncio.Future[tuple[Message, Address]], seq: int = seq) -> None:
                if not done.cancelled() and done.exception() is None:
                    received_at[seq] = time.monotonic()

            waiter.add_done_callback(record)
            waiters.append(waiter)
            sent_at[seq] = time.monotonic()
            endpoint.send(binding_request(transaction_id))
            await asyncio.sleep(SFU_SPACING)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(ctx.timeout, 1.5)):
                await asyncio.gather(*waiters, return_exceptions=True)
    finally:
        for waiter in waiters:
            waiter.cancel()
        endpoint.close()
    stats = burst_stats(sent_at, received_at, 20)
    if not stats.received:
        if endpoint.error is not None:
            return CheckResult.blocked(
                "sfu-udp", "udp", port, Failure.REFUSED, f"UDP {port}: {endpoint.error}"
            )
        return CheckResult.blocked(
            "sfu-udp", "udp", port, Failure.TIMEOUT, f"none of {SFU_BURST} Bindings on UDP {port} answered"
        )
    result = CheckResult(
        "sfu-udp",
        "udp",
        port,
        True,
        detail=f"{stats.received}/{stats.sent} Binding requests answered on UDP {port}",
    )
    return result.with_burst(
        BurstStats(stats.sent, stats.received, stats.rtt_ms, stats.jitter_ms, stats.loss, None)
    )


async def probe_inbound(
    ctx: CheckContext, server: Address | None, facts: UdpFacts, credentials: CheckCredentials | None
) -> CheckResult:
    """RFC 5780 §4.4: Binding with CHANGE-REQUEST "change port" from a fresh socket; the answer comes from
    the other port, which this socket never sent to. If it gets in, unsolicited UDP is not filtered."""
    port = credentials.other_udp_port if credentials and credentials.other_udp_port else ctx.target.port
    if server is None or not facts.reachable:
        return CheckResult.blocked(
            "p2p-inbound", "udp", port, Failure.NOT_TESTED,
            f"not tested: UDP {ctx.target.port} does not reach the server",
        )  # fmt: skip
    endpoint = await _udp_endpoint(family=_family(server))
    try:
        transaction_id = os.urandom(12)
        request = binding_request(transaction_id, [ChangeRequest(change_port=True)])
        message, source, rtt = await endpoint.transact(transaction_id, request, min(ctx.timeout, 2.0), server)
    except TimeoutError:
        return CheckResult.blocked(
            "p2p-inbound", "udp", port, Failure.TIMEOUT,
            "no answer from the server's other port: unsolicited UDP is filtered (usual for a stateful "
            "firewall; peer to peer then relies on both sides sending first)",
        )  # fmt: skip
    except OSError as exc:
        return CheckResult.blocked("p2p-inbound", "udp", port, Failure.REFUSED, f"UDP: {exc}")
    finally:
        endpoint.close()
    if message.klass != StunClass.SUCCESS or source[1] == server[1]:
        return CheckResult.blocked(
            "p2p-inbound", "udp", port, Failure.NOT_TESTED,
            f"not tested: the server does not support CHANGE-REQUEST ({describe_error(message)})",
        )  # fmt: skip
    return CheckResult(
        "p2p-inbound", "udp", source[1], True, rtt_ms=rtt,
        detail=f"an answer from port {source[1]}, which this socket never sent to, got in",
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# TURN: two allocations, a channel between their relays, a burst through both


class _TurnConnection:
    """A TURN client over UDP, TCP or TLS: the sans-I/O session plus a socket."""

    def __init__(self, session: TurnClientSession, transport: Transport) -> None:
        self.session = session
        self.kind = transport
        self.udp: _UdpEndpoint | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.waiters: dict[bytes, asyncio.Future[Message]] = {}
        self.on_channel: Callable[[int, bytes], None] | None = None

    @classmethod
    async def open(
        cls, ctx: CheckContext, server: Address | None, transport: Transport, credentials: CheckCredentials
    ) -> _TurnConnection:
        connection = cls(TurnClientSession(credentials.username, credentials.password, os.urandom), transport)
        if transport == "udp":
            assert server is not None
            connection.udp = await _udp_endpoint(server, family=_family(server))
            connection.udp.on_channel = connection._channel
        else:
            proxy = ctx.proxy if transport == "tls" else None
            tls = ctx.tls if transport == "tls" else None
            reader, writer = await open_stream(ctx.target, tls=tls, proxy=proxy, timeout=ctx.timeout)
            connection.writer = writer
            connection._reader_task = asyncio.get_running_loop().create_task(connection._read(reader))
        return connection

    def _channel(self, number: int, payload: bytes) -> None:
        if self.on_channel is not None:
            self.on_channel(number, payload)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        framer = StreamFramer()
        try:
            while chunk := await reader.read(65536):
                for data in framer.feed(chunk):
                    incoming = TurnClientSession.receive(data)
                    if isinstance(incoming, Answer):
                        waiter = self.waiters.pop(incoming.message.transaction_id, None)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(incoming.message)
                    elif isinstance(incoming, ChannelMessage):
                        self._channel(incoming.number, incoming.payload)
        except (OSError, ParseError, ssl.SSLError):
            pass
        for waiter in self.waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("the server closed the TURN connection"))

    async def _exchange(self, transaction_id: bytes, data: bytes, timeout: float) -> Message:
        if self.udp is not None:
            message, _, _ = await self.udp.transact(transaction_id, data, timeout)
            return message
        assert self.writer is not None
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.waiters[transaction_id] = waiter
        try:
            self.writer.write(data)
            async with asyncio.timeout(timeout):
                return await waiter
        finally:
            self.waiters.pop(transaction_id, None)

    async def transact(self, build: Callable[[], tuple[bytes, bytes]], timeout: float) -> Message:
        """One request; a 401/438 challenge is answered once (RFC 8489 §9.2.5)."""
        transaction_id, data = build()
        message = await self._exchange(transaction_id, data, timeout)
        if self.session.learn_challenge(message):
            transaction_id, data = build()
            message = await self._exchange(transaction_id, data, timeout)
        return message

    def send_channel(self, payload: bytes) -> None:
        data = TurnClientSession.channel_data(CHANNEL, payload, stream=self.udp is None)
        if self.udp is not None:
            self.udp.send(data)
        elif self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

    async def close(self, timeout: float) -> None:
        with contextlib.suppress(OSError, TimeoutError, ParseError, ConnectionError):
            await self.transact(self.session.delete, min(timeout, 0.5))
        if self.udp is not None:
            self.udp.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self.writer is not None:
            await _close(self.writer)


def _turn_failure(exc: BaseException, transport: Transport, port: int, step: str) -> StreamFailure:
    if isinstance(exc, StreamFailure):
        return exc
    if isinstance(exc, TimeoutError):
        if transport == "udp":
            return StreamFailure(Failure.TIMEOUT, f"no answer to {step} over UDP {port}")
        return StreamFailure(
            Failure.STALLED,
            f"the {transport.upper()} connection to port {port} was accepted, but {step} got no answer: "
            "a firewall or proxy that lets only some protocols through?",
        )
    if isinstance(exc, ConnectionRefusedError) and transport == "udp":
        return StreamFailure(Failure.REFUSED, f"UDP {port}: port unreachable")
    return exchange_failure(exc, f"TURN over {transport.upper()}")


async def probe_turn(
    ctx: CheckContext,
    transport: Transport,
    server: Address | None,
    credentials: CheckCredentials | None,
    why: str,
) -> CheckResult:
    """Allocation A and B over ``transport``, a channel from each to the other's relayed address, then a
    burst of numbered packets A -> relay A -> relay B -> B, echoed by B the same way back."""
    name, port = f"turn-{transport}", ctx.target.port
    proxied = transport == "tls" and ctx.proxy is not None
    if credentials is None:
        return CheckResult.blocked(
            name, transport, port, Failure.NOT_TESTED, f"not tested: no credentials ({why})"
        )
    if transport == "udp" and server is None:
        return CheckResult.blocked(name, transport, port, Failure.UNREACHABLE, why)
    connections: list[_TurnConnection] = []
    step = "connecting"
    try:
        a = await _TurnConnection.open(ctx, server, transport, credentials)
        connections.append(a)
        b = await _TurnConnection.open(ctx, server, transport, credentials)
        connections.append(b)
        step = "Allocate"
        relays = []
        for connection in (a, b):
            answer = await connection.transact(connection.session.allocate, ctx.timeout)
            relayed = relayed_address(answer)
            if relayed is None:
                raise StreamFailure(Failure.UNEXPECTED, f"Allocate refused: {describe_error(answer)}")
            relays.append(relayed)
        step = "ChannelBind"
        for connection, peer in ((a, relays[1]), (b, relays[0])):
            for attempt in range(2):
                answer = await connection.transact(
                    functools.partial(connection.session.channel_bind, CHANNEL, peer), ctx.timeout
                )
                error = answer.get(ErrorCode)
                if answer.klass == StunClass.SUCCESS or error is None or error.code != 403 or attempt:
                    break
                # With media workers (docs/workers.md) the other allocation may live in another
                # process, which tells this one of it within a few milliseconds: ask again once.
                await asyncio.sleep(CHECK_RELAY_RETRY_S)
            if answer.klass != StunClass.SUCCESS:
                raise StreamFailure(Failure.UNEXPECTED, f"ChannelBind refused: {describe_error(answer)}")
        step = "the relayed burst"
        stats = await _burst(ctx, a, b)
    except (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError, ParseError, StreamFailure) as exc:
        failure = _turn_failure(exc, transport, port, step)
        if failure.failure is Failure.TLS_INTERCEPTED:
            failure = await _tls_detail(ctx, failure)
        return _blocked(name, transport, port, failure, proxied)
    finally:
        await asyncio.gather(*(c.close(ctx.timeout) for c in connections), return_exceptions=True)
    if not stats.received:
        failure = StreamFailure(
            Failure.UNEXPECTED, f"both allocations worked, but none of {stats.sent} relayed packets came back"
        )
        return _blocked(name, transport, port, failure, proxied)
    relay_text = f"{relays[0][0]}:{relays[0][1]} and :{relays[1][1]}"
    detail = (
        f"{stats.received}/{stats.sent} packets of {ctx.payload_bytes} bytes relayed between two allocations "
        f"({relay_text})"
    )
    result = CheckResult(name, transport, port, True, detail=detail, via_proxy=proxied)
    return result.with_burst(stats)


async def _burst(ctx: CheckContext, a: _TurnConnection, b: _TurnConnection) -> BurstStats:
    # B echoes every packet straight back through its own relay to A's.
    b.on_channel = lambda number, payload: b.send_channel(payload)
    sent_at: dict[int, float] = {}
    received_at: dict[int, float] = {}
    all_back = asyncio.Event()

    def arrived(number: int, payload: bytes) -> None:
        if len(payload) >= 4:
            (seq,) = struct.unpack_from("!I", payload)
            received_at.setdefault(seq, time.monotonic())
            if len(received_at) >= ctx.burst:
                all_back.set()

    a.on_channel = arrived
    padding = b"\x00" * max(0, ctx.payload_bytes - 4)
    for seq in range(ctx.burst):
        sent_at[seq] = time.monotonic()
        a.send_channel(struct.pack("!I", seq) + padding)
        await asyncio.sleep(ctx.spacing)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(min(ctx.timeout, 1.5)):
            await all_back.wait()
    return burst_stats(sent_at, received_at, ctx.payload_bytes)
