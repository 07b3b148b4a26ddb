"""Keyframe detection: VP8 (RFC 7741 §4.2-4.3) and H.264 (RFC 6184 §5.6-5.8), against aiortc's
payload descriptors and against real frames from aiortc's encoders (libvpx, libx264)."""

from __future__ import annotations

import contextlib
import fractions
import random
from typing import Any

import pytest
from aiortc.codecs import h264 as aiortc_h264
from aiortc.codecs import vpx as aiortc_vpx
from hypothesis import given
from hypothesis import strategies as st

from meet443.exceptions import ParseError
from meet443.proto.rtp.codecs import (
    Vp8PayloadDescriptor,
    h264_is_keyframe,
    h264_nal_types,
    vp8_is_keyframe,
    vp8_picture_fields,
)

from .vectors import (
    H264_FU_A_IDR_MIDDLE,
    H264_FU_A_IDR_START,
    H264_FU_A_NON_IDR_START,
    H264_STAP_A_SPS_PPS,
    VP8_DELTA_PAYLOAD,
    VP8_KEYFRAME_PAYLOAD,
)

av = pytest.importorskip("av")

descriptors = st.builds(
    Vp8PayloadDescriptor,
    start_of_partition=st.booleans(),
    partition_id=st.integers(0, 7),
    non_reference=st.booleans(),
    picture_id=st.none() | st.integers(0, 0x7FFF),
    long_picture_id=st.just(True),
    tl0_pic_idx=st.none() | st.integers(0, 255),
    temporal_layer=st.none() | st.integers(0, 3),
    layer_sync=st.just(False),
    key_index=st.none() | st.integers(0, 31),
)


class TestRfc7741Vp8:
    def test_encoder_keyframe(self) -> None:
        descriptor, size = Vp8PayloadDescriptor.parse(VP8_KEYFRAME_PAYLOAD)
        assert descriptor == Vp8PayloadDescriptor(start_of_partition=True, picture_id=0x3F6F)
        assert size == 4
        assert VP8_KEYFRAME_PAYLOAD[size + 3 : size + 6] == b"\x9d\x01\x2a"  # RFC 6386 §9.1 start code
        assert vp8_is_keyframe(VP8_KEYFRAME_PAYLOAD)
        assert not vp8_is_keyframe(VP8_DELTA_PAYLOAD)

    def test_reads_in_place_within_a_packet(self) -> None:
        packet = b"\x00" * 12 + VP8_KEYFRAME_PAYLOAD + b"pad"
        assert vp8_is_keyframe(memoryview(packet), 12, 12 + len(VP8_KEYFRAME_PAYLOAD))

    @pytest.mark.parametrize(
        ("payload", "keyframe"),
        [
            (b"", False),
            (bytes.fromhex("1000"), True),  # no X: S=1, PID=0, payload header P=0
            (bytes.fromhex("1001"), False),
            (bytes.fromhex("0000"), False),  # S=0: a continuation, no payload header here
            (bytes.fromhex("1100"), False),  # PID=1
            (bytes.fromhex("90400500"), True),  # X with TL0PICIDX only
            (bytes.fromhex("9030c500"), True),  # X with TID/KEYIDX byte only
            (bytes.fromhex("90f07f05 c500"), True),  # 7-bit picture ID, L, T, K
        ],
    )
    def test_descriptor_layouts(self, payload: bytes, keyframe: bool) -> None:
        assert vp8_is_keyframe(payload) is keyframe

    @pytest.mark.parametrize(
        "payload",
        [
            bytes.fromhex("90"),
            bytes.fromhex("9080"),
            bytes.fromhex("908081"),
            bytes.fromhex("9040"),
            bytes.fromhex("9020"),
            bytes.fromhex("10"),
        ],
    )
    def test_truncated(self, payload: bytes) -> None:
        with pytest.raises(ParseError):
            vp8_is_keyframe(payload)
        if payload != b"\x10":  # a complete descriptor; only the payload header is missing
            with pytest.raises(ParseError):
                Vp8PayloadDescriptor.parse(payload)

    @given(descriptors, st.binary(min_size=1, max_size=8))
    def test_round_trip_and_aiortc(self, descriptor: Vp8PayloadDescriptor, rest: bytes) -> None:
        data = bytes(descriptor) + rest
        assert Vp8PayloadDescriptor.parse(data) == (descriptor, len(bytes(descriptor)))
        theirs, payload = aiortc_vpx.VpxPayloadDescriptor.parse(data)
        assert payload == rest
        assert (theirs.partition_start, theirs.partition_id, theirs.picture_id) == (
            int(descriptor.start_of_partition),
            descriptor.partition_id,
            descriptor.picture_id,
        )
        assert (theirs.tl0picidx, theirs.keyidx) == (descriptor.tl0_pic_idx, descriptor.key_index)
        keyframe = descriptor.start_of_partition and descriptor.partition_id == 0 and not rest[0] & 1
        assert vp8_is_keyframe(data) is keyframe

    @given(descriptors.filter(lambda d: d.picture_id is not None or d.tl0_pic_idx is not None))
    def test_picture_fields_in_place(self, descriptor: Vp8PayloadDescriptor) -> None:
        data = b"\x00" * 12 + bytes(descriptor) + b"\x01"
        picture_at, bits, tl0_at = vp8_picture_fields(data, 12, len(data))
        if descriptor.picture_id is None:
            assert (picture_at, bits) == (-1, 0)
        else:
            assert bits == 15
            assert (data[picture_at] & 0x7F) << 8 | data[picture_at + 1] == descriptor.picture_id
        assert (data[tl0_at] if tl0_at >= 0 else None) == descriptor.tl0_pic_idx

    @pytest.mark.parametrize(
        "payload",
        [b"", bytes.fromhex("90"), bytes.fromhex("90 80"), bytes.fromhex("90 80 81"), bytes.fromhex("90 40")],
    )
    def test_picture_fields_truncated(self, payload: bytes) -> None:
        with pytest.raises(ParseError):
            vp8_picture_fields(payload)

    def test_picture_fields_short_id_and_none(self) -> None:
        assert vp8_picture_fields(bytes.fromhex("90 c0 05 07 00")) == (2, 7, 3)
        assert vp8_picture_fields(bytes.fromhex("10 00")) == (-1, 0, -1)

    def test_short_picture_id_and_layer_sync(self) -> None:
        descriptor = Vp8PayloadDescriptor(
            True, picture_id=5, long_picture_id=False, temporal_layer=2, layer_sync=True
        )
        assert bytes(descriptor) == bytes.fromhex("90a005a0")
        assert Vp8PayloadDescriptor.parse(bytes(descriptor))[0] == descriptor

    def test_real_frames_from_libvpx(self) -> None:
        encoder = aiortc_vpx.Vp8Encoder()
        for pts, expected in ((0, True), (3000, False), (6000, False)):
            packets, _ = encoder.encode(_frame(pts, noise=True))
            assert vp8_is_keyframe(packets[0]) is expected
            assert not any(vp8_is_keyframe(p) for p in packets[1:])

    @given(st.binary(max_size=20))
    def test_fuzz(self, data: bytes) -> None:
        with contextlib.suppress(ParseError):
            vp8_is_keyframe(data)
        with contextlib.suppress(ParseError):
            Vp8PayloadDescriptor.parse(data)


