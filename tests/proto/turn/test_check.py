"""What the TURN core does for network checks: RFC 5780 CHANGE-REQUEST on Binding, the second UDP
port, and check credentials that relay only to the server itself. Fake clock, no I/O."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meet443.proto.addresses import Address, ServerPort, ToClientFrom, Transport
from meet443.proto.stun.attributes import (
    ChangeRequest,
    ChannelNumber,
    Data,
    ErrorCode,
    Lifetime,
    UnknownAttributes,
    XorMappedAddress,
    XorPeerAddress,
)
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.proto.turn.allocation import ClientFlow
from meet443.proto.turn.channeldata import ChannelData
from meet443.proto.turn.check import check_credentials, is_check_username
from meet443.proto.turn.client import (
    Answer,
    ChannelMessage,
    DataMessage,
    TurnClientSession,
    mapped_address,
    relayed_address,
)
from meet443.proto.turn.credentials import rest_credentials
from meet443.proto.turn.server import ToClient, ToPeer, TurnServer, TurnSettings

from .harness import REALM, SERVER_IP, FakeClock, TurnClient, error_code, make_server

CLIENT: Address = ("203.0.113.10", 40000)
PEER: Address = ("192.0.2.77", 6000)  # a public-style peer that ordinary credentials may reach
SECRET = "s3cret"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def check_server(clock: FakeClock, *, change_port: bool = True, **settings: object) -> TurnServer:
    server, _ = make_server(
        clock,
        secret=SECRET,
        settings=TurnSettings(
            realm=REALM,
            change_port=change_port,
            server_addresses=frozenset({SERVER_IP}),
            **settings,  # type: ignore[arg-type]
        ),
    )
    return server


def binding(transaction_id: bytes, *attributes: ChangeRequest) -> bytes:
    return bytes(Message(Method.BINDING, StunClass.REQUEST, transaction_id, list(attributes)))


class TestRfc5780ChangeRequest:
    """RFC 5780 §6.1 and §7.2: CHANGE-REQUEST on a Binding request."""

    def test_attribute_round_trip(self) -> None:
        for flags in ((False, False), (True, False), (False, True), (True, True)):
            attribute = ChangeRequest(*flags)
            assert ChangeRequest.unpack(attribute.pack(b"t" * 12), b"t" * 12) == attribute
        assert ChangeRequest(change_port=True).pack(b"") == b"\x00\x00\x00\x02"
        assert ChangeRequest(change_ip=True).pack(b"") == b"\x00\x00\x00\x04"

    def test_change_port_answers_from_the_other_port_to_the_source_only(self, clock: FakeClock) -> None:
        server = check_server(clock)
        flow = ClientFlow(Transport.UDP, CLIENT)
        outputs = server.receive(binding(b"c" * 12, ChangeRequest(change_port=True)), flow, clock.now)
        assert len(outputs) == 1
        out = outputs[0]
        assert isinstance(out, ToClientFrom)
        assert (out.port, out.address) == (ServerPort.OTHER, CLIENT)
        answer = Message.parse(out.data)
        assert answer.klass == StunClass.SUCCESS
        assert answer.get(XorMappedAddress) == XorMappedAddress(CLIENT)

    def test_no_change_is_an_ordinary_answer(self, clock: FakeClock) -> None:
        server = check_server(clock)
        flow = ClientFlow(Transport.UDP, CLIENT)
        outputs = server.receive(binding(b"n" * 12, ChangeRequest()), flow, clock.now)
        assert [type(o) for o in outputs] == [ToClient]

    @pytest.mark.parametrize(
        ("attribute", "transport", "change_port"),
        [
            (ChangeRequest(change_ip=True), Transport.UDP, True),  # one IP address only
            (ChangeRequest(change_ip=True, change_port=True), Transport.UDP, True),
            (ChangeRequest(change_port=True), Transport.TCP, True),  # a stream cannot change port
            (ChangeRequest(change_port=True), Transport.TLS, True),
            (ChangeRequest(change_port=True), Transport.UDP, False),  # no second port
        ],
    )
    def test_what_cannot_be_honoured_is_420(
        self, clock: FakeClock, attribute: ChangeRequest, transport: Transport, change_port: bool
    ) -> None:
        server = check_server(clock, change_port=change_port)
        flow = ClientFlow(transport, CLIENT, 1 if transport.is_stream else 0)
        outputs = server.receive(binding(b"e" * 12, attribute), flow, clock.now)
        assert len(outputs) == 1 and isinstance(outputs[0], ToClient)
        answer = Message.parse(outputs[0].data)
        assert error_code(answer) == 420
        assert answer.get(UnknownAttributes) == UnknownAttributes((ChangeRequest.TYPE,))

    def test_shares_the_unauthenticated_rate_limit(self, clock: FakeClock) -> None:
        server = check_server(clock)
        flow = ClientFlow(Transport.UDP, CLIENT)
        answered = sum(
            bool(
                server.receive(
                    binding(i.to_bytes(12, "big"), ChangeRequest(change_port=True)), flow, clock.now
                )
            )
            for i in range(100)
        )
        assert answered == server.settings.unauthenticated_burst
        # The other port answers from the same budget: nothing left for this source now.
        assert server.receive_on_other_port(binding(b"o" * 12), CLIENT, clock.now) == []
        assert server.counters.dropped["unauthenticated_rate"] == 101 - server.settings.unauthenticated_burst
        clock.advance(1.0)
        assert server.receive(binding(b"z" * 12, ChangeRequest(change_port=True)), flow, clock.now)


class TestOtherPort:
    """The second UDP port answers Binding requests and nothing else."""

    def test_binding_is_answered_from_the_other_port(self, clock: FakeClock) -> None:
        server = check_server(clock)
        outputs = server.receive_on_other_port(binding(b"b" * 12), CLIENT, clock.now)
        assert len(outputs) == 1 and isinstance(outputs[0], ToClientFrom)
        assert (outputs[0].port, outputs[0].address) == (ServerPort.OTHER, CLIENT)
        assert Message.parse(outputs[0].data).get(XorMappedAddress) == XorMappedAddress(CLIENT)

    def test_change_port_there_answers_from_the_main_port(self, clock: FakeClock) -> None:
        server = check_server(clock)
        outputs = server.receive_on_other_port(
            binding(b"m" * 12, ChangeRequest(change_port=True)), CLIENT, clock.now
        )
        assert len(outputs) == 1 and isinstance(outputs[0], ToClient)
        assert outputs[0].flow == ClientFlow(Transport.UDP, CLIENT)

    def test_no_turn_on_the_other_port(self, clock: FakeClock) -> None:
        server = check_server(clock)
        allocate = Message(Method.ALLOCATE, StunClass.REQUEST, b"a" * 12, [])
        assert server.receive_on_other_port(bytes(allocate), CLIENT, clock.now) == []
        assert server.receive_on_other_port(bytes(ChannelData(0x4000, b"x")), CLIENT, clock.now) == []
        assert server.receive_on_other_port(b"\x00\x01garbage", CLIENT, clock.now) == []
        assert server.receive_on_other_port(b"", CLIENT, clock.now) == []
        assert not server.allocations
        assert server.counters.dropped.keys() >= {
            "other_port_not_binding",
            "other_port_not_stun",
            "malformed_stun",
        }

    @given(st.binary(max_size=200))
    def test_random_bytes_never_crash(self, junk: bytes) -> None:
        server = check_server(FakeClock())
        for out in server.receive_on_other_port(junk, CLIENT, 1.0):
            assert isinstance(out, ToClient | ToClientFrom)


class TestCheckCredentials:
    """Check credentials allocate like any REST credential but reach only the server's own addresses."""

    def test_username_form(self, clock: FakeClock) -> None:
        username, _ = check_credentials(SECRET, "abc", clock.now)
        assert username == f"{int(clock.now) + 60}:check-abc"
        assert is_check_username(username)
        assert not is_check_username(rest_credentials(SECRET, "alice", 60, clock.now)[0])
        assert not is_check_username("check-abc")  # not REST form: a static user could be called that
        with pytest.raises(ValueError, match="token"):
            check_credentials(SECRET, "a:b", clock.now)

    def checker(
        self, server: TurnServer, clock: FakeClock, token: str, address: Address = CLIENT
    ) -> TurnClient:
        username, password = check_credentials(SECRET, token, clock.now)
        client = TurnClient(server, clock, username=username, password=password, address=address)
        reply = client.allocate(Lifetime(3600))
        assert reply.klass == StunClass.SUCCESS, reply
        assert reply.get(Lifetime) == Lifetime(server.settings.check_lifetime)
        return client

    def test_relays_only_to_other_check_allocations(self, clock: FakeClock) -> None:
        server = check_server(clock)
        a = self.checker(server, clock, "a")
        b = self.checker(server, clock, "b", address=("203.0.113.11", 40001))
        user, password = rest_credentials(SECRET, "alice", 600, clock.now)
        participant = TurnClient(server, clock, username=user, password=password, address=("203.0.113.12", 1))
        assert participant.allocate().klass == StunClass.SUCCESS
        relay_b = server.allocations[b.flow].relay
        relay_participant = server.allocations[participant.flow].relay
        # Anyone else, a participant's relay on the server, or an unused port of the server: refused.
        for peer in (PEER, relay_participant, (SERVER_IP, 50009)):
            assert error_code(a.request(Method.CREATE_PERMISSION, [XorPeerAddress(peer)])) == 403, peer
            bind = [ChannelNumber(0x4000), XorPeerAddress(peer)]
            assert error_code(a.request(Method.CHANNEL_BIND, bind)) == 403, peer
        assert not server.allocations[a.flow].permissions
        assert a.request(Method.CREATE_PERMISSION, [XorPeerAddress(relay_b)]).klass == StunClass.SUCCESS
        assert set(server.allocations[a.flow].permissions) == {SERVER_IP}
        # Permissions are per IP; the port is checked per datagram, so the participant stays out of reach.
        for peer, delivered in ((relay_b, True), (relay_participant, False), (PEER, False)):
            send = Message(Method.SEND, StunClass.INDICATION, b"s" * 12, [XorPeerAddress(peer), Data(b"x")])
            assert bool(server.receive(bytes(send), a.flow, clock.now)) is delivered, peer
        assert server.counters.dropped["check_peer_denied"] == 1
        # Once B is gone, its relay address is no longer a check relay.
        assert b.request(Method.REFRESH, [Lifetime(0)]).klass == StunClass.SUCCESS
        send = Message(Method.SEND, StunClass.INDICATION, b"t" * 12, [XorPeerAddress(relay_b), Data(b"x")])
        assert server.receive(bytes(send), a.flow, clock.now) == []

    def test_ordinary_credentials_are_not_restricted(self, clock: FakeClock) -> None:
        server = check_server(clock)
        username, password = rest_credentials(SECRET, "alice", 600, clock.now)
        client = TurnClient(server, clock, username=username, password=password)
        assert client.allocate().klass == StunClass.SUCCESS
        assert client.request(Method.CREATE_PERMISSION, [XorPeerAddress(PEER)]).klass == StunClass.SUCCESS

    def test_two_check_allocations_relay_to_each_other(self, clock: FakeClock) -> None:
        """The check's round trip: A -> relay A -> relay B -> B, and back."""
        server = check_server(clock)
        a = self.checker(server, clock, "a")
        b = self.checker(server, clock, "b", address=("203.0.113.11", 40001))
        relay_a, relay_b = server.allocations[a.flow].relay, server.allocations[b.flow].relay
        assert a.request(Method.CHANNEL_BIND, [ChannelNumber(0x4000), XorPeerAddress(relay_b)]).klass == 2
        assert b.request(Method.CHANNEL_BIND, [ChannelNumber(0x4001), XorPeerAddress(relay_a)]).klass == 2
        (to_peer,) = server.receive(bytes(ChannelData(0x4000, b"ping")), a.flow, clock.now)
        assert to_peer == ToPeer(relay_a, relay_b, b"ping")
        delivered = server.receive_from_peer(relay_b, relay_a, b"ping", clock.now)
        assert delivered is not None and delivered.flow == b.flow
        assert ChannelData.parse(delivered.data) == ChannelData(0x4001, b"ping")

    def test_check_allocations_have_their_own_cap(self, clock: FakeClock) -> None:
        server = check_server(clock, max_check_allocations=2)
        clients = [self.checker(server, clock, f"t{i}", address=("203.0.113.20", 1000 + i)) for i in range(2)]
        username, password = check_credentials(SECRET, "third", clock.now)
        third = TurnClient(
            server, clock, username=username, password=password, address=("203.0.113.20", 2000)
        )
        assert error_code(third.allocate()) == 486
        # Ordinary allocations are not affected by the check cap.
        user, pw = rest_credentials(SECRET, "alice", 600, clock.now)
        assert TurnClient(server, clock, username=user, password=pw).allocate().klass == StunClass.SUCCESS
        # Deleting one frees a place.
        assert clients[0].request(Method.REFRESH, [Lifetime(0)]).klass == StunClass.SUCCESS
        assert third.allocate().klass == StunClass.SUCCESS

    def test_refresh_cannot_outlive_the_check_lifetime(self, clock: FakeClock) -> None:
        server = check_server(clock)
        client = self.checker(server, clock, "r")
        reply = client.request(Method.REFRESH, [Lifetime(3600)])
        assert reply.get(Lifetime) == Lifetime(server.settings.check_lifetime)

    def test_expired_check_credentials_cannot_allocate(self, clock: FakeClock) -> None:
        server = check_server(clock)
        username, password = check_credentials(SECRET, "late", clock.now)
        clock.advance(61)
        client = TurnClient(server, clock, username=username, password=password)
        assert error_code(client.allocate()) == 401

    def test_server_addresses_are_normalised(self) -> None:
        settings = TurnSettings(realm="r", server_addresses=frozenset({"2001:DB8:0:0::1"}))
        assert settings.server_addresses == frozenset({"2001:db8::1"})


