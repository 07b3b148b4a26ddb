"""The rules of :mod:`meet443.meetings` over two tables: what both stores share.

A store subclasses :class:`TableStore` and supplies the row operations (the abstract methods); the
public methods of :class:`meet443.store.MeetingStore` are written once, here. A row insert reports a
taken meeting id, room name or key id by returning False, and the caller draws again.
"""

from __future__ import annotations

import abc
import builtins

from meet443.meetings import (
    INSERT_ATTEMPTS,
    ApiKey,
    Meeting,
    NewMeeting,
    RandomBytes,
    StoredApiKey,
    StoredMeeting,
    admission_for,
    api_key_id,
    check_api_key_label,
    check_meeting_end,
    check_room_name_prefix,
    draw_api_key,
    draw_meeting,
    verified_api_key,
)
from meet443.proto.signaling.admission import Refusal, RoomAdmission, RoomMode, is_valid_room_name

__all__ = ["ApiKeyTable", "TableStore"]


class TableStore(abc.ABC):
    """A :class:`meet443.store.MeetingStore` over the rows its subclass reads and writes."""

    def __init__(self, random_bytes: RandomBytes) -> None:
        self._random_bytes = random_bytes
        self._api_keys = ApiKeyTable(self, random_bytes)

    @property
    def api_keys(self) -> ApiKeyTable:
        return self._api_keys

    # -- rows, one transaction each ----------------------------------------------------------------

    @abc.abstractmethod
    async def insert_meeting(self, row: StoredMeeting) -> bool:
        """Insert the row; False when its meeting id or room name is taken."""

    @abc.abstractmethod
    async def find_meeting(self, meeting_id: str, created_by: str | None) -> Meeting | None:
        """The undeleted meeting with this id (and creator, unless None)."""

    @abc.abstractmethod
    async def meeting_in_room(self, room_name: str) -> StoredMeeting | None:
        """The row of the meeting in this room, deleted or not."""

    @abc.abstractmethod
    async def delete_meeting(self, meeting_id: str, created_by: str | None) -> Meeting | None:
        """Mark the meeting :meth:`find_meeting` finds deleted and return it."""

    @abc.abstractmethod
    async def end(self, room_name: str, now_ms: int) -> bool:
        """Lower the undeleted meeting's end to ``now_ms``; False when the room has no meeting."""

    @abc.abstractmethod
    async def insert_api_key(self, row: StoredApiKey) -> bool:
        """Insert the row; False when its key id is taken."""

    @abc.abstractmethod
    async def api_key_row(self, key_id: str) -> StoredApiKey | None: ...

    @abc.abstractmethod
    async def api_key_rows(self) -> list[ApiKey]:
        """Every key, oldest first."""

    @abc.abstractmethod
    async def revoke_api_key(self, key_id: str, now_ms: int) -> ApiKey | None: ...

    @abc.abstractmethod
    async def next_epoch(self) -> int: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    # -- the interface -----------------------------------------------------------------------------

    async def create(
        self,
        *,
        end_ms: int,
        mode: RoomMode,
        now_ms: int,
        room_name_prefix: str | None = None,
        created_by: str | None = None,
    ) -> NewMeeting:
        check_meeting_end(end_ms, now_ms)
        if room_name_prefix is not None:
            check_room_name_prefix(room_name_prefix)
        for _ in range(INSERT_ATTEMPTS):
            row, host_room_key = draw_meeting(
                self._random_bytes,
                end_ms=end_ms,
                mode=mode,
                now_ms=now_ms,
                room_name_prefix=room_name_prefix,
                created_by=created_by,
            )
            if await self.insert_meeting(row):
                return NewMeeting(row.meeting, host_room_key)
        raise RuntimeError("could not draw an unused room name")  # only with a broken random source

    async def get(self, meeting_id: str, *, created_by: str | None = None) -> Meeting | None:
        return await self.find_meeting(meeting_id, created_by)

    async def delete(self, meeting_id: str, *, created_by: str | None = None) -> Meeting | None:
        return await self.delete_meeting(meeting_id, created_by)

    async def admission(
        self,
        room_name: str,
        room_key: str | None,
        now_ms: int,
        *,
        require_api_key: bool,
        default_mode: RoomMode,
    ) -> RoomAdmission | Refusal:
        if not is_valid_room_name(room_name):
            return Refusal.BAD_ROOM_NAME
        return admission_for(
            room_name,
            room_key,
            await self.meeting_in_room(room_name),
            now_ms,
            require_api_key=require_api_key,
            default_mode=default_mode,
        )


class ApiKeyTable:
    """:class:`meet443.store.ApiKeyStore` over a :class:`TableStore`'s rows."""

    def __init__(self, store: TableStore, random_bytes: RandomBytes) -> None:
        self._store = store
        self._random_bytes = random_bytes

    async def create(self, label: str, *, now_ms: int, admin: bool = False) -> tuple[str, str]:
        check_api_key_label(label)
        for _ in range(INSERT_ATTEMPTS):
            row, api_key = draw_api_key(self._random_bytes, label, now_ms=now_ms, admin=admin)
            if await self._store.insert_api_key(row):
                return row.key.key_id, api_key
        raise RuntimeError("could not draw an unused API key id")  # only with a broken random source

    async def list(self) -> builtins.list[ApiKey]:
        return await self._store.api_key_rows()

    async def revoke(self, key_id: str, *, now_ms: int) -> ApiKey | None:
        return await self._store.revoke_api_key(key_id, now_ms)

    async def verify(self, api_key: str) -> ApiKey | None:
        key_id = api_key_id(api_key)
        if key_id is None:
            return None
        return verified_api_key(api_key, await self._store.api_key_row(key_id))