class TestRfc6184H264:
    def test_fu_a(self) -> None:
        assert h264_nal_types(H264_FU_A_IDR_START) == [5]
        assert h264_is_keyframe(H264_FU_A_IDR_START)
        assert h264_nal_types(H264_FU_A_IDR_MIDDLE) == []
        assert not h264_is_keyframe(H264_FU_A_IDR_MIDDLE)
        assert h264_nal_types(H264_FU_A_NON_IDR_START) == [1]
        assert not h264_is_keyframe(H264_FU_A_NON_IDR_START)

    def test_stap_a(self) -> None:
        assert h264_nal_types(H264_STAP_A_SPS_PPS) == [7, 8]
        assert h264_is_keyframe(H264_STAP_A_SPS_PPS)
        assert not h264_is_keyframe(bytes.fromhex("78000368 ce3c0002 4100"))

    @pytest.mark.parametrize(
        ("nal", "keyframe"), [(0x65, True), (0x67, True), (0x68, False), (0x41, False), (0x06, False)]
    )
    def test_single_nal_units(self, nal: int, keyframe: bool) -> None:
        assert h264_is_keyframe(bytes((nal, 0x88, 0x80)), 0, 3) is keyframe

    def test_interleaved_and_undefined_types_never_count(self) -> None:
        for nal_type in (0, 25, 26, 27, 29, 30, 31):
            assert h264_nal_types(bytes((0x60 | nal_type, 0x85, 0x00))) == []

    @pytest.mark.parametrize(
        "payload",
        [
            b"",
            bytes.fromhex("7c"),
            bytes.fromhex("7800"),
            bytes.fromhex("78000567 42"),
            bytes.fromhex("780000"),
        ],
    )
    def test_malformed(self, payload: bytes) -> None:
        with pytest.raises(ParseError):
            h264_nal_types(payload)

    @given(st.binary(max_size=20))
    def test_fuzz(self, data: bytes) -> None:
        with contextlib.suppress(ParseError):
            h264_is_keyframe(data)

    @pytest.mark.parametrize("noise", [False, True], ids=["stap-a", "fu-a"])
    def test_real_frames_from_libx264(self, noise: bool) -> None:
        """A keyframe's first packet counts (STAP-A with SPS, or FU-A start of the IDR slice); after
        it only the starts of further IDR slices do (this libx264 build cuts frames into 2 slices);
        no packet of a delta frame does."""
        encoder = aiortc_h264.H264Encoder()
        key, _ = encoder.encode(_frame(0, noise=noise, width=640, height=480))
        delta, _ = encoder.encode(_frame(3000, noise=noise, width=640, height=480))
        assert h264_is_keyframe(key[0])
        assert 7 in h264_nal_types(key[0])
        for packet in key[1:]:
            assert h264_is_keyframe(packet) is (h264_nal_types(packet) == [5])
        assert not any(h264_is_keyframe(p) for p in delta)
        # aiortc's own descriptor agrees about where NAL units start.
        for packet in key + delta:
            descriptor, _ = aiortc_h264.H264PayloadDescriptor.parse(packet)
            assert descriptor.first_fragment == bool(h264_nal_types(packet))


def _frame(pts: int, *, noise: bool, width: int = 320, height: int = 240) -> Any:
    frame = av.VideoFrame(width=width, height=height, format="yuv420p")
    rng = random.Random(pts)
    for plane in frame.planes:
        plane.update(rng.randbytes(plane.buffer_size) if noise else bytes(plane.buffer_size))
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, 90000)
    return frame
