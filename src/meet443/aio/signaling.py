"""``GET /v1/ws``: the signaling WebSocket of docs/signaling.md around the sans-I/O core.

Every decision is :class:`~meet443.proto.signaling.room.SignalingServer`'s, reached through the
node (:class:`~meet443.aio.node.NodeService`); this module checks the handshake, reads frames into
the node and writes the frames the node sends.

Frame size (docs/signaling.md "Error codes"). aiohttp's own limit (``max_msg_size``) is twice the
contract's 64 KiB: frames between 64 and 128 KiB reach the core, which answers ``too-large`` and
keeps the socket (an honest client's oversized SDP gets a reason); a frame over 128 KiB closes the
socket with 1009 (RFC 6455 §7.4.1, Message Too Big) without an answer, because keeping the socket
would mean reading, and buffering, whatever size the client claims. Binary frames reach the core,
which refuses them (``bad-message``).

Compression is off: permessage-deflate keeps a zlib state of a few hundred KiB per socket, which
would dominate the memory of an idle meeting, and SDP is small next to the media it sets up.

Heartbeats are the core's (the client's ``ping``, a 30 s silence limit), not WebSocket pings.

Origin. Browsers send ``Origin`` on every WebSocket handshake but let any page open a socket to any
host, so without a check a page on another site could run signaling from its visitors' browsers
(cross-site WebSocket hijacking). A handshake that carries ``Origin`` must name this server: the host
and port of ``https://`` + its ``Host`` header, or of the public URL (for a proxy that rewrites
``Host``). Schemes are not compared, but each side's port defaults to its own scheme's, so
``https://host`` and ``https://host:443`` are one origin; host names are compared case-insensitively
in their IDNA (``xn--``) form. Embedding origins do not count: an embedded meeting page is served
from our origin inside the iframe, so its socket's ``Origin`` is ours. ``Origin: null`` (sandboxed
frames, ``file:`` pages) is refused. A handshake without ``Origin`` comes from no browser (tests,
aiortc tools; ``meet443 check`` sends ours) and is let through: a same-origin check is about pages
in browsers. A refusal is a 403 with a short reason before any upgrade, logged by path (never with
the query string) and counted (``meet443_signaling_origin_refusals_total``).

In a cluster (docs/cluster.md "How signaling crosses nodes") the first ``join`` of a socket asks
the cluster where its room lives; a room on another node gets the socket relayed there
(:mod:`meet443.aio.relay`), and this node's signaling core forgets it. A relayed handshake from
another node carries no Origin but the relay header, whose HMAC is checked instead; a relay
header that does not verify (or any, on a single node) is refused with 403.

Outgoing frames go through a queue per socket drained by a short-lived writer task, so one slow
reader never stalls the loop that serves the others; a socket whose queue passes
:data:`MAX_QUEUED_BYTES` is closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Literal

from aiohttp import WSMsgType, web

from meet443.aio.relay import (
    CLOSE_TRY_AGAIN_LATER,
    RELAY_HEADER,
    RoomElsewhere,
    join_room,
    join_rtts,
    unavailable_error,
)
from meet443.exceptions import StateUnavailable
from meet443.proto.signaling.messages import MAX_FRAME_BYTES
from meet443.proto.signaling.room import Close

if TYPE_CHECKING:
    from meet443.aio.cluster import Cluster
    from meet443.aio.node import NodeService
    from meet443.state import NodeInfo

__all__ = ["MAX_MSG_SIZE", "MAX_QUEUED_BYTES", "SignalingEndpoint", "origin_host_port"]

logger = logging.getLogger(__name__)

MAX_MSG_SIZE = 2 * MAX_FRAME_BYTES
#: A socket that cannot take this much of what we send it is gone in all but name.
MAX_QUEUED_BYTES = 1 << 20
SHUTDOWN_SECONDS = 2.0
#: RFC 6455 §7.4 (IANA registry): the server is restarting; clients reconnect at once and resume.
CLOSE_SERVICE_RESTART = 1012
CLOSE_POLICY_VIOLATION = 1008

#: Default ports of the schemes a web page's origin (or the public URL) has; other schemes never match.
_DEFAULT_PORTS = {"https": 443, "http": 80}
#: Characters that cannot be in a ``Host`` header's ``host[:port]``, but that ``urlsplit`` would
#: read as the end of the authority or as user information.
_NOT_IN_HOST = frozenset("/?#@\\ \t")


def _normal_host(host: str) -> str | None:
    """A host name lower-cased in its IDNA (``xn--``) form, an IPv6 address in its canonical form."""
    host = host.lower()
    if ":" in host:
        if "%" in host:  # a zone: no browser origin carries one
            return None
        try:
            return ipaddress.IPv6Address(host).compressed
        except ValueError:
            return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return host or None


def _split_origin(origin: str, *, any_path: bool = False) -> tuple[str, str, int | None] | None:
    """``(scheme, host, port)`` of ``scheme://host[:port]``, the port ``None`` when left out."""
    try:
        parts = urllib.parse.urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or parts.hostname is None or parts.username is not None or parts.password is not None:
        return None
    if not any_path and (parts.path or parts.query or parts.fragment or origin.endswith(("?", "#"))):
        return None
    host = _normal_host(parts.hostname)
    return None if host is None else (parts.scheme, host, port)


