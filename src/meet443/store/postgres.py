"""The cluster's store: meetings and API keys in PostgreSQL, through an asyncpg pool.

docs/cluster.md, "Meetings and API keys in PostgreSQL":

- Every connection sets ``synchronous_commit = on`` itself (the server's default may be ``off``,
  which acknowledges a commit before its WAL is on disk): the API answers 201 only after a COMMIT that
  survives a crash of PostgreSQL.
- The schema is migrated when a node starts, inside one transaction that holds an advisory lock, so
  nodes starting together migrate once, one after the other.
- The server epoch is a sequence: unique across every node sharing the database.
- The pool replaces a connection PostgreSQL closed (a restart) when it hands it out. A connection
  lost during a call is retried once on a fresh one when running the call twice has the effect of
  once (reads, ending a meeting, revoking a key, the epoch); an insert or a delete is not retried,
  since its COMMIT may have gone through. When PostgreSQL stays unreachable the call raises
  :class:`StoreUnavailable` (the API answers 503); a later call connects again.
"""

from __future__ import annotations

import builtins
import urllib.parse
from collections.abc import Awaitable, Callable
from secrets import token_bytes
from typing import TypeAlias, TypeVar

import asyncpg

from meet443.exceptions import ConfigError, StoreUnavailable
from meet443.meetings import ApiKey, Meeting, RandomBytes, StoredApiKey, StoredMeeting
from meet443.proto.signaling.admission import RoomMode
from meet443.store.tables import TableStore

__all__ = ["SCHEMA_VERSION", "PostgresStore", "redact_url"]

SCHEMA_VERSION = 1
#: Taken (for one transaction) by every node that migrates: "m443" in ASCII.
MIGRATION_LOCK = 0x6D343433
#: A node's connections; each serves one short statement or transaction at a time. No floor: asyncpg
#: keeps a floor by reconnecting in the background, which while PostgreSQL is down logs a traceback on
#: every try; without one, connections are made when calls need them.
POOL_MIN_SIZE = 0
POOL_MAX_SIZE = 10
#: Seconds to open a connection, and to wait for one statement: past them the API answers 503
#: rather than holding the request.
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 10.0
#: Set by every connection: never trust the server's default (docs/cluster.md).
SESSION_SETTINGS = {"synchronous_commit": "on", "application_name": "meet443"}

# Each entry moves the schema from its index to index + 1. Version 1 is SQLite's version 2.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meetings (
        meeting_id text PRIMARY KEY,
        room_name text NOT NULL UNIQUE,
        room_mode text NOT NULL CHECK (room_mode IN ('normal', 'group')),
        start_ms bigint NOT NULL,
        end_ms bigint NOT NULL,
        host_key_sha256 bytea NOT NULL,
        created_by text,
        deleted boolean NOT NULL DEFAULT false
    );
    CREATE INDEX meetings_created_by ON meetings (created_by);
    CREATE TABLE api_keys (
        key_id text PRIMARY KEY,
        label text NOT NULL,
        key_sha256 bytea NOT NULL,
        created_ms bigint NOT NULL,
        revoked_ms bigint,
        admin boolean NOT NULL DEFAULT false
    );
    CREATE SEQUENCE server_epoch;
    """,
)
assert len(MIGRATIONS) == SCHEMA_VERSION

# Connection lost, refused or being shut down, or a statement canceled (class 57, which includes
# statement_timeout): worth one more try on a fresh connection.
_CONNECTION_LOST = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
)

_T = TypeVar("_T")
# asyncpg's classes are generic in its stubs only.
Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"


def redact_url(url: str) -> str:
    """``url`` without the password of its user information, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}@{host}"))


def _meeting(row: asyncpg.Record) -> Meeting:
    return Meeting(
        row["meeting_id"], row["room_name"], RoomMode(row["room_mode"]), row["start_ms"], row["end_ms"]
    )


def _stored_meeting(row: asyncpg.Record) -> StoredMeeting:
    return StoredMeeting(_meeting(row), row["host_key_sha256"], row["created_by"], row["deleted"])


def _api_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(row["key_id"], row["label"], row["created_ms"], row["revoked_ms"], row["admin"])


def _stored_api_key(row: asyncpg.Record) -> StoredApiKey:
    return StoredApiKey(_api_key(row), row["key_sha256"])


