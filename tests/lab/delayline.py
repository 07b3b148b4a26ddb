"""A user-space delay line: distance for the namespace lab on a kernel without netem.

This kernel has no ``netem``, no ``fq``/``etf`` qdiscs and no nft ``queue`` statement, so round-trip
time cannot come from tc. Instead a router namespace's policy routing sends every packet that enters
it from a lab link into a TUN device (see :mod:`lab.regions`); this program reads each packet from the
TUN, holds it for the one-way delay of its (source network, destination network) pair and writes it
back, after which the kernel routes it normally (``iif TUN`` → main table).

    python delayline.py SPEC.json

``SPEC.json``: ``{"tun": "rgtun", "delays": [["10.200.150.0/28", "10.200.150.16/28", 5.0], ...]}``,
one-way delays in milliseconds; pairs not listed pass at once. SIGTERM stops it.

Cost per packet, because Python forwards every packet of the lab on a 2-core machine: the read loop
drains the TUN until EAGAIN in one callback (one clock read per batch), the pair is found by one
dict lookup on the packet's 8 address bytes, and each distinct delay is one FIFO with at most one
armed ``call_at`` timer — a constant delay keeps packets in order, so only the head needs a timer.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import gc
import ipaddress
import json
import os
import signal
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uvloop

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
#: A TUN read returns one packet; 64 KiB covers GSO-sized ones.
MAX_PACKET = 65536
#: uvloop arms libuv timers in whole milliseconds, so a timer can fire up to a millisecond before
#: its deadline; packets due within this slack go out then instead of re-arming a timer.
SLACK_S = 0.0008

Network = ipaddress.IPv4Network


@dataclass(frozen=True)
class DelaySpec:
    """Which TUN device to serve and the one-way delay of each (source, destination) pair."""

    tun: str
    delays: tuple[tuple[Network, Network, float], ...]

    @classmethod
    def parse(cls, document: str) -> DelaySpec:
        raw = json.loads(document)
        delays = tuple(
            (ipaddress.IPv4Network(src), ipaddress.IPv4Network(dst), float(ms) / 1000.0)
            for src, dst, ms in raw["delays"]
        )
        if any(d < 0 for _, _, d in delays):
            raise ValueError("delays must not be negative")
        return cls(tun=str(raw["tun"]), delays=delays)

    def to_json(self) -> str:
        rows = [[str(src), str(dst), seconds * 1000.0] for src, dst, seconds in self.delays]
        return json.dumps({"tun": self.tun, "delays": rows})

    def delay_of(self, addresses: bytes) -> float:
        """The one-way delay, in seconds, of a packet whose IPv4 source and destination are ``addresses``."""
        src, dst = ipaddress.IPv4Address(addresses[:4]), ipaddress.IPv4Address(addresses[4:8])
        return next((d for s, t, d in self.delays if src in s and dst in t), 0.0)


class DelayLine:
    """Reads packets from ``fd``, writes each back after its pair's delay."""

    def __init__(self, fd: int, spec: DelaySpec, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = fd
        self._spec = spec
        self._loop = loop
        #: Address bytes (source + destination) → the FIFO of its delay, or None for no delay.
        self._route: dict[bytes, _Fifo | None] = {}
        self._fifos: dict[float, _Fifo] = {}
        self.forwarded = 0
        self.dropped = 0

    def readable(self) -> None:
        now = self._loop.time()
        fd, route = self._fd, self._route
        while True:
            try:
                packet = os.read(fd, MAX_PACKET)
            except BlockingIOError:
                return
            if len(packet) < 20 or packet[0] >> 4 != 4:
                continue  # IPv6 and runts: the lab is IPv4 only
            key = packet[12:20]
            try:
                fifo = route[key]
            except KeyError:
                fifo = route[key] = self._fifo_for(key)
            if fifo is None:
                self._write(packet)
            else:
                fifo.push(now, packet)

    def _fifo_for(self, key: bytes) -> _Fifo | None:
        delay = self._spec.delay_of(key)
        if delay <= 0:
            return None
        if delay not in self._fifos:
            self._fifos[delay] = _Fifo(delay, self)
        return self._fifos[delay]

    def _write(self, packet: bytes) -> None:
        try:
            os.write(self._fd, packet)
            self.forwarded += 1
        except OSError:
            self.dropped += 1  # the TUN's queue is full: drop, as a real link would


class _Fifo:
    """Packets of one delay in arrival order; one timer, armed for the head."""

    def __init__(self, delay: float, line: DelayLine) -> None:
        self.delay = delay
        self._line = line
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    def push(self, now: float, packet: bytes) -> None:
        due = now + self.delay
        self._queue.append((due, packet))
        if self._timer is None:
            self._timer = self._line._loop.call_at(due, self._flush)

    def _flush(self) -> None:
        self._timer = None
        queue, write = self._queue, self._line._write
        limit = self._line._loop.time() + SLACK_S
        while queue and queue[0][0] <= limit:
            write(queue.popleft()[1])
        if queue:
            self._timer = self._line._loop.call_at(queue[0][0], self._flush)


def open_tun(name: str) -> int:
    """Attach to TUN device ``name`` (created before with ``ip tuntap add``), non-blocking, no header."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


async def serve(spec: DelaySpec) -> None:
    loop = asyncio.get_running_loop()
    fd = open_tun(spec.tun)
    line = DelayLine(fd, spec, loop)
    stop = asyncio.Event()
    loop.add_reader(fd, line.readable)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"delay line on {spec.tun}: {len(spec.delays)} pairs", flush=True)
    await stop.wait()
    loop.remove_reader(fd)
    os.close(fd)
    print(f"forwarded {line.forwarded}, dropped {line.dropped}", flush=True)


def main(argv: Sequence[str]) -> int:
    spec = DelaySpec.parse(Path(argv[1]).read_text())
    # The forwarding path allocates only packets and tuples that die young; a full collection
    # in the middle of a burst would hold every queue at once.
    gc.freeze()
    uvloop.run(serve(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
