#!/usr/bin/env python3
"""CPU per forwarded packet inside one process: ``Conference`` with real DTLS-SRTP, no sockets.

    .venv/bin/python bench/sfu_datapath.py --cpu 1 --subscribers 10,40 --repeat 7
    .venv/bin/python bench/sfu_datapath.py --profile 40      # cProfile of 1 -> 40, top functions
    .venv/bin/python bench/sfu_datapath.py --smoke           # ~2 s plumbing check

One publisher and N subscribers join one group room of a :class:`~meet443.sfu.conference.Conference`
through the same in-memory wire as ``tests/sfu/test_conference.py`` (ICE check, DTLS handshake,
SRTP keys from it). The publisher then sends 1,100-byte VP8 packets (MID and abs-send-time header
extensions, 15-bit picture ID, a keyframe every 60 packets), SRTP-protected beforehand; the bench
times what the server does with them. Rows, all per *outgoing* packet:

- ``NodeService.datagram``: the adapter's entry (as ``UdpPortProtocol`` calls it), through the node
  core's routing, with transports whose ``sendto`` does nothing, i.e. everything the server runs per
  packet except the system call.
- ``Conference.receive_datagram``: the typed form alone (unprotect, router, protect, one
  ``ToClientFrom`` per copy), which the tests use.
- ``router.receive_rtp``: the router alone on the plaintext (rewrite, buffer, ``Outgoing``).
- ``unprotect`` (per incoming packet, divided by N) and ``protect`` (per copy):
  :class:`~meet443.proto.rtp.srtp.SrtpSession` alone.
- ``sendto, uvloop``: one ``DatagramTransport.sendto`` of 1,100 bytes to a socket on 127.0.0.1
  (drained between runs): the system call the real server adds to each copy.
- ``handle_timer``: one 20 ms tick of the room (the node runs it 50 times a second while a group
  room exists), in µs per tick.

Best and median of ``--repeat`` runs. Every copy is checked once before timing: the subscriber can
unprotect it and sees the payload the publisher sent.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import json
import os
import platform
import pstats
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import uvloop  # noqa: E402
from tests.sfu.test_conference import AIORTC_VIDEO_SSRC, ROOM, SFU, SFU_CERT, Room, seeded  # noqa: E402

from meet443.aio.node import NodeService  # noqa: E402
from meet443.node import NodeCore  # noqa: E402
from meet443.proto.addresses import ServerPort  # noqa: E402
from meet443.proto.rtp.codecs import Vp8PayloadDescriptor  # noqa: E402
from meet443.proto.rtp.packet import HeaderExtension, OneByteExtensions, RtpPacket  # noqa: E402
from meet443.proto.signaling.admission import Refusal  # noqa: E402
from meet443.proto.signaling.room import SignalingServer  # noqa: E402
from meet443.sfu.conference import Conference  # noqa: E402
from meet443.sfu.tracks import PcRole  # noqa: E402

SIZE = 1100
VP8_PT = 97  # aiortc's offer (tests/proto/sdp/fixtures/aiortc_offer.sdp)
MID_ID, ABS_SEND_TIME_ID = 1, 3
KEYFRAME_EVERY = 60


def video_stream(count: int) -> list[bytes]:
    extension = OneByteExtensions(
        (HeaderExtension(MID_ID, b"1"), HeaderExtension(ABS_SEND_TIME_ID, b"\0\0\0"))
    )
    packets = []
    for i in range(count):
        descriptor = bytes(Vp8PayloadDescriptor(start_of_partition=True, picture_id=(i // 4) & 0x7FFF))
        header = bytes((0x00 if i % KEYFRAME_EVERY == 0 else 0x01, 0, 0))
        probe = RtpPacket(VP8_PT, i & 0xFFFF, (i // 4) * 3000, AIORTC_VIDEO_SSRC, b"", extension=extension)
        filler = bytes(SIZE - len(bytes(probe)) - len(descriptor) - len(header))
        packets.append(
            bytes(
                RtpPacket(
                    VP8_PT,
                    i & 0xFFFF,
                    (i // 4) * 3000,
                    AIORTC_VIDEO_SSRC,
                    descriptor + header + filler,
                    extension=extension,
                )
            )
        )
    return packets


class Clock:
    """The adapter's clock: the room lives at the tests' NOW."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class NullTransport:
    """A DatagramTransport stand-in: the bench times everything but the system call."""

    sent = 0

    def sendto(self, data: bytes, address: Any) -> None:
        self.sent += 1


