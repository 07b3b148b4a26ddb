"""HTTP on the main TCP port (behind the sniff) and the Prometheus metrics listener.

aiohttp's low-level server gives one protocol object per connection, which the port sniffer hands
each connection it identifies as HTTP. Query strings are never logged (they may carry room keys).

The main app serves the web client (``/`` the landing page, ``/<room>`` the meeting page for a valid
room name, a redirect to the lower-case name for a mixed-case one, and a 404 page that states the rule
for any other, ``/check`` the network check page, ``/static/...`` its ES modules and styles, no build
step), ``/healthz``, and whatever the caller adds (the meetings and network APIs, the signaling
WebSocket). Every HTTPS answer, errors included, carries a
strict Content-Security-Policy and Permissions-Policy: camera, microphone and screen capture only for
this origin and the ``--embed-origin`` sites, which alone may frame the pages.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path

from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError

from meet443.aio.api import add_api_routes
from meet443.aio.network import NetworkEndpoints, add_network_routes
from meet443.aio.regions import add_region_routes
from meet443.aio.tcp import PendingDeadline, WrappingProtocol
from meet443.config import parse_origin, parse_public_url
from meet443.proto.signaling.admission import is_valid_room_name
from meet443.proto.signaling.room import SignalingServer
from meet443.proto.turn.server import TurnServer
from meet443.regions import RegionMap
from meet443.sfu.conference import Conference
from meet443.store import MeetingStore

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The web client: ``index.html``, ``room.html`` and ``static/``.
WEB_DIR = Path(__file__).resolve().parent.parent / "web"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Paths that plain (unencrypted) HTTP may serve; everything else is redirected to HTTPS.
PLAIN_HTTP_PATHS = frozenset({"/healthz"})
#: Features the meeting page needs; granted to this origin and the embedding origins only.
PERMISSIONS = ("camera", "microphone", "display-capture")

# ES modules load without a build step, so their URLs carry no content hash: browsers must
# revalidate each time (a 304 thanks to the ETag), or an upgrade would mix old and new modules.
_REVALIDATE = "no-cache"
# With nosniff, a module script needs a JavaScript MIME type; do not depend on the system's table.
_STATIC_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
    ".txt": "text/plain",
    ".html": "text/html",
}
_TEXT_TYPES = frozenset({"text/javascript", "text/css", "text/plain", "text/html", "application/json"})

# aiohttp fills in ``Server: Python/3.x aiohttp/3.x`` wherever a response has no Server header,
# including its own 400s for unparsable requests, which no middleware or signal sees; naming the
# product without versions (nginx's ``server_tokens off``) tells a scanner nothing to look up.
web_response.SERVER_SOFTWARE = "meet443"  # type: ignore[attr-defined]  # imported there, read there


@functools.lru_cache(maxsize=8)
def security_headers(
    public_url: str, embed_origins: Sequence[str] = (), connect_origins: Sequence[str] = ()
) -> dict[str, str]:
    """The headers of every HTTPS answer (without HSTS, which :func:`build_main_app` adds on TLS).

    ``connect_origins`` are other nodes the page may fetch from: each region's node, whose
    ``/v1/rtt`` the page times (docs/cluster.md "Closest relay"). Cached: a cluster's region list
    changes rarely, and a tuple of origins is a cheap key.

    ``frame-ancestors`` lists ``embed_origins`` (or ``'none'``); X-Frame-Options cannot name other
    origins, so it is sent (``DENY``) only when nobody may frame the pages. Permissions-Policy quotes
    origins (RFC 8941 strings) where CSP does not.
    """
    parts = urllib.parse.urlsplit(public_url)
    websocket = "wss" if parts.scheme == "https" else "ws"
    ancestors = " ".join(embed_origins) if embed_origins else "'none'"
    csp = "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data: blob:",
            "media-src 'self' blob: mediastream:",
            " ".join(
                ["connect-src 'self'", f"{websocket}://{parts.netloc.lower()}", *sorted(set(connect_origins))]
            ),
            f"frame-ancestors {ancestors}",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )
    allow = " ".join(["self", *(f'"{origin}"' for origin in embed_origins)])
    headers = {
        **SECURITY_HEADERS,
        "Content-Security-Policy": csp,
        "Permissions-Policy": ", ".join(f"{feature}=({allow})" for feature in PERMISSIONS),
    }
    if embed_origins:
        del headers["X-Frame-Options"]
    return headers


def _static_file(root: Path, relative: str) -> Path | None:
    """``root/relative`` if it is a regular file inside ``root``; no dot files, no escaping."""
    segments = relative.split("/")
    # A NUL byte (``%00``) would make the file system calls raise instead of answering "no such file".
    if any(
        not segment or segment.startswith(".") or "\\" in segment or "\0" in segment for segment in segments
    ):
        return None
    try:
        path = root.joinpath(*segments).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        return None
    return path


def _file_response(path: Path) -> web.FileResponse:
    content_type = _STATIC_TYPES.get(path.suffix.lower())
    headers = {"Cache-Control": _REVALIDATE}
    if content_type is not None:
        charset = "; charset=utf-8" if content_type in _TEXT_TYPES else ""
        headers["Content-Type"] = content_type + charset
    return web.FileResponse(path, headers=headers)


def build_main_app(
    public_url: str,
    *,
    embed_origins: Sequence[str] = (),
    meetings: MeetingStore | None = None,
    web_dir: Path = WEB_DIR,
    network: NetworkEndpoints | None = None,
    on_meeting_deleted: Callable[[str], None] | None = None,
    regions: Callable[[], RegionMap] | None = None,
) -> web.Application:
    """The app on the main port: the web client, ``/healthz``, and with ``meetings`` the meetings API
    (and with ``network`` too, ``/v1/network``, whose API keys are the meetings API's).
    ``on_meeting_deleted(room_name)`` ends a meeting deleted through the API for everyone in it.

    ``embed_origins`` are ``https://host[:port]`` origins (as :func:`meet443.config.parse_origin`
    accepts; checked again here because they go into headers).

    ``regions()`` lists the deployment's regions (``/v1/regions``, ``/v1/rtt``); without it this node
    is the one region there is.
    """
    public_url = parse_public_url(public_url)
    origins = tuple(dict.fromkeys(parse_origin(origin) for origin in embed_origins))
    own = public_url.rstrip("/")

    @web.middleware
    async def security(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.secure and request.path not in PLAIN_HTTP_PATHS:
            # The raw (still percent-encoded) path: a decoded one could put CR/LF into Location.
            raise web.HTTPPermanentRedirect(public_url + request.rel_url.raw_path)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # errors are answers too, and get the same headers
            _add_headers(request, exc.headers)
            logger.debug("%s %s %d", request.method, request.path, exc.status)
            raise
        except Exception:
            # A bug: its traceback is worth a log entry, but the answer is a 500 like any other,
            # with the same headers and no detail.
            logger.exception("%s %s failed", request.method, request.path)
            error = web.HTTPInternalServerError()
            _add_headers(request, error.headers)
            raise error from None
        _add_headers(request, response.headers)
        logger.debug("%s %s %d", request.method, request.path, response.status)
        return response

    def _add_headers(request: web.Request, target: MutableMapping[str, str]) -> None:
        others = () if regions is None else tuple(o for o in regions().origins() if o != own)
        target.update(security_headers(public_url, origins, others))
        if request.secure:
            target["Strict-Transport-Security"] = "max-age=31536000"

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def landing(request: web.Request) -> web.FileResponse:
        return _file_response(web_dir / "index.html")

    async def check(request: web.Request) -> web.FileResponse:
        return _file_response(web_dir / "check.html")

    async def room(request: web.Request) -> web.FileResponse:
        name = request.match_info["room"]
        if is_valid_room_name(name):
            return _file_response(web_dir / "room.html")
        lower = name.lower()
        if is_valid_room_name(lower):
            # People type and paste names as they are written (TeamSync); the room is the same one.
            # Only [a-z0-9-] remain, so the name needs no quoting; the raw query keeps a room key.
            query = request.rel_url.raw_query_string
            raise web.HTTPMovedPermanently(f"/{lower}?{query}" if query else f"/{lower}")
        response = _file_response(web_dir / "not-a-room.html")
        response.set_status(404)
        return response

    async def static(request: web.Request) -> web.FileResponse:
        path = _static_file(web_dir / "static", request.match_info["path"])
        if path is None:
            raise web.HTTPNotFound()
        return _file_response(path)

    app = web.Application(middlewares=[security])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/", landing)
    app.router.add_get("/static/{path:.+}", static)
    app.router.add_get("/check", check)
    # Last: one path segment that no other route took. /v1/... has two and never lands here.
    app.router.add_get("/{room}", room)
    if meetings is not None:
        api = add_api_routes(
            app, meetings, public_url, network=network is not None, on_meeting_deleted=on_meeting_deleted
        )
        if network is not None:
            add_network_routes(app, network, api)
    if regions is not None:
        add_region_routes(app, public_url, regions)
    return app


class _OneLineParserErrors(logging.Filter):
    """aiohttp logs a request it cannot parse with a traceback; anyone on the Internet can send one,
    so it becomes one line (the parser's message), at info level like nginx's "client sent
    invalid request"."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            # The parser's message can quote the offending bytes on further lines.
            detail = (exc.message or type(exc).__name__).strip().splitlines()[0]
            record.msg = f"{record.getMessage()}: {detail}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


#: Slowloris: the first request's headers must be in this long after the accept (the connection is
#: pending until then, see :mod:`meet443.aio.tcp`). Browsers send them with the first packet after
#: the TLS handshake; Apache's mod_reqtimeout allows 20 s for headers, nginx 60 s.
REQUEST_HEADER_TIMEOUT = 10.0
#: An idle keep-alive connection closes after this long (nginx's default; aiohttp's is an hour). It
#: is also how long later requests on the connection may take to send their headers.
KEEPALIVE_TIMEOUT = 75.0
_END_OF_HEADERS = b"\r\n\r\n"


class _FirstRequestDeadline(WrappingProtocol):
    """Wraps aiohttp's per-connection protocol: the connection is pending until the headers of its
    first request are complete, and closed if they are not in by :data:`REQUEST_HEADER_TIMEOUT`
    after the accept. aiohttp itself waits for them as long as its keep-alive timeout."""

    def __init__(self, inner: asyncio.Protocol, accepted_at: float, settled: Callable[[], None]) -> None:
        super().__init__(inner)
        self._accepted_at = accepted_at
        self._settled = settled
        self._pending: PendingDeadline | None = None
        self._tail = b""
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._pending = PendingDeadline(
            self._accepted_at, REQUEST_HEADER_TIMEOUT, self._settled, self._too_slow
        )
        self.inner.connection_made(transport)

    def _too_slow(self) -> None:
        assert self.transport is not None
        peer = self.transport.get_extra_info("peername")
        logger.debug(
            "closing a connection from %s: no request headers in %.0f s", peer, REQUEST_HEADER_TIMEOUT
        )
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        pending = self._pending
        if pending is not None and pending.pending:
            # The end of the headers may straddle two reads; nothing else of the request comes first.
            seen = self._tail + data
            if _END_OF_HEADERS in seen:
                pending.settle()
            else:
                self._tail = seen[-3:]
        self.inner.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending is not None:
            self._pending.settle()
        self.inner.connection_lost(exc)


#: aiohttp's per-connection protocol logs here (its ``logger`` argument).
_server_logger = logging.getLogger(__name__ + ".server")
_server_logger.addFilter(_OneLineParserErrors())


class HttpService:
    """Owns the aiohttp runner whose per-connection protocols the TCP sniffer hands connections to."""

    def __init__(self, app: web.Application) -> None:
        self.runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            logger=_server_logger,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )

    async def start(self) -> None:
        await self.runner.setup()

    def protocol(self, secure: bool, accepted_at: float, settled: Callable[[], None]) -> asyncio.Protocol:
        """aiohttp's protocol for one connection the TCP port accepted at ``accepted_at`` (loop time);
        ``settled`` is called once its first request's headers are in, or it closes."""
        server = self.runner.server
        assert server is not None, "HttpService.start() must run first"
        return _FirstRequestDeadline(server(), accepted_at, settled)

    async def close(self) -> None:
        await self.runner.cleanup()