def origin_host_port(origin: str, *, any_path: bool = False) -> tuple[str, int] | None:
    """``(host, port)`` of a serialized web origin ``http[s]://host[:port]`` (RFC 6454 §6.2), ``None``
    for ``null`` or anything else; with ``any_path``, of a URL's origin whatever its path (the public
    URL).

    The port defaults to the scheme's, so ``https://Host`` and ``https://host:443`` are the same.
    """
    split = _split_origin(origin, any_path=any_path)
    if split is None or split[0] not in _DEFAULT_PORTS:
        return None
    scheme, host, port = split
    return host, _DEFAULT_PORTS[scheme] if port is None else port


def _host_header_origin(host: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``https://`` + a ``Host`` header."""
    if not host or any(c in _NOT_IN_HOST for c in host):
        return None
    return origin_host_port("https://" + host)


class _Peer:
    __slots__ = ("closing", "queue", "queued", "writer", "ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: deque[bytes | Close] = deque()
        self.queued = 0
        self.writer: asyncio.Task[None] | None = None
        self.closing = False


class SignalingEndpoint:
    """The signaling WebSockets of one node; :meth:`add_routes` puts them on the main aiohttp app."""

    def __init__(self, service: NodeService, public_url: str) -> None:
        self._service = service
        self._public_origin = origin_host_port(public_url, any_path=True)
        self._ids = itertools.count(1)
        self._peers: dict[int, _Peer] = {}

    def add_routes(self, app: web.Application) -> None:
        """Register ``GET /v1/ws``; its sockets close (1012) when the app shuts down."""
        app.router.add_get("/v1/ws", self.handle)
        app.on_shutdown.append(self._on_shutdown)

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every socket with 1012 (service restart): the node keeps its rooms for the resume
        window (docs/signaling.md "Node restarts"), so clients come back at once."""
        for conn in list(self._peers):
            self.enqueue(conn, Close(conn, CLOSE_SERVICE_RESTART, "server restarting"))
        writers = [p.writer for p in self._peers.values() if p.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=SHUTDOWN_SECONDS)

    # ---------------------------------------------------------------------------------------------
    # The socket

    def _refusal(self, request: web.Request) -> tuple[str, str] | None:
        """Why this handshake may not open a socket, and its Origin as it may be logged; or ``None``."""
        origins = request.headers.getall("Origin", [])
        if not origins:
            return None  # not a browser
        if len(origins) > 1:
            return "more than one Origin header", "(several)"
        origin = origins[0].strip()
        if origin == "null":
            return "Origin null may not open the signaling socket", "null"
        if _split_origin(origin) is None:  # with a path or query perhaps, which is never logged
            return "malformed Origin header", "(malformed)"
        found = origin_host_port(origin)  # None for the origin of an extension, say
        if found is not None and found in (
            self._public_origin,
            _host_header_origin(request.headers.get("Host", "")),
        ):
            return None
        return "cross-origin WebSocket refused: Origin does not match this server", repr(origin[:200])

    async def handle(self, request: web.Request) -> web.StreamResponse:
        service = self._service
        cluster = service.cluster
        client_ip, relayed = request.remote or "", RELAY_HEADER in request.headers
        if relayed:
            verified = cluster.verify_relay(request.headers[RELAY_HEADER]) if cluster is not None else None
            if verified is None:
                service.node.signaling.counters.origin_refusals += 1
                logger.warning(
                    "refused %s from %s: relay header does not verify", request.path, request.remote
                )
                raise web.HTTPForbidden(text="relay header refused\n")
            client_ip = verified
        else:
            refusal = self._refusal(request)
            if refusal is not None:
                reason, origin = refusal
                service.node.signaling.counters.origin_refusals += 1
                # The path only: query strings may carry room keys and are never logged.
                logger.info(
                    "refused %s from %s: %s (Origin %s)", request.path, request.remote, reason, origin
                )
                raise web.HTTPForbidden(text=reason + "\n")
        ws = web.WebSocketResponse(
            max_msg_size=MAX_MSG_SIZE, compress=False, autoping=True, heartbeat=None, decode_text=False
        )
        await ws.prepare(request)
        conn = next(self._ids)
        peer = self._peers[conn] = _Peer(ws)
        service.signaling_connect(conn, client_ip)
        handed_over = False
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT and cluster is not None and not peer.closing:
                    home = await self._home_of(conn, cluster, message.data, relayed=relayed)
                    if home == "refused":
                        # Written here, not queued: no other task reads or closes the socket.
                        handed_over = True
                        self._forget(conn)
                        await ws.send_str(unavailable_error("the meeting cannot be reached now; try again"))
                        await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"try again")
                        return ws
                    if home != "here":
                        # The room lives elsewhere: this node forgets the socket and relays it.
                        handed_over = True
                        self._forget(conn)
                        if await self._relay(ws, cluster, home, message.data, client_ip):
                            return ws
                        # Its home died and this node took the room over: the join is served here.
                        conn = next(self._ids)
                        peer = self._peers[conn] = _Peer(ws)
                        service.signaling_connect(conn, client_ip)
                        handed_over = False
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    service.signaling_message(conn, message.data, binary=message.type is WSMsgType.BINARY)
        finally:
            if not handed_over:
                self._forget(conn)
        return ws

    async def _relay(
        self, ws: web.WebSocketResponse, cluster: Cluster, home: NodeInfo, join: bytes, client_ip: str
    ) -> bool:
        """Relay ``ws`` to ``home``; False when the join is to be served here after all."""
        room = join_room(join) or ""
        try:
            return await cluster.relay(ws, home, join, client_ip, room)
        except StateUnavailable as exc:
            logger.warning("join of room %s refused: %s", room, exc)
            await ws.send_str(unavailable_error("the meeting's server cannot be reached; try again"))
            await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"home unreachable")
            return True

    def _forget(self, conn: int) -> None:
        self._service.signaling_closed(conn)
        peer = self._peers.pop(conn, None)
        if peer is not None and peer.writer is not None and not peer.closing:
            peer.writer.cancel()

    async def _home_of(
        self, conn: int, cluster: Cluster, data: bytes, *, relayed: bool
    ) -> NodeInfo | Literal["here", "refused"]:
        """For a ``join`` on a socket in no room: the room's home if it is another node, ``here``,
        or ``refused`` (``unavailable``; the socket closes with 1013)."""
        room = join_room(data)
        if room is None or self._service.node.signaling.room_of(conn) is not None:
            return "here"
        try:
            home = await cluster.route(room, relayed=relayed, rtts=join_rtts(data))
        except (StateUnavailable, RoomElsewhere) as exc:
            logger.warning("conn %d: join of room %s refused: %s", conn, room, exc)
            return "refused"
        return "here" if home is None else home

    # ---------------------------------------------------------------------------------------------
    # Writing

    def enqueue(self, conn: int, item: bytes | Close) -> None:
        """Send a frame (or close) on ``conn`` after everything queued before it."""
        peer = self._peers.get(conn)
        if peer is None or peer.closing:
            return
        if isinstance(item, Close):
            peer.closing = True
        else:
            peer.queued += len(item)
            if peer.queued > MAX_QUEUED_BYTES:
                logger.warning("conn %d: closed, %d bytes waiting to be sent", conn, peer.queued)
                peer.queue.clear()
                peer.queued = 0
                peer.closing = True
                item = Close(conn, CLOSE_POLICY_VIOLATION, "too slow")
        peer.queue.append(item)
        if peer.writer is None:
            peer.writer = asyncio.get_running_loop().create_task(self._write(peer))

    async def _write(self, peer: _Peer) -> None:
        ws = peer.ws
        try:
            while peer.queue:
                item = peer.queue.popleft()
                if isinstance(item, Close):
                    await ws.close(code=item.code, message=item.reason.encode())
                    return
                peer.queued -= len(item)
                await ws.send_frame(item, WSMsgType.TEXT)
        except (ConnectionError, RuntimeError) as exc:
            # The peer vanished mid-write; the reading side notices and tells the core.
            logger.debug("write failed: %s", exc)
        finally:
            peer.writer = None
