"""The signaling server of docs/signaling.md as a sans-I/O state machine.

Connections are plain integers chosen by the adapter. Bytes and ``now`` go in, outputs come out:

* ``connect(conn, remote_ip, now)``: a WebSocket was accepted;
* ``receive(conn, data, now)``: one text frame (``binary=True``: a binary one, refused);
* ``admit(conn, admission, now)``: the directory's answer to a :class:`LookupRoom` output;
* ``disconnected(conn, now)``: the socket is gone (the participant may resume for 30 s);
* ``end_meeting(room, now)``: the meeting was deleted through the API; everyone in it is sent away;
* ``handle_timer(now)``: heartbeats, resume windows, TURN credential refresh, meeting end times;
* ``sfu_restarted(room)``: the SFU lost the room's media session (docs/signaling.md "SFU restart");
* ``snapshot(room)`` / ``restore(snapshots, now)``: a room's durable state, and the rooms an earlier
  run of the node saved (docs/signaling.md "Node restarts").

Outputs are :class:`Send`, :class:`Close`, :class:`LookupRoom` (join is two-phase: the directory is
I/O), :class:`MeetingEnded`, :class:`RevokeTurn` (for the TURN core), :class:`ToSfu` and
:class:`LeftSfu` (for the SFU) and :class:`RoomChanged` (write the room's snapshot). ``now`` is
wall-clock seconds (UNIX time), because chat timestamps, meeting end times and TURN REST usernames
are all wall-clock values. Randomness (participant ids, resume tokens) comes from the injected
``token(nbytes) -> str`` and TURN credentials from the injected ``ice_servers(participant_id, now,
probe) -> (servers, ttl)``, where ``probe`` (:class:`meet443.regions.Probe`) holds the round trips
the participant's browser measured to each region and the regions it could not reach
(``join.rtts``, ``join.unreachable``; empty when it sent none).

State, in one place:

* a connection is ``OPEN`` (no join yet, or after ``leave``), ``LOOKING_UP`` (join sent, waiting for
  the directory), ``KNOCKING`` or ``JOINED``;
* a participant is ``KNOCKING`` (waiting for a host of a locked room), ``CONNECTED`` or
  ``AWAITING_RESUME`` (its socket dropped less than 30 s ago; it keeps its id and its slot);
* a room exists while it has participants or knockers and is forgotten when it empties; API-room
  facts (end time) come from the directory on every join, resumes included: a directory that says
  a live room's meeting is over ends it for everyone.

Nothing leaves a room: every :class:`Send` caused by a participant goes to its own connection or to
connections of participants and knockers of the same room.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Literal

from meet443.exceptions import SignalingError
from meet443.proto.addresses import address_key
from meet443.proto.ratelimit import KeyedRateLimiter, TokenBucket
from meet443.proto.shares import Grant, LocalSharedCap, RefusalTally, SharedCap, default_share
from meet443.proto.signaling.admission import Refusal, RoomAdmission, RoomMode, is_valid_room_name
from meet443.proto.signaling.messages import (
    Admit,
    Answer,
    Candidate,
    Chat,
    ChatMessage,
    ClientMessage,
    End,
    Ended,
    ErrorMessage,
    IceRefresh,
    IceServersMessage,
    Join,
    Joined,
    Kick,
    Kicked,
    Knock,
    KnockCancelled,
    Knocking,
    Leave,
    Lock,
    Media,
    Mute,
    MuteRequest,
    Offer,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    Pause,
    Ping,
    Pong,
    Publish,
    RaiseHand,
    Reaction,
    ReactionMessage,
    Reject,
    Rejected,
    RelayedAnswer,
    RelayedCandidate,
    RelayedOffer,
    Resubscribe,
    RoomInfo,
    RoomUpdated,
    ServerMessage,
    SfuRequest,
    SfuRestart,
    Speaker,
    SubscribeAnswer,
    decode_client_message,
    encode,
)
from meet443.proto.signaling.snapshot import ParticipantSnapshot, RoomSnapshot, resume_token
from meet443.regions import NO_PROBE, Probe

__all__ = [
    "ChatPosted",
    "Close",
    "ConnectionState",
    "IceServerSource",
    "LeftSfu",
    "LookupRoom",
    "MeetingEnded",
    "Output",
    "ParticipantState",
    "RevokeTurn",
    "RoomChanged",
    "Send",
    "SignalingCounters",
    "SignalingLimits",
    "SignalingServer",
    "ToSfu",
]

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
#: docs/signaling.md "Rooms": a normal room is a peer-to-peer mesh of at most 4.
NORMAL_ROOM_CAPACITY = 4
GROUP_ROOM_CAPACITY = 50
#: docs/signaling.md "Server → client": ``joined.chat`` is the last 50 without ``lastChatSeq``.
CHAT_ON_JOIN = 50
#: Chat epochs of one server run are ``server_epoch * ROOMS_PER_RUN`` + 0, 1, 2, ... (one per room
#: made), so two runs never share one while ``server_epoch`` comes from disk, and ids stay below
#: 2**53, exact in JavaScript, for 2**21 runs.
ROOMS_PER_RUN = 1 << 32
#: docs/signaling.md: "more than 20 errors in a minute" closes the socket with 1008.
ABUSE_ERRORS = 20
ABUSE_ERROR_WINDOW = 60.0
#: docs/signaling.md: "exceeding the rate limit for 10 s" closes the socket with 1008.
ABUSE_LIMITED_SECONDS = 10.0
#: Refusals less than this far apart count as one continuous period of exceeding the rate limit; a
#: client sending just above 50/s sees refusals every few tens of milliseconds.
_LIMITED_GAP = 1.0
#: One ``rate-limited`` reply per second at most: replying to every dropped message would let a
#: flooding client make the server write as much as it reads.
_RATE_LIMITED_REPLY_INTERVAL = 1.0

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TRY_AGAIN_LATER = 1013

#: Errors that count towards the abuse limit. ``unknown-participant`` and ``not-host`` are left
#: out: both happen to honest clients in races (candidates still trickling to a peer that just
#: left, a host demoted while its click was in flight).
_ABUSE_CODES = frozenset({"bad-message", "unknown-type", "too-large", "not-joined", "already-joined"})

#: An office behind one NAT address must still fit a large meeting (and its reconnects).
MIN_CONNECTIONS_PER_ADDRESS = 100

#: Participant ids are seen by everyone in the room and need only be unique within it.
_PARTICIPANT_ID_BYTES = 6
#: At least 128 bits: a resume token is the only credential needed to take over a participant.
_RESUME_TOKEN_BYTES = 16

IceServerSource = Callable[[str, float, Probe], tuple[list[dict[str, object]], int]]
TokenSource = Callable[[int], str]
LeaveReason = Literal["left", "timeout", "kicked"]
#: Why a room ended: a host's ``end``, its end time, or its meeting deleted (or found ended by the
#: directory, which another process may have told first).
EndReason = Literal["by a host", "end time", "deleted"]


# --------------------------------------------------------------------------------------------------
# Outputs


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``payload`` as one text frame on ``conn``."""

    conn: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Close ``conn`` with a WebSocket close code after everything sent before; the core has
    already forgotten the connection, so a later ``disconnected(conn)`` is a no-op."""

    conn: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class LookupRoom:
    """Ask the directory about ``room`` (``room_key`` as the client sent it) and call ``admit``."""

    conn: int
    room: str
    room_key: str | None


@dataclass(frozen=True, slots=True)
class MeetingEnded:
    """A host ended an API-created meeting; the directory may record it (the core refuses joins
    with ``meeting-ended`` until the meeting's end time either way)."""

    room: str


@dataclass(frozen=True, slots=True)
class ToSfu:
    """A group-room participant joined (``message`` None, first join only) or sent a media request."""

    room: str
    participant: str
    message: SfuRequest | None


@dataclass(frozen=True, slots=True)
class LeftSfu:
    """A group-room participant left for good: its media goes."""

    room: str
    participant: str


@dataclass(frozen=True, slots=True)
class RevokeTurn:
    """A participant left its room for good: the TURN core deletes its allocations and refuses its
    credentials (REST usernames ``expiry:participant``) until ``until``, when the last expires."""

    participant: str
    until: float


@dataclass(frozen=True, slots=True)
class ChatPosted:
    """A chat message was broadcast in ``room``: a cluster keeps it in the room's shared history
    (docs/cluster.md "Chat"); a single node ignores it."""

    room: str
    message: ChatMessage


@dataclass(frozen=True, slots=True)
class RoomChanged:
    """What resuming ``room`` after a restart needs changed (:meth:`SignalingServer.snapshot`
    tells it now, or None: the room is gone). Several in a row may be written as one."""

    room: str


Output = Send | Close | LookupRoom | MeetingEnded | ToSfu | LeftSfu | RevokeTurn | ChatPosted | RoomChanged


# --------------------------------------------------------------------------------------------------
# Settings and counters


@dataclass(frozen=True, slots=True)
class SignalingLimits:
    """Rates, time-outs and bounds; the defaults are the contract's (docs/signaling.md)."""

    #: Messages per second per socket and burst ("Limits").
    message_rate: float = 50.0
    message_burst: float = 100.0
    #: ``reaction`` messages per second per participant and burst: a few taps in a row pass, a
    #: stream of emoji over everyone's tiles does not.
    reaction_rate: float = 1.0
    reaction_burst: float = 5.0
    #: Joins per source address (IPv6: per /64) per second and burst; also counts resumes.
    join_rate: float = 10 / 60
    join_burst: float = 20.0
    #: New ad-hoc rooms per source address per second and burst.
    room_creation_rate: float = 5 / 60
    room_creation_burst: float = 10.0
    #: Source addresses remembered by each per-address limiter (least recently used dropped).
    max_addresses: int = 65536
    #: "A socket silent for 30 s is treated as dropped."
    heartbeat_timeout: float = 30.0
    #: "A dropped socket keeps its participant for 30 s."
    resume_window: float = 30.0
    #: A socket that has not joined after this long is closed (1008): it holds memory for nothing.
    join_deadline: float = 30.0
    #: Chat messages kept per room for ``lastChatSeq`` and joiners.
    chat_history: int = 200
    #: ``clientMessageId`` values remembered per participant for de-duplication.
    chat_dedupe_window: int = 1000
    #: People waiting at a locked room's door; more get ``room-full``.
    max_knockers_per_room: int = 20
    #: Of those, from one address (IPv6: /64): one client cannot fill the queue and hold it.
    max_knockers_per_address: int = 5
    #: A knock nobody answers ends after this long (``knock-timeout``); pings do not extend it.
    knock_deadline: float = 300.0
    #: Offers, answers and candidates kept for a participant awaiting resume, by count and bytes.
    max_backlog_messages: int = 64
    max_backlog_bytes: int = 256 * 1024
    #: Open sockets, joined or not; ``None`` means twice the participant cap.
    max_connections: int | None = None
    #: Open sockets from one address (IPv6: /64); ``None``: 10% of ``max_connections``, at least
    #: :data:`MIN_CONNECTIONS_PER_ADDRESS`.
    max_connections_per_address: int | None = None
    #: API meetings ended by a host, remembered to refuse joins until their end time.
    max_ended_meetings: int = 10000
    #: ``ice-refresh`` per participant: each mints TURN credentials, so one per 10 s, burst 3.
    ice_refresh_rate: float = 0.1
    ice_refresh_burst: float = 3.0


@dataclass(slots=True)
class SignalingCounters:
    """What a metrics endpoint may show; no room names or participant ids."""

    messages: int = 0
    joins: int = 0
    resumes: int = 0
    abuse_closes: int = 0
    #: WebSocket handshakes refused (403) for a foreign Origin; counted by the aiohttp adapter.
    origin_refusals: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    #: Joins whose browser could not reach a region's node, by region (known regions only).
    region_probe_failures: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# State


class ConnectionState(enum.Enum):
    OPEN = "open"
    LOOKING_UP = "looking-up"
    KNOCKING = "knocking"
    JOINED = "joined"


class ParticipantState(enum.Enum):
    KNOCKING = "knocking"
    CONNECTED = "connected"
    AWAITING_RESUME = "awaiting-resume"


@dataclass(slots=True, eq=False)
class _Room:
    name: str
    mode: RoomMode
    api_created: bool
    end_ms: int | None
    history: deque[ChatMessage]
    locked: bool = False
    #: Joined participants (connected or awaiting resume) in join order: the oldest is promoted
    #: when an ad-hoc room loses its last host.
    participants: dict[str, _Participant] = field(default_factory=dict)
    knockers: dict[str, _Participant] = field(default_factory=dict)
    #: Chat ids are ``(chat_epoch, seq)``: a room made again (after a restart, or after it emptied)
    #: counts ``seq`` from 1 in a new, larger epoch, so clients never mistake new messages for old.
    chat_epoch: int = 0
    chat_seq: int = 0
    #: Group rooms: the dominant speaker the SFU last announced, told to joiners in ``joined``.
    speaker: str | None = None

    @property
    def capacity(self) -> int:
        return GROUP_ROOM_CAPACITY if self.mode is RoomMode.GROUP else NORMAL_ROOM_CAPACITY

    def info(self) -> RoomInfo:
        return RoomInfo(self.name, self.mode.value, self.locked, self.capacity)

    def chat_after(self, seq: int | None, epoch: int | None) -> list[ChatMessage]:
        if seq is None or (epoch is not None and epoch != self.chat_epoch):
            return list(self.history)[-CHAT_ON_JOIN:]
        return [m for m in self.history if m.seq > seq]

    def chat_at(self, seq: int) -> ChatMessage | None:
        # Sequence numbers in the history are consecutive, so the position is arithmetic.
        if not self.history:
            return None
        index = seq - self.history[0].seq
        return self.history[index] if 0 <= index < len(self.history) else None


@dataclass(slots=True, eq=False)
class _Participant:
    id: str
    room: _Room
    display_name: str
    host: bool
    state: ParticipantState
    conn: int | None
    reactions: TokenBucket
    resume_token: str | None = None
    #: What the token derives from with the resume key (:func:`resume_token`); fresh on every join.
    resume_nonce: str = ""
    #: Restored from a snapshot in a group room: the SFU does not know it; on resume it is added
    #: again and its client told ``sfu-restart``.
    sfu_lost: bool = False
    audio: bool = False
    video: bool = False
    screen: bool = False
    hand: bool = False
    disconnected_at: float = 0.0
    ice_due: float = math.inf
    #: When the last TURN credential handed to this participant expires.
    turn_until: float = 0.0
    ice_refreshes: TokenBucket | None = None
    #: A knocker's door closes then.
    knock_expires: float = math.inf
    #: clientMessageId → seq, oldest first.
    chat_ids: OrderedDict[str, int] = field(default_factory=OrderedDict)
    #: Relayed messages that arrived while awaiting resume, delivered after ``joined``.
    backlog: deque[bytes] = field(default_factory=deque)
    backlog_bytes: int = 0
    #: What the browser measured to each region at its last join (or resume).
    probe: Probe = NO_PROBE

    def info(self) -> ParticipantInfo:
        return ParticipantInfo(
            self.id,
            self.display_name,
            self.host,
            self.audio,
            self.video,
            self.screen,
            self.state is ParticipantState.CONNECTED,
            self.hand,
        )


@dataclass(slots=True, eq=False)
class _Connection:
    conn: int
    address_key: str
    opened: float
    last_seen: float
    bucket: TokenBucket
    state: ConnectionState = ConnectionState.OPEN
    participant: _Participant | None = None
    pending: Join | None = None
    error_times: deque[float] = field(default_factory=lambda: deque(maxlen=ABUSE_ERRORS + 1))
    limited_since: float | None = None
    last_refusal: float = -math.inf
    last_limit_reply: float = -math.inf


# --------------------------------------------------------------------------------------------------
# The server


class SignalingServer:
    """All rooms and connections of one signaling node."""

    def __init__(
        self,
        *,
        ice_servers: IceServerSource,
        token: TokenSource,
        force_relay: bool = False,
        max_participants: int = 10000,
        limits: SignalingLimits | None = None,
        server_epoch: int = 0,
        sockets: SharedCap | None = None,
        resume_key: bytes | None = None,
        known_regions: Callable[[], Collection[str]] = tuple,
    ) -> None:
        """``server_epoch``: a number no earlier run of this server had (``MeetingStore.next_epoch``).
        ``sockets`` counts open sockets per address for the whole server (default: this process
        only, with ``limits``' cap and share). ``resume_key`` signs resume tokens (:func:`resume_token`);
        a node that restores rooms after a restart must be given the same key (default: one made
        from ``token``, good for this run only). ``known_regions()`` names the deployment's regions:
        only those are counted when a browser reports one unreachable (a client names any it likes)."""
        self._ice_servers = ice_servers
        self._known_regions = known_regions
        self._resume_key = resume_key if resume_key is not None else token(32).encode()
        self._next_chat_epoch = server_epoch * ROOMS_PER_RUN
        self._token = token
        self._policy: Literal["all", "relay"] = "relay" if force_relay else "all"
        self.max_participants = max_participants
        self.limits = limits = limits or SignalingLimits()
        cap = limits.max_connections or 2 * max_participants
        self.sockets = sockets or LocalSharedCap(
            cap, limits.max_connections_per_address or default_share(cap, MIN_CONNECTIONS_PER_ADDRESS)
        )
        self._socket_refusals = RefusalTally(logger, "signaling sockets refused")
        self._joins = KeyedRateLimiter(limits.join_rate, limits.join_burst, limits.max_addresses)
        self._creations = KeyedRateLimiter(
            limits.room_creation_rate, limits.room_creation_burst, limits.max_addresses
        )
        self._connections: dict[int, _Connection] = {}
        self._rooms: dict[str, _Room] = {}
        self._resume_tokens: dict[str, _Participant] = {}
        self._ended_meetings: OrderedDict[str, int | None] = OrderedDict()
        self._participant_count = 0
        self._out: list[Output] = []
        self.counters = SignalingCounters()

    # ---------------------------------------------------------------------------------------------
    # Introspection (metrics, tests)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def participant_count(self) -> int:
        """Participants and knockers, connected or awaiting resume, in all rooms."""
        return self._participant_count

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    def room_of(self, conn: int) -> str | None:
        """The room ``conn`` is joined to or knocking at."""
        c = self._connections.get(conn)
        if c is None or c.participant is None:
            return None
        return c.participant.room.name

    def room_names(self) -> list[str]:
        """Every room here (restored ones included)."""
        return list(self._rooms)

    def has_room(self, room: str) -> bool:
        """Does ``room`` exist here (someone in it, or knocking)?"""
        return room in self._rooms

    def room_connections(self, room: str) -> set[int]:
        """Connections of the participants and knockers of ``room``."""
        r = self._rooms.get(room)
        if r is None:
            return set()
        members = [*r.participants.values(), *r.knockers.values()]
        return {p.conn for p in members if p.conn is not None}

    # ---------------------------------------------------------------------------------------------
    # Entry points

    def connect(self, conn: int, remote_ip: str, now: float) -> list[Output]:
        """A WebSocket was accepted from ``remote_ip``."""
        out = self._out = []
        key = address_key(remote_ip)
        grant = self.sockets.acquire(key)
        if grant is not Grant.GRANTED:
            self._socket_refusals.refused(grant.value, now)
            reason = "server busy" if grant is Grant.CAP else "too many sockets from your address"
            out.append(Close(conn, CLOSE_TRY_AGAIN_LATER, reason))
            return out
        self._connections[conn] = _Connection(
            conn,
            key,
            opened=now,
            last_seen=now,
            bucket=TokenBucket(self.limits.message_rate, self.limits.message_burst),
        )
        logger.debug("conn %d opened", conn)
        return out

    def receive(self, conn: int, data: bytes | str, now: float, *, binary: bool = False) -> list[Output]:
        """One frame from ``conn``, a text frame unless ``binary``; never raises for anything the
        client sends."""
        out = self._out = []
        c = self._connections.get(conn)
        if c is None:
            return out
        c.last_seen = now
        if not self._within_rate(c, now):
            return out
        self.counters.messages += 1
        try:
            if binary:
                # docs/signaling.md: JSON text frames. Binary ones are a client bug, refused like
                # any malformed message (and counted towards the abuse limit).
                raise SignalingError("bad-message", "binary frames are not accepted: send JSON text frames")
            message = decode_client_message(data)
            self._dispatch(c, message, now)
        except SignalingError as exc:
            self._error(c, exc, now)
        return out

    def admit(self, conn: int, admission: RoomAdmission | Refusal, now: float) -> list[Output]:
        """The directory's answer to ``LookupRoom(conn, ...)``."""
        out = self._out = []
        c = self._connections.get(conn)
        if c is None or c.state is not ConnectionState.LOOKING_UP or c.pending is None:
            return out  # the socket went away while the directory was asked
        join, c.pending, c.state = c.pending, None, ConnectionState.OPEN
        try:
            self._admit(c, join, admission, now)
        except SignalingError as exc:
            self._error(c, exc, now)
        return out

    def disconnected(self, conn: int, now: float) -> list[Output]:
        """The socket of ``conn`` closed (by the client, the network or after a :class:`Close`)."""
        out = self._out = []
        c = self._connections.get(conn)
        if c is not None:
            self._drop(c, now, "socket closed")
        return out

    def end_meeting(self, room: str, now: float) -> list[Output]:
        """The meeting of ``room`` was deleted: ``ended`` and close 1000 for everyone in it, and no
        resume into it (docs/signaling.md ``ended``)."""
        out = self._out = []
        r = self._rooms.get(room)
        if r is not None:
            self._end_room(r, now, "deleted")
        return out

    def handle_timer(self, now: float) -> list[Output]:
        """Expire silent sockets, resume windows and meetings; refresh TURN credentials."""
        out = self._out = []
        limits = self.limits
        for c in list(self._connections.values()):
            if now - c.last_seen >= limits.heartbeat_timeout:
                self._close(c, CLOSE_GOING_AWAY, "heartbeat timeout", now)
            elif c.state in (ConnectionState.OPEN, ConnectionState.LOOKING_UP) and (
                now - c.opened >= limits.join_deadline
            ):
                self._close(c, CLOSE_POLICY_VIOLATION, "no join", now)
        now_ms = now * 1000
        for room in list(self._rooms.values()):
            if room.end_ms is not None and now_ms >= room.end_ms:
                logger.info("room %s: meeting reached its end time", room.name)
                self._end_room(room, now, "end time")
                continue
            for k in list(room.knockers.values()):
                kc = self._connections.get(k.conn) if k.conn is not None else None
                if kc is not None and now >= k.knock_expires:
                    logger.info("conn %d: knocker %s at room %s not let in in time", kc.conn, k.id, room.name)
                    error = SignalingError("knock-timeout", "nobody let you in", close_code=CLOSE_NORMAL)
                    self._error(kc, error, now)
            if self._rooms.get(room.name) is not room:
                continue  # the last knocker of a room without participants went
            for p in list(room.participants.values()):
                if p.state is ParticipantState.AWAITING_RESUME:
                    if now - p.disconnected_at >= limits.resume_window:
                        self._remove(p, "timeout", now)
                elif now >= p.ice_due:
                    self._send_ice_servers(p, now)
        for name, end_ms in list(self._ended_meetings.items()):
            if end_ms is not None and now_ms >= end_ms:
                del self._ended_meetings[name]
        return out

    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` has something to do, or ``None``."""
        limits = self.limits
        deadlines = [c.last_seen + limits.heartbeat_timeout for c in self._connections.values()]
        deadlines += [
            c.opened + limits.join_deadline
            for c in self._connections.values()
            if c.state in (ConnectionState.OPEN, ConnectionState.LOOKING_UP)
        ]
        for room in self._rooms.values():
            if room.end_ms is not None:
                deadlines.append(room.end_ms / 1000)
            deadlines += [k.knock_expires for k in room.knockers.values()]
            for p in room.participants.values():
                if p.state is ParticipantState.AWAITING_RESUME:
                    deadlines.append(p.disconnected_at + limits.resume_window)
                else:
                    deadlines.append(p.ice_due)
        deadlines += [end / 1000 for end in self._ended_meetings.values() if end is not None]
        finite = [d for d in deadlines if math.isfinite(d)]
        return min(finite) if finite else None

    # ---------------------------------------------------------------------------------------------
    # Node restarts (docs/signaling.md "Node restarts")

    def snapshot(self, room: str) -> RoomSnapshot | None:
        """What resuming ``room`` needs, or None when the room is gone (after a :class:`RoomChanged`)."""
        r = self._rooms.get(room)
        if r is None or not r.participants:
            return None  # a room of knockers only: nobody in it could resume
        return RoomSnapshot(
            name=r.name,
            mode="group" if r.mode is RoomMode.GROUP else "normal",
            api_created=r.api_created,
            end_ms=r.end_ms,
            locked=r.locked,
            chat_epoch=r.chat_epoch,
            chat_seq=r.chat_seq,
            history=list(r.history),
            participants=[
                ParticipantSnapshot(
                    id=p.id,
                    display_name=p.display_name,
                    host=p.host,
                    audio=p.audio,
                    video=p.video,
                    screen=p.screen,
                    hand=p.hand,
                    resume_nonce=p.resume_nonce,
                    turn_until=p.turn_until,
                )
                for p in r.participants.values()
            ],
        )

    def restore(self, snapshots: list[RoomSnapshot], now: float, *, new_chat_epoch: bool = False) -> None:
        """Rooms saved by an earlier run of this node (given the same resume key), every participant
        awaiting resume from ``now``: for the resume window they keep their ids, tokens and place,
        and the chat goes on in the same epoch. Call before any connection to those rooms.

        ``new_chat_epoch``: the rooms come from a node that died (docs/cluster.md "Failover"), whose
        last messages may be missing from its snapshot: the chat goes on in an epoch above the
        snapshot's and this node's earlier ones (``seq`` goes on counting), so no new message takes
        the id of one the clients saw from the dead node."""
        for snap in snapshots:
            if snap.name in self._rooms or not snap.participants:
                continue
            chat_epoch = snap.chat_epoch
            if new_chat_epoch:
                chat_epoch = max(self._next_chat_epoch, snap.chat_epoch + 1)
                self._next_chat_epoch = chat_epoch + 1
            mode = RoomMode.GROUP if snap.mode == "group" else RoomMode.NORMAL
            history: deque[ChatMessage] = deque(snap.history, maxlen=self.limits.chat_history)
            room = _Room(
                snap.name,
                mode,
                snap.api_created,
                snap.end_ms,
                history,
                locked=snap.locked,
                chat_epoch=chat_epoch,
                chat_seq=snap.chat_seq,
            )
            for ps in snap.participants:
                p = _Participant(
                    ps.id,
                    room,
                    ps.display_name,
                    ps.host,
                    ParticipantState.AWAITING_RESUME,
                    None,
                    TokenBucket(self.limits.reaction_rate, self.limits.reaction_burst),
                    resume_nonce=ps.resume_nonce,
                    sfu_lost=mode is RoomMode.GROUP,
                    audio=ps.audio,
                    video=ps.video,
                    screen=ps.screen,
                    hand=ps.hand,
                    disconnected_at=now,
                    turn_until=ps.turn_until,
                )
                p.resume_token = resume_token(self._resume_key, room.name, p.id, p.resume_nonce)
                room.participants[p.id] = p
                self._resume_tokens[p.resume_token] = p
                self._participant_count += 1
            # A resent chat message is recognised by its clientMessageId, as before the restart.
            for message in history:
                sender = room.participants.get(message.sender)
                if sender is not None:
                    sender.chat_ids[message.client_message_id] = message.seq
            self._rooms[room.name] = room
            logger.info(
                "room %s restored with %d participants awaiting resume", room.name, len(room.participants)
            )

    # ---------------------------------------------------------------------------------------------
    # Plumbing

    def _send(self, conn: int, message: ServerMessage) -> None:
        self._out.append(Send(conn, encode(message)))

    def _changed(self, room: _Room) -> None:
        self._out.append(RoomChanged(room.name))

    def _broadcast(self, room: _Room, message: ServerMessage, exclude: _Participant | None = None) -> None:
        payload: bytes | None = None
        for p in room.participants.values():
            if p.conn is not None and p is not exclude:
                payload = payload or encode(message)
                self._out.append(Send(p.conn, payload))

    def _to_hosts(self, room: _Room, message: ServerMessage) -> None:
        payload = encode(message)
        self._out.extend(
            Send(p.conn, payload) for p in room.participants.values() if p.host and p.conn is not None
        )

    def _error(self, c: _Connection, exc: SignalingError, now: float) -> None:
        errors = self.counters.errors
        errors[exc.code] = errors.get(exc.code, 0) + 1
        logger.debug("conn %d: error %s (ref %s)", c.conn, exc.code, exc.ref)
        self._send(c.conn, ErrorMessage(exc.code, exc.message, exc.ref))
        if exc.close_code is not None:
            self._close(c, exc.close_code, exc.code, now)
        elif exc.code in _ABUSE_CODES:
            c.error_times.append(now)
            if len(c.error_times) > ABUSE_ERRORS and now - c.error_times[0] <= ABUSE_ERROR_WINDOW:
                self.counters.abuse_closes += 1
                logger.warning("conn %d closed: more than %d errors in a minute", c.conn, ABUSE_ERRORS)
                self._close(c, CLOSE_POLICY_VIOLATION, "too many errors", now)

    def _within_rate(self, c: _Connection, now: float) -> bool:
        """docs/signaling.md "Limits": 50 messages/s, burst 100; 10 s over the limit closes 1008."""
        if c.bucket.take(now):
            if c.limited_since is not None and now - c.last_refusal > _LIMITED_GAP:
                c.limited_since = None
            return True
        if c.limited_since is None or now - c.last_refusal > _LIMITED_GAP:
            c.limited_since = now
        c.last_refusal = now
        if now - c.limited_since >= ABUSE_LIMITED_SECONDS:
            self.counters.abuse_closes += 1
            logger.warning("conn %d closed: over the message rate limit for 10 s", c.conn)
            self._close(c, CLOSE_POLICY_VIOLATION, "rate limit", now)
        elif now - c.last_limit_reply >= _RATE_LIMITED_REPLY_INTERVAL:
            c.last_limit_reply = now
            errors = self.counters.errors
            errors["rate-limited"] = errors.get("rate-limited", 0) + 1
            self._send(c.conn, ErrorMessage("rate-limited", "too many messages"))
        return False

    def _forget(self, c: _Connection) -> None:
        """``c`` is gone from the core (its socket is being closed): its share is free again."""
        del self._connections[c.conn]
        self.sockets.release(c.address_key)

    def _close(self, c: _Connection, code: int, reason: str, now: float) -> None:
        """Forget ``c`` and tell the adapter to close it; its participant may resume."""
        self._drop(c, now, reason)
        self._out.append(Close(c.conn, code, reason))

    def _drop(self, c: _Connection, now: float, why: str) -> None:
        """docs/signaling.md "Connection lifecycle" 5: a dropped socket keeps its participant."""
        if self._connections.pop(c.conn, None) is not None:
            self.sockets.release(c.address_key)
        p = c.participant
        c.participant = None
        if p is None:
            logger.debug("conn %d gone (%s)", c.conn, why)
        elif p.state is ParticipantState.KNOCKING:
            logger.info("conn %d: knocker %s at room %s gone (%s)", c.conn, p.id, p.room.name, why)
            self._discard_knocker(p)
        elif p.conn == c.conn:
            logger.info(
                "conn %d: participant %s of room %s awaiting resume (%s)", c.conn, p.id, p.room.name, why
            )
            p.conn = None
            p.state = ParticipantState.AWAITING_RESUME
            p.disconnected_at = now
            self._broadcast(p.room, ParticipantUpdated(p.info()), exclude=p)

    # ---------------------------------------------------------------------------------------------
    # Dispatch: the whole client-message by connection-state table

    def _dispatch(self, c: _Connection, message: ClientMessage, now: float) -> None:
        state = c.state
        if isinstance(message, Join):
            if state is not ConnectionState.OPEN:
                raise SignalingError("already-joined", "this socket has joined already", ref="join")
            self._on_join(c, message, now)
            return
        if state is ConnectionState.JOINED:
            assert c.participant is not None
            handler = _JOINED_HANDLERS[type(message)]
            handler(self, c, c.participant, message, now)
            return
        if isinstance(message, Ping) and state is not ConnectionState.OPEN:
            # Heartbeats keep a socket alive while the directory answers or a host decides.
            self._send(c.conn, Pong())
            return
        if isinstance(message, Leave) and state is ConnectionState.KNOCKING:
            assert c.participant is not None
            logger.info("conn %d: knocker %s left room %s", c.conn, c.participant.id, c.participant.room.name)
            self._discard_knocker(c.participant)
            c.participant, c.state = None, ConnectionState.OPEN
            c.opened = now
            return
        raise SignalingError("not-joined", "send join first", ref=_type_of(message))

    # ---------------------------------------------------------------------------------------------
    # Joining

    def _on_join(self, c: _Connection, join: Join, now: float) -> None:
        """docs/signaling.md "Connection lifecycle" 1-2 and 5."""
        if join.v != PROTOCOL_VERSION:
            raise SignalingError(
                "unsupported-version",
                f"protocol version {PROTOCOL_VERSION} only",
                close_code=CLOSE_PROTOCOL_ERROR,
                ref="join",
            )
        if not is_valid_room_name(join.room):
            raise SignalingError(
                "bad-room-name", "room name not allowed", close_code=CLOSE_NORMAL, ref="join"
            )
        if not self._joins.allow(c.address_key, now):
            raise SignalingError(
                "too-many-joins", "too many joins, try later", close_code=CLOSE_TRY_AGAIN_LATER, ref="join"
            )
        # A resume too asks the directory: the meeting may have been deleted or ended meanwhile.
        c.state, c.pending = ConnectionState.LOOKING_UP, join
        self._out.append(LookupRoom(c.conn, join.room, join.room_key))

    def _admit(self, c: _Connection, join: Join, admission: RoomAdmission | Refusal, now: float) -> None:
        name = join.room
        if isinstance(admission, Refusal):
            live = self._rooms.get(name)
            if admission is Refusal.MEETING_ENDED and live is not None:
                self._end_room(live, now, "deleted")
            raise SignalingError(
                admission.value, _REFUSAL_TEXT[admission], close_code=CLOSE_NORMAL, ref="join"
            )
        ended = admission.end_ms is not None and now * 1000 >= admission.end_ms
        if ended or (admission.api_created and name in self._ended_meetings):
            raise SignalingError(
                "meeting-ended", "this meeting has ended", close_code=CLOSE_NORMAL, ref="join"
            )
        if join.resume_token is not None:
            p = self._resume_tokens.get(join.resume_token)
            if p is not None and p.room.name == name:
                self._resume(c, p, join, now)
                return
        if self._participant_count >= self.max_participants:
            logger.warning("conn %d refused: server at %d participants", c.conn, self._participant_count)
            raise SignalingError(
                "room-full", "the server is at capacity", close_code=CLOSE_NORMAL, ref="join"
            )
        room = self._rooms.get(name)
        if room is None:
            if not admission.api_created and not self._creations.allow(c.address_key, now):
                raise SignalingError(
                    "too-many-joins",
                    "too many new rooms, try later",
                    close_code=CLOSE_TRY_AGAIN_LATER,
                    ref="join",
                )
            room = _Room(
                name,
                admission.mode,
                admission.api_created,
                admission.end_ms,
                history=deque(maxlen=self.limits.chat_history),
                chat_epoch=self._next_chat_epoch,
            )
            self._next_chat_epoch += 1
            self._rooms[name] = room
            logger.info(
                "room %s created (%s, %s)", name, room.mode.value, "api" if room.api_created else "ad hoc"
            )
        else:
            room.api_created, room.end_ms = admission.api_created, admission.end_ms
        if len(room.participants) >= room.capacity:
            raise SignalingError("room-full", "the room is full", close_code=CLOSE_NORMAL, ref="join")
        host = admission.host_key_valid if room.api_created else not room.participants
        if room.locked and not admission.host_key_valid:
            if len(room.knockers) >= self.limits.max_knockers_per_room or (
                self._knockers_from(room, c.address_key) >= self.limits.max_knockers_per_address
            ):
                raise SignalingError(
                    "room-full", "too many people waiting", close_code=CLOSE_NORMAL, ref="join"
                )
            self._knock(c, room, join, now)
            return
        p = self._new_participant(room, join.display_name, host, c.conn, ParticipantState.CONNECTED)
        room.participants[p.id] = p
        self.counters.joins += 1
        logger.info(
            "conn %d: participant %s joined room %s%s", c.conn, p.id, name, " as host" if host else ""
        )
        self._join(c, p, join, now, resumed=False)
        self._broadcast(room, ParticipantJoined(p.info()), exclude=p)

    def _new_participant(
        self, room: _Room, display_name: str, host: bool, conn: int, state: ParticipantState
    ) -> _Participant:
        pid = self._token(_PARTICIPANT_ID_BYTES)
        while pid in room.participants or pid in room.knockers:
            pid = self._token(_PARTICIPANT_ID_BYTES)
        self._participant_count += 1
        reactions = TokenBucket(self.limits.reaction_rate, self.limits.reaction_burst)
        return _Participant(pid, room, display_name, host, state, conn, reactions)

    def _knockers_from(self, room: _Room, key: str) -> int:
        conns = (self._connections.get(k.conn) for k in room.knockers.values() if k.conn is not None)
        return sum(1 for kc in conns if kc is not None and kc.address_key == key)

    def _knock(self, c: _Connection, room: _Room, join: Join, now: float) -> None:
        p = self._new_participant(room, join.display_name, False, c.conn, ParticipantState.KNOCKING)
        p.knock_expires = now + self.limits.knock_deadline
        self._take_probe(p, join)
        room.knockers[p.id] = p
        c.participant, c.state = p, ConnectionState.KNOCKING
        logger.info("conn %d: knocker %s at locked room %s", c.conn, p.id, room.name)
        self._send(c.conn, Knocking())
        self._to_hosts(room, Knock(p.id, p.display_name))

    def _join(self, c: _Connection, p: _Participant, join: Join | None, now: float, *, resumed: bool) -> None:
        """Send ``joined`` (and what the participant missed); ``p`` is in ``room.participants``."""
        room = p.room
        if p.resume_token is not None:
            del self._resume_tokens[p.resume_token]
        # A new token on every join: one seen on an old socket cannot take the participant over.
        p.resume_nonce = self._token(_RESUME_TOKEN_BYTES)
        p.resume_token = resume_token(self._resume_key, room.name, p.id, p.resume_nonce)
        self._resume_tokens[p.resume_token] = p
        self._changed(room)
        p.conn, p.state = c.conn, ParticipantState.CONNECTED
        c.participant, c.state = p, ConnectionState.JOINED
        if join is not None and (join.rtts is not None or join.unreachable is not None):
            # A resume from another network measured again; one without measurements keeps the old.
            self._take_probe(p, join)
        servers, _ = self._mint_ice_servers(p, now)
        last_seq, last_epoch = (None, None) if join is None else (join.last_chat_seq, join.last_chat_epoch)
        self._send(
            c.conn,
            Joined(
                self_id=p.id,
                resume_token=p.resume_token,
                resumed=resumed,
                room=room.info(),
                host=p.host,
                participants=[o.info() for o in room.participants.values() if o is not p],
                ice_servers=servers,
                ice_transport_policy=self._policy,
                chat=room.chat_after(last_seq, last_epoch),
                speaker=room.speaker,
            ),
        )
        if p.host:
            for k in room.knockers.values():
                self._send(c.conn, Knock(k.id, k.display_name))
        if room.mode is RoomMode.GROUP and not resumed:
            self._out.append(ToSfu(room.name, p.id, None))

    def _resume(self, c: _Connection, p: _Participant, join: Join, now: float) -> None:
        """docs/signaling.md "Connection lifecycle" 5: the same participant on a new socket."""
        self.counters.resumes += 1
        old = self._connections.get(p.conn) if p.conn is not None else None
        if old is not None:
            # The client saw its old socket die before the server did (a network change).
            old.participant = None
            self._forget(old)
            self._out.append(Close(old.conn, CLOSE_NORMAL, "resumed on another socket"))
        was_connected = p.state is ParticipantState.CONNECTED
        logger.info("conn %d: participant %s of room %s resumed", c.conn, p.id, p.room.name)
        self._join(c, p, join, now, resumed=True)
        if p.sfu_lost:
            # Restored after a node restart: the SFU starts this one over (docs/signaling.md
            # "SFU restart"); the message goes first, so the SFU's offers follow it.
            p.sfu_lost = False
            self._send(c.conn, SfuRestart())
            self._out.append(ToSfu(p.room.name, p.id, None))
        if not was_connected:
            self._broadcast(p.room, ParticipantUpdated(p.info()), exclude=p)
        while p.backlog:
            self._out.append(Send(c.conn, p.backlog.popleft()))
        p.backlog_bytes = 0

    # ---------------------------------------------------------------------------------------------
    # Leaving

    def _remove(self, p: _Participant, reason: LeaveReason, now: float) -> None:
        """A joined participant leaves its room for good (left, timeout, kicked)."""
        room = p.room
        del room.participants[p.id]
        self._participant_count -= 1
        if room.speaker == p.id:
            room.speaker = None
        if p.resume_token is not None:
            del self._resume_tokens[p.resume_token]
            p.resume_token = None
        p.backlog.clear()
        self._revoke_turn(p)
        self._changed(room)
        logger.info("participant %s left room %s (%s)", p.id, room.name, reason)
        self._broadcast(room, ParticipantLeft(p.id, reason))
        if room.mode is RoomMode.GROUP:
            self._out.append(LeftSfu(room.name, p.id))
        if p.host and not room.api_created and not any(o.host for o in room.participants.values()):
            # An ad-hoc room is never left without a host, or a locked room could not be opened.
            heir = next(iter(room.participants.values()), None)
            if heir is not None:
                heir.host = True
                logger.info("participant %s is now host of room %s", heir.id, room.name)
                self._broadcast(room, ParticipantUpdated(heir.info()))
                if heir.conn is not None:
                    for k in room.knockers.values():
                        self._send(heir.conn, Knock(k.id, k.display_name))
        self._forget_if_empty(room, now)

    def _discard_knocker(self, p: _Participant) -> None:
        room = p.room
        del room.knockers[p.id]
        self._participant_count -= 1
        self._to_hosts(room, KnockCancelled(p.id))
        self._forget_if_empty(room)

    def _forget_if_empty(self, room: _Room, now: float | None = None) -> None:
        if room.participants:
            return
        if room.knockers and now is not None:
            # Nobody is left to open the door: the room and its lock would be forgotten, and a
            # fresh join would find no lock, so the people waiting come in as if they had.
            room.locked = False
            for k in list(room.knockers.values()):
                kc = self._connections[k.conn] if k.conn is not None else None
                if kc is not None:
                    self._let_in(room, k, kc, now)
            if room.participants:
                return
        if not room.knockers and self._rooms.get(room.name) is room:
            del self._rooms[room.name]
            self._changed(room)
            logger.info("room %s forgotten (empty)", room.name)

    def _let_in(self, room: _Room, k: _Participant, kc: _Connection, now: float) -> None:
        """A knocker becomes a participant (a host admitted it, or the room unlocked or emptied)."""
        del room.knockers[k.id]
        self._to_hosts(room, KnockCancelled(k.id))
        if len(room.participants) >= room.capacity:
            self._participant_count -= 1
            kc.participant, kc.state = None, ConnectionState.OPEN
            self._error(
                kc, SignalingError("room-full", "the room is full", close_code=CLOSE_NORMAL, ref="join"), now
            )
            return
        k.host = not room.api_created and not room.participants
        room.participants[k.id] = k
        logger.info("conn %d: knocker %s let into room %s", kc.conn, k.id, room.name)
        self._join(kc, k, None, now, resumed=False)
        self._broadcast(room, ParticipantJoined(k.info()), exclude=k)

    def _end_room(self, room: _Room, now: float, why: EndReason) -> None:
        """docs/signaling.md ``end``: everyone gets ``ended``; sockets close with 1000."""
        payload = encode(Ended())
        for p in [*room.participants.values(), *room.knockers.values()]:
            if p.resume_token is not None:
                del self._resume_tokens[p.resume_token]
            self._participant_count -= 1
            self._revoke_turn(p)
            c = self._connections.get(p.conn) if p.conn is not None else None
            if c is not None:
                c.participant = None
                self._forget(c)
                self._out.append(Send(c.conn, payload))
                self._out.append(Close(c.conn, CLOSE_NORMAL, "ended"))
        room.participants.clear()
        room.knockers.clear()
        del self._rooms[room.name]
        self._changed(room)
        logger.info("room %s ended (%s)", room.name, why)
        if why != "end time" and room.api_created:
            self._ended_meetings[room.name] = room.end_ms
            self._ended_meetings.move_to_end(room.name)
            while len(self._ended_meetings) > self.limits.max_ended_meetings:
                self._ended_meetings.popitem(last=False)
            if why == "by a host":
                self._out.append(MeetingEnded(room.name))

    # ---------------------------------------------------------------------------------------------
    # Messages of a joined participant (docs/signaling.md "Client → server")

    def _on_relay(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``offer`` / ``answer`` / ``candidate``: relayed with ``from``, same room only."""
        assert isinstance(message, Offer | Answer | Candidate)
        target = p.room.participants.get(message.to)
        if target is None or target is p:
            raise SignalingError(
                "unknown-participant", "no such participant in this room", ref=_type_of(message)
            )
        relayed: ServerMessage
        if isinstance(message, Offer):
            relayed = RelayedOffer(p.id, message.to, message.sdp)
        elif isinstance(message, Answer):
            relayed = RelayedAnswer(p.id, message.to, message.sdp)
        else:
            relayed = RelayedCandidate(p.id, message.to, message.candidate)
        self._deliver(target, encode(relayed))

    def _deliver(self, target: _Participant, payload: bytes) -> None:
        if target.conn is not None:
            self._out.append(Send(target.conn, payload))
            return
        # Awaiting resume: keep a bounded backlog so a negotiation in flight survives the reconnect.
        target.backlog.append(payload)
        target.backlog_bytes += len(payload)
        limits = self.limits
        while target.backlog and (
            len(target.backlog) > limits.max_backlog_messages
            or target.backlog_bytes > limits.max_backlog_bytes
        ):
            target.backlog_bytes -= len(target.backlog.popleft())

    def _on_sfu(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md "Group rooms": media requests go to the SFU of the room."""
        assert isinstance(message, Publish | SubscribeAnswer | Resubscribe | Pause)
        if p.room.mode is not RoomMode.GROUP:
            raise SignalingError("not-group-room", "this room is peer to peer", ref=_type_of(message))
        self._out.append(ToSfu(p.room.name, p.id, message))

    def deliver(self, room: str, participant: str, message: ServerMessage) -> list[Output]:
        """A message from the SFU to one participant (kept for it while its socket is away)."""
        out = self._out = []
        r = self._rooms.get(room)
        target = r.participants.get(participant) if r is not None else None
        if target is not None:
            self._deliver(target, encode(message))
        return out

    def sfu_restarted(self, room: str) -> list[Output]:
        """The SFU lost ``room``'s media session: everyone in it gets ``sfu-restart`` (kept for
        those awaiting resume) and is a member of the SFU again (docs/signaling.md "SFU restart")."""
        out = self._out = []
        r = self._rooms.get(room)
        if r is not None and r.mode is RoomMode.GROUP:
            payload = encode(SfuRestart())
            for p in r.participants.values():
                self._deliver(p, payload)
                self._out.append(ToSfu(r.name, p.id, None))
        return out

    def broadcast(self, room: str, message: ServerMessage) -> list[Output]:
        """A message from the SFU to everyone in ``room`` (active speaker, remembered for joiners)."""
        out = self._out = []
        r = self._rooms.get(room)
        if r is not None:
            if isinstance(message, Speaker):
                r.speaker = message.participant_id
            self._broadcast(r, message)
        return out

    def _on_chat(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``chat``: a room-wide ``seq``; duplicates by ``clientMessageId`` dropped."""
        assert isinstance(message, Chat)
        room = p.room
        seq = p.chat_ids.get(message.client_message_id)
        if seq is not None:
            # A resend after a reconnect: not broadcast again; the sender gets the original back
            # as its acknowledgement if it is still in the history.
            original = room.chat_at(seq)
            if original is not None:
                self._send(c.conn, original)
            return
        room.chat_seq += 1
        chat = ChatMessage(
            room.chat_seq,
            p.id,
            p.display_name,
            message.text,
            int(now * 1000),
            message.client_message_id,
            room.chat_epoch,
        )
        room.history.append(chat)
        self._changed(room)
        p.chat_ids[message.client_message_id] = chat.seq
        if len(p.chat_ids) > self.limits.chat_dedupe_window:
            p.chat_ids.popitem(last=False)
        self._broadcast(room, chat)
        self._out.append(ChatPosted(room.name, chat))

    def _on_media(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``media``: broadcast as ``participant-updated``."""
        assert isinstance(message, Media)
        p.audio, p.video, p.screen = message.audio, message.video, message.screen
        self._changed(p.room)
        self._broadcast(p.room, ParticipantUpdated(p.info()), exclude=p)

    def _on_hand(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``hand``: kept with the participant, broadcast as ``participant-updated``."""
        assert isinstance(message, RaiseHand)
        if p.hand == message.raised:
            return
        p.hand = message.raised
        self._changed(p.room)
        self._broadcast(p.room, ParticipantUpdated(p.info()), exclude=p)

    def _on_reaction(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``reaction``: to everyone, the sender included, within its own rate."""
        assert isinstance(message, Reaction)
        if not p.reactions.take(now):
            raise SignalingError("rate-limited", "too many reactions", ref="reaction")
        self._broadcast(p.room, ReactionMessage(p.id, message.emoji))

    def _require_host(self, p: _Participant, message: ClientMessage) -> None:
        if not p.host:
            raise SignalingError("not-host", "only a host may do this", ref=_type_of(message))

    def _on_lock(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``lock`` (host only); unlocking lets everyone waiting in."""
        assert isinstance(message, Lock)
        self._require_host(p, message)
        room = p.room
        if room.locked == message.locked:
            return
        room.locked = message.locked
        self._changed(room)
        logger.info("room %s %s by %s", room.name, "locked" if room.locked else "unlocked", p.id)
        self._broadcast(room, RoomUpdated(room.info()))
        if not room.locked:
            for k in list(room.knockers.values()):
                kc = self._connections.get(k.conn) if k.conn is not None else None
                if kc is not None:
                    self._let_in(room, k, kc, now)

    def _knocker(self, p: _Participant, message: Admit | Reject) -> tuple[_Participant, _Connection]:
        self._require_host(p, message)
        k = p.room.knockers.get(message.participant_id)
        kc = self._connections.get(k.conn) if k is not None and k.conn is not None else None
        if k is None or kc is None:
            raise SignalingError(
                "unknown-participant", "nobody by that id is knocking", ref=_type_of(message)
            )
        return k, kc

    def _on_admit(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``admit`` (host only); every host gets ``knock-cancelled``."""
        assert isinstance(message, Admit)
        k, kc = self._knocker(p, message)
        logger.info("room %s: %s admitted %s", p.room.name, p.id, k.id)
        self._let_in(p.room, k, kc, now)

    def _on_reject(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``reject`` (host only): ``rejected``, then close 1000."""
        assert isinstance(message, Reject)
        k, kc = self._knocker(p, message)
        logger.info("room %s: %s rejected %s", p.room.name, p.id, k.id)
        self._send(kc.conn, Rejected())
        kc.participant = None
        self._discard_knocker(k)
        self._forget(kc)
        self._out.append(Close(kc.conn, CLOSE_NORMAL, "rejected"))

    def _member(self, p: _Participant, message: Kick | Mute) -> _Participant:
        self._require_host(p, message)
        target = p.room.participants.get(message.participant_id)
        if target is None:
            raise SignalingError(
                "unknown-participant", "no such participant in this room", ref=_type_of(message)
            )
        return target

    def _on_kick(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``kick`` (host only): ``kicked``, close 1000, no resume."""
        assert isinstance(message, Kick)
        target = self._member(p, message)
        logger.info("room %s: %s kicked %s", p.room.name, p.id, target.id)
        tc = self._connections.get(target.conn) if target.conn is not None else None
        if tc is not None:
            self._send(tc.conn, Kicked())
            tc.participant = None
            self._forget(tc)
            self._out.append(Close(tc.conn, CLOSE_NORMAL, "kicked"))
        target.conn = None
        self._remove(target, "kicked", now)

    def _on_mute(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``mute`` (host only): the target gets ``mute-request``."""
        assert isinstance(message, Mute)
        target = self._member(p, message)
        if target.conn is not None:
            self._send(target.conn, MuteRequest(message.kind, p.id))

    def _on_end(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``end`` (host only)."""
        self._require_host(p, message)
        logger.info("room %s: %s ends the meeting", p.room.name, p.id)
        self._end_room(p.room, now, "by a host")

    def _take_probe(self, p: _Participant, join: Join) -> None:
        """docs/signaling.md "Regions": keep what the browser measured for its TURN servers, and
        count each known region it could not reach, so an operator sees a region clients cannot."""
        p.probe = Probe(join.rtts or {}, frozenset(join.unreachable or ()))
        known = self._known_regions()
        failed = sorted(n for n in p.probe.unreachable if n in known and n not in p.probe.rtts)
        counts = self.counters.region_probe_failures
        for name in failed:
            counts[name] = counts.get(name, 0) + 1
        if failed:
            logger.info("participant %s: its browser had no answer from region %s", p.id, ", ".join(failed))

    def _mint_ice_servers(self, p: _Participant, now: float) -> tuple[list[dict[str, object]], int]:
        servers, ttl = self._ice_servers(p.id, now, p.probe)
        # Half the lifetime: a fresh credential arrives long before the old one expires.
        p.ice_due = now + ttl / 2
        p.turn_until = max(p.turn_until, now + ttl)
        return servers, ttl

    def _send_ice_servers(self, p: _Participant, now: float) -> None:
        assert p.conn is not None
        servers, ttl = self._mint_ice_servers(p, now)
        self._send(p.conn, IceServersMessage(servers, ttl))

    def _revoke_turn(self, p: _Participant) -> None:
        if p.turn_until:
            self._out.append(RevokeTurn(p.id, p.turn_until))

    def _on_ice_refresh(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md ``ice-refresh``: fresh TURN credentials now, at most once per 10 s
        after a burst of 3 (the TURN quota is per participant, so refreshing buys no allocations)."""
        limits = self.limits
        if p.ice_refreshes is None:
            p.ice_refreshes = TokenBucket(limits.ice_refresh_rate, limits.ice_refresh_burst)
        if not p.ice_refreshes.take(now):
            errors = self.counters.errors
            errors["rate-limited"] = errors.get("rate-limited", 0) + 1
            self._send(
                c.conn, ErrorMessage("rate-limited", "ice-refresh at most once per 10 s", "ice-refresh")
            )
            return
        self._send_ice_servers(p, now)

    def _on_ping(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md "Connection lifecycle" 4: heartbeat."""
        self._send(c.conn, Pong())

    def _on_leave(self, c: _Connection, p: _Participant, message: ClientMessage, now: float) -> None:
        """docs/signaling.md "Connection lifecycle" 6: ``leave`` removes the participant at once."""
        c.participant, c.state = None, ConnectionState.OPEN
        c.opened = now
        p.conn = None
        self._remove(p, "left", now)


_Handler = Callable[[SignalingServer, _Connection, _Participant, ClientMessage, float], None]

#: What a joined participant's message does; ``join`` itself is answered before this table.
_JOINED_HANDLERS: dict[type, _Handler] = {
    Offer: SignalingServer._on_relay,
    Answer: SignalingServer._on_relay,
    Candidate: SignalingServer._on_relay,
    Chat: SignalingServer._on_chat,
    Media: SignalingServer._on_media,
    RaiseHand: SignalingServer._on_hand,
    Reaction: SignalingServer._on_reaction,
    Lock: SignalingServer._on_lock,
    Admit: SignalingServer._on_admit,
    Reject: SignalingServer._on_reject,
    Kick: SignalingServer._on_kick,
    Mute: SignalingServer._on_mute,
    End: SignalingServer._on_end,
    IceRefresh: SignalingServer._on_ice_refresh,
    Ping: SignalingServer._on_ping,
    Leave: SignalingServer._on_leave,
    Publish: SignalingServer._on_sfu,
    SubscribeAnswer: SignalingServer._on_sfu,
    Resubscribe: SignalingServer._on_sfu,
    Pause: SignalingServer._on_sfu,
}

_REFUSAL_TEXT = {
    Refusal.BAD_ROOM_NAME: "room name not allowed",
    Refusal.ROOM_NOT_FOUND: "no such meeting",
    Refusal.MEETING_ENDED: "this meeting has ended",
}


def _type_of(message: ClientMessage) -> str:
    tag = type(message).__struct_config__.tag
    assert isinstance(tag, str)
    return tag
