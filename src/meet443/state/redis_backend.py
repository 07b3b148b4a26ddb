"""The shared state of a cluster in Redis (redis-py's asyncio client); docs/cluster.md "Redis".

Keys (all under ``meet443:``):

=============================  =================================================================
``node:<id>``                  the node's :class:`~meet443.state.NodeInfo` (JSON), PX 3000; its
                               expiry in Redis's own clock decides liveness
``nodes``                      sorted set of node ids, an index for listing (scores: last seen)
``room:<name>:home``           ``"<node id> <epoch>"``, the room's lease (PX 10000)
``room:<name>:epoch``          the room's fencing epoch, INCR on every claim
``revoked``                    sorted set participant → until (UNIX s); expired ones trimmed
``revoke``                     pub/sub channel ``"<participant> <until>"``
``chat:<room>``                stream of ``e`` (epoch), ``s`` (seq), ``m`` (message JSON),
                               MAXLEN ~500, expires a day after its last message
``drain:<id>``                 set by ``meet443 drain``; the node's heartbeat reads it
``room:<name>:state``          hash: ``e`` (the epoch it was written under), ``s`` (the room's
                               snapshot); expires a day after its last write
=============================  =================================================================

Claim, renew, release and chat appends are Lua scripts, so each is atomic and one round trip.
Commands time out after :data:`COMMAND_TIMEOUT` and are not retried by the client: the callers
retry on their own schedule (heartbeats, lease renewals), and a join waits on no retry loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from meet443.config import redact_url
from meet443.exceptions import ConfigError, StateUnavailable
from meet443.state import LEASE_SECONDS, NODE_TTL_SECONDS, Lease, NodeInfo, RevocationSink

__all__ = ["RedisState", "redact_url"]

logger = logging.getLogger(__name__)

PREFIX = "meet443:"
COMMAND_TIMEOUT = 1.0
CHAT_MAXLEN = 500
CHAT_KEEP_MS = 24 * 3600 * 1000
#: A room's snapshot outlives a quiet day of the room (each change writes it again).
ROOM_KEEP_MS = 24 * 3600 * 1000
#: How long a ``meet443 drain`` request stays (a drained node exits long before).
DRAIN_REQUEST_SECONDS = 24 * 3600
#: Resubscription after a lost pub/sub connection: from the first, doubling up to the last.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0

_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current then return current end
local epoch = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ' ' .. epoch
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: home, epoch, the dead node's registry entry. A number: milliseconds until that entry expires.
_TAKE_OVER = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return current end
if current then
  local ttl = redis.call('PTTL', KEYS[3])
  if ttl > 0 then return ttl end
  if ttl == -1 then return 1000 end
end
local epoch = redis.call('INCR', KEYS[2])
local value = ARGV[2] .. ' ' .. epoch
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return value
"""
# Fencing: a write under an epoch older than the room's latest claim is refused.
_SAVE_ROOM = """
local latest = tonumber(redis.call('GET', KEYS[2]) or '0')
if latest > tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 1 end
redis.call('HSET', KEYS[1], 'e', ARGV[1], 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# One writer appends a room's messages in order, so a retried one is the stream's last or older.
_APPEND_CHAT = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local f = last[1][2]
  if f[2] == ARGV[1] and tonumber(f[4]) >= tonumber(ARGV[2]) then return 0 end
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[1], 's', ARGV[2], 'm', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""
_LIVE = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('GET', ARGV[1] .. id)
  if v then table.insert(out, v) end
end
return out
"""


