"""TurnServer behaviour, RFC section by RFC section, on a fake clock with no I/O."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meet443.proto.addresses import Transport
from meet443.proto.stun.attributes import (
    AdditionalAddressFamily,
    AddressErrorCode,
    AlternateServer,
    ChannelNumber,
    Data,
    DontFragment,
    EvenPort,
    Lifetime,
    MessageIntegritySha256,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    UnknownAttribute,
    UnknownAttributes,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.proto.turn.channeldata import ChannelData
from meet443.proto.turn.credentials import rest_credentials
from meet443.proto.turn.quota import MemoryLedger
from meet443.proto.turn.server import ToClient, ToPeer, TurnSettings

from .harness import (
    REALM,
    SERVER_IP,
    FakeClock,
    FakeRelayPorts,
    TurnClient,
    error_code,
    is_signed_with,
    make_server,
)

PEER = ("192.0.2.77", 6000)  # TEST-NET-1: a public-style peer the deny list lets through


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def allocated(clock: FakeClock, **kwargs: object) -> tuple[TurnClient, FakeRelayPorts]:
    server, ports = make_server(clock)
    client = TurnClient(server, clock, **kwargs)  # type: ignore[arg-type]
    reply = client.allocate()
    assert reply.klass == StunClass.SUCCESS, reply
    return client, ports


def relay_of(client: TurnClient) -> tuple[str, int]:
    return client.server.allocations[client.flow].relay


class TestRfc8489Binding:
    """RFC 8489 §6.3.1: Binding answered with XOR-MAPPED-ADDRESS, no credentials needed."""

    def test_reflexive_address(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        client = TurnClient(server, clock)
        reply = client.exchange(Message(Method.BINDING, StunClass.REQUEST, b"b" * 12), sign=False)
        assert reply.klass == StunClass.SUCCESS
        assert reply.get(XorMappedAddress) == XorMappedAddress(client.flow.address)

    def test_rate_limited_per_source(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        client = TurnClient(server, clock)
        answered = sum(
            bool(client.send_raw(bytes(Message(Method.BINDING, StunClass.REQUEST, i.to_bytes(12, "big")))))
            for i in range(200)
        )
        assert answered == TurnSettings(realm="x").unauthenticated_burst
        other = TurnClient(server, clock, address=("203.0.113.99", 1))
        assert other.send_raw(bytes(Message(Method.BINDING, StunClass.REQUEST, b"o" * 12)))
        clock.advance(1.0)
        assert client.send_raw(bytes(Message(Method.BINDING, StunClass.REQUEST, b"z" * 12)))


class TestRfc8489Section9LongTermCredentials:
    def test_challenge_has_realm_and_nonce(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        client = TurnClient(server, clock)
        reply = client.exchange(
            Message(Method.ALLOCATE, StunClass.REQUEST, b"a" * 12, [RequestedTransport(17)]), sign=False
        )
        assert error_code(reply) == 401
        assert reply.get(Realm) == Realm(REALM)
        assert reply.get(Nonce) is not None

    def test_stream_clients_are_always_answered(self, clock: FakeClock) -> None:
        """The unauthenticated limit guards against UDP reflection; a TCP client must never hang."""
        server, _ = make_server(clock)
        udp = TurnClient(server, clock)
        request = Message(Method.ALLOCATE, StunClass.REQUEST, b"x" * 12, [RequestedTransport(17)])
        answered = sum(bool(udp.send_raw(request.encode())) for _ in range(100))
        assert answered == TurnSettings(realm=REALM).unauthenticated_burst
        tcp = TurnClient(server, clock, transport=Transport.TCP, connection=1)
        assert all(tcp.send_raw(request.encode()) for _ in range(100))

    def test_wrong_password_is_401_and_counted(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        client = TurnClient(server, clock, password="wrong")
        assert error_code(client.allocate()) == 401
        assert server.counters.auth_failures == 2  # the request and its one retry
        assert not server.allocations

    def test_unknown_user_is_401(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        assert error_code(TurnClient(server, clock, username="mallory").allocate()) == 401

    def test_missing_nonce_is_400(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        client = TurnClient(server, clock)
        message = Message(
            Method.ALLOCATE,
            StunClass.REQUEST,
            b"n" * 12,
            [RequestedTransport(17), Username("alice"), Realm(REALM)],
        )
        assert error_code(client.exchange(message)) == 400

    def test_stale_nonce_is_438_then_recovers(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        client = TurnClient(server, clock)
        assert client.allocate().klass == StunClass.SUCCESS
        clock.advance(server.settings.nonce_lifetime + 1)
        stale = Message(
            Method.REFRESH,
            StunClass.REQUEST,
            client.transaction_id(),
            [Username("alice"), Realm(REALM), Nonce(client.nonce or b"")],
        )
        assert error_code(client.exchange(stale)) == 438
        assert client.request(Method.REFRESH).klass == StunClass.SUCCESS

    def test_nonce_from_another_address_is_stale(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        first = TurnClient(server, clock)
        first.allocate()
        thief = TurnClient(server, clock, address=("203.0.113.11", 40000))
        thief.nonce, thief.realm = first.nonce, first.realm
        assert error_code(thief.request(Method.ALLOCATE, [RequestedTransport(17)], retry=False)) == 438

    def test_sha256_integrity_is_answered_in_kind(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        client = TurnClient(server, clock)
        reply = client.request(Method.ALLOCATE, [RequestedTransport(17)], sha256=True)
        assert reply.klass == StunClass.SUCCESS
        assert reply.get(MessageIntegritySha256) is not None
        assert reply.check_integrity(client.key)

    def test_rest_credentials(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        username, password = rest_credentials("s3cret", "carol", 3600, clock.now)
        client = TurnClient(server, clock, username=username, password=password)
        reply = client.allocate()
        assert reply.klass == StunClass.SUCCESS
        assert is_signed_with(reply, client.key)

    def test_expired_rest_username_cannot_allocate_but_keeps_its_allocation(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        username, password = rest_credentials("s3cret", "carol", 60, clock.now)
        client = TurnClient(server, clock, username=username, password=password)
        assert client.allocate().klass == StunClass.SUCCESS
        clock.advance(120)
        # The long call goes on: refresh, permissions and channels still work on its allocation.
        assert client.request(Method.REFRESH, [Lifetime(600)]).klass == StunClass.SUCCESS
        assert client.request(Method.CREATE_PERMISSION, [XorPeerAddress(PEER)]).klass == StunClass.SUCCESS
        # But the same username cannot make a new allocation from another 5-tuple.
        other = TurnClient(server, clock, username=username, password=password, address=("203.0.113.12", 1))
        assert error_code(other.allocate()) == 401


class TestRfc8656Section7Allocate:
    def test_success_attributes(self, clock: FakeClock) -> None:
        server, ports = make_server(clock)
        client = TurnClient(server, clock)
        reply = client.allocate(DontFragment())
        assert reply.klass == StunClass.SUCCESS
        relay = reply.get(XorRelayedAddress)
        assert relay is not None and relay.address[0] == SERVER_IP and relay.address[1] in ports.open_ports
        assert reply.get(Lifetime) == Lifetime(600)
        assert reply.get(XorMappedAddress) == XorMappedAddress(client.flow.address)
        assert is_signed_with(reply, client.key)

    @pytest.mark.parametrize(("asked", "granted"), [(0, 600), (60, 600), (1200, 1200), (99999, 3600)])
    def test_lifetime_bounds(self, clock: FakeClock, asked: int, granted: int) -> None:
        server, _ = make_server(clock)
        reply = TurnClient(server, clock).allocate(Lifetime(asked))
        assert reply.get(Lifetime) == Lifetime(granted)

    def test_retransmission_gets_the_original_response(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        client = TurnClient(server, clock)
        client.allocate()
        message = Message(
            Method.ALLOCATE,
            StunClass.REQUEST,
            b"r" * 12,
            [RequestedTransport(17), Username("alice"), Realm(REALM), Nonce(client.nonce or b"")],
        )
        data = message.encode(client.key)
        client.server.allocations.clear()  # a fresh server state for this transaction
        client.server.by_relay.clear()
        client.server.ledger = MemoryLedger()
        first = client.send_raw(data)
        clock.advance(1.5)
        again = client.send_raw(data)
        assert first == again
        assert Message.parse(first[0]).klass == StunClass.SUCCESS

    def test_second_allocate_is_437(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        assert error_code(client.allocate()) == 437

    def test_missing_requested_transport_is_400(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        assert error_code(TurnClient(server, clock).request(Method.ALLOCATE)) == 400

    def test_tcp_relay_is_442(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        assert error_code(TurnClient(server, clock).request(Method.ALLOCATE, [RequestedTransport(6)])) == 442

    def test_unknown_comprehension_required_is_420(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        client = TurnClient(server, clock)
        reply = client.exchange(
            Message(
                Method.ALLOCATE,
                StunClass.REQUEST,
                b"u" * 12,
                [RequestedTransport(17), UnknownAttribute(0x7F01, b""), UnknownAttribute(0xBF01, b"")],
            ),
            sign=False,
        )
        assert error_code(reply) == 420
        assert reply.get(UnknownAttributes) == UnknownAttributes((0x7F01,))

    def test_unknown_method_is_400(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        client = TurnClient(server, clock)
        assert error_code(client.exchange(Message(0x00A, StunClass.REQUEST, b"m" * 12), sign=False)) == 400

    def test_quota_per_user_is_486(self, clock: FakeClock) -> None:
        server, _ = make_server(clock, settings=TurnSettings(realm=REALM, max_allocations_per_user=2))
        codes = [
            error_code(TurnClient(server, clock, address=("203.0.113.20", 1000 + i)).allocate())
            for i in range(3)
        ]
        assert codes == [None, None, 486]
        assert TurnClient(server, clock, "bob", "builder", address=("203.0.113.21", 1)).allocate().klass == 2

    def test_total_quota_is_486(self, clock: FakeClock) -> None:
        server, _ = make_server(clock, settings=TurnSettings(realm=REALM, max_allocations=1))
        assert TurnClient(server, clock).allocate().klass == StunClass.SUCCESS
        assert (
            error_code(TurnClient(server, clock, "bob", "builder", address=("203.0.113.21", 1)).allocate())
            == 486
        )

    def test_no_port_left_is_508(self, clock: FakeClock) -> None:
        server, _ = make_server(clock, ports=FakeRelayPorts(low=50000, high=50000))
        assert TurnClient(server, clock).allocate().klass == StunClass.SUCCESS
        assert (
            error_code(TurnClient(server, clock, "bob", "builder", address=("203.0.113.21", 1)).allocate())
            == 508
        )

    def test_ipv6_without_ipv6_relay_is_440(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        assert error_code(TurnClient(server, clock).allocate(RequestedAddressFamily(2))) == 440
        assert (
            error_code(
                TurnClient(server, clock, address=("203.0.113.2", 2)).allocate(RequestedAddressFamily(9))
            )
            == 440
        )

    def test_ipv6_relay_when_enabled(self, clock: FakeClock) -> None:
        server, _ = make_server(clock, settings=TurnSettings(realm=REALM, ipv6_relay=True))
        reply = TurnClient(server, clock).allocate(RequestedAddressFamily(2))
        relay = reply.get(XorRelayedAddress)
        assert relay is not None and relay.address[0] == "2001:db8::1"

    def test_additional_family_without_ipv6_relay_reports_address_error(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        reply = TurnClient(server, clock).allocate(AdditionalAddressFamily(2))
        assert reply.klass == StunClass.SUCCESS
        assert reply.get(AddressErrorCode) == AddressErrorCode(2, 440, "Address Family not Supported")

    @pytest.mark.parametrize(
        "attributes",
        [
            [AdditionalAddressFamily(1)],
            [AdditionalAddressFamily(2), RequestedAddressFamily(1)],
            [ReservationToken(b"12345678"), EvenPort(False)],
        ],
    )
    def test_bad_combinations_are_400(self, clock: FakeClock, attributes: list[object]) -> None:
        server, _ = make_server(clock)
        assert error_code(TurnClient(server, clock).allocate(*attributes)) == 400  # type: ignore[arg-type]

    def test_even_port_with_reservation(self, clock: FakeClock) -> None:
        server, ports = make_server(clock)
        reply = TurnClient(server, clock).allocate(EvenPort(True))
        relay = reply.get(XorRelayedAddress)
        token = reply.get(ReservationToken)
        assert relay is not None and token is not None and relay.address[1] % 2 == 0
        assert relay.address[1] + 1 in ports.open_ports
        second = TurnClient(server, clock, "bob", "builder", address=("203.0.113.30", 5)).allocate(token)
        relay2 = second.get(XorRelayedAddress)
        assert relay2 is not None and relay2.address[1] == relay.address[1] + 1
        # A token works once.
        third = TurnClient(server, clock, "bob", "builder", address=("203.0.113.31", 5)).allocate(token)
        assert error_code(third) == 508

    def test_unused_reservation_is_released(self, clock: FakeClock) -> None:
        server, ports = make_server(clock)
        reply = TurnClient(server, clock).allocate(EvenPort(True))
        relay = reply.get(XorRelayedAddress)
        assert relay is not None
        clock.advance(31)
        server.handle_timer(clock.now)
        assert relay.address[1] + 1 not in ports.open_ports


class TestRfc8656Section7Refresh:
    def test_refresh_extends_and_zero_deletes(self, clock: FakeClock) -> None:
        client, ports = allocated(clock)
        relay = relay_of(client)
        clock.advance(500)
        assert client.request(Method.REFRESH, [Lifetime(600)]).get(Lifetime) == Lifetime(600)
        clock.advance(500)
        client.server.handle_timer(clock.now)
        assert client.flow in client.server.allocations
        reply = client.request(Method.REFRESH, [Lifetime(0)])
        assert reply.get(Lifetime) == Lifetime(0)
        assert client.flow not in client.server.allocations
        assert relay in ports.closed

    def test_refresh_without_allocation_is_437(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        assert error_code(TurnClient(server, clock).request(Method.REFRESH)) == 437

    def test_refresh_by_another_user_is_441(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        intruder = TurnClient(client.server, clock, "bob", "builder", address=client.flow.address)
        assert error_code(intruder.request(Method.REFRESH)) == 441

    def test_refresh_with_other_family_is_443(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        assert error_code(client.request(Method.REFRESH, [RequestedAddressFamily(2)])) == 443

    def test_expiry(self, clock: FakeClock) -> None:
        client, ports = allocated(clock)
        relay = relay_of(client)
        clock.advance(599)
        client.server.handle_timer(clock.now)
        assert client.flow in client.server.allocations
        clock.advance(2)
        client.server.handle_timer(clock.now)
        assert client.flow not in client.server.allocations and relay in ports.closed

    def test_udp_index_follows_allocations(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        assert client.server.udp_allocations == {client.flow.address: client.server.allocations[client.flow]}
        client.request(Method.REFRESH, [Lifetime(0)])
        assert client.server.udp_allocations == {}

    def test_stream_close_deletes(self, clock: FakeClock) -> None:
        client, ports = allocated(clock, transport=Transport.TCP, connection=9)
        client.server.connection_closed(client.flow, clock.now)
        assert not client.server.allocations and ports.closed


class TestRfc8656Section9Permissions:
    def test_peer_datagram_needs_a_permission(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        relay = relay_of(client)
        assert client.server.receive_from_peer(relay, PEER, b"hi", clock.now) is None
        assert client.request(Method.CREATE_PERMISSION, [XorPeerAddress(PEER)]).klass == StunClass.SUCCESS
        out = client.server.receive_from_peer(relay, (PEER[0], 9999), b"hi", clock.now)
        assert out is not None  # permissions are per IP, any port
        indication = Message.parse(out.data)
        assert (indication.method, indication.klass) == (Method.DATA, StunClass.INDICATION)
        assert indication.get(XorPeerAddress) == XorPeerAddress((PEER[0], 9999))
        assert indication.get(Data) == Data(b"hi")

    def test_permission_expires_after_300s(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        client.request(Method.CREATE_PERMISSION, [XorPeerAddress(PEER)])
        clock.advance(299)
        assert client.server.receive_from_peer(relay_of(client), PEER, b"x", clock.now) is not None
        clock.advance(2)
        client.server.handle_timer(clock.now)
        assert client.server.receive_from_peer(relay_of(client), PEER, b"x", clock.now) is None

    @pytest.mark.parametrize("peer", ["169.254.169.254", "10.0.0.1", "127.0.0.1", "::ffff:10.0.0.1"])
    def test_denied_peer_is_403(self, clock: FakeClock, peer: str) -> None:
        client, _ = allocated(clock)
        reply = client.request(Method.CREATE_PERMISSION, [XorPeerAddress((peer, 80))])
        assert error_code(reply) in (403, 443)
        assert not client.server.allocations[client.flow].permissions

    def test_all_or_nothing(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        reply = client.request(
            Method.CREATE_PERMISSION, [XorPeerAddress(PEER), XorPeerAddress(("10.1.2.3", 1))]
        )
        assert error_code(reply) == 403
        assert not client.server.allocations[client.flow].permissions

    def test_family_mismatch_is_443(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        assert (
            error_code(client.request(Method.CREATE_PERMISSION, [XorPeerAddress(("2001:db8::9", 1))])) == 443
        )

    def test_missing_peer_is_400(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        assert error_code(client.request(Method.CREATE_PERMISSION)) == 400

    def test_operator_allowed_range(self, clock: FakeClock) -> None:
        server, _ = make_server(clock, allow=["10.1.0.0/16"])
        client = TurnClient(server, clock)
        client.allocate()
        assert client.request(Method.CREATE_PERMISSION, [XorPeerAddress(("10.1.2.3", 1))]).klass == 2
        assert error_code(client.request(Method.CREATE_PERMISSION, [XorPeerAddress(("10.2.0.1", 1))])) == 403

    def test_own_address_only_relay_and_main_ports(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        assert client.request(Method.CREATE_PERMISSION, [XorPeerAddress((SERVER_IP, 1))]).klass == 2
        for port, relayed in ((50005, True), (3478, True), (22, False)):
            send = Message(
                Method.SEND, StunClass.INDICATION, b"s" * 12, [XorPeerAddress((SERVER_IP, port)), Data(b"x")]
            )
            outputs = client.server.receive(bytes(send), client.flow, clock.now)
            assert bool(outputs) is relayed, port


class TestRfc8656Section10SendAndData:
    def test_send_indication(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        client.request(Method.CREATE_PERMISSION, [XorPeerAddress(PEER)])
        send = Message(Method.SEND, StunClass.INDICATION, b"s" * 12, [XorPeerAddress(PEER), Data(b"payload")])
        outputs = client.server.receive(bytes(send), client.flow, clock.now)
        assert outputs == [ToPeer(relay_of(client), PEER, b"payload")]
        assert client.server.counters.packets_relayed[Transport.UDP] == 1

    def test_send_without_permission_is_dropped(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        send = Message(Method.SEND, StunClass.INDICATION, b"s" * 12, [XorPeerAddress(PEER), Data(b"payload")])
        assert client.server.receive(bytes(send), client.flow, clock.now) == []
        assert client.server.counters.dropped["no_permission"] == 1

    def test_send_without_allocation_is_dropped(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        send = Message(Method.SEND, StunClass.INDICATION, b"s" * 12, [XorPeerAddress(PEER), Data(b"x")])
        assert server.receive(bytes(send), TurnClient(server, clock).flow, clock.now) == []


class TestRfc8656Section11Channels:
    def bind(self, client: TurnClient, number: int = 0x4001, peer: tuple[str, int] = PEER) -> Message:
        return client.request(Method.CHANNEL_BIND, [ChannelNumber(number), XorPeerAddress(peer)])

    def test_channel_data_both_ways(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        assert self.bind(client).klass == StunClass.SUCCESS
        outputs = client.server.receive(bytes(ChannelData(0x4001, b"media")), client.flow, clock.now)
        assert outputs == [ToPeer(relay_of(client), PEER, b"media")]
        back = client.server.receive_from_peer(relay_of(client), PEER, b"reply", clock.now)
        assert back == ToClient(client.flow, bytes(ChannelData(0x4001, b"reply")))

    def test_stream_transports_pad_channel_data(self, clock: FakeClock) -> None:
        client, _ = allocated(clock, transport=Transport.TLS, connection=3)
        self.bind(client)
        back = client.server.receive_from_peer(relay_of(client), PEER, b"odd", clock.now)
        assert back is not None and back.data == ChannelData(0x4001, b"odd").padded()
        padded = ChannelData(0x4001, b"abcde").padded()
        assert client.server.receive(padded, client.flow, clock.now) == [
            ToPeer(relay_of(client), PEER, b"abcde")
        ]

    @given(payload=st.binary(max_size=300), pad=st.integers(0, 3), number=st.integers(0x4000, 0x7FFF))
    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
    def test_fast_path_agrees_with_the_codec(
        self, clock: FakeClock, payload: bytes, pad: int, number: int
    ) -> None:
        client, _ = allocated(clock)
        self.bind(client, number)
        data = bytes(ChannelData(number, payload)) + b"\x00" * pad
        outputs = client.server.receive(data, client.flow, clock.now)
        assert outputs == [ToPeer(relay_of(client), PEER, ChannelData.parse(data).data)]

    def test_channel_number_out_of_range_is_400(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        assert error_code(self.bind(client, 0x3FFF)) == 400
        assert error_code(self.bind(client, 0x8000)) == 400
        assert self.bind(client, 0x7FFF).klass == StunClass.SUCCESS  # RFC 5766 §11's top, as coturn

    def test_rebinding_rules(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        assert self.bind(client, 0x4001, PEER).klass == StunClass.SUCCESS
        assert self.bind(client, 0x4001, PEER).klass == StunClass.SUCCESS  # refresh
        assert error_code(self.bind(client, 0x4001, ("192.0.2.78", 1))) == 400
        assert error_code(self.bind(client, 0x4002, PEER)) == 400

    def test_channel_expiry_and_quarantine(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        self.bind(client)
        client.request(Method.REFRESH, [Lifetime(3600)])
        for _ in range(2):  # keep the permission alive, not the channel
            clock.advance(290)
            client.request(Method.CREATE_PERMISSION, [XorPeerAddress(PEER)])
        clock.advance(30)  # 610 s after the bind
        client.server.handle_timer(clock.now)
        assert client.server.receive(bytes(ChannelData(0x4001, b"x")), client.flow, clock.now) == []
        # Data now arrives as a Data indication.
        out = client.server.receive_from_peer(relay_of(client), PEER, b"x", clock.now)
        assert out is not None and Message.parse(out.data).method == Method.DATA
        assert error_code(self.bind(client, 0x4001, ("192.0.2.78", 1))) == 400  # quarantined number
        clock.advance(301)
        client.server.handle_timer(clock.now)
        assert self.bind(client, 0x4001, ("192.0.2.78", 1)).klass == StunClass.SUCCESS

    def test_unbound_channel_is_dropped(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        assert client.server.receive(bytes(ChannelData(0x4444, b"x")), client.flow, clock.now) == []


class TestQuotas:
    def test_allocation_bandwidth(self, clock: FakeClock) -> None:
        server, _ = make_server(clock, settings=TurnSettings(realm=REALM, allocation_bandwidth=1000))
        client = TurnClient(server, clock)
        client.allocate()
        client.request(Method.CHANNEL_BIND, [ChannelNumber(0x4001), XorPeerAddress(PEER)])
        sent = sum(
            bool(server.receive(bytes(ChannelData(0x4001, b"x" * 100)), client.flow, clock.now))
            for _ in range(50)
        )
        assert sent == 20  # a burst of twice the per-second rate
        clock.advance(1)
        assert server.receive(bytes(ChannelData(0x4001, b"x" * 100)), client.flow, clock.now)


class TestMalformedInput:
    @given(st.binary(max_size=200))
    @settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_random_bytes_never_crash_or_disturb(self, clock: FakeClock, junk: bytes) -> None:
        client, _ = allocated(clock)
        client.request(Method.CHANNEL_BIND, [ChannelNumber(0x4001), XorPeerAddress(PEER)])
        client.server.receive(junk, client.flow, clock.now)
        client.server.receive(junk, client.flow._replace(address=("203.0.113.66", 1)), clock.now)
        client.server.receive_from_peer(relay_of(client), PEER, junk, clock.now)
        assert client.server.receive(bytes(ChannelData(0x4001, b"ok")), client.flow, clock.now)

    def test_truncated_channel_data(self, clock: FakeClock) -> None:
        client, _ = allocated(clock)
        client.request(Method.CHANNEL_BIND, [ChannelNumber(0x4001), XorPeerAddress(PEER)])
        assert client.server.receive(struct.pack("!HH", 0x4001, 10) + b"abc", client.flow, clock.now) == []
        assert client.server.counters.dropped["malformed_channel_data"] == 1

    def test_responses_and_non_stun_are_dropped(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        flow = TurnClient(server, clock).flow
        assert server.receive(bytes(Message(1, StunClass.SUCCESS, b"x" * 12)), flow, clock.now) == []
        assert server.receive(b"\x16\x03\x01", flow, clock.now) == []
        assert server.receive(b"", flow, clock.now) == []


class TestRfc8656Section7TryAlternate:
    """docs/cluster.md "Drain": a draining node answers new Allocates with 300 and ALTERNATE-SERVER."""

    def test_new_allocations_go_to_the_alternate_of_their_family(self, clock: FakeClock) -> None:
        server, _ = make_server(clock)
        kept = TurnClient(server, clock, address=("203.0.113.10", 40001))
        assert kept.allocate().klass == StunClass.SUCCESS
        server.alternates = (("2001:db8::9", 443), ("192.0.2.9", 443))
        client = TurnClient(server, clock)
        reply = client.allocate()
        assert error_code(reply) == 300
        alternate = reply.get(AlternateServer)
        assert alternate is not None and alternate.address == ("192.0.2.9", 443)
        assert is_signed_with(reply, client.key)  # authenticated: no one can forge the redirect
        assert client.flow not in server.allocations
        assert server.counters.allocations_redirected == 1
        # What it already holds goes on: its allocation refreshes.
        assert kept.request(Method.REFRESH, [Lifetime(600)]).klass == StunClass.SUCCESS
        # No alternate of the client's family: it is served here.
        server.alternates = (("2001:db8::9", 443),)
        assert (
            TurnClient(server, clock, address=("203.0.113.11", 40000)).allocate().klass == StunClass.SUCCESS
        )
