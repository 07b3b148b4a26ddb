"""The main HTTP app: web client pages, static modules, security headers, plain-HTTP redirect."""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from meet443.aio.certs import ensure_certificate, make_server_ssl_context
from meet443.aio.http import WEB_DIR, HttpService, build_main_app, sum_expositions
from meet443.aio.network import NetworkEndpoints
from meet443.network import NetworkDescription
from meet443.proto.signaling.admission import RoomMode
from meet443.store.sqlite import SqliteStore

PUBLIC_URL = "https://meet.example.org:8443"
INDEX = "<!doctype html><title>landing</title>"
ROOM = "<!doctype html><title>room</title>"
NOT_A_ROOM = "<!doctype html><title>not a meeting address</title>"
Client = TestClient[web.Request, web.Application]

CSP_WITHOUT_EMBEDDING = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self' wss://meet.example.org:8443; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def directives(csp: str) -> dict[str, str]:
    return dict(directive.strip().partition(" ")[::2] for directive in csp.split(";"))


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(scenario)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    cert, key = ensure_certificate(tmp_path_factory.mktemp("tls"), ["127.0.0.1"])
    return make_server_ssl_context(cert, key)


@pytest.fixture
def web_dir(tmp_path: Path) -> Path:
    root = tmp_path / "web"
    (root / "static" / "lib").mkdir(parents=True)
    (root / "index.html").write_text(INDEX)
    (root / "room.html").write_text(ROOM)
    (root / "not-a-room.html").write_text(NOT_A_ROOM)
    (root / "static" / "app.js").write_text("export const answer = 42;\n")
    (root / "static" / "lib" / "style.css").write_text("body { margin: 0 }\n")
    (root / "static" / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (root / "static" / ".hidden.js").write_text("secret")
    (root / "secret.txt").write_text("outside static")
    (root / "static" / "escape.js").symlink_to(root / "secret.txt")
    return root


@asynccontextmanager
async def https_client(
    tls: ssl.SSLContext,
    web_dir: Path = WEB_DIR,
    embed_origins: Sequence[str] = (),
    meetings: SqliteStore | None = None,
) -> AsyncIterator[Client]:
    app = build_main_app(PUBLIC_URL, embed_origins=embed_origins, meetings=meetings, web_dir=web_dir)
    async with tls_client(app, tls) as client:
        yield client


@asynccontextmanager
async def tls_client(app: web.Application, tls: ssl.SSLContext) -> AsyncIterator[Client]:
    server = TestServer(app)
    # TestClient would start it without TLS; no access log, as HttpService runs it.
    await server.start_server(ssl=tls, access_log=None)
    async with TestClient(server, connector=aiohttp.TCPConnector(ssl=False)) as client:
        yield client


@asynccontextmanager
async def plain_client(web_dir: Path = WEB_DIR) -> AsyncIterator[Client]:
    async with TestClient(TestServer(build_main_app(PUBLIC_URL, web_dir=web_dir))) as client:
        yield client


def network_endpoints() -> NetworkEndpoints:
    description = NetworkDescription.single_node(PUBLIC_URL, ["203.0.113.5"], 443, (49152, 65535))
    return NetworkEndpoints(
        description=description,
        turn_secret="s",
        turn_uris=["turn:meet.example.org:8443?transport=udp"],
        relay_ports=(49152, 65535),
        other_udp_port=lambda: 3478,
        check_rate_per_minute=6,
    )


def assert_security_headers(response: aiohttp.ClientResponse) -> None:
    headers = response.headers
    assert headers["Content-Security-Policy"] == CSP_WITHOUT_EMBEDDING
    assert headers["Permissions-Policy"] == "camera=(self), microphone=(self), display-capture=(self)"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Strict-Transport-Security"] == "max-age=31536000"


class TestSecurityHeaders:
    def test_without_embed_origins(self, tls: ssl.SSLContext, web_dir: Path) -> None:
        async def scenario() -> None:
            async with https_client(tls, web_dir) as client:
                for path in (
                    "/",
                    "/standup",
                    "/static/app.js",
                    "/healthz",
                    "/nope/x",
                    "/V1",
                    "/static/none.js",
                ):
                    response = await client.get(path)
                    assert_security_headers(response)

        run(scenario())

    def test_with_embed_origins(self, tls: ssl.SSLContext, web_dir: Path) -> None:
        async def scenario() -> None:
            origins = ["https://Intranet.example/", "https://app.example:9443", "https://intranet.example"]
            async with https_client(tls, web_dir, embed_origins=origins) as client:
                for path in ("/standup", "/v1"):
                    response = await client.get(path)
                    csp = directives(response.headers["Content-Security-Policy"])
                    assert csp["frame-ancestors"] == "https://intranet.example https://app.example:9443"
                    assert csp == {
                        **directives(CSP_WITHOUT_EMBEDDING),
                        "frame-ancestors": "https://intranet.example https://app.example:9443",
                    }
                    allow = '(self "https://intranet.example" "https://app.example:9443")'
                    assert response.headers["Permissions-Policy"] == (
                        f"camera={allow}, microphone={allow}, display-capture={allow}"
                    )
                    # CSP frame-ancestors governs; X-Frame-Options cannot name origins.
                    assert "X-Frame-Options" not in response.headers

        run(scenario())

    @pytest.mark.parametrize(
        "origin", ["http://a.example", "https://a.example/path", 'https://a.example"', "https://a.example; x"]
    )
    def test_bad_embed_origin_is_refused(self, origin: str) -> None:
        with pytest.raises(ValueError):
            build_main_app(PUBLIC_URL, embed_origins=[origin])

    def test_connect_src_follows_the_public_url(self, tls: ssl.SSLContext) -> None:
        async def scenario() -> None:
            async with tls_client(build_main_app("https://Meet.Example.org/"), tls) as client:
                response = await client.get("/healthz", headers={"Host": "evil.example"})
                csp = directives(response.headers["Content-Security-Policy"])
                assert csp["connect-src"] == "'self' wss://meet.example.org"

        run(scenario())


class TestPages:
    def test_landing_and_room_pages(self, tls: ssl.SSLContext, web_dir: Path) -> None:
        async def scenario() -> None:
            async with https_client(tls, web_dir) as client:
                response = await client.get("/")
                assert response.status == 200
                assert await response.text() == INDEX
                assert response.headers["Content-Type"] == "text/html; charset=utf-8"
                for name in ("standup", "a", "0-team-x", "x" * 64, "team-abcdefghijklmnop"):
                    response = await client.get(f"/{name}")
                    assert response.status == 200, name
                    assert await response.text() == ROOM
                    assert response.headers["Cache-Control"] == "no-cache"
                response = await client.get("/standup?roomKey=abc")
                assert await response.text() == ROOM
                head = await client.head("/standup")
                assert head.status == 200

        run(scenario())

    @pytest.mark.parametrize(
        "path",
        [
            "/Team_Sync",
            "/-standup",
            "/stand_up",
            "/" + "x" * 65,
            "/standup/",
            "/standup/more",
            "/check",
            "/healthz/",
            "/v1",
            "/static",
            "/metrics",
            "/api",
            "/favicon.ico",
            "/robots.txt",
            "/%20",
        ],
    )
    def test_not_a_room(self, tls: ssl.SSLContext, web_dir: Path, path: str) -> None:
        async def scenario() -> None:
            async with https_client(tls, web_dir) as client:
                response = await client.get(URL(path, encoded=True))
                assert response.status == 404
                assert ROOM not in await response.text()
                assert_security_headers(response)

        run(scenario())

    @pytest.mark.parametrize(
        "path", ["/caf%C3%A9", "/Team_Sync", "/-standup", "/" + "x" * 65, "/%20", "/Check"]
    )
    def test_a_bad_room_address_gets_the_friendly_page(
        self, tls: ssl.SSLContext, web_dir: Path, path: str
    ) -> None:
        async def scenario() -> None:
            async with https_client(tls, web_dir) as client:
                response = await client.get(URL(path, encoded=True))
                assert response.status == 404
                assert await response.text() == NOT_A_ROOM
                assert response.headers["Content-Type"] == "text/html; charset=utf-8"
                assert_security_headers(response)

        run(scenario())

    @pytest.mark.parametrize(
        ("path", "location"),
        [
            ("/TeamSync", "/teamsync"),
            ("/STANDUP-2", "/standup-2"),
            ("/Standup?roomKey=a%2Bb&x=1", "/standup?roomKey=a%2Bb&x=1"),
        ],
    )
    def test_mixed_case_redirects_to_lower_case(
        self, tls: ssl.SSLContext, web_dir: Path, path: str, location: str
    ) -> None:
        async def scenario() -> None:
            async with https_client(tls, web_dir) as client:
                response = await client.get(URL(path, encoded=True), allow_redirects=False)
                assert response.status == 301
                assert response.headers["Location"] == location
                assert_security_headers(response)
                followed = await client.get(URL(path, encoded=True))
                assert await followed.text() == ROOM

        run(scenario())

    def test_the_package_pages_exist(self, tls: ssl.SSLContext) -> None:
        async def scenario() -> None:
            async with https_client(tls) as client:
                for path in ("/", "/standup"):
                    response = await client.get(path)
                    assert response.status == 200
                    assert "<html" in (await response.text()).lower()

        run(scenario())

    def test_missing_page_is_a_404(self, tls: ssl.SSLContext, tmp_path: Path) -> None:
        async def scenario() -> None:
            async with https_client(tls, tmp_path) as client:
                assert (await client.get("/")).status == 404
                assert (await client.get("/standup")).status == 404

        run(scenario())

    def test_query_strings_are_not_logged(
        self, tls: ssl.SSLContext, web_dir: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        async def scenario() -> None:
            async with https_client(tls, web_dir) as client:
                await client.get("/standup?roomKey=s3cret-room-key")
                await client.get("/Bad?roomKey=s3cret-room-key")

        with caplog.at_level(logging.DEBUG):
            run(scenario())
        assert "/standup" in caplog.text
        assert "s3cret-room-key" not in caplog.text


class TestStatic:
    @pytest.mark.parametrize(
        ("path", "content_type"),
        [
            ("/static/app.js", "text/javascript; charset=utf-8"),
            ("/static/lib/style.css", "text/css; charset=utf-8"),
            ("/static/logo.svg", "image/svg+xml"),
        ],
    )
    def test_served_with_revalidation(
        self, tls: ssl.SSLContext, web_dir: Path, path: str, content_type: str
    ) -> None:
        async def scenario() -> None:
            async with https_client(tls, web_dir) as client:
                response = await client.get(path)
                assert response.status == 200
                assert response.headers["Content-Type"] == content_type
                assert response.headers["Cache-Control"] == "no-cache"
                etag = response.headers["ETag"]
                again = await client.get(path, headers={"If-None-Match": etag})
                assert again.status == 304
                assert again.headers["Cache-Control"] == "no-cache"

        run(scenario())

    @pytest.mark.parametrize(
        "path",
        [
            "/static/",
            "/static/missing.js",
            "/static/.hidden.js",
            "/static/%2e%2e/secret.txt",
            "/static/..%2fsecret.txt",
            "/static/lib//style.css",
            "/static/lib",
            "/static/escape.js",
            "/static/lib%5c..%5c..%5csecret.txt",
        ],
    )
    def test_nothing_outside_static(self, tls: ssl.SSLContext, web_dir: Path, path: str) -> None:
        async def scenario() -> None:
            async with https_client(tls, web_dir) as client:
                response = await client.get(URL(path, encoded=True))
                assert response.status == 404
                assert "outside static" not in await response.text()

        run(scenario())


class TestHostileRequests:
    """What a scanner on the Internet sends: no 500s, no tracebacks, no version banner."""

    def test_nul_byte_in_a_static_path(
        self, tls: ssl.SSLContext, web_dir: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        async def scenario() -> None:
            async with https_client(tls, web_dir) as client:
                for path in ("/static/app.js%00.txt", "/static/%00", "/static/lib%00/style.css"):
                    response = await client.get(URL(path, encoded=True))
                    assert response.status == 404, path
                    assert_security_headers(response)

        with caplog.at_level(logging.DEBUG):
            run(scenario())
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]

    def test_a_failing_handler_is_a_500_with_the_headers(
        self, tls: ssl.SSLContext, web_dir: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        async def boom(request: web.Request) -> web.Response:
            raise ValueError("a bug")

        async def scenario() -> None:
            app = build_main_app(PUBLIC_URL, web_dir=web_dir)
            app.router.add_get("/v1/boom", boom)
            async with tls_client(app, tls) as client:
                response = await client.get("/v1/boom")
                assert response.status == 500
                assert "a bug" not in await response.text()
                assert_security_headers(response)

        with caplog.at_level(logging.ERROR):
            run(scenario())
        assert [r.getMessage() for r in caplog.records] == ["GET /v1/boom failed"]

    def test_head_wherever_get_is_answered(self, tls: ssl.SSLContext, web_dir: Path, tmp_path: Path) -> None:
        async def scenario(store: SqliteStore, api_key: str, meeting: str) -> None:
            app = build_main_app(PUBLIC_URL, meetings=store, web_dir=web_dir, network=network_endpoints())
            auth = {"Authorization": f"Bearer {api_key}"}
            async with tls_client(app, tls) as client:
                for path in (
                    "/", "/healthz", "/check", "/standup", "/static/app.js", "/v1/openapi.json",
                    f"/v1/meetings/{meeting}", "/v1/network", "/static/missing.js",
                ):  # fmt: skip
                    got = await client.get(path, headers=auth)
                    head = await client.head(path, headers=auth)
                    assert (head.status, path) == (got.status, path)
                    assert head.headers.get("Content-Type") == got.headers.get("Content-Type"), path
                    assert await head.read() == b""
                    assert_security_headers(head)

        async def with_a_meeting() -> None:
            async with SqliteStore.open(tmp_path / "data") as store:
                _, api_key = await store.api_keys.create("", now_ms=0)
                tomorrow = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
                created = await store.create(
                    end_ms=int(tomorrow.timestamp() * 1000),
                    mode=RoomMode.NORMAL,
                    now_ms=int(time.time() * 1000),
                )
                await scenario(store, api_key, created.meeting.meeting_id)

        run(with_a_meeting())

    def test_no_version_banner_and_one_line_for_a_bad_request(self, caplog: pytest.LogCaptureFixture) -> None:
        """Through :class:`HttpService`, as ``meet443 serve`` runs it, so aiohttp's own 400 counts."""

        async def scenario() -> list[bytes]:
            http = HttpService(build_main_app(PUBLIC_URL))
            await http.start()
            server = await asyncio.get_running_loop().create_server(
                lambda: http.protocol(False, asyncio.get_running_loop().time(), lambda: None), "127.0.0.1", 0
            )
            port = server.sockets[0].getsockname()[1]
            replies = []
            try:
                for request in (
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /nowhere/at/all HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\x00: y\r\n\r\n",
                ):
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(request)
                    replies.append(await reader.readuntil(b"\r\n\r\n"))
                    writer.close()
            finally:
                server.close()
                await http.close()
            return replies

        with caplog.at_level(logging.DEBUG):
            ok, redirect, bad = asyncio.run(scenario())
        assert ok.startswith(b"HTTP/1.1 200") and redirect.startswith(b"HTTP/1.1 308")
        assert bad.split(b" ")[1] == b"400"
        for reply in (ok, redirect, bad):
            assert b"\r\nServer: meet443\r\n" in reply
            assert b"aiohttp" not in reply and b"Python" not in reply
        parser_lines = [r for r in caplog.records if r.name == "meet443.aio.http.server"]
        assert len(parser_lines) == 1 and parser_lines[0].exc_info is None
        assert parser_lines[0].levelno == logging.INFO and "\n" not in parser_lines[0].getMessage()


class TestPlainHttp:
    def test_redirects_to_the_public_url_without_the_query(self, web_dir: Path) -> None:
        async def scenario() -> None:
            async with plain_client(web_dir) as client:
                for path in ("/", "/standup?roomKey=k", "/static/app.js", "/v1/openapi.json"):
                    response = await client.get(path, allow_redirects=False)
                    assert response.status == 308
                    assert response.headers["Location"] == PUBLIC_URL + path.partition("?")[0]

        run(scenario())

    def test_healthz(self, web_dir: Path) -> None:
        async def scenario() -> None:
            async with plain_client(web_dir) as client:
                response = await client.get("/healthz")
                assert response.status == 200
                assert await response.json() == {"status": "ok"}
                assert "Strict-Transport-Security" not in response.headers

        run(scenario())


class TestWithMeetingsApi:
    def test_api_routes_and_headers(self, tls: ssl.SSLContext, web_dir: Path, tmp_path: Path) -> None:
        async def scenario(store: SqliteStore, api_key: str) -> None:
            async with https_client(tls, web_dir, meetings=store) as client:
                response = await client.get("/v1/openapi.json")
                assert response.status == 200
                assert_security_headers(response)
                response = await client.post("/v1/meetings", json={})
                assert response.status == 401
                assert_security_headers(response)
                tomorrow = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
                response = await client.post(
                    "/v1/meetings",
                    json={"endDate": tomorrow.isoformat(), "roomMode": "normal"},
                    headers={"Authorization": f"Bearer {api_key}"},
                )
                assert response.status == 201
                assert_security_headers(response)
                room_url = URL((await response.json())["roomUrl"])
                assert str(room_url.origin()) == PUBLIC_URL
                page = await client.get(room_url.path)
                assert await page.text() == ROOM

        async def with_a_key() -> None:
            async with SqliteStore.open(tmp_path / "data") as store:
                _, api_key = await store.api_keys.create("", now_ms=0)
                await scenario(store, api_key)

        run(with_a_key())


def test_redirect_keeps_the_path_encoded(web_dir: Path) -> None:
    async def scenario() -> None:
        async with plain_client(web_dir) as client:
            response = await client.get(URL("/a%0d%0aSet-Cookie:%20x", encoded=True), allow_redirects=False)
            assert response.status == 308
            assert response.headers["Location"].lower() == PUBLIC_URL + "/a%0d%0aset-cookie:%20x"
            assert "Set-Cookie" not in response.headers

    run(scenario())


def test_expositions_of_several_processes_add_up() -> None:
    """``--workers``: /metrics is the control process's exposition and every worker's, summed."""
    worker = (
        "# HELP meet443_turn_allocations Active TURN allocations.\n"
        "# TYPE meet443_turn_allocations gauge\n"
        "meet443_turn_allocations 2\n"
        "# HELP meet443_dropped_total Packets and messages dropped, by reason.\n"
        "# TYPE meet443_dropped_total counter\n"
        'meet443_dropped_total{reason="empty"} 1\n'
    )
    other = worker.replace(" 2\n", " 3\n").replace('"empty"} 1', '"malformed_stun"} 4')
    text = sum_expositions(
        ["# HELP meet443_workers Media worker processes.\nmeet443_workers 2\n", worker, other]
    )
    assert text.splitlines() == [
        "# HELP meet443_workers Media worker processes.",
        "meet443_workers 2",
        "# HELP meet443_turn_allocations Active TURN allocations.",
        "# TYPE meet443_turn_allocations gauge",
        "meet443_turn_allocations 5",
        "# HELP meet443_dropped_total Packets and messages dropped, by reason.",
        "# TYPE meet443_dropped_total counter",
        'meet443_dropped_total{reason="empty"} 1',
        'meet443_dropped_total{reason="malformed_stun"} 4',
    ]
