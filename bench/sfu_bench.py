#!/usr/bin/env python3
"""SFU benchmark: meet443's group rooms (and Janus's videoroom) under synthetic participants.

    .venv/bin/python bench/sfu_bench.py                  # meet443 and Janus: 1->5,10,20,40 and 2x2,4x4,6x6
    .venv/bin/python bench/sfu_bench.py --fanout 10,40,80 --mesh 4,8 --window 10 --repeat 2
    .venv/bin/python bench/sfu_bench.py --only meet443 --fanout 120 --mesh ""
    .venv/bin/python bench/sfu_bench.py --smoke          # ~40 s: does the bench work? (CI)

Setup. Two network namespaces joined by one veth link: ``srv`` (10.200.95.1) runs
``meet443 serve --default-room-mode group`` on port 443 with the lab certificate, ``cli``
(10.200.95.2) runs the load clients. Nothing can leave the machine. A fresh server is started
for every step, so its memory and CPU figures belong to that step alone. With 2+ CPUs the server
is pinned to ``--server-cpu`` (default 1) and the clients and this process to ``--load-cpu``
(default 0).

The load client (``sfu_bench.py client``, one process per ``--per-process`` participants) is a
real participant on the wire but does no codec work: signaling over WSS (lab CA verified),
aiortc's RTCPeerConnection for SDP, ICE (aioice, controlling against the SFU's ICE-lite), DTLS
and SRTP keys, with transceivers that have no track. A publisher then writes its own RTP through
the connection's DTLS transport (SRTP-protected by aiortc, sent on the selected ICE pair): VP8-
shaped video at ``--fps`` (30) and ``--video-kbps`` (1000), split into packets of at most 1,100
bytes, a keyframe (RFC 7741 payload header P bit 0, which the SFU's keyframe detector reads) every
``--keyframe-s`` (2) seconds and three times the size, and Opus-sized audio (100 bytes, 50 packets
a second) with the MID and RFC 6464 audio-level header extensions negotiated in the answer. Every
payload ends in a 16-byte trailer (magic, publisher number, CLOCK_MONOTONIC send time in ns); the
SFU never touches payloads, so a subscriber reads the send time back. A subscriber's DTLS
transport hands each decrypted packet straight to a counter (aiortc's jitter buffer, decoder and
RTCP feedback are bypassed): packets, bytes and the forwarding delay (receive minus send time,
one host, one clock; 0.1 ms buckets).

Scenarios:
  fanout N   1 publisher, N subscribers (the server forwards N copies of each packet); above 49
             subscribers (a group room holds 50) as many rooms as needed, each with a publisher
  mesh N     one room of N participants, each publishing and subscribing to the N-1 others

Measurement, per step: wait until every subscriber receives every stream it should, 2 s more,
then a window of ``--window`` seconds, marked in every client by SIGUSR1 / SIGUSR2 (window
counters only). Over the window:
  forwarded pkt/s       packets the subscribers received (all streams) per wall second
  pkt per CPU-s         forwarded packets / server CPU seconds (utime+stime from /proc/PID/stat)
  server core %         server CPU seconds / wall seconds (100% = its core)
  delay p50 / p99       send (publisher, before SRTP) to receive (subscriber, after SRTP), all
                        packets of the window; it includes both clients' event-loop queueing
  RSS per subscriber    server VmRSS with everybody connected minus VmRSS right after start,
                        divided by the subscribe connections
"Subscribers per core at 80%" fits server core % = a + b * N over the fan-out steps and solves
for 80%; it is an extrapolation unless a step reached 80%.

  server run-queue wait % time the server's threads were runnable but not running
                        (/proc/PID/task/*/schedstat): contention from other work on its core,
                        which is what turns into delay on a shared machine

Janus side by side (``--only`` picks one; both run by default when ``janus`` is installed):
Janus 1.1 (Debian package) with shared/recipes/janus's configuration bound to the server's veth
address (ICE-lite, IPv6 off, only the videoroom plugin, HTTP and WebSocket transports, admin off)
plus ``event_loops = 2`` and ``debug_level = 3``, pinned like meet443. The same load clients speak
its videoroom API instead (``ws://…:8188``, janus-protocol): a publisher joins and publishes the
same two sections; every subscriber has one subscriber handle, i.e. one peer connection, per
remote feed (meet443: one subscribe connection per participant for all feeds). The same streams
and packets flow either way; the last table gives meet443's CPU per forwarded packet over Janus's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as v
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import aiohttp  # noqa: E402
import uvloop  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402

from browser.lab_extra import Meet443Web, ipv4_only  # noqa: E402
from lab.netns import Lab, LabError, Proc, cpu_seconds, unavailable_reason, wait_listening  # noqa: E402
from lab.pki import make_test_pki  # noqa: E402

SERVER_IP = "10.200.95.1"
CLIENT_IP = "10.200.95.2"
PORT = 443
TRAILER = struct.Struct("!4sIQ")  # magic, publisher number, send time (CLOCK_MONOTONIC ns)
MAGIC = b"M443"
MAX_PAYLOAD = 1100
AUDIO_PAYLOAD = 100
AUDIO_PTIME_S = 0.02
BUCKET_US = 100
READY_TIMEOUT_S = 90.0
SETTLE_S = 2.0
LATE_NS = 50_000_000
ROOM_CAPACITY = 50  # docs/signaling.md: group rooms take up to 50 participants

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


# ==================================================================================================
# The load client (runs inside the client namespace)


@dataclass
class NegotiatedSection:
    """What a publisher needs from the SFU's answer to write RTP for one section by hand."""

    mid: str
    kind: str
    payload_type: int
    extensions: dict[str, int]


