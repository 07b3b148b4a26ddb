"""Interop: aioice (a full ICE agent) connects to the ICE-lite mux over real UDP on 127.0.0.1.

aioice gathers host candidates from the machine's interfaces but skips loopback; the tests make it
use 127.0.0.1 only, so they need no network and no particular interface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import aioice
import aioice.ice
import pytest

from meet443.proto.ice.events import IceState, PairNominated, PairValidated
from meet443.proto.sdp.attributes import Fingerprint
from meet443.proto.sdp.negotiation import LocalTransport

from .udp_edge import UdpEdge

RTP_PACKET = bytes([0x80, 96]) + bytes(range(30))


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    yield


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


async def connect(
    controlling: bool, remote_is_lite: bool, *, wrong_password: bool = False
) -> tuple[UdpEdge, aioice.Connection]:
    edge = await UdpEdge.open()
    connection = aioice.Connection(ice_controlling=controlling, components=1, use_ipv4=True, use_ipv6=False)
    connection.remote_is_lite = remote_is_lite
    await connection.gather_candidates()
    ufrag, pwd = edge.add_session("peer", None, remote_ufrag=connection.local_username)
    connection.remote_username = ufrag
    connection.remote_password = "x" * 24 if wrong_password else pwd
    # The candidate line the SFU's answer carries, read by aioice's own SDP parser.
    local = LocalTransport(ufrag, pwd, Fingerprint("sha-256", bytes(32)), (edge.address,))
    (candidate,) = local.candidates()
    await connection.add_remote_candidate(aioice.Candidate.from_sdp(candidate.value()))
    await connection.add_remote_candidate(None)
    return edge, connection


class TestAioiceAgainstIceLite:
    def test_controlling_agent_nominates_and_data_flows_both_ways(self) -> None:
        async def test() -> None:
            edge, connection = await connect(controlling=True, remote_is_lite=True)
            try:
                await connection.connect()
                await asyncio.wait_for(edge.sessions["peer"].nominated.wait(), 5)
                session = edge.mux.sessions["peer"]
                assert session.state is IceState.CONNECTED
                assert session.selected is not None and session.selected[0] == "127.0.0.1"
                assert PairValidated("peer", session.selected) in edge.ice_events
                assert PairNominated("peer", session.selected, None) in edge.ice_events

                # aioice -> SFU: routed by the learnt 5-tuple.
                await connection.send(RTP_PACKET)
                await asyncio.wait_for(edge.sessions["peer"].media_arrived.wait(), 5)
                assert edge.sessions["peer"].media == [RTP_PACKET]
                # SFU -> aioice: sent to the selected pair.
                assert edge.send_to_session("peer", RTP_PACKET[::-1])
                assert await asyncio.wait_for(connection.recv(), 5) == RTP_PACKET[::-1]
                assert edge.mux.counters.dropped == {}
            finally:
                await connection.close()
                edge.close()

        run(test)

    def test_agent_that_starts_controlled_switches_after_487(self) -> None:
        """RFC 8445 §7.3.1.1: the lite agent answers 487 and the full agent takes control."""

        async def test() -> None:
            edge, connection = await connect(controlling=False, remote_is_lite=False)
            try:
                await connection.connect()
                await asyncio.wait_for(edge.sessions["peer"].nominated.wait(), 5)
                assert connection.ice_controlling
                assert edge.mux.counters.error_responses >= 1
                assert edge.mux.sessions["peer"].state is IceState.CONNECTED
            finally:
                await connection.close()
                edge.close()

        run(test)

    def test_wrong_password_is_refused(self) -> None:
        async def test() -> None:
            edge, connection = await connect(controlling=True, remote_is_lite=True, wrong_password=True)
            attempt = asyncio.ensure_future(connection.connect())
            try:
                while not edge.mux.counters.dropped.get("bad-integrity"):
                    await asyncio.sleep(0.01)
                # 401 carries no MESSAGE-INTEGRITY, so aioice keeps retrying until it gives up.
                assert not attempt.done()
                assert edge.mux.sessions["peer"].pairs == {}
                assert edge.mux.sessions["peer"].state is IceState.NEW
            finally:
                attempt.cancel()
                await asyncio.gather(attempt, return_exceptions=True)
                await connection.close()
                edge.close()

        run(test)
