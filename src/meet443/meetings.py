"""Meetings made through ``POST /v1/meetings``, the API keys allowed to make them, and the server
epoch (:meth:`MeetingStore.next_epoch`), in SQLite.

The store lives in ``<data-dir>/meetings.sqlite3`` (WAL, schema version in ``PRAGMA user_version``) and
survives restarts. It is synchronous on purpose: the asyncio adapters call it through
``asyncio.to_thread``; a lock makes one connection safe to share between those threads, and WAL lets
``meet443 api-key`` write while the server reads.

Secrets are stored only as SHA-256 digests and compared with :func:`hmac.compare_digest`: a meeting's
host room key (256 random bits, shown once in ``hostRoomUrl``) and an API key (``m443_<id>_<secret>``,
256 random bits, printed once by ``meet443 api-key create``). Plain SHA-256 is enough because both are
random, not chosen by people: there is no dictionary to try.

API keys are scoped: a key sees and deletes only the meetings it created (``created_by``), unless it
is an admin key (``meet443 api-key create --admin``). Keys made before schema version 2 are not
admin keys; they keep the meetings they created.

A deleted or ended meeting stays in the table as a tombstone, so its room name keeps refusing joins
with ``meeting-ended`` and never turns into an ad-hoc room that anyone holding an old link could enter.

Nothing here reads a clock: ``now_ms`` (milliseconds since the epoch) is always a parameter, and
randomness comes from the ``random_bytes`` callable given to :class:`MeetingStore`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import sqlite3
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_bytes

from meet443.exceptions import ConfigError
from meet443.proto.signaling.admission import (
    Refusal,
    RoomAdmission,
    RoomMode,
    is_valid_room_name,
)

__all__ = [
    "API_KEY_PREFIX",
    "DB_FILE_NAME",
    "MAX_MEETING_MS",
    "MAX_ROOM_NAME_PREFIX",
    "ApiKey",
    "ApiKeys",
    "Meeting",
    "MeetingStore",
    "NewMeeting",
    "check_api_key_label",
    "check_meeting_end",
    "check_room_name_prefix",
]

DB_FILE_NAME = "meetings.sqlite3"
SCHEMA_VERSION = 2
#: A meeting may end at most this far in the future.
MAX_MEETING_MS = 365 * 86_400_000
#: 80 random bits: 16 base32 characters, out of reach of guessing at any join rate limit.
ROOM_NAME_RANDOM_BYTES = 10
ROOM_NAME_RANDOM_CHARS = 16
#: Room names are at most 64 characters; a prefix leaves room for "-" and the random part.
MAX_ROOM_NAME_PREFIX = 64 - 1 - ROOM_NAME_RANDOM_CHARS
MEETING_ID_BYTES = 16
HOST_KEY_BYTES = 32
API_KEY_PREFIX = "m443"
API_KEY_ID_BYTES = 6
API_KEY_SECRET_BYTES = 32
MAX_API_KEY_LABEL = 100
#: Longer bearer tokens are refused before hashing; a real key is 70 characters.
MAX_API_KEY_LENGTH = 200
_INSERT_ATTEMPTS = 4
_BUSY_TIMEOUT_MS = 5000

_ROOM_NAME_PREFIX = re.compile(r"[a-z0-9][a-z0-9-]*")
_API_KEY_ID = re.compile(r"[0-9a-f]{12}")
# Compared against when a key id is unknown, so an unknown id costs the same work as a wrong secret.
_NO_DIGEST = bytes(32)

# Each entry moves the schema from its index to index + 1, inside one transaction.
_MIGRATIONS: tuple[str, ...] = (
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
    # epoch numbers each start of a server on this store (chat ids, see :meth:`MeetingStore.next_epoch`).
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
assert len(_MIGRATIONS) == SCHEMA_VERSION

RandomBytes = Callable[[int], bytes]


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _base32(data: bytes) -> str:
    """RFC 4648 base32, lower case, without padding: only ``a-z`` and ``2-7``."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _urlsafe(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


