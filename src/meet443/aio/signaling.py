"""``GET /v1/ws``: the signaling WebSocket of docs/signaling.md around the sans-I/O core.

Every decision is :class:`~meet443.proto.signaling.room.SignalingServer`'s; this module only moves
frames, asks the meeting directory when the core says :class:`LookupRoom`, ticks the core's timer
once a second and writes TURN credentials with the server's shared secret.

Frame size. The contract answers a frame over 64 KiB with ``too-large`` and keeps the socket, so
aiohttp's own limit (``max_msg_size``, which closes the socket with 1009) is set to twice that:
frames between 64 and 128 KiB reach the core and get ``too-large``; anything larger is not a
client bug worth a polite answer, and a lower ceiling bounds what one socket can make us buffer.

Compression is off: permessage-deflate keeps a zlib state of a few hundred KiB per socket, which
would dominate the memory of an idle meeting, and SDP is small next to the media it sets up.

Heartbeats are the core's (the client's ``ping``, a 30 s silence limit), not WebSocket pings.

Outgoing frames go through a queue per socket drained by a short-lived writer task, so one slow
reader never stalls the loop that serves the others; a socket whose queue passes
:data:`MAX_QUEUED_BYTES` is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

from meet443.config import turn_uris_for
from meet443.proto.signaling.admission import Refusal, RoomAdmission
from meet443.proto.signaling.messages import MAX_FRAME_BYTES, ServerMessage
from meet443.proto.signaling.room import (
    Close,
    LeftSfu,
    LookupRoom,
    MeetingEnded,
    Output,
    Send,
    SignalingLimits,
    SignalingServer,
    ToSfu,
)
from meet443.proto.turn.credentials import rest_credentials

__all__ = ["MAX_MSG_SIZE", "MAX_QUEUED_BYTES", "Directory", "SignalingService"]

logger = logging.getLogger(__name__)

#: Asked on every join that is not a resume: ``(room, room_key, now)``.
Directory = Callable[[str, str | None, float], Awaitable[RoomAdmission | Refusal]]

MAX_MSG_SIZE = 2 * MAX_FRAME_BYTES
#: A socket that cannot take this much of what we send it is gone in all but name.
MAX_QUEUED_BYTES = 1 << 20
TIMER_INTERVAL = 1.0
SHUTDOWN_SECONDS = 2.0
#: RFC 6455 §7.4.1: the server hit an unexpected condition (the directory failed).
CLOSE_INTERNAL_ERROR = 1011
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008


class _Peer:
    __slots__ = ("closing", "queue", "queued", "writer", "ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.queue: deque[bytes | Close] = deque()
        self.queued = 0
        self.writer: asyncio.Task[None] | None = None
        self.closing = False


class SignalingService:
    """The signaling endpoint of one node; :meth:`add_routes` puts it on the main aiohttp app."""

    def __init__(
        self,
        directory: Directory,
        *,
        turn_secret: str,
        public_url: str,
        turn_port: int,
        credential_ttl: int = 3600,
        force_relay: bool = False,
        max_participants: int = 10000,
        limits: SignalingLimits | None = None,
        on_meeting_ended: Callable[[str], Awaitable[None]] | None = None,
        on_sfu: Callable[[ToSfu | LeftSfu], None] | None = None,
        clock: Callable[[], float] = time.time,
        token: Callable[[int], str] = secrets.token_urlsafe,
    ) -> None:
        uris = turn_uris_for(public_url, turn_port)

        def ice_servers(participant_id: str, now: float) -> tuple[list[dict[str, object]], int]:
            # docs/signaling.md: username = expiry:participantId, for the TURN service on our port.
            username, credential = rest_credentials(turn_secret, participant_id, credential_ttl, now)
            return [{"urls": list(uris), "username": username, "credential": credential}], credential_ttl

        self.core = SignalingServer(
            ice_servers=ice_servers,
            token=token,
            force_relay=force_relay,
            max_participants=max_participants,
            limits=limits,
        )
        self._directory = directory
        self._on_meeting_ended = on_meeting_ended
        #: Where group-room media requests go (the SFU); set after construction by ``app.py``.
        self.on_sfu = on_sfu
        self._clock = clock
        self._ids = itertools.count(1)
        self._peers: dict[int, _Peer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------------------------------------
    # Life cycle

    def add_routes(self, app: web.Application) -> None:
        """Register ``GET /v1/ws`` and start/stop the timer with the app."""
        app.router.add_get("/v1/ws", self.handle)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)

    async def _on_startup(self, app: web.Application) -> None:
        self.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()

    def start(self) -> None:
        """Start the 1-second timer (idempotent; ``add_routes`` does it on app start-up)."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().create_task(self._tick())

    async def close(self) -> None:
        """Stop the timer and close every socket with 1001 (going away)."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self._peers):
            self._enqueue(conn, Close(conn, CLOSE_GOING_AWAY, "server shutting down"))
        writers = [p.writer for p in self._peers.values() if p.writer is not None]
        if writers:
            await asyncio.wait(writers, timeout=SHUTDOWN_SECONDS)

    # ---------------------------------------------------------------------------------------------
    # The socket

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=MAX_MSG_SIZE, compress=False, autoping=True, heartbeat=None, decode_text=False
        )
        await ws.prepare(request)
        conn = next(self._ids)
        self._peers[conn] = _Peer(ws)
        self._apply(self.core.connect(conn, request.remote or "", self._clock()))
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._apply(self.core.receive(conn, message.data, self._clock()))
        finally:
            self._apply(self.core.disconnected(conn, self._clock()))
            peer = self._peers.pop(conn, None)
            if peer is not None and peer.writer is not None and not peer.closing:
                peer.writer.cancel()
        return ws

    def _apply(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Send):
                self._enqueue(output.conn, output.payload)
            elif isinstance(output, Close):
                self._enqueue(output.conn, output)
            elif isinstance(output, LookupRoom):
                self._spawn(self._lookup(output))
            elif isinstance(output, MeetingEnded):
                if self._on_meeting_ended is not None:
                    self._spawn(self._on_meeting_ended(output.room))
            elif self.on_sfu is not None:
                self.on_sfu(output)

    def deliver(self, room: str, participant: str, message: ServerMessage) -> None:
        """A message from the SFU to one participant."""
        self._apply(self.core.deliver(room, participant, message))

    def broadcast(self, room: str, message: ServerMessage) -> None:
        """A message from the SFU to a whole room."""
        self._apply(self.core.broadcast(room, message))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lookup(self, lookup: LookupRoom) -> None:
        try:
            answer = await self._directory(lookup.room, lookup.room_key, self._clock())
        except Exception:
            # The room key is never logged; the traceback carries no arguments.
            logger.exception("conn %d: directory lookup for room %s failed", lookup.conn, lookup.room)
            self._enqueue(lookup.conn, Close(lookup.conn, CLOSE_INTERNAL_ERROR, "directory unavailable"))
            return
        self._apply(self.core.admit(lookup.conn, answer, self._clock()))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TIMER_INTERVAL)
            try:
                self._apply(self.core.handle_timer(self._clock()))
            except Exception:
                # A bug in one expiry must not stop heartbeats and credential refresh for all.
                logger.exception("signaling timer failed")

    # ---------------------------------------------------------------------------------------------
    # Writing

    def _enqueue(self, conn: int, item: bytes | Close) -> None:
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
