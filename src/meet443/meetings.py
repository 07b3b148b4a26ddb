"""What a meeting and an API key are, and the rules both stores apply to them (``meet443.store``).

Meetings are made through ``POST /v1/meetings``; API keys allow making them. The stores (SQLite in the
data dir, PostgreSQL with ``--database``) keep rows; everything that decides something lives here, free
of I/O: the checks on what a client asks for, drawing names and secrets, the answer to a join, and
whether a bearer token is a valid key.

Secrets are stored only as SHA-256 digests and compared with :func:`hmac.compare_digest`: a meeting's
host room key (256 random bits, shown once in ``hostRoomUrl``) and an API key (``m443_<id>_<secret>``,
256 random bits, printed once by ``meet443 api-key create``). Plain SHA-256 is enough because both are
random, not chosen by people: there is no dictionary to try.

API keys are scoped: a key sees and deletes only the meetings it created (``created_by``), unless it
is an admin key (``meet443 api-key create --admin``).

A deleted or ended meeting stays in the table as a tombstone, so its room name keeps refusing joins
with ``meeting-ended`` and never turns into an ad-hoc room that anyone holding an old link could enter.

Nothing here reads a clock: ``now_ms`` (milliseconds since the epoch) is always a parameter, and
randomness comes from a ``random_bytes`` callable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from meet443.proto.signaling.admission import (
    Refusal,
    RoomAdmission,
    RoomMode,
    is_valid_room_name,
)

__all__ = [
    "API_KEY_PREFIX",
    "INSERT_ATTEMPTS",
    "MAX_MEETING_MS",
    "MAX_ROOM_NAME_PREFIX",
    "ApiKey",
    "Meeting",
    "NewMeeting",
    "RandomBytes",
    "StoredApiKey",
    "StoredMeeting",
    "admission_for",
    "api_key_id",
    "check_api_key_label",
    "check_meeting_end",
    "check_room_name_prefix",
    "draw_api_key",
    "draw_meeting",
    "verified_api_key",
]

#: A meeting may end at most this far in the future.
MAX_MEETING_MS = 365 * 86_400_000
#: 80 random bits: 16 base32 characters, out of reach of guessing at any join rate limit.
ROOM_NAME_RANDOM_BYTES = 10
ROOM_NAME_RANDOM_CHARS = 16
#: Room names are at most 64 characters; a prefix leaves room for "-" and the random part.
MAX_ROOM_NAME_PREFIX = 64 - 1 - ROOM_NAME_RANDOM_CHARS
MEETING_ID_BYTES = 16
HOST_KEY_BYTES = 32
API_KEY_PREFIX = "m443"
API_KEY_ID_BYTES = 6
API_KEY_SECRET_BYTES = 32
MAX_API_KEY_LABEL = 100
#: Longer bearer tokens are refused before hashing; a real key is 70 characters.
MAX_API_KEY_LENGTH = 200
#: Draws of a new meeting or key before giving up: a repeat is already a 2^-80 event.
INSERT_ATTEMPTS = 4

_ROOM_NAME_PREFIX = re.compile(r"[a-z0-9][a-z0-9-]*")
_API_KEY_ID = re.compile(r"[0-9a-f]{12}")
# Compared against when a key id is unknown, so an unknown id costs the same work as a wrong secret.
_NO_DIGEST = bytes(32)

RandomBytes = Callable[[int], bytes]


def sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _base32(data: bytes) -> str:
    """RFC 4648 base32, lower case, without padding: only ``a-z`` and ``2-7``."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _urlsafe(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


# --------------------------------------------------------------------------------------------------
# Validation shared with the HTTP API and the CLI (each raises ValueError with a message for people)


def check_room_name_prefix(prefix: str) -> None:
    """A ``roomNamePrefix`` must keep ``<prefix>-<random>`` a valid room name (docs/signaling.md)."""
    if not _ROOM_NAME_PREFIX.fullmatch(prefix):
        raise ValueError(
            "roomNamePrefix must start with a lower-case letter or digit and contain only a-z, 0-9 and '-'"
        )
    if len(prefix) > MAX_ROOM_NAME_PREFIX:
        raise ValueError(f"roomNamePrefix must be at most {MAX_ROOM_NAME_PREFIX} characters")


def check_meeting_end(end_ms: int, now_ms: int) -> None:
    """``endDate`` must lie in the future, at most :data:`MAX_MEETING_MS` ahead."""
    if end_ms <= now_ms:
        raise ValueError("endDate must be in the future")
    if end_ms - now_ms > MAX_MEETING_MS:
        raise ValueError(f"endDate must be at most {MAX_MEETING_MS // 86_400_000} days ahead")


