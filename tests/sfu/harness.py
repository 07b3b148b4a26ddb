"""A fake simulcast publisher for driving the SFU building blocks without I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from meet443.proto.rtp.codecs import Vp8PayloadDescriptor
from meet443.proto.rtp.packet import RtpPacket
from tests.proto.turn.harness import FakeClock

__all__ = ["FakeClock", "Layer", "SimulcastPublisher"]

VP8_PT = 96


@dataclass
class Layer:
    """One simulcast encoding: its own SSRC, sequence numbers and timestamp base (as browsers do)."""

    ssrc: int
    height: int
    packets_per_frame: int
    seq: int
    timestamp: int
    picture_id: int = 0
    keyframe_pending: bool = True
    sent: list[bytes] = field(default_factory=list)

    def frame(self, ticks: int, payload_size: int = 1000) -> list[bytes]:
        """The RTP packets of the next frame (a keyframe if one is pending), VP8-packetised."""
        keyframe = self.keyframe_pending
        self.keyframe_pending = False
        self.timestamp = (self.timestamp + ticks) & 0xFFFFFFFF
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        packets = []
        for i in range(self.packets_per_frame):
            descriptor = bytes(Vp8PayloadDescriptor(start_of_partition=i == 0, picture_id=self.picture_id))
            # RFC 7741 §4.3: the first partition's payload header, P bit 0 for keyframes.
            header = bytes((0x00 if keyframe else 0x01, 0, 0)) if i == 0 else b""
            payload = descriptor + header + bytes(payload_size - len(descriptor) - len(header))
            marker = i == self.packets_per_frame - 1
            packets.append(bytes(RtpPacket(VP8_PT, self.seq, self.timestamp, self.ssrc, payload, marker)))
            self.seq = (self.seq + 1) & 0xFFFF
        self.sent += packets
        return packets


class SimulcastPublisher:
    """Three layers (180p, 360p, 720p) at 30 frames/s; a keyframe when asked (PLI) or every ``gop``."""

    def __init__(self, *, gop: int = 10_000, seq_bases: tuple[int, int, int] = (65500, 100, 30000)) -> None:
        # Each encoding has its own SSRC, sequence numbers, timestamp base and picture IDs.
        self.layers = [
            Layer(0x1000, 180, 1, seq_bases[0], 0xFFFF0000, picture_id=0x7FF0),
            Layer(0x2000, 360, 3, seq_bases[1], 12345, picture_id=1000),
            Layer(0x3000, 720, 8, seq_bases[2], 0x7FFFFFF0, picture_id=20000),
        ]
        self.gop = gop
        self.frames = 0

    def ssrc(self, layer: int) -> int:
        return self.layers[layer].ssrc

    def layer_of(self, ssrc: int) -> int:
        return next(i for i, layer in enumerate(self.layers) if layer.ssrc == ssrc)

    def request_keyframe(self, ssrc: int) -> None:
        self.layers[self.layer_of(ssrc)].keyframe_pending = True

    def frame(self) -> list[tuple[int, bytes]]:
        """One frame on every layer: ``(layer, packet)`` in the order they go on the wire."""
        self.frames += 1
        if self.frames % self.gop == 0:
            for layer in self.layers:
                layer.keyframe_pending = True
        out = []
        for index, layer in enumerate(self.layers):
            out += [(index, packet) for packet in layer.frame(3000)]
        return out
