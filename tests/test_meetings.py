"""The SQLite meeting directory: meetings, API keys, and what it says about each join."""

from __future__ import annotations

import hashlib
import os
import random
import re
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meet443.exceptions import ConfigError
from meet443.meetings import (
    _MIGRATIONS,
    DB_FILE_NAME,
    MAX_MEETING_MS,
    MAX_ROOM_NAME_PREFIX,
    SCHEMA_VERSION,
    MeetingStore,
    check_room_name_prefix,
)
from meet443.proto.signaling.admission import Refusal, RoomAdmission, RoomMode, is_valid_room_name

NOW = 1_900_000_000_000  # ms since the epoch, in 2030
HOUR = 3_600_000
RANDOM_ROOM_NAME = re.compile(r"[a-z2-7]{16}")
API_KEY = re.compile(r"m443_([0-9a-f]{12})_[a-z2-7]{52}")


def seeded(seed: int = 1) -> Callable[[int], bytes]:
    source = random.Random(seed)
    return source.randbytes


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MeetingStore]:
    with MeetingStore.open(tmp_path / "data") as opened:
        yield opened


def admit(
    store: MeetingStore,
    name: str,
    key: str | None = None,
    now: int = NOW,
    *,
    require_api_key: bool = False,
    default_mode: RoomMode = RoomMode.NORMAL,
) -> RoomAdmission | Refusal:
    return store.admission(name, key, now, require_api_key=require_api_key, default_mode=default_mode)