def answer_sections(sdp: str) -> list[NegotiatedSection]:
    """The accepted (port != 0) audio/video sections of an answer: payload type, extension ids."""
    sections: list[NegotiatedSection] = []
    for chunk in re.split(r"\r?\nm=", "\n" + sdp)[1:]:
        lines = chunk.splitlines()
        kind, port, *_rest = lines[0].split()
        formats = lines[0].split()[3:]
        if port == "0" or kind not in {"audio", "video"}:
            continue
        mid = next((ln[6:] for ln in lines if ln.startswith("a=mid:")), "")
        rtpmap = {}
        for ln in lines:
            m = re.match(r"a=rtpmap:(\d+) ([^/]+)/", ln)
            if m:
                rtpmap[m.group(2).lower()] = int(m.group(1))
        want = "opus" if kind == "audio" else "vp8"
        pt = rtpmap.get(want, int(formats[0]))
        ext: dict[str, int] = {}
        for ln in lines:
            m = re.match(r"a=extmap:(\d+)(?:/\w+)? (\S+)", ln)
            if m:
                ext[m.group(2)] = int(m.group(1))
        sections.append(NegotiatedSection(mid, kind, pt, ext))
    return sections


def rtp_header(
    pt: int, seq: int, ts: int, ssrc: int, marker: bool, extensions: Sequence[tuple[int, bytes]] = ()
) -> bytes:
    """RFC 3550 §5.1 header with RFC 8285 §4.2 one-byte header extensions ``(id, value)``."""
    first = 0x80
    ext = b""
    if extensions:
        elements = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in extensions)
        elements += b"\x00" * (-len(elements) % 4)
        ext = struct.pack("!HH", 0xBEDE, len(elements) // 4) + elements
        first |= 0x10
    second = (0x80 if marker else 0) | pt
    return struct.pack("!BBHII", first, second, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + ext


def vp8_payloads(
    picture_id: int, frame_bytes: int, keyframe: bool, width: int = 640, height: int = 360
) -> list[bytes]:
    """One VP8 frame as RTP payloads (RFC 7741): descriptor with a 15-bit picture ID, then for the
    first packet the payload header (P bit = 0 on a keyframe, with the keyframe start code and
    size); the bodies are filler. The trailer is added at send time."""
    room = MAX_PAYLOAD - 4 - TRAILER.size
    count = max(1, math.ceil(frame_bytes / room))
    pid = bytes([0x80 | (picture_id >> 8 & 0x7F), picture_id & 0xFF])
    out = []
    for i in range(count):
        descriptor = bytes([0x90 if i == 0 else 0x80, 0x80]) + pid
        body = b""
        if i == 0:
            size0 = 0x1234
            header = ((size0 << 5) | (1 << 4) | (0 if keyframe else 1)).to_bytes(3, "little")
            body = header + (b"\x9d\x01\x2a" + struct.pack("<HH", width, height) if keyframe else b"")
        filler = min(room, frame_bytes - i * room) - len(body)
        out.append(descriptor + body + b"\x55" * max(0, filler))
    return out


@dataclass
class ReceiveCounters:
    packets: int = 0
    bytes: int = 0
    delays: Counter[int] = field(default_factory=Counter)  # 0.1 ms buckets
    ssrcs_recent: set[int] = field(default_factory=set)
    late: dict[int, list[int]] = field(default_factory=dict)  # 100 ms slot -> [packets, max ms]

    def reset(self) -> None:
        self.packets = self.bytes = 0
        self.delays = Counter()
        self.late = {}


class LightParticipant:
    """One participant: signaling, publish and subscribe connections, synthetic RTP, counters."""

    def __init__(self, client: LoadClient, room: str, name: str, publish: bool, expect: int, number: int):
        self.client, self.room, self.name = client, room, name
        self.publish, self.expect, self.number = publish, expect, number
        self.joined = asyncio.Event()
        self.published = asyncio.Event()
        self.pub: Any = None
        self.sub: Any = None
        self.sub_ufrag: str | None = None
        self.rx = ReceiveCounters()
        self.window = ReceiveCounters()
        self.sender: dict[str, Any] = {}
        self.errors: list[str] = []
        self.ws: Any = None

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def run(self, session: Any, ssl_ctx: ssl.SSLContext) -> None:
        url = f"wss://{self.client.args.server}/v1/ws"
        try:
            async with session.ws_connect(url, ssl=ssl_ctx, heartbeat=None) as ws:
                self.ws = ws
                await self.send({"type": "join", "v": 1, "room": self.room, "displayName": self.name})
                pinger = asyncio.ensure_future(self._ping())
                try:
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        await self.on_message(json.loads(msg.data))
                finally:
                    pinger.cancel()
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(10)
            await self.send({"type": "ping"})

    async def on_message(self, m: dict[str, Any]) -> None:
        kind = m.get("type")
        if kind == "joined":
            self.joined.set()
            if self.publish:
                await self._publish()
        elif kind == "publish-answer":
            await self.pub.setRemoteDescription(RTCSessionDescription(m["sdp"], "answer"))
            self._prepare_sender(m["sdp"])
        elif kind == "subscribe-offer":
            await self._subscribe(m["sdp"])
        elif kind == "error":
            self.errors.append(json.dumps(m))

    def _config(self) -> Any:
        return RTCConfiguration(iceServers=[])  # never None: aiortc would add a public STUN server

    async def _publish(self) -> None:
        pc = self.pub = RTCPeerConnection(self._config())
        audio = pc.addTransceiver("audio", direction="sendonly")
        video = pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        self.sender = {"audio": audio, "video": video}
        sources = {audio.mid: "microphone", video.mid: "camera"}
        await self.send({"type": "publish", "sdp": pc.localDescription.sdp, "sources": sources})

    def _prepare_sender(self, answer: str) -> None:
        by_mid = {s.mid: s for s in answer_sections(answer)}
        streams = {}
        for kind, transceiver in self.sender.items():
            section = by_mid.get(transceiver.mid)
            if section is None:
                self.errors.append(f"answer rejected the {kind} section")
                continue
            mid_id = section.extensions.get(MID_URI)
            streams[kind] = {
                "pt": section.payload_type,
                "ssrc": transceiver.sender._ssrc,
                "mid": (mid_id, transceiver.mid.encode()) if mid_id else None,
                "level_id": section.extensions.get(AUDIO_LEVEL_URI),
                "transport": transceiver.sender.transport,
                "seq": int.from_bytes(os.urandom(2), "big"),
                "ts": int.from_bytes(os.urandom(4), "big"),
            }
        self.sender = streams
        self.published.set()

    async def _subscribe(self, sdp: str) -> None:
        found = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.MULTILINE)
        ufrag = found.group(1) if found else None
        if self.sub is not None and ufrag != self.sub_ufrag:
            with contextlib.suppress(Exception):
                await self.sub.close()
            self.sub = None
        if self.sub is None:
            self.sub = RTCPeerConnection(self._config())
        self.sub_ufrag = ufrag
        await self.sub.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        for t in self.sub.getTransceivers():
            self._hook(t.receiver.transport)
        await self.sub.setLocalDescription(await self.sub.createAnswer())
        await self.send({"type": "subscribe-answer", "sdp": self.sub.localDescription.sdp})

    def _hook(self, dtls: Any) -> None:
        """Count decrypted RTP in place of aiortc's receive path (jitter buffer, decoder, RTCP)."""
        if getattr(dtls, "_bench_hooked", False):
            return
        rx, monotonic_ns, unpack, size = self.rx, time.monotonic_ns, TRAILER.unpack_from, TRAILER.size
        participant = self

        async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
            now = monotonic_ns()
            window = participant.window
            n = len(data)
            rx.packets += 1
            window.packets += 1
            window.bytes += n
            rx.ssrcs_recent.add(int.from_bytes(data[8:12], "big"))
            if n >= 12 + size and data[n - size : n - size + 4] == MAGIC:
                sent = unpack(data, n - size)[2]
                delay_ns = now - sent
                window.delays[delay_ns // (BUCKET_US * 1000)] += 1
                if delay_ns > LATE_NS:  # when late packets arrive tells whose stall it was
                    slot = window.late.setdefault(now // 100_000_000, [0, 0])
                    slot[0] += 1
                    slot[1] = max(slot[1], delay_ns // 1_000_000)

        dtls._handle_rtp_data = on_rtp
        dtls._bench_hooked = True

    def send_rtp(self, kind: str, payloads: Sequence[bytes], ts_step: int, now_ns: int) -> None:
        stream = self.sender.get(kind)
        if stream is None:
            return
        transport = stream["transport"]
        if transport is None or transport.state != "connected":
            return
        stream["ts"] = (stream["ts"] + ts_step) & 0xFFFFFFFF
        extensions: list[tuple[int, bytes]] = []
        if stream["mid"] is not None:
            extensions.append(stream["mid"])
        if kind == "audio" and stream["level_id"]:
            # RFC 6464: voice activity set, a level per publisher so the loudest is stable.
            extensions.append((stream["level_id"], bytes([0x80 | (30 + self.number % 60)])))
        for i, payload in enumerate(payloads):
            seq = stream["seq"] = (stream["seq"] + 1) & 0xFFFF
            marker = i == len(payloads) - 1
            header = rtp_header(stream["pt"], seq, stream["ts"], stream["ssrc"], marker, extensions)
            packet = header + payload + TRAILER.pack(MAGIC, self.number, now_ns)
            try:
                data = transport._tx_srtp.protect(packet)
            except Exception as exc:  # a libsrtp error would otherwise be silent here
                self.errors.append(f"protect: {exc}")
                return
            # aioice's send is a coroutine around one sendto on the selected pair's socket (host
            # candidates only here): call that sendto directly instead of a task per packet.
            pair = transport.transport._connection._nominated.get(1)
            if pair is None:
                return
            pair.protocol.transport.sendto(data, pair.remote_addr)
            self.client.sent += 1

    async def close(self) -> None:
        for pc in (self.pub, self.sub):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pc.close(), 3)
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()


class JanusParticipant(LightParticipant):
    """The same participant against Janus's videoroom (shared/recipes/janus has the API sequence):
    one session, a publisher handle, and a subscriber handle (its own peer connection) per remote
    feed. Media, SDP handling and counting are LightParticipant's."""

    def __init__(self, client: LoadClient, room: str, name: str, publish: bool, expect: int, number: int):
        super().__init__(client, room, name, publish, expect, number)
        self.room_id = zlib.crc32(room.encode()) & 0x3FFFFFFF
        self.session_id = 0
        self.own_feed: int | None = None
        self.subscribed: set[int] = set()
        self.subs: list[Any] = []
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.transactions = itertools.count()
        self.background: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def request(self, message: dict[str, Any], handle: int | None = None) -> dict[str, Any]:
        """Send; return the reply that is not an ``ack`` (``success``, ``event`` or ``error``)."""
        txn = f"t{next(self.transactions)}"
        message = {**message, "transaction": txn}
        if self.session_id:
            message["session_id"] = self.session_id
        if handle is not None:
            message["handle_id"] = handle
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[txn] = future
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(future, 30)

    async def plugin(
        self, handle: int, body: dict[str, Any], jsep: dict[str, str] | None = None
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        reply = await self.request(message, handle)
        if reply.get("janus") == "error":
            raise RuntimeError(f"janus error: {reply}")
        return reply

    @staticmethod
    def data(reply: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = reply.get("plugindata", {}).get("data", {})
        return result

    async def run(self, session: Any, ssl_ctx: ssl.SSLContext) -> None:
        url = f"ws://{self.client.args.server}/"
        try:
            async with session.ws_connect(url, protocols=("janus-protocol",), heartbeat=None) as ws:
                self.ws = ws
                reader = asyncio.ensure_future(self._read(ws))
                try:
                    await self._flow()
                    await reader
                finally:
                    reader.cancel()
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def _read(self, ws: Any) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            m = json.loads(msg.data)
            if m.get("janus") == "ack":
                continue
            future = self.pending.pop(m.get("transaction", ""), None)
            if future is not None and not future.done():
                future.set_result(m)
            elif m.get("janus") == "event":
                publishers = self.data(m).get("publishers")
                for feed in publishers or ():
                    self.spawn(self._subscribe_feed(feed["id"]))

    async def _flow(self) -> None:
        self.session_id = (await self.request({"janus": "create"}))["data"]["id"]
        self.spawn(self._keepalive())
        handle = (await self.request({"janus": "attach", "plugin": "janus.plugin.videoroom"}))["data"]["id"]
        created = await self.plugin(
            handle,
            {"request": "create", "room": self.room_id, "publishers": 100, "videocodec": "vp8",
             "audiocodec": "opus", "bitrate": 4_000_000, "fir_freq": 0, "permanent": False},
        )  # fmt: skip
        if self.data(created).get("error_code") not in (None, 427):  # 427: the room exists already
            self.errors.append(f"create room: {self.data(created)}")
        if not self.publish:
            self.joined.set()
            await self._await_publishers(handle)
            return
        joined = self.data(
            await self.plugin(handle, {"request": "join", "ptype": "publisher", "room": self.room_id})
        )
        if "error_code" in joined:
            raise RuntimeError(f"join: {joined}")
        self.own_feed = joined["id"]
        self.joined.set()
        for feed in joined.get("publishers", ()):
            self.spawn(self._subscribe_feed(feed["id"]))
        pc = self.pub = RTCPeerConnection(self._config())
        audio = pc.addTransceiver("audio", direction="sendonly")
        video = pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        self.sender = {"audio": audio, "video": video}
        reply = await self.plugin(
            handle, {"request": "publish", "audio": True, "video": True},
            {"type": "offer", "sdp": pc.localDescription.sdp},
        )  # fmt: skip
        if "jsep" not in reply:
            raise RuntimeError(f"publish: {reply}")
        await pc.setRemoteDescription(RTCSessionDescription(reply["jsep"]["sdp"], "answer"))
        self._prepare_sender(reply["jsep"]["sdp"])

    async def _await_publishers(self, handle: int) -> None:
        """A subscriber that does not publish learns the feeds by asking for the room's list."""
        while True:
            listed = self.data(
                await self.plugin(handle, {"request": "listparticipants", "room": self.room_id})
            )
            for p in listed.get("participants", ()):
                if p.get("publisher"):
                    self.spawn(self._subscribe_feed(p["id"]))
            await asyncio.sleep(1.0)

    async def _subscribe_feed(self, feed: int) -> None:
        if feed == self.own_feed or feed in self.subscribed:
            return
        self.subscribed.add(feed)
        handle = (await self.request({"janus": "attach", "plugin": "janus.plugin.videoroom"}))["data"]["id"]
        body = {"request": "join", "ptype": "subscriber", "room": self.room_id, "streams": [{"feed": feed}]}
        for _attempt in range(40):
            reply = await self.plugin(handle, body)
            if "jsep" in reply:
                break
            await asyncio.sleep(0.5)  # 428: the feed is not up yet (before its webrtcup)
        else:
            self.errors.append(f"subscribe {feed}: {self.data(reply)}")
            return
        pc = RTCPeerConnection(self._config())
        self.subs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(reply["jsep"]["sdp"], "offer"))
        for t in pc.getTransceivers():
            self._hook(t.receiver.transport)
        await pc.setLocalDescription(await pc.createAnswer())
        await self.plugin(handle, {"request": "start"}, {"type": "answer", "sdp": pc.localDescription.sdp})

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(20)
            await self.ws.send_str(json.dumps({"janus": "keepalive", "session_id": self.session_id,
                                               "transaction": "ka"}))  # fmt: skip

    async def close(self) -> None:
        for pc in self.subs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 3)
        for task in list(self.background):
            task.cancel()
        await super().close()


class LoadClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.participants: list[LightParticipant] = []
        self.sent = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, self.window_start)
        loop.add_signal_handler(signal.SIGUSR2, self.window_end)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        for spec in self.args.participant:
            room, name, role, expect, number = spec.split(":")
            kind = JanusParticipant if self.args.janus else LightParticipant
            self.participants.append(kind(self, room, name, role == "p", int(expect), int(number)))
        ssl_ctx = ssl.create_default_context(cafile=self.args.ca)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = []
            for p in self.participants:
                tasks.append(asyncio.ensure_future(p.run(session, ssl_ctx)))
                await asyncio.sleep(self.args.stagger)
            media = asyncio.ensure_future(self.media_loop())
            status = asyncio.ensure_future(self.status_loop())
            await stop.wait()
            media.cancel()
            status.cancel()
            await asyncio.gather(*(p.close() for p in self.participants))
            for t in tasks:
                t.cancel()

    async def media_loop(self) -> None:
        """All publishers of this process on one clock: audio every 20 ms, video frames at --fps."""
        args = self.args
        frame_bytes = int(args.video_kbps * 1000 / 8 / args.fps)
        key_every = max(1, round(args.keyframe_s * args.fps))
        audio_payload = [b"\xfc" + b"\x33" * (AUDIO_PAYLOAD - 1 - TRAILER.size)]
        frames = itertools.count()
        picture_ids = itertools.count()
        start = time.monotonic()
        next_audio = next_video = start
        while True:
            now = time.monotonic()
            if now >= next_audio:
                next_audio += AUDIO_PTIME_S
                stamp = time.monotonic_ns()
                for p in self.participants:
                    if p.published.is_set():
                        p.send_rtp("audio", audio_payload, 960, stamp)
            if now >= next_video:
                next_video += 1 / args.fps
                n = next(frames)
                key = n % key_every == 0
                payloads = vp8_payloads(next(picture_ids) & 0x7FFF, frame_bytes * (3 if key else 1), key)
                stamp = time.monotonic_ns()
                for p in self.participants:
                    if p.published.is_set():
                        p.send_rtp("video", payloads, 90000 // args.fps, stamp)
            await asyncio.sleep(max(0.0, min(next_audio, next_video) - time.monotonic()))

    async def status_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            receiving = 0
            for p in self.participants:
                if p.expect == 0 or len(p.rx.ssrcs_recent) >= p.expect:
                    receiving += 1
                p.rx.ssrcs_recent = set()
            emit(
                "status",
                joined=sum(p.joined.is_set() for p in self.participants),
                published=sum(p.published.is_set() for p in self.participants),
                receiving=receiving,
                participants=len(self.participants),
                sent=self.sent,
                received=sum(p.rx.packets for p in self.participants),
                errors=[e for p in self.participants for e in p.errors][:5],
            )

    def window_start(self) -> None:
        self.window_t0 = time.monotonic()
        self.window_sent0 = self.sent
        for p in self.participants:
            p.window.reset()

    def window_end(self) -> None:
        hist: Counter[int] = Counter()
        late: dict[int, list[int]] = {}
        for p in self.participants:
            hist.update(p.window.delays)
            for slot, (count, worst) in p.window.late.items():
                merged = late.setdefault(slot, [0, 0])
                merged[0] += count
                merged[1] = max(merged[1], worst)
        emit(
            "window",
            seconds=time.monotonic() - getattr(self, "window_t0", time.monotonic()),
            sent=self.sent - getattr(self, "window_sent0", 0),
            packets=sum(p.window.packets for p in self.participants),
            bytes=sum(p.window.bytes for p in self.participants),
            perSubscriber=[p.window.packets for p in self.participants if p.expect],
            hist={str(k): v for k, v in hist.items()},
            # CLOCK_MONOTONIC 100 ms slots in which packets arrived more than 50 ms late
            late=[[slot / 10, count, worst] for slot, (count, worst) in sorted(late.items())],
        )


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.monotonic(), 3), **fields}), flush=True)