async def no_meetings(room: str, room_key: str | None, now: float) -> Refusal:
    return Refusal.ROOM_NOT_FOUND


def adapter(sfu: Conference, clock: Callable[[], float]) -> NodeService:
    """The asyncio adapter around a node whose SFU is ``sfu``; only its datagram path is used, so
    it needs no loop (the room's timers are due every 20 ms, no later than already armed)."""
    signaling = SignalingServer(ice_servers=lambda participant, now, rtts: ([], 0), token=lambda n: "t")
    node = NodeCore(signaling, None, sfu)
    service = NodeService(node, None, directory=no_meetings, public_url="https://sfu.test", clock=clock)
    service.udp[ServerPort.MAIN] = NullTransport()  # type: ignore[call-overload]
    service._armed = float("-inf")  # nothing to arm: the bench runs no loop
    return service


def make_room(subscribers: int) -> Room:
    room = Room()
    room.sfu = Conference(SFU_CERT, [SFU], seeded(2), last_n=9)
    alice = room.join("alice", 40001)
    room.publish(alice)
    room.connect(alice, "publish")
    for i in range(subscribers):
        sub = room.join(f"s{i}", 41000 + i)
        room.subscribe(sub)
        room.connect(sub, "subscribe")
    room.deliver(room.sfu.handle_timer(room.now))
    return room


def check(room: Room, stream: list[bytes], subscribers: int) -> None:
    """The copies are real: each subscriber unprotects its own and finds the publisher's payload."""
    alice = room.browsers["alice"]
    for b in room.browsers.values():
        b.received.clear()
    for plain in stream[:KEYFRAME_EVERY]:
        room.now += 0.001
        room.deliver(room.sfu.receive_datagram(alice.srtp["publish"].protect(plain), alice.address, room.now))
    for i in range(subscribers):
        b = room.browsers[f"s{i}"]
        media = [d for d in b.received if not 192 <= d[1] <= 223]
        assert len(media) == KEYFRAME_EVERY, (b.name, len(media))
        got = RtpPacket.parse(b.srtp["subscribe"].unprotect(media[-1]))
        # The VP8 descriptor (4 bytes here) carries the picture ID, which the SFU renumbers.
        assert got.payload[4:] == RtpPacket.parse(stream[KEYFRAME_EVERY - 1]).payload[4:]


def timed(fn: Callable[[], int], repeat: int) -> list[float]:
    """µs per unit for ``repeat`` runs of ``fn`` (which returns how many units it did)."""
    runs = []
    for _ in range(repeat):
        t0 = time.process_time_ns()
        units = fn()
        runs.append((time.process_time_ns() - t0) / 1000 / units)
    return runs


