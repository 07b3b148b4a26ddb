"""ICE-lite mux with a fake clock: RFC 8445 §7.3 checks, nomination, RFC 7675 consent, routing."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meet443.proto.addresses import Address
from meet443.proto.demux import PacketKind
from meet443.proto.ice.events import (
    ConsentExpired,
    IceEvent,
    IceState,
    IceStateChanged,
    PairNominated,
    PairValidated,
)
from meet443.proto.ice.lite import (
    ICE_ALPHABET,
    TRANSITIONS,
    IceCredentials,
    IceLiteMux,
    Reply,
    Routed,
    Trigger,
)
from meet443.proto.stun.attributes import (
    Attribute,
    ErrorCode,
    IceControlled,
    IceControlling,
    MessageIntegrity,
    MessageIntegritySha256,
    Priority,
    UnknownAttribute,
    UnknownAttributes,
    UseCandidate,
    Username,
    XorMappedAddress,
)
from meet443.proto.stun.keys import short_term_key
from meet443.proto.stun.message import Message, Method, StunClass
from tests.proto.stun.vectors import RFC5769_PASSWORD, SAMPLE_REQUEST
from tests.proto.turn.harness import FakeClock

BROWSER: Address = ("192.0.2.10", 50000)
BROWSER_WIFI: Address = ("198.51.100.20", 61000)
REMOTE_UFRAG = "brws"
LOCAL = IceCredentials("SfUufrag", "sfuPasswordSfuPassword24")
DTLS_HELLO = bytes([22, 0xFE, 0xFD]) + bytes(20)
RTP_PACKET = bytes([0x80, 96]) + bytes(20)


class Seeded:
    """A deterministic ``token_bytes``."""

    def __init__(self, seed: int = 7) -> None:
        self.random = random.Random(seed)

    def __call__(self, n: int) -> bytes:
        return self.random.randbytes(n)


def check(
    credentials: IceCredentials = LOCAL,
    remote_ufrag: str = REMOTE_UFRAG,
    *,
    use_candidate: bool = False,
    role: Attribute | None = None,
    priority: int | None = 1853824767,
    transaction_id: bytes = b"\x01" * 12,
    extra: Sequence[Attribute] = (),
    key: bytes | None = None,
    fingerprint: bool = True,
    sha256: bool = False,
    username: str | None = None,
) -> bytes:
    """A connectivity check as a controlling full agent sends it (RFC 8445 §7.2.2)."""
    attributes: list[Attribute] = [Username(username or f"{credentials.ufrag}:{remote_ufrag}")]
    if priority is not None:
        attributes.append(Priority(priority))
    attributes.append(role or IceControlling(0x1234))
    if use_candidate:
        attributes.append(UseCandidate())
    attributes += extra
    message = Message(Method.BINDING, StunClass.REQUEST, transaction_id, attributes)
    return message.encode(
        key if key is not None else short_term_key(credentials.pwd), sha256=sha256, fingerprint=fingerprint
    )


def events(mux: IceLiteMux) -> list[IceEvent]:
    out = []
    while (event := mux.next_event()) is not None:
        out.append(event)
    return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def mux(clock: FakeClock) -> IceLiteMux:
    mux = IceLiteMux(Seeded())
    mux.create_session("alice", clock.now, remote_ufrag=REMOTE_UFRAG, credentials=LOCAL)
    return mux


def answer(mux: IceLiteMux, data: bytes, source: Address, now: float) -> Message:
    response = mux.receive_stun(data, source, now)
    assert response is not None
    return Message.parse(response)


class TestRfc8445LiteResponses:
    """RFC 8445 §7.3.1 (https://www.rfc-editor.org/rfc/rfc8445#section-7.3.1): a lite agent's answer."""

    def test_success_response(self, mux: IceLiteMux, clock: FakeClock) -> None:
        response = answer(mux, check(transaction_id=b"T" * 12), BROWSER, clock.now)
        assert (response.method, response.klass, response.transaction_id) == (
            Method.BINDING,
            StunClass.SUCCESS,
            b"T" * 12,
        )
        assert response.get(XorMappedAddress) == XorMappedAddress(BROWSER)
        # Signed with the local password, the same key the request used (RFC 8489 §9.1.1).
        assert response.check_integrity(short_term_key(LOCAL.pwd))
        assert [type(a) for a in response.attributes][-2:] == [
            MessageIntegrity,
            type(response.attributes[-1]),
        ]
        assert mux.counters.responses == 1

    def test_sha256_integrity_is_answered_in_kind(self, mux: IceLiteMux, clock: FakeClock) -> None:
        response = answer(mux, check(sha256=True), BROWSER, clock.now)
        assert response.uses_sha256 and response.get(MessageIntegritySha256) is not None
        assert response.check_integrity(short_term_key(LOCAL.pwd))

    def test_ipv6_source(self, mux: IceLiteMux, clock: FakeClock) -> None:
        source = ("2001:db8::10", 40000)
        assert answer(mux, check(), source, clock.now).get(XorMappedAddress) == XorMappedAddress(source)

    def test_retransmission_gets_the_same_answer(self, mux: IceLiteMux, clock: FakeClock) -> None:
        first = mux.receive_stun(check(use_candidate=True), BROWSER, clock.now)
        events(mux)
        assert mux.receive_stun(check(use_candidate=True), BROWSER, clock.now) == first
        assert events(mux) == []  # nothing changed

    def test_rfc5769_sample_request_is_a_role_conflict(self, clock: FakeClock) -> None:
        """RFC 5769 §2.1 (https://www.rfc-editor.org/rfc/rfc5769#section-2.1) is a check from a
        controlled agent to ufrag "evtj": a lite agent stays controlled and answers 487."""
        mux = IceLiteMux(Seeded())
        mux.create_session(
            "s", clock.now, remote_ufrag="h6vY", credentials=IceCredentials("evtj", RFC5769_PASSWORD)
        )
        response = answer(mux, SAMPLE_REQUEST, BROWSER, clock.now)
        assert response.klass == StunClass.ERROR
        assert response.get(ErrorCode) == ErrorCode(487, "Role Conflict")
        assert response.check_integrity(short_term_key(RFC5769_PASSWORD))
        assert mux.sessions["s"].pairs == {}


class TestRfc8489ShortTermAuthentication:
    """RFC 8489 §9.1.3 (https://www.rfc-editor.org/rfc/rfc8489#section-9.1.3) and §14.7."""

    def test_unknown_ufrag(self, mux: IceLiteMux, clock: FakeClock) -> None:
        stranger = IceCredentials("nobody00", "x" * 24)
        response = answer(mux, check(stranger), BROWSER, clock.now)
        assert response.get(ErrorCode) == ErrorCode(401, "Unauthorized")
        assert response.get(MessageIntegrity) is None  # we cannot sign for someone we do not know
        assert mux.counters.dropped == {"unknown-ufrag": 1}

    def test_username_without_colon(self, mux: IceLiteMux, clock: FakeClock) -> None:
        response = answer(mux, check(username=LOCAL.ufrag), BROWSER, clock.now)
        assert response.get(ErrorCode) == ErrorCode(401, "Unauthorized")

    def test_wrong_password(self, mux: IceLiteMux, clock: FakeClock) -> None:
        response = answer(mux, check(key=b"not the password"), BROWSER, clock.now)
        assert response.get(ErrorCode) == ErrorCode(401, "Unauthorized")
        assert mux.counters.dropped == {"bad-integrity": 1}
        assert mux.sessions["alice"].pairs == {}

    def test_wrong_remote_ufrag(self, mux: IceLiteMux, clock: FakeClock) -> None:
        response = answer(mux, check(remote_ufrag="old1"), BROWSER, clock.now)
        assert response.get(ErrorCode) == ErrorCode(401, "Unauthorized")
        assert mux.counters.dropped == {"wrong-remote-ufrag": 1}

    def test_any_remote_ufrag_until_it_is_known(self, clock: FakeClock) -> None:
        mux = IceLiteMux(Seeded())
        mux.create_session("s", clock.now, credentials=LOCAL)
        assert answer(mux, check(remote_ufrag="anyx"), BROWSER, clock.now).klass == StunClass.SUCCESS
        mux.set_remote_ufrag("s", "brws")
        assert answer(mux, check(remote_ufrag="anyx"), BROWSER, clock.now).klass == StunClass.ERROR

    def test_missing_integrity_or_username(self, mux: IceLiteMux, clock: FakeClock) -> None:
        plain = Message(Method.BINDING, StunClass.REQUEST, b"\x02" * 12, [Username(f"{LOCAL.ufrag}:x")])
        response = answer(mux, plain.encode(fingerprint=True), BROWSER, clock.now)
        assert response.get(ErrorCode) == ErrorCode(400, "Bad Request")
        no_user = Message(Method.BINDING, StunClass.REQUEST, b"\x03" * 12, [Priority(1)])
        response = answer(
            mux, no_user.encode(short_term_key(LOCAL.pwd), fingerprint=True), BROWSER, clock.now
        )
        assert response.get(ErrorCode) == ErrorCode(400, "Bad Request")

    def test_missing_fingerprint_is_dropped(self, mux: IceLiteMux, clock: FakeClock) -> None:
        assert mux.receive_stun(check(fingerprint=False), BROWSER, clock.now) is None
        assert mux.counters.dropped == {"no-fingerprint": 1}

    def test_missing_priority(self, mux: IceLiteMux, clock: FakeClock) -> None:
        response = answer(mux, check(priority=None), BROWSER, clock.now)
        assert response.get(ErrorCode) == ErrorCode(400, "Bad Request")
        assert response.check_integrity(short_term_key(LOCAL.pwd))

    def test_unknown_comprehension_required_attribute(self, mux: IceLiteMux, clock: FakeClock) -> None:
        response = answer(mux, check(extra=[UnknownAttribute(0x7F01, b"abcd")]), BROWSER, clock.now)
        assert response.get(ErrorCode) == ErrorCode(420, "Unknown Attribute")
        assert response.get(UnknownAttributes) == UnknownAttributes((0x7F01,))
        # Comprehension-optional ones are ignored.
        ok = answer(mux, check(extra=[UnknownAttribute(0xC057, b"\x00\x01\x00\x00")]), BROWSER, clock.now)
        assert ok.klass == StunClass.SUCCESS

    def test_role_conflict(self, mux: IceLiteMux, clock: FakeClock) -> None:
        """RFC 8445 §7.3.1.1: a lite agent never becomes controlling; it answers 487 and keeps its role."""
        response = answer(mux, check(role=IceControlled(2**64 - 1)), BROWSER, clock.now)
        assert response.get(ErrorCode) == ErrorCode(487, "Role Conflict")
        assert response.check_integrity(short_term_key(LOCAL.pwd))
        assert mux.sessions["alice"].pairs == {} and mux.sessions["alice"].state is IceState.NEW


class TestWhatIsNotACheck:
    def test_indications_responses_other_methods_and_garbage(self, mux: IceLiteMux, clock: FakeClock) -> None:
        key = short_term_key(LOCAL.pwd)
        indication = Message(Method.BINDING, StunClass.INDICATION, b"\x04" * 12).encode(fingerprint=True)
        success = Message(Method.BINDING, StunClass.SUCCESS, b"\x05" * 12).encode(key, fingerprint=True)
        allocate = Message(Method.ALLOCATE, StunClass.REQUEST, b"\x06" * 12).encode(fingerprint=True)
        for data in (indication, success, allocate, b"\x00\x01garbage", b""):
            assert mux.receive_datagram(data, BROWSER, clock.now) is None
        assert mux.counters.dropped == {
            "indication": 1,
            "response": 1,
            "not-binding": 1,
            "malformed-stun": 1,
            "empty": 1,
        }
        assert mux.counters.requests == 0

    def test_owns_only_checks_for_known_ufrags(self, mux: IceLiteMux) -> None:
        assert mux.owns(Message.parse(check()))
        assert not mux.owns(Message.parse(check(IceCredentials("nobody00", "x" * 24))))
        assert not mux.owns(Message(Method.BINDING, StunClass.REQUEST, b"\x07" * 12))  # a plain STUN query
        assert not mux.owns(Message(Method.ALLOCATE, StunClass.REQUEST, b"\x08" * 12, [Username("a:b")]))


class TestNominationAndRouting:
    """RFC 8445 §7.3.1.5 (USE-CANDIDATE) and §8.2; RFC 7983 for the datagrams that follow."""

    def test_check_then_nomination(self, mux: IceLiteMux, clock: FakeClock) -> None:
        answer(mux, check(), BROWSER, clock.now)
        assert events(mux) == [
            PairValidated("alice", BROWSER),
            IceStateChanged("alice", IceState.CHECKING, IceState.NEW),
        ]
        session = mux.sessions["alice"]
        assert session.selected is None
        assert session.reply_address(BROWSER) == BROWSER  # DTLS may start before nomination
        assert session.reply_address(BROWSER_WIFI) is None
        answer(mux, check(use_candidate=True), BROWSER, clock.now)
        assert events(mux) == [
            PairNominated("alice", BROWSER, None),
            IceStateChanged("alice", IceState.CONNECTED, IceState.CHECKING),
        ]
        assert session.selected == BROWSER and session.pairs[BROWSER].nominated
        assert session.reply_address(BROWSER_WIFI) == BROWSER
        assert session.pairs[BROWSER].priority == 1853824767

    def test_aggressive_nomination_on_first_check(self, mux: IceLiteMux, clock: FakeClock) -> None:
        answer(mux, check(use_candidate=True), BROWSER, clock.now)
        assert events(mux) == [
            PairValidated("alice", BROWSER),
            PairNominated("alice", BROWSER, None),
            IceStateChanged("alice", IceState.CONNECTED, IceState.NEW),
        ]

    def test_a_later_nomination_moves_the_selected_pair(self, mux: IceLiteMux, clock: FakeClock) -> None:
        answer(mux, check(use_candidate=True), BROWSER, clock.now)
        answer(mux, check(use_candidate=True), BROWSER_WIFI, clock.advance(3))
        assert events(mux)[-2:] == [
            PairValidated("alice", BROWSER_WIFI),
            PairNominated("alice", BROWSER_WIFI, BROWSER),
        ]
        session = mux.sessions["alice"]
        assert session.selected == BROWSER_WIFI
        assert not session.pairs[BROWSER].nominated and session.pairs[BROWSER_WIFI].nominated
        # Media from the old path still belongs to the session until its consent runs out.
        assert mux.route(BROWSER) is session

    def test_datagrams_route_by_5_tuple(self, mux: IceLiteMux, clock: FakeClock) -> None:
        assert mux.receive_datagram(RTP_PACKET, BROWSER, clock.now) is None  # not validated yet
        assert mux.counters.dropped == {"unknown-source": 1}
        reply = mux.receive_datagram(check(use_candidate=True), BROWSER, clock.now)
        assert isinstance(reply, Reply)
        session = mux.sessions["alice"]
        assert mux.receive_datagram(DTLS_HELLO, BROWSER, clock.now) == Routed(session, PacketKind.DTLS)
        assert mux.receive_datagram(RTP_PACKET, BROWSER, clock.now) == Routed(session, PacketKind.RTP)
        assert mux.receive_datagram(RTP_PACKET, BROWSER_WIFI, clock.now) is None
        assert mux.counters.dropped == {"unknown-source": 2}

    def test_many_sessions_share_the_port(self, clock: FakeClock) -> None:
        mux = IceLiteMux(Seeded())
        sessions = [mux.create_session(f"p{i}", clock.now, remote_ufrag=f"rem{i}") for i in range(50)]
        for i, session in enumerate(sessions):
            source = ("192.0.2.1", 40000 + i)
            response = answer(mux, check(session.local, f"rem{i}", use_candidate=True), source, clock.now)
            assert response.klass == StunClass.SUCCESS
        for i, session in enumerate(sessions):
            assert mux.route(("192.0.2.1", 40000 + i)) is session
            assert session.selected == ("192.0.2.1", 40000 + i)

    def test_a_5_tuple_that_authenticates_as_another_session_moves(
        self, mux: IceLiteMux, clock: FakeClock
    ) -> None:
        answer(mux, check(use_candidate=True), BROWSER, clock.now)
        bob = mux.create_session("bob", clock.now, remote_ufrag="bobr")
        events(mux)
        answer(mux, check(bob.local, "bobr", use_candidate=True), BROWSER, clock.now)
        assert events(mux) == [
            ConsentExpired("alice", BROWSER, selected=True),
            IceStateChanged("alice", IceState.DISCONNECTED, IceState.CONNECTED),
            PairValidated("bob", BROWSER),
            PairNominated("bob", BROWSER, None),
            IceStateChanged("bob", IceState.CONNECTED, IceState.NEW),
        ]
        assert mux.route(BROWSER) is bob and mux.sessions["alice"].selected is None
        answer(mux, check(bob.local, "bobr"), BROWSER, clock.advance(20))
        mux.handle_timer(clock.advance(15))  # alice's old consent timer finds no pair to expire
        assert events(mux) == [IceStateChanged("alice", IceState.FAILED, IceState.DISCONNECTED)]
        assert mux.sessions["bob"].state is IceState.CONNECTED


class TestRfc7675ConsentFreshness:
    """RFC 7675 §5.1 (https://www.rfc-editor.org/rfc/rfc7675#section-5.1): 30 s without a valid check."""

    def test_selected_pair_expires_30_s_after_the_last_check(self, mux: IceLiteMux, clock: FakeClock) -> None:
        start = clock.now
        answer(mux, check(use_candidate=True), BROWSER, start)
        answer(mux, check(), BROWSER, start + 20)  # a consent check
        events(mux)
        mux.handle_timer(start + 49.999)
        assert events(mux) == [] and mux.sessions["alice"].selected == BROWSER
        assert mux.get_timer() == pytest.approx(start + 50)
        mux.handle_timer(start + 50)
        assert events(mux) == [
            ConsentExpired("alice", BROWSER, selected=True),
            IceStateChanged("alice", IceState.DISCONNECTED, IceState.CONNECTED),
        ]
        session = mux.sessions["alice"]
        assert session.selected is None and session.pairs == {}
        assert session.reply_address(BROWSER) is None
        assert mux.route(BROWSER) is None
        assert mux.counters.consent_expiries == 1

    def test_unselected_pair_expires_quietly(self, mux: IceLiteMux, clock: FakeClock) -> None:
        start = clock.now
        answer(mux, check(use_candidate=True), BROWSER, start)
        answer(mux, check(), BROWSER_WIFI, start)
        for t in range(5, 60, 5):
            answer(mux, check(), BROWSER, start + t)  # consent checks on the selected pair only
            mux.handle_timer(start + t)
        assert ConsentExpired("alice", BROWSER_WIFI, selected=False) in events(mux)
        assert mux.sessions["alice"].state is IceState.CONNECTED

    def test_disconnected_session_comes_back_with_a_new_nomination(
        self, mux: IceLiteMux, clock: FakeClock
    ) -> None:
        answer(mux, check(use_candidate=True), BROWSER, clock.now)
        mux.handle_timer(clock.advance(30))
        events(mux)
        answer(mux, check(use_candidate=True), BROWSER_WIFI, clock.advance(5))
        assert events(mux)[-1] == IceStateChanged("alice", IceState.CONNECTED, IceState.DISCONNECTED)
        answer(mux, check(), BROWSER_WIFI, clock.advance(20))  # consent check
        mux.handle_timer(clock.advance(6))  # the deadline set on disconnection passes harmlessly
        assert mux.sessions["alice"].state is IceState.CONNECTED

    def test_disconnected_session_fails_without_a_new_nomination(
        self, mux: IceLiteMux, clock: FakeClock
    ) -> None:
        answer(mux, check(use_candidate=True), BROWSER, clock.now)
        mux.handle_timer(clock.advance(30))
        mux.handle_timer(clock.advance(29.9))
        assert mux.sessions["alice"].state is IceState.DISCONNECTED
        events(mux)
        mux.handle_timer(clock.advance(0.1))
        assert events(mux) == [IceStateChanged("alice", IceState.FAILED, IceState.DISCONNECTED)]

    def test_session_never_nominated_fails(self, mux: IceLiteMux, clock: FakeClock) -> None:
        answer(mux, check(), BROWSER, clock.advance(10))
        events(mux)
        mux.handle_timer(clock.advance(20))
        assert events(mux) == [IceStateChanged("alice", IceState.FAILED, IceState.CHECKING)]
        # A failed session answers nothing more; the caller closes it.
        assert mux.receive_stun(check(use_candidate=True), BROWSER, clock.now) is None
        assert mux.counters.dropped == {"session-failed": 1}

    def test_timer_is_the_earliest_deadline(self, clock: FakeClock) -> None:
        mux = IceLiteMux(Seeded(), consent_timeout=10, nomination_timeout=100)
        assert mux.get_timer() is None
        session = mux.create_session("s", clock.now, remote_ufrag=REMOTE_UFRAG, credentials=LOCAL)
        assert mux.get_timer() == clock.now + 100
        answer(mux, check(session.local, use_candidate=True), BROWSER, clock.now)
        assert mux.get_timer() == clock.now + 10


class TestSessions:
    def test_generated_credentials(self) -> None:
        credentials = IceCredentials.generate(Seeded(1))
        assert len(credentials.ufrag) == 8 and len(credentials.pwd) == 24
        assert set(credentials.ufrag + credentials.pwd) <= set(ICE_ALPHABET)
        assert IceCredentials.generate(Seeded(1)) == credentials  # the injected source decides
        assert credentials.pwd not in repr(credentials)

    def test_ufrag_collisions_are_retried(self, clock: FakeClock) -> None:
        outputs = iter([b"a" * 8, b"p" * 24, b"a" * 8, b"q" * 24, b"b" * 8, b"r" * 24])
        mux = IceLiteMux(lambda n: next(outputs))
        first = mux.create_session("one", clock.now)
        second = mux.create_session("two", clock.now)
        assert first.local.ufrag != second.local.ufrag

    def test_duplicate_ids_and_ufrags(self, mux: IceLiteMux, clock: FakeClock) -> None:
        with pytest.raises(ValueError):
            mux.create_session("alice", clock.now)
        with pytest.raises(ValueError):
            mux.create_session("other", clock.now, credentials=LOCAL)

    def test_close_forgets_ufrag_and_routes(self, mux: IceLiteMux, clock: FakeClock) -> None:
        answer(mux, check(use_candidate=True), BROWSER, clock.now)
        events(mux)
        mux.close_session("alice")
        assert events(mux) == [IceStateChanged("alice", IceState.CLOSED, IceState.CONNECTED)]
        assert mux.route(BROWSER) is None
        assert answer(mux, check(), BROWSER, clock.now).get(ErrorCode) == ErrorCode(401, "Unauthorized")
        mux.close_session("alice")  # twice is fine
        mux.handle_timer(clock.advance(100))  # its timers find nothing
        assert events(mux) == []

    def test_ice_restart(self, mux: IceLiteMux, clock: FakeClock) -> None:
        answer(mux, check(use_candidate=True), BROWSER, clock.now)
        new = mux.restart("alice", "brw2")
        assert new.ufrag != LOCAL.ufrag
        assert answer(mux, check(), BROWSER, clock.now).get(ErrorCode) == ErrorCode(401, "Unauthorized")
        assert mux.route(BROWSER) is mux.sessions["alice"]  # media continues meanwhile
        assert (
            answer(mux, check(new, "brw2", use_candidate=True), BROWSER_WIFI, clock.now).klass
            == StunClass.SUCCESS
        )
        assert mux.sessions["alice"].selected == BROWSER_WIFI


class TestLogging:
    def test_lines_name_the_session_and_never_the_password(
        self, mux: IceLiteMux, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level("DEBUG", logger="meet443.proto.ice.lite")
        answer(mux, check(use_candidate=True), BROWSER, clock.now)
        mux.handle_timer(clock.advance(31))
        assert caplog.messages and all(m.startswith("ice[alice] ") for m in caplog.messages)
        assert not any(LOCAL.pwd in m or LOCAL.ufrag in m for m in caplog.messages)


class TestTransitionTable:
    def test_closed_is_terminal_and_reachable_from_everywhere(self) -> None:
        assert not [key for key in TRANSITIONS if key[0] is IceState.CLOSED]
        for state in IceState:
            if state is not IceState.CLOSED:
                assert TRANSITIONS[(state, Trigger.CLOSE)] is IceState.CLOSED

    def test_failed_only_closes(self) -> None:
        assert [trigger for (state, trigger) in TRANSITIONS if state is IceState.FAILED] == [Trigger.CLOSE]


@settings(deadline=None)
@given(st.binary(max_size=200), st.integers(0, 65535))
def test_any_datagram_is_handled_without_raising(data: bytes, port: int) -> None:
    mux = IceLiteMux(Seeded())
    mux.create_session("s", 0.0, remote_ufrag=REMOTE_UFRAG, credentials=LOCAL)
    result = mux.receive_datagram(data, ("192.0.2.1", port), 0.0)
    assert result is None or isinstance(result, Reply)


@settings(deadline=None)
@given(st.binary(min_size=1, max_size=60))
def test_stun_shaped_garbage_is_dropped(tail: bytes) -> None:
    mux = IceLiteMux(Seeded())
    mux.create_session("s", 0.0, credentials=LOCAL)
    data = check()[:20] + tail
    result = mux.receive_datagram(data, BROWSER, 0.0)
    assert result is None or isinstance(result, Reply)