def _metric(lines: list[str], name: str, kind: str, help_text: str, samples: Mapping[str, int]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value}" for labels, value in samples.items()]


def render_metrics(
    turn: TurnServer | None, signaling: SignalingServer | None = None, sfu: Conference | None = None
) -> str:
    """Prometheus text exposition (no per-user or per-room labels)."""
    lines: list[str] = []
    if turn is not None:
        _turn_metrics(lines, turn)
    if signaling is not None:
        _signaling_metrics(lines, signaling)
    if sfu is not None:
        _sfu_metrics(lines, sfu)
    return "\n".join(lines) + "\n"


def sum_expositions(texts: Iterable[str]) -> str:
    """Several processes' expositions as one (``--workers``): samples with the same name and labels
    are added up, each metric keeps the HELP and TYPE it first came with. Every meet443 metric is
    a count (a counter, or a gauge of things held), so the sum is the server's."""
    comments: dict[str, list[str]] = {}
    samples: dict[str, dict[str, float]] = {}
    for text in texts:
        for line in text.splitlines():
            if line.startswith("# "):
                name = line.split(" ", 3)[2]
                held = comments.setdefault(name, [])
                if len(held) < 2 and line not in held:
                    held.append(line)
                samples.setdefault(name, {})
            elif line:
                series, _, value = line.rpartition(" ")
                name = series.partition("{")[0]
                metric = samples.setdefault(name, {})
                metric[series] = metric.get(series, 0.0) + float(value)
    lines: list[str] = []
    for name, metric in samples.items():
        lines += comments.get(name, [])
        lines += [f"{series} {_number(value)}" for series, value in metric.items()]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _turn_metrics(lines: list[str], turn: TurnServer) -> None:
    counters = turn.counters
    _metric(
        lines, "meet443_turn_allocations", "gauge", "Active TURN allocations.", {"": len(turn.allocations)}
    )
    _metric(
        lines,
        "meet443_turn_allocations_created_total",
        "counter",
        "TURN allocations created.",
        {"": counters.allocations_created},
    )
    by_transport = {f'{{transport="{t.value}"}}': n for t, n in counters.packets_relayed.items()}
    _metric(
        lines,
        "meet443_turn_packets_relayed_total",
        "counter",
        "Datagrams relayed, by client transport.",
        by_transport,
    )
    bytes_by_transport = {f'{{transport="{t.value}"}}': n for t, n in counters.bytes_relayed.items()}
    _metric(
        lines,
        "meet443_turn_bytes_relayed_total",
        "counter",
        "Payload bytes relayed, by client transport.",
        bytes_by_transport,
    )
    _metric(
        lines,
        "meet443_turn_auth_failures_total",
        "counter",
        "Requests refused for bad or expired credentials.",
        {"": counters.auth_failures},
    )
    dropped = {f'{{reason="{r}"}}': n for r, n in sorted(counters.dropped.items())}
    _metric(lines, "meet443_dropped_total", "counter", "Packets and messages dropped, by reason.", dropped)


