#!/usr/bin/env python3
"""Cluster join benchmark (issue 15): join latency with many WebSockets spread over three nodes, and
what each join costs in Redis; the same load on one node alone, in the same run, as the anchor.

    sudo .venv/bin/python bench/cluster_join.py            # 2,000 clients in 500 rooms of 4
    sudo .venv/bin/python bench/cluster_join.py --smoke    # 200 clients in 50 rooms, < 30 s

Setup: the cluster lab of tests/lab/cluster.py (network namespaces, so root): three ``meet443
serve`` nodes sharing one redis-server and one PostgreSQL, with the flags of docs/cluster.md, TLS
on port 443 with a lab CA. The load generator runs inside the lab's load namespace (this file with
``--load``) and reuses bench/signaling_load.py's clients: client *i* opens ``wss://n<i mod
3>.cx.test/v1/ws`` from one of 200 source addresses (10 clients each, 10.200.131.3-202), so rooms
of four (room r gets clients r, r+R, r+2R, r+3R) mix nodes and most joins cross from an edge to the
room's home. Then the three nodes stop and node 1 starts again without any cluster flag: the same
load on one node is the anchor. Nodes run with ``--max-participants`` above the client count, all
other limits as in the tests (``--joins-per-minute 600``). Nothing is pinned: three nodes, Redis
and the load share the machine's cores, as they would a small VM.

Phases per target (as bench/signaling_load.py): 20 warm-up joins; all sockets connect (TLS); then
all join, ``--in-flight`` at a time; latency is ``send(join)`` to ``joined`` at the client. Redis is
read before and after the join phase (``INFO commandstats``: calls of every command; ``INFO stats``:
``total_net_input_bytes`` + ``total_net_output_bytes``); the nodes' own background traffic
(heartbeats, lease renewals) is measured over an idle second before and subtracted pro rata, so
the per-join figures are what joins add.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.postgres, which the lab imports
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

import uvloop  # noqa: E402
from signaling_load import (  # noqa: E402
    BenchClient,
    Sessions,
    gather_limited,
    join_percentiles,
    pinger,
    raise_fd_limit,
)

from lab.cluster import DB_IP, LOAD_NET, Cluster, ClusterNode, cluster_lab, node_name  # noqa: E402
from lab.pki import make_test_pki  # noqa: E402

CLIENTS_PER_ADDRESS = 10
WARM_UP = 20
IDLE_WINDOW_S = 1.0


@dataclass
class Result:
    target: str
    nodes: int
    clients: int
    rooms: int
    in_flight: int
    connect_s: float
    join_s: float
    joins_per_s: float
    join_p50_ms: float
    join_p99_ms: float
    join_max_ms: float
    redis_commands_per_join: float
    redis_bytes_per_join: float
    redis_background_commands_per_s: float
    redis_top_commands: dict[str, float]
    failures: int


# --------------------------------------------------------------------------------------------------
# Inside the load namespace


def source_address(index: int, warm_up: bool = False) -> str:
    if warm_up:
        return f"{LOAD_NET}.{250 + index % 4}"
    return f"{LOAD_NET}.{3 + index // CLIENTS_PER_ADDRESS}"


def redis_counters() -> tuple[dict[str, int], int]:
    """Calls per command and network bytes in+out of the lab's Redis (``$REDISCLI_AUTH`` set)."""

    def info(section: str) -> list[str]:
        argv = ["redis-cli", "-h", DB_IP, "--raw", "INFO", section]
        return subprocess.run(
            argv, capture_output=True, text=True, check=True, timeout=10
        ).stdout.splitlines()

    calls = {}
    for line in info("commandstats"):
        if line.startswith("cmdstat_"):
            name, _, fields = line.partition(":")
            calls[name.removeprefix("cmdstat_")] = int(fields.split(",")[0].removeprefix("calls="))
    stats = dict(line.strip().split(":", 1) for line in info("stats") if ":" in line)
    return calls, int(stats["total_net_input_bytes"]) + int(stats["total_net_output_bytes"])


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def subtract(calls: dict[str, Any], less: dict[str, Any], times: float) -> dict[str, float]:
    return {k: calls.get(k, 0) - less.get(k, 0) * times for k in {*calls, *less}}


