"""Placement race probe, run inside a client namespace of the cluster lab (tests/lab/cluster.py).

For each trial: one WebSocket to every node under the public name (TLS verified against the lab
CA), then the first join of a new room sent on all of them at the same moment (the three sends are
released together once every socket is open); then what each participant was told, and the room's
lease and fencing epoch as Redis holds them while all three are in. One JSON line per trial:

    {"room", "hosts": [bool per socket], "ids": [[ids each socket knows]], "home", "epoch", "ms"}

The password for Redis comes from ``$REDISCLI_AUTH`` (redis-cli reads it there too).

    python placement_probe.py --ca CA --public meet.cx.test --node IP [--node IP ...] \\
        --redis-host IP --trials 50 --tag run1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import subprocess
import sys
import time
from typing import Any

import aiohttp

JOIN_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 2.0
#: Stop after this many trials without exactly one host: a broken placement fails fast.
MAX_BAD = 3


class Member:
    """One socket: its `joined` answer and every participant id it has heard of."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.joined: dict[str, Any] | None = None
        self.ids: set[str] = set()
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if data["type"] == "joined":
                self.joined = data
                self.ids |= {data["selfId"], *(p["id"] for p in data["participants"])}
            elif data["type"] == "participant-joined":
                self.ids.add(data["participant"]["id"])
            elif data["type"] == "error":
                self.joined = {"error": data}
            self.changed.set()

    async def wait(self, done: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done(self):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.0, deadline - time.monotonic()))


def redis_get(host: str, key: str) -> str | None:
    done = subprocess.run(
        ["redis-cli", "-h", host, "--raw", "GET", key], capture_output=True, text=True, timeout=10
    )
    value = done.stdout.strip()
    return value or None


async def trial(
    args: argparse.Namespace, session: aiohttp.ClientSession, ctx: ssl.SSLContext, room: str
) -> dict:
    t0 = time.perf_counter()
    sockets = await asyncio.gather(
        *(
            session.ws_connect(
                f"https://{ip}/v1/ws", ssl=ctx, server_hostname=args.public, headers={"Host": args.public}
            )
            for ip in args.node
        )
    )
    members = [Member(ws) for ws in sockets]
    try:
        frames = [
            json.dumps({"type": "join", "v": 1, "room": room, "displayName": f"probe {i}"})
            for i in range(len(members))
        ]
        # The barrier: every socket is open; the joins leave together.
        await asyncio.gather(*(m.ws.send_str(f) for m, f in zip(members, frames, strict=True)))
        for m in members:
            await m.wait(lambda m: m.joined is not None, JOIN_TIMEOUT_S)
        ms = (time.perf_counter() - t0) * 1000
        everyone = set().union(*(m.ids for m in members))
        try:
            for m in members:
                await m.wait(lambda m: m.ids >= everyone and len(m.ids) >= len(members), SETTLE_TIMEOUT_S)
        except TimeoutError:
            pass  # reported as the ids each socket knows
        home = redis_get(args.redis_host, f"meet443:room:{room}:home")
        epoch = redis_get(args.redis_host, f"meet443:room:{room}:epoch")
        return {
            "room": room,
            "hosts": [bool(m.joined and m.joined.get("host")) for m in members],
            "errors": [m.joined["error"] for m in members if m.joined and "error" in m.joined],
            "ids": [sorted(m.ids) for m in members],
            "home": home,
            "epoch": epoch,
            "ms": round(ms, 1),
        }
    finally:
        for m in members:
            await m.ws.close()
            m.reader.cancel()


async def main(args: argparse.Namespace) -> None:
    ctx = ssl.create_default_context(cafile=args.ca)
    async with aiohttp.ClientSession() as session:
        bad = 0
        for i in range(args.trials):
            result = await trial(args, session, ctx, f"race-{args.tag}-{i}")
            print(json.dumps(result), flush=True)
            bad += result["hosts"].count(True) != 1
            if bad >= MAX_BAD:
                break


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--ca", required=True)
    parser.add_argument("--public", required=True)
    parser.add_argument("--node", action="append", required=True, help="a node's address (repeat)")
    parser.add_argument("--redis-host", required=True)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--tag", default="t")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