def _signaling_metrics(lines: list[str], signaling: SignalingServer) -> None:
    _metric(
        lines,
        "meet443_signaling_connections",
        "gauge",
        "Open signaling WebSockets.",
        {"": signaling.connection_count},
    )
    _metric(
        lines,
        "meet443_signaling_participants",
        "gauge",
        "Participants in rooms.",
        {"": signaling.participant_count},
    )
    _metric(lines, "meet443_signaling_rooms", "gauge", "Rooms with participants.", {"": signaling.room_count})
    sc = signaling.counters
    _metric(lines, "meet443_signaling_joins_total", "counter", "Joins admitted.", {"": sc.joins})
    _metric(lines, "meet443_signaling_resumes_total", "counter", "Sessions resumed.", {"": sc.resumes})
    _metric(
        lines,
        "meet443_signaling_abuse_closes_total",
        "counter",
        "Sockets closed for abuse (1008).",
        {"": sc.abuse_closes},
    )
    _metric(
        lines,
        "meet443_signaling_origin_refusals_total",
        "counter",
        "WebSocket handshakes refused (403) for a foreign Origin.",
        {"": sc.origin_refusals},
    )
    errors = {f'{{code="{c}"}}': n for c, n in sorted(sc.errors.items())}
    _metric(lines, "meet443_signaling_errors_total", "counter", "Error messages sent, by code.", errors)
    failures = {f'{{region="{r}"}}': n for r, n in sorted(sc.region_probe_failures.items())}
    _metric(
        lines,
        "meet443_region_probe_failures_total",
        "counter",
        "Joins whose browser could not reach a region's node (join.unreachable), by region.",
        failures,
    )


