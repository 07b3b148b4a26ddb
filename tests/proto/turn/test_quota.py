"""Quotas per participant and per address, and revoked participants (issue 10 §3). Fake clock, no I/O.

The figure of the issue: one participant holding 30 allocations in 3 s by asking for fresh
credentials before each; with the quota counted per participant it holds
``max_allocations_per_user`` (10) however many credentials it has.
"""

from __future__ import annotations

import json

import pytest

from meet443.node import NodeCore
from meet443.node import Output as NodeOutput
from meet443.proto.addresses import Address, Transport
from meet443.proto.signaling.admission import RoomAdmission, RoomMode
from meet443.proto.signaling.room import LookupRoom, SignalingServer
from meet443.proto.stun.attributes import Lifetime, XorPeerAddress
from meet443.proto.stun.message import Method, StunClass
from meet443.proto.turn.check import check_credentials
from meet443.proto.turn.credentials import rest_credentials
from meet443.proto.turn.quota import MemoryLedger
from meet443.proto.turn.server import TurnServer, TurnSettings, quota_user

from .harness import REALM, SERVER_IP, FakeClock, FakeRelayPorts, TurnClient, error_code, make_server

SECRET = "s3cret"
PEER: Address = ("192.0.2.77", 6000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def server_with(clock: FakeClock, **settings: object) -> tuple[TurnServer, MemoryLedger]:
    server, _ = make_server(
        clock,
        secret=SECRET,
        settings=TurnSettings(realm=REALM, server_addresses=frozenset({SERVER_IP}), **settings),  # type: ignore[arg-type]
        ports=FakeRelayPorts(high=50199),
    )
    assert isinstance(server.ledger, MemoryLedger)
    return server, server.ledger


def participant(server: TurnServer, clock: FakeClock, user: str, port: int, ttl: int = 3600) -> TurnClient:
    """A client with credentials freshly minted for ``user`` (as every ``ice-refresh`` did)."""
    username, password = rest_credentials(SECRET, user, ttl, clock.now)
    return TurnClient(server, clock, username=username, password=password, address=("203.0.113.9", port))


class TestQuotaPerParticipant:
    def test_quota_user(self) -> None:
        assert quota_user("1800000000:p1") == "p1"
        assert quota_user("1800000000:a:b") == "a:b"
        assert quota_user("1800000000") == "1800000000"
        assert quota_user("alice") == "alice"

    def test_fresh_credentials_buy_no_allocations(self, clock: FakeClock) -> None:
        server, _ = server_with(clock)
        granted = 0
        for i in range(30):  # 30 credentials in 3 s, one allocation each: the figure
            clock.advance(0.1)
            reply = participant(server, clock, "p1", 40000 + i).allocate()
            granted += reply.klass == StunClass.SUCCESS
        assert granted == server.settings.max_allocations_per_user == 10
        # Someone else is not affected.
        assert participant(server, clock, "p2", 41000).allocate().klass == StunClass.SUCCESS

    def test_a_deleted_allocation_frees_its_place(self, clock: FakeClock) -> None:
        server, ledger = server_with(clock, max_allocations_per_user=1)
        first = participant(server, clock, "p1", 40000)
        assert first.allocate().klass == StunClass.SUCCESS
        assert error_code(participant(server, clock, "p1", 40001).allocate()) == 486
        assert first.request(Method.REFRESH, [Lifetime(0)]).klass == StunClass.SUCCESS
        assert len(ledger) == 0
        assert participant(server, clock, "p1", 40002).allocate().klass == StunClass.SUCCESS


class TestRevocation:
    """A participant that left its meeting: allocations gone, credentials refused; others untouched."""

    def test_revoke_deletes_and_refuses(self, clock: FakeClock) -> None:
        server, ledger = server_with(clock)
        gone = [participant(server, clock, "p1", 40000 + i) for i in range(3)]
        stays = participant(server, clock, "p2", 41000)
        for client in [*gone, stays]:
            assert client.allocate().klass == StunClass.SUCCESS
        relays = [server.allocations[c.flow].relay for c in gone]

        server.revoke("p1", clock.now + 3600)

        assert [c.flow in server.allocations for c in gone] == [False, False, False]
        assert not any(r in server.by_relay for r in relays)
        assert stays.flow in server.allocations
        # Refreshing what it held, and allocating anew (with old or freshly minted credentials): 401.
        assert error_code(gone[0].request(Method.REFRESH, [Lifetime(600)])) == 401
        assert error_code(gone[1].allocate()) == 401
        assert error_code(participant(server, clock, "p1", 40009).allocate()) == 401
        assert stays.request(Method.CREATE_PERMISSION, [XorPeerAddress(PEER)]).klass == StunClass.SUCCESS
        assert server.counters.auth_failures >= 3

        # Once every credential handed to p1 has expired, the revocation is forgotten.
        clock.advance(3601)
        server.handle_timer(clock.now)
        assert not ledger.is_revoked("p1", clock.now)
        assert ledger.held("user:p1") == 0

    def test_a_participant_still_in_its_meeting_keeps_a_long_call(self, clock: FakeClock) -> None:
        """Expired REST usernames keep the allocation they hold; revoking someone else cuts nothing."""
        server, _ = server_with(clock)
        client = participant(server, clock, "p1", 40000, ttl=60)
        assert client.allocate().klass == StunClass.SUCCESS
        for _ in range(12):  # two hours, refreshing every ten minutes, the credential long expired
            clock.advance(600)
            server.revoke("p9", clock.now + 60)
            assert client.request(Method.REFRESH, [Lifetime(900)]).klass == StunClass.SUCCESS
            server.handle_timer(clock.now)
        assert client.flow in server.allocations

    def test_later_revocation_extends(self) -> None:
        ledger = MemoryLedger()
        ledger.revoke("p", 100.0)
        ledger.revoke("p", 50.0)
        assert ledger.is_revoked("p", 99.0)
        ledger.expire(100.0)
        assert not ledger.is_revoked("p", 99.0)
        assert len(ledger) == 0


class TestCheckPoolShare:
    """The network-check pool (100 for the whole server) has a share per source address."""

    def checker(self, server: TurnServer, clock: FakeClock, token: str, address: Address) -> TurnClient:
        username, password = check_credentials(SECRET, token, clock.now)
        # Over TCP: the unauthenticated answers a UDP source may get are rate limited.
        return TurnClient(
            server, clock, username, password, address, transport=Transport.TCP, connection=address[1]
        )

    def test_two_addresses_cannot_fill_the_pool(self, clock: FakeClock) -> None:
        server, ledger = server_with(clock)
        held = {}
        for host in ("203.0.113.1", "2001:db8:1:2::1"):
            held[host] = sum(
                self.checker(server, clock, f"{host}-{i}".replace(":", "."), (host, 1000 + i))
                .allocate()
                .klass
                == StunClass.SUCCESS
                for i in range(60)
            )
        assert held == {"203.0.113.1": 20, "2001:db8:1:2::1": 20}
        # The same /64 is one address; a third address still gets its checks.
        assert error_code(self.checker(server, clock, "same64", ("2001:db8:1:2::99", 1)).allocate()) == 486
        assert self.checker(server, clock, "third", ("198.51.100.7", 1)).allocate().klass == StunClass.SUCCESS
        assert ledger.held("check") == 41


class TestWithSignaling:
    """The two cores composed by the node core: the signaling core's :class:`RevokeTurn` goes to
    :meth:`TurnServer.revoke`; credentials are minted as ``app.py`` mints them."""

    def test_kicked_participant_loses_turn_at_once(self, clock: FakeClock) -> None:
        turn, _ = server_with(clock)
        minted: list[tuple[str, str]] = []

        def ice_servers(participant_id: str, now: float, rtts: object) -> tuple[list[dict[str, object]], int]:
            minted.append(rest_credentials(SECRET, participant_id, 3600, now))
            return [{"urls": [], "username": minted[-1][0], "credential": minted[-1][1]}], 3600

        tokens = iter(range(100))
        signaling = SignalingServer(ice_servers=ice_servers, token=lambda n: f"{next(tokens):0{2 * n}x}")
        node = NodeCore(signaling, turn)

        def route(outputs: list[NodeOutput]) -> None:
            for output in outputs:
                if isinstance(output, LookupRoom):
                    admission = RoomAdmission(output.room, RoomMode.NORMAL, False, None, False)
                    route(node.admit(output.conn, admission, clock.now))

        def join(conn: int, name: str) -> str:
            route(node.connect(conn, "192.0.2.1", clock.now))
            route(
                node.receive_signaling(
                    conn, json.dumps({"type": "join", "v": 1, "room": "r", "displayName": name}), clock.now
                )
            )
            return minted[-1][0].partition(":")[2]

        join(1, "Host")
        guest = join(2, "Guest")
        # The guest asks for fresh credentials 30 times in 3 s and allocates with each it gets.
        clients = []
        for i in range(30):
            clock.advance(0.1)
            route(node.receive_signaling(2, b'{"type": "ice-refresh"}', clock.now))
            username, password = minted[-1]
            clients.append(TurnClient(turn, clock, username, password, ("203.0.113.9", 40000 + i)))
        held = sum(c.allocate().klass == StunClass.SUCCESS for c in clients)
        assert (len(minted), held) == (2 + 3, 10)  # was (2 + 30, 30)

        route(node.receive_signaling(1, json.dumps({"type": "kick", "participantId": guest}), clock.now))
        assert not any(c.flow in turn.allocations for c in clients)
        assert error_code(clients[-1].allocate()) == 401
        assert error_code(clients[0].request(Method.REFRESH)) == 401
