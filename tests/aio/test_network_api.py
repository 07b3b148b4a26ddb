"""``/v1/network`` (admin API keys) and ``/v1/network/check-credentials`` (no login, rate limited), and
the ``/check`` page, through the whole main app over TLS."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from meet443.aio.certs import ensure_certificate, make_server_ssl_context
from meet443.aio.http import WEB_DIR, build_main_app
from meet443.aio.network import NetworkEndpoints
from meet443.network import NetworkDescription
from meet443.proto.turn.check import is_check_username
from meet443.proto.turn.credentials import rest_password, rest_username_expiry
from meet443.store.sqlite import SqliteStore

PUBLIC_URL = "https://meet.example.org"
SECRET = "network-secret"
NETWORK = NetworkDescription.single_node(PUBLIC_URL, ["203.0.113.5"], 443, (49152, 65535))
URIS = [
    "turn:meet.example.org:443?transport=udp",
    "turn:meet.example.org:443?transport=tcp",
    "turns:meet.example.org:443?transport=tcp",
]
Client = TestClient[web.Request, web.Application]


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    cert, key = ensure_certificate(tmp_path_factory.mktemp("tls"), ["127.0.0.1"])
    return make_server_ssl_context(cert, key)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """Only API keys: the store's own tests run on both backends (tests/test_meetings.py)."""
    opened = SqliteStore.open(tmp_path)
    yield opened
    asyncio.run(opened.close())


@pytest.fixture
def api_key(store: SqliteStore) -> str:
    return asyncio.run(store.api_keys.create("it", now_ms=1_900_000_000_000))[1]


@asynccontextmanager
async def client_for(tls: ssl.SSLContext, store: SqliteStore, check_rate: int = 6) -> AsyncIterator[Client]:
    endpoints = NetworkEndpoints(
        description=NETWORK,
        turn_secret=SECRET,
        turn_uris=URIS,
        relay_ports=(49152, 65535),
        other_udp_port=lambda: 3478,
        check_rate_per_minute=check_rate,
    )
    app = build_main_app(PUBLIC_URL, meetings=store, network=endpoints)
    server = TestServer(app)
    await server.start_server(ssl=tls, access_log=None)
    async with TestClient(server, connector=aiohttp.TCPConnector(ssl=False)) as client:
        yield client


class TestNetwork:
    def test_needs_an_admin_api_key(self, tls: ssl.SSLContext, store: SqliteStore, api_key: str) -> None:
        async def scenario() -> None:
            async with client_for(tls, store) as client:
                response = await client.get("/v1/network")
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="meet443"'
                assert (await response.json())["error"]["code"] == "unauthorized"
                wrong = await client.get("/v1/network", headers={"Authorization": "Bearer m443_nope_nope"})
                assert wrong.status == 401
                good = await client.get("/v1/network", headers={"Authorization": f"Bearer {api_key}"})
                assert good.status == 200
                assert good.headers["Cache-Control"] == "no-store"
                assert "Content-Security-Policy" in good.headers
                document = await good.json()
                assert document == NETWORK.to_json()
                assert NetworkDescription.from_json(document) == NETWORK
                (key,) = await store.api_keys.list()
                await store.api_keys.revoke(key.key_id, now_ms=1_900_000_000_001)
                revoked = await client.get("/v1/network", headers={"Authorization": f"Bearer {api_key}"})
                assert revoked.status == 401
                assert (await client.post("/v1/network")).status == 405

        run(scenario())

    def test_failed_keys_are_rate_limited(self, tls: ssl.SSLContext, store: SqliteStore) -> None:
        async def scenario() -> None:
            async with client_for(tls, store) as client:
                statuses = [
                    (await client.get("/v1/network", headers={"Authorization": "Bearer x"})).status
                    for _ in range(12)
                ]
                assert statuses[:10] == [401] * 10
                assert statuses[10:] == [429, 429]

        run(scenario())


class TestCheckCredentials:
    def test_short_lived_check_credentials(self, tls: ssl.SSLContext, store: SqliteStore) -> None:
        async def scenario() -> None:
            async with client_for(tls, store) as client:
                response = await client.post("/v1/network/check-credentials")
                assert response.status == 200
                assert response.headers["Cache-Control"] == "no-store"
                body = await response.json()
                assert set(body) == {
                    "username",
                    "credential",
                    "ttl",
                    "iceServers",
                    "otherUdpPort",
                    "relayPorts",
                }
                username = body["username"]
                assert is_check_username(username)
                expiry = rest_username_expiry(username)
                assert expiry is not None and 55 <= expiry - time.time() <= 61
                assert body["ttl"] == 60
                assert body["credential"] == rest_password(SECRET, username)
                assert body["iceServers"] == [
                    {"urls": URIS, "username": username, "credential": body["credential"]}
                ]
                assert (body["otherUdpPort"], body["relayPorts"]) == (3478, [49152, 65535])
                second = await (await client.post("/v1/network/check-credentials")).json()
                assert second["username"] != username  # a fresh user, with its own quota
                assert (await client.get("/v1/network/check-credentials")).status == 405

        run(scenario())

    def test_rate_limited_per_address(self, tls: ssl.SSLContext, store: SqliteStore) -> None:
        async def scenario() -> None:
            async with client_for(tls, store, check_rate=3) as client:
                statuses = [(await client.post("/v1/network/check-credentials")).status for _ in range(4)]
                assert statuses == [200, 200, 200, 429]
                limited = await client.post("/v1/network/check-credentials")
                assert limited.headers["Retry-After"] == "20"
                assert (await limited.json())["error"]["code"] == "rate-limited"

        run(scenario())


class TestCheckPageAndDocument:
    def test_check_page(self, tls: ssl.SSLContext, store: SqliteStore) -> None:
        async def scenario() -> None:
            async with client_for(tls, store) as client:
                page = await client.get("/check")
                assert page.status == 200
                assert page.content_type == "text/html"
                text = await page.text()
                assert '<script type="module" src="/static/check.js"></script>' in text
                assert "<style" not in text and " style=" not in text
                assert "script-src 'self'" in page.headers["Content-Security-Policy"]
                for path, kind in (
                    ("/static/check.js", "text/javascript"),
                    ("/static/check.css", "text/css"),
                ):
                    response = await client.get(path)
                    assert response.status == 200 and response.content_type == kind, path

        run(scenario())

    def test_openapi_documents_exactly_the_routes(self, tls: ssl.SSLContext, store: SqliteStore) -> None:
        async def scenario() -> None:
            async with client_for(tls, store) as client:
                document = await (await client.get("/v1/openapi.json")).json()
                assert client.app is not None
                routes = {
                    (route.resource.canonical, route.method.lower())
                    for route in client.app.router.routes()
                    if route.resource is not None
                    and route.method not in ("*", "HEAD")
                    and route.resource.canonical.startswith("/v1/")
                    and route.resource.canonical != "/v1/ws"
                }
                documented = {
                    (path, method)
                    for path, item in document["paths"].items()
                    for method in item
                    if method in ("get", "post", "put", "patch", "delete")
                }
                assert documented == routes
                assert document["paths"]["/v1/network/check-credentials"]["post"]["security"] == []

        run(scenario())


def test_check_files_exist() -> None:
    for name in ("check.html", "static/check.js", "static/check.css"):
        assert (WEB_DIR / name).is_file(), name
