"""The building blocks together, as the SFU's wiring will use them, for one simulcast track and one
subscriber: bandwidth drops and recovers, layers switch at keyframes asked for by PLI, and the
subscriber sees one stream with contiguous sequence numbers and monotonic timestamps; its NACKs are
answered with RTX from the retransmit buffer.
"""

from __future__ import annotations

import itertools

from meet443.proto.rtp.codecs import Vp8PayloadDescriptor, vp8_is_keyframe
from meet443.proto.rtp.packet import RtpPacket, rewrite_header, rtp_header, unwrap_rtx
from meet443.proto.rtp.rtcp import GenericNack, PictureLossIndication, RtcpPacket, parse_rtcp, serialize_rtcp
from meet443.proto.rtp.serial import seq_delta, ts_delta
from meet443.sfu.bitrate import BitrateMeter
from meet443.sfu.events import KeyframeNeeded, LayerSwitched, LayerTargetChanged
from meet443.sfu.keyframes import KeyframeRequester
from meet443.sfu.layers import Event, SimulcastSelector
from meet443.sfu.retransmit import RetransmitBuffer, RtxSettings
from meet443.sfu.rewrite import StreamRewriter, Vp8PictureRewriter

from .harness import FakeClock, SimulcastPublisher

OUT_SSRC, RTX_SSRC, SFU_SSRC = 0x5EB0, 0x5EB1, 0xF00D


class Sfu:
    """Test-only glue: what the wiring does per packet and per event (no I/O, fake clock)."""

    def __init__(self, publisher: SimulcastPublisher, clock: FakeClock) -> None:
        self.publisher = publisher
        self.clock = clock
        self.meters = [BitrateMeter() for _ in publisher.layers]
        self.keyframes = KeyframeRequester(SFU_SSRC)
        self.rewriter = StreamRewriter(
            OUT_SSRC, clock_rate=90000, first_sequence=65000, first_timestamp=4_000_000_000
        )
        self.pictures = Vp8PictureRewriter(first_picture_id=0x7FF0)
        self.selector = SimulcastSelector([layer.height for layer in publisher.layers])
        self.buffer = RetransmitBuffer(rtx=RtxSettings(RTX_SSRC, 97))
        self.delivered: list[bytes] = []
        self.switches: list[LayerSwitched] = []
        self.switch_times: list[float] = []
        self.plis = 0

    def handle(self, events: list[Event]) -> None:
        for event in events:
            match event:
                case LayerTargetChanged(target=target):
                    self.rewriter.select(None if target is None else self.publisher.ssrc(target))
                case KeyframeNeeded(layer=layer):
                    self.send_to_publisher(self.keyframes.request(self.publisher.ssrc(layer), self.clock.now))
                case LayerSwitched():
                    self.switches.append(event)
                    self.switch_times.append(self.clock.now)

    def send_to_publisher(self, packets: list[RtcpPacket]) -> None:
        if not packets:
            return
        for packet in parse_rtcp(serialize_rtcp(packets)):
            assert isinstance(packet, PictureLossIndication)
            self.plis += 1
            self.publisher.request_keyframe(packet.media_ssrc)

    def ingress(self, layer: int, packet: bytes) -> None:
        now = self.clock.now
        self.meters[layer].add(len(packet), now)
        _, seq, ts, ssrc, offset, end = rtp_header(packet)
        keyframe = vp8_is_keyframe(packet, offset, end)
        if keyframe:
            self.keyframes.keyframe_received(ssrc)
        before = self.rewriter.current
        out = self.rewriter.rewrite(ssrc, seq, ts, keyframe, now)
        if out is None:
            return
        if self.rewriter.current != before:
            self.handle(self.selector.switched(layer, now))
        buffer = bytearray(packet)
        rewrite_header(buffer, out[0], out[1], OUT_SSRC)
        self.pictures.rewrite(buffer, offset, end, self.rewriter.switches)
        self.buffer.store(out[0], bytes(buffer), now)
        self.delivered.append(bytes(buffer))

    def tick(self, estimate: float) -> None:
        now = self.clock.now
        self.handle(self.selector.update(now, estimate, [m.bitrate(now) for m in self.meters]))
        self.handle(self.selector.handle_timer(now))
        self.send_to_publisher(self.keyframes.handle_timer(now))