# --------------------------------------------------------------------------------------------------
# Validation shared with the HTTP API and the CLI (each raises ValueError with a message for people)


def check_room_name_prefix(prefix: str) -> None:
    """A ``roomNamePrefix`` must keep ``<prefix>-<random>`` a valid room name (docs/signaling.md)."""
    if not _ROOM_NAME_PREFIX.fullmatch(prefix):
        raise ValueError(
            "roomNamePrefix must start with a lower-case letter or digit and contain only a-z, 0-9 and '-'"
        )
    if len(prefix) > MAX_ROOM_NAME_PREFIX:
        raise ValueError(f"roomNamePrefix must be at most {MAX_ROOM_NAME_PREFIX} characters")


def check_meeting_end(end_ms: int, now_ms: int) -> None:
    """``endDate`` must lie in the future, at most :data:`MAX_MEETING_MS` ahead."""
    if end_ms <= now_ms:
        raise ValueError("endDate must be in the future")
    if end_ms - now_ms > MAX_MEETING_MS:
        raise ValueError(f"endDate must be at most {MAX_MEETING_MS // 86_400_000} days ahead")


def check_api_key_label(label: str) -> None:
    if len(label) > MAX_API_KEY_LABEL:
        raise ValueError(f"a label is at most {MAX_API_KEY_LABEL} characters")
    if not label.isprintable():
        raise ValueError("a label must not contain control characters")