def _sfu_metrics(lines: list[str], sfu: Conference) -> None:
    rc, cc = sfu.router_counters, sfu.counters
    gauges = {
        "meet443_sfu_participants": ("Participants with the SFU.", sfu.participant_count),
        "meet443_sfu_tracks": ("Tracks published to the SFU.", sfu.track_count),
        "meet443_sfu_connections": ("ICE-lite sessions on the main UDP port.", len(sfu.mux.sessions)),
    }
    for name, (help_text, value) in gauges.items():
        _metric(lines, name, "gauge", help_text, {"": value})
    totals = {
        "meet443_sfu_packets_forwarded_total": ("RTP packets forwarded.", rc.packets_forwarded),
        "meet443_sfu_bytes_forwarded_total": ("RTP bytes forwarded.", rc.bytes_forwarded),
        "meet443_sfu_nacks_received_total": ("NACKs from subscribers.", rc.nacks_received),
        "meet443_sfu_retransmissions_total": ("Packets resent for NACKs.", rc.retransmissions),
        "meet443_sfu_plis_sent_total": ("Keyframe requests sent to publishers.", rc.plis_sent),
        "meet443_sfu_layer_switches_total": ("Simulcast layer switches.", rc.layer_switches),
        "meet443_sfu_probe_packets_total": ("Padding packets sent to probe bandwidth.", rc.probe_packets),
        "meet443_sfu_dtls_handshakes_total": ("DTLS-SRTP handshakes completed.", cc.dtls_handshakes),
    }
    for name, (help_text, value) in totals.items():
        _metric(lines, name, "counter", help_text, {"": value})
    dropped = {**cc.dropped}
    for reason, n in rc.dropped.items():
        dropped[reason] = dropped.get(reason, 0) + n
    samples = {f'{{reason="{r}"}}': n for r, n in sorted(dropped.items())}
    _metric(lines, "meet443_sfu_dropped_total", "counter", "SFU packets dropped, by reason.", samples)


def render_named_metrics(metrics: Mapping[str, tuple[str, str, int]]) -> str:
    """Metrics given as name → (type, help, value), such as the cluster link's."""
    lines: list[str] = []
    for name, (kind, help_text, value) in metrics.items():
        _metric(lines, name, kind, help_text, {"": value})
    return "\n".join(lines) + "\n" if lines else ""


def build_metrics_app(render: Callable[[], Awaitable[str]]) -> web.Application:
    """``/metrics`` on its own listener (``--metrics-listen``), from ``render``: the cores of this
    process (:func:`render_metrics`), or a control process's sum over its workers."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=await render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