def client_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="sfu_bench.py client")
    ap.add_argument("--server", required=True, help="host:port")
    ap.add_argument("--ca", required=True)
    ap.add_argument("--participant", action="append", default=[], help="ROOM:NAME:p|s:EXPECT:NUMBER")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--video-kbps", type=float, default=1000)
    ap.add_argument("--keyframe-s", type=float, default=2.0)
    ap.add_argument("--stagger", type=float, default=0.05)
    ap.add_argument("--janus", action="store_true", help="speak Janus's videoroom API (ws://, no TLS)")
    args = ap.parse_args(argv)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(LoadClient(args).run())
    return 0


# ==================================================================================================
# The orchestrator (runs as root in the host namespace; everything it starts runs in the lab)


@dataclass
class Step:
    server: str
    scenario: str
    n: int
    publishers: int = 0
    subscribers: int = 0  # subscribe connections that must receive media
    streams: int = 0  # subscriber x stream pairs (audio and video count separately)
    window_s: float = math.nan
    forwarded_pps: float = math.nan
    sent_pps: float = math.nan
    server_cpu_s: float = math.nan
    pkts_per_cpu_s: float = math.nan
    server_core_pct: float = math.nan
    server_wait_pct: float = math.nan  # run-queue wait / wall: CPU contention the server suffered
    load_wait_pct: float = math.nan  # the same, summed over the load clients
    load_core_pct: float = math.nan
    delay_p50_ms: float = math.nan
    delay_p90_ms: float = math.nan
    delay_p99_ms: float = math.nan
    delay_over_100ms_pct: float = math.nan
    delay_samples: int = 0
    late_slots: list[list[float]] = field(default_factory=list)  # [client, t, packets, max ms]
    rss_base_kib: int = 0
    rss_loaded_kib: int = 0
    rss_per_subscriber_kib: float = math.nan
    ready_s: float = math.nan
    min_subscriber_pps: float = math.nan
    error: str | None = None