# --------------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class Meeting:
    meeting_id: str
    room_name: str
    mode: RoomMode
    #: Milliseconds since the epoch.
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class NewMeeting:
    """A meeting just created, with the one copy of its host room key that will ever exist."""

    meeting: Meeting
    host_room_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What is known about an API key after it was printed: never its secret."""

    key_id: str
    label: str
    created_ms: int
    revoked_ms: int | None
    #: Sees and deletes every meeting, not only those it created.
    admin: bool = False

    @property
    def scope(self) -> str | None:
        """The ``created_by`` of the meetings this key may see, or None for all of them."""
        return None if self.admin else self.key_id


# --------------------------------------------------------------------------------------------------
# The store


class _Database:
    """One SQLite connection shared by threads, one statement or transaction at a time."""

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
                for statement in _MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")

    def close(self) -> None:
        with self.lock:
            self.connection.close()


class ApiKeys:
    """API keys for ``/v1/meetings``: ``m443_<key id>_<secret>``, stored as a SHA-256 digest."""

    def __init__(self, database: _Database, random_bytes: RandomBytes) -> None:
        self._db = database
        self._random_bytes = random_bytes

    def create(self, label: str, *, now_ms: int, admin: bool = False) -> tuple[str, str]:
        """Return ``(key_id, api_key)``; the key is not stored and cannot be shown again."""
        check_api_key_label(label)
        for _ in range(_INSERT_ATTEMPTS):
            key_id = self._random_bytes(API_KEY_ID_BYTES).hex()
            api_key = f"{API_KEY_PREFIX}_{key_id}_{_base32(self._random_bytes(API_KEY_SECRET_BYTES))}"
            try:
                with self._db.transaction() as db:
                    db.execute(
                        "INSERT INTO api_keys (key_id, label, key_sha256, created_ms, admin) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (key_id, label, _sha256(api_key), now_ms, int(admin)),
                    )
            except sqlite3.IntegrityError:  # a key id repeated: draw again
                continue
            return key_id, api_key
        raise RuntimeError("could not draw an unused API key id")  # only with a broken random source

    def list(self) -> list[ApiKey]:
        with self._db.reading() as db:
            rows = db.execute(
                "SELECT key_id, label, created_ms, revoked_ms, admin FROM api_keys "
                "ORDER BY created_ms, key_id"
            ).fetchall()
        return [_api_key(row) for row in rows]

    def revoke(self, key_id: str, *, now_ms: int) -> ApiKey | None:
        """Revoke a key (at once, for every later request); returns it, or None if there is no such key.

        A key revoked before keeps its first ``revoked_ms``.
        """
        with self._db.transaction() as db:
            db.execute(
                "UPDATE api_keys SET revoked_ms = ? WHERE key_id = ? AND revoked_ms IS NULL", (now_ms, key_id)
            )
            row = db.execute(
                "SELECT key_id, label, created_ms, revoked_ms, admin FROM api_keys WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        return None if row is None else _api_key(row)

    def verify(self, api_key: str) -> ApiKey | None:
        """The valid, unrevoked ``api_key``, else None; compared in constant time."""
        if len(api_key) > MAX_API_KEY_LENGTH:
            return None
        prefix, _, rest = api_key.partition("_")
        key_id, _, _secret = rest.partition("_")
        if prefix != API_KEY_PREFIX or not _API_KEY_ID.fullmatch(key_id):
            return None
        with self._db.reading() as db:
            row = db.execute(
                "SELECT key_sha256, key_id, label, created_ms, revoked_ms, admin FROM api_keys "
                "WHERE key_id = ?",
                (key_id,),
            ).fetchone()
        expected = row[0] if row is not None else _NO_DIGEST
        matches = hmac.compare_digest(_sha256(api_key), expected)
        if not matches or row is None:
            return None
        found = _api_key(row[1:])
        return found if found.revoked_ms is None else None


def _api_key(row: tuple[str, str, int, int | None, int]) -> ApiKey:
    key_id, label, created_ms, revoked_ms, admin = row
    return ApiKey(key_id, label, created_ms, revoked_ms, bool(admin))


class MeetingStore:
    """Meetings and API keys in ``<data-dir>/meetings.sqlite3``. Open with :meth:`open`; close when done."""

    def __init__(self, path: Path, *, random_bytes: RandomBytes = token_bytes) -> None:
        self.path = path
        self._random_bytes = random_bytes
        try:
            self._db = _Database(path)
            self._db.migrate()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the meetings database {path}: {exc}") from None
        self.api_keys = ApiKeys(self._db, random_bytes)

    @classmethod
    def open(cls, data_dir: Path, *, random_bytes: RandomBytes = token_bytes) -> MeetingStore:
        """The store in ``data_dir`` (created 0700 if missing)."""
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {data_dir}: {exc.strerror or exc}") from None
        return cls(data_dir / DB_FILE_NAME, random_bytes=random_bytes)

    def close(self) -> None:
        self._db.close()

    def next_epoch(self) -> int:
        """A number no earlier call on this store returned, larger than all of them: a server takes
        one when it starts, so the chat ids of its rooms (docs/signaling.md ``chat``) never repeat
        those of an earlier run. Durable before it is returned (synchronous=FULL)."""
        with self._db.transaction() as db:
            (epoch,) = db.execute("UPDATE server_epoch SET epoch = epoch + 1 RETURNING epoch").fetchone()
        assert isinstance(epoch, int)
        return epoch

    def __enter__(self) -> MeetingStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------------
    # Meetings

    def create(
        self,
        *,
        end_ms: int,
        mode: RoomMode,
        now_ms: int,
        room_name_prefix: str | None = None,
        created_by: str | None = None,
    ) -> NewMeeting:
        """A meeting from ``now_ms`` to ``end_ms`` in a new room with an unguessable name.

        Raises ValueError for an end outside :func:`check_meeting_end` or a bad prefix.
        """
        check_meeting_end(end_ms, now_ms)
        if room_name_prefix is not None:
            check_room_name_prefix(room_name_prefix)
        for _ in range(_INSERT_ATTEMPTS):
            random_part = _base32(self._random_bytes(ROOM_NAME_RANDOM_BYTES))
            room_name = random_part if room_name_prefix is None else f"{room_name_prefix}-{random_part}"
            assert is_valid_room_name(room_name), room_name
            meeting = Meeting(
                meeting_id=self._random_bytes(MEETING_ID_BYTES).hex(),
                room_name=room_name,
                mode=mode,
                start_ms=now_ms,
                end_ms=end_ms,
            )
            host_room_key = _urlsafe(self._random_bytes(HOST_KEY_BYTES))
            try:
                with self._db.transaction() as db:
                    db.execute(
                        "INSERT INTO meetings (meeting_id, room_name, room_mode, start_ms, end_ms, "
                        "host_key_sha256, created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            meeting.meeting_id,
                            room_name,
                            mode.value,
                            now_ms,
                            end_ms,
                            _sha256(host_room_key),
                            created_by,
                        ),
                    )
            except sqlite3.IntegrityError:  # a room name or meeting id repeated: draw again
                continue
            return NewMeeting(meeting, host_room_key)
        raise RuntimeError("could not draw an unused room name")  # only with a broken random source

    def get(self, meeting_id: str, *, created_by: str | None = None) -> Meeting | None:
        """The meeting, ended or not; None if it never existed, was deleted, or (with
        ``created_by``, an API key's :attr:`ApiKey.scope`) was created by another key."""
        with self._db.reading() as db:
            return self._get(db, meeting_id, created_by)

    @staticmethod
    def _get(db: sqlite3.Connection, meeting_id: str, created_by: str | None) -> Meeting | None:
        row = db.execute(
            "SELECT meeting_id, room_name, room_mode, start_ms, end_ms FROM meetings "
            "WHERE meeting_id = ? AND deleted = 0 AND (? IS NULL OR created_by = ?)",
            (meeting_id, created_by, created_by),
        ).fetchone()
        if row is None:
            return None
        meeting_id, room_name, mode, start_ms, end_ms = row
        return Meeting(meeting_id, room_name, RoomMode(mode), start_ms, end_ms)

    def delete(self, meeting_id: str, *, created_by: str | None = None) -> Meeting | None:
        """Delete a meeting: its room refuses every later join. Returns what was deleted, or None
        if there was none to delete (``created_by`` as for :meth:`get`)."""
        with self._db.transaction() as db:
            meeting = self._get(db, meeting_id, created_by)
            if meeting is not None:
                db.execute("UPDATE meetings SET deleted = 1 WHERE meeting_id = ?", (meeting_id,))
        return meeting

    def end(self, room_name: str, now_ms: int) -> bool:
        """A host ended the meeting for all: it admits nobody from now on, across restarts too."""
        with self._db.transaction() as db:
            cursor = db.execute(
                "UPDATE meetings SET end_ms = MIN(end_ms, ?) WHERE room_name = ? AND deleted = 0",
                (now_ms, room_name),
            )
        return cursor.rowcount == 1

    def admission(
        self,
        room_name: str,
        room_key: str | None,
        now_ms: int,
        *,
        require_api_key: bool,
        default_mode: RoomMode,
    ) -> RoomAdmission | Refusal:
        """What the directory says about one join (docs/signaling.md, "Rooms")."""
        if not is_valid_room_name(room_name):
            return Refusal.BAD_ROOM_NAME
        with self._db.reading() as db:
            row = db.execute(
                "SELECT room_mode, end_ms, host_key_sha256, deleted FROM meetings WHERE room_name = ?",
                (room_name,),
            ).fetchone()
        if row is None:
            if require_api_key:
                return Refusal.ROOM_NOT_FOUND
            return RoomAdmission(
                room_name, default_mode, api_created=False, end_ms=None, host_key_valid=False
            )
        mode, end_ms, host_key_sha256, deleted = row
        if deleted or now_ms >= end_ms:
            return Refusal.MEETING_ENDED
        host_key_valid = room_key is not None and hmac.compare_digest(_sha256(room_key), host_key_sha256)
        return RoomAdmission(
            room_name, RoomMode(mode), api_created=True, end_ms=end_ms, host_key_valid=host_key_valid
        )