def check_api_key_label(label: str) -> None:
    if len(label) > MAX_API_KEY_LABEL:
        raise ValueError(f"a label is at most {MAX_API_KEY_LABEL} characters")
    if not label.isprintable():
        raise ValueError("a label must not contain control characters")


# --------------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True, slots=True)
class Meeting:
    meeting_id: str
    room_name: str
    mode: RoomMode
    #: Milliseconds since the epoch.
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class NewMeeting:
    """A meeting just created, with the one copy of its host room key that will ever exist."""

    meeting: Meeting
    host_room_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class StoredMeeting:
    """A meeting's row, as every store keeps it (and ``meet443 db copy`` moves it)."""

    meeting: Meeting
    host_key_sha256: bytes
    #: The key id of the API key that made it.
    created_by: str | None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What is known about an API key after it was printed: never its secret."""

    key_id: str
    label: str
    created_ms: int
    revoked_ms: int | None
    #: Sees and deletes every meeting, not only those it created.
    admin: bool = False

    @property
    def scope(self) -> str | None:
        """The ``created_by`` of the meetings this key may see, or None for all of them."""
        return None if self.admin else self.key_id


@dataclass(frozen=True, slots=True)
class StoredApiKey:
    """An API key's row: the key and the digest of its secret."""

    key: ApiKey
    key_sha256: bytes


# --------------------------------------------------------------------------------------------------
# Rules


def draw_meeting(
    random_bytes: RandomBytes,
    *,
    end_ms: int,
    mode: RoomMode,
    now_ms: int,
    room_name_prefix: str | None,
    created_by: str | None,
) -> tuple[StoredMeeting, str]:
    """A new meeting's row and its host room key, from fresh random bytes; the caller has checked
    ``end_ms`` and the prefix."""
    random_part = _base32(random_bytes(ROOM_NAME_RANDOM_BYTES))
    room_name = random_part if room_name_prefix is None else f"{room_name_prefix}-{random_part}"
    assert is_valid_room_name(room_name), room_name
    meeting = Meeting(
        meeting_id=random_bytes(MEETING_ID_BYTES).hex(),
        room_name=room_name,
        mode=mode,
        start_ms=now_ms,
        end_ms=end_ms,
    )
    host_room_key = _urlsafe(random_bytes(HOST_KEY_BYTES))
    return StoredMeeting(meeting, sha256(host_room_key), created_by), host_room_key


def draw_api_key(
    random_bytes: RandomBytes, label: str, *, now_ms: int, admin: bool
) -> tuple[StoredApiKey, str]:
    """A new key's row and the key itself (``m443_<key id>_<secret>``), never stored."""
    key_id = random_bytes(API_KEY_ID_BYTES).hex()
    api_key = f"{API_KEY_PREFIX}_{key_id}_{_base32(random_bytes(API_KEY_SECRET_BYTES))}"
    return StoredApiKey(ApiKey(key_id, label, now_ms, None, admin), sha256(api_key)), api_key


def api_key_id(api_key: str) -> str | None:
    """The key id of a well-formed bearer token, else None (look nothing up for it)."""
    if len(api_key) > MAX_API_KEY_LENGTH:
        return None
    prefix, _, rest = api_key.partition("_")
    key_id, _, _secret = rest.partition("_")
    if prefix != API_KEY_PREFIX or not _API_KEY_ID.fullmatch(key_id):
        return None
    return key_id


def verified_api_key(api_key: str, row: StoredApiKey | None) -> ApiKey | None:
    """The key if ``api_key`` matches the row of its key id and is not revoked; compared in constant
    time, with the same work when there is no row."""
    expected = row.key_sha256 if row is not None else _NO_DIGEST
    matches = hmac.compare_digest(sha256(api_key), expected)
    if not matches or row is None or row.key.revoked_ms is not None:
        return None
    return row.key


def admission_for(
    room_name: str,
    room_key: str | None,
    row: StoredMeeting | None,
    now_ms: int,
    *,
    require_api_key: bool,
    default_mode: RoomMode,
) -> RoomAdmission | Refusal:
    """What the directory says about one join to a valid room name whose meeting row (if any) is
    ``row`` (docs/signaling.md, "Rooms")."""
    if row is None:
        if require_api_key:
            return Refusal.ROOM_NOT_FOUND
        return RoomAdmission(room_name, default_mode, api_created=False, end_ms=None, host_key_valid=False)
    end_ms = row.meeting.end_ms
    if row.deleted or now_ms >= end_ms:
        return Refusal.MEETING_ENDED
    host_key_valid = room_key is not None and hmac.compare_digest(sha256(room_key), row.host_key_sha256)
    return RoomAdmission(
        room_name, row.meeting.mode, api_created=True, end_ms=end_ms, host_key_valid=host_key_valid
    )
