"""What resuming a room after a node restart needs (docs/signaling.md "Node restarts"), as a typed,
versioned value with a byte round trip.

The signaling core writes a :class:`RoomSnapshot` through to its data dir whenever a room's durable
state changes, and rebuilds the room from it on the next start, every participant awaiting resume.
It holds no credential: a participant's resume token is an HMAC of the room, the participant and
:attr:`ParticipantSnapshot.resume_nonce` under the node's resume key (:func:`resume_token`), so
the snapshot alone cannot take anyone over. Knockers are not in it: they hold no identity to come
back to (no resume token), and their clients knock again. The SFU's state is not in it either:
participants of a group room who resume get ``sfu-restart`` and publish again.

Decoding tolerates unknown fields (a newer node may add some) and refuses a newer :attr:`v`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Literal

import msgspec
from msgspec import Struct

from meet443.exceptions import ParseError
from meet443.proto.signaling.messages import ChatMessage

__all__ = ["SNAPSHOT_VERSION", "ParticipantSnapshot", "RoomSnapshot", "resume_token"]

SNAPSHOT_VERSION = 1


class ParticipantSnapshot(Struct, frozen=True, kw_only=True):
    """A joined participant, as the others saw it, and what derives its resume token."""

    id: str
    display_name: str
    host: bool
    audio: bool = False
    video: bool = False
    screen: bool = False
    hand: bool = False
    #: Fresh on every join and resume: a token seen on an old socket cannot take the participant over.
    resume_nonce: str
    #: When the last TURN credential handed to it expires (to revoke them if it never comes back).
    turn_until: float = 0.0


class RoomSnapshot(Struct, frozen=True, kw_only=True):
    """One room: its facts, its participants in join order and its chat history."""

    v: int = SNAPSHOT_VERSION
    name: str
    mode: Literal["normal", "group"]
    api_created: bool
    end_ms: int | None
    locked: bool
    chat_epoch: int
    chat_seq: int
    #: Oldest first, ``(epoch, seq)`` ids as sent; the participants' ``clientMessageId`` de-duplication
    #: comes back from it.
    history: list[ChatMessage]
    participants: list[ParticipantSnapshot]

    @classmethod
    def parse(cls, data: bytes) -> RoomSnapshot:
        """Raises :class:`~meet443.exceptions.ParseError` for anything but a snapshot of a known version."""
        try:
            snapshot = _decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ParseError(f"not a room snapshot: {exc}") from None
        if snapshot.v > SNAPSHOT_VERSION:
            raise ParseError(f"room snapshot version {snapshot.v}, newer than {SNAPSHOT_VERSION}")
        return snapshot

    def __bytes__(self) -> bytes:
        return _encoder.encode(self)


_decoder = msgspec.json.Decoder(RoomSnapshot)
_encoder = msgspec.json.Encoder()


def resume_token(key: bytes, room: str, participant: str, nonce: str) -> str:
    """HMAC-SHA256 (RFC 2104) of the three under the node's resume key, base64url without padding."""
    message = "\n".join((room, participant, nonce)).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
