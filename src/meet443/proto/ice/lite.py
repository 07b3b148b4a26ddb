"""ICE-lite for many peer connections on one UDP port (RFC 8445 §2.5, §7.3; RFC 7675), sans-I/O.

A lite agent has only host candidates, never sends checks and is always controlled: it answers the
full agent's Binding requests and uses the pair the full agent nominates. Every session (one per
browser peer connection) shares the server's one UDP port, so :class:`IceLiteMux`

* routes a Binding request by the local half of its USERNAME (``<our ufrag>:<their ufrag>``,
  RFC 8445 §7.2.2) to the session owning that ufrag, checks FINGERPRINT (RFC 8489 §14.7) and
  MESSAGE-INTEGRITY with the session's short-term key (RFC 8489 §9.1), and answers with
  XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT (RFC 8445 §7.3.1);
* learns each validated 5-tuple and the nominated one (USE-CANDIDATE, RFC 8445 §7.3.1.5): the
  latest nomination wins, which follows the controlling agent when it moves to another network;
* maps every other datagram (DTLS, SRTP; RFC 7983) from a validated 5-tuple to its session, and
  drops and counts datagrams from anywhere else;
* expires a pair's consent when no valid check arrived from it for 30 s (RFC 7675 §5.1; a lite
  agent sends no checks of its own, so the full agent's consent checks are the evidence), and fails
  a session that nobody nominates in time.

Time comes in as ``now`` (seconds, any monotonic clock), randomness for ufrag/pwd through
``token_bytes``. ``handle_timer(now)`` runs expiries at ``get_timer()``. Events queue up for
``next_event()``. The 5-tuple is keyed by the remote address alone: the mux serves one local port,
and the adapter answers from the socket the request came in on.
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections import deque
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from meet443.exceptions import ParseError
from meet443.proto.addresses import Address, ServerPort
from meet443.proto.demux import KIND_BY_FIRST_BYTE, PacketKind
from meet443.proto.ice.events import (
    ConsentExpired,
    IceEvent,
    IceState,
    IceStateChanged,
    PairNominated,
    PairValidated,
)
from meet443.proto.stun.attributes import (
    Attribute,
    ErrorCode,
    Fingerprint,
    IceControlled,
    MessageIntegrity,
    MessageIntegritySha256,
    Priority,
    UnknownAttributes,
    UseCandidate,
    Username,
    XorMappedAddress,
)
from meet443.proto.stun.keys import short_term_key
from meet443.proto.stun.message import Message, Method, StunClass

logger = logging.getLogger(__name__)

#: RFC 7675 §5.1: consent expires 30 s after the last successful check.
CONSENT_TIMEOUT = 30.0
#: How long a session may wait for its first nomination, or for a new one after losing consent.
#: Browsers give up on ICE after about 30 s too.
NOMINATION_TIMEOUT = 30.0
#: RFC 8839 §5.4 ice-char alphabet: 64 characters, so ``byte & 63`` maps bytes uniformly.
ICE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#: 8 characters = 48 random bits (RFC 8839 §5.4 asks for 24); 24 characters = 144 bits (>= 128).
UFRAG_LENGTH = 8
PWD_LENGTH = 24


@dataclass(frozen=True, slots=True)
class IceCredentials:
    """The local ICE username fragment and password of a session (RFC 8445 §5.3). Never log pwd."""

    ufrag: str
    pwd: str = field(repr=False)

    @classmethod
    def generate(cls, token_bytes: Callable[[int], bytes]) -> IceCredentials:
        return cls(_ice_string(token_bytes(UFRAG_LENGTH)), _ice_string(token_bytes(PWD_LENGTH)))


def _ice_string(raw: bytes) -> str:
    return "".join(ICE_ALPHABET[b & 63] for b in raw)


class Trigger(enum.Enum):
    """What moves a session between states."""

    CHECK = "valid check"
    NOMINATE = "valid check with USE-CANDIDATE"
    SELECTED_PAIR_LOST = "selected pair lost consent"
    DEADLINE = "no nomination in time"
    CLOSE = "closed by the caller"


S, T = IceState, Trigger
#: Every session transition, in one place; a missing entry is a bug and raises.
TRANSITIONS: dict[tuple[IceState, Trigger], IceState] = {
    (S.NEW, T.CHECK): S.CHECKING,
    (S.NEW, T.NOMINATE): S.CONNECTED,
    (S.NEW, T.DEADLINE): S.FAILED,
    (S.CHECKING, T.CHECK): S.CHECKING,
    (S.CHECKING, T.NOMINATE): S.CONNECTED,
    (S.CHECKING, T.DEADLINE): S.FAILED,
    (S.CONNECTED, T.CHECK): S.CONNECTED,
    (S.CONNECTED, T.NOMINATE): S.CONNECTED,
    (S.CONNECTED, T.SELECTED_PAIR_LOST): S.DISCONNECTED,
    (S.DISCONNECTED, T.CHECK): S.DISCONNECTED,
    (S.DISCONNECTED, T.NOMINATE): S.CONNECTED,
    (S.DISCONNECTED, T.DEADLINE): S.FAILED,
    **{(state, T.CLOSE): S.CLOSED for state in IceState if state is not S.CLOSED},
}
del S, T


@dataclass(slots=True)
class CandidatePair:
    """A validated pair: our host candidate ``local`` (one of the server's UDP ports) and ``remote``
    (RFC 8445 §6.1.2)."""

    remote: Address
    last_check: float
    #: PRIORITY of the latest check: the remote's peer-reflexive priority (RFC 8445 §7.1.1).
    priority: int
    nominated: bool = False
    #: The port the latest check arrived on: answers and media leave from it (RFC 8445 §7.2.2).
    local: ServerPort = ServerPort.MAIN


class _SessionLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every line with the session id; credentials never reach the log."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"ice[{(self.extra or {}).get('session')}] {msg}", kwargs


@dataclass(slots=True, eq=False)
class IceLiteSession:
    """One peer connection's ICE-lite state: credentials, validated pairs, the selected pair."""

    id: str
    local: IceCredentials
    remote_ufrag: str | None
    state: IceState = IceState.NEW
    pairs: dict[Address, CandidatePair] = field(default_factory=dict)
    #: Where to send DTLS and media (RFC 8445 §12); None: do not send (RFC 7675 §5.1).
    selected: Address | None = None
    #: When the session fails unless something is nominated; None while connected.
    deadline: float | None = None
    key: bytes = field(default=b"", repr=False)
    log: logging.LoggerAdapter[logging.Logger] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.key = short_term_key(self.local.pwd)
        self.log = _SessionLog(logger, {"session": self.id})

    def reply_address(self, source: Address) -> Address | None:
        """Where to answer a datagram that came from ``source`` (DTLS, RTCP).

        The selected pair once there is one (RFC 8445 §12). Before nomination, the validated pair
        the datagram came in on: browsers start DTLS as soon as a check succeeds, and the full
        agent's nomination follows (what mediasoup and Janus do too).
        """
        if self.selected is not None:
            return self.selected
        return source if source in self.pairs else None


@dataclass(slots=True)
class IceCounters:
    """For the metrics endpoint; no per-session labels."""

    requests: int = 0
    responses: int = 0
    error_responses: int = 0
    nominations: int = 0
    consent_expiries: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class Reply(NamedTuple):
    """Send ``data`` back to the datagram's source, from the port it arrived on."""

    data: bytes


class Routed(NamedTuple):
    """A non-STUN datagram from a validated 5-tuple: hand it to ``session``'s DTLS or SRTP."""

    session: IceLiteSession
    kind: PacketKind


class _TimerKind(enum.IntEnum):
    CONSENT = 0
    DEADLINE = 1


class IceLiteMux:
    """All ICE-lite sessions behind one UDP port; see the module docstring."""

    def __init__(
        self,
        token_bytes: Callable[[int], bytes],
        *,
        consent_timeout: float = CONSENT_TIMEOUT,
        nomination_timeout: float = NOMINATION_TIMEOUT,
        ufrag_tag: str = "",
    ) -> None:
        """``ufrag_tag``: a character every local ufrag starts with (a media worker's, see
        :mod:`meet443.workers`); the other characters stay random."""
        self._token_bytes = token_bytes
        self._ufrag_tag = ufrag_tag
        self.consent_timeout = consent_timeout
        self.nomination_timeout = nomination_timeout
        self.sessions: dict[str, IceLiteSession] = {}
        self._by_ufrag: dict[str, IceLiteSession] = {}
        #: The per-datagram lookup: validated remote address -> session.
        self._by_address: dict[Address, IceLiteSession] = {}
        # (when, sequence, kind, session id, remote) with lazy deletion: an entry is checked
        # against the live state when it comes due, and re-armed if the deadline moved.
        self._timers: list[tuple[float, int, _TimerKind, str, Address | None]] = []
        self._sequence = 0
        self._events: deque[IceEvent] = deque()
        self.counters = IceCounters()

    # -- sessions ---------------------------------------------------------------------------------

    def create_session(
        self,
        session_id: str,
        now: float,
        *,
        remote_ufrag: str | None = None,
        credentials: IceCredentials | None = None,
    ) -> IceLiteSession:
        """A new session with fresh credentials (or the given ones) that must be nominated in time.

        ``remote_ufrag`` (from the browser's offer) makes checks with any other remote half of the
        USERNAME fail; it may be set later with :meth:`set_remote_ufrag`.
        """
        if session_id in self.sessions:
            raise ValueError(f"session {session_id!r} exists")
        local = credentials or self._unique_credentials()
        if local.ufrag in self._by_ufrag:
            raise ValueError("ufrag already in use")
        session = IceLiteSession(session_id, local, remote_ufrag)
        session.deadline = now + self.nomination_timeout
        self.sessions[session_id] = session
        self._by_ufrag[local.ufrag] = session
        self._arm(session.deadline, _TimerKind.DEADLINE, session_id, None)
        session.log.debug("created")
        return session

    def set_remote_ufrag(self, session_id: str, remote_ufrag: str) -> None:
        self.sessions[session_id].remote_ufrag = remote_ufrag

    def restart(self, session_id: str, remote_ufrag: str | None) -> IceCredentials:
        """RFC 8445 §9: ICE restart: new local credentials; pairs keep carrying media meanwhile."""
        session = self.sessions[session_id]
        del self._by_ufrag[session.local.ufrag]
        session.local = self._unique_credentials()
        session.key = short_term_key(session.local.pwd)
        session.remote_ufrag = remote_ufrag
        self._by_ufrag[session.local.ufrag] = session
        session.log.info("ICE restart")
        return session.local

    def close_session(self, session_id: str) -> None:
        """Forget a session: its ufrag and 5-tuples no longer route anywhere."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        del self._by_ufrag[session.local.ufrag]
        for remote in session.pairs:
            del self._by_address[remote]  # a pair is only ever in its own session's routes
        session.pairs.clear()
        session.selected = None
        self._transition(session, Trigger.CLOSE)

    def _unique_credentials(self) -> IceCredentials:
        while True:
            credentials = IceCredentials.generate(self._token_bytes)
            if self._ufrag_tag:
                credentials = replace(credentials, ufrag=self._ufrag_tag + credentials.ufrag[1:])
            if credentials.ufrag not in self._by_ufrag:
                return credentials

    # -- datagrams --------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, source: Address, now: float) -> Reply | Routed | None:
        """Any datagram on the port (RFC 7983): STUN is answered, the rest routed or dropped."""
        if not data:
            self.counters.drop("empty")
            return None
        if KIND_BY_FIRST_BYTE[data[0]] is PacketKind.STUN:
            answer = self.receive_stun(data, source, now)
            return None if answer is None else Reply(answer)
        session = self.route(source)
        return None if session is None else Routed(session, KIND_BY_FIRST_BYTE[data[0]])

    def route(self, source: Address) -> IceLiteSession | None:
        """The per-datagram path for DTLS and SRTP: the session a validated 5-tuple belongs to."""
        session = self._by_address.get(source)
        if session is None:
            self.counters.drop("unknown-source")
        return session

    def routed_addresses(self) -> set[Address]:
        """The remote addresses of every validated pair (what :meth:`route` knows)."""
        return set(self._by_address)

    def owns(self, message: Message) -> bool:
        """Whether a STUN message on the shared port is an ICE check for one of our sessions.

        TURN and plain Binding requests (no USERNAME, or an unknown one) belong to the TURN server.
        """
        if message.method != Method.BINDING or message.klass != StunClass.REQUEST:
            return False
        username = message.get(Username)
        return username is not None and username.value.partition(":")[0] in self._by_ufrag

    def receive_stun(self, data: bytes, source: Address, now: float) -> bytes | None:
        """Parse and answer a STUN datagram; malformed ones are dropped and counted."""
        try:
            message = Message.parse(data)
        except ParseError:
            self.counters.drop("malformed-stun")
            return None
        return self.handle_binding(message, source, now)

    def handle_binding(
        self, request: Message, source: Address, now: float, local: ServerPort = ServerPort.MAIN
    ) -> bytes | None:
        """RFC 8445 §7.3 (lite): answer a connectivity check that arrived on ``local``; return the
        response (to send from ``local``) or None."""
        if request.method != Method.BINDING:
            self.counters.drop("not-binding")
            return None
        if request.klass != StunClass.REQUEST:
            # Indications are keepalives (RFC 8445 §11) and give no consent; a lite agent sends
            # no requests, so responses are strays.
            self.counters.drop("indication" if request.klass == StunClass.INDICATION else "response")
            return None
        self.counters.requests += 1
        if request.get(Fingerprint) is None:
            # RFC 8445 §7.2.2: checks carry FINGERPRINT; without it this is not ICE traffic.
            self.counters.drop("no-fingerprint")
            return None
        username = request.get(Username)
        if username is None or (
            request.get(MessageIntegrity) is None and request.get(MessageIntegritySha256) is None
        ):
            return self._error(request, 400, "Bad Request", None)  # RFC 8489 §9.1.3
        local_ufrag, colon, remote_ufrag = username.value.partition(":")
        session = self._by_ufrag.get(local_ufrag)
        if session is None or not colon:
            self.counters.drop("unknown-ufrag")
            return self._error(request, 401, "Unauthorized", None)
        if not request.check_integrity(session.key):
            self.counters.drop("bad-integrity")
            return self._error(request, 401, "Unauthorized", None)
        if session.remote_ufrag is not None and remote_ufrag != session.remote_ufrag:
            self.counters.drop("wrong-remote-ufrag")  # an old ICE generation
            return self._error(request, 401, "Unauthorized", None)
        unknown = request.unknown_comprehension_required()
        if unknown:
            return self._error(request, 420, "Unknown Attribute", session, unknown)
        priority = request.get(Priority)
        if priority is None:
            return self._error(request, 400, "Bad Request", session)  # RFC 8445 §7.2.2 requires it
        if request.get(IceControlled) is not None:
            # RFC 8445 §7.3.1.1: both sides think they are controlled. A lite agent cannot take
            # the controlling role (§6.1.1), so it always keeps its role and answers 487.
            return self._error(request, 487, "Role Conflict", session)
        if session.state in (IceState.FAILED, IceState.CLOSED):
            self.counters.drop("session-failed")
            return None

        self._learn(session, source, local, priority.value, request.get(UseCandidate) is not None, now)
        self.counters.responses += 1
        response = Message(
            Method.BINDING, StunClass.SUCCESS, request.transaction_id, [XorMappedAddress(source)]
        )
        return response.encode(session.key, sha256=request.uses_sha256, fingerprint=True)

    def _error(
        self,
        request: Message,
        code: int,
        reason: str,
        session: IceLiteSession | None,
        unknown: tuple[int, ...] = (),
    ) -> bytes:
        """RFC 8489 §6.3.4: an error response; authenticated unless it says the request was not."""
        self.counters.error_responses += 1
        attributes: list[Attribute] = [ErrorCode(code, reason)]
        if unknown:
            attributes.append(UnknownAttributes(unknown))
        response = Message(Method.BINDING, StunClass.ERROR, request.transaction_id, attributes)
        key = session.key if session is not None else None
        return response.encode(key, sha256=request.uses_sha256, fingerprint=True)

    def _learn(
        self,
        session: IceLiteSession,
        source: Address,
        local: ServerPort,
        priority: int,
        nominate: bool,
        now: float,
    ) -> None:
        pair = session.pairs.get(source)
        if pair is None:
            owner = self._by_address.get(source)
            if owner is not None and owner is not session:
                # The 5-tuple now authenticates as this session: the other loses it.
                self._lose_pair(owner, source, now)
            pair = CandidatePair(source, now, priority)
            session.pairs[source] = pair
            self._by_address[source] = session
            self._arm(now + self.consent_timeout, _TimerKind.CONSENT, session.id, source)
            self._events.append(PairValidated(session.id, source))
            session.log.debug("pair validated")
        pair.last_check = now
        pair.priority = priority
        pair.local = local
        if nominate and session.selected != source:
            previous = session.selected
            if previous is not None and previous in session.pairs:
                session.pairs[previous].nominated = False
            pair.nominated = True
            session.selected = source
            session.deadline = None
            self.counters.nominations += 1
            self._events.append(PairNominated(session.id, source, previous))
            session.log.info("pair nominated%s", " (switched)" if previous else "")
            self._transition(session, Trigger.NOMINATE)
        elif session.state is IceState.NEW:
            self._transition(session, Trigger.CHECK)

    # -- time -------------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should run next (it may find nothing to do)."""
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, now: float) -> None:
        """RFC 7675 §5.1 consent expiry and nomination deadlines due at ``now``."""
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, session_id, remote = heapq.heappop(self._timers)
            session = self.sessions.get(session_id)
            if session is None:
                continue
            if kind is _TimerKind.CONSENT:
                assert remote is not None
                pair = session.pairs.get(remote)
                if pair is None:
                    continue
                expiry = pair.last_check + self.consent_timeout
                if expiry > now:
                    self._arm(expiry, kind, session_id, remote)
                else:
                    self._lose_pair(session, remote, now)
            elif session.deadline is not None and session.deadline <= now:
                # Every deadline set arms its own entry; older entries find it later or None.
                session.deadline = None
                session.log.info("no nomination in time")
                self._transition(session, Trigger.DEADLINE)

    def _lose_pair(self, session: IceLiteSession, remote: Address, now: float) -> None:
        del session.pairs[remote]
        del self._by_address[remote]
        selected = session.selected == remote
        self.counters.consent_expiries += 1
        self._events.append(ConsentExpired(session.id, remote, selected))
        session.log.info("consent expired on %s pair", "the selected" if selected else "a")
        if selected:
            session.selected = None
            session.deadline = now + self.nomination_timeout
            self._arm(session.deadline, _TimerKind.DEADLINE, session.id, None)
            self._transition(session, Trigger.SELECTED_PAIR_LOST)

    def _arm(self, when: float, kind: _TimerKind, session_id: str, remote: Address | None) -> None:
        self._sequence += 1
        heapq.heappush(self._timers, (when, self._sequence, kind, session_id, remote))

    # -- events -----------------------------------------------------------------------------------

    def next_event(self) -> IceEvent | None:
        return self._events.popleft() if self._events else None

    def _transition(self, session: IceLiteSession, trigger: Trigger) -> None:
        previous = session.state
        try:
            state = TRANSITIONS[(previous, trigger)]
        except KeyError:  # pragma: no cover - the table covers every reachable pair
            raise RuntimeError(f"no ICE transition from {previous} on {trigger}") from None
        if state is previous:
            return
        session.state = state
        session.log.info("%s -> %s (%s)", previous.value, state.value, trigger.value)
        self._events.append(IceStateChanged(session.id, state, previous))
