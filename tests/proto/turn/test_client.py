"""TurnClientSession (RFC 8656 client side, RFC 8489 §9.2 long-term credentials) against the
project's TurnServer core: the same bytes ``meet443 check`` sends, answered by the real server."""

from __future__ import annotations

import random

import pytest

from meet443.proto.addresses import Transport
from meet443.proto.stun.attributes import ErrorCode, Nonce, Realm, Software
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.proto.turn.allocation import ClientFlow
from meet443.proto.turn.client import (
    Answer,
    ChannelMessage,
    DataMessage,
    TurnClientSession,
    binding_request,
    describe_error,
    mapped_address,
    relayed_address,
)
from meet443.proto.turn.server import ToClient, TurnServer

from .harness import REALM, FakeClock, make_server

CLIENT = ClientFlow(Transport.UDP, ("203.0.113.10", 40000), 0)
PEER = ("203.0.113.20", 5000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def answer(server: TurnServer, clock: FakeClock, data: bytes) -> Message:
    [reply] = [o.data for o in server.receive(data, CLIENT, clock.now) if isinstance(o, ToClient)]
    incoming = TurnClientSession.receive(reply)
    assert isinstance(incoming, Answer)
    return incoming.message


def allocated(server: TurnServer, clock: FakeClock, session: TurnClientSession) -> Message:
    """RFC 8656 §7.1: the unsigned Allocate, its 401 challenge, the signed retry."""
    challenge = answer(server, clock, session.allocate(lifetime=3600)[1])
    assert describe_error(challenge).startswith("401 ")
    assert session.learn_challenge(challenge)
    success = answer(server, clock, session.allocate(lifetime=3600)[1])
    assert success.klass == StunClass.SUCCESS and session.authentic(success)
    return success


class TestRfc8489Binding:
    def test_the_server_reflects_the_clients_address(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        reply = answer(server, clock, binding_request(bytes(12)))
        assert mapped_address(reply) == CLIENT.address
        assert relayed_address(reply) is None  # a Binding answer relays nothing


class TestRfc8489LongTermCredentials:
    def test_challenge_then_allocate_then_relay(self, clock: FakeClock) -> None:
        server, ports = make_server(clock)
        session = TurnClientSession("alice", "wonderland", random.Random(1).randbytes)
        success = allocated(server, clock, session)
        relay = relayed_address(success)
        assert relay is not None and relay[1] in ports.open_ports
        assert repr(session) == f"TurnClientSession(username='alice', realm='{REALM}')"
        assert "wonderland" not in repr(session)
        assert answer(server, clock, session.create_permission(PEER)[1]).klass == StunClass.SUCCESS
        assert answer(server, clock, session.channel_bind(0x4000, PEER)[1]).klass == StunClass.SUCCESS
        delivered = server.receive_from_peer(relay, PEER, b"hello", clock.now)
        assert delivered is not None
        assert TurnClientSession.receive(delivered.data) == ChannelMessage(0x4000, b"hello")
        assert answer(server, clock, session.delete()[1]).klass == StunClass.SUCCESS
        assert server.allocations == {}

    def test_a_peer_without_a_channel_arrives_as_a_data_indication(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        session = TurnClientSession("alice", "wonderland", random.Random(1).randbytes)
        relay = relayed_address(allocated(server, clock, session))
        assert relay is not None
        answer(server, clock, session.create_permission(PEER)[1])
        delivered = server.receive_from_peer(relay, PEER, b"hi", clock.now)
        assert delivered is not None
        assert TurnClientSession.receive(delivered.data) == DataMessage(PEER, b"hi")

    def test_a_wrong_password_is_not_retried(self, clock: FakeClock) -> None:
        """RFC 8489 §9.2.5: a 401 to a request signed with this realm means the key is wrong."""
        server, _ = make_server(clock)
        session = TurnClientSession("alice", "queen of hearts", random.Random(1).randbytes)
        assert session.learn_challenge(answer(server, clock, session.allocate()[1]))
        refused = answer(server, clock, session.allocate()[1])
        assert describe_error(refused).startswith("401 ")
        assert not session.learn_challenge(refused)

    def test_a_stale_nonce_is_replaced_and_the_key_kept(self, clock: FakeClock) -> None:
        """RFC 8489 §9.2.5: 438 Stale Nonce carries a new nonce; the request is retried with it."""
        server, _ = make_server(clock)
        session = TurnClientSession("alice", "wonderland", random.Random(1).randbytes)
        allocated(server, clock, session)
        first = session.nonce
        clock.advance(700)  # past the nonce lifetime (600 s), within the allocation's (3600 s)
        stale = answer(server, clock, session.create_permission(PEER)[1])
        assert describe_error(stale).startswith("438")
        assert session.learn_challenge(stale) and session.nonce != first
        assert answer(server, clock, session.create_permission(PEER)[1]).klass == StunClass.SUCCESS

    @pytest.mark.parametrize(
        "attributes",
        [
            [ErrorCode(400, "Bad Request"), Realm(REALM), Nonce(b"n")],  # not a challenge
            [ErrorCode(401, "Unauthorized"), Nonce(b"n")],  # no REALM
            [],  # no ERROR-CODE at all
        ],
    )
    def test_answers_that_are_not_challenges_are_not_retried(self, attributes: list[object]) -> None:
        session = TurnClientSession("alice", "wonderland", random.Random(1).randbytes)
        message = Message(Method.ALLOCATE, StunClass.ERROR, bytes(12), attributes)  # type: ignore[arg-type]
        assert not session.learn_challenge(message)
        assert not session.authentic(message)
        assert session.request(Method.ALLOCATE)[1][:2] == b"\x00\x03"  # still unsigned

    def test_what_is_neither_an_answer_nor_relayed_data_is_ignored(self) -> None:
        request = Message(Method.BINDING, StunClass.REQUEST, bytes(12), [Software("x")]).encode()
        indication = Message(Method.DATA, StunClass.INDICATION, bytes(12), []).encode()
        for data in (b"", b"\x40\x00\x00\x09abc", b"\x00\x01\x00", request, indication):
            assert TurnClientSession.receive(data) is None
        assert describe_error(Message(Method.ALLOCATE, StunClass.ERROR, bytes(12), [])) == "no error code"
