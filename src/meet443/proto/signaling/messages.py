"""Signaling messages of docs/signaling.md ("Client → server", "Server → client") as typed values.

Every client message is a :class:`msgspec.Struct` in one tagged union on ``"type"`` with camelCase
field names; msgspec checks shape, types and the contract's length limits in one pass over the
bytes, so the room state machine only ever sees valid values. :func:`decode_client_message` is the
one parser and raises only :class:`~meet443.exceptions.SignalingError` with code ``too-large``,
``unknown-type`` or ``bad-message``.

Server messages are Structs too; :func:`encode` turns any of them into the bytes of one text frame.
No I/O here.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from meet443.exceptions import SignalingError
from meet443.regions import MAX_REGIONS, MAX_RTT_MS, REGION_NAME

__all__ = [
    "MAX_CHAT_CHARS",
    "MAX_DISPLAY_NAME_CHARS",
    "MAX_FRAME_BYTES",
    "MAX_SDP_BYTES",
    "Admit",
    "Answer",
    "Candidate",
    "Chat",
    "ChatMessage",
    "ClientMessage",
    "End",
    "Ended",
    "ErrorMessage",
    "IceCandidate",
    "IceRefresh",
    "IceServersMessage",
    "Join",
    "Joined",
    "Kick",
    "Kicked",
    "Knock",
    "KnockCancelled",
    "Knocking",
    "Leave",
    "Lock",
    "Media",
    "Mute",
    "MuteRequest",
    "Offer",
    "ParticipantInfo",
    "ParticipantJoined",
    "ParticipantLeft",
    "ParticipantUpdated",
    "Ping",
    "Pong",
    "RaiseHand",
    "Reaction",
    "ReactionMessage",
    "Reject",
    "Rejected",
    "RelayedAnswer",
    "RelayedCandidate",
    "RelayedOffer",
    "RoomInfo",
    "RoomUpdated",
    "ServerMessage",
    "SfuRestart",
    "clean_display_name",
    "decode_client_message",
    "encode",
]

# docs/signaling.md "Limits".
MAX_FRAME_BYTES = 64 * 1024
MAX_CHAT_CHARS = 4000
MAX_DISPLAY_NAME_CHARS = 64
MAX_SDP_BYTES = 60_000
MAX_CLIENT_MESSAGE_ID_CHARS = 64

# Not fixed by the contract; generous bounds that no browser reaches, so that no field is unbounded
# apart from the 64 KiB frame limit.
#: Before trimming and control-character removal; the cleaned name must be 1 to 64 characters.
_MAX_RAW_DISPLAY_NAME_CHARS = 256
#: Room names are at most 64 characters; longer ones decode and get ``bad-room-name`` from the room.
_MAX_RAW_ROOM_CHARS = 256
_MAX_ROOM_KEY_CHARS = 256
_MAX_RESUME_TOKEN_CHARS = 128
#: Participant ids are short server-made tokens; this only bounds what a client may send.
_MAX_ID_CHARS = 64
#: A candidate line is well under 1 KB (RFC 8839 §5.1 grammar); 4 KB leaves room for extensions.
_MAX_CANDIDATE_CHARS = 4096
_MAX_SDP_MID_CHARS = 256
_MAX_UFRAG_CHARS = 256
#: JavaScript's Number.MAX_SAFE_INTEGER: a sequence number the browser can hold exactly.
_MAX_SAFE_INTEGER = 2**53 - 1

Id = Annotated[str, Meta(min_length=1, max_length=_MAX_ID_CHARS)]
#: docs/signaling.md ``join.rtts``: region name → measured round trip in milliseconds.
Rtts = Annotated[
    dict[Annotated[str, Meta(pattern=f"^{REGION_NAME}$")], Annotated[float, Meta(ge=0, le=MAX_RTT_MS)]],
    Meta(max_length=MAX_REGIONS),
]
#: docs/signaling.md ``join.unreachable``: regions whose node did not answer the browser's probe.
RegionNames = Annotated[list[Annotated[str, Meta(pattern=f"^{REGION_NAME}$")]], Meta(max_length=MAX_REGIONS)]

# --------------------------------------------------------------------------------------------------
# Display names

#: Bidirectional-text controls let a name render as something else (e.g. reversed), a spoofing aid;
#: the zero-width joiner (U+200D) stays because emoji sequences need it.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Control characters (Cc) and line/paragraph separators would break one-line rendering and logs.
_REMOVED_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def clean_display_name(raw: str) -> str:
    """docs/signaling.md "Limits": trim and remove control characters; the caller checks 1 to 64."""
    if raw.isascii() and raw.isprintable():
        return raw.strip()
    kept = "".join(
        c for c in raw if c not in _BIDI_CONTROLS and unicodedata.category(c) not in _REMOVED_CATEGORIES
    )
    return kept.strip()


# --------------------------------------------------------------------------------------------------
# Client → server


class _ClientBase(Struct, tag_field="type", rename="camel", forbid_unknown_fields=True, frozen=True):
    pass


class Join(_ClientBase, tag="join", frozen=True, omit_defaults=True):
    """The first message of a socket; ``v`` is checked by the room (``unsupported-version``)."""

    v: int
    room: Annotated[str, Meta(max_length=_MAX_RAW_ROOM_CHARS)]
    display_name: Annotated[str, Meta(max_length=_MAX_RAW_DISPLAY_NAME_CHARS)]
    room_key: Annotated[str, Meta(max_length=_MAX_ROOM_KEY_CHARS)] | None = None
    resume_token: Annotated[str, Meta(max_length=_MAX_RESUME_TOKEN_CHARS)] | None = None
    last_chat_seq: Annotated[int, Meta(ge=0, le=_MAX_SAFE_INTEGER)] | None = None
    #: The ``epoch`` of the message ``lastChatSeq`` counts in; another epoch's seq means nothing here.
    last_chat_epoch: Annotated[int, Meta(ge=0, le=_MAX_SAFE_INTEGER)] | None = None
    #: Round trips the browser measured to each region's node (``GET /v1/rtt``); picks its TURN servers.
    rtts: Rtts | None = None
    #: Regions the browser probed in vain (timed out, refused): never its fallback, and counted.
    unreachable: RegionNames | None = None

    def __post_init__(self) -> None:
        name = clean_display_name(self.display_name)
        if not 1 <= len(name) <= MAX_DISPLAY_NAME_CHARS:
            raise ValueError(f"displayName must be 1 to {MAX_DISPLAY_NAME_CHARS} characters after trimming")
        msgspec.structs.force_setattr(self, "display_name", name)


def _check_sdp(sdp: str) -> None:
    # The character limit is checked by msgspec; only non-ASCII SDP can be longer in bytes.
    if not sdp.isascii() and len(sdp.encode("utf-8")) > MAX_SDP_BYTES:
        raise ValueError(f"sdp must be at most {MAX_SDP_BYTES} bytes")


Sdp = Annotated[str, Meta(max_length=MAX_SDP_BYTES)]


class Offer(_ClientBase, tag="offer", frozen=True):
    to: Id
    sdp: Sdp

    def __post_init__(self) -> None:
        _check_sdp(self.sdp)


class Answer(_ClientBase, tag="answer", frozen=True):
    to: Id
    sdp: Sdp

    def __post_init__(self) -> None:
        _check_sdp(self.sdp)


class IceCandidate(Struct, rename="camel", forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """``RTCIceCandidateInit``; optional members left out stay left out when relayed ("as sent")."""

    candidate: Annotated[str, Meta(max_length=_MAX_CANDIDATE_CHARS)]
    sdp_mid: Annotated[str, Meta(max_length=_MAX_SDP_MID_CHARS)] | UnsetType | None = UNSET
    sdp_m_line_index: Annotated[int, Meta(ge=0, le=65535)] | UnsetType | None = UNSET
    username_fragment: Annotated[str, Meta(max_length=_MAX_UFRAG_CHARS)] | UnsetType | None = UNSET


class Candidate(_ClientBase, tag="candidate", frozen=True):
    """``candidate: null`` is the end of candidates."""

    to: Id
    candidate: IceCandidate | None


class Chat(_ClientBase, tag="chat", frozen=True):
    text: Annotated[str, Meta(min_length=1, max_length=MAX_CHAT_CHARS)]
    client_message_id: Annotated[str, Meta(min_length=1, max_length=MAX_CLIENT_MESSAGE_ID_CHARS)]


class Media(_ClientBase, tag="media", frozen=True):
    audio: bool
    video: bool
    screen: bool


class RaiseHand(_ClientBase, tag="hand", frozen=True):
    raised: bool


#: The emoji a ``reaction`` may carry: a fixed set, so that nobody can put text on everyone's screen.
ReactionEmoji = Literal["👍", "👏", "❤️", "😂", "😮", "🎉"]


class Reaction(_ClientBase, tag="reaction", frozen=True):
    emoji: ReactionEmoji


class Lock(_ClientBase, tag="lock", frozen=True):
    locked: bool


class Admit(_ClientBase, tag="admit", frozen=True):
    participant_id: Id


class Reject(_ClientBase, tag="reject", frozen=True):
    participant_id: Id


class Kick(_ClientBase, tag="kick", frozen=True):
    participant_id: Id


class Mute(_ClientBase, tag="mute", frozen=True):
    participant_id: Id
    kind: Literal["audio", "video"]


class End(_ClientBase, tag="end", frozen=True):
    pass


class IceRefresh(_ClientBase, tag="ice-refresh", frozen=True):
    pass


class Ping(_ClientBase, tag="ping", frozen=True):
    pass


class Leave(_ClientBase, tag="leave", frozen=True):
    pass


# Group rooms (docs/signaling.md "Group rooms"): two peer connections per participant with the SFU.

Source = Literal["microphone", "camera", "screen"]
_Mid = Annotated[str, Meta(min_length=1, max_length=_MAX_SDP_MID_CHARS)]


class Publish(_ClientBase, tag="publish", frozen=True):
    """The offer of the participant's publish connection and what each sending section carries."""

    sdp: Sdp
    sources: Annotated[dict[_Mid, Source], Meta(max_length=8)]

    def __post_init__(self) -> None:
        _check_sdp(self.sdp)


