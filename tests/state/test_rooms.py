"""Room snapshots in the data dir (src/meet443/state/rooms.py) and written through by the node's
adapter: a real SQLite file, a real aiohttp server on 127.0.0.1, real WebSocket clients."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

from meet443.aio.node import SNAPSHOT_COALESCE_SECONDS
from meet443.app import load_rooms
from meet443.proto.signaling.snapshot import RoomSnapshot
from meet443.state.rooms import SqliteRoomStore
from tests.aio.test_signaling import Peer, run, serving

KEY = b"k" * 32


class TestSqliteRoomStore:
    def test_save_replace_delete_and_reopen(self, tmp_path: Path) -> None:
        store = SqliteRoomStore.open(tmp_path)
        assert stat.S_IMODE((tmp_path / "rooms.sqlite3").stat().st_mode) == 0o600
        store.save("a", b"one", 1.0)
        store.save("b", b"two", 1.0)
        store.save("a", b"three", 2.0)
        store.delete("b")
        store.delete("never-there")
        store.close()
        again = SqliteRoomStore.open(tmp_path)
        assert again.load_all() == {"a": b"three"}
        again.close()

    def test_an_unreadable_snapshot_is_left_out(self, tmp_path: Path) -> None:
        store = SqliteRoomStore.open(tmp_path)
        store.save("bad", b"{not json", 1.0)
        assert load_rooms(store) == []
        store.close()


class TestWriteThrough:
    """The adapter writes what the core says changed, and everything on close (SIGTERM)."""

    def test_a_second_run_resumes_the_first_runs_participant(self, tmp_path: Path) -> None:
        store = SqliteRoomStore.open(tmp_path)

        async def scenario() -> None:
            async with serving(rooms=store, resume_key=KEY) as (service, url, session):
                ada = await Peer.open(session, url)
                await ada.join()
                await ada.send("chat", text="hello", clientMessageId="c1")
                await ada.expect("chat")
                # Written within the coalescing window, without a close.
                for _ in range(50):
                    await asyncio.sleep(SNAPSHOT_COALESCE_SECONDS)
                    saved = store.load_all().get("standup")
                    if saved is not None and RoomSnapshot.parse(saved).history:
                        break
                assert [m.text for m in RoomSnapshot.parse(store.load_all()["standup"]).history] == ["hello"]
                await ada.send("hand", raised=True)
                await ada.quiet()
                await service.close()  # no waiting: close writes what is pending
                assert RoomSnapshot.parse(store.load_all()["standup"]).participants[0].hand is True

            async with serving(rooms=store, resume_key=KEY) as (service, url, session):
                service.node.restore(load_rooms(store), time.time())
                again = await Peer.open(session, url)
                joined = await again.join(resumeToken=ada.resume_token)
                assert (joined["selfId"], joined["resumed"]) == (ada.self_id, True)
                assert [m["text"] for m in joined["chat"]] == ["hello"]
                await again.send("leave")
                await again.send("ping")  # answered once the leave was handled
                assert (await again.recv())["code"] == "not-joined"
                await service.close()
            assert store.load_all() == {}  # the room emptied: its snapshot is gone

        run(scenario())
        store.close()