def _client(url: str, password: str | None, timeout: float | None) -> aioredis.Redis:
    try:
        return aioredis.from_url(
            url,
            password=password,
            socket_timeout=timeout,
            socket_connect_timeout=COMMAND_TIMEOUT,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
    except ValueError as exc:
        raise ConfigError(f"--redis: {exc}") from None


class RedisState:
    """:class:`~meet443.state.SharedState` in one Redis server (``redis://``, ``rediss://``)."""

    def __init__(self, url: str, password: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self._password = password
        self._clock = clock
        self._redis = _client(url, password, COMMAND_TIMEOUT)
        self._claim = self._redis.register_script(_CLAIM)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._take_over = self._redis.register_script(_TAKE_OVER)
        self._save_room = self._redis.register_script(_SAVE_ROOM)
        self._append_chat = self._redis.register_script(_APPEND_CHAT)
        self._live = self._redis.register_script(_LIVE)

    @classmethod
    def from_config(cls, url: str, password_file: Path | None) -> RedisState:
        password = None
        if password_file is not None:
            try:
                password = password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"--redis-password-file: {exc.strerror}: {password_file}") from None
        return cls(url, password)

    # -- registry ------------------------------------------------------------------------------

    async def heartbeat(self, node: NodeInfo) -> tuple[list[NodeInfo], bool]:
        now_ms = int(self._clock() * 1000)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(PREFIX + "node:" + node.node_id, node.encode(), px=int(NODE_TTL_SECONDS * 1000))
                pipe.zadd(PREFIX + "nodes", {node.node_id: now_ms})
                # The index only lists; the keys' expiry decides. Members silent for a minute go.
                pipe.zremrangebyscore(PREFIX + "nodes", "-inf", now_ms - 60_000)
                pipe.exists(PREFIX + "drain:" + node.node_id)
                await self._live(keys=[PREFIX + "nodes"], args=[PREFIX + "node:"], client=pipe)
                _, _, _, drain, raw = await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None
        return _nodes(raw), bool(drain)

    async def withdraw(self, node_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(PREFIX + "node:" + node_id)
                pipe.zrem(PREFIX + "nodes", node_id)
                await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None

    async def live_nodes(self) -> list[NodeInfo]:
        try:
            raw = await self._live(keys=[PREFIX + "nodes"], args=[PREFIX + "node:"])
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None
        return _nodes(raw)

    # -- placement -----------------------------------------------------------------------------

    async def claim(self, room: str, node_id: str, lease_seconds: float = LEASE_SECONDS) -> Lease:
        home, epoch = _room_keys(room)
        try:
            value = await self._claim(keys=[home, epoch], args=[node_id, int(lease_seconds * 1000)])
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None
        return Lease.decode(value.decode())

    async def home(self, room: str) -> Lease | None:
        try:
            value = await self._redis.get(_room_keys(room)[0])
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None
        return None if value is None else Lease.decode(value.decode())

    async def renew(self, room: str, lease: Lease, lease_seconds: float = LEASE_SECONDS) -> bool:
        try:
            done = await self._renew(
                keys=[_room_keys(room)[0]], args=[lease.encode(), int(lease_seconds * 1000)]
            )
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None
        return bool(done)

    async def release(self, room: str, lease: Lease) -> None:
        try:
            await self._release(keys=[_room_keys(room)[0]], args=[lease.encode()])
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None

    async def take_over(self, room: str, dead: Lease, node_id: str) -> Lease | float:
        home, epoch = _room_keys(room)
        try:
            value = await self._take_over(
                keys=[home, epoch, PREFIX + "node:" + dead.node_id],
                args=[dead.encode(), node_id, int(LEASE_SECONDS * 1000)],
            )
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None
        if isinstance(value, int):
            return value / 1000
        return Lease.decode(value.decode())

    async def save_room(self, room: str, epoch: int, snapshot: bytes) -> bool:
        return await self._write_room(room, epoch, snapshot)

    async def delete_room(self, room: str, epoch: int) -> bool:
        return await self._write_room(room, epoch, b"")

    async def _write_room(self, room: str, epoch: int, snapshot: bytes) -> bool:
        try:
            done = await self._save_room(
                keys=[PREFIX + f"room:{room}:state", _room_keys(room)[1]],
                args=[epoch, snapshot, ROOM_KEEP_MS],
            )
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None
        return bool(done)

    async def load_room(self, room: str) -> bytes | None:
        try:
            value = await self._redis.hget(PREFIX + f"room:{room}:state", "s")  # type: ignore[misc]
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None
        return None if value is None else bytes(value)

    # -- revocations ---------------------------------------------------------------------------

    async def revoke(self, participant: str, until: float) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(PREFIX + "revoked", {participant: until}, gt=True)
                pipe.zremrangebyscore(PREFIX + "revoked", "-inf", self._clock())
                pipe.publish(PREFIX + "revoke", f"{participant} {until!r}")
                await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None

    async def revocations(self, now: float) -> list[tuple[str, float]]:
        try:
            found = await self._redis.zrangebyscore(PREFIX + "revoked", f"({now!r}", "+inf", withscores=True)
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None
        return [(member.decode(), float(score)) for member, score in found]

    async def watch_revocations(self, sink: RevocationSink, ready: Callable[[], None]) -> None:
        backoff = BACKOFF_FIRST
        failures = 0
        while True:
            # Its own connection, with no read timeout: a subscriber waits as long as it must.
            listener = _client(self.url, self._password, None)
            pubsub = listener.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(PREFIX + "revoke")
                for participant, until in await self.revocations(self._clock()):
                    sink(participant, until)
                if failures:
                    logger.info("revocations: subscribed again after %d failed attempts", failures)
                failures, backoff = 0, BACKOFF_FIRST
                ready()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message.get("type") == "message":
                        _apply(message["data"], sink)
            except (RedisError, StateUnavailable, OSError) as exc:
                failures += 1
                # One line per outage, not one per attempt.
                log = logger.warning if failures == 1 else logger.debug
                log("revocations: subscription lost (%s); retrying with backoff", exc)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await listener.aclose()
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX, backoff * 2)

    # -- chat ----------------------------------------------------------------------------------

    async def append_chat(self, room: str, epoch: int, seq: int, message: bytes) -> None:
        try:
            await self._append_chat(
                keys=[PREFIX + "chat:" + room], args=[epoch, seq, message, CHAT_MAXLEN, CHAT_KEEP_MS]
            )
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None

    async def chat(self, room: str) -> list[tuple[int, int, bytes]]:
        try:
            entries = await self._redis.xrange(PREFIX + "chat:" + room)
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None
        return [(int(fields[b"e"]), int(fields[b"s"]), fields[b"m"]) for _, fields in entries]

    # -- drain ---------------------------------------------------------------------------------

    async def request_drain(self, node_id: str) -> None:
        try:
            await self._redis.set(PREFIX + "drain:" + node_id, b"1", ex=DRAIN_REQUEST_SECONDS)
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None

    async def close(self) -> None:
        await self._redis.aclose()


def _room_keys(room: str) -> tuple[str, str]:
    return f"{PREFIX}room:{room}:home", f"{PREFIX}room:{room}:epoch"


def _nodes(raw: list[bytes]) -> list[NodeInfo]:
    nodes = []
    for entry in raw:
        try:
            nodes.append(NodeInfo.decode(entry))
        except ValueError:
            logger.warning("registry: an entry that is not a node description, ignored")
    return nodes


def _apply(data: bytes, sink: RevocationSink) -> None:
    participant, _, until = data.decode(errors="replace").rpartition(" ")
    try:
        sink(participant, float(until))
    except ValueError:
        logger.warning("revocations: malformed message ignored")
