#!/usr/bin/env python3
"""Signaling load: many WebSocket clients joining rooms on one node's signaling.

    .venv/bin/python bench/signaling_load.py                 # 2,000 clients in 500 rooms of 4
    .venv/bin/python bench/signaling_load.py --smoke         # 200 clients in 50 rooms, a few seconds
    .venv/bin/python bench/signaling_load.py --clients 4000 --rooms 1000 --in-flight 200

Setup. The server is a subprocess (this file with ``--serve``) running a bare aiohttp app on
127.0.0.1 with :class:`meet443.aio.node.NodeService` (signaling only), uvloop, and an in-memory directory
that admits every room as an ad-hoc normal room (4 per room). Plain ``ws://`` (no TLS): this
measures signaling, not the TLS stack. Clients connect from source addresses across 127.0.0.0/8,
:data:`CLIENTS_PER_ADDRESS` per address (client i from 127.1.x.y, warm-up clients from 127.2.0.x), so
every per-address limit (joins, new rooms, sockets) stays the contract's default, as an operator
would run it: the benchmark does not raise them. With 2+ CPUs the server is pinned to one core and
the load generator (this process) to another.

Phases.
  1. warm-up: 20 clients join and leave, so first-use allocations are not counted as per-client;
  2. baseline: the server's VmRSS (/proc/<pid>/status);
  3. connect: all clients open their sockets (at most ``--in-flight`` handshakes at once);
  4. join: every client sends ``join`` and waits for ``joined``, at most ``--in-flight`` joins
     outstanding; room r gets clients r, r+R, r+2R, r+3R, so rooms fill in rounds and most joins
     are announced to 1-3 others (``participant-joined``);
  5. settle: 1 s, then VmRSS again. RSS per client = (after - baseline) / clients: everything the
     server holds per joined socket (aiohttp connection, request, WebSocket, core state).

Join latency is the wall time from just before ``send(join)`` to the arrival of ``joined`` at
the client, so it includes the client's own event loop; with ``--in-flight`` joins outstanding it
is a latency under load, not an idle round trip. Clients answer nothing but keep reading, and
send ``ping`` every 10 s like the browser. The whole run is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import aiohttp  # noqa: E402
import uvloop  # noqa: E402
from aiohttp import web  # noqa: E402

from meet443.aio.node import NodeService  # noqa: E402
from meet443.app import build_signaling_server  # noqa: E402
from meet443.node import NodeCore  # noqa: E402
from meet443.proto.signaling.admission import Refusal, RoomAdmission, RoomMode  # noqa: E402

HOST = "127.0.0.1"
PING_INTERVAL_S = 10.0
#: Within the default per-address limits: a join burst of 20 and 10 new rooms (the first round of
#: clients creates the rooms, client r room r).
CLIENTS_PER_ADDRESS = 10


# --------------------------------------------------------------------------------------------------
# The server subprocess


async def serve(port: int) -> None:
    async def directory(room: str, room_key: str | None, now: float) -> RoomAdmission | Refusal:
        return RoomAdmission(room, RoomMode.NORMAL, api_created=False, end_ms=None, host_key_valid=False)

    public_url = f"https://{HOST}:{port}"
    # Every limit at its default: the clients spread over many source addresses (see the docstring).
    signaling = build_signaling_server(
        turn_secret="bench-secret",
        public_url=public_url,
        turn_port=port,
        max_participants=100_000,
    )
    service = NodeService(NodeCore(signaling), None, directory=directory, public_url=public_url)
    app = web.Application()
    service.signaling.add_routes(app)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, HOST, port, backlog=4096).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()


# --------------------------------------------------------------------------------------------------
# The load generator


@dataclass
class Result:
    clients: int
    rooms: int
    in_flight: int
    connect_s: float
    join_s: float
    joins_per_s: float
    join_p50_ms: float
    join_p99_ms: float
    join_max_ms: float
    rss_baseline_kib: int
    rss_joined_kib: int
    rss_per_client_kib: float
    server_cpu_s_join_phase: float
    failures: int


def join_percentiles(latencies: list[float]) -> dict[str, float]:
    """p50, p99 and max of sorted join latencies (ms), rounded; NaN when there are none."""
    if not latencies:
        return {"join_p50_ms": float("nan"), "join_p99_ms": float("nan"), "join_max_ms": float("nan")}
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {
        "join_p50_ms": round(statistics.median(latencies), 2),
        "join_p99_ms": round(p99, 2),
        "join_max_ms": round(latencies[-1], 2),
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def source_address(index: int, warm_up: bool = False) -> str:
    """Where client ``index`` connects from: :data:`CLIENTS_PER_ADDRESS` per address, in 127.1.0.0/16
    (warm-up clients one each in 127.2.0.0/16)."""
    if warm_up:
        return f"127.2.{index >> 8}.{(index & 255) + 1}"
    block = index // CLIENTS_PER_ADDRESS
    return f"127.1.{block >> 8}.{(block & 255) + 1}"


class Sessions:
    """One aiohttp session per source address (a connector binds one ``local_addr``)."""

    def __init__(self) -> None:
        self._by_source: dict[str, aiohttp.ClientSession] = {}

    def get(self, source: str) -> aiohttp.ClientSession:
        session = self._by_source.get(source)
        if session is None:
            connector = aiohttp.TCPConnector(limit=0, force_close=True, local_addr=(source, 0))
            session = self._by_source[source] = aiohttp.ClientSession(connector=connector)
        return session

    async def close(self) -> None:
        for session in self._by_source.values():
            await session.close()


class BenchClient:
    def __init__(self, index: int, room: str, source: str) -> None:
        self.index = index
        self.room = room
        self.source = source
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.joined = asyncio.get_running_loop().create_future()
        self.latency = float("nan")
        self.reader: asyncio.Task[None] | None = None

    async def connect(self, sessions: Sessions, url: str) -> None:
        session = sessions.get(self.source)
        self.ws = await session.ws_connect(url, autoping=True, compress=0, max_msg_size=1 << 20)
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            if not self.joined.done():
                data = json.loads(message.data)
                if data["type"] == "joined":
                    self.joined.set_result(time.perf_counter())
                elif data["type"] == "error":
                    self.joined.set_exception(RuntimeError(data["code"]))
        if not self.joined.done():
            self.joined.set_exception(RuntimeError(f"closed {self.ws.close_code}"))

    async def join(self) -> None:
        assert self.ws is not None
        frame = json.dumps({"type": "join", "v": 1, "room": self.room, "displayName": f"client {self.index}"})
        start = time.perf_counter()
        await self.ws.send_str(frame)
        self.latency = await self.joined - start

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


async def gather_limited(limit: int, coroutines: list[Any]) -> list[BaseException | None]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coroutine: Any) -> BaseException | None:
        async with semaphore:
            try:
                await coroutine
            except Exception as exc:
                return exc
            return None

    return await asyncio.gather(*(one(c) for c in coroutines))


async def pinger(clients: list[BenchClient]) -> None:
    while True:
        await asyncio.sleep(PING_INTERVAL_S)
        for c in clients:
            if c.ws is not None and not c.ws.closed:
                await c.ws.send_str('{"type":"ping"}')


async def load(args: argparse.Namespace, port: int, server_pid: int) -> Result:
    url = f"ws://{HOST}:{port}/v1/ws"
    sessions = Sessions()
    try:
        warm = [BenchClient(i, f"warm-{i // 4}", source_address(i, warm_up=True)) for i in range(20)]
        await gather_limited(args.in_flight, [c.connect(sessions, url) for c in warm])
        await gather_limited(args.in_flight, [c.join() for c in warm])
        for c in warm:
            await c.close()
        await asyncio.sleep(1.0)
        baseline = rss_kib(server_pid)

        clients = [BenchClient(i, f"room-{i % args.rooms}", source_address(i)) for i in range(args.clients)]
        t0 = time.perf_counter()
        errors = await gather_limited(args.in_flight, [c.connect(sessions, url) for c in clients])
        connect_s = time.perf_counter() - t0
        failures = sum(e is not None for e in errors)
        pings = asyncio.create_task(pinger(clients))

        cpu0 = cpu_seconds(server_pid)
        t0 = time.perf_counter()
        ready = [c for c in clients if c.ws is not None]
        errors = await gather_limited(args.in_flight, [c.join() for c in ready])
        join_s = time.perf_counter() - t0
        cpu_join = cpu_seconds(server_pid) - cpu0
        failures += sum(e is not None for e in errors)
        for e in {repr(e) for e in errors if e is not None}:
            print(f"  join failure: {e}", file=sys.stderr)

        await asyncio.sleep(1.0)
        joined_rss = rss_kib(server_pid)
        pings.cancel()
        latencies = sorted(c.latency * 1000 for c in clients if c.latency == c.latency)
        await gather_limited(args.in_flight, [c.close() for c in clients])
    finally:
        await sessions.close()

    ok = len(latencies)
    return Result(
        clients=args.clients,
        rooms=args.rooms,
        in_flight=args.in_flight,
        connect_s=round(connect_s, 3),
        join_s=round(join_s, 3),
        joins_per_s=round(ok / join_s, 1) if join_s else 0.0,
        **join_percentiles(latencies),
        rss_baseline_kib=baseline,
        rss_joined_kib=joined_rss,
        rss_per_client_kib=round((joined_rss - baseline) / max(ok, 1), 2),
        server_cpu_s_join_phase=round(cpu_join, 2),
        failures=failures,
    )


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(max(soft, needed), hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < needed:
        raise SystemExit(f"need {needed} file descriptors, the hard limit is {hard}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=100, help="handshakes or joins outstanding at once")
    parser.add_argument("--smoke", action="store_true", help="200 clients in 50 rooms")
    parser.add_argument("--timeout", type=float, default=180.0, help="bound on the whole run, seconds")
    parser.add_argument("--server-cpu", type=int, default=1)
    parser.add_argument("--load-cpu", type=int, default=0)
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.clients, args.rooms = 200, 50
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit(2 * args.clients + 256)
    if args.serve:
        uvloop.run(serve(args.serve))
        return 0

    pin = (os.cpu_count() or 1) >= 2
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--clients", str(args.clients)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {args.server_cpu})) if pin else None,  # noqa: PLW1509
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("server did not start")
        if pin:
            os.sched_setaffinity(0, {args.load_cpu})
        print(f"# signaling load: {args.clients} clients in {args.rooms} rooms, {args.in_flight} in flight")
        result = uvloop.run(asyncio.wait_for(load(args, port, server.pid), args.timeout))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    doc = {
        "result": asdict(result),
        "smoke": args.smoke,
        "pinned": pin,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "aiohttp": aiohttp.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = args.json or REPO / "bench" / "out" / f"signaling_load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    r = result
    print(
        f"| {r.clients} clients / {r.rooms} rooms | join p50 {r.join_p50_ms} ms | p99 {r.join_p99_ms} ms "
        f"| max {r.join_max_ms} ms | {r.joins_per_s} joins/s "
        f"| RSS {r.rss_baseline_kib} -> {r.rss_joined_kib} KiB = {r.rss_per_client_kib} KiB/client "
        f"| server CPU {r.server_cpu_s_join_phase} s | failures {r.failures} |"
    )
    print(f"# results in {out}")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
