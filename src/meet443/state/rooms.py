"""Where room snapshots (:class:`~meet443.proto.signaling.snapshot.RoomSnapshot`) live between
runs of a node (docs/signaling.md "Node restarts").

:class:`RoomStateStore` is the whole interface, opaque bytes by room name, so that another store
(Redis, for a region's failover) can take the place of :class:`SqliteRoomStore`, the single
node's, in ``<data-dir>/rooms.sqlite3``.

Durability: WAL with ``synchronous=NORMAL``. A committed write survives the process dying (a
crash, SIGKILL); a power cut may lose the last ones (the WAL is synced at checkpoints only), which
costs those participants their resume: they join again as new participants. That trade is
measured in BENCHMARKS.md ("Room snapshots").
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from meet443.exceptions import ConfigError, StateUnavailable

if TYPE_CHECKING:
    from meet443.state import SharedState

__all__ = ["ROOMS_DB_FILE_NAME", "RoomStateStore", "SharedRoomStore", "SqliteRoomStore"]

logger = logging.getLogger(__name__)

ROOMS_DB_FILE_NAME = "rooms.sqlite3"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rooms (name TEXT PRIMARY KEY, snapshot BLOB NOT NULL, saved REAL NOT NULL)"
)


class RoomStateStore(Protocol):
    """Room snapshots by room name. Calls may block (disk, network): the adapter makes them off
    its event loop, one at a time, in the order the rooms changed."""

    def save(self, room: str, snapshot: bytes, now: float) -> None:
        """Replace ``room``'s snapshot (``now``: wall-clock seconds, for an operator's eyes)."""

    def delete(self, room: str) -> None:
        """``room`` is gone (emptied, ended); deleting an unknown room is a no-op."""

    def load_all(self) -> dict[str, bytes]:
        """Every snapshot, by room name."""

    def close(self) -> None: ...


class SqliteRoomStore:
    """:class:`RoomStateStore` in one SQLite file, created 0600 (it holds display names and chat)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            # One connection used from the store's writer thread and, at start, the loader.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the room state database {path}: {exc}") from None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, data_dir: Path) -> SqliteRoomStore:
        return cls(data_dir / ROOMS_DB_FILE_NAME)

    def save(self, room: str, snapshot: bytes, now: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO rooms (name, snapshot, saved) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET snapshot = excluded.snapshot, saved = excluded.saved",
                (room, snapshot, now),
            )

    def delete(self, room: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM rooms WHERE name = ?", (room,))

    def load_all(self) -> dict[str, bytes]:
        with self._lock:
            return {name: bytes(data) for name, data in self._db.execute("SELECT name, snapshot FROM rooms")}

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SharedRoomStore:
    """:class:`RoomStateStore` of a cluster: each room's snapshot in the shared state (Redis), where
    the node that takes the room over after its home died reads it (docs/cluster.md "Failover").

    Every write carries the epoch of the lease this node holds on the room (``epoch_of``, None
    when it holds none) and is refused by the shared state once a later claim exists: a node that
    paused past its lease cannot overwrite the new home's snapshot. Calls come from the node's
    writer thread and run on ``loop``, whose shared-state client is not thread-safe.
    """

    #: A write that takes longer is given up (logged); the next change writes the room again.
    WRITE_TIMEOUT = 2.0

    def __init__(
        self, state: SharedState, loop: asyncio.AbstractEventLoop, epoch_of: Callable[[str], int | None]
    ) -> None:
        self._state = state
        self._loop = loop
        self._epoch_of = epoch_of

    def save(self, room: str, snapshot: bytes, now: float) -> None:
        self._write(room, snapshot)

    def delete(self, room: str) -> None:
        self._write(room, None)

    def _write(self, room: str, snapshot: bytes | None) -> None:
        epoch = self._epoch_of(room)
        if epoch is None:
            return  # not ours (any more): the room's home writes it
        write = (
            self._state.delete_room(room, epoch)
            if snapshot is None
            else self._state.save_room(room, epoch, snapshot)
        )
        try:
            done = asyncio.run_coroutine_threadsafe(write, self._loop).result(self.WRITE_TIMEOUT)
        except (StateUnavailable, TimeoutError) as exc:
            logger.warning("room %s: its snapshot could not be written to the shared state: %s", room, exc)
            return
        if not done:
            logger.warning("room %s: snapshot refused, the room has a newer home (epoch > %d)", room, epoch)

    def load_all(self) -> dict[str, bytes]:
        """Nothing at start: a node of a cluster restores a room when it takes it over
        (:meth:`~meet443.state.SharedState.load_room`), not every room of the cluster."""
        return {}

    def close(self) -> None:
        return None