class TestFile:
    def test_created_private_in_data_dir_with_wal_and_version(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "state"
        with MeetingStore.open(data_dir) as store:
            assert store.path == data_dir / DB_FILE_NAME
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((data_dir / DB_FILE_NAME).stat().st_mode) == 0o600
        db = sqlite3.connect(data_dir / DB_FILE_NAME)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        finally:
            db.close()

    def test_survives_reopen(self, tmp_path: Path) -> None:
        with MeetingStore.open(tmp_path) as store:
            created = store.create(end_ms=NOW + HOUR, mode=RoomMode.GROUP, now_ms=NOW)
            key_id, api_key = store.api_keys.create("ci", now_ms=NOW)
        with MeetingStore.open(tmp_path) as store:
            assert store.get(created.meeting.meeting_id) == created.meeting
            verified = store.api_keys.verify(api_key)
            assert verified is not None and verified.key_id == key_id
            answer = admit(store, created.meeting.room_name, created.host_room_key)
            assert isinstance(answer, RoomAdmission)
            assert answer.host_key_valid

    def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        MeetingStore.open(tmp_path).close()
        db = sqlite3.connect(tmp_path / DB_FILE_NAME)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        db.close()
        with pytest.raises(ConfigError, match="newer than this meet443"):
            MeetingStore.open(tmp_path)

    def test_unusable_data_dir(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(ConfigError, match="cannot create"):
            MeetingStore.open(tmp_path / "file" / "data")

    def test_not_a_database(self, tmp_path: Path) -> None:
        (tmp_path / DB_FILE_NAME).write_bytes(os.urandom(4096))
        with pytest.raises(ConfigError, match="cannot open the meetings database"):
            MeetingStore.open(tmp_path)


class TestMeetings:
    def test_create_and_get(self, store: MeetingStore) -> None:
        created = store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        meeting = created.meeting
        assert re.fullmatch(r"[0-9a-f]{32}", meeting.meeting_id)
        assert RANDOM_ROOM_NAME.fullmatch(meeting.room_name)
        assert is_valid_room_name(meeting.room_name)
        assert (meeting.mode, meeting.start_ms, meeting.end_ms) == (RoomMode.NORMAL, NOW, NOW + HOUR)
        assert store.get(meeting.meeting_id) == meeting
        assert store.get("0" * 32) is None

    def test_room_names_carry_80_random_bits(self, tmp_path: Path) -> None:
        """16 base32 characters are 80 bits: every random bit shows in the name."""
        with MeetingStore(tmp_path / "db", random_bytes=seeded()) as store:
            names = {
                store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW).meeting.room_name
                for _ in range(200)
            }
        assert len(names) == 200
        assert all(RANDOM_ROOM_NAME.fullmatch(name) for name in names)
        # All 32 symbols show up in every position's population: no fixed or biased characters.
        for position in range(16):
            assert len({name[position] for name in names}) >= 24, position

    def test_prefix(self, store: MeetingStore) -> None:
        meeting = store.create(
            end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW, room_name_prefix="team-a"
        ).meeting
        prefix, random_part = meeting.room_name[:7], meeting.room_name[7:]
        assert prefix == "team-a-"
        assert RANDOM_ROOM_NAME.fullmatch(random_part)

    def test_longest_prefix_still_makes_a_valid_name(self, store: MeetingStore) -> None:
        prefix = "p" * MAX_ROOM_NAME_PREFIX
        name = store.create(
            end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW, room_name_prefix=prefix
        ).meeting.room_name
        assert len(name) == 64
        assert is_valid_room_name(name)

    @pytest.mark.parametrize(
        "prefix", ["", "-team", "Team", "team_a", "team a", "tëam", "p" * (MAX_ROOM_NAME_PREFIX + 1), "a\n"]
    )
    def test_bad_prefix(self, store: MeetingStore, prefix: str) -> None:
        with pytest.raises(ValueError, match="roomNamePrefix"):
            check_room_name_prefix(prefix)
        with pytest.raises(ValueError, match="roomNamePrefix"):
            store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW, room_name_prefix=prefix)

    @pytest.mark.parametrize(
        ("end", "message"),
        [(NOW, "in the future"), (NOW - 1, "in the future"), (NOW + MAX_MEETING_MS + 1, "at most 365 days")],
    )
    def test_end_date_bounds(self, store: MeetingStore, end: int, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            store.create(end_ms=end, mode=RoomMode.NORMAL, now_ms=NOW)

    def test_end_date_limits_are_inclusive(self, store: MeetingStore) -> None:
        store.create(end_ms=NOW + 1, mode=RoomMode.NORMAL, now_ms=NOW)
        store.create(end_ms=NOW + MAX_MEETING_MS, mode=RoomMode.NORMAL, now_ms=NOW)

    def test_repeated_random_draw_is_retried(self, tmp_path: Path) -> None:
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

        with MeetingStore(tmp_path / "db", random_bytes=first_meeting_twice) as store:
            first = store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW).meeting
            second = store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW).meeting
        assert first.room_name != second.room_name
        assert first.meeting_id != second.meeting_id

    def test_broken_random_source_gives_up(self, tmp_path: Path) -> None:
        with MeetingStore(tmp_path / "db", random_bytes=bytes) as store:
            store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
            with pytest.raises(RuntimeError, match="unused room name"):
                store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)

    def test_host_key_is_stored_only_as_its_digest(self, tmp_path: Path) -> None:
        with MeetingStore.open(tmp_path) as store:
            created = store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        key = created.host_room_key
        assert len(key) >= 22  # 128 bits or more in URL-safe base64
        assert re.fullmatch(r"[A-Za-z0-9_-]+", key)
        assert key not in repr(created)
        raw = b"".join((tmp_path / name).read_bytes() for name in os.listdir(tmp_path))
        assert key.encode() not in raw
        db = sqlite3.connect(tmp_path / DB_FILE_NAME)
        try:
            (digest,) = db.execute("SELECT host_key_sha256 FROM meetings").fetchone()
        finally:
            db.close()
        assert digest == hashlib.sha256(key.encode()).digest()

    def test_delete(self, store: MeetingStore) -> None:
        meeting = store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW).meeting
        assert store.delete(meeting.meeting_id) == meeting
        assert store.get(meeting.meeting_id) is None
        assert store.delete(meeting.meeting_id) is None
        assert store.delete("nope") is None

    def test_scoped_to_the_creating_key(self, store: MeetingStore) -> None:
        meeting = store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW, created_by="k1").meeting
        assert store.get(meeting.meeting_id, created_by="k2") is None
        assert store.delete(meeting.meeting_id, created_by="k2") is None
        assert store.get(meeting.meeting_id, created_by="k1") == meeting
        assert store.get(meeting.meeting_id) == meeting  # an admin key's scope
        assert store.delete(meeting.meeting_id, created_by="k1") == meeting


