"""The single node's store: ``<data-dir>/meetings.sqlite3``.

WAL, the schema version in ``PRAGMA user_version``, ``synchronous=FULL`` (a 201 must survive a power
cut). SQLite blocks, so every call runs in a worker thread (``asyncio.to_thread``): a slow disk must
not stall media on the event loop. A lock makes the one connection safe to share between those
threads, and WAL lets ``meet443 api-key`` write while the server reads.

Keys made before schema version 2 are not admin keys; they keep the meetings they created.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import sqlite3
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from secrets import token_bytes
from typing import Any

from meet443.exceptions import ConfigError
from meet443.meetings import ApiKey, Meeting, RandomBytes, StoredApiKey, StoredMeeting
from meet443.proto.signaling.admission import RoomMode
from meet443.store.tables import TableStore

__all__ = ["DB_FILE_NAME", "SCHEMA_VERSION", "SqliteStore"]

DB_FILE_NAME = "meetings.sqlite3"
SCHEMA_VERSION = 2
_BUSY_TIMEOUT_MS = 5000

# Each entry moves the schema from its index to index + 1, inside one transaction.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meetings (
        meeting_id TEXT PRIMARY KEY,
        room_name TEXT NOT NULL UNIQUE,
        room_mode TEXT NOT NULL CHECK (room_mode IN ('normal', 'group')),
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        host_key_sha256 BLOB NOT NULL,
        created_by TEXT,
        deleted INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        label TEXT NOT NULL,
        key_sha256 BLOB NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    ) STRICT;
    """,
    # 2: admin keys see and delete every meeting; the others only those they created. The server
    # epoch numbers each start of a server on this store (chat ids, see MeetingStore.next_epoch).
    """
    ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX meetings_created_by ON meetings (created_by);
    CREATE TABLE server_epoch (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch INTEGER NOT NULL
    ) STRICT;
    INSERT INTO server_epoch (id, epoch) VALUES (1, 0);
    """,
)
assert len(MIGRATIONS) == SCHEMA_VERSION


def _meeting(row: tuple[Any, ...]) -> Meeting:
    meeting_id, room_name, mode, start_ms, end_ms = row
    return Meeting(meeting_id, room_name, RoomMode(mode), start_ms, end_ms)


def _stored_meeting(row: tuple[Any, ...]) -> StoredMeeting:
    return StoredMeeting(_meeting(row[:5]), row[5], row[6], bool(row[7]))


def _api_key(row: tuple[Any, ...]) -> ApiKey:
    key_id, label, created_ms, revoked_ms, admin = row
    return ApiKey(key_id, label, created_ms, revoked_ms, bool(admin))