def estimate_at(t: float) -> float:
    return 6_000_000 if t < 3 or t >= 6 else 1_500_000


def test_down_and_up_through_keyframes() -> None:
    clock = FakeClock(0.0)
    publisher = SimulcastPublisher()
    sfu = Sfu(publisher, clock)
    for frame in range(330):
        for layer, packet in publisher.frame():
            sfu.ingress(layer, packet)
        clock.advance(1 / 30)
        if frame % 3 == 2:
            sfu.tick(estimate_at(clock.now))

    # 720p from the start (6 Mbps), 360p as soon as the estimate drops at 3 s (down fast: the next
    # tick asks for a keyframe, the next frame brings it), 720p again 2 s after it recovers at 6 s.
    assert [(s.previous, s.current) for s in sfu.switches] == [(None, 2), (2, 1), (1, 2)]
    start, down, up = sfu.switch_times
    assert start < 0.2
    assert 3.0 <= down < 3.0 + 0.2
    assert 8.0 <= up < 8.0 + 0.2
    assert sfu.plis == 3  # one keyframe request per switch, nothing more (no GOP keyframes here)

    packets = [RtpPacket.parse(p) for p in sfu.delivered]
    assert {p.ssrc for p in packets} == {OUT_SSRC}
    for previous, current in itertools.pairwise(packets):
        assert seq_delta(current.sequence_number, previous.sequence_number) == 1
        step = ts_delta(current.timestamp, previous.timestamp)
        assert step >= 0
        if previous.marker:
            assert step > 0
    # VP8 picture IDs count frames without a jump at the switches (RFC 7741 §4.2), wrapping at 2^15.
    pictures = [Vp8PayloadDescriptor.parse(p.payload)[0].picture_id for p in packets]
    marked = [pid for pid, p in zip(pictures, packets, strict=True) if p.marker]
    frames = [pid for pid in marked if pid is not None]
    assert frames == marked, "every frame carries a picture ID"
    assert all(b == (a + 1) & 0x7FFF for a, b in itertools.pairwise(frames))
    assert 0 in frames
    # Every switch starts the subscriber's stream on a VP8 keyframe; the sequence wrapped on the way.
    keyframes = [i for i, p in enumerate(packets) if vp8_is_keyframe(p.payload)]
    assert len(keyframes) == 3
    assert keyframes[0] == 0
    assert any(p.sequence_number == 0 for p in packets)

    # The subscriber lost three recent packets: its NACK is answered with RTX from the buffer
    # (and one from 10 s ago is too old to resend).
    lost = [packets[i].sequence_number for i in (-50, -49, -10)]
    nack = parse_rtcp(bytes(GenericNack.for_lost(0xC0FFEE, OUT_SSRC, lost)))[0]
    assert isinstance(nack, GenericNack)
    answers = sfu.buffer.answer([packets[100].sequence_number, *nack.lost()], clock.now)
    assert [RtpPacket.parse(a).ssrc for a in answers] == [RTX_SSRC] * 3
    assert [unwrap_rtx(a, ssrc=OUT_SSRC, payload_type=96) for a in answers] == [
        sfu.delivered[i] for i in (-50, -49, -10)
    ]
    assert sfu.buffer.missing == 1


def test_pli_storm_from_subscribers_is_throttled() -> None:
    clock = FakeClock(0.0)
    publisher = SimulcastPublisher()
    sfu = Sfu(publisher, clock)
    for _ in range(30):  # 30 subscribers' PLIs for layer 2 within 300 ms
        sfu.send_to_publisher(sfu.keyframes.request(publisher.ssrc(2), clock.advance(0.01)))
    assert sfu.plis == 1
    sfu.send_to_publisher(sfu.keyframes.handle_timer(clock.advance(0.5)))
    assert sfu.plis == 2
