"""Just enough of the video payload formats to switch simulcast layers on a keyframe.

- VP8 (RFC 7741 §4.2 payload descriptor, §4.3 payload header): a packet starts a keyframe when it
  starts partition 0 (S=1, PID=0) and the VP8 payload header's P bit (the inverse key frame flag)
  is 0. :class:`Vp8PayloadDescriptor` is the typed codec; :func:`vp8_is_keyframe` reads in place.
- H.264 (RFC 6184 §5.2-5.8): a packet starts a keyframe when it carries an SPS (type 7) or the
  start of an IDR slice (type 5): as a single NAL unit, inside a STAP-A, or as the first FU-A
  fragment. Interleaved-mode types (STAP-B, MTAP, FU-B) are not used by browsers and never count.

The in-place readers take ``(data, offset, end)``, the payload bounds from
:func:`~meet443.proto.rtp.packet.rtp_header`, so no payload is copied; they raise only ParseError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from meet443.exceptions import ParseError
from meet443.proto.rtp.packet import Buffer

H264_IDR = 5
H264_SPS = 7
H264_PPS = 8
H264_STAP_A = 24
H264_FU_A = 28


@dataclass(frozen=True, slots=True)
class Vp8PayloadDescriptor:
    """RFC 7741 §4.2 VP8 payload descriptor.

    ``picture_id`` is 7 or 15 bits (``long_picture_id`` is the M bit); ``temporal_layer`` (TID)
    and ``layer_sync`` (Y) travel when the T bit is set, ``key_index`` when the K bit is.
    """

    start_of_partition: bool
    partition_id: int = 0
    non_reference: bool = False
    picture_id: int | None = None
    long_picture_id: bool = True
    tl0_pic_idx: int | None = None
    temporal_layer: int | None = None
    layer_sync: bool = False
    key_index: int | None = None

    @classmethod
    def parse(cls, payload: Buffer) -> tuple[Self, int]:
        """The descriptor and its size in bytes (the VP8 payload follows it)."""
        size = len(payload)
        if size < 1:
            raise ParseError("VP8 payload descriptor missing")
        first = payload[0]
        picture_id = tl0 = tid = keyidx = None
        long_id = True
        sync = False
        pos = 1
        if first & 0x80:
            if pos >= size:
                raise ParseError("VP8 extension byte missing")
            extension = payload[pos]
            pos += 1
            if extension & 0x80:
                if pos >= size:
                    raise ParseError("VP8 picture ID missing")
                long_id = bool(payload[pos] & 0x80)
                if long_id:
                    if pos + 2 > size:
                        raise ParseError("VP8 15-bit picture ID truncated")
                    picture_id = (payload[pos] & 0x7F) << 8 | payload[pos + 1]
                    pos += 2
                else:
                    picture_id = payload[pos]
                    pos += 1
            if extension & 0x40:
                if pos >= size:
                    raise ParseError("VP8 TL0PICIDX missing")
                tl0 = payload[pos]
                pos += 1
            if extension & 0x30:
                if pos >= size:
                    raise ParseError("VP8 TID/KEYIDX byte missing")
                if extension & 0x20:
                    tid = payload[pos] >> 6
                    sync = bool(payload[pos] & 0x20)
                if extension & 0x10:
                    keyidx = payload[pos] & 0x1F
                pos += 1
        descriptor = cls(
            start_of_partition=bool(first & 0x10),
            partition_id=first & 0x07,
            non_reference=bool(first & 0x20),
            picture_id=picture_id,
            long_picture_id=long_id,
            tl0_pic_idx=tl0,
            temporal_layer=tid,
            layer_sync=sync,
            key_index=keyidx,
        )
        return descriptor, pos

    def __bytes__(self) -> bytes:
        first = (
            (0x20 if self.non_reference else 0)
            | (0x10 if self.start_of_partition else 0)
            | (self.partition_id & 0x07)
        )
        extension = 0
        tail = bytearray()
        if self.picture_id is not None:
            extension |= 0x80
            if self.long_picture_id:
                tail += bytes((0x80 | (self.picture_id >> 8 & 0x7F), self.picture_id & 0xFF))
            else:
                tail.append(self.picture_id & 0x7F)
        if self.tl0_pic_idx is not None:
            extension |= 0x40
            tail.append(self.tl0_pic_idx & 0xFF)
        if self.temporal_layer is not None or self.key_index is not None:
            byte = 0
            if self.temporal_layer is not None:
                extension |= 0x20
                byte |= (self.temporal_layer & 0x03) << 6 | (0x20 if self.layer_sync else 0)
            if self.key_index is not None:
                extension |= 0x10
                byte |= self.key_index & 0x1F
            tail.append(byte)
        if extension:
            return bytes((first | 0x80, extension)) + bytes(tail)
        return bytes((first,))


def vp8_is_keyframe(data: Buffer, offset: int = 0, end: int | None = None) -> bool:
    """RFC 7741 §4.3: does this VP8 packet start a keyframe? Reads ``data[offset:end]`` in place."""
    if end is None:
        end = len(data)
    if offset >= end:
        return False
    first = data[offset]
    if not first & 0x10 or first & 0x07:
        return False  # not the start of partition 0: no payload header here
    pos = offset + 1
    if first & 0x80:
        if pos >= end:
            raise ParseError("VP8 extension byte missing")
        extension = data[pos]
        pos += 1
        if extension & 0x80:
            if pos >= end:
                raise ParseError("VP8 picture ID missing")
            pos += 2 if data[pos] & 0x80 else 1
        if extension & 0x40:
            pos += 1
        if extension & 0x30:
            pos += 1
    if pos >= end:
        raise ParseError("VP8 payload header missing")
    return not data[pos] & 0x01


def vp8_picture_fields(data: Buffer, offset: int = 0, end: int | None = None) -> tuple[int, int, int]:
    """RFC 7741 §4.2: where the picture ID and TL0PICIDX sit in ``data``, to rewrite them in place.

    Returns ``(picture_id_offset, picture_id_bits, tl0_pic_idx_offset)``: bits is 15 (M=1) or 7, and
    an offset is -1 when the descriptor lacks that field.
    """
    if end is None:
        end = len(data)
    if offset >= end:
        raise ParseError("VP8 payload descriptor missing")
    picture_id, bits, tl0 = -1, 0, -1
    if data[offset] & 0x80:
        pos = offset + 1
        if pos >= end:
            raise ParseError("VP8 extension byte missing")
        extension = data[pos]
        pos += 1
        if extension & 0x80:
            if pos >= end:
                raise ParseError("VP8 picture ID missing")
            picture_id = pos
            if data[pos] & 0x80:
                if pos + 2 > end:
                    raise ParseError("VP8 15-bit picture ID truncated")
                bits = 15
                pos += 2
            else:
                bits = 7
                pos += 1
        if extension & 0x40:
            if pos >= end:
                raise ParseError("VP8 TL0PICIDX missing")
            tl0 = pos
    return picture_id, bits, tl0


def h264_nal_types(data: Buffer, offset: int = 0, end: int | None = None) -> list[int]:
    """RFC 6184 §5.6-5.8: the NAL unit types this packet starts (FU-A: only the first fragment)."""
    if end is None:
        end = len(data)
    if offset >= end:
        raise ParseError("H.264 payload empty")
    nal_type = data[offset] & 0x1F
    if nal_type == H264_STAP_A:
        types = []
        pos = offset + 1
        while pos < end:
            if pos + 2 > end:
                raise ParseError("STAP-A NAL unit size truncated")
            length = data[pos] << 8 | data[pos + 1]
            pos += 2
            if length == 0 or pos + length > end:
                raise ParseError("STAP-A NAL unit overruns the packet")
            types.append(data[pos] & 0x1F)
            pos += length
        return types
    if nal_type == H264_FU_A:
        if offset + 2 > end:
            raise ParseError("FU-A header missing")
        header = data[offset + 1]
        return [header & 0x1F] if header & 0x80 else []
    if nal_type == 0 or nal_type > 23:
        return []  # RFC 6184 §5.2: 0 is undefined; 25-27 and 29 are interleaved mode; 30-31 undefined
    return [nal_type]


def h264_is_keyframe(data: Buffer, offset: int = 0, end: int | None = None) -> bool:
    """Does this H.264 packet start a keyframe (an SPS, or the start of an IDR slice)?"""
    return any(t in (H264_IDR, H264_SPS) for t in h264_nal_types(data, offset, end))
