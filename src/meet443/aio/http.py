"""HTTP on the main TCP port (behind the sniff) and the Prometheus metrics listener.

aiohttp's low-level server gives one protocol object per connection, which the port sniffer hands
each connection it identifies as HTTP. Query strings are never logged (they may carry room keys).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from meet443.aio.turn import TurnService

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Paths that plain (unencrypted) HTTP may serve; everything else is redirected to HTTPS.
PLAIN_HTTP_PATHS = frozenset({"/healthz"})


def build_main_app(public_url: str) -> web.Application:
    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.secure and request.path not in PLAIN_HTTP_PATHS:
            raise web.HTTPPermanentRedirect(public_url.rstrip("/") + request.path)
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        if request.secure:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
        logger.debug("%s %s %d", request.method, request.path, response.status)
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(middlewares=[security])
    app.router.add_get("/healthz", healthz)
    return app


class HttpService:
    """Owns the aiohttp runner whose per-connection protocols the TCP sniffer hands connections to."""

    def __init__(self, app: web.Application) -> None:
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        await self.runner.setup()

    def protocol(self, secure: bool) -> asyncio.Protocol:
        server = self.runner.server
        assert server is not None, "HttpService.start() must run first"
        return server()

    async def close(self) -> None:
        await self.runner.cleanup()


def render_metrics(service: TurnService) -> str:
    """Prometheus text exposition of the TURN counters (no per-user labels)."""
    counters = service.turn.counters
    lines = [
        "# HELP meet443_turn_allocations Active TURN allocations.",
        "# TYPE meet443_turn_allocations gauge",
        f"meet443_turn_allocations {len(service.turn.allocations)}",
        "# HELP meet443_turn_allocations_created_total TURN allocations created.",
        "# TYPE meet443_turn_allocations_created_total counter",
        f"meet443_turn_allocations_created_total {counters.allocations_created}",
        "# HELP meet443_turn_packets_relayed_total Datagrams relayed, by client transport.",
        "# TYPE meet443_turn_packets_relayed_total counter",
    ]
    lines += [
        f'meet443_turn_packets_relayed_total{{transport="{t.value}"}} {n}'
        for t, n in counters.packets_relayed.items()
    ]
    lines += [
        "# HELP meet443_turn_bytes_relayed_total Payload bytes relayed, by client transport.",
        "# TYPE meet443_turn_bytes_relayed_total counter",
    ]
    lines += [
        f'meet443_turn_bytes_relayed_total{{transport="{t.value}"}} {n}'
        for t, n in counters.bytes_relayed.items()
    ]
    lines += [
        "# HELP meet443_turn_auth_failures_total Requests refused for bad or expired credentials.",
        "# TYPE meet443_turn_auth_failures_total counter",
        f"meet443_turn_auth_failures_total {counters.auth_failures}",
        "# HELP meet443_dropped_total Packets and messages dropped, by reason.",
        "# TYPE meet443_dropped_total counter",
    ]
    lines += [f'meet443_dropped_total{{reason="{r}"}} {n}' for r, n in sorted(counters.dropped.items())]
    return "\n".join(lines) + "\n"


def build_metrics_app(service: TurnService) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=render_metrics(service), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