class SubscribeAnswer(_ClientBase, tag="subscribe-answer", frozen=True):
    sdp: Sdp

    def __post_init__(self) -> None:
        _check_sdp(self.sdp)


class Resubscribe(_ClientBase, tag="resubscribe", frozen=True):
    """The subscribe connection failed: ask for a fresh offer (new ICE credentials)."""


class Pause(_ClientBase, tag="pause", frozen=True):
    """Stop (or resume) forwarding the video of one subscribe section the client does not show."""

    mid: _Mid
    paused: bool


SfuRequest = Publish | SubscribeAnswer | Resubscribe | Pause


ClientMessage = (
    Join
    | Offer
    | Answer
    | Candidate
    | Chat
    | Media
    | RaiseHand
    | Reaction
    | Lock
    | Admit
    | Reject
    | Kick
    | Mute
    | End
    | IceRefresh
    | Ping
    | Leave
    | Publish
    | SubscribeAnswer
    | Resubscribe
    | Pause
)

CLIENT_TYPES = frozenset(
    {
        "join",
        "offer",
        "answer",
        "candidate",
        "chat",
        "media",
        "hand",
        "reaction",
        "lock",
        "admit",
        "reject",
        "kick",
        "mute",
        "end",
        "ice-refresh",
        "ping",
        "leave",
        "publish",
        "subscribe-answer",
        "resubscribe",
        "pause",
    }
)


