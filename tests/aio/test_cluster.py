"""Three ``meet443 serve`` nodes on 127.0.0.2-4 sharing one real redis-server and one real
PostgreSQL (docs/cluster.md).

The nodes run as real processes; clients are aiohttp WebSockets and the socket TURN client of the
other server tests. The tests run in file order: the drain test drains node C, the last one stops
and restarts Redis.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from meet443.aio.relay import RELAY_HEADER, cluster_key, relay_header
from meet443.cli import main as cli_main
from meet443.proto.stun.attributes import AlternateServer, ErrorCode, Lifetime, RequestedTransport
from meet443.proto.stun.message import Method, StunClass
from meet443.proto.turn.credentials import rest_credentials
from tests.aio.test_serve import write_certificate as write_serve_certificate
from tests.aio.test_signaling import Peer as SignalingPeer
from tests.aio.turn_client import SocketTurnClient
from tests.postgres import PostgresServer
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.postgresql

SECRET = "cluster-secret-never-logged"
NODES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
PUBLIC_URL_HOST = "meet443.test"
TIMEOUT = 5.0


def common_port() -> int:
    """A port free on every node address."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((NODES[0], 0))
            port = int(probe.getsockname()[1])
        try:
            for host in NODES[1:]:
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as other:
                        other.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """One certificate for every node (each checks the others' against it)."""
    names = [x509.IPAddress(ipaddress.ip_address(h)) for h in NODES] + [x509.DNSName(PUBLIC_URL_HOST)]
    return write_serve_certificate(directory, x509.random_serial_number(), names, ca=True)


