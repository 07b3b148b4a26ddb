"""The one TCP port in-process, on loopback: pending connections, their shares and deadlines.

Clients bind source addresses across 127.0.0.0/8 to be several addresses. The deadlines are the
modules' constants, shortened here so that a test waits half a second, not thirty.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meet443.aio import http as http_module
from meet443.aio import turn as turn_module
from meet443.aio.certs import ensure_certificate, make_server_ssl_context
from meet443.aio.http import HttpService, build_main_app
from meet443.aio.node import NodeService
from meet443.aio.tcp import SniffingTcpPort
from meet443.app import build_service
from meet443.config import load_serve_config
from meet443.proto.shares import LocalSharedCap
from meet443.proto.stun.attributes import ErrorCode, RequestedTransport, XorRelayedAddress
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.store.sqlite import SqliteStore

from .turn_client import SocketTurnClient, stun_binding_request

HOST = "127.0.0.1"
USER, PASSWORD = "alice", "pass-do-not-log"


@contextlib.asynccontextmanager
async def tcp_port(tmp_path: Path, pending: LocalSharedCap) -> AsyncIterator[tuple[int, NodeService]]:
    config = load_serve_config(
        [
            "--listen", HOST, "--port", "8443", "--public-ip", HOST, "--turn-secret", "s",
            "--turn-user", f"{USER}:{PASSWORD}", "--data-dir", str(tmp_path), "--relay-ports", "41000-41999",
        ],
        {},
    )  # fmt: skip
    cert, key = ensure_certificate(tmp_path, [HOST])
    store = SqliteStore.open(tmp_path)
    service = await build_service(config, store)
    http = HttpService(build_main_app(f"https://{HOST}"))
    await http.start()
    port = SniffingTcpPort(
        service.stream_protocol, http.protocol, make_server_ssl_context(cert, key), pending
    )
    listener = port.listen(HOST, 0)
    try:
        yield listener.getsockname()[1], service
    finally:
        port.close()
        await service.close()
        await http.close()
        await store.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1000), seconds) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def wait_for_held(pending: LocalSharedCap, count: int) -> None:
    for _ in range(100):
        if pending.held() == count:
            return
        await asyncio.sleep(0.02)
    assert pending.held() == count


class TestPendingShares:
    def test_one_address_cannot_take_every_pending_slot(self, tmp_path: Path) -> None:
        async def scenario() -> None:
            pending = LocalSharedCap(cap=8, share=3)
            async with tcp_port(tmp_path, pending) as (port, _):
                idle = [
                    await asyncio.open_connection(HOST, port, local_addr=("127.0.0.5", 0)) for _ in range(3)
                ]
                await wait_for_held(pending, 3)
                reader, refused = await asyncio.open_connection(HOST, port, local_addr=("127.0.0.5", 0))
                assert await closed_within(reader, 2.0)  # over its share: closed at once
                refused.close()
                reader, writer = await asyncio.open_connection(HOST, port, local_addr=("127.0.0.6", 0))
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await reader.readline()).startswith(b"HTTP/1.1 200")
                await wait_for_held(pending, 3)  # the request's headers settled it; still open
                assert not reader.at_eof()
                for _, w in idle:
                    w.close()
                await wait_for_held(pending, 0)
                writer.close()

        asyncio.run(scenario())


class TestDeadlines:
    def test_slow_request_headers_are_cut_off(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(http_module, "REQUEST_HEADER_TIMEOUT", 0.5)

        async def scenario() -> None:
            pending = LocalSharedCap(cap=8, share=8)
            async with tcp_port(tmp_path, pending) as (port, _):
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
                for _ in range(3):
                    await asyncio.sleep(0.1)
                    writer.write(b"a")  # trickling bytes does not extend the deadline
                assert await closed_within(reader, 2.0)
                await wait_for_held(pending, 0)
                writer.close()

        asyncio.run(scenario())

    def test_slow_request_headers_over_tls_too(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(http_module, "REQUEST_HEADER_TIMEOUT", 0.5)

        async def scenario() -> None:
            pending = LocalSharedCap(cap=8, share=8)
            async with tcp_port(tmp_path, pending) as (port, _):
                client = ssl.create_default_context()
                client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
                reader, writer = await asyncio.open_connection(HOST, port, ssl=client)
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
                assert pending.held() == 1
                assert await closed_within(reader, 2.0)
                await wait_for_held(pending, 0)
                writer.close()

        asyncio.run(scenario())

    def test_turn_connection_without_allocation_is_closed(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(turn_module, "ALLOCATE_DEADLINE", 0.5)

        async def scenario() -> None:
            pending = LocalSharedCap(cap=8, share=8)
            async with tcp_port(tmp_path, pending) as (port, service):
                reader, writer = await asyncio.open_connection(HOST, port)
                writer.write(stun_binding_request())  # answered, but binds no allocation
                assert (await reader.read(1000))[:2] == b"\x01\x01"
                assert pending.held() == 1
                assert await closed_within(reader, 2.0)
                await wait_for_held(pending, 0)
                turn = service.node.turn
                assert turn is not None and turn.counters.dropped["tcp_no_allocation"] == 1
                writer.close()

        asyncio.run(scenario())

    def test_an_allocation_settles_the_connection(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(turn_module, "ALLOCATE_DEADLINE", 0.5)

        async def scenario() -> None:
            pending = LocalSharedCap(cap=8, share=8)
            async with tcp_port(tmp_path, pending) as (port, _):
                client = await asyncio.to_thread(SocketTurnClient, (HOST, port), USER, PASSWORD, "tcp")
                reply = await asyncio.to_thread(client.request, Method.ALLOCATE, [RequestedTransport(17)])
                assert reply.klass == StunClass.SUCCESS and reply.get(XorRelayedAddress) is not None
                await wait_for_held(pending, 0)
                await asyncio.sleep(0.8)  # past the deadline: an allocating client stays
                client.send(stun_binding_request())
                assert Message.parse(await asyncio.to_thread(client.receive)).get(ErrorCode) is None
                client.close()

        asyncio.run(scenario())