async def load(spec: dict[str, Any]) -> Result:
    clients, rooms, in_flight, names = spec["clients"], spec["rooms"], spec["in_flight"], spec["nodes"]
    urls = [f"wss://{name}/v1/ws" for name in names]
    sessions = Sessions()
    try:
        warm = [
            BenchClient(i, f"{spec['tag']}-warm-{i // 4}", source_address(i, True)) for i in range(WARM_UP)
        ]
        await gather_limited(
            in_flight, [c.connect(sessions, urls[i % len(urls)]) for i, c in enumerate(warm)]
        )
        await gather_limited(in_flight, [c.join() for c in warm])
        for c in warm:
            await c.close()
        await asyncio.sleep(0.5)

        # Reading the counters is itself counted (redis-cli's AUTH and INFO): one read right after
        # another measures that; a second later, the nodes' background traffic adds to it.
        idle0, idle_bytes0 = redis_counters()
        idle1, idle_bytes1 = redis_counters()
        await asyncio.sleep(IDLE_WINDOW_S)
        idle2, idle_bytes2 = redis_counters()
        reading, reading_bytes = delta(idle0, idle1), idle_bytes1 - idle_bytes0
        background = subtract(delta(idle1, idle2), reading, 1.0)
        background_bytes = idle_bytes2 - idle_bytes1 - reading_bytes

        everyone = [
            BenchClient(i, f"{spec['tag']}-room-{i % rooms}", source_address(i)) for i in range(clients)
        ]
        t0 = time.perf_counter()
        errors = await gather_limited(
            in_flight, [c.connect(sessions, urls[c.index % len(urls)]) for c in everyone]
        )
        connect_s = time.perf_counter() - t0
        failures = sum(e is not None for e in errors)
        pings = asyncio.create_task(pinger(everyone))

        before, bytes0 = redis_counters()
        t0 = time.perf_counter()
        ready = [c for c in everyone if c.ws is not None]
        errors = await gather_limited(in_flight, [c.join() for c in ready])
        join_s = time.perf_counter() - t0
        after, bytes1 = redis_counters()
        failures += sum(e is not None for e in errors)
        for e in {repr(e) for e in errors if e is not None}:
            print(f"  join failure: {e}", file=sys.stderr)
        pings.cancel()
        latencies = sorted(c.latency * 1000 for c in everyone if c.latency == c.latency)
        await gather_limited(in_flight, [c.close() for c in everyone])
    finally:
        await sessions.close()

    ok = max(len(latencies), 1)
    scale = join_s / IDLE_WINDOW_S  # background traffic during the join phase, pro rata
    net = subtract(subtract(delta(before, after), reading, 1.0), background, scale)
    net_bytes = (bytes1 - bytes0) - reading_bytes - background_bytes * scale
    top = dict(sorted(((k, round(v / ok, 2)) for k, v in net.items() if v > 0), key=lambda kv: -kv[1])[:8])
    return Result(
        target=spec["target"],
        nodes=len(names),
        clients=clients,
        rooms=rooms,
        in_flight=in_flight,
        connect_s=round(connect_s, 3),
        join_s=round(join_s, 3),
        joins_per_s=round(len(latencies) / join_s, 1) if join_s else 0.0,
        **join_percentiles(latencies),
        redis_commands_per_join=round(max(0.0, sum(net.values())) / ok, 2),
        redis_bytes_per_join=round(max(0.0, net_bytes) / ok, 1),
        redis_background_commands_per_s=round(sum(background.values()) / IDLE_WINDOW_S, 1),
        redis_top_commands=top,
        failures=failures,
    )


# --------------------------------------------------------------------------------------------------
# The driver (root namespace: builds the lab, runs the load inside it)