class SqliteFile:
    """One SQLite connection shared by threads, one statement or transaction at a time; every
    method blocks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The database holds only digests, but nobody else needs to read them: create it 0600 before
        # SQLite does (SQLite gives the -wal and -shm files the database file's mode).
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.lock = threading.Lock()
        self.connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        self.connection.execute("PRAGMA journal_mode = WAL")
        # synchronous stays FULL: writes are rare (API calls), and a 201 must survive a power cut.

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                yield self.connection
            except BaseException:
                self.connection.execute("ROLLBACK")
                raise
            self.connection.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            yield self.connection

    def migrate(self) -> None:
        with self.transaction() as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"{self.path} has schema version {version}, newer than this meet443 understands "
                    f"({SCHEMA_VERSION}); run a newer meet443"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")

    def close(self) -> None:
        with self.lock:
            self.connection.close()

    # -- rows --------------------------------------------------------------------------------------

    def insert_meeting(self, row: StoredMeeting) -> bool:
        m = row.meeting
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO meetings (meeting_id, room_name, room_mode, start_ms, end_ms, "
                    "host_key_sha256, created_by, deleted) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (m.meeting_id, m.room_name, m.mode.value, m.start_ms, m.end_ms,
                     row.host_key_sha256, row.created_by, int(row.deleted)),
                )  # fmt: skip
        except sqlite3.IntegrityError:
            return False
        return True

    @staticmethod
    def _find(db: sqlite3.Connection, meeting_id: str, created_by: str | None) -> Meeting | None:
        row = db.execute(
            "SELECT meeting_id, room_name, room_mode, start_ms, end_ms FROM meetings "
            "WHERE meeting_id = ? AND deleted = 0 AND (? IS NULL OR created_by = ?)",
            (meeting_id, created_by, created_by),
        ).fetchone()
        return None if row is None else _meeting(row)

    def find_meeting(self, meeting_id: str, created_by: str | None) -> Meeting | None:
        with self.reading() as db:
            return self._find(db, meeting_id, created_by)

    def meeting_in_room(self, room_name: str) -> StoredMeeting | None:
        with self.reading() as db:
            row = db.execute(
                "SELECT meeting_id, room_name, room_mode, start_ms, end_ms, host_key_sha256, "
                "created_by, deleted FROM meetings WHERE room_name = ?",
                (room_name,),
            ).fetchone()
        return None if row is None else _stored_meeting(row)

    def delete_meeting(self, meeting_id: str, created_by: str | None) -> Meeting | None:
        with self.transaction() as db:
            meeting = self._find(db, meeting_id, created_by)
            if meeting is not None:
                db.execute("UPDATE meetings SET deleted = 1 WHERE meeting_id = ?", (meeting_id,))
        return meeting

    def end(self, room_name: str, now_ms: int) -> bool:
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE meetings SET end_ms = MIN(end_ms, ?) WHERE room_name = ? AND deleted = 0",
                (now_ms, room_name),
            )
        return cursor.rowcount == 1

    def insert_api_key(self, row: StoredApiKey) -> bool:
        k = row.key
        try:
            with self.transaction() as db:
                db.execute(
                    "INSERT INTO api_keys (key_id, label, key_sha256, created_ms, revoked_ms, admin) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (k.key_id, k.label, row.key_sha256, k.created_ms, k.revoked_ms, int(k.admin)),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def api_key_row(self, key_id: str) -> StoredApiKey | None:
        with self.reading() as db:
            row = db.execute(
                "SELECT key_id, label, created_ms, revoked_ms, admin, key_sha256 FROM api_keys "
                "WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        return None if row is None else StoredApiKey(_api_key(row[:5]), row[5])

    def api_key_rows(self) -> list[ApiKey]:
        with self.reading() as db:
            rows = db.execute(
                "SELECT key_id, label, created_ms, revoked_ms, admin FROM api_keys ORDER BY "
                "created_ms, key_id"
            ).fetchall()
        return [_api_key(row) for row in rows]

    def revoke_api_key(self, key_id: str, now_ms: int) -> ApiKey | None:
        with self.transaction() as db:
            db.execute(
                "UPDATE api_keys SET revoked_ms = ? WHERE key_id = ? AND revoked_ms IS NULL", (now_ms, key_id)
            )
            row = db.execute(
                "SELECT key_id, label, created_ms, revoked_ms, admin FROM api_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        return None if row is None else _api_key(row)

    def next_epoch(self) -> int:
        with self.transaction() as db:
            (epoch,) = db.execute("UPDATE server_epoch SET epoch = epoch + 1 RETURNING epoch").fetchone()
        assert isinstance(epoch, int)
        return epoch

    # -- everything, for ``meet443 db copy`` -------------------------------------------------------

    def export(self) -> tuple[list[StoredMeeting], list[StoredApiKey], int]:
        """Every meeting and key row, and the last epoch handed out."""
        with self.reading() as db:
            meetings = [
                _stored_meeting(row)
                for row in db.execute(
                    "SELECT meeting_id, room_name, room_mode, start_ms, end_ms, "
                    "host_key_sha256, created_by, deleted FROM meetings ORDER BY start_ms, meeting_id"
                )
            ]
            keys = [
                StoredApiKey(_api_key(row[:5]), row[5])
                for row in db.execute(
                    "SELECT key_id, label, created_ms, revoked_ms, admin, key_sha256 FROM "
                    "api_keys ORDER BY key_id"
                )
            ]
            (epoch,) = db.execute("SELECT epoch FROM server_epoch").fetchone()
        return meetings, keys, epoch


class SqliteStore(TableStore):
    """Meetings and API keys in one SQLite file. Open with :meth:`open`; close when done."""

    def __init__(self, path: Path, *, random_bytes: RandomBytes = token_bytes) -> None:
        super().__init__(random_bytes)
        self.path = path
        try:
            self.file = SqliteFile(path)
            self.file.migrate()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the meetings database {path}: {exc}") from None

    @classmethod
    def open(cls, data_dir: Path, *, random_bytes: RandomBytes = token_bytes) -> SqliteStore:
        """The store in ``data_dir`` (created 0700 if missing)."""
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {data_dir}: {exc.strerror or exc}") from None
        return cls(data_dir / DB_FILE_NAME, random_bytes=random_bytes)

    @property
    def where(self) -> str:
        return str(self.path)

    async def insert_meeting(self, row: StoredMeeting) -> bool:
        return await asyncio.to_thread(self.file.insert_meeting, row)

    async def find_meeting(self, meeting_id: str, created_by: str | None) -> Meeting | None:
        return await asyncio.to_thread(self.file.find_meeting, meeting_id, created_by)

    async def meeting_in_room(self, room_name: str) -> StoredMeeting | None:
        return await asyncio.to_thread(self.file.meeting_in_room, room_name)

    async def delete_meeting(self, meeting_id: str, created_by: str | None) -> Meeting | None:
        return await asyncio.to_thread(self.file.delete_meeting, meeting_id, created_by)

    async def end(self, room_name: str, now_ms: int) -> bool:
        return await asyncio.to_thread(self.file.end, room_name, now_ms)

    async def insert_api_key(self, row: StoredApiKey) -> bool:
        return await asyncio.to_thread(self.file.insert_api_key, row)

    async def api_key_row(self, key_id: str) -> StoredApiKey | None:
        return await asyncio.to_thread(self.file.api_key_row, key_id)

    async def api_key_rows(self) -> builtins.list[ApiKey]:
        return await asyncio.to_thread(self.file.api_key_rows)

    async def revoke_api_key(self, key_id: str, now_ms: int) -> ApiKey | None:
        return await asyncio.to_thread(self.file.revoke_api_key, key_id, now_ms)

    async def next_epoch(self) -> int:
        return await asyncio.to_thread(self.file.next_epoch)

    async def close(self) -> None:
        self.file.close()

    async def __aenter__(self) -> SqliteStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        await self.close()
