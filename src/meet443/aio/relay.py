"""Signaling relayed between nodes (docs/cluster.md "How signaling crosses nodes").

A participant's WebSocket reaches any node, its edge; the room lives on its home. The edge opens a
WebSocket to the home's ``<node-url>/v1/ws`` and copies frames both ways, unchanged, until either
side closes; the close code and reason pass through. The edge tells the home who the client is in
the :data:`RELAY_HEADER`, authenticated with an HMAC, so the home applies its per-address limits to
the client's address, not the edge's, and a header from anyone without the cluster key is refused.

The header: ``v1 <unix seconds> <client ip> <hex HMAC-SHA256>`` over
``v1|<home node id>|<seconds>|<client ip>``, keyed with :func:`cluster_key`. It is valid for
:data:`RELAY_SKEW` seconds either way and only at the node it names, and it travels inside TLS.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from meet443.exceptions import SignalingError
from meet443.proto.signaling.messages import Join, decode_client_message

__all__ = [
    "RELAY_HEADER",
    "HomeUnreachable",
    "RoomElsewhere",
    "cluster_key",
    "join_room",
    "relay_frames",
    "relay_header",
    "verify_relay_header",
]

logger = logging.getLogger(__name__)

RELAY_HEADER = "Meet443-Relay"
RELAY_SKEW = 30.0
#: RFC 6455 §7.4.1: try again later (the home could not be reached).
CLOSE_TRY_AGAIN_LATER = 1013
#: RFC 6455 §7.4.1 1012 (service restart): the home went away; the client reconnects at once and
#: resumes on the room's next home (docs/cluster.md "Failover").
CLOSE_SERVICE_RESTART = 1012
#: Opening the home's socket (TCP, TLS, the upgrade) takes a few round trips between nodes; a home
#: that takes longer is stopped or overloaded, and the join goes on to take the room over.
CONNECT_TIMEOUT = 2.0
#: The edge pings the home this often and gives the relay up after half of it without a pong: a
#: stopped home (SIGSTOP, a frozen VM) keeps its TCP connections open and says nothing.
UPSTREAM_HEARTBEAT = 4.0
_KEY_LABEL = b"meet443 cluster relay v1"


class RoomElsewhere(Exception):
    """A relayed join reached a node that is not (any more) the room's home."""


class HomeUnreachable(Exception):
    """The home's ``/v1/ws`` could not be opened: nothing was sent to the client yet."""


def cluster_key(turn_secret: str) -> bytes:
    """The relay key, derived from the cluster's shared TURN secret (never used as is)."""
    return hmac.new(turn_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def _mac(key: bytes, node_id: str, seconds: int, client_ip: str) -> str:
    return hmac.new(key, f"v1|{node_id}|{seconds}|{client_ip}".encode(), hashlib.sha256).hexdigest()


def relay_header(key: bytes, home_node_id: str, client_ip: str, now: float) -> str:
    """The header an edge sends to ``home_node_id`` for a client at ``client_ip``."""
    seconds = int(now)
    return f"v1 {seconds} {client_ip} {_mac(key, home_node_id, seconds, client_ip)}"


def verify_relay_header(key: bytes, node_id: str, header: str, now: float) -> str | None:
    """The client's IP address if ``header`` is a valid relay header for ``node_id``, else None."""
    parts = header.split(" ")
    if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit():
        return None
    _, seconds_text, client_ip, mac = parts
    seconds = int(seconds_text)
    if abs(now - seconds) > RELAY_SKEW:
        return None
    if not hmac.compare_digest(mac, _mac(key, node_id, seconds, client_ip)):
        return None
    try:
        ipaddress.ip_address(client_ip)
    except ValueError:
        return None
    return client_ip


def unavailable_error(message: str) -> str:
    """docs/signaling.md "Error codes" ``unavailable``: the room cannot be reached now."""
    return json.dumps({"type": "error", "code": "unavailable", "message": message, "ref": "join"})


async def relay_frames(
    client: web.WebSocketResponse,
    session: aiohttp.ClientSession,
    url: str,
    header: str,
    first: bytes,
    ssl_context: ssl.SSLContext,
    max_msg_size: int,
) -> bool:
    """Copy frames between ``client`` and the home at ``url``, starting with ``first`` (the join).
    Returns False when the home's socket ended without a close frame (the home died: the client
    is told 1012, to come back and resume on the room's next home), True otherwise. Raises
    :class:`HomeUnreachable` when the home cannot be reached at all."""
    try:
        upstream = await asyncio.wait_for(
            session.ws_connect(
                url,
                headers={RELAY_HEADER: header},
                ssl=ssl_context,
                max_msg_size=max_msg_size,
                autoping=True,
                heartbeat=UPSTREAM_HEARTBEAT,
                decode_text=False,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
            ),
            CONNECT_TIMEOUT,
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise HomeUnreachable(f"relay to {url} failed: {exc}") from None
    try:
        await upstream.send_frame(first, WSMsgType.TEXT)
        up = asyncio.ensure_future(copy_frames(client, upstream))
        down = asyncio.ensure_future(copy_frames(upstream, client))
        done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if down in done and up not in done:
            code, reason = down.result()
            if code == SINK_GONE:
                return True  # the client went while a frame was on its way to it
            if code is None or code == WSCloseCode.ABNORMAL_CLOSURE:
                await client.close(code=CLOSE_SERVICE_RESTART, message=b"home lost")
                return False
            # The home closed: the client gets its code and reason (1000 after kicked, ...).
            await client.close(code=code, message=reason.encode())
    finally:
        await upstream.close()
    return True


#: What :func:`_copy` returns when the sink, not the source, went away.
SINK_GONE = -1


async def copy_frames(
    source: web.WebSocketResponse[Any] | aiohttp.ClientWebSocketResponse[Any],
    sink: web.WebSocketResponse[Any] | aiohttp.ClientWebSocketResponse[Any],
) -> tuple[int | None, str]:
    """Forward data frames until ``source`` closes; its close code and reason (code None when
    it broke off without one), or ``SINK_GONE`` when a frame could not be written to ``sink``:
    a relay whose client left must not read as a home that died."""
    while True:
        try:
            message = await source.receive()
        except (ConnectionError, RuntimeError) as exc:
            logger.debug("relay source ended: %s", exc)
            return None, ""
        if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            try:
                await sink.send_frame(message.data, message.type)
            except (ConnectionError, RuntimeError) as exc:
                logger.debug("relay sink ended: %s", exc)
                return SINK_GONE, ""
        elif message.type is WSMsgType.CLOSE:
            return int(message.data), str(message.extra or "")
        elif message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return source.close_code, ""


def join_room(data: bytes) -> str | None:
    """The room of a ``join`` frame, or None for any other frame (or a malformed one, which the
    signaling core answers)."""
    if b'"join"' not in data:
        return None
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if isinstance(message, dict) and message.get("type") == "join" and isinstance(message.get("room"), str):
        return str(message["room"])
    return None


def join_rtts(data: bytes) -> Mapping[str, float]:
    """The round trips a ``join`` frame carries (docs/signaling.md ``join.rtts``), validated as
    the signaling core validates them; empty for a join without them or any other frame."""
    try:
        message = decode_client_message(data)
    except SignalingError:
        return {}
    return (message.rtts or {}) if isinstance(message, Join) else {}