async def migrate(connection: asyncpg.Connection[asyncpg.Record] | Connection) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`; several nodes may call it at once."""
    async with connection.transaction():
        # Before anything else, even the IF NOT EXISTS: two nodes creating the same table at once
        # collide on PostgreSQL's catalog.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await connection.execute("CREATE TABLE IF NOT EXISTS meet443_schema (version integer NOT NULL)")
        version = await connection.fetchval("SELECT coalesce(max(version), 0) FROM meet443_schema")
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"the database has schema version {version}, newer than this meet443 understands "
                f"({SCHEMA_VERSION}); run a newer meet443"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            await connection.execute(MIGRATIONS[target - 1])
            await connection.execute("INSERT INTO meet443_schema (version) VALUES ($1)", target)


class PostgresStore(TableStore):
    """Meetings and API keys in PostgreSQL. Open with :meth:`connect`; close when done."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], url: str, random_bytes: RandomBytes) -> None:
        super().__init__(random_bytes)
        self.pool = pool
        self._where = redact_url(url)

    @classmethod
    async def connect(
        cls, url: str, password: str | None = None, *, random_bytes: RandomBytes = token_bytes
    ) -> PostgresStore:
        """A pool on ``url`` (``postgresql://`` or ``postgres://``), migrated; ConfigError when
        PostgreSQL cannot be reached or refuses the login."""
        try:
            pool = await asyncpg.create_pool(
                url,
                password=password,
                min_size=POOL_MIN_SIZE,
                max_size=POOL_MAX_SIZE,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings=SESSION_SETTINGS,
            )
            try:
                async with pool.acquire() as connection:
                    await migrate(connection)
            except BaseException:
                await pool.close()
                raise
        except (*_CONNECTION_LOST, TimeoutError, asyncpg.PostgresError, ValueError) as exc:
            # asyncpg's messages name hosts and users, never the password.
            raise ConfigError(f"cannot open the meetings database {redact_url(url)}: {exc}") from None
        return cls(pool, url, random_bytes)

    @property
    def where(self) -> str:
        return self._where

    async def close(self) -> None:
        await self.pool.close()

    async def _run(self, operation: Callable[[Connection], Awaitable[_T]], *, retry: bool = True) -> _T:
        """``operation`` on a pooled connection; with ``retry``, again on a fresh one if the first
        was lost."""
        for attempt in range(2 if retry else 1):
            try:
                # With every connection busy, a call waits for one no longer than for PostgreSQL.
                async with self.pool.acquire(timeout=CONNECT_TIMEOUT + COMMAND_TIMEOUT) as connection:
                    return await operation(connection)
            except _CONNECTION_LOST as exc:
                if attempt == 1 or not retry:
                    raise StoreUnavailable(f"PostgreSQL at {self._where}: {exc}") from exc
            except TimeoutError as exc:
                raise StoreUnavailable(f"PostgreSQL at {self._where} did not answer in time") from exc
        raise AssertionError("unreachable")

    async def _row(
        self, convert: Callable[[asyncpg.Record], _T], query: str, *args: object, retry: bool = True
    ) -> _T | None:
        """The one row ``query`` returns, through ``convert``; None for no row."""

        async def fetch(db: Connection) -> _T | None:
            row = await db.fetchrow(query, *args)
            return None if row is None else convert(row)

        return await self._run(fetch, retry=retry)

    async def _value(self, query: str, *args: object, retry: bool = True) -> object:
        async def fetch(db: Connection) -> object:
            return await db.fetchval(query, *args)

        return await self._run(fetch, retry=retry)

    # -- rows --------------------------------------------------------------------------------------

    async def insert_meeting(self, row: StoredMeeting) -> bool:
        m = row.meeting
        inserted = await self._value(
            "INSERT INTO meetings (meeting_id, room_name, room_mode, start_ms, end_ms, host_key_sha256, "
            "created_by, deleted) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT DO NOTHING RETURNING true",
            m.meeting_id, m.room_name, m.mode.value, m.start_ms, m.end_ms,
            row.host_key_sha256, row.created_by, row.deleted,
            retry=False,
        )  # fmt: skip
        return inserted is True

    async def find_meeting(self, meeting_id: str, created_by: str | None) -> Meeting | None:
        return await self._row(
            _meeting,
            "SELECT meeting_id, room_name, room_mode, start_ms, end_ms FROM meetings "
            "WHERE meeting_id = $1 AND NOT deleted AND ($2::text IS NULL OR created_by = $2)",
            meeting_id,
            created_by,
        )

    async def meeting_in_room(self, room_name: str) -> StoredMeeting | None:
        return await self._row(
            _stored_meeting,
            "SELECT meeting_id, room_name, room_mode, start_ms, end_ms, host_key_sha256, created_by, deleted "
            "FROM meetings WHERE room_name = $1",
            room_name,
        )

    async def delete_meeting(self, meeting_id: str, created_by: str | None) -> Meeting | None:
        return await self._row(
            _meeting,
            "UPDATE meetings SET deleted = true "
            "WHERE meeting_id = $1 AND NOT deleted AND ($2::text IS NULL OR created_by = $2) "
            "RETURNING meeting_id, room_name, room_mode, start_ms, end_ms",
            meeting_id,
            created_by,
            retry=False,
        )

    async def end(self, room_name: str, now_ms: int) -> bool:
        ended = await self._value(
            "UPDATE meetings SET end_ms = least(end_ms, $1) WHERE room_name = $2 AND NOT deleted "
            "RETURNING true",
            now_ms,
            room_name,
        )
        return ended is True

    async def insert_api_key(self, row: StoredApiKey) -> bool:
        k = row.key
        inserted = await self._value(
            "INSERT INTO api_keys (key_id, label, key_sha256, created_ms, revoked_ms, admin) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING true",
            k.key_id, k.label, row.key_sha256, k.created_ms, k.revoked_ms, k.admin,
            retry=False,
        )  # fmt: skip
        return inserted is True

    async def api_key_row(self, key_id: str) -> StoredApiKey | None:
        return await self._row(
            _stored_api_key,
            "SELECT key_id, label, created_ms, revoked_ms, admin, key_sha256 FROM api_keys WHERE key_id = $1",
            key_id,
        )

    async def api_key_rows(self) -> builtins.list[ApiKey]:
        async def rows(db: Connection) -> builtins.list[ApiKey]:
            found = await db.fetch(
                "SELECT key_id, label, created_ms, revoked_ms, admin FROM api_keys "
                "ORDER BY created_ms, key_id"
            )
            return [_api_key(row) for row in found]

        return await self._run(rows)

    async def revoke_api_key(self, key_id: str, now_ms: int) -> ApiKey | None:
        return await self._row(
            _api_key,
            "UPDATE api_keys SET revoked_ms = coalesce(revoked_ms, $1) WHERE key_id = $2 "
            "RETURNING key_id, label, created_ms, revoked_ms, admin",
            now_ms,
            key_id,
        )

    async def next_epoch(self) -> int:
        # nextval is WAL-logged and durable on commit (it takes a transaction id for that).
        epoch = await self._value("SELECT nextval('server_epoch')")
        assert isinstance(epoch, int)
        return epoch

    # -- ``meet443 db copy`` -----------------------------------------------------------------------

    async def import_rows(
        self, meetings: builtins.list[StoredMeeting], keys: builtins.list[StoredApiKey], epoch: int
    ) -> tuple[int, int, int, int]:
        """Add the rows that are missing, carry over an end or a revocation that happened since an
        earlier import, and raise the epoch sequence to at least ``epoch``; all in one transaction.
        Returns (meetings added, meetings updated, keys added, keys updated)."""

        async def copy(db: Connection) -> tuple[int, int, int, int]:
            counts = [0, 0, 0, 0]
            async with db.transaction():
                for row in meetings:
                    m = row.meeting
                    # xmax = 0: the row was inserted, not updated, by this statement.
                    inserted = await db.fetchval(
                        "INSERT INTO meetings AS old (meeting_id, room_name, room_mode, "
                            "start_ms, end_ms, host_key_sha256, created_by, deleted) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (meeting_id) DO UPDATE "
                        "SET end_ms = least(old.end_ms, excluded.end_ms), deleted = "
                            "old.deleted OR excluded.deleted "
                        "WHERE excluded.end_ms < old.end_ms OR (excluded.deleted AND NOT old.deleted) "
                        "RETURNING xmax = 0",
                        m.meeting_id, m.room_name, m.mode.value, m.start_ms, m.end_ms,
                        row.host_key_sha256, row.created_by, row.deleted,
                    )  # fmt: skip
                    if inserted is not None:
                        counts[0 if inserted else 1] += 1
                for key_row in keys:
                    k = key_row.key
                    inserted = await db.fetchval(
                        "INSERT INTO api_keys AS old (key_id, label, key_sha256, created_ms, "
                            "revoked_ms, admin) "
                        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_id) DO UPDATE "
                        "SET revoked_ms = excluded.revoked_ms "
                        "WHERE old.revoked_ms IS NULL AND excluded.revoked_ms IS NOT NULL "
                        "RETURNING xmax = 0",
                        k.key_id, k.label, key_row.key_sha256, k.created_ms, k.revoked_ms, k.admin,
                    )  # fmt: skip
                    if inserted is not None:
                        counts[2 if inserted else 3] += 1
                if epoch > 0:
                    await db.execute(
                        "SELECT setval('server_epoch', greatest(last_value, $1)) FROM server_epoch", epoch
                    )
            return counts[0], counts[1], counts[2], counts[3]

        return await self._run(copy)
