"""Where meetings, API keys and the server epoch live: one async interface, two stores.

:class:`MeetingStore` is what the server and the CLI use. Its implementations:

- :class:`meet443.store.sqlite.SqliteStore`: ``<data-dir>/meetings.sqlite3``, the single node's
  default; its blocking calls run in a worker thread.
- :class:`meet443.store.postgres.PostgresStore`: ``--database postgresql://...``, shared by every node
  of a cluster (docs/cluster.md, "Meetings and API keys in PostgreSQL").

Both inherit the rules (:mod:`meet443.meetings`) from :class:`meet443.store.tables.TableStore` and
differ only in how they read and write rows. A store that cannot be reached raises
:class:`meet443.exceptions.StoreUnavailable`.
"""

from __future__ import annotations

from pathlib import Path
from secrets import token_bytes
from typing import Protocol

from meet443.meetings import ApiKey, Meeting, NewMeeting, RandomBytes
from meet443.proto.signaling.admission import Refusal, RoomAdmission, RoomMode

__all__ = ["ApiKeyStore", "MeetingStore", "open_store"]


class ApiKeyStore(Protocol):
    """API keys for ``/v1/meetings``: ``m443_<key id>_<secret>``, stored as a SHA-256 digest."""

    async def create(self, label: str, *, now_ms: int, admin: bool = False) -> tuple[str, str]:
        """Return ``(key_id, api_key)``; the key is not stored and cannot be shown again."""
        ...

    async def list(self) -> list[ApiKey]: ...

    async def revoke(self, key_id: str, *, now_ms: int) -> ApiKey | None:
        """Revoke a key (at once, for every later request); returns it, or None if there is no such
        key. A key revoked before keeps its first ``revoked_ms``."""
        ...

    async def verify(self, api_key: str) -> ApiKey | None:
        """The valid, unrevoked ``api_key``, else None; compared in constant time."""
        ...


class MeetingStore(Protocol):
    """Meetings made through ``POST /v1/meetings``, their API keys, and the server epoch.

    Every write is durable when its call returns: the API answers 201 after the commit.
    """

    @property
    def api_keys(self) -> ApiKeyStore: ...

    @property
    def where(self) -> str:
        """The store for messages: a path, or a URL without its password."""
        ...

    async def create(
        self,
        *,
        end_ms: int,
        mode: RoomMode,
        now_ms: int,
        room_name_prefix: str | None = None,
        created_by: str | None = None,
    ) -> NewMeeting:
        """A meeting from ``now_ms`` to ``end_ms`` in a new room with an unguessable name.

        Raises ValueError for an end outside :func:`meet443.meetings.check_meeting_end` or a bad prefix.
        """
        ...

    async def get(self, meeting_id: str, *, created_by: str | None = None) -> Meeting | None:
        """The meeting, ended or not; None if it never existed, was deleted, or (with
        ``created_by``, an API key's :attr:`ApiKey.scope`) was created by another key."""
        ...

    async def delete(self, meeting_id: str, *, created_by: str | None = None) -> Meeting | None:
        """Delete a meeting: its room refuses every later join. Returns what was deleted, or None
        if there was none to delete (``created_by`` as for :meth:`get`)."""
        ...

    async def end(self, room_name: str, now_ms: int) -> bool:
        """A host ended the meeting for all: it admits nobody from now on, across restarts too."""
        ...

    async def admission(
        self,
        room_name: str,
        room_key: str | None,
        now_ms: int,
        *,
        require_api_key: bool,
        default_mode: RoomMode,
    ) -> RoomAdmission | Refusal:
        """What the directory says about one join (docs/signaling.md, "Rooms")."""
        ...

    async def next_epoch(self) -> int:
        """A number no earlier call on this store returned, from any node sharing it: a server takes
        one when it starts, so the chat ids of its rooms (docs/signaling.md ``chat``) never repeat
        those of an earlier run or of another node. Durable before it is returned."""
        ...

    async def close(self) -> None: ...


async def open_store(
    data_dir: Path,
    database: str | None = None,
    password: str | None = None,
    *,
    random_bytes: RandomBytes = token_bytes,
) -> MeetingStore:
    """The PostgreSQL store at ``database`` (a URL without its password), else the SQLite one in
    ``data_dir``; migrated to this version's schema. Raises ConfigError when it cannot be opened."""
    if database is None:
        from meet443.store.sqlite import SqliteStore  # noqa: PLC0415 -- one backend per process

        return SqliteStore.open(data_dir, random_bytes=random_bytes)
    from meet443.store.postgres import PostgresStore  # noqa: PLC0415 -- asyncpg only when asked for

    return await PostgresStore.connect(database, password, random_bytes=random_bytes)