class TestServerEpoch:
    def test_grows_across_reopen(self, tmp_path: Path) -> None:
        """Issue 10 §5: each server start takes an epoch from the data dir, never one seen before."""
        with MeetingStore.open(tmp_path) as store:
            assert [store.next_epoch(), store.next_epoch()] == [1, 2]
        with MeetingStore.open(tmp_path) as store:
            assert store.next_epoch() == 3


class TestMigration:
    def test_version_1_store(self, tmp_path: Path) -> None:
        """A store made before scoped keys: its keys become ordinary keys that keep their meetings."""
        path = tmp_path / DB_FILE_NAME
        db = sqlite3.connect(path)
        db.executescript(_MIGRATIONS[0] + "PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO meetings VALUES ('m1', 'room-aaaaaaaaaaaaaaaa', 'normal', ?, ?, x'00', 'k1', 0)",
            (NOW, NOW + HOUR),
        )
        db.execute("INSERT INTO api_keys VALUES ('k1', 'old', x'00', ?, NULL)", (NOW,))
        db.commit()
        db.close()
        with MeetingStore(path) as store:
            (key,) = store.api_keys.list()
            assert (key.key_id, key.admin, key.scope) == ("k1", False, "k1")
            assert store.get("m1", created_by=key.scope) is not None
            assert store.get("m1", created_by="k2") is None
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        db.close()


class TestAdmission:
    """docs/signaling.md, "Rooms"."""

    @pytest.mark.parametrize("name", ["", "Room", "-room", "a" * 65, "v1", "static", "healthz", "room/x"])
    def test_bad_or_reserved_name(self, store: MeetingStore, name: str) -> None:
        assert admit(store, name) is Refusal.BAD_ROOM_NAME
        assert admit(store, name, require_api_key=True) is Refusal.BAD_ROOM_NAME

    def test_ad_hoc_room_gets_the_default_mode(self, store: MeetingStore) -> None:
        assert admit(store, "standup") == RoomAdmission(
            "standup", RoomMode.NORMAL, api_created=False, end_ms=None, host_key_valid=False
        )
        answer = admit(store, "standup", "any-key", default_mode=RoomMode.GROUP)
        assert answer == RoomAdmission(
            "standup", RoomMode.GROUP, api_created=False, end_ms=None, host_key_valid=False
        )

    def test_unknown_room_when_api_key_required(self, store: MeetingStore) -> None:
        assert admit(store, "standup", require_api_key=True) is Refusal.ROOM_NOT_FOUND

    def test_api_meeting(self, store: MeetingStore) -> None:
        created = store.create(end_ms=NOW + HOUR, mode=RoomMode.GROUP, now_ms=NOW)
        name = created.meeting.room_name
        guest = RoomAdmission(name, RoomMode.GROUP, api_created=True, end_ms=NOW + HOUR, host_key_valid=False)
        for required in (False, True):
            # The meeting's mode wins over the default for ad-hoc rooms.
            assert admit(store, name, None, require_api_key=required) == guest
            assert admit(store, name, "wrong", require_api_key=required) == guest
            assert admit(store, name, created.host_room_key[:-1], require_api_key=required) == guest
            host = admit(store, name, created.host_room_key, require_api_key=required)
            assert isinstance(host, RoomAdmission)
            assert host.host_key_valid

    def test_other_meetings_key_is_not_a_host_key(self, store: MeetingStore) -> None:
        first = store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        second = store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        answer = admit(store, first.meeting.room_name, second.host_room_key)
        assert isinstance(answer, RoomAdmission)
        assert not answer.host_key_valid

    def test_expiry(self, store: MeetingStore) -> None:
        created = store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        name = created.meeting.room_name
        assert isinstance(admit(store, name, now=NOW + HOUR - 1), RoomAdmission)
        assert admit(store, name, now=NOW + HOUR) is Refusal.MEETING_ENDED
        # Ended is ended, for hosts too, and the name never becomes an ad-hoc room.
        assert admit(store, name, created.host_room_key, now=NOW + 2 * HOUR) is Refusal.MEETING_ENDED
        assert admit(store, name, now=NOW + 2 * HOUR, require_api_key=True) is Refusal.MEETING_ENDED
        # Still readable through the API after its end.
        assert store.get(created.meeting.meeting_id) == created.meeting

    def test_deleted_meeting_refuses_joins(self, store: MeetingStore) -> None:
        created = store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
        store.delete(created.meeting.meeting_id)
        assert admit(store, created.meeting.room_name, created.host_room_key) is Refusal.MEETING_ENDED

    def test_ended_by_a_host_refuses_joins_after_reopening(self, tmp_path: Path) -> None:
        with MeetingStore.open(tmp_path / "d") as store:
            created = store.create(end_ms=NOW + HOUR, mode=RoomMode.NORMAL, now_ms=NOW)
            name = created.meeting.room_name
            assert store.end(name, NOW + 10)
            assert not store.end("no-such-room", NOW + 10)
        with MeetingStore.open(tmp_path / "d") as store:
            assert admit(store, name, created.host_room_key, now=NOW + 11) is Refusal.MEETING_ENDED
            assert isinstance(admit(store, name, now=NOW + 9), RoomAdmission)


