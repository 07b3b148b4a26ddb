"""The meeting directory on both stores (SQLite and PostgreSQL): meetings, API keys, and what it
says about each join. What only one store does is in ``tests/store/``."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable

import pytest

from meet443.meetings import MAX_MEETING_MS, MAX_ROOM_NAME_PREFIX, check_room_name_prefix
from meet443.proto.signaling.admission import Refusal, RoomAdmission, RoomMode, is_valid_room_name
from meet443.store.tables import TableStore
from tests.conftest import OpenStore

NOW = 1_900_000_000_000  # ms since the epoch, in 2030
HOUR = 3_600_000
RANDOM_ROOM_NAME = re.compile(r"[a-z2-7]{16}")
API_KEY = re.compile(r"m443_([0-9a-f]{12})_[a-z2-7]{52}")


def seeded(seed: int = 1) -> Callable[[int], bytes]:
    source = random.Random(seed)
    return source.randbytes


async def admit(
    store: TableStore,
    name: str,
    key: str | None = None,
    now: int = NOW,
    *,
    require_api_key: bool = False,
    default_mode: RoomMode = RoomMode.NORMAL,
) -> RoomAdmission | Refusal:
    return await store.admission(name, key, now, require_api_key=require_api_key, default_mode=default_mode)


class TestReopen:
    async def test_survives_reopen(self, open_store: OpenStore) -> None:
        store = await open_store()
        created = await store.create(end_ms=NOW + HOUR, mode=RoomMode.GROUP, now_ms=NOW)
        key_id, api_key = await store.api_keys.create("ci", now_ms=NOW)
        await store.close()
        store = await open_store()
        assert await store.get(created.meeting.meeting_id) == created.meeting
        verified = await store.api_keys.verify(api_key)
        assert verified is not None and verified.key_id == key_id
        answer = await admit(store, created.meeting.room_name, created.host_room_key)
        assert isinstance(answer, RoomAdmission)
        assert answer.host_key_valid


class TestMeetings:
    async def test_create_and_get(self, store: TableStore) -> None:
        created = await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        meeting = created.meeting
        assert re.fullmatch(r"[0-9a-f]{32}", meeting.meeting_id)
        assert RANDOM_ROOM_NAME.fullmatch(meeting.room_name)
        assert is_valid_room_name(meeting.room_name)
        assert (meeting.mode, meeting.start_ms, meeting.end_ms) == (RoomMode.NORMAL, NOW, NOW + HOUR)
        assert await store.get(meeting.meeting_id) == meeting
        assert await store.get("0" * 32) is None

    async def test_room_names_carry_80_random_bits(self, open_store: OpenStore) -> None:
        """16 base32 characters are 80 bits: every random bit shows in the name."""
        store = await open_store(random_bytes=seeded())
        names = {
            (await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)).meeting.room_name
            for _ in range(200)
        }
        assert len(names) == 200
        assert all(RANDOM_ROOM_NAME.fullmatch(name) for name in names)
        # All 32 symbols show up in every position's population: no fixed or biased characters.
        for position in range(16):
            assert len({name[position] for name in names}) >= 24, position

    async def test_prefix(self, store: TableStore) -> None:
        meeting = (
            await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW, room_name_prefix="team-a")
        ).meeting
        prefix, random_part = meeting.room_name[:7], meeting.room_name[7:]
        assert prefix == "team-a-"
        assert RANDOM_ROOM_NAME.fullmatch(random_part)

    async def test_longest_prefix_still_makes_a_valid_name(self, store: TableStore) -> None:
        prefix = "p" * MAX_ROOM_NAME_PREFIX
        name = (
            await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW, room_name_prefix=prefix)
        ).meeting.room_name
        assert len(name) == 64
        assert is_valid_room_name(name)

    @pytest.mark.parametrize(
        "prefix", ["", "-team", "Team", "team_a", "team a", "tëam", "p" * (MAX_ROOM_NAME_PREFIX + 1), "a\n"]
    )
    async def test_bad_prefix(self, store: TableStore, prefix: str) -> None:
        with pytest.raises(ValueError, match="roomNamePrefix"):
            check_room_name_prefix(prefix)
        with pytest.raises(ValueError, match="roomNamePrefix"):
            await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW, room_name_prefix=prefix)

    @pytest.mark.parametrize(
        ("end", "message"),
        [(NOW, "in the future"), (NOW - 1, "in the future"), (NOW + MAX_MEETING_MS + 1, "at most 365 days")],
    )
    async def test_end_date_bounds(self, store: TableStore, end: int, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            await store.create(end_ms=end, mode=RoomMode.NORMAL, now_ms=NOW)

    async def test_end_date_limits_are_inclusive(self, store: TableStore) -> None:
        await store.create(end_ms=NOW + 1, mode=RoomMode.NORMAL, now_ms=NOW)
        await store.create(end_ms=NOW + MAX_MEETING_MS, mode=RoomMode.NORMAL, now_ms=NOW)

    async def test_repeated_random_draw_is_retried(self, open_store: OpenStore) -> None:
        repeating = seeded(7)
        draws: list[bytes] = []

        def first_meeting_twice(n: int) -> bytes:
            # Meeting 2's first draws repeat meeting 1's (room name, id, key); later draws are fresh.
            if len(draws) < 3:
                draws.append(repeating(n))
                return draws[-1]
            if len(draws) < 6:
                value = draws[len(draws) - 3]
                draws.append(value)
                return value
            return os.urandom(n)

        store = await open_store(random_bytes=first_meeting_twice)
        first = (await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)).meeting
        second = (await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)).meeting
        assert first.room_name != second.room_name
        assert first.meeting_id != second.meeting_id

    async def test_broken_random_source_gives_up(self, open_store: OpenStore) -> None:
        store = await open_store(random_bytes=bytes)
        await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        with pytest.raises(RuntimeError, match="unused room name"):
            await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        with pytest.raises(RuntimeError, match="unused API key id"):
            for _ in range(2):
                await store.api_keys.create("", now_ms=NOW)

    async def test_delete(self, store: TableStore) -> None:
        meeting = (await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)).meeting
        assert await store.delete(meeting.meeting_id) == meeting
        assert await store.get(meeting.meeting_id) is None
        assert await store.delete(meeting.meeting_id) is None
        assert await store.delete("nope") is None

    async def test_scoped_to_the_creating_key(self, store: TableStore) -> None:
        created = await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW, created_by="k1")
        meeting = created.meeting
        assert await store.get(meeting.meeting_id, created_by="k2") is None
        assert await store.delete(meeting.meeting_id, created_by="k2") is None
        assert await store.get(meeting.meeting_id, created_by="k1") == meeting
        assert await store.get(meeting.meeting_id) == meeting  # an admin key's scope
        assert await store.delete(meeting.meeting_id, created_by="k1") == meeting


class TestServerEpoch:
    async def test_grows_across_reopen(self, open_store: OpenStore) -> None:
        """Issue 10 §5: each server start takes an epoch from the store, never one seen before."""
        store = await open_store()
        assert [await store.next_epoch(), await store.next_epoch()] == [1, 2]
        await store.close()
        store = await open_store()
        assert await store.next_epoch() == 3


class TestAdmission:
    """docs/signaling.md, "Rooms"."""

    @pytest.mark.parametrize("name", ["", "Room", "-room", "a" * 65, "v1", "static", "healthz", "room/x"])
    async def test_bad_or_reserved_name(self, store: TableStore, name: str) -> None:
        assert await admit(store, name) is Refusal.BAD_ROOM_NAME
        assert await admit(store, name, require_api_key=True) is Refusal.BAD_ROOM_NAME

    async def test_ad_hoc_room_gets_the_default_mode(self, store: TableStore) -> None:
        assert await admit(store, "standup") == RoomAdmission(
            "standup", RoomMode.NORMAL, api_created=False, end_ms=None, host_key_valid=False
        )
        answer = await admit(store, "standup", "any-key", default_mode=RoomMode.GROUP)
        assert answer == RoomAdmission(
            "standup", RoomMode.GROUP, api_created=False, end_ms=None, host_key_valid=False
        )

    async def test_unknown_room_when_api_key_required(self, store: TableStore) -> None:
        assert await admit(store, "standup", require_api_key=True) is Refusal.ROOM_NOT_FOUND

    async def test_api_meeting(self, store: TableStore) -> None:
        created = await store.create(end_ms=NOW + HOUR, mode=RoomMode.GROUP, now_ms=NOW)
        name = created.meeting.room_name
        guest = RoomAdmission(name, RoomMode.GROUP, api_created=True, end_ms=NOW + HOUR, host_key_valid=False)
        for required in (False, True):
            # The meeting's mode wins over the default for ad-hoc rooms.
            assert await admit(store, name, None, require_api_key=required) == guest
            assert await admit(store, name, "wrong", require_api_key=required) == guest
            assert await admit(store, name, created.host_room_key[:-1], require_api_key=required) == guest
            host = await admit(store, name, created.host_room_key, require_api_key=required)
            assert isinstance(host, RoomAdmission)
            assert host.host_key_valid

    async def test_other_meetings_key_is_not_a_host_key(self, store: TableStore) -> None:
        first = await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        second = await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        answer = await admit(store, first.meeting.room_name, second.host_room_key)
        assert isinstance(answer, RoomAdmission)
        assert not answer.host_key_valid

    async def test_expiry(self, store: TableStore) -> None:
        created = await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        name = created.meeting.room_name
        assert isinstance(await admit(store, name, now=NOW + HOUR - 1), RoomAdmission)
        assert await admit(store, name, now=NOW + HOUR) is Refusal.MEETING_ENDED
        # Ended is ended, for hosts too, and the name never becomes an ad-hoc room.
        assert await admit(store, name, created.host_room_key, now=NOW + 2 * HOUR) is Refusal.MEETING_ENDED
        assert await admit(store, name, now=NOW + 2 * HOUR, require_api_key=True) is Refusal.MEETING_ENDED
        # Still readable through the API after its end.
        assert await store.get(created.meeting.meeting_id) == created.meeting

    async def test_deleted_meeting_refuses_joins(self, store: TableStore) -> None:
        created = await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        await store.delete(created.meeting.meeting_id)
        assert await admit(store, created.meeting.room_name, created.host_room_key) is Refusal.MEETING_ENDED

    async def test_ended_by_a_host_refuses_joins_after_reopening(self, open_store: OpenStore) -> None:
        store = await open_store()
        created = await store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        name = created.meeting.room_name
        assert await store.end(name, NOW + 10)
        assert await store.end(name, NOW + 20)  # ending again keeps the first end
        assert not await store.end("no-such-room", NOW + 10)
        await store.close()
        store = await open_store()
        assert await admit(store, name, created.host_room_key, now=NOW + 11) is Refusal.MEETING_ENDED
        assert isinstance(await admit(store, name, now=NOW + 9), RoomAdmission)


class TestApiKeys:
    async def test_create_verify_list(self, store: TableStore) -> None:
        key_id, api_key = await store.api_keys.create("ci bot", now_ms=NOW)
        match = API_KEY.fullmatch(api_key)
        assert match is not None
        assert match.group(1) == key_id
        verified = await store.api_keys.verify(api_key)
        assert verified is not None and verified.key_id == key_id
        (listed,) = await store.api_keys.list()
        assert (listed.key_id, listed.label, listed.created_ms, listed.revoked_ms) == (
            key_id,
            "ci bot",
            NOW,
            None,
        )
        assert api_key not in repr(listed)

    async def test_wrong_keys(self, store: TableStore) -> None:
        key_id, api_key = await store.api_keys.create("", now_ms=NOW)
        other_id, _ = await store.api_keys.create("", now_ms=NOW)
        secret = api_key.rsplit("_", 1)[1]
        wrong = [
            "",
            api_key[:-1],
            api_key + "a",
            api_key.upper(),
            f"m443_{other_id}_{secret}",  # a secret is bound to its key id
            f"m443_{'0' * 12}_{secret}",
            f"x443_{key_id}_{secret}",
            secret,
            key_id,
            api_key + "x" * 300,
            f"m443_{key_id}",
        ]
        for candidate in wrong:
            assert await store.api_keys.verify(candidate) is None, candidate

    async def test_revoke(self, store: TableStore) -> None:
        key_id, api_key = await store.api_keys.create("old", now_ms=NOW)
        kept_id, kept_key = await store.api_keys.create("kept", now_ms=NOW + 1)
        revoked = await store.api_keys.revoke(key_id, now_ms=NOW + 5)
        assert revoked is not None
        assert revoked.revoked_ms == NOW + 5
        assert await store.api_keys.verify(api_key) is None
        verified = await store.api_keys.verify(kept_key)
        assert verified is not None and verified.key_id == kept_id
        # Revoking again keeps the first time.
        again = await store.api_keys.revoke(key_id, now_ms=NOW + 9)
        assert again is not None
        assert again.revoked_ms == NOW + 5
        assert await store.api_keys.revoke("feedfeedfeed", now_ms=NOW) is None
        assert [(k.key_id, k.revoked_ms) for k in await store.api_keys.list()] == [
            (key_id, NOW + 5),
            (kept_id, None),
        ]

    @pytest.mark.parametrize(("label", "message"), [("x" * 101, "at most 100"), ("a\x1bb", "control")])
    async def test_bad_label(self, store: TableStore, label: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            await store.api_keys.create(label, now_ms=NOW)

    async def test_key_ids_differ(self, store: TableStore) -> None:
        ids = {(await store.api_keys.create("", now_ms=NOW))[0] for _ in range(20)}
        assert len(ids) == 20