class _TypeProbe(Struct):
    """Reads only ``type``, to tell ``unknown-type`` from ``bad-message`` after a failed decode."""

    type: object = None


_decoder: msgspec.json.Decoder[ClientMessage] = msgspec.json.Decoder(ClientMessage)
_probe = msgspec.json.Decoder(_TypeProbe)
#: msgspec's messages name the field and the rule but may quote a value; keep error replies short.
_MAX_ERROR_TEXT = 200


def _frame_too_large(data: bytes | str) -> bool:
    if isinstance(data, bytes):
        return len(data) > MAX_FRAME_BYTES
    # A character is 1 to 4 bytes of UTF-8: only encode when the count alone does not decide.
    if len(data) > MAX_FRAME_BYTES:
        return True
    if len(data) * 4 <= MAX_FRAME_BYTES:
        return False
    return len(data.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES


def decode_client_message(data: bytes | str) -> ClientMessage:
    """docs/signaling.md: validate one text frame; raises only :class:`SignalingError`.

    ``too-large`` for frames over 64 KiB, ``unknown-type`` for a JSON object whose ``type`` is a
    string naming no client message, ``bad-message`` for everything else (not JSON, not an object,
    missing or mistyped fields, unknown fields, lengths). All leave the socket open.
    """
    if _frame_too_large(data):
        raise SignalingError("too-large", f"frame over {MAX_FRAME_BYTES} bytes")
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeError) as exc:
        # A str argument with lone surrogates fails to encode inside msgspec (UnicodeEncodeError);
        # deeply nested arrays exhaust the recursion limit.
        detail = str(exc)
    try:
        message_type = _probe.decode(data).type
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        message_type = None
    if isinstance(message_type, str) and message_type not in CLIENT_TYPES:
        raise SignalingError("unknown-type", "unknown message type", ref=message_type[:64])
    ref = message_type if isinstance(message_type, str) else None
    raise SignalingError("bad-message", detail[:_MAX_ERROR_TEXT], ref=ref)


# --------------------------------------------------------------------------------------------------
# Server → client


class ParticipantInfo(Struct, rename="camel", frozen=True):
    """docs/signaling.md: a participant object."""

    id: str
    display_name: str
    host: bool
    audio: bool
    video: bool
    screen: bool
    connected: bool
    hand: bool = False


class RoomInfo(Struct, rename="camel", frozen=True):
    name: str
    mode: str
    locked: bool
    max_participants: int


class _ServerBase(Struct, tag_field="type", rename="camel", frozen=True):
    pass


class ChatMessage(_ServerBase, tag="chat", frozen=True):
    """A chat message; ``(epoch, seq)`` is its id: ``seq`` counts from 1 in each room, ``epoch``
    changes (grows) whenever a room's chat starts again, after a server restart that did not
    restore the room included."""

    seq: int
    sender: str = msgspec.field(name="from")
    display_name: str
    text: str
    ts: int
    client_message_id: str
    epoch: int


