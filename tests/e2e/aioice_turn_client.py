"""Run inside a lab namespace: allocate a TURN relay with aioice and bounce datagrams off a peer.

The peer is a UDP echo socket in this same process (on 127.0.0.2 by default), reached only through
the relay. Prints one JSON object on stdout and exits 0, or prints {"error": ...} and exits 1.

    python aioice_turn_client.py --server 127.0.0.1:443 --transport tls --ca ca.pem \\
        --username u --password p --count 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import struct
import sys
import time
from typing import Any, cast

from aioice.turn import create_turn_endpoint

Addr = tuple[str, int]


class EchoPeer(asyncio.DatagramProtocol):
    """The far end: echoes each datagram and remembers who sent it."""

    def __init__(self) -> None:
        self.sources: list[Addr] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.sources.append(addr)
        assert self.transport is not None
        self.transport.sendto(data, addr)


class RelayClient(asyncio.DatagramProtocol):
    """The TURN client's application side: collects echoes by sequence number."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.echoes: dict[int, bytes] = {}
        self.senders: set[Addr] = set()
        self.errors: list[str] = []
        self.all_back = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        (seq,) = struct.unpack_from("!I", data)
        self.echoes[seq] = data
        self.senders.add((addr[0], addr[1]))
        if len(self.echoes) >= self.expected:
            self.all_back.set()

    def error_received(self, exc: Exception) -> None:
        self.errors.append(repr(exc))


def payload(seq: int, size: int) -> bytes:
    body = bytes((seq + i) % 251 for i in range(size - 4))
    return struct.pack("!I", seq) + body


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    loop_errors: list[str] = []
    loop.set_exception_handler(
        lambda _loop, ctx: loop_errors.append(str(ctx.get("exception") or ctx["message"]))
    )
    host, port = args.server.rsplit(":", 1)
    peer_t, peer = await loop.create_datagram_endpoint(EchoPeer, local_addr=(args.peer_host, 0))
    peer_addr: Addr = peer_t.get_extra_info("sockname")[:2]

    tls: ssl.SSLContext | None = None
    if args.transport == "tls":
        tls = ssl.create_default_context(cafile=args.ca)  # verifies the chain and the IP SAN
    t0 = time.monotonic()
    turn_t, client = await asyncio.wait_for(
        create_turn_endpoint(
            lambda: RelayClient(args.count),
            server_addr=(host, int(port)),
            username=args.username,
            password=args.password,
            ssl=tls,
            transport="udp" if args.transport == "udp" else "tcp",
        ),
        timeout=args.timeout,
    )
    allocated_s = time.monotonic() - t0
    relayed: Addr = turn_t.get_extra_info("sockname")
    mapped: Addr = turn_t.get_extra_info("related_address")
    try:
        for seq in range(args.count):
            turn_t.sendto(payload(seq, args.size), peer_addr)
            await asyncio.sleep(args.interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(client.all_back.wait(), timeout=args.timeout)
    finally:
        turn_t.close()
        await asyncio.sleep(0.2)  # let the Refresh(lifetime=0) go out
        peer_t.close()
    corrupted = [s for s, data in client.echoes.items() if data != payload(s, args.size)]
    return {
        "allocated_s": round(allocated_s, 3),
        "relayed": list(relayed),
        "mapped": list(mapped),
        "peer": list(peer_addr),
        "peer_saw_sources": sorted({f"{h}:{p}" for h, p in peer.sources}),
        "sent": args.count,
        "received": len(client.echoes),
        "corrupted": corrupted,
        "echo_senders": sorted(f"{h}:{p}" for h, p in client.senders),
        "errors": client.errors + loop_errors,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="host:port of the TURN server")
    ap.add_argument("--transport", choices=["udp", "tcp", "tls"], default="udp")
    ap.add_argument("--ca", help="CA file trusted for TLS")
    ap.add_argument("--username", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--peer-host", default="127.0.0.2")
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--interval", type=float, default=0.002)
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()
    try:
        result = asyncio.run(run(args))
    except Exception as exc:  # reported to the test as data, not as a traceback
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