class TestClientSession:
    """The sans-I/O client of ``meet443 check`` against the TURN core: one in-memory round trip."""

    def exchange(self, server: TurnServer, flow: ClientFlow, data: bytes, now: float) -> Message:
        outputs = server.receive(data, flow, now)
        assert len(outputs) == 1 and isinstance(outputs[0], ToClient)
        incoming = TurnClientSession.receive(outputs[0].data)
        assert isinstance(incoming, Answer)
        return incoming.message

    def test_challenge_allocate_bind_and_relay(self, clock: FakeClock) -> None:
        server = check_server(clock)
        rng = random.Random(1)
        sessions, flows, relays = [], [], []
        for index in range(2):
            username, password = check_credentials(SECRET, f"s{index}", clock.now)
            session = TurnClientSession(username, password, rng.randbytes)
            flow = ClientFlow(Transport.UDP, ("203.0.113.30", 5000 + index))
            _, data = session.allocate()
            challenge = self.exchange(server, flow, data, clock.now)
            assert error_code(challenge) == 401
            assert session.learn_challenge(challenge)
            _, data = session.allocate()
            answer = self.exchange(server, flow, data, clock.now)
            assert session.authentic(answer)
            assert mapped_address(answer) == flow.address
            relay = relayed_address(answer)
            assert relay is not None
            sessions.append(session)
            flows.append(flow)
            relays.append(relay)
        for session, flow, peer in ((sessions[0], flows[0], relays[1]), (sessions[1], flows[1], relays[0])):
            _, data = session.channel_bind(0x4000, peer)
            assert self.exchange(server, flow, data, clock.now).klass == StunClass.SUCCESS
        (out,) = server.receive(
            TurnClientSession.channel_data(0x4000, b"hello", stream=False), flows[0], clock.now
        )
        assert isinstance(out, ToPeer)
        delivered = server.receive_from_peer(out.peer, out.relay, out.data, clock.now)
        assert delivered is not None
        assert TurnClientSession.receive(delivered.data) == ChannelMessage(0x4000, b"hello")
        _, data = sessions[0].delete()
        assert self.exchange(server, flows[0], data, clock.now).klass == StunClass.SUCCESS
        assert flows[0] not in server.allocations

    def test_a_second_401_is_not_retried(self, clock: FakeClock) -> None:
        server = check_server(clock)
        session = TurnClientSession("1:nobody", "wrong", random.Random(2).randbytes)
        flow = ClientFlow(Transport.UDP, CLIENT)
        _, data = session.allocate()
        assert session.learn_challenge(self.exchange(server, flow, data, clock.now))
        _, data = session.allocate()
        answer = self.exchange(server, flow, data, clock.now)
        assert error_code(answer) == 401
        assert not session.learn_challenge(answer)

    def test_receive_classifies(self) -> None:
        indication = Message(Method.DATA, StunClass.INDICATION, b"d" * 12, [XorPeerAddress(PEER)])
        assert TurnClientSession.receive(bytes(indication)) is None  # no DATA attribute
        indication = Message(Method.DATA, StunClass.INDICATION, b"d" * 12, [XorPeerAddress(PEER), Data(b"x")])
        assert TurnClientSession.receive(bytes(indication)) == DataMessage(PEER, b"x")
        assert TurnClientSession.receive(b"") is None
        assert TurnClientSession.receive(b"\x40\x00\x00\x09abc") is None
        assert TurnClientSession.receive(b"\xff" * 20) is None
        request = Message(Method.BINDING, StunClass.REQUEST, b"r" * 12)
        assert TurnClientSession.receive(bytes(request)) is None
        assert (
            TurnClientSession.channel_data(0x4000, b"abcde", stream=True)
            == bytes(ChannelData(0x4000, b"abcde")) + b"\x00" * 3
        )
        error = Message(Method.ALLOCATE, StunClass.ERROR, b"e" * 12, [ErrorCode(403, "Forbidden")])
        assert relayed_address(error) is None and mapped_address(error) is None