class Joined(_ServerBase, tag="joined", frozen=True):
    self_id: str
    resume_token: str
    resumed: bool
    room: RoomInfo
    host: bool
    participants: list[ParticipantInfo]
    ice_servers: list[dict[str, object]]
    ice_transport_policy: Literal["all", "relay"]
    chat: list[ChatMessage]
    #: Group rooms: who is speaking as the person joins (the SFU only announces changes).
    speaker: str | None = None


class Knocking(_ServerBase, tag="knocking", frozen=True):
    pass


class Knock(_ServerBase, tag="knock", frozen=True):
    participant_id: str
    display_name: str


class KnockCancelled(_ServerBase, tag="knock-cancelled", frozen=True):
    participant_id: str


class Rejected(_ServerBase, tag="rejected", frozen=True):
    pass


class ParticipantJoined(_ServerBase, tag="participant-joined", frozen=True):
    participant: ParticipantInfo


class ParticipantUpdated(_ServerBase, tag="participant-updated", frozen=True):
    participant: ParticipantInfo


class ParticipantLeft(_ServerBase, tag="participant-left", frozen=True):
    id: str
    reason: Literal["left", "timeout", "kicked"]


class RelayedOffer(_ServerBase, tag="offer", frozen=True):
    sender: str = msgspec.field(name="from")
    to: str
    sdp: str


class RelayedAnswer(_ServerBase, tag="answer", frozen=True):
    sender: str = msgspec.field(name="from")
    to: str
    sdp: str


class RelayedCandidate(_ServerBase, tag="candidate", frozen=True):
    sender: str = msgspec.field(name="from")
    to: str
    candidate: IceCandidate | None


class RoomUpdated(_ServerBase, tag="room-updated", frozen=True):
    room: RoomInfo


class MuteRequest(_ServerBase, tag="mute-request", frozen=True):
    kind: Literal["audio", "video"]
    by: str


class ReactionMessage(_ServerBase, tag="reaction", frozen=True):
    participant_id: str
    emoji: str


class Kicked(_ServerBase, tag="kicked", frozen=True):
    pass


class Ended(_ServerBase, tag="ended", frozen=True):
    pass


class IceServersMessage(_ServerBase, tag="ice-servers", frozen=True):
    ice_servers: list[dict[str, object]]
    ttl: int


class Pong(_ServerBase, tag="pong", frozen=True):
    pass


class SfuTrack(Struct, rename="camel", frozen=True):
    """One section of the subscribe connection and whose media it carries now (``None``: idle)."""

    mid: str
    kind: Literal["audio", "video"]
    participant_id: str | None
    source: Source | None


class PublishAnswer(_ServerBase, tag="publish-answer", frozen=True):
    sdp: str


class SubscribeOffer(_ServerBase, tag="subscribe-offer", frozen=True):
    sdp: str
    tracks: list[SfuTrack]


class Tracks(_ServerBase, tag="tracks", frozen=True):
    """The sections of the subscribe connection were given to other sources (no renegotiation)."""

    tracks: list[SfuTrack]


class Republish(_ServerBase, tag="republish", frozen=True):
    """The SFU would answer the publish connection differently now (another video codec, so that
    every subscriber decodes it): send a new ``publish`` offer."""


class SfuRestart(_ServerBase, tag="sfu-restart", frozen=True):
    """The SFU lost this participant's media session (its worker or node restarted): close the
    SFU peer connections and publish and subscribe again on new ones, keeping the participant id,
    the tiles and the chat (docs/signaling.md "Group rooms")."""


class Speaker(_ServerBase, tag="speaker", frozen=True):
    """The room's dominant speaker changed (RFC 6464 audio levels measured by the SFU)."""

    participant_id: str | None


class ErrorMessage(_ServerBase, tag="error", frozen=True, omit_defaults=True):
    code: str
    message: str
    ref: str | None = None


ServerMessage = (
    ChatMessage
    | Joined
    | Knocking
    | Knock
    | KnockCancelled
    | Rejected
    | ParticipantJoined
    | ParticipantUpdated
    | ParticipantLeft
    | RelayedOffer
    | RelayedAnswer
    | RelayedCandidate
    | RoomUpdated
    | MuteRequest
    | ReactionMessage
    | Kicked
    | Ended
    | IceServersMessage
    | Pong
    | PublishAnswer
    | SubscribeOffer
    | Tracks
    | Republish
    | SfuRestart
    | Speaker
    | ErrorMessage
)

_encoder = msgspec.json.Encoder()


def encode(message: ServerMessage) -> bytes:
    """The UTF-8 JSON of one text frame."""
    return _encoder.encode(message)
