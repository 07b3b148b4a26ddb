"""The shared-state interface (meet443.state): one suite, run against memory and a real redis-server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from meet443.exceptions import StateUnavailable
from meet443.state import Lease, NodeInfo, SharedState
from meet443.state.memory import MemoryState
from meet443.state.redis_backend import RedisState, redact_url
from tests.aio.test_cluster import write_certificate
from tests.redis_server import RedisServer, running_redis


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


Factory = Callable[[], SharedState]


@pytest.fixture(params=["memory", "redis"])
def make_state(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Factory]:
    """Clients of one store: every call is another node's client of the same state."""
    if request.param == "memory":
        shared = MemoryState()
        yield lambda: shared
        return
    redis_server.command(b"FLUSHALL")
    yield lambda: RedisState(redis_server.url)


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 20))


def node(name: str, **fields: object) -> NodeInfo:
    defaults: dict[str, object] = {
        "node_url": f"https://{name}.example.test",
        "addresses": ("192.0.2.1",),
        "port": 443,
        "sfu_ports": (443, 3478),
        "relay_ports": (49152, 65535),
        "capacity": 100,
    }
    defaults.update(fields)
    return NodeInfo(node_id=name, **defaults)  # type: ignore[arg-type]


class TestPlacement:
    def test_concurrent_claims_agree_on_one_home(self, make_state: Factory) -> None:
        async def scenario() -> None:
            clients = [make_state() for _ in range(3)]
            for trial in range(50):
                room = f"race-{trial}"
                leases = await asyncio.gather(*(c.claim(room, f"n{i}") for i, c in enumerate(clients)))
                assert len(set(leases)) == 1, leases
                assert leases[0].epoch == 1
            for c in clients:
                await c.close()

        run(scenario())

    def test_every_claim_takes_the_next_epoch(self, make_state: Factory) -> None:
        async def scenario() -> None:
            state = make_state()
            first = await state.claim("standup", "n1")
            assert await state.home("standup") == first == Lease("n1", 1)
            await state.release("standup", Lease("n1", 99))  # not the room's lease: ignored
            assert await state.home("standup") == first
            await state.release("standup", first)
            assert await state.home("standup") is None
            second = await state.claim("standup", "n2")
            assert second == Lease("n2", 2)
            # A node that paused with the old lease can neither renew nor release the moved room.
            assert not await state.renew("standup", first)
            assert await state.renew("standup", second)
            await state.close()

        run(scenario())

    def test_a_lease_not_renewed_expires(self, make_state: Factory) -> None:
        async def scenario() -> None:
            state = make_state()
            if isinstance(state, MemoryState):
                clock = FakeClock()
                state = MemoryState(clock)
                lease = await state.claim("r", "n1", lease_seconds=0.2)
                clock.now += 0.3
            else:
                lease = await state.claim("r", "n1", lease_seconds=0.2)
                await asyncio.sleep(0.3)
            assert await state.home("r") is None
            assert not await state.renew("r", lease)
            assert await state.claim("r", "n2") == Lease("n2", 2)
            await state.close()

        run(scenario())


class TestFailover:
    """docs/cluster.md "Failover": taking a dead home's room over, and fenced snapshots."""

    def test_a_room_is_taken_over_only_after_its_home_left_the_registry(self, make_state: Factory) -> None:
        async def scenario() -> None:
            state, other = make_state(), make_state()
            await state.heartbeat(node("n1"))
            dead = await state.claim("standup", "n1")
            wait = await other.take_over("standup", dead, "n2")
            # n1 heartbeated just now: its entry lives up to 3 s more.
            assert isinstance(wait, float) and 2.0 < wait <= 3.0
            await state.withdraw("n1")  # as its entry's expiry would
            taken = await other.take_over("standup", dead, "n2")
            assert taken == Lease("n2", 2)
            # A second taker (another edge at the same time) gets the same new lease.
            assert await state.take_over("standup", dead, "n3") == taken
            # The old home can no longer renew.
            assert not await state.renew("standup", dead)
            await state.close()
            await other.close()

        run(scenario())

    def test_take_over_of_a_room_without_lease_claims_it(self, make_state: Factory) -> None:
        async def scenario() -> None:
            state = make_state()
            assert await state.take_over("quiet", Lease("n1", 7), "n2") == Lease("n2", 1)
            await state.close()

        run(scenario())

    def test_snapshot_writes_are_fenced_by_the_lease_epoch(self, make_state: Factory) -> None:
        async def scenario() -> None:
            state = make_state()
            old = await state.claim("standup", "n1")
            assert await state.save_room("standup", old.epoch, b"one")
            assert await state.load_room("standup") == b"one"
            await state.release("standup", old)
            new = await state.claim("standup", "n2")
            assert await state.save_room("standup", new.epoch, b"two")
            # The old home wakes up: neither its save nor its delete lands.
            assert not await state.save_room("standup", old.epoch, b"stale")
            assert not await state.delete_room("standup", old.epoch)
            assert await state.load_room("standup") == b"two"
            assert await state.delete_room("standup", new.epoch)
            assert await state.load_room("standup") is None
            await state.close()

        run(scenario())


