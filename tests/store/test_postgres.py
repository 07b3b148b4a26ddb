"""What only the PostgreSQL store does: durable sessions, migrations by nodes starting together, one
epoch sequence for every node, and what happens while PostgreSQL is down (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meet443.exceptions import ConfigError, StoreUnavailable
from meet443.proto.signaling.admission import RoomAdmission, RoomMode
from meet443.store.postgres import SCHEMA_VERSION, PostgresStore, redact_url
from tests.postgres import PostgresServer, free_tcp_port

pytestmark = pytest.mark.postgresql

NOW = 1_900_000_000_000
HOUR = 3_600_000


@contextlib.asynccontextmanager
async def postgres_store(url: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.connect(url)
    try:
        yield store
    finally:
        await store.close()


def _files_contain(root: Path, needle: bytes) -> bool:
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                if needle in (Path(directory) / name).read_bytes():
                    return True
            except OSError:
                continue
    return False


class TestSessions:
    async def test_commit_is_synchronous_whatever_the_server_or_url_say(
        self, postgres: PostgresServer
    ) -> None:
        """The session server defaults to synchronous_commit = off (conftest.py); a URL may try too."""
        url = await postgres.fresh_database()
        async with postgres_store(f"{url}&synchronous_commit=off") as store:
            assert await store.pool.fetchval("SHOW synchronous_commit") == "on"
            assert await store.pool.fetchval("SHOW fsync") == "on"

    async def test_secrets_never_reach_the_disk(self, postgres: PostgresServer) -> None:
        url = await postgres.fresh_database()
        async with postgres_store(url) as store:
            created = await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
            _, api_key = await store.api_keys.create("", now_ms=NOW)
            digest = await store.pool.fetchval("SELECT host_key_sha256 FROM meetings")
            await store.pool.execute("CHECKPOINT")
        assert digest == hashlib.sha256(created.host_room_key.encode()).digest()
        assert _files_contain(postgres.data, digest)  # the search can find what is there
        assert not _files_contain(postgres.data, created.host_room_key.encode())
        assert not _files_contain(postgres.data, api_key.rsplit("_", 1)[1].encode())


class TestMigrations:
    async def test_nodes_starting_together_migrate_once(self, postgres: PostgresServer) -> None:
        url = await postgres.fresh_database()
        stores = await asyncio.gather(*(PostgresStore.connect(url) for _ in range(6)))
        try:
            versions = await stores[0].pool.fetch("SELECT version FROM meet443_schema")
            assert [row["version"] for row in versions] == list(range(1, SCHEMA_VERSION + 1))
            created = await stores[1].create(end_ms=NOW + HOUR, mode=RoomMode.GROUP, now_ms=NOW)
            assert await stores[5].get(created.meeting.meeting_id) == created.meeting
        finally:
            await asyncio.gather(*(store.close() for store in stores))

    async def test_newer_schema_is_refused(self, postgres: PostgresServer) -> None:
        url = await postgres.fresh_database()
        async with postgres_store(url) as store:
            await store.pool.execute("INSERT INTO meet443_schema VALUES ($1)", SCHEMA_VERSION + 1)
        with pytest.raises(ConfigError, match="newer than this meet443"):
            await PostgresStore.connect(url)


class TestEpoch:
    async def test_unique_across_nodes(self, postgres: PostgresServer) -> None:
        url = await postgres.fresh_database()
        async with postgres_store(url) as first, postgres_store(url) as second:
            epochs = await asyncio.gather(*(store.next_epoch() for store in [first, second] * 20))
        assert len(set(epochs)) == 40


class TestUnreachable:
    async def test_config_error_names_the_database_but_not_the_password(self) -> None:
        with pytest.raises(ConfigError, match=r"postgresql://meet443@127\.0\.0\.1:1/x") as caught:
            await PostgresStore.connect("postgresql://meet443:hunter2-secret@127.0.0.1:1/x")
        assert "hunter2" not in str(caught.value)
        assert redact_url("postgres://u:p%40ss@[::1]:5/db?host=/x") == "postgres://u@[::1]:5/db?host=/x"

    def test_down_then_back(self, tmp_path: Path, runner: asyncio.Runner) -> None:
        """Calls fail with StoreUnavailable while PostgreSQL is down, and work again once it is back,
        on the pool's reconnected connections; the password travels over TCP (scram-sha-256)."""
        port = free_tcp_port()
        with PostgresServer(port=port) as server:
            store = runner.run(PostgresStore.connect(server.url, server.password))
            try:
                created = runner.run(store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW))
                server.kill()
                for call in (
                    store.get(created.meeting.meeting_id),
                    store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW),
                    store.admission("room", None, NOW, require_api_key=False, default_mode=RoomMode.NORMAL),
                ):
                    with pytest.raises(StoreUnavailable, match=rf"127\.0\.0\.1:{port}"):
                        runner.run(call)
                server.start()
                assert runner.run(store.get(created.meeting.meeting_id)) == created.meeting
                answer = runner.run(
                    store.admission(
                        created.meeting.room_name,
                        None,
                        NOW,
                        require_api_key=True,
                        default_mode=RoomMode.NORMAL,
                    )
                )
                assert isinstance(answer, RoomAdmission)
            finally:
                runner.run(store.close())

    async def test_wrong_password(self, tmp_path: Path) -> None:
        with (
            PostgresServer(port=free_tcp_port()) as server,
            pytest.raises(ConfigError, match="password authentication failed"),
        ):
            await PostgresStore.connect(server.url, "wrong")
