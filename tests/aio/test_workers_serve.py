"""``meet443 serve --workers 2`` on loopback: TURN on every worker, quotas and the relay guard across
workers, TURN over TLS terminated by the workers (and HTTPS by whoever the ClientHello's ALPN
says), a killed worker respawned on the same sockets and counted, SIGTERM stops them all.

(The SFU across workers is tested in tests/e2e/test_sfu_aiortc.py, tests/e2e/test_workers.py and
the browser tests, which run the default worker count.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from meet443.proto.addresses import Address
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

from .test_serve import (
    SECRET,
    EchoPeer,
    Server,
    free_port,
    reload_certificate,
    start_server,
    stop_server,
)
from .turn_client import SocketTurnClient, stun_binding_request

HOST = "127.0.0.1"


def client(
    server: Server, participant: str, transport: str = "udp", timeout: float = 3.0, source: str | None = None
) -> SocketTurnClient:
    """A TURN client with a participant's REST credentials (its quota key is ``participant``)."""
    username, password = rest_credentials(SECRET, participant, 600, time.time())
    return SocketTurnClient(
        (HOST, server.port),
        username,
        password,
        transport,
        server.tls_context(),
        timeout=timeout,
        source=source,
    )


def assert_relays(turn: SocketTurnClient, peer: Address, payload: bytes) -> None:
    """An allocation, a channel to ``peer`` (an echo), and ``payload`` there and back."""
    turn.allocate()
    turn.bind(0x4001, peer)
    turn.send_channel(0x4001, payload)
    assert turn.receive_channel().data.rstrip(b"\x00") == payload


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
            assert_relays(turn, echo_peer.address, b"ping")
        text = metrics(metrics_port)
        assert sample(text, "meet443_turn_allocations") == 8
        assert sample(text, 'meet443_turn_packets_relayed_total{transport="udp"}') - before == 12
        assert sample(text, "meet443_workers") == 2
    finally:
        for turn in clients:
            turn.close()


def relay_slices(server: Server) -> tuple[int, int]:
    """The last relay port of worker 0's slice and of worker 1's."""
    slices = re.search(r"relay ports (\d+)-(\d+), (\d+)-(\d+)", server.log.read_text())
    assert slices is not None
    return int(slices.group(2)), int(slices.group(4))


def holders(client: tuple[str, int], pids: Iterable[int]) -> set[int]:
    """Which of ``pids`` hold the server's end of the TCP connection from ``client`` (/proc)."""
    ip, port = client
    remote = f"{socket.inet_aton(ip)[::-1].hex().upper()}:{port:04X}"
    links = {
        f"socket:[{fields[9]}]"
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if fields[2] == remote
    }
    assert links, f"no server socket for {client}"
    held = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) in links:
                    held.add(pid)
            except OSError:
                continue  # closed since the listing
    return held


def io_bytes(pid: int) -> int:
    """Bytes the process read and wrote through read(2)/write(2) and kin (uvloop's streams)."""
    counters = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(counters["rchar"]) + int(counters["wchar"])


def test_turn_over_tls_is_the_workers_and_never_crosses_the_control_process(
    workers: Server, echo_peer: EchoPeer
) -> None:
    """Issue 14: a TLS connection without ALPN is handed to a worker before its handshake (by the
    client's address: six addresses reach both workers); the control process holds none of them
    and carries none of their bytes."""
    control, pids = workers.process.pid, worker_pids(workers)
    first_worker_end, _ = relay_slices(workers)
    clients = [client(workers, f"tls{n}", "tls", source=f"127.0.0.{n + 2}") for n in range(6)]
    try:
        on_worker = set()
        for turn in clients:
            relayed = turn.allocate()
            on_worker.add(relayed[1] > first_worker_end)
            turn.bind(0x4001, echo_peer.address)
            assert holders(turn.sock.getsockname(), [control, *pids.values()]) <= set(pids.values())
            assert holders(turn.sock.getsockname(), [control]) == set()
        assert on_worker == {False, True}, "every TLS allocation landed on one worker"
        before = io_bytes(control), {pid: io_bytes(pid) for pid in pids.values()}
        payload = os.urandom(1000)
        for _ in range(100):
            for turn in clients:
                turn.send_channel(0x4001, payload)
            for turn in clients:
                assert turn.receive_channel().data == payload
        control_io = io_bytes(control) - before[0]
        workers_io = sum(io_bytes(pid) - was for pid, was in before[1].items())
        print(f"control {control_io} B, workers {workers_io} B of I/O; ", end="")
        assert workers_io > 1_200_000  # 600 kB each way, read and written
        assert control_io < 50_000
    finally:
        for turn in clients:
            turn.close()


