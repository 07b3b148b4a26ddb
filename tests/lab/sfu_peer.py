"""One group-room participant built on aiortc, run as a process inside a lab namespace.

    ip netns exec NS python tests/lab/sfu_peer.py --origin https://10.200.81.1 --ca ca.pem \\
        --room r1 --name alice --mark 200 --duration 15

It speaks docs/signaling.md "Group rooms" as an independent client would: ``join`` (v 1) over
``wss://…/v1/ws`` verified against the lab CA; on ``joined`` a publish ``RTCPeerConnection``
(sendonly microphone + camera: a synthetic moving pattern and aiortc's silent audio track) sent as
``publish`` with ``sources``; every ``subscribe-offer`` answered with ``subscribe-answer``; the
``tracks`` mapping kept per mid. Every frame that comes out of a subscribe track's ``recv()`` (VP8
or H.264, and Opus, really decoded by aiortc) is counted against the participant the SFU says the
section carries at that moment. ``--video-codec h264`` offers only H.264 (and RTX) for the camera,
so aiortc's H.264 encoder (libx264 through PyAV) is what it sends.

Each published picture has a square in its top-left corner of luma ``--mark``: a subscriber reads
it back from the decoded frames, which shows whose picture it decodes, not only that it decodes one.

Output: JSON lines on stdout (``event`` = ``joined``, ``signal``, ``state``, ``stats`` once per
``--stats-interval``, ``error``, and last ``result``); other lines (aiortc warnings) may be mixed in.

Must run inside a network namespace: aioice offers every non-loopback interface address of the
host it runs on, and outside a namespace that would be the machine's own network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import ssl
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack, VideoStreamTrack
from aiortc.rtp import RtpPacket

PING_INTERVAL_S = 10.0
MARK_BLOCK = 48  # side of the identifying square, in pixels (a multiple of VP8's 16-pixel macroblocks)
MARK_SAMPLE_EVERY = 10  # read the mark from every 10th decoded frame


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.monotonic(), 3), **fields}), flush=True)


# --------------------------------------------------------------------------------------------------
# What this participant sends


class PatternTrack(VideoStreamTrack):
    """A moving vertical bar on grey, with a square of luma `mark` in the top-left corner."""

    def __init__(self, width: int, height: int, mark: int) -> None:
        super().__init__()
        self.width, self.height, self.mark = width, height, mark
        probe = av.VideoFrame(width, height, "yuv420p")
        self._line = probe.planes[0].line_size
        self._chroma = bytes([128]) * probe.planes[1].buffer_size
        self._n = 0

    def _luma(self) -> bytes:
        bar = (self._n * 4) % max(1, self.width - 16)
        row = bytearray([80]) * self._line
        row[bar : bar + 16] = bytes([220]) * 16
        marked = bytearray(row)
        marked[:MARK_BLOCK] = bytes([self.mark]) * MARK_BLOCK
        return bytes(marked) * MARK_BLOCK + bytes(row) * (self.height - MARK_BLOCK)

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        frame.planes[0].update(self._luma())
        frame.planes[1].update(self._chroma)
        frame.planes[2].update(self._chroma)
        frame.pts, frame.time_base = pts, time_base
        self._n += 1
        return frame


def read_mark(frame: av.VideoFrame) -> int:
    """The mean luma inside the identifying square (a margin away from its lossy edges)."""
    plane = frame.planes[0]
    data = memoryview(plane)
    line = plane.line_size
    margin = 8
    samples = [
        data[y * line + x]
        for y in range(margin, MARK_BLOCK - margin, 4)
        for x in range(margin, MARK_BLOCK - margin, 4)
    ]
    return round(sum(samples) / len(samples))


# --------------------------------------------------------------------------------------------------
# What this participant receives


@dataclass
class Received:
    """Media decoded from one remote participant (as the SFU's ``tracks`` mapping names it)."""

    video_frames: int = 0
    audio_frames: int = 0
    sizes: Counter[str] = field(default_factory=Counter)
    marks: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        marks = sorted(self.marks)
        return {
            "videoFrames": self.video_frames,
            "audioFrames": self.audio_frames,
            "sizes": dict(self.sizes),
            "mark": marks[len(marks) // 2] if marks else None,
        }


def is_vp8_keyframe_start(rtp: bytes) -> bool:
    """RFC 7741: the packet starts partition 0 of a keyframe (read without aiortc's parser)."""
    if len(rtp) < 12:
        return False
    pos = 12 + 4 * (rtp[0] & 0x0F)
    if rtp[0] & 0x10 and len(rtp) >= pos + 4:
        pos += 4 + 4 * int.from_bytes(rtp[pos + 2 : pos + 4], "big")
    if len(rtp) <= pos + 1:
        return False
    first = rtp[pos]
    if not first & 0x10 or first & 0x07:
        return False
    pos += 1
    if first & 0x80:
        ext = rtp[pos]
        pos += 1
        if ext & 0x80:
            pos += 2 if rtp[pos] & 0x80 else 1
        if ext & 0x40:
            pos += 1
        if ext & 0x30:
            pos += 1
    return len(rtp) > pos and not rtp[pos] & 0x01


def selected_pair(transport: Any) -> dict[str, Any] | None:
    """The nominated ICE pair of an aiortc RTCDtlsTransport (aioice keeps it privately)."""
    try:
        pair = transport.transport._connection._nominated.get(1)
    except AttributeError:
        return None
    if pair is None:
        return None
    local, remote = pair.local_candidate, pair.remote_candidate
    return {"local": f"{local.type} {local.host}:{local.port}", "remote": f"{remote.host}:{remote.port}"}


def ice_ufrag(sdp: str) -> str | None:
    found = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.MULTILINE)
    return found.group(1) if found else None


def rtpmap(sdp: str) -> dict[int, str]:
    """Payload type -> encoding name (``a=rtpmap``, RFC 8866 §6.6) of every section."""
    return {int(pt): name for pt, name in re.findall(r"^a=rtpmap:(\d+) ([\w.-]+)/", sdp, re.MULTILINE)}


def first_video_codec(sdp: str) -> str | None:
    """The encoding name of the first format of the first video section: what a sender sends."""
    found = re.search(r"^m=video \S+ \S+ (\d+)", sdp, re.MULTILINE)
    return rtpmap(sdp).get(int(found.group(1))) if found else None


def video_codec_preferences(name: str) -> list[Any]:
    """aiortc's video capabilities of codec `name` (Constrained Baseline first for H.264), then
    RTX: offering nothing else is what makes the SFU answer, and aiortc send, that codec."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    wanted = [c for c in codecs if c.mimeType.lower() == f"video/{name}"]
    if name == "h264":
        wanted.sort(key=lambda c: not str(c.parameters.get("profile-level-id", "")).startswith("42e0"))
    if not wanted:
        raise RuntimeError(f"aiortc cannot send {name}")
    return wanted + [c for c in codecs if c.mimeType.lower() == "video/rtx"]


class GroupPeer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.self_id: str | None = None
        self.config = RTCConfiguration(iceServers=[])
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self.subscribe_ufrag: str | None = None
        self.owners: dict[str, dict[str, Any]] = {}  # mid -> {"kind", "participantId", "source"}
        self.received: dict[str, Received] = {}
        self.by_mid: dict[str, Received] = {}  # the same frames by subscribe section, for diagnosis
        self.unowned_frames = 0
        self.signals: Counter[str] = Counter()
        self.errors: list[dict[str, Any]] = []
        self.subscribe_offers = 0
        self.tasks: set[asyncio.Task[None]] = set()
        # Per incoming SSRC, before aiortc routes it: packets, VP8 keyframe starts, the section
        # aiortc's router hands it to. Tells a wrong SFU mapping from a receiver-side problem.
        self.ssrc_counts: dict[int, dict[str, Any]] = {}
        self.subscribe_codecs: dict[int, str] = {}  # payload type -> name, from the SFU's offers
        # Per remote participant: the video encodings of the packets its sections brought.
        self.codecs_seen: dict[str, set[str]] = {}
        self.publish_codec: str | None = None  # what our camera goes out as (the answer's first)
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    # -- signaling ---------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))

    async def run(self) -> dict[str, Any]:
        ctx = ssl.create_default_context(cafile=self.args.ca)
        url = self.args.origin.replace("https://", "wss://", 1).rstrip("/") + "/v1/ws"
        async with aiohttp.ClientSession() as session, session.ws_connect(url, ssl=ctx, heartbeat=None) as ws:
            self.ws = ws
            await self.send({"type": "join", "v": 1, "room": self.args.room, "displayName": self.args.name})
            pinger = asyncio.create_task(self._ping())
            stats = asyncio.create_task(self._stats_loop())
            try:
                await asyncio.wait_for(self._read(ws), timeout=self.args.duration + self.args.join_timeout)
            except TimeoutError:
                pass
            finally:
                pinger.cancel()
                stats.cancel()
                with contextlib.suppress(Exception):
                    await self.send({"type": "leave"})
        result = await self.snapshot()
        await self.close()
        return result

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                return
            if msg.type != aiohttp.WSMsgType.TEXT:
                emit("closed", wsType=str(msg.type), code=ws.close_code)
                return
            data = json.loads(msg.data)
            kind = data.get("type", "?")
            self.signals[kind] += 1
            if kind == "joined":
                deadline = time.monotonic() + self.args.duration
                await self._on_joined(data)
            elif kind == "publish-answer":
                assert self.publisher is not None
                await self.publisher.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
                self.publish_codec = first_video_codec(data["sdp"])
                emit("signal", type=kind, **self._sdp(data["sdp"]))
            elif kind == "subscribe-offer":
                await self._on_subscribe_offer(data)
            elif kind == "tracks":
                self._set_tracks(data["tracks"])
                emit("signal", type=kind, tracks=data["tracks"])
            elif kind == "error":
                self.errors.append(data)
                emit("error", message=data)
            elif kind not in {"pong", "speaker", "participant-updated"}:
                emit("signal", type=kind)

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            await self.send({"type": "ping"})

    async def _on_joined(self, joined: dict[str, Any]) -> None:
        self.self_id = joined["selfId"]
        relay = self.args.relay or joined.get("iceTransportPolicy") == "relay"
        servers: list[RTCIceServer] = []
        if relay:
            # aioice uses one TURN URL; take the one of the transport asked for.
            wanted = f"transport={self.args.turn_transport}"
            for server in joined["iceServers"]:
                urls = server["urls"] if isinstance(server["urls"], list) else [server["urls"]]
                picked = [u for u in urls if u.startswith("turn:") and u.endswith(wanted)]
                if picked:
                    servers.append(RTCIceServer(picked[0], server["username"], server["credential"]))
                    break
            if not servers:
                raise RuntimeError(f"joined offers no turn: URL with {wanted}: {joined['iceServers']}")
        # An empty list, never None: aiortc would otherwise add Google's public STUN server.
        policy = RTCIceTransportPolicy.RELAY if relay else RTCIceTransportPolicy.ALL
        self.config = RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)
        emit("joined", selfId=self.self_id, room=joined["room"], relay=relay, iceServers=len(servers))
        if not self.args.no_publish:
            await asyncio.sleep(self.args.publish_after)
            await self._publish()

    async def _publish(self) -> None:
        pc = self.publisher = RTCPeerConnection(self.config)
        self._watch(pc, "publish")
        audio = pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        video = pc.addTransceiver(
            PatternTrack(self.args.width, self.args.height, self.args.mark), direction="sendonly"
        )
        if self.args.video_codec is not None:
            video.setCodecPreferences(video_codec_preferences(self.args.video_codec))
        await pc.setLocalDescription(await pc.createOffer())
        sources = {audio.mid: "microphone", video.mid: "camera"}
        await self.send({"type": "publish", "sdp": pc.localDescription.sdp, "sources": sources})
        emit("signal", type="publish", sources=sources)

    async def _on_subscribe_offer(self, offer: dict[str, Any]) -> None:
        self.subscribe_offers += 1
        ufrag = ice_ufrag(offer["sdp"])
        if self.subscriber is not None and ufrag != self.subscribe_ufrag:
            # New ICE credentials (after a resubscribe): aiortc cannot restart ICE, so start over.
            old, self.subscriber = self.subscriber, None
            await old.close()
        if self.subscriber is None:
            pc = self.subscriber = RTCPeerConnection(self.config)
            self._watch(pc, "subscribe")
            pc.on("track", lambda track: self._spawn(self._pump(pc, track)))
        self.subscribe_ufrag = ufrag
        pc = self.subscriber
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        self.subscribe_codecs.update(rtpmap(offer["sdp"]))
        for t in pc.getTransceivers():
            self._count_ssrcs(t.receiver.transport, pc)
        self._set_tracks(offer["tracks"])
        await pc.setLocalDescription(await pc.createAnswer())
        await self.send({"type": "subscribe-answer", "sdp": pc.localDescription.sdp})
        emit("signal", type="subscribe-offer", tracks=offer["tracks"], **self._sdp(offer["sdp"]))

    def _sdp(self, sdp: str) -> dict[str, str]:
        return {"sdp": sdp} if self.args.log_sdp else {}

    def _count_ssrcs(self, dtls: Any, pc: RTCPeerConnection) -> None:
        if dtls is None or getattr(dtls, "_sfu_peer_counted", False):
            return
        original = dtls._handle_rtp_data
        counts = self.ssrc_counts
        codecs = self.codecs_seen

        async def counted(data: bytes, arrival_time_ms: int) -> None:
            ssrc = int.from_bytes(data[8:12], "big")
            c = counts.get(ssrc)
            if c is None:
                c = counts[ssrc] = {
                    "packets": 0,
                    "vp8KeyStarts": 0,
                    "pt": data[1] & 0x7F,
                    "pts": [],
                    "mid": None,
                }
                with contextlib.suppress(Exception):
                    packet = RtpPacket.parse(data, dtls._rtp_header_extensions_map)
                    receiver = dtls._rtp_router.route_rtp(packet)
                    c["mid"] = next((t.mid for t in pc.getTransceivers() if t.receiver is receiver), None)
            c["packets"] += 1
            pt = data[1] & 0x7F
            if pt not in c["pts"]:
                c["pts"].append(pt)
            name = self.subscribe_codecs.get(pt)
            if name == "VP8" and is_vp8_keyframe_start(data):
                c["vp8KeyStarts"] += 1
            owner = self.owners.get(str(c["mid"]), {})
            if owner.get("kind") == "video" and owner.get("participantId") and name != "rtx":
                # Whose packet it is when it arrives: a section may change hands later.
                codecs.setdefault(owner["participantId"], set()).add(name or str(pt))
            await original(data, arrival_time_ms)

        dtls._handle_rtp_data = counted
        dtls._sfu_peer_counted = True

        router = dtls._rtp_router
        route = router.route_rtp

        def by_ssrc_only(packet: RtpPacket) -> Any:
            # The SFU names every SSRC it sends in its SDP (RFC 8843 §9.2). aiortc would route an
            # unknown one by payload type alone and keep that guess for good; its receivers register
            # only after the DTLS handshake, so early packets of a second video section would be
            # filed under the first one.
            return route(packet) if packet.ssrc in router.ssrc_table else None

        router.route_rtp = by_ssrc_only

    def _set_tracks(self, tracks: list[dict[str, Any]]) -> None:
        for track in tracks:
            self.owners[track["mid"]] = track

    def _watch(self, pc: RTCPeerConnection, name: str) -> None:
        pc.on("connectionstatechange", lambda: emit("state", pc=name, state=pc.connectionState))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- media -------------------------------------------------------------------------------------

    async def _pump(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        transceiver = next((t for t in pc.getTransceivers() if t.receiver.track is track), None)
        mid = transceiver.mid if transceiver is not None else None
        n = 0
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            owner = self.owners.get(mid or "", {}).get("participantId")
            if owner is None:
                self.unowned_frames += 1
            mark = None
            if (
                isinstance(frame, av.VideoFrame)
                and n % MARK_SAMPLE_EVERY == 0
                and frame.format.name == "yuv420p"
            ):
                mark = read_mark(frame)
            n += 1
            for got in (
                self.received.setdefault(owner, Received()) if owner else None,
                self.by_mid.setdefault(str(mid), Received()),
            ):
                if got is None:
                    continue
                if isinstance(frame, av.VideoFrame):
                    got.video_frames += 1
                    got.sizes[f"{frame.width}x{frame.height}"] += 1
                    if mark is not None:
                        got.marks.append(mark)
                        del got.marks[:-50]
                else:
                    got.audio_frames += 1

    async def _rtp_counts(self) -> dict[str, dict[str, int]]:
        """Per subscribe mid: RTP packets and bytes aiortc received (inbound-rtp stats)."""
        counts: dict[str, dict[str, int]] = {}
        if self.subscriber is None:
            return counts
        transceivers: list[RTCRtpTransceiver] = self.subscriber.getTransceivers()
        for t in transceivers:
            with contextlib.suppress(Exception):
                report = await t.receiver.getStats()
                for stat in report.values():
                    if stat.type == "inbound-rtp":
                        c = counts.setdefault(str(t.mid), {"packets": 0, "bytes": 0})
                        c["packets"] += stat.packetsReceived
                        c["bytes"] += getattr(stat, "bytesReceived", 0)
        return counts

    async def snapshot(self) -> dict[str, Any]:
        def pc_state(pc: RTCPeerConnection | None, side: str) -> dict[str, Any] | None:
            if pc is None:
                return None
            ts = pc.getTransceivers()
            transport = None
            if ts:
                transport = ts[0].sender.transport if side == "publish" else ts[0].receiver.transport
            return {"state": pc.connectionState, "pair": selected_pair(transport) if transport else None}

        return {
            "selfId": self.self_id,
            "publish": pc_state(self.publisher, "publish"),
            "subscribe": pc_state(self.subscriber, "subscribe"),
            "subscribeOffers": self.subscribe_offers,
            "tracks": list(self.owners.values()),
            "received": {pid: r.as_json() for pid, r in self.received.items()},
            "publishCodec": self.publish_codec,
            "videoCodecs": {pid: sorted(names) for pid, names in self.codecs_seen.items()},
            "unownedFrames": self.unowned_frames,
            "byMid": {mid: r.as_json() for mid, r in self.by_mid.items()},
            "rtp": await self._rtp_counts(),
            "rtpBySsrc": {str(k): v for k, v in self.ssrc_counts.items()},
            "signals": dict(self.signals),
            "errors": self.errors,
        }

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.args.stats_interval)
            emit("stats", **await self.snapshot())

    async def close(self) -> None:
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pc.close(), 5)
        for task in list(self.tasks):
            task.cancel()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--origin", required=True, help="https://host[:port] of meet443 serve")
    ap.add_argument("--ca", required=True, help="CA file the server's certificate must chain to")
    ap.add_argument("--room", required=True)
    ap.add_argument("--name", default="aiortc")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds in the room after joined")
    ap.add_argument("--join-timeout", type=float, default=10.0, help="seconds allowed until joined")
    ap.add_argument("--no-publish", action="store_true", help="subscribe only")
    ap.add_argument("--publish-after", type=float, default=0.0, help="seconds between joined and publish")
    ap.add_argument("--relay", action="store_true", help="iceTransportPolicy relay: media only through TURN")
    ap.add_argument("--turn-transport", choices=["udp", "tcp"], default="udp")
    ap.add_argument(
        "--video-codec",
        choices=["vp8", "h264"],
        default=None,
        help="offer only this codec (and RTX) for the camera; default: all aiortc has (VP8 first)",
    )
    ap.add_argument("--mark", type=int, default=200, help="luma of the identifying square (16-235)")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--stats-interval", type=float, default=1.0)
    ap.add_argument("--log-sdp", action="store_true", help="include SDP in the signal events")
    args = ap.parse_args(argv)
    if not 16 <= args.mark <= 235 or args.height < MARK_BLOCK or args.width < MARK_BLOCK:
        ap.error("--mark must be 16-235 and the picture at least 48x48")
    return args


async def amain(args: argparse.Namespace) -> int:
    peer = GroupPeer(args)
    try:
        result = await peer.run()
    except Exception as exc:  # reported to the test as data, with what was received so far
        emit("result", error=f"{type(exc).__name__}: {exc}", **await peer.snapshot())
        await peer.close()
        return 1
    emit("result", **result)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
