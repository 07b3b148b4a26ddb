"""Round trips from inside a lab namespace: TCP connects and STUN Binding requests to servers.

    python rtt_probe.py COUNT HOST:PORT ...

prints ``{"HOST:PORT": {"tcp": [ms, ...], "stun": [ms, ...]}, ...}``. COUNT TCP connects one after
another and, beside them, COUNT STUN Binding requests one after another; targets run in parallel.
A STUN request unanswered within a second counts as lost (absent from the list). The probe
freezes the garbage collector's view of what exists at start, so a collection never lands inside
a measured round trip.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Sequence

#: RFC 8489 §5: Binding request / success response, magic cookie.
BINDING_REQUEST, BINDING_SUCCESS, MAGIC_COOKIE = 0x0001, 0x0101, 0x2112A442
_HEADER = struct.Struct("!HHI12s")
TIMEOUT_S = 1.0
#: Between probes: the lab measures distance, not how fast it can take a burst.
GAP_S = 0.01


async def tcp_connect_ms(host: str, port: int) -> float:
    start = time.perf_counter()
    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT_S * 5)
    elapsed = (time.perf_counter() - start) * 1000.0
    writer.close()
    await writer.wait_closed()
    return elapsed


async def stun_binding_ms(sock: socket.socket, host: str, port: int) -> float | None:
    loop = asyncio.get_running_loop()
    transaction = os.urandom(12)
    start = time.perf_counter()
    await loop.sock_sendto(sock, _HEADER.pack(BINDING_REQUEST, 0, MAGIC_COOKIE, transaction), (host, port))
    deadline = start + TIMEOUT_S
    while (left := deadline - time.perf_counter()) > 0:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 2048), left)
        except TimeoutError:
            return None
        if len(data) >= 20 and _HEADER.unpack_from(data)[0] == BINDING_SUCCESS and data[8:20] == transaction:
            return (time.perf_counter() - start) * 1000.0
    return None


async def probe(target: str, count: int) -> dict[str, list[float]]:
    host, _, port_text = target.rpartition(":")
    port = int(port_text)
    tcp: list[float] = []
    stun: list[float] = []

    async def connects() -> None:
        for _ in range(count):
            tcp.append(await tcp_connect_ms(host, port))
            await asyncio.sleep(GAP_S)

    async def bindings() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            for _ in range(count):
                if (ms := await stun_binding_ms(sock, host, port)) is not None:
                    stun.append(ms)
                await asyncio.sleep(GAP_S)
        finally:
            sock.close()

    await asyncio.gather(connects(), bindings())
    return {"tcp": tcp, "stun": stun}


async def run(count: int, targets: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    results = await asyncio.gather(*(probe(t, count) for t in targets))
    return dict(zip(targets, results, strict=True))


def main(argv: Sequence[str]) -> int:
    gc.freeze()
    print(json.dumps(asyncio.run(run(int(argv[1]), argv[2:]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
