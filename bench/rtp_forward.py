#!/usr/bin/env python3
"""CPU per forwarded RTP packet: the SFU's in-place path against the typed-codec path.

    .venv/bin/python bench/rtp_forward.py                       # 20,000 packets x 7 runs per row
    .venv/bin/python bench/rtp_forward.py --cpu 0 --repeat 15   # as in BENCHMARKS.md
    .venv/bin/python bench/rtp_forward.py --smoke               # ~2 s plumbing check; figures not comparable

What one forwarded packet costs, in one process, no sockets (docs/STYLE.md §4: "measure with the
benchmark, not by guess"). Input: a stream of 1100-byte VP8-like RTP packets from one publisher
(one-byte header extensions: abs-send-time, transport-wide sequence number, MID), forwarded to a
subscriber through :class:`meet443.sfu.rewrite.StreamRewriter`.

- in place: ``rtp_header`` (one ``struct.unpack_from``), ``StreamRewriter.rewrite``, a
  ``bytearray`` copy, ``rewrite_header`` (one ``pack_into``), ``bytes``.
- dataclass: ``RtpPacket.parse``, the same rewrite, ``dataclasses.replace`` and ``bytes(packet)``.
- "+ TWCC + buffer": also renumber the transport-wide sequence number in place (``find_extension``
  once per incoming packet, one ``pack_into`` per copy) and keep the packet in the
  :class:`~meet443.sfu.retransmit.RetransmitBuffer`, as every forwarded packet needs.
- "+ SRTP": also protect through :class:`~meet443.proto.rtp.srtp.SrtpSession` (pylibsrtp).
- fan-out: one incoming packet to 10 subscribers; the header is read once, each subscriber rewrites,
  renumbers, stores and protects its copy. Figures are per *outgoing* packet.
- header read: the in-place function against two rejected shapes (a slotted view object filled
  in ``__init__``; properties that unpack on access) and the dataclass parser.

Each row: the best and the median of ``--repeat`` runs over ``--packets`` packets, in µs per packet.
The markdown table goes to stdout; the runs and the environment to ``bench/out/rtp_forward-*.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

from meet443.proto.rtp.codecs import vp8_is_keyframe
from meet443.proto.rtp.packet import (
    Buffer,
    HeaderExtension,
    OneByteExtensions,
    RtpPacket,
    find_extension,
    rewrite_header,
    rtp_header,
)
from meet443.proto.rtp.srtp import SrtpKeyingMaterial, SrtpProfile, SrtpSession
from meet443.sfu.retransmit import RetransmitBuffer
from meet443.sfu.rewrite import StreamRewriter

TWCC_ID = 3
_U16 = struct.Struct("!H")
SOURCE_SSRC = 0x1000
OUT_SSRC = 0x5EB0


def make_stream(count: int, size: int) -> list[bytes]:
    extension = OneByteExtensions(
        (
            HeaderExtension(2, b"\x12\x34\x56"),  # abs-send-time
            HeaderExtension(TWCC_ID, b"\x00\x00"),  # transport-wide sequence number
            HeaderExtension(4, b"0"),  # MID
        )
    )
    header_size = len(bytes(RtpPacket(96, 0, 0, 0, b"", extension=extension)))
    filler = (bytes(range(256)) * (size // 256 + 1))[: size - header_size - 5]
    # RFC 7741: descriptor X=1 S=1 PID=0 with a 15-bit picture ID, then the payload header's P bit:
    # 0 for the keyframe that starts the stream, 1 for the delta frames after it.
    keyframe, delta = b"\x90\x80\x80\x01\x00" + filler, b"\x90\x80\x80\x01\x01" + filler
    stream = []
    for i in range(count):
        payload = keyframe if i == 0 else delta
        timestamp = (i // 8) * 3000 & 0xFFFFFFFF
        stream.append(
            bytes(RtpPacket(96, i & 0xFFFF, timestamp, SOURCE_SSRC, payload, i % 8 == 7, (), extension))
        )
    return stream


def session(profile: SrtpProfile) -> SrtpSession:
    keys = SrtpKeyingMaterial.split(profile, bytes(range(profile.keying_material_length)))
    return SrtpSession.from_keying_material(keys, client=False)


def new_rewriter() -> StreamRewriter:
    rewriter = StreamRewriter(OUT_SSRC, clock_rate=90000, first_sequence=1000, first_timestamp=5000)
    rewriter.select(SOURCE_SSRC)
    return rewriter


# --- the paths ------------------------------------------------------------------------------------


def in_place(packets: list[bytes], *, twcc: bool, srtp: SrtpProfile | None) -> int:
    rewriter = new_rewriter()
    rewrite = rewriter.rewrite
    awaits = rewriter.awaits_keyframe
    buffer = RetransmitBuffer() if twcc else None
    protect = session(srtp).protect if srtp is not None else None
    now = 0.0
    transport_seq = 0
    sent = 0
    for data in packets:
        _, seq, ts, ssrc, offset, end = rtp_header(data)
        keyframe = awaits(ssrc) and vp8_is_keyframe(data, offset, end)
        out = rewrite(ssrc, seq, ts, keyframe, now)
        if out is None:
            continue
        copy = bytearray(data)
        rewrite_header(copy, out[0], out[1], OUT_SSRC)
        if buffer is not None:
            # Found once per incoming packet, written per subscriber (see the fan-out row).
            found = find_extension(data, TWCC_ID)
            if found is not None:
                _U16.pack_into(copy, found[0], transport_seq & 0xFFFF)
            transport_seq += 1
            packet = bytes(copy)
            buffer.store(out[0], packet, now)
        else:
            packet = bytes(copy)
        if protect is not None:
            packet = protect(packet)
        sent += 1
    return sent


def through_dataclass(packets: list[bytes], *, twcc: bool, srtp: SrtpProfile | None) -> int:
    rewriter = new_rewriter()
    buffer = RetransmitBuffer() if twcc else None
    protect = session(srtp).protect if srtp is not None else None
    now = 0.0
    transport_seq = 0
    sent = 0
    for data in packets:
        packet = RtpPacket.parse(data)
        keyframe = rewriter.awaits_keyframe(packet.ssrc) and vp8_is_keyframe(packet.payload)
        out = rewriter.rewrite(packet.ssrc, packet.sequence_number, packet.timestamp, keyframe, now)
        if out is None:
            continue
        changes: dict[str, object] = {"sequence_number": out[0], "timestamp": out[1], "ssrc": OUT_SSRC}
        if buffer is not None:
            assert isinstance(packet.extension, OneByteExtensions)
            changes["extension"] = OneByteExtensions(
                tuple(
                    HeaderExtension(e.id, struct.pack("!H", transport_seq & 0xFFFF)) if e.id == TWCC_ID else e
                    for e in packet.extension.elements
                )
            )
            transport_seq += 1
        raw = bytes(dataclasses.replace(packet, **changes))  # type: ignore[arg-type]
        if buffer is not None:
            buffer.store(out[0], raw, now)
        if protect is not None:
            raw = protect(raw)
        sent += 1
    return sent


def fan_out(packets: list[bytes], *, subscribers: int, srtp: SrtpProfile) -> int:
    rewriters = [new_rewriter() for _ in range(subscribers)]
    buffers = [RetransmitBuffer() for _ in range(subscribers)]
    protects = [session(srtp).protect for _ in range(subscribers)]
    transport_seqs = [0] * subscribers
    now = 0.0
    sent = 0
    for data in packets:
        _, seq, ts, ssrc, offset, end = rtp_header(data)
        found = find_extension(data, TWCC_ID)
        keyframe = any(r.awaits_keyframe(ssrc) for r in rewriters) and vp8_is_keyframe(data, offset, end)
        for i, rewriter in enumerate(rewriters):
            out = rewriter.rewrite(ssrc, seq, ts, keyframe, now)
            if out is None:
                continue
            copy = bytearray(data)
            rewrite_header(copy, out[0], out[1], OUT_SSRC)
            if found is not None:
                _U16.pack_into(copy, found[0], transport_seqs[i] & 0xFFFF)
                transport_seqs[i] += 1
            packet = bytes(copy)
            buffers[i].store(out[0], packet, now)
            protects[i](packet)
            sent += 1
    return sent


# --- header-read shapes ----------------------------------------------------------------------------

_FIXED = struct.Struct("!BBHII")


class EagerView:
    """The rejected shape: a slotted object filled in ``__init__`` (same checks as rtp_header)."""

    __slots__ = (
        "data",
        "marker",
        "payload_end",
        "payload_offset",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(self, data: Buffer) -> None:
        b1, seq, ts, ssrc, offset, end = rtp_header(data)
        self.data = data
        self.marker = b1 >> 7
        self.payload_type = b1 & 0x7F
        self.sequence_number = seq
        self.timestamp = ts
        self.ssrc = ssrc
        self.payload_offset = offset
        self.payload_end = end


class LazyView:
    """The other rejected shape: properties that unpack on each access."""

    __slots__ = ("data",)

    def __init__(self, data: Buffer) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            raise ValueError("not RTP")
        self.data = data

    @property
    def ssrc(self) -> int:
        return int(struct.unpack_from("!I", self.data, 8)[0])

    @property
    def sequence_number(self) -> int:
        return int(struct.unpack_from("!H", self.data, 2)[0])

    @property
    def timestamp(self) -> int:
        return int(struct.unpack_from("!I", self.data, 4)[0])


def read_function(packets: list[bytes]) -> int:
    total = 0
    for data in packets:
        _, seq, ts, ssrc, _, _ = rtp_header(data)
        total += seq + (ssrc & 0) + (ts & 0)
    return total


def read_eager(packets: list[bytes]) -> int:
    total = 0
    for data in packets:
        view = EagerView(data)
        total += view.sequence_number + (view.ssrc & 0) + (view.timestamp & 0)
    return total


def read_lazy(packets: list[bytes]) -> int:
    total = 0
    for data in packets:
        view = LazyView(data)
        total += view.sequence_number + (view.ssrc & 0) + (view.timestamp & 0)
    return total


def read_dataclass(packets: list[bytes]) -> int:
    total = 0
    for data in packets:
        packet = RtpPacket.parse(data)
        total += packet.sequence_number + (packet.ssrc & 0) + (packet.timestamp & 0)
    return total


def srtp_only(packets: list[bytes], *, profile: SrtpProfile, unprotect: bool) -> int:
    sender = SrtpSession.from_keying_material(
        SrtpKeyingMaterial.split(profile, bytes(range(profile.keying_material_length))), client=True
    )
    receiver = session(profile)
    if not unprotect:
        for data in packets:
            sender.protect(data)
        return len(packets)
    protected = [sender.protect(data) for data in packets]
    start = time.perf_counter()
    for data in protected:
        receiver.unprotect(data)
    return -int((time.perf_counter() - start) * 1e9)  # negative: the caller reads ns from here


# --- measuring -------------------------------------------------------------------------------------


def measure(run: Callable[[], int], outgoing: int, repeat: int, *, forwards: bool) -> list[float]:
    """µs per outgoing packet for each of ``repeat`` runs."""
    figures = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - start
        if forwards and result != outgoing:
            raise AssertionError(f"forwarded {result} of {outgoing} packets")
        if result < 0:  # the run timed only its own part (unprotect)
            elapsed = -result / 1e9
        figures.append(elapsed / outgoing * 1e6)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=20_000, help="packets per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs per row (best and median reported)")
    parser.add_argument("--size", type=int, default=1100, help="RTP packet size in bytes")
    parser.add_argument("--cpu", type=int, help="pin the benchmark to this CPU")
    parser.add_argument("--smoke", action="store_true", help="2,000 packets x 2 runs: does the bench work?")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="where the JSON goes")
    args = parser.parse_args()
    if args.smoke:
        args.packets, args.repeat = 2_000, 2
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    packets = make_stream(args.packets, args.size)
    assert all(len(p) == args.size for p in packets)
    n = len(packets)
    cm, gcm = SrtpProfile.AES128_CM_SHA1_80, SrtpProfile.AEAD_AES_128_GCM
    fan = max(1, n // 10)

    rows: list[tuple[str, Callable[[], int], int]] = [
        ("header read: `rtp_header` function (kept)", lambda: read_function(packets), n),
        ("header read: slotted view object (rejected)", lambda: read_eager(packets), n),
        ("header read: lazy properties (rejected)", lambda: read_lazy(packets), n),
        ("header read: `RtpPacket.parse` (oracle)", lambda: read_dataclass(packets), n),
        ("forward, in place", lambda: in_place(packets, twcc=False, srtp=None), n),
        ("forward, dataclass", lambda: through_dataclass(packets, twcc=False, srtp=None), n),
        ("forward + TWCC + buffer, in place", lambda: in_place(packets, twcc=True, srtp=None), n),
        ("forward + TWCC + buffer, dataclass", lambda: through_dataclass(packets, twcc=True, srtp=None), n),
        (
            "forward + TWCC + buffer + SRTP AES-CM-80, in place",
            lambda: in_place(packets, twcc=True, srtp=cm),
            n,
        ),
        (
            "forward + TWCC + buffer + SRTP AES-CM-80, dataclass",
            lambda: through_dataclass(packets, twcc=True, srtp=cm),
            n,
        ),
        (
            "forward + TWCC + buffer + SRTP AES-GCM, in place",
            lambda: in_place(packets, twcc=True, srtp=gcm),
            n,
        ),
        (
            "forward + TWCC + buffer + SRTP AES-GCM, dataclass",
            lambda: through_dataclass(packets, twcc=True, srtp=gcm),
            n,
        ),
        (
            "fan-out 1 -> 10, in place + SRTP AES-GCM (per outgoing packet)",
            lambda: fan_out(packets[:fan], subscribers=10, srtp=gcm),
            fan * 10,
        ),
        ("SRTP AES-CM-80 protect alone", lambda: srtp_only(packets, profile=cm, unprotect=False), n),
        ("SRTP AES-CM-80 unprotect alone", lambda: srtp_only(packets, profile=cm, unprotect=True), n),
        ("SRTP AES-GCM protect alone", lambda: srtp_only(packets, profile=gcm, unprotect=False), n),
        ("SRTP AES-GCM unprotect alone", lambda: srtp_only(packets, profile=gcm, unprotect=True), n),
    ]
    results = []
    print(
        f"| path ({args.size}-byte packets) | best µs/packet | median µs/packet | packets/s per core (best) |"
    )
    print("|---|---|---|---|")
    for name, run, outgoing in rows:
        run()  # warm up (and check it runs)
        figures = measure(run, outgoing, args.repeat, forwards="forward" in name or "fan-out" in name)
        best, median = min(figures), statistics.median(figures)
        results.append({"path": name, "runs_us": figures, "best_us": best, "median_us": median})
        print(f"| {name} | {best:.2f} | {median:.2f} | {1e6 / best:,.0f} |", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    path = args.out / f"rtp_forward-{stamp}.json"
    environment = {
        "python": sys.version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "loadavg": os.getloadavg(),
        "packets": args.packets,
        "repeat": args.repeat,
        "size": args.size,
    }
    path.write_text(json.dumps({"environment": environment, "results": results}, indent=2))
    print(f"\n{path}", file=sys.stderr)


if __name__ == "__main__":
    main()