def participants_for(scenario: str, n: int) -> list[tuple[str, str, bool, int]]:
    """(room, name, publishes, streams it must receive) for one step.

    A fan-out beyond one group room (GROUP_ROOM_CAPACITY, 50 with the publisher) is split into
    as few rooms as it takes, each with its own publisher and an even share of the subscribers.
    """
    if scenario == "fanout":
        rooms = math.ceil(n / (ROOM_CAPACITY - 1))
        people: list[tuple[str, str, bool, int]] = []
        for r in range(rooms):
            room = f"fanout-{n}-{r}"
            people.append((room, f"pub{r}", True, 0))
            people += [(room, f"sub{r}-{i}", False, 2) for i in range(r, n, rooms)]
        return people
    room = f"mesh-{n}"
    return [(room, f"p{i}", True, 2 * (n - 1)) for i in range(n)]


JANUS_RECIPE = Path("/work/shared/recipes/janus")
JANUS_WS_PORT = 8188


def janus_config(directory: Path, device: str) -> Path:
    """The recipe's Janus configuration (shared/recipes/janus), bound to the lab: HTTP and
    WebSocket transports on the server's veth address only, admin off, ICE-lite on that one
    device, and ``event_loops = 2`` (a fixed pool of loops instead of a thread per handle)."""
    directory.mkdir(parents=True, exist_ok=True)
    for src in JANUS_RECIPE.glob("*.jcfg"):
        text = src.read_text().replace("CONF_DIR", str(directory))
        text = text.replace('"10.99.0.1"', f'"{SERVER_IP}"').replace('"127.0.0.1"', f'"{SERVER_IP}"')
        text = text.replace('ice_enforce_list = "v0"', f'ice_enforce_list = "{device}"')
        if src.name == "janus.jcfg":
            text = text.replace("general: {", "general: {\n\tevent_loops = 2", 1)
            text = text.replace("debug_level = 4", "debug_level = 3")
        (directory / src.name).write_text(text)
    return directory