def measure(subscribers: int, packets: int, repeat: int) -> dict[str, list[float]]:
    room = make_room(subscribers)
    stream = video_stream(packets + KEYFRAME_EVERY)
    check(room, stream, subscribers)
    alice = room.browsers["alice"]
    tx = alice.srtp["publish"]
    sfu = room.sfu
    base = KEYFRAME_EVERY
    rows: dict[str, list[float]] = {}

    clock = Clock(room.now)
    service = adapter(sfu, clock)

    def encrypted(offset: int) -> list[bytes]:
        # The same SRTP index may not come twice (replay window): every run gets fresh packets,
        # renumbered from ``offset`` on.
        out = []
        for plain in stream[base : base + packets]:
            data = bytearray(plain)
            seq = (int.from_bytes(data[2:4], "big") + offset) & 0xFFFF
            data[2:4] = seq.to_bytes(2, "big")
            out.append(tx.protect(bytes(data)))
        return out

    offset = 0
    now = room.now

    def run(body: Callable[[bytes, float], object]) -> Callable[[], int]:
        def go() -> int:
            nonlocal offset, now
            offset += packets
            batch = encrypted(offset)
            t = now
            t0 = time.process_time_ns()
            for data in batch:
                t += 0.0002
                body(data, t)
            go.elapsed = time.process_time_ns() - t0  # type: ignore[attr-defined]
            now = t
            return packets * subscribers

        return go

    def timed_body(body: Callable[[bytes, float], object]) -> list[float]:
        go = run(body)
        runs = []
        for _ in range(repeat):
            units = go()
            runs.append(go.elapsed / 1000 / units)  # type: ignore[attr-defined]
        return runs

    source = alice.address

    def through_adapter(data: bytes, t: float) -> None:
        clock.now = t
        service.datagram(ServerPort.MAIN, data, source)

    rows["NodeService.datagram"] = timed_body(through_adapter)
    rows["Conference.receive_datagram"] = timed_body(lambda d, t: sfu.receive_datagram(d, source, t))

    router = sfu.routers[ROOM]
    rx = sfu._by_ice[f"{ROOM}/alice/publish"].srtp
    assert rx is not None
    rows["router.receive_rtp"] = timed_body(
        lambda d, t: router.receive_rtp("alice", PcRole.PUBLISH, rx.unprotect(d), t)
    )
    unprotect = timed_body(lambda d, t: rx.unprotect(d))
    rows["router.receive_rtp"] = [a - b for a, b in zip(rows["router.receive_rtp"], unprotect, strict=True)]
    rows["unprotect (per incoming / N)"] = unprotect
    sub_srtp = sfu._by_ice[f"{ROOM}/s0/subscribe"].srtp
    assert sub_srtp is not None
    plain = stream[base]

    def protect_copies() -> int:
        for _ in range(packets):
            sub_srtp.protect(plain)
        return packets

    rows["protect (per copy)"] = timed(protect_copies, repeat)
    rows["sendto, uvloop (per copy)"] = sendto_cost(packets, repeat)

    ticks = 200

    def tick() -> int:
        nonlocal now
        for _ in range(ticks):
            now += 0.02
            service.dispatch(sfu.handle_timer(now))  # type: ignore[arg-type]
        return ticks

    rows["handle_timer (µs per 20 ms tick)"] = timed(tick, repeat)
    return rows


def sendto_cost(packets: int, repeat: int) -> list[float]:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        sink.setblocking(False)
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        target = sink.getsockname()
        data = bytes(SIZE)
        runs = []
        chunk = min(200, packets)
        for _ in range(repeat):
            spent = 0
            for _ in range(packets // chunk):
                t0 = time.process_time_ns()
                for _ in range(chunk):
                    transport.sendto(data, target)
                spent += time.process_time_ns() - t0
                while True:
                    try:
                        sink.recv(2048)
                    except BlockingIOError:
                        break
            runs.append(spent / 1000 / (packets // chunk * chunk))
        transport.close()
        sink.close()
        return runs

    return uvloop.run(main())


def profile(subscribers: int, packets: int) -> None:
    room = make_room(subscribers)
    stream = video_stream(packets + KEYFRAME_EVERY)
    check(room, stream, subscribers)
    alice = room.browsers["alice"]
    batch = [alice.srtp["publish"].protect(p) for p in stream[KEYFRAME_EVERY:]]
    clock = Clock(room.now)
    service = adapter(room.sfu, clock)
    profiler = cProfile.Profile()
    profiler.enable()
    for data in batch:
        clock.now += 0.0002
        service.datagram(ServerPort.MAIN, data, alice.address)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(18)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--subscribers", default="10,40")
    ap.add_argument("--packets", type=int, default=600, help="incoming packets per run")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--cpu", type=int)
    ap.add_argument("--profile", type=int, metavar="N", help="cProfile 1 -> N instead of timing")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.profile:
        profile(args.profile, args.packets)
        return 0
    if args.smoke:
        args.subscribers, args.packets, args.repeat = "3", 60, 2
    counts = [int(n) for n in args.subscribers.split(",")]
    results = {n: measure(n, args.packets, args.repeat) for n in counts}
    print("| path | " + " | ".join(f"1 → {n} best µs | median" for n in counts) + " |")
    print("|---|" + "---|---|" * len(counts))
    for row in results[counts[0]]:
        cells = []
        for n in counts:
            runs = results[n][row]
            cells += [f"{min(runs):.2f}", f"{statistics.median(runs):.2f}"]
        print(f"| {row} | " + " | ".join(cells) + " |")
    out = args.json or REPO / "bench" / "out" / f"sfu_datapath-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpu": args.cpu,
        "loadavg": os.getloadavg(),
        "args": vars(args) | {"json": str(args.json)},
    }
    out.write_text(
        json.dumps({"meta": meta, "runs": {str(n): r for n, r in results.items()}}, indent=2) + "\n"
    )
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
