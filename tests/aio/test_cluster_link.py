""":class:`meet443.aio.cluster.Cluster` in process, on the in-memory shared state and a fake clock:
placement, lease renewal and fencing, drain (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from meet443.aio.cluster import Cluster, NodeAddresses
from meet443.aio.node import NodeService
from meet443.aio.relay import (
    RELAY_HEADER,
    SINK_GONE,
    RoomElsewhere,
    cluster_key,
    copy_frames,
    relay_header,
)
from meet443.app import build_signaling_server
from meet443.node import NodeCore
from meet443.proto.signaling.admission import Refusal, RoomAdmission
from meet443.proto.signaling.room import SignalingLimits
from meet443.state import Lease, NodeInfo
from meet443.state.memory import MemoryState
from tests.proto.turn.harness import FakeClock, make_server

OTHER = NodeInfo(
    node_id="n2.example.test",
    node_url="https://n2.example.test",
    addresses=("10.200.120.2",),
    port=443,
    sfu_ports=(443, 3478),
    relay_ports=(50000, 50999),
    capacity=100,
)


async def no_directory(room: str, room_key: str | None, now: float) -> RoomAdmission | Refusal:
    raise AssertionError("not asked")


def link(state: MemoryState, clock: FakeClock, limits: SignalingLimits | None = None) -> Cluster:
    turn, _ = make_server(clock)
    signaling = build_signaling_server(
        turn_secret="s", public_url="https://meet.example.test", turn_port=443, limits=limits
    )
    service = NodeService(
        NodeCore(signaling, turn), None, directory=no_directory, public_url="https://meet.example.test"
    )
    return Cluster(
        state,
        service,
        node_url="https://n1.example.test",
        public_url="https://meet.example.test",
        region="eu",
        where=NodeAddresses(("10.200.120.1",), 443, (443, 3478), (49152, 65535), 100),
        turn_secret="s",
        client_ssl=ssl.create_default_context(),
        max_msg_size=1 << 17,
        clock=lambda: clock.now,
    )


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 10))


class TestPlacement:
    def test_a_new_room_is_placed_on_its_edge_then_needs_no_claim(self) -> None:
        async def scenario() -> None:
            clock = FakeClock()
            state = MemoryState(lambda: clock.now)
            cluster = link(state, clock)
            assert await cluster.route("standup", relayed=False) is None
            assert cluster.owned["standup"].lease == Lease("n1.example.test", 1)
            await state.release("standup", Lease("n1.example.test", 1))
            # Known here: no claim (a claim now would take epoch 2).
            assert await cluster.route("standup", relayed=False) is None
            assert await state.home("standup") is None

        run(scenario())

    def test_a_room_homed_elsewhere_is_relayed_there(self) -> None:
        async def scenario() -> None:
            clock = FakeClock()
            state = MemoryState(lambda: clock.now)
            cluster = link(state, clock)
            await state.claim("theirs", OTHER.node_id)
            await state.heartbeat(OTHER)
            await cluster.heartbeat()
            assert await cluster.route("theirs", relayed=False) == OTHER
            # A relayed join for it reached the wrong node: the edge must ask again.
            with pytest.raises(RoomElsewhere):
                await cluster.route("theirs", relayed=True)
            # docs/cluster.md "Failover": a room whose home is not in the registry is taken over.
            await state.claim("orphan", "gone.example.test")
            assert await cluster.route("orphan", relayed=False) is None
            assert cluster.owned["orphan"].lease.epoch == 2

        run(scenario())

    def test_a_home_newer_than_the_last_heartbeat_is_relayed_to(self) -> None:
        """A node that started after this one's last heartbeat may already hold a room: it is
        looked up, not taken for dead (the join was refused after waiting to take it over)."""

        async def scenario() -> None:
            clock = FakeClock()
            state = MemoryState(lambda: clock.now)
            cluster = link(state, clock)
            await cluster.heartbeat()
            await state.heartbeat(OTHER)
            await state.claim("fresh", OTHER.node_id)
            assert OTHER.node_id not in cluster.live
            assert await cluster.route("fresh", relayed=False) == OTHER
            assert "fresh" not in cluster.owned

        run(scenario())

    def test_a_draining_edge_places_new_rooms_on_a_live_node(self) -> None:
        async def scenario() -> None:
            clock = FakeClock()
            state = MemoryState(lambda: clock.now)
            cluster = link(state, clock)
            cluster.start(drain_timeout=60)
            try:
                await state.heartbeat(OTHER)
                await cluster.heartbeat()
                cluster.drain("test")
                await cluster.heartbeat()
                assert await cluster.route("new", relayed=False) == OTHER
                turn = cluster.service.node.turn
                assert turn is not None and turn.alternates == (("10.200.120.2", 443),)
                # Its relays may now reach the other node's media ports, and only those.
                assert turn.policy.relay_allowed("10.200.120.2", 3478)
                assert not turn.policy.relay_allowed("10.200.120.2", 22)
                # No one here: drained at the next heartbeat.
                assert cluster.drained.is_set()
            finally:
                await cluster.close()

        run(scenario())


class TestLeases:
    def test_an_expired_lease_is_taken_again_and_a_moved_room_is_dropped(self) -> None:
        async def scenario() -> None:
            clock = FakeClock()
            state = MemoryState(lambda: clock.now)
            cluster = link(state, clock)
            assert await cluster.route("kept", relayed=False) is None
            assert await cluster.route("moved", relayed=False) is None
            signaling = cluster.service.node.signaling
            # Both rooms exist here (as far as renewal is concerned).
            signaling.has_room = lambda room: True  # type: ignore[method-assign]
            clock.advance(30)  # the node paused for longer than a lease
            await state.claim("moved", OTHER.node_id)  # another node took one of them
            await cluster.renew_leases()
            assert cluster.owned["kept"].lease == Lease("n1.example.test", 2)
            assert "moved" not in cluster.owned
            assert await state.home("moved") == Lease(OTHER.node_id, 2)

        run(scenario())

    def test_an_empty_room_is_released_after_the_grace(self) -> None:
        async def scenario() -> None:
            clock = FakeClock()
            state = MemoryState(lambda: clock.now)
            cluster = link(state, clock)
            assert await cluster.route("brief", relayed=False) is None
            await cluster.renew_leases()
            assert "brief" in cluster.owned  # claimed, not made yet: kept for the grace
            clock.advance(16)
            await state.renew("brief", cluster.owned["brief"].lease)
            await cluster.renew_leases()
            assert "brief" not in cluster.owned
            assert await state.home("brief") is None

        run(scenario())

    def test_rooms_restored_at_start_are_claimed_again(self) -> None:
        async def scenario() -> None:
            clock = FakeClock()
            state = MemoryState(lambda: clock.now)
            cluster = link(state, clock)
            signaling = cluster.service.node.signaling
            signaling.room_names = lambda: ["kept", "lost"]  # type: ignore[method-assign]
            signaling.has_room = lambda room: True  # type: ignore[method-assign]
            await state.claim("kept", "n1.example.test")  # before the restart
            await state.claim("lost", OTHER.node_id)  # taken over while this node was down
            cluster.start(drain_timeout=60)
            try:
                assert await cluster.route("kept", relayed=False) is None  # served here at once
                await cluster.renew_leases()
                assert cluster.owned["kept"].lease == Lease("n1.example.test", 1)
                assert "lost" not in cluster.owned
            finally:
                await cluster.close()

        run(scenario())


class TestRelayedClientAddress:
    def test_the_home_counts_the_client_address_from_the_relay_header(self) -> None:
        """docs/cluster.md: per-address limits apply to the client, not to the edge that relays."""

        async def scenario() -> None:
            clock = FakeClock()
            clock.now = time.time()
            cluster = link(MemoryState(), clock, SignalingLimits(max_connections_per_address=1))
            app = web.Application()
            cluster.service.signaling.add_routes(app)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            url = str(server.make_url("/v1/ws"))

            def header(ip: str) -> dict[str, str]:
                return {RELAY_HEADER: relay_header(cluster_key("s"), "n1.example.test", ip, clock.now)}

            try:
                async with aiohttp.ClientSession() as http:
                    first = await http.ws_connect(url, headers=header("192.0.2.55"))
                    # All three come from 127.0.0.1 (the edge); the home counts the clients.
                    second = await http.ws_connect(url, headers=header("192.0.2.55"))
                    assert (await second.receive(timeout=5)).type is aiohttp.WSMsgType.CLOSE
                    assert second.close_code == 1013  # that client is at its limit
                    third = await http.ws_connect(url, headers=header("192.0.2.56"))
                    await third.send_str('{"type": "ping"}')
                    assert (await third.receive(timeout=5)).json()["type"] in ("pong", "error")
                    await first.close()
                    await third.close()
            finally:
                await server.close()

        run(scenario())


class TestRelay:
    def test_a_client_gone_mid_frame_is_not_a_lost_home(self) -> None:
        """When a frame from the home cannot be written to a client that left, the copy says the
        sink went: read as the home breaking off (code None), it made the edge mark a live home
        unreachable and refuse the next joins of its rooms."""

        async def scenario() -> None:
            async def home(request: web.Request) -> web.WebSocketResponse:
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                await ws.send_str('{"type": "participant-left"}')
                await ws.receive()
                return ws

            app = web.Application()
            app.router.add_get("/v1/ws", home)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            try:
                async with aiohttp.ClientSession() as http:
                    source = await http.ws_connect(f"http://{host}:{port}/v1/ws")
                    sink = await http.ws_connect(f"http://{host}:{port}/v1/ws")
                    await sink.close()
                    assert await copy_frames(source, sink) == (SINK_GONE, "")
                    await source.close()
            finally:
                await runner.cleanup()

        run(scenario())