class TestApiKeys:
    def test_create_verify_list(self, store: MeetingStore) -> None:
        key_id, api_key = store.api_keys.create("ci bot", now_ms=NOW)
        match = API_KEY.fullmatch(api_key)
        assert match is not None
        assert match.group(1) == key_id
        verified = store.api_keys.verify(api_key)
        assert verified is not None and verified.key_id == key_id
        (listed,) = store.api_keys.list()
        assert (listed.key_id, listed.label, listed.created_ms, listed.revoked_ms) == (
            key_id,
            "ci bot",
            NOW,
            None,
        )
        assert api_key not in repr(listed)

    def test_stored_only_as_digest(self, tmp_path: Path) -> None:
        with MeetingStore.open(tmp_path) as store:
            _, api_key = store.api_keys.create("", now_ms=NOW)
        secret = api_key.rsplit("_", 1)[1]
        raw = b"".join((tmp_path / name).read_bytes() for name in os.listdir(tmp_path))
        assert secret.encode() not in raw

    def test_wrong_keys(self, store: MeetingStore) -> None:
        key_id, api_key = store.api_keys.create("", now_ms=NOW)
        other_id, _ = store.api_keys.create("", now_ms=NOW)
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
            assert store.api_keys.verify(candidate) is None, candidate

    def test_revoke(self, store: MeetingStore) -> None:
        key_id, api_key = store.api_keys.create("old", now_ms=NOW)
        kept_id, kept_key = store.api_keys.create("kept", now_ms=NOW + 1)
        revoked = store.api_keys.revoke(key_id, now_ms=NOW + 5)
        assert revoked is not None
        assert revoked.revoked_ms == NOW + 5
        assert store.api_keys.verify(api_key) is None
        verified = store.api_keys.verify(kept_key)
        assert verified is not None and verified.key_id == kept_id
        # Revoking again keeps the first time.
        again = store.api_keys.revoke(key_id, now_ms=NOW + 9)
        assert again is not None
        assert again.revoked_ms == NOW + 5
        assert store.api_keys.revoke("feedfeedfeed", now_ms=NOW) is None
        assert [(k.key_id, k.revoked_ms) for k in store.api_keys.list()] == [
            (key_id, NOW + 5),
            (kept_id, None),
        ]

    @pytest.mark.parametrize(("label", "message"), [("x" * 101, "at most 100"), ("a\x1bb", "control")])
    def test_bad_label(self, store: MeetingStore, label: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            store.api_keys.create(label, now_ms=NOW)

    def test_key_ids_differ(self, store: MeetingStore) -> None:
        ids = {store.api_keys.create("", now_ms=NOW)[0] for _ in range(20)}
        assert len(ids) == 20
