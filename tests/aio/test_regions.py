"""``/v1/regions`` and ``/v1/rtt`` (meet443.aio.regions) on the main app over TLS: what a page may read
from which origin, and that the region nodes enter the page's Content-Security-Policy."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from meet443.aio.certs import ensure_certificate, make_server_ssl_context
from meet443.aio.http import build_main_app
from meet443.config import turn_uris_for
from meet443.regions import Region, RegionMap

from .test_http import directives, tls_client

PUBLIC_URL = "https://eu.meet.example"
US = "https://us.meet.example:8443"
REGIONS = RegionMap(
    "eu",
    (
        Region("eu", PUBLIC_URL, tuple(turn_uris_for(PUBLIC_URL, 443))),
        Region("us", US, tuple(turn_uris_for(US, 8443))),
    ),
)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    cert, key = ensure_certificate(tmp_path_factory.mktemp("tls"), ["127.0.0.1"])
    return make_server_ssl_context(cert, key)


def test_region_list_and_rtt_answers(tls: ssl.SSLContext) -> None:
    async def scenario() -> None:
        app = build_main_app(PUBLIC_URL, regions=lambda: REGIONS)
        async with tls_client(app, tls) as client:
            listed = await client.get("/v1/regions")
            assert listed.status == 200 and listed.headers["Cache-Control"] == "no-store"
            assert await listed.json() == REGIONS.to_json()
            assert "Access-Control-Allow-Origin" not in listed.headers  # the page's own node only
            csp = directives(listed.headers["Content-Security-Policy"])
            assert csp["connect-src"] == f"'self' wss://eu.meet.example {US}"

            for origin in (PUBLIC_URL, US, "HTTPS://US.meet.example:8443"):
                rtt = await client.get("/v1/rtt", headers={"Origin": origin})
                assert rtt.status == 204 and await rtt.read() == b""
                assert rtt.headers["Cache-Control"] == "no-store"
                assert rtt.headers["Access-Control-Allow-Origin"] == origin
                assert rtt.headers["Timing-Allow-Origin"] == origin
                assert rtt.headers["Vary"] == "Origin"
            for stranger in ("https://evil.example", "null", "https://us.meet.example"):
                rtt = await client.get("/v1/rtt", headers={"Origin": stranger})
                assert rtt.status == 204
                assert "Access-Control-Allow-Origin" not in rtt.headers
                assert "Timing-Allow-Origin" not in rtt.headers

    asyncio.run(scenario())


def test_a_single_node_lists_itself_and_keeps_its_csp(tls: ssl.SSLContext) -> None:
    alone = RegionMap.single("default", PUBLIC_URL, turn_uris_for(PUBLIC_URL, 443))

    async def scenario() -> None:
        async with tls_client(build_main_app(PUBLIC_URL, regions=lambda: alone), tls) as client:
            listed = await client.get("/v1/regions")
            assert (await listed.json())["regions"] == [{"name": "default", "rttUrl": f"{PUBLIC_URL}/v1/rtt"}]
            assert directives(listed.headers["Content-Security-Policy"])["connect-src"] == (
                "'self' wss://eu.meet.example"
            )

    asyncio.run(scenario())
