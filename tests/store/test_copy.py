"""``meet443 db copy``: a single node's SQLite store into PostgreSQL, idempotently (docs/cluster.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meet443.cli import main
from meet443.proto.signaling.admission import Refusal, RoomAdmission, RoomMode
from meet443.store.postgres import PostgresStore
from meet443.store.sqlite import SqliteStore
from tests.postgres import PostgresServer

pytestmark = pytest.mark.postgresql

NOW = 1_900_000_000_000
HOUR = 3_600_000


def copy(capsys: pytest.CaptureFixture[str], source: Path, url: str) -> str:
    assert main(["db", "copy", "--from", str(source), "--to", url]) == 0
    return capsys.readouterr().out


async def fill(data_dir: Path) -> dict[str, str]:
    """Two meetings (one ended by its host, one deleted), two keys (one revoked), epoch 3."""
    async with SqliteStore.open(data_dir) as store:
        kept = await store.create(end_ms=NOW + HOUR, mode=RoomMode.GROUP, now_ms=NOW, created_by="k")
        ended = await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        deleted = await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        await store.end(ended.meeting.room_name, NOW + 5)
        await store.delete(deleted.meeting.meeting_id)
        _, key = await store.api_keys.create("kept", now_ms=NOW, admin=True)
        revoked_id, revoked = await store.api_keys.create("revoked", now_ms=NOW)
        await store.api_keys.revoke(revoked_id, now_ms=NOW + 1)
        for _ in range(3):
            await store.next_epoch()
    return {
        "kept": kept.meeting.meeting_id,
        "kept_room": kept.meeting.room_name,
        "kept_host_key": kept.host_room_key,
        "ended_room": ended.meeting.room_name,
        "deleted": deleted.meeting.meeting_id,
        "deleted_room": deleted.meeting.room_name,
        "key": key,
        "revoked": revoked,
    }


async def check_copied(url: str, made: dict[str, str]) -> None:
    store = await PostgresStore.connect(url)
    try:

        async def admit(room: str, key: str | None = None) -> RoomAdmission | Refusal:
            return await store.admission(
                room, key, NOW + 10, require_api_key=True, default_mode=RoomMode.NORMAL
            )

        kept = await store.get(made["kept"], created_by="k")
        assert kept is not None and (kept.mode, kept.end_ms) == (RoomMode.GROUP, NOW + HOUR)
        host = await admit(made["kept_room"], made["kept_host_key"])
        assert isinstance(host, RoomAdmission) and host.host_key_valid
        assert await admit(made["ended_room"]) is Refusal.MEETING_ENDED
        assert await admit(made["deleted_room"]) is Refusal.MEETING_ENDED
        assert await store.get(made["deleted"]) is None
        verified = await store.api_keys.verify(made["key"])
        assert verified is not None and verified.admin and verified.label == "kept"
        assert await store.api_keys.verify(made["revoked"]) is None
        assert await store.next_epoch() > 3  # chat ids never repeat the single node's
    finally:
        await store.close()


def test_copy_then_again(
    tmp_path: Path, postgres: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    made = asyncio.run(fill(tmp_path / "data"))
    url = asyncio.run(postgres.fresh_database())
    out = copy(capsys, tmp_path / "data", url)
    assert out.startswith(
        "copied 3 new meetings and updated 0 (of 3); copied 2 new API keys and updated 0 (of 2); "
        "server epoch at least 3"
    ), out
    asyncio.run(check_copied(url, made))

    # Again, from the file itself: nothing new.
    out = copy(capsys, tmp_path / "data" / "meetings.sqlite3", url)
    assert out.startswith("nothing new to copy: all 3 meetings and 2 API keys are already in PostgreSQL"), out

    # The single node ran on: a meeting ended, a key revoked, a meeting and a key made.
    async def more() -> None:
        async with SqliteStore.open(tmp_path / "data") as store:
            await store.end(made["kept_room"], NOW + 7)
            key = await store.api_keys.verify(made["key"])
            assert key is not None
            await store.api_keys.revoke(key.key_id, now_ms=NOW + 8)
            await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
            await store.api_keys.create("new", now_ms=NOW)

    asyncio.run(more())
    out = copy(capsys, tmp_path / "data", url)
    assert out.startswith(
        "copied 1 new meetings and updated 1 (of 4); copied 1 new API keys and updated 1 (of 3)"
    ), out

    async def carried_over() -> None:
        store = await PostgresStore.connect(url)
        try:
            answer = await store.admission(
                made["kept_room"], None, NOW + 7, require_api_key=True, default_mode=RoomMode.NORMAL
            )
            assert answer is Refusal.MEETING_ENDED
            assert await store.api_keys.verify(made["key"]) is None
        finally:
            await store.close()

    asyncio.run(carried_over())


def test_nothing_to_copy_from(
    tmp_path: Path, postgres: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "copy", "--from", str(tmp_path), "--to", postgres.socket_url()]) == 2
    assert "no SQLite meetings store at" in capsys.readouterr().err
    assert not (tmp_path / "meetings.sqlite3").exists()