@dataclass
class Node:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    data: Path

    @property
    def ws_url(self) -> str:
        return f"https://{self.host}:{self.port}/v1/ws"

    @property
    def node_id(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # SIGTERM drains; SIGINT stops at once
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Cluster:
    redis: RedisServer
    nodes: list[Node]
    cert: Path
    port: int
    api_key: str

    def client_ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def start_node(
    tmp: Path, host: str, port: int, redis: RedisServer, cert: Path, key: Path, *extra: str, workers: int = 1
) -> Node:
    """A node of ``workers`` media worker processes (one is CI's cheap default, issue #15)."""
    data = tmp / host
    data.mkdir(exist_ok=True)
    log = data / "server.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "meet443", "serve",
                "--listen", host, "--port", str(port), "--public-ip", host, "--other-udp-port", "0",
                "--public-url", f"https://{PUBLIC_URL_HOST}:{port}", "--node-url", f"https://{host}:{port}",
                "--redis", redis.url, "--turn-secret-file", str(tmp / "secret"),
                "--resume-key-file", str(tmp / "resume-key"),
                "--cert", str(cert), "--key", str(key), "--cluster-ca-file", str(cert),
                "--relay-ports", "41000-41999", "--data-dir", str(data), "--log-level", "debug",
                "--default-room-mode", "normal", "--joins-per-minute", "1000", "--workers", str(workers),
                *extra,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    return Node(host, port, process, log, data)


def wait_listening(node: Node) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(node.log.read_text())
        try:
            socket.create_connection((node.host, node.port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("node did not start:\n" + node.log.read_text())


def cluster_files(tmp: Path, postgres: PostgresServer) -> tuple[str, Path, Path]:
    """What every node of a test cluster shares: a fresh database, the TURN secret and resume key
    (in ``tmp``), and one certificate (and its key)."""
    database = asyncio.run(postgres.fresh_database())
    (tmp / "secret").write_text(SECRET + "\n")
    (tmp / "resume-key").write_text("r" * 64 + "\n")
    cert, key = write_certificate(tmp)
    return database, cert, key


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster")
    database, cert, key = cluster_files(tmp, postgres)
    # An admin API key in the cluster's database, for /v1/network.
    created = subprocess.run(
        [sys.executable, "-m", "meet443", "api-key", "create", "--admin", "--database", database],
        capture_output=True,
        check=True,
    )
    api_key = created.stdout.decode().strip()
    with running_redis(tmp) as redis:
        port = common_port()
        nodes = [
            start_node(tmp, NODES[0], port, redis, cert, key, "--database", database),
            start_node(tmp, NODES[1], port, redis, cert, key, "--database", database),
            # The one node with two media workers (docs/cluster.md): TURN across nodes, revocations
            # and Try Alternate while draining are tested against it.
            start_node(
                tmp,
                NODES[2],
                port,
                redis,
                cert,
                key,
                "--database",
                database,
                "--drain-timeout",
                "3",
                workers=2,
            ),
        ]
        try:
            for node in nodes:
                wait_listening(node)
            live = Cluster(redis, nodes, cert, port, api_key)
            wait_for_registry(live, 3)
            yield live
        finally:
            for node in nodes:
                node.stop()
            for node in nodes:
                assert SECRET not in node.log.read_text()


def wait_for_registry(cluster: Cluster, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if cluster.redis.command(b"ZCARD meet443:nodes").strip() == b":%d" % count:
            # Every node has seen the others (heartbeats are 1 s apart).
            time.sleep(1.2)
            return
        time.sleep(0.1)
    raise AssertionError("registry never listed every node")


def run(coroutine: Awaitable[None]) -> None:
    async def then_settle() -> None:
        await asyncio.wait_for(coroutine, 60)
        # TLS transports of closed sessions finish closing on the loop's next turns; closing the
        # loop first leaves them to the garbage collector (a ResourceWarning, an error here).
        await asyncio.sleep(0.25)

    asyncio.run(then_settle())


class Peer(SignalingPeer):
    """The signaling tests' client, opened on a node; ``expect`` skips the updates a relayed
    participant may see first."""

    @classmethod
    async def on(cls, session: aiohttp.ClientSession, node: Node) -> Peer:
        return cls(await session.ws_connect(node.ws_url))

    async def expect(self, type: str) -> dict[str, Any]:
        while True:
            message = await self.recv()
            if message["type"] == type:
                return message
            assert message["type"] in ("participant-updated", "ice-servers"), message


def session(cluster: Cluster) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=cluster.client_ssl()))


def home_of(cluster: Cluster, room: str) -> str:
    reply = cluster.redis.command(f"GET meet443:room:{room}:home".encode())
    return reply.split(b"\r\n")[1].decode().rpartition(" ")[0]


def turn_credentials(joined: dict[str, Any]) -> tuple[str, str]:
    server = joined["iceServers"][0]
    return server["username"], server["credential"]


class TestAnyNodeServesAnyMeeting:
    def test_two_nodes_one_room_signaling_and_chat(self, cluster: Cluster) -> None:
        a, b, _ = cluster.nodes

        async def scenario() -> None:
            async with session(cluster) as http:
                ada = await Peer.on(http, a)
                assert (await ada.join("standup", "Ada"))["type"] == "joined"
                bob = await Peer.on(http, b)
                joined = await bob.join("standup", "Bob")
                assert joined["type"] == "joined"
                assert [p["id"] for p in joined["participants"]] == [ada.self_id]
                # Bob's TURN is the home's, next to its SFU.
                assert all(a.host in url for url in joined["iceServers"][0]["urls"])
                assert (await ada.expect("participant-joined"))["participant"]["id"] == bob.self_id
                await bob.send("offer", to=ada.self_id, sdp="v=0\r\n")
                offer = await ada.expect("offer")
                assert (offer["from"], offer["sdp"]) == (bob.self_id, "v=0\r\n")
                await ada.send("answer", to=bob.self_id, sdp="v=1\r\n")
                assert (await bob.expect("answer"))["sdp"] == "v=1\r\n"
                await bob.send("chat", text="hello from b", clientMessageId="b1")
                for peer in (ada, bob):
                    assert (await peer.expect("chat"))["text"] == "hello from b"
                await ada.send("chat", text="hello from a", clientMessageId="a1")
                for peer in (ada, bob):
                    chat = await peer.expect("chat")
                    assert (chat["text"], chat["seq"]) == ("hello from a", 2)
                await asyncio.sleep(0.3)  # the chat stream is written after the broadcast
                stream = cluster.redis.command(b"XRANGE meet443:chat:standup - +")
                assert stream.count(b"hello from") == 2
                await ada.ws.close()
                await bob.ws.close()

        run(scenario())
        assert home_of(cluster, "standup") == a.node_id

    def test_a_forged_relay_header_is_refused(self, cluster: Cluster) -> None:
        a = cluster.nodes[0]

        async def scenario() -> None:
            async with session(cluster) as http:
                wrong_key = relay_header(cluster_key("not the secret"), a.node_id, "192.0.2.1", time.time())
                for header in (wrong_key, "v1 0 192.0.2.1 00", "garbage"):
                    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                        await http.ws_connect(a.ws_url, headers={RELAY_HEADER: header})
                    assert refused.value.status == 403
                # A genuine header, but for another node: refused too.
                other = relay_header(cluster_key(SECRET), cluster.nodes[1].node_id, "192.0.2.1", time.time())
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await http.ws_connect(a.ws_url, headers={RELAY_HEADER: other})

        run(scenario())

    def test_network_lists_every_live_node(
        self, cluster: Cluster, capsys: pytest.CaptureFixture[str]
    ) -> None:
        async def scenario() -> None:
            async with session(cluster) as http:
                url = f"https://{NODES[0]}:{cluster.port}/v1/network"
                headers = {"Authorization": f"Bearer {cluster.api_key}"}
                # The registry is eventually consistent: each node's view is its last heartbeat's.
                deadline = time.monotonic() + 5
                while True:
                    async with http.get(url, headers=headers) as response:
                        assert response.status == 200
                        document = await response.json()
                    listed = {n["name"]: n for n in document["nodes"]}
                    if set(listed) == set(NODES) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert set(listed) == set(NODES)
                assert [n["name"] for n in document["nodes"] if n["self"]] == [NODES[0]]
                assert listed[NODES[1]]["addresses"] == [NODES[1]]
                assert listed[NODES[1]]["relayPorts"] == [41000, 41999]
                assert document["domainPatterns"] == [PUBLIC_URL_HOST]

        run(scenario())
        rules = cli_main(
            [
                "firewall-rules", "--format", "json", "--redis", cluster.redis.url,
                "--public-url", f"https://{PUBLIC_URL_HOST}:{cluster.port}", "--port", str(cluster.port),
            ]
        )  # fmt: skip
        assert rules == 0
        document = json.loads(capsys.readouterr().out)
        assert set(NODES) <= {rule["destination"] for rule in document["rules"]}
        assert document["domainPatterns"] == [PUBLIC_URL_HOST]


class TestTurnAcrossNodes:
    def test_a_kick_revokes_credentials_on_every_node_within_a_second(self, cluster: Cluster) -> None:
        a, b, c = cluster.nodes

        async def scenario() -> None:
            async with session(cluster) as http:
                host = await Peer.on(http, a)
                await host.join("kickroom", "Host")
                guest = await Peer.on(http, b)
                joined = await guest.join("kickroom", "Guest")
                assert joined["type"] == "joined", joined
                username, password = turn_credentials(joined)
                # The guest's TURN allocation on node C (two workers): the revocation must reach
                # the worker that holds it, whether the room is on C or not.
                turn = SocketTurnClient((c.host, c.port), username, password)
                try:
                    await asyncio.to_thread(turn.allocate)
                    await host.expect("participant-joined")
                    await host.send("kick", participantId=guest.self_id)
                    kicked_at = time.monotonic()
                    assert (await guest.expect("kicked"))["type"] == "kicked"
                    while time.monotonic() - kicked_at < 2.0:
                        reply = await asyncio.to_thread(turn.request, Method.REFRESH, [Lifetime(600)])
                        if reply.klass == StunClass.ERROR:
                            break
                        await asyncio.sleep(0.05)
                    elapsed = time.monotonic() - kicked_at
                    error = reply.get(ErrorCode)
                    assert error is not None and error.code in (401, 437), error
                    assert elapsed < 1.0, elapsed
                finally:
                    turn.close()

        run(scenario())

    def test_relay_on_one_node_reaches_other_nodes_media_ports_only(self, cluster: Cluster) -> None:
        _, b, c = cluster.nodes
        username, password = rest_credentials(SECRET, "tester", 600, time.time())
        # On node C, whose media workers learn the registry from its control process.
        turn = SocketTurnClient((c.host, c.port), username, password)
        # Stand-ins for node B's media sockets: one in its relay range, one outside every range.
        in_range, outside = (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        )
        try:
            in_range.bind((b.host, 41998))
            # Not in its relay range and not one of its SFU ports (the main one, or the second).
            outside.bind((b.host, 40000 if cluster.port != 40000 else 40001))
            for sock in (in_range, outside):
                sock.settimeout(0.5)
            turn.allocate()
            assert turn.bind(0x4001, in_range.getsockname()).klass == StunClass.SUCCESS
            assert turn.bind(0x4002, outside.getsockname()).klass == StunClass.SUCCESS  # same IP
            turn.send_channel(0x4001, b"to b's relay range")
            turn.send_channel(0x4002, b"to another port of b")
            assert in_range.recv(100) == b"to b's relay range"
            with pytest.raises(TimeoutError):
                outside.recv(100)
            # An address of no node stays denied (loopback, not in the registry).
            refused = turn.bind(0x4003, ("127.0.0.9", 41998))
            error = refused.get(ErrorCode)
            assert error is not None and error.code == 403
        finally:
            turn.close()
            in_range.close()
            outside.close()


class TestDrain:
    def test_drained_node_redirects_turn_places_no_room_and_keeps_its_rooms(self, cluster: Cluster) -> None:
        c = cluster.nodes[2]

        async def scenario() -> None:
            async with session(cluster) as http:
                carol = await Peer.on(http, c)
                joined = await carol.join("onc", "Carol")
                assert home_of(cluster, "onc") == c.node_id
                username, password = turn_credentials(joined)
                drain = ["drain", "--redis", cluster.redis.url, "--node-url", f"https://{c.node_id}"]
                assert await asyncio.to_thread(cli_main, drain) == 0
                await asyncio.sleep(1.5)  # the node reads the request with its next heartbeat
                # New TURN allocations: 300 Try Alternate to a live node that takes rooms.
                turn = SocketTurnClient((c.host, c.port), username, password)
                try:
                    reply = await asyncio.to_thread(turn.request, Method.ALLOCATE, [RequestedTransport(17)])
                finally:
                    turn.close()
                error, alternate = reply.get(ErrorCode), reply.get(AlternateServer)
                assert error is not None and error.code == 300
                assert alternate is not None and alternate.address[0] in NODES[:2]
                assert alternate.address[1] == cluster.port
                # A new room reached through C is placed elsewhere (and relayed).
                dave = await Peer.on(http, c)
                assert (await dave.join("after-drain", "Dave"))["type"] == "joined"
                assert home_of(cluster, "after-drain") != c.node_id
                # The room already on C goes on.
                await carol.send("chat", text="still here", clientMessageId="c1")
                assert (await carol.expect("chat"))["text"] == "still here"
                await dave.ws.close()
                # After --drain-timeout (3 s) the node exits, though Carol is still in.
                assert await carol.closed() == 1012  # restart: resume elsewhere

        run(scenario())
        assert c.process.wait(10) == 0


class TestRedisOutage:
    def test_calls_go_on_new_rooms_fail_clearly_and_recover(self, cluster: Cluster) -> None:
        a, b, _ = cluster.nodes

        async def scenario() -> None:
            async with session(cluster) as http:
                ada = await Peer.on(http, a)
                await ada.join("outage", "Ada")
                bob = await Peer.on(http, b)
                await bob.join("outage", "Bob")
                await ada.expect("participant-joined")
                cluster.redis.stop()
                await asyncio.sleep(2.5)  # a few heartbeats fail
                # The call goes on: chat and signaling both ways, through B's relay.
                await bob.send("chat", text="during outage", clientMessageId="o1")
                for peer in (ada, bob):
                    assert (await peer.expect("chat"))["text"] == "during outage"
                await ada.send("offer", to=bob.self_id, sdp="v=0\r\n")
                assert (await bob.expect("offer"))["sdp"] == "v=0\r\n"
                # A room not yet placed: a clear error, and the socket closes with 1013.
                eve = await Peer.on(http, b)
                refused = await eve.join("new-room", "Eve")
                assert refused["type"] == "error" and refused["code"] == "unavailable", refused
                assert await eve.closed() == 1013
                # Redis back (empty: no persistence): new rooms again, and the live room's lease
                # is taken again by its home.
                cluster.redis.start()
                deadline = time.monotonic() + 10
                while True:
                    frank = await Peer.on(http, b)
                    reply = await frank.join("new-room", "Frank")
                    if reply["type"] == "joined":
                        break
                    assert time.monotonic() < deadline, reply
                    await asyncio.sleep(0.5)
                deadline = time.monotonic() + 10
                # (The room's snapshot key, meet443:room:outage:state, is written sooner.)
                while b"outage" not in cluster.redis.command(b"KEYS meet443:room:*:home"):
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
                assert home_of(cluster, "outage") == a.node_id
                await bob.send("chat", text="after outage", clientMessageId="o2")
                assert (await ada.expect("chat"))["text"] == "after outage"

        run(scenario())
        for node in cluster.nodes[:2]:
            log = node.log.read_text()
            # One line when the outage starts, not one per attempt.
            outages = [line for line in log.splitlines() if "shared state unavailable" in line]
            assert len(outages) == 1, outages


class TestSigterm:
    def test_sigterm_drains_and_a_second_one_stops(self, cluster: Cluster) -> None:
        b = cluster.nodes[1]
        b.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while b'"draining":true' not in cluster.redis.command(f"GET meet443:node:{b.node_id}".encode()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        # Participants awaiting resume keep it draining (--drain-timeout 600): still up.
        assert b.process.poll() is None
        b.process.send_signal(signal.SIGTERM)
        assert b.process.wait(10) == 0
        assert "draining (SIGTERM)" in b.log.read_text()
