"""Redis commands and bytes per join in a cluster (docs/cluster.md, BENCHMARKS.md "Cluster").

Starts a redis-server, a PostgreSQL and two ``meet443 serve`` nodes on 127.0.0.2 and 127.0.0.3 (the helpers of
tests/aio/test_cluster.py), measures the idle background (heartbeats, lease renewals) for a few
seconds, then joins ``--rooms`` rooms of 4 (two participants through each node, so half the joins
are relayed), each participant sending one chat message, and reads Redis's own counters
(``INFO commandstats``, ``INFO stats`` net bytes, after ``CONFIG RESETSTAT``): no MONITOR.

    .venv/bin/python bench/cluster_redis.py            # 100 rooms, 400 joins
    .venv/bin/python bench/cluster_redis.py --rooms 10 # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

import aiohttp  # noqa: E402
from tests.aio.test_cluster import NODES, common_port, start_node, wait_listening, write_certificate  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402
from tests.redis_server import RedisServer, running_redis  # noqa: E402

SECRET = "bench-secret"


def net_bytes(redis: RedisServer) -> tuple[int, int]:
    stats = redis.command(b"INFO stats").decode()
    values = dict(line.split(":", 1) for line in stats.splitlines() if ":" in line)
    return int(values["total_net_input_bytes"]), int(values["total_net_output_bytes"])


def snapshot(redis: RedisServer) -> tuple[dict[str, int], tuple[int, int]]:
    return redis.info_commandstats(), net_bytes(redis)


def without_probe(calls: dict[str, int]) -> dict[str, int]:
    # Our own INFO/CONFIG reads are not the nodes'.
    return {k: v for k, v in calls.items() if k not in ("info", "config|resetstat", "config")}


async def join_rooms(urls: list[str], rooms: int, ssl_ctx: ssl.SSLContext) -> None:
    """Rooms in parallel (20 at a time), the 4 joins of each in order: the first places the room."""
    gate = asyncio.Semaphore(20)
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def room(http: aiohttp.ClientSession, r: int) -> None:
        async with gate:
            for i in range(4):
                ws = await http.ws_connect(urls[i // 2])
                join = {"type": "join", "v": 1, "room": f"bench-{r}", "displayName": f"p{i}"}
                await ws.send_str(json.dumps(join))
                while json.loads((await ws.receive(timeout=10)).data)["type"] != "joined":
                    pass
                await ws.send_str(json.dumps({"type": "chat", "text": "hi", "clientMessageId": "1"}))
                sockets.append(ws)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=0)) as http:
        await asyncio.gather(*(room(http, r) for r in range(rooms)))
        await asyncio.sleep(0.5)  # the chat outbox drains
        for ws in sockets:
            await ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of background to measure")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as directory,
        running_redis(Path(directory)) as redis,
        PostgresServer() as postgres,
    ):
        tmp = Path(directory)
        (tmp / "secret").write_text(SECRET)
        (tmp / "resume-key").write_text("r" * 64)
        cert, key = write_certificate(tmp)
        port = common_port()
        # Every client is 127.0.0.1: lift the per-address limits (the bench counts Redis, not them).
        extra = (
            "--log-level",
            "warning",
            "--signaling-sockets-per-address",
            "100000",
            "--joins-per-minute",
            "100000",
            "--database",
            asyncio.run(postgres.fresh_database()),
        )
        nodes = [start_node(tmp, host, port, redis, cert, key, *extra) for host in NODES[:2]]
        try:
            for node in nodes:
                wait_listening(node)
            time.sleep(2.5)  # both nodes see each other
            redis.command(b"CONFIG RESETSTAT")
            time.sleep(args.idle)
            idle_calls, (idle_in, idle_out) = snapshot(redis)
            idle_calls = without_probe(idle_calls)
            redis.command(b"CONFIG RESETSTAT")
            started = time.monotonic()
            ssl_ctx = ssl.create_default_context(cafile=str(cert))
            asyncio.run(join_rooms([n.ws_url for n in nodes], args.rooms, ssl_ctx))
            elapsed = time.monotonic() - started
            calls, (bytes_in, bytes_out) = snapshot(redis)
            calls = without_probe(calls)
        finally:
            for node in nodes:
                node.stop()
    joins = 4 * args.rooms
    scale = elapsed / args.idle
    per_join = {
        name: round((count - idle_calls.get(name, 0) * scale) / joins, 3)
        for name, count in sorted(calls.items())
    }
    result = {
        "rooms": args.rooms,
        "joins": joins,
        "seconds": round(elapsed, 2),
        "idle_commands_per_second": round(sum(idle_calls.values()) / args.idle, 1),
        "idle_bytes_per_second": round((idle_in + idle_out) / args.idle),
        "commands_per_join": round((sum(calls.values()) - sum(idle_calls.values()) * scale) / joins, 3),
        "bytes_in_per_join": round((bytes_in - idle_in * scale) / joins),
        "bytes_out_per_join": round((bytes_out - idle_out * scale) / joins),
        "by_command": per_join,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