def openssl_flight(context: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO, bytes]:
    """A TLS client over memory: its ClientHello, to put on a socket by hand."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=HOST)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return tls, incoming, outgoing, outgoing.read()


def bio_exchange(sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 request: bytes) -> bytes:  # fmt: skip
    """Finish the handshake over ``sock``, send ``request``, return the first decrypted answer."""
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
    tls.write(request)
    sock.sendall(outgoing.read())
    while True:
        try:
            return tls.read(65536)
        except ssl.SSLWantReadError:
            data = sock.recv(65536)
            assert data, "closed"
            incoming.write(data)


@pytest.mark.parametrize(
    "alpn",
    [["h2", "http/1.1"], None, ["http/1.1", "stun.turn", "stun.nat-discovery"]],
    ids=["http-alpn", "no-alpn", "uclient-alpn"],
)
def test_a_client_hello_split_over_segments_is_waited_for(workers: Server, alpn: list[str] | None) -> None:
    """Browsers' ClientHellos span two TCP segments (post-quantum key shares): the port waits.
    Offering HTTP by ALPN makes it the control process's HTTPS, unless a STUN protocol is offered
    too, as coturn's turnutils_uclient does."""
    context = workers.tls_context()
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    tls, incoming, outgoing, hello = openssl_flight(context)
    with socket.create_connection((HOST, workers.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(hello), 100):
            sock.sendall(hello[start : start + 100])
            time.sleep(0.02)
        outgoing.write(b"")
        if alpn is None or "stun.turn" in alpn:  # to a worker: TURN
            answer = bio_exchange(sock, tls, incoming, outgoing, stun_binding_request())
            assert Message.parse(answer).klass == StunClass.SUCCESS
            assert tls.selected_alpn_protocol() == (None if alpn is None else "stun.turn")
        else:  # terminated by the control process: HTTP
            answer = bio_exchange(sock, tls, incoming, outgoing, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert tls.selected_alpn_protocol() == "http/1.1"


def test_a_bad_or_cut_first_flight_is_closed_and_others_go_on(workers: Server, echo_peer: EchoPeer) -> None:
    turn = client(workers, "bystander", "tls")
    try:
        turn.allocate()
        turn.bind(0x4001, echo_peer.address)
        _, _, _, hello = openssl_flight(workers.tls_context())
        garbage = [b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", b"\x16\x03\x01\xff\xff" + b"x" * 100]
        for flight, half_close in [*((g, False) for g in garbage), (hello[:40], True)]:
            with socket.create_connection((HOST, workers.port), timeout=3) as sock:
                sock.sendall(flight)
                if half_close:  # the peer's FIN before the ClientHello is whole: no spin, a close
                    sock.shutdown(socket.SHUT_WR)
                started = time.monotonic()
                with contextlib.suppress(ConnectionResetError):  # closed with garbage unread
                    assert sock.recv(100) == b""
                assert time.monotonic() - started < 2
            turn.send_channel(0x4001, b"still")
            assert turn.receive_channel().data.rstrip(b"\x00") == b"still"
        assert re.search(r"TCP connections refused: \d+ not a TLS ClientHello", workers.log.read_text())
    finally:
        turn.close()


def test_https_with_and_without_alpn_and_a_wss_join(workers: Server) -> None:
    """aiohttp sends no ALPN, so its TLS goes to a worker, whose first decrypted bytes are HTTP:
    the worker pipes them back and the control process serves them as HTTPS (not redirected to
    https://) from the client's own address. A client offering http/1.1 is the control's."""
    control, pids = workers.process.pid, set(worker_pids(workers).values())
    context = workers.tls_context()
    with (
        socket.create_connection((HOST, workers.port), timeout=5, source_address=("127.0.0.8", 0)) as raw,
        context.wrap_socket(raw) as tls,
    ):
        assert tls.selected_alpn_protocol() is None
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 200")
        assert holders(tls.getsockname(), [control, *pids]) <= pids
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection((HOST, workers.port), timeout=5, source_address=("127.0.0.8", 0)) as raw,
        context.wrap_socket(raw) as tls,
    ):
        assert tls.selected_alpn_protocol() == "http/1.1"
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert tls.recv(100).startswith(b"HTTP/1.1 200")
        assert holders(tls.getsockname(), [control, *pids]) == {control}

    async def scenario() -> None:
        connector = aiohttp.TCPConnector(ssl=workers.tls_context(), local_addr=("127.0.0.9", 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(f"https://{HOST}:{workers.port}/healthz") as response:
                assert response.status == 200
            async with session.ws_connect(f"wss://{HOST}:{workers.port}/v1/ws") as ws:
                await ws.send_json({"type": "join", "v": 1, "room": "tls-bridge", "displayName": "Ada"})
                joined = await ws.receive_json(timeout=5)
                assert joined["type"] == "joined", joined
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"wss://{HOST}:{workers.port}/v1/ws", origin="https://evil.example")
            assert refused.value.status == 403

    asyncio.run(scenario())
    assert "refused /v1/ws from 127.0.0.9" in workers.log.read_text()


def test_a_nonce_from_one_worker_is_good_on_the_other(workers: Server) -> None:
    """RFC 8489 §9.2.4: a nonce is bound to the client's IP address, not its port, and the next
    socket a client opens may land on the other worker: it must not be told 438 Stale Nonce."""
    challenged = client(workers, "nonce")
    others = [client(workers, f"nonce{n}") for n in range(8)]
    try:
        challenged.allocate()
        first_worker_end, _ = relay_slices(workers)
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
            assert_relays(turn, echo_peer.address, b"again")
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


@pytest.fixture(scope="module")
def small_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two workers sharing 8 pending connections, 4 per address: 2 per address on each worker."""
    live = start_server(
        tmp_path_factory.mktemp("small"),
        "--workers", "2", "--max-pending-connections", "8", "--pending-connections-per-address", "4",
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while len(worker_pids(live)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield live
    stop_server(live)


def test_tls_mid_handshake_counts_against_the_workers_share_per_address(
    small_workers: Server, echo_peer: EchoPeer
) -> None:
    """A TLS connection handed to a worker is pending there until it allocates: one address's
    half-done handshakes fill its share on that worker, and only its own next one is refused."""
    live = small_workers
    held = []
    try:
        for _ in range(2):
            sock = socket.create_connection((HOST, live.port), timeout=3, source_address=("127.0.0.20", 0))
            sock.sendall(openssl_flight(live.tls_context())[3])
            assert sock.recv(1) == b"\x16"  # a worker's ServerHello, and no more from this client
            held.append(sock)
        with socket.create_connection((HOST, live.port), timeout=3, source_address=("127.0.0.20", 0)) as sock:
            sock.sendall(openssl_flight(live.tls_context())[3])
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
        turn = client(live, "other-address", "tls", source="127.0.0.21")
        try:
            assert_relays(turn, echo_peer.address, b"fine")
        finally:
            turn.close()
        assert "handed-over TCP connections refused" in live.log.read_text()
    finally:
        for sock in held:
            sock.close()


def test_sighup_reloads_the_workers_certificate(small_workers: Server, tmp_path: Path) -> None:
    """Workers terminate TLS without ALPN with the certificate the control process reloaded; the
    control process terminates it for clients offering HTTP."""
    live = small_workers

    def serials() -> tuple[int, int]:
        """The certificate serial a worker (no ALPN) and the control process (http/1.1) show."""
        found = []
        for alpn in ([], ["http/1.1"]):
            context = live.tls_context()
            context.set_alpn_protocols(alpn)
            with (
                socket.create_connection((HOST, live.port), timeout=3) as raw,
                context.wrap_socket(raw) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
            assert der is not None
            found.append(x509.load_der_x509_certificate(der).serial_number)
        return found[0], found[1]

    assert serials() == (1, 1)
    reload_certificate(live, tmp_path / "new", serials, (2, 2))