def run_queue_wait_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but not running (/proc/PID/task/*/schedstat,
    second field): the server's share of a busy machine's CPU contention during a window."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants (meet443's media workers, ``--workers``)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def percentile(hist: Counter[int], q: float) -> float:
    total = sum(hist.values())
    if not total:
        return math.nan
    rank = q * (total - 1)
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen > rank:
            return (bucket + 0.5) * BUCKET_US / 1000
    return math.nan


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir

    @contextlib.contextmanager
    def lab(self) -> Iterator[None]:
        with Lab(self.workdir / "lab", prefix=f"sb{os.getpid() % 10000}-") as lab:
            self.labobj = lab
            self.srv, self.cli = lab.namespace("srv"), lab.namespace("cli")
            ipv4_only(self.srv, self.cli)
            self.link = lab.veth(self.srv, f"{SERVER_IP}/24", self.cli, f"{CLIENT_IP}/24")
            self.pki = make_test_pki(self.workdir / "pki", ips=(SERVER_IP,))
            yield

    def start_server(self, kind: str, name: str, workdir: Path) -> tuple[Proc, str]:
        """meet443 or Janus in the server namespace, pinned; returns it and the clients' host:port."""
        workdir.mkdir(parents=True, exist_ok=True)
        if kind == "janus":
            conf = janus_config(workdir / "janus-conf", self.link.a_dev)
            argv = ["janus", "-C", str(conf / "janus.jcfg"), "-F", str(conf), "-o"]
            proc = self.srv.spawn(argv, name=name, cpus=self.args.server_cpu)
            wait_listening(self.srv, SERVER_IP, JANUS_WS_PORT, "tcp", timeout=20, proc=proc)
            return proc, f"{SERVER_IP}:{JANUS_WS_PORT}"
        web = Meet443Web(
            self.srv, SERVER_IP, PORT, self.pki, workdir,
            extra=(
                "--default-room-mode", "group", "--joins-per-minute", "100000",
                "--workers", str(self.args.workers), *self.args.server_arg,
            ),
        )  # fmt: skip
        proc = self.srv.spawn(web.argv(), name=name, cpus=self.args.server_cpu)
        for proto in ("tcp", "udp"):
            wait_listening(self.srv, SERVER_IP, PORT, proto, timeout=20, proc=proc)
        return proc, f"{SERVER_IP}:{PORT}"

    def run_step(self, kind: str, scenario: str, n: int, steps_done: int) -> Step:
        args = self.args
        people = participants_for(scenario, n)
        step = Step(kind, scenario, n)
        step.publishers = sum(1 for p in people if p[2])
        step.subscribers = sum(1 for p in people if p[3])
        step.streams = sum(p[3] for p in people)
        clients = []
        server, address = self.start_server(
            kind, f"{kind}-{scenario}-{n}", self.workdir / f"server-{steps_done}"
        )
        try:
            time.sleep(0.5)
            step.rss_base_kib = rss_kib(server.pid)
            specs = [
                f"{room}:{name}:{'p' if pub else 's'}:{expect}:{i}"
                for i, (room, name, pub, expect) in enumerate(people)
            ]
            for k in range(0, len(specs), args.per_process):
                mine = specs[k : k + args.per_process]
                argv = [
                    sys.executable, str(Path(__file__).resolve()), "client",
                    "--server", address, "--ca", str(self.pki.ca),
                    "--fps", str(args.fps), "--video-kbps", str(args.video_kbps),
                    *(["--janus"] if kind == "janus" else []),
                    *itertools.chain.from_iterable(("--participant", s) for s in mine),
                ]  # fmt: skip
                clients.append(
                    self.cli.spawn(argv, name=f"client-{kind}-{scenario}-{n}-{k}", cpus=args.load_cpu)
                )
            t0 = time.monotonic()
            while True:
                time.sleep(1.0)
                if not server.alive():
                    raise LabError(f"server died: {server.describe()}")
                last = [
                    next((e for e in reversed(json_lines(c.log_text())) if e["event"] == "status"), None)
                    for c in clients
                ]
                if all(s is not None and s["receiving"] == s["participants"] for s in last):
                    break
                if time.monotonic() - t0 > READY_TIMEOUT_S:
                    raise LabError(
                        f"not every subscriber received every stream after {READY_TIMEOUT_S:.0f} s: {last}"
                    )
            step.ready_s = time.monotonic() - t0
            time.sleep(SETTLE_S)
            step.rss_loaded_kib = rss_kib(server.pid)
            wait0 = run_queue_wait_s(server.pid)
            load_wait0 = sum(run_queue_wait_s(c.pid) for c in clients)
            cpu0, load0, w0 = (
                cpu_seconds(server.pid),
                sum(cpu_seconds(c.pid) for c in clients),
                time.monotonic(),
            )
            for c in clients:
                os.kill(c.pid, signal.SIGUSR1)
            time.sleep(args.window)
            for c in clients:
                os.kill(c.pid, signal.SIGUSR2)
            cpu1, load1, w1 = (
                cpu_seconds(server.pid),
                sum(cpu_seconds(c.pid) for c in clients),
                time.monotonic(),
            )
            wait1 = run_queue_wait_s(server.pid)
            load_wait1 = sum(run_queue_wait_s(c.pid) for c in clients)
            windows = [self.window_report(c) for c in clients]
            wall = w1 - w0
            step.window_s = wall
            packets = sum(w["packets"] for w in windows)
            step.forwarded_pps = packets / wall
            step.sent_pps = sum(w["sent"] for w in windows) / wall
            step.server_cpu_s = cpu1 - cpu0
            step.pkts_per_cpu_s = packets / step.server_cpu_s if step.server_cpu_s > 0 else math.nan
            step.server_core_pct = 100 * step.server_cpu_s / wall
            step.server_wait_pct = 100 * (wait1 - wait0) / wall
            step.load_wait_pct = 100 * (load_wait1 - load_wait0) / wall
            step.load_core_pct = 100 * (load1 - load0) / wall
            per_sub = [x for w in windows for x in w["perSubscriber"]]
            step.min_subscriber_pps = min(per_sub) / wall if per_sub else math.nan
            hist: Counter[int] = Counter()
            for w in windows:
                hist.update({int(k): v for k, v in w["hist"].items()})
            step.delay_samples = sum(hist.values())
            step.late_slots = [[i, *slot] for i, w in enumerate(windows) for slot in w["late"]]
            step.delay_p50_ms = percentile(hist, 0.50)
            step.delay_p90_ms = percentile(hist, 0.90)
            step.delay_p99_ms = percentile(hist, 0.99)
            late = sum(v for k, v in hist.items() if k * BUCKET_US >= 100_000)
            step.delay_over_100ms_pct = 100 * late / step.delay_samples if step.delay_samples else math.nan
            if step.subscribers:
                step.rss_per_subscriber_kib = (step.rss_loaded_kib - step.rss_base_kib) / step.subscribers
        except LabError as exc:
            text = str(exc)
            step.error = text if len(text) < 2500 else f"{text[:800]} [...] {text[-1500:]}"
            step.error += "\nserver log:\n" + server.tail(20)
        finally:
            for c in clients:
                self.labobj.procs.stop(c)
            self.labobj.procs.stop(server)
        return step

    @staticmethod
    def window_report(client: Proc, timeout: float = 15.0) -> dict[str, Any]:
        """The client's SIGUSR2 report; a client starved of CPU may take a while to print it."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in json_lines(client.log_text()) if e["event"] == "window"]
            if found:
                return found[-1]
            if time.monotonic() > deadline or not client.alive():
                raise LabError(f"no window report from {client.describe()}")
            time.sleep(0.2)


def fmt(v: float, spec: str) -> str:
    return "n/a" if isinstance(v, float) and math.isnan(v) else format(v, spec)


def markdown(steps: Sequence[Step]) -> str:
    columns = (
        "server", "scenario", "subscribe conns", "streams", "forwarded pkt/s", "server core %",
        "pkt per CPU-s", "delay p50 ms", "delay p99 ms", "RSS per subscriber KiB", "load core %",
        "server run-queue wait %",
    )  # fmt: skip
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for s in steps:
        if s.scenario == "mesh":
            name = f"{s.n} x {s.n}"
        else:
            name = f"1 → {s.n}" if s.publishers == 1 else f"{s.publishers} x (1 → {s.n // s.publishers})"
        if s.error:
            rows.append(f"| {s.server} | {name} | ERROR: {s.error.splitlines()[0][:80]} " + "|" * 10)
            continue
        cells = (
            s.server, name, str(s.subscribers), str(s.streams), fmt(s.forwarded_pps, ",.0f"),
            fmt(s.server_core_pct, ".0f"), fmt(s.pkts_per_cpu_s, ",.0f"), fmt(s.delay_p50_ms, ".2f"),
            fmt(s.delay_p99_ms, ".2f"), fmt(s.rss_per_subscriber_kib, ".0f"), fmt(s.load_core_pct, ".0f"),
            fmt(s.server_wait_pct, ".1f"),
        )  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def ratio_table(steps: Sequence[Step]) -> str:
    """Per step run on both servers: meet443's CPU per forwarded packet over Janus's (medians)."""
    keys = sorted({(s.scenario, s.n) for s in steps}, key=lambda k: (k[0] != "fanout", k[1]))
    rows = ["| scenario | meet443 µs CPU/pkt | Janus µs CPU/pkt | meet443 / Janus |", "|---|---|---|---|"]
    for scenario, n in keys:
        cost = {}
        for kind in ("meet443", "janus"):
            good = [
                1e6 / s.pkts_per_cpu_s
                for s in steps
                if (s.server, s.scenario, s.n) == (kind, scenario, n) and not s.error and s.pkts_per_cpu_s > 0
            ]
            if good:
                cost[kind] = statistics.median(good)
        if len(cost) == 2:
            name = f"fanout {n}" if scenario == "fanout" else f"{n} x {n}"
            ratio = cost["meet443"] / cost["janus"]
            rows.append(f"| {name} | {cost['meet443']:.1f} | {cost['janus']:.1f} | {ratio:.2f} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def subscribers_at_80(steps: Sequence[Step]) -> dict[str, float] | None:
    """Least-squares line server core % = a + b * N over the fan-out steps, solved for 80%."""
    pts = [(s.n, s.server_core_pct) for s in steps if s.scenario == "fanout" and not s.error]
    if len(pts) < 2 or len({n for n, _ in pts}) < 2:
        return None
    mean_n = statistics.fmean(n for n, _ in pts)
    mean_c = statistics.fmean(c for _, c in pts)
    b = sum((n - mean_n) * (c - mean_c) for n, c in pts) / sum((n - mean_n) ** 2 for n, _ in pts)
    a = mean_c - b * mean_n
    return {
        "intercept_pct": a,
        "pct_per_subscriber": b,
        "subscribers_at_80pct": (80 - a) / b if b > 0 else math.nan,
        "measured_max_pct": max(c for _, c in pts),
    }


def environment(args: argparse.Namespace) -> dict[str, Any]:
    def version(pkg: str) -> str:
        try:
            return v(pkg)
        except PackageNotFoundError:
            return "?"

    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "cpu_model": next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "?",
        ),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiortc": version("aiortc"),
        "commit": git.stdout.strip(),
        "loadavg": os.getloadavg(),
        "args": {k: v for k, v in vars(args).items() if k != "json"},
    }


def parse_ramp(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--fanout", default="5,10,20,40", help="subscriber counts of the 1 -> N steps")
    ap.add_argument("--mesh", default="2,4,6", help="room sizes of the N x N steps")
    ap.add_argument("--window", type=float, default=10.0, help="measured seconds per step")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--video-kbps", type=float, default=1000)
    ap.add_argument("--per-process", type=int, default=20, help="participants per load-client process")
    ap.add_argument("--server-cpu", default=None)
    ap.add_argument("--load-cpu", default=None)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--server-arg", action="append", default=[], help="extra argument for meet443 serve")
    ap.add_argument(
        "--workers", type=int, default=1, help="meet443's media worker processes (default 1: one process)"
    )
    ap.add_argument("--smoke", action="store_true", help="1 -> 2 and 2 x 2, 2 s windows (CI)")
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--only", choices=("meet443", "janus"), action="append", help="run only this server (repeatable)"
    )
    args = ap.parse_args(argv)
    args.servers = args.only or (["meet443", "janus"] if shutil.which("janus") else ["meet443"])
    if args.smoke:
        args.fanout, args.mesh, args.window, args.repeat = "2", "2", 2.0, 1
    args.fanout_steps, args.mesh_steps = parse_ramp(args.fanout), parse_ramp(args.mesh)
    if args.no_pin:
        args.server_cpu = args.load_cpu = None
    elif (os.cpu_count() or 1) >= 2:
        args.server_cpu = args.server_cpu or "1"
        args.load_cpu = args.load_cpu or "0"
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    args = parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    if args.load_cpu is not None:
        os.sched_setaffinity(0, {int(c) for c in args.load_cpu.split(",")})
    t0 = time.monotonic()
    meta = environment(args)
    steps: list[Step] = []
    with tempfile.TemporaryDirectory(prefix="sfu-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        with bench.lab():
            pins = f"server cpu {args.server_cpu}, load cpu {args.load_cpu}"
            print(f"# SFU benchmark; {pins}; {args.window:g} s windows", flush=True)
            for rep in range(args.repeat):
                for scenario, ramp in (("fanout", args.fanout_steps), ("mesh", args.mesh_steps)):
                    for i, n in enumerate(ramp):
                        order = args.servers if (rep + i) % 2 == 0 else args.servers[::-1]
                        for kind in order:
                            step = bench.run_step(kind, scenario, n, len(steps))
                            steps.append(step)
                            brief = {
                                k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(step).items()
                            }
                            brief.pop("late_slots")
                            head = f"  [{rep + 1}/{args.repeat}] {kind} {scenario} {n}: "
                            print(head + (step.error or json.dumps(brief)), flush=True)
    table = markdown(steps)
    print()
    print(table)
    ratios = ratio_table(steps)
    if ratios:
        print()
        print(ratios)
    fits = {kind: subscribers_at_80([s for s in steps if s.server == kind]) for kind in args.servers}
    for kind, fit in fits.items():
        if fit:
            print(
                f"\n{kind} fan-out fit: server core % = {fit['intercept_pct']:.1f}"
                f" + {fit['pct_per_subscriber']:.3f} x N; "
                f"80% of a core at N = {fit['subscribers_at_80pct']:.0f} subscribers "
                f"(extrapolated; highest measured {fit['measured_max_pct']:.0f}%)"
            )
    if args.smoke:
        print("\n(smoke: tiny rooms, 2 s windows; the figures are not comparable)")
    out = args.json or REPO / "bench" / "out" / f"sfu_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": {**meta, "elapsed_s": round(time.monotonic() - t0, 1)},
        "steps": [asdict(s) for s in steps],
        "fanout_fit": fits,
        "markdown": table + ("\n\n" + ratios if ratios else ""),
    }
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nJSON: {out}  ({time.monotonic() - t0:.0f} s)")
    return 0 if all(s.error is None for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
