#!/usr/bin/env python3
"""What writing room state through to the data dir costs (docs/signaling.md "Node restarts").

    .venv/bin/python bench/room_snapshots.py --repeat 5
    .venv/bin/python bench/room_snapshots.py --smoke      # ~1 s plumbing check

A :class:`~meet443.proto.signaling.room.SignalingServer` (no sockets) holds one room of N
participants whose chat history is full (200 messages of ``--chat-chars`` characters). Rows, per
write:

- ``snapshot + encode``: ``server.snapshot(room)`` and ``bytes()``, on the event loop;
- ``SqliteRoomStore.save``: the write, in the store's thread, on the data dir's disk
  (WAL, synchronous=NORMAL);
- ``SqliteStore.next_epoch``: one synchronous=FULL transaction in the same directory, the
  anchor: what a durable SQLite commit costs on this disk.

A chat message or a join is one write (the adapter coalesces every change to a room within
100 ms into one), so these rows are the cost per chat message and per join. Best and median of
``--repeat`` runs of ``--writes`` writes.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from meet443.proto.signaling.admission import RoomAdmission, RoomMode
from meet443.proto.signaling.room import LookupRoom, SignalingServer
from meet443.state.rooms import SqliteRoomStore
from meet443.store.sqlite import SqliteStore

NOW = 1_800_000_000.0


def full_room(participants: int, chat_chars: int) -> SignalingServer:
    ids = itertools.count(1)
    server = SignalingServer(
        ice_servers=lambda p, now, rtts: ([], 3600), token=lambda n: f"{next(ids):0{2 * n}x}"
    )
    admission = RoomAdmission("bench", RoomMode.GROUP, False, None, False)
    for conn in range(1, participants + 1):
        server.connect(conn, f"192.0.2.{conn % 250}", NOW)
        join = json.dumps({"type": "join", "v": 1, "room": "bench", "displayName": f"Person {conn}"})
        for output in server.receive(conn, join, NOW):
            if isinstance(output, LookupRoom):
                server.admit(conn, admission, NOW)
    text = ("x" * chat_chars)[:chat_chars]
    for seq in range(server.limits.chat_history):
        conn = 1 + seq % participants
        chat = json.dumps({"type": "chat", "text": text, "clientMessageId": f"c{seq}"})
        server.receive(conn, chat, NOW + seq)  # one a second: within every rate limit
    return server


def encoded(server: SignalingServer) -> bytes:
    snapshot = server.snapshot("bench")
    assert snapshot is not None
    return bytes(snapshot)


def per_call(fn: Callable[[], object], writes: int, repeat: int) -> tuple[float, float]:
    """Best and median µs per call."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(writes):
            fn()
        runs.append((time.perf_counter() - started) / writes * 1e6)
    return min(runs), statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--participants", default="4,50")
    parser.add_argument("--chat-chars", default="100,4000", help="characters per chat message")
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--dir", type=Path, default=None, help="data dir to write in (default: a temporary one)"
    )
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.participants, args.chat_chars, args.writes, args.repeat = "4", "100", 20, 1
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        store = SqliteRoomStore.open(Path(work))
        meetings = SqliteStore.open(Path(work))
        print("| room | snapshot bytes | snapshot + encode | SqliteRoomStore.save | next_epoch (FULL) |")
        print("|---|---|---|---|---|")
        anchor = per_call(meetings.file.next_epoch, max(10, args.writes // 10), args.repeat)
        for n in (int(x) for x in args.participants.split(",")):
            for chars in (int(x) for x in args.chat_chars.split(",")):
                server = full_room(n, chars)
                data = encoded(server)
                encode = per_call(functools.partial(encoded, server), args.writes, args.repeat)
                write = functools.partial(store.save, "bench", data, NOW)
                save = per_call(write, args.writes, args.repeat)
                print(
                    f"| {n} people, 200 chats of {chars} chars | {len(data):,} | "
                    f"{encode[0]:.0f} / {encode[1]:.0f} µs | {save[0]:.0f} / {save[1]:.0f} µs | "
                    f"{anchor[0]:.0f} / {anchor[1]:.0f} µs |"
                )
        store.close()
        meetings.file.close()


if __name__ == "__main__":
    main()
