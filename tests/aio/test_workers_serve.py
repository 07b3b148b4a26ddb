"""``meet443 serve --workers 2`` on loopback: TURN on every worker, quotas and the relay guard across
workers, a killed worker respawned on the same sockets and counted, SIGTERM stops them all.

(The SFU across workers is tested in tests/e2e/test_sfu_aiortc.py, tests/e2e/test_workers.py and
the browser tests, which run the default worker count.)
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from meet443.proto.stun.attributes import (
    ErrorCode,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorRelayedAddress,
)
from meet443.proto.stun.keys import long_term_key
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.proto.turn.credentials import rest_credentials

from .test_serve import SECRET, EchoPeer, Server, free_port, start_server, stop_server
from .turn_client import SocketTurnClient, stun_binding_request

HOST = "127.0.0.1"


def client(
    server: Server, participant: str, transport: str = "udp", timeout: float = 3.0
) -> SocketTurnClient:
    """A TURN client with a participant's REST credentials (its quota key is ``participant``)."""
    username, password = rest_credentials(SECRET, participant, 600, time.time())
    return SocketTurnClient(
        (HOST, server.port), username, password, transport, server.tls_context(), timeout=timeout
    )


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, metrics_port: int) -> Iterator[Server]:
    live = start_server(
        tmp_path_factory.mktemp("workers"),
        "--workers", "2", "--max-allocations-per-user", "3",
        "--metrics-listen", f"{HOST}:{metrics_port}",
    )  # fmt: skip
    deadline = time.monotonic() + 10  # the metrics listener opens after the main port
    while time.monotonic() < deadline:
        try:
            metrics(metrics_port)
            break
        except OSError:
            time.sleep(0.1)
    yield live
    stop_server(live)


def worker_pids(server: Server) -> dict[int, int]:
    """The newest pid of each worker, from the control process's log."""
    pids: dict[int, int] = {}
    for index, pid in re.findall(r"worker (\d+) ready \(pid (\d+)\)", server.log.read_text()):
        pids[int(index)] = int(pid)
    return pids


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text


def sample(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{series} not in\n{text}"
    return float(match.group(1))


def test_every_worker_relays_and_the_metrics_sum_them(
    workers: Server, echo_peer: EchoPeer, metrics_port: int
) -> None:
    before = sample(metrics(metrics_port), 'meet443_turn_packets_relayed_total{transport="udp"}')
    clients = []
    try:
        for n in range(6):  # six source ports: SO_REUSEPORT spreads them over both workers
            clients.append(client(workers, f"relays{n}"))
        clients += [client(workers, f"relays-{transport}", transport) for transport in ("tcp", "tls")]
        for turn in clients:
            turn.allocate()
            turn.bind(0x4001, echo_peer.address)
            turn.send_channel(0x4001, b"ping")
            assert turn.receive_channel().data.rstrip(b"\x00") == b"ping"
        text = metrics(metrics_port)
        assert sample(text, "meet443_turn_allocations") == 8
        assert sample(text, 'meet443_turn_packets_relayed_total{transport="udp"}') - before == 12
        assert sample(text, "meet443_workers") == 2
    finally:
        for turn in clients:
            turn.close()


def test_a_nonce_from_one_worker_is_good_on_the_other(workers: Server) -> None:
    """RFC 8489 §9.2.4: a nonce is bound to the client's IP address, not its port, and the next
    socket a client opens may land on the other worker: it must not be told 438 Stale Nonce."""
    challenged = client(workers, "nonce")
    others = [client(workers, f"nonce{n}") for n in range(8)]
    try:
        challenged.allocate()
        slices = re.search(r"relay ports (\d+)-(\d+), (\d+)-(\d+)", workers.log.read_text())
        assert slices is not None
        first_worker_end = int(slices.group(2))
        seen_workers = set()
        for turn in others:
            turn.nonce, turn.realm = challenged.nonce, challenged.realm
            key = long_term_key(turn.username, turn.realm, turn.password)
            request = Message(
                Method.ALLOCATE,
                StunClass.REQUEST,
                os.urandom(12),
                [RequestedTransport(17), Username(turn.username), Realm(turn.realm), Nonce(turn.nonce)],
            )
            turn.send(request.encode(key))
            reply = Message.parse(turn.receive())
            assert reply.klass == StunClass.SUCCESS, reply.get(ErrorCode)
            relayed = reply.get(XorRelayedAddress)
            assert relayed is not None
            seen_workers.add(relayed.address[1] > first_worker_end)
        assert seen_workers == {False, True}, "all eight sockets reached one worker"
    finally:
        for turn in [challenged, *others]:
            turn.close()


def test_a_participants_quota_counts_on_every_worker(workers: Server) -> None:
    clients = [client(workers, "quota") for _ in range(8)]
    try:
        answers = []
        for turn in clients:
            reply = turn.request(Method.ALLOCATE, [RequestedTransport(17)])
            error = reply.get(ErrorCode)
            answers.append(error.code if error is not None else reply.klass)
            time.sleep(0.05)  # the ledger's counts cross to the other worker
        assert answers.count(StunClass.SUCCESS) == 3, str(answers)  # --max-allocations-per-user 3
        assert answers.count(486) == 5, str(answers)
    finally:
        for turn in clients:
            turn.close()


def test_no_turn_through_turn_from_any_workers_relay(workers: Server) -> None:
    """Relays on either worker reach the main port, whose socket for that flow may be the other
    worker's: TURN there must not answer them either."""
    clients = [client(workers, f"guard{n}", timeout=0.5) for n in range(4)]
    try:
        for turn in clients:
            turn.allocate()
            assert turn.bind(0x4003, (HOST, workers.port)).klass == StunClass.SUCCESS
        time.sleep(0.1)
        for turn in clients:
            turn.send_channel(0x4003, stun_binding_request())
            with pytest.raises(TimeoutError):
                turn.receive()
    finally:
        for turn in clients:
            turn.close()


def test_a_killed_worker_is_respawned_on_the_same_sockets(
    workers: Server, echo_peer: EchoPeer, metrics_port: int
) -> None:
    before = worker_pids(workers)
    assert sorted(before) == [0, 1]
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while worker_pids(workers).get(0) == before[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    after = worker_pids(workers)
    assert after[0] != before[0] and after[1] == before[1]
    print(f"respawned in {10 - (deadline - time.monotonic()):.2f} s; ", end="")
    assert "worker 0 (pid" in workers.log.read_text() and "died (signal 9)" in workers.log.read_text()
    assert sample(metrics(metrics_port), "meet443_worker_restarts_total") == 1
    # Both workers serve the main port again: many flows, all answered.
    for n in range(6):
        turn = client(workers, f"after{n}")
        try:
            turn.allocate()
            turn.bind(0x4001, echo_peer.address)
            turn.send_channel(0x4001, b"again")
            assert turn.receive_channel().data.rstrip(b"\x00") == b"again"
        finally:
            turn.close()


def test_sigterm_stops_the_workers_too(tmp_path: Path) -> None:
    live = start_server(tmp_path, "--workers", "2")
    deadline = time.monotonic() + 10
    while len(worker_pids(live)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = worker_pids(live).values()
    live.process.send_signal(signal.SIGTERM)
    assert live.process.wait(8) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