def run_load(cluster: Cluster, spec: dict[str, Any], timeout: float) -> Result:
    assert cluster.load is not None
    env = ["env", f"SSL_CERT_FILE={cluster.pki.ca}", f"REDISCLI_AUTH={cluster.redis.password}"]
    done = cluster.load.run(
        [*env, sys.executable, __file__, "--load", json.dumps(spec)], timeout=timeout, check=False
    )
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise SystemExit(
            f"load generator failed ({done.returncode}):\n{done.stderr[-3000:]}\n{cluster.logs(2000)}"
        )
    return Result(**json.loads(done.stdout.splitlines()[-1]))


def table_row(r: Result) -> str:
    return (
        f"| {r.target} | {r.clients} / {r.rooms} | {r.join_p50_ms} | {r.join_p99_ms} | {r.join_max_ms} "
        f"| {r.joins_per_s} | {r.redis_commands_per_join} | {r.redis_bytes_per_join} | {r.failures} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=100, help="handshakes or joins outstanding at once")
    parser.add_argument("--smoke", action="store_true", help="200 clients in 50 rooms")
    parser.add_argument("--timeout", type=float, default=240.0, help="bound on each load run, seconds")
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        spec = json.loads(args.load)
        raise_fd_limit(2 * spec["clients"] + 256)
        result = uvloop.run(asyncio.wait_for(load(spec), spec["timeout"]))
        print(json.dumps(asdict(result)))
        return 0
    if args.smoke:
        args.clients, args.rooms = 200, 50
    if args.clients > CLIENTS_PER_ADDRESS * 200:
        raise SystemExit(f"at most {CLIENTS_PER_ADDRESS * 200} clients (200 source addresses)")
    if os.geteuid() != 0:
        raise SystemExit("the cluster lab uses network namespaces: run as root")

    started = time.monotonic()
    spec = {
        "clients": args.clients,
        "rooms": args.rooms,
        "in_flight": args.in_flight,
        "timeout": args.timeout,
    }
    extra = ("--max-participants", str(2 * args.clients + 100))
    results = []
    with tempfile.TemporaryDirectory(prefix="cx-bench-") as tmp:
        work = Path(tmp)
        pki = make_test_pki(work / "ca")
        prefix = f"cxb{os.getpid() % 100}-"
        with cluster_lab(work, pki, prefix=prefix, clients=0, load=True, node_extra=extra) as c:
            wait_registered(c)
            names = [n.name for n in c.nodes]
            print(f"# cluster join: {args.clients} clients in {args.rooms} rooms, {args.in_flight} in flight")
            results.append(
                run_load(
                    c, {**spec, "target": "3 nodes + Redis", "nodes": names, "tag": "c"}, args.timeout + 30
                )
            )
            for node in c.nodes:
                node.stop()
            single = ClusterNode(0, c.nodes[0].ns, c.nodes[0].pki, work / "single", (), extra).start()
            results.append(
                run_load(
                    c,
                    {**spec, "target": "1 node alone", "nodes": [single.name], "tag": "s"},
                    args.timeout + 30,
                )
            )
    doc = {
        "results": [asdict(r) for r in results],
        "smoke": args.smoke,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "redis": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "wall_s": round(time.monotonic() - started, 1),
    }
    out = args.json or REPO / "bench" / "out" / f"cluster_join-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print("| target | clients / rooms | join p50 ms | p99 ms | max ms | joins/s | Redis cmds/join "
          "| Redis bytes/join | failures |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(table_row(r))
    for r in results:
        background = r.redis_background_commands_per_s
        print(f"# {r.target}: Redis commands per join {r.redis_top_commands}; background {background}/s")
    print(f"# results in {out}; {doc['wall_s']} s")
    return 1 if any(r.failures for r in results) else 0


def wait_registered(cluster: Cluster, timeout: float = 10.0) -> None:
    """Until every node's registry entry is in Redis (docs/cluster.md: ``meet443:node:<id>``)."""
    want = {node_name(i) for i in range(len(cluster.nodes))}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        have = {k.removeprefix("meet443:node:") for k in cluster.redis.keys("meet443:node:*")}
        if have >= want:
            return
        time.sleep(0.2)
    print(f"# warning: nodes not all registered after {timeout} s; joins may fail", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