class TestRegistry:
    def test_heartbeat_lists_live_nodes_and_a_drain_request(self, make_state: Factory) -> None:
        async def scenario() -> None:
            one, two = make_state(), make_state()
            await one.heartbeat(node("n1"))
            live, drain = await two.heartbeat(node("n2", region="eu"))
            assert sorted(n.node_id for n in live) == ["n1", "n2"]
            assert not drain
            await one.request_drain("n2")
            live, drain = await two.heartbeat(node("n2", draining=True))
            assert drain and [n.draining for n in live if n.node_id == "n2"] == [True]
            await two.withdraw("n2")
            assert [n.node_id for n in await one.live_nodes()] == ["n1"]
            await one.close()
            await two.close()

        run(scenario())

    def test_a_node_silent_for_three_seconds_is_gone(self, redis_server: RedisServer) -> None:
        async def scenario() -> None:
            redis_server.command(b"FLUSHALL")
            state = RedisState(redis_server.url)
            await state.heartbeat(node("n1"))
            await asyncio.sleep(2.5)
            assert [n.node_id for n in await state.live_nodes()] == ["n1"]
            await asyncio.sleep(0.6)
            assert await state.live_nodes() == []
            await state.close()

        run(scenario())

    def test_memory_registry_expires_on_its_clock(self) -> None:
        async def scenario() -> None:
            clock = FakeClock()
            state = MemoryState(clock)
            await state.heartbeat(node("n1"))
            clock.now += 2.9
            assert len(await state.live_nodes()) == 1
            clock.now += 0.2
            assert await state.live_nodes() == []

        run(scenario())


class TestRevocations:
    def test_a_revocation_reaches_a_watcher(self, make_state: Factory) -> None:
        async def scenario() -> None:
            publisher, watcher = make_state(), make_state()
            await publisher.revoke("before", 4_000_000_000.0)
            seen: list[tuple[str, float]] = []
            ready = asyncio.Event()
            task = asyncio.ensure_future(
                watcher.watch_revocations(lambda p, u: seen.append((p, u)), ready.set)
            )
            await asyncio.wait_for(ready.wait(), 5)
            assert seen == [("before", 4_000_000_000.0)]  # replayed on subscription
            await publisher.revoke("p1", 4_000_000_001.5)
            for _ in range(100):
                if len(seen) == 2:
                    break
                await asyncio.sleep(0.01)
            assert seen[1] == ("p1", 4_000_000_001.5)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await publisher.close()
            await watcher.close()

        run(scenario())

    def test_a_publication_missed_while_unsubscribed_is_replayed(self, redis_server: RedisServer) -> None:
        async def scenario() -> None:
            redis_server.command(b"FLUSHALL")
            publisher, watcher = RedisState(redis_server.url), RedisState(redis_server.url)
            seen: list[str] = []
            subscriptions = 0
            resubscribed = asyncio.Event()

            def ready() -> None:
                nonlocal subscriptions
                subscriptions += 1
                if subscriptions == 2:
                    resubscribed.set()

            task = asyncio.ensure_future(watcher.watch_revocations(lambda p, u: seen.append(p), ready))
            while subscriptions < 1:
                await asyncio.sleep(0.01)
            # The subscriber's connection dies; a revocation is published before it is back.
            redis_server.command(b"CLIENT KILL TYPE pubsub")
            await publisher.revoke("missed", 4_000_000_000.0)
            await asyncio.wait_for(resubscribed.wait(), 5)
            assert "missed" in seen
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await publisher.close()
            await watcher.close()

        run(scenario())


class TestChat:
    def test_append_is_idempotent_and_ordered(self, make_state: Factory) -> None:
        async def scenario() -> None:
            state = make_state()
            for seq in (1, 2, 2, 1, 3):
                await state.append_chat("r", 7, seq, b'{"seq":%d}' % seq)
            await state.append_chat("r", 8, 1, b'{"seq":1}')
            assert [(e, s) for e, s, _ in await state.chat("r")] == [(7, 1), (7, 2), (7, 3), (8, 1)]
            await state.close()

        run(scenario())


class TestRedisConnection:
    def test_password_in_url_and_a_dead_server_is_a_clear_error(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        async def scenario(server: RedisServer) -> None:
            url = f"redis://:s3cret-pass@127.0.0.1:{server.port}/0"
            assert "s3cret-pass" not in redact_url(url)
            state = RedisState(url)
            assert await state.claim("r", "n1") == Lease("n1", 1)
            password_file = tmp_path / "redis-password"
            password_file.write_text("s3cret-pass\n")
            from_file = RedisState.from_config(server.url, password_file)
            assert await from_file.home("r") == Lease("n1", 1)
            server.stop()
            with pytest.raises(StateUnavailable):
                await state.claim("r2", "n1")
            await state.close()
            await from_file.close()

        caplog.set_level(logging.DEBUG)
        with running_redis(tmp_path, password="s3cret-pass") as server:
            run(scenario(server))
        assert "s3cret-pass" not in caplog.text


class TestRedisTls:
    def test_rediss_with_a_private_ca(self, tmp_path: Path) -> None:
        """``rediss://``: the server's certificate is checked against ``ssl_ca_certs`` in the URL."""
        cert, key = write_certificate(tmp_path)

        async def scenario(server: RedisServer) -> None:
            state = RedisState(f"{server.url}?ssl_ca_certs={cert}&ssl_check_hostname=false")
            assert await state.claim("tls", "n1") == Lease("n1", 1)
            await state.close()
            untrusted = RedisState(server.url)  # the system's CAs do not know this one
            with pytest.raises(StateUnavailable):
                await untrusted.claim("tls", "n1")
            await untrusted.close()

        with running_redis(tmp_path, tls=(cert, key)) as server:
            run(scenario(server))
