"""What only the SQLite store does: its file, its modes, its schema versions."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from meet443.exceptions import ConfigError
from meet443.proto.signaling.admission import RoomMode
from meet443.store.sqlite import DB_FILE_NAME, MIGRATIONS, SCHEMA_VERSION, SqliteStore

NOW = 1_900_000_000_000
HOUR = 3_600_000


class TestFile:
    async def test_created_private_in_data_dir_with_wal_and_version(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "state"
        async with SqliteStore.open(data_dir) as store:
            assert store.path == data_dir / DB_FILE_NAME
            assert store.where == str(data_dir / DB_FILE_NAME)
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((data_dir / DB_FILE_NAME).stat().st_mode) == 0o600
        db = sqlite3.connect(data_dir / DB_FILE_NAME)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        finally:
            db.close()

    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        await SqliteStore.open(tmp_path).close()
        db = sqlite3.connect(tmp_path / DB_FILE_NAME)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.close()
        with pytest.raises(ConfigError, match="newer than this meet443"):
            SqliteStore.open(tmp_path)

    def test_unusable_data_dir(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(ConfigError, match="cannot create"):
            SqliteStore.open(tmp_path / "file" / "data")

    def test_not_a_database(self, tmp_path: Path) -> None:
        (tmp_path / DB_FILE_NAME).write_bytes(os.urandom(4096))
        with pytest.raises(ConfigError, match="cannot open the meetings database"):
            SqliteStore.open(tmp_path)


class TestSecretsOnDisk:
    async def test_host_key_is_stored_only_as_its_digest(self, tmp_path: Path) -> None:
        async with SqliteStore.open(tmp_path) as store:
            created = await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        key = created.host_room_key
        assert len(key) >= 22  # 128 bits or more in URL-safe base64
        assert key not in repr(created)
        raw = b"".join((tmp_path / name).read_bytes() for name in os.listdir(tmp_path))
        assert key.encode() not in raw
        db = sqlite3.connect(tmp_path / DB_FILE_NAME)
        try:
            (digest,) = db.execute("SELECT host_key_sha256 FROM meetings").fetchone()
        finally:
            db.close()
        assert digest == hashlib.sha256(key.encode()).digest()

    async def test_api_key_is_stored_only_as_its_digest(self, tmp_path: Path) -> None:
        async with SqliteStore.open(tmp_path) as store:
            _, api_key = await store.api_keys.create("", now_ms=NOW)
        secret = api_key.rsplit("_", 1)[1]
        raw = b"".join((tmp_path / name).read_bytes() for name in os.listdir(tmp_path))
        assert secret.encode() not in raw


class TestMigration:
    async def test_version_1_store(self, tmp_path: Path) -> None:
        """A store made before scoped keys: its keys become ordinary keys that keep their meetings."""
        path = tmp_path / DB_FILE_NAME
        db = sqlite3.connect(path)
        db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO meetings VALUES ('m1', 'room-aaaaaaaaaaaaaaaa', 'normal', ?, ?, x'00', 'k1', 0)",
            (NOW, NOW + HOUR),
        )
        db.execute("INSERT INTO api_keys VALUES ('k1', 'old', x'00', ?, NULL)", (NOW,))
        db.commit()
        db.close()
        async with SqliteStore(path) as store:
            (key,) = await store.api_keys.list()
            assert (key.key_id, key.admin, key.scope) == ("k1", False, "k1")
            assert await store.get("m1", created_by=key.scope) is not None
            assert await store.get("m1", created_by="k2") is None
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        db.close()
