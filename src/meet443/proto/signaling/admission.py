"""What the meeting directory says about a room when someone joins it.

The directory (SQLite-backed meetings, ad-hoc rooms) does I/O; the room state machine does not. The
asyncio adapter asks the directory and hands the answer to the state machine as this value.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
RESERVED_ROOM_NAMES = frozenset(
    {"check", "healthz", "v1", "static", "metrics", "api", "favicon.ico", "robots.txt"}
)


def is_valid_room_name(name: str) -> bool:
    return ROOM_NAME.fullmatch(name) is not None and name not in RESERVED_ROOM_NAMES


class RoomMode(enum.Enum):
    NORMAL = "normal"  # peer-to-peer mesh, at most 4 participants
    GROUP = "group"  # through the SFU


class Refusal(enum.Enum):
    """Why the directory will not admit anyone to a room; the values are signaling error codes."""

    BAD_ROOM_NAME = "bad-room-name"
    ROOM_NOT_FOUND = "room-not-found"
    MEETING_ENDED = "meeting-ended"


@dataclass(frozen=True, slots=True)
class RoomAdmission:
    """The directory's answer for one join attempt."""

    name: str
    mode: RoomMode
    #: Created through ``POST /v1/meetings`` (hosts are room-key holders) or ad hoc (first joiner).
    api_created: bool
    #: Milliseconds since the epoch after which the meeting admits nobody; None for ad-hoc rooms.
    end_ms: int | None
    #: The join carried this meeting's valid host room key.
    host_key_valid: bool
