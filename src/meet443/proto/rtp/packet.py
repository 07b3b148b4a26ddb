"""RTP packets (RFC 3550 §5.1) with RFC 8285 header extensions, RFC 4588 RTX and RFC 5761 §4 demux.

Two ways in, one oracle:

- :class:`RtpPacket` is the typed codec: ``parse()`` and ``bytes()`` with CSRCs, padding and the
  header extension as a typed value (:class:`OneByteExtensions`, :class:`TwoByteExtensions` or
  :class:`RawExtension`). Tests and the control plane use it.
- The data path reads a header in place with :func:`rtp_header` (one ``struct.unpack_from``, a
  plain tuple back), finds an extension with :func:`find_extension`, and writes the rewritten
  sequence number, timestamp and SSRC into a copy with :func:`rewrite_header`. Measured with
  ``bench/rtp_forward.py`` on 1100-byte packets: 0.44 µs per header for the function, 0.67 µs for a
  slotted "view" object filled in ``__init__``, 0.83 µs for properties unpacking on access and
  5.1 µs for ``RtpPacket.parse``; so the fast path stays a function returning a tuple. The tests
  check the functions against :class:`RtpPacket`.

Every parser here raises only :class:`~meet443.exceptions.ParseError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self, TypeAlias

from meet443.exceptions import ParseError

#: What the data-path functions accept: anything indexable that ``struct.unpack_from`` reads.
Buffer: TypeAlias = bytes | bytearray | memoryview

RTP_VERSION = 2
HEADER_SIZE = 12
#: RFC 8285 §4.2: the "defined by profile" value of the one-byte header form.
ONE_BYTE_PROFILE = 0xBEDE
#: RFC 8285 §4.3: the two-byte form is 0x100 followed by 4 "appbits".
TWO_BYTE_PROFILE = 0x1000
TWO_BYTE_PROFILE_MASK = 0xFFF0

_FIXED = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_EXT_HEADER = struct.Struct("!HH")


# --- RFC 8285 header extensions as typed values -------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderExtension:
    """One RFC 8285 extension element: a local identifier and its value bytes."""

    id: int
    value: bytes


@dataclass(frozen=True, slots=True)
class OneByteExtensions:
    """RFC 8285 §4.2: profile 0xBEDE; ids 1-14, values of 1-16 bytes."""

    elements: tuple[HeaderExtension, ...]

    def get(self, ext_id: int) -> bytes | None:
        return _get(self.elements, ext_id)

    def pack(self) -> tuple[int, bytes]:
        out = bytearray()
        for element in self.elements:
            if not 1 <= element.id <= 14 or not 1 <= len(element.value) <= 16:
                raise ValueError(f"one-byte extension element {element.id} cannot be encoded")
            out.append(element.id << 4 | (len(element.value) - 1))
            out += element.value
        return ONE_BYTE_PROFILE, bytes(out)


@dataclass(frozen=True, slots=True)
class TwoByteExtensions:
    """RFC 8285 §4.3: profile 0x100 + 4 appbits; ids 1-255, values of 0-255 bytes."""

    elements: tuple[HeaderExtension, ...]
    appbits: int = 0

    def get(self, ext_id: int) -> bytes | None:
        return _get(self.elements, ext_id)

    def pack(self) -> tuple[int, bytes]:
        out = bytearray()
        for element in self.elements:
            if not 1 <= element.id <= 255 or len(element.value) > 255:
                raise ValueError(f"two-byte extension element {element.id} cannot be encoded")
            out += bytes((element.id, len(element.value)))
            out += element.value
        return TWO_BYTE_PROFILE | (self.appbits & 0x0F), bytes(out)


@dataclass(frozen=True, slots=True)
class RawExtension:
    """RFC 3550 §5.3.1: a header extension of any other profile, kept as opaque 32-bit words."""

    profile: int
    data: bytes

    def get(self, ext_id: int) -> bytes | None:
        return None

    def pack(self) -> tuple[int, bytes]:
        if len(self.data) % 4:
            raise ValueError("RFC 3550 header extension data must be a multiple of 4 bytes")
        return self.profile, self.data


Extension: TypeAlias = OneByteExtensions | TwoByteExtensions | RawExtension


def _get(elements: tuple[HeaderExtension, ...], ext_id: int) -> bytes | None:
    for element in elements:
        if element.id == ext_id:
            return element.value
    return None


def _parse_one_byte(block: bytes) -> OneByteExtensions:
    elements = []
    pos, end = 0, len(block)
    while pos < end:
        byte = block[pos]
        ext_id = byte >> 4
        if ext_id == 0:
            # RFC 8285 §4.2: padding bytes may sit between elements; like libwebrtc, an ID of 0
            # skips one byte whatever its length bits say.
            pos += 1
            continue
        if ext_id == 15:
            # RFC 8285 §4.2: "processing of the entire extension should terminate at that point".
            break
        length = (byte & 0x0F) + 1
        if pos + 1 + length > end:
            raise ParseError(f"one-byte header extension {ext_id} overruns the extension block")
        elements.append(HeaderExtension(ext_id, block[pos + 1 : pos + 1 + length]))
        pos += 1 + length
    return OneByteExtensions(tuple(elements))


def _parse_two_byte(block: bytes, appbits: int) -> TwoByteExtensions:
    elements = []
    pos, end = 0, len(block)
    while pos < end:
        ext_id = block[pos]
        if ext_id == 0:
            pos += 1
            continue
        if pos + 2 > end:
            raise ParseError(f"two-byte header extension {ext_id} has no length")
        length = block[pos + 1]
        if pos + 2 + length > end:
            raise ParseError(f"two-byte header extension {ext_id} overruns the extension block")
        elements.append(HeaderExtension(ext_id, block[pos + 2 : pos + 2 + length]))
        pos += 2 + length
    return TwoByteExtensions(tuple(elements), appbits)


# --- the typed packet ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """RFC 3550 §5.1 RTP fixed header, CSRC list, header extension, payload and padding.

    ``padding`` is the number of padding bytes including the final count byte (0: the P bit is
    clear). Padding content is not kept (RFC 3550 §5.1 gives it no meaning): ``bytes()`` writes zeros.
    A one-byte extension block's padding between elements is not kept either, so ``bytes(parse(x))
    == x`` holds for packets whose elements are packed back to back, as browsers send them.
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: Extension | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: Buffer) -> Self:
        data = bytes(data)
        b1, seq, ts, ssrc, offset, end = rtp_header(data)
        count = data[0] & 0x0F
        csrcs = struct.unpack_from(f"!{count}I", data, HEADER_SIZE) if count else ()
        extension: Extension | None = None
        if data[0] & 0x10:
            start = HEADER_SIZE + 4 * count
            profile = _U16.unpack_from(data, start)[0]
            block = data[start + 4 : offset]
            if profile == ONE_BYTE_PROFILE:
                extension = _parse_one_byte(block)
            elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
                extension = _parse_two_byte(block, profile & 0x0F)
            else:
                extension = RawExtension(profile, block)
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=data[offset:end],
            marker=bool(b1 & 0x80),
            csrcs=tuple(csrcs),
            extension=extension,
            padding=len(data) - end,
        )

    def __bytes__(self) -> bytes:
        if len(self.csrcs) > 15:
            raise ValueError("at most 15 CSRCs (RFC 3550 §5.1)")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding must be 0-255 bytes")
        b0 = RTP_VERSION << 6 | (0x20 if self.padding else 0) | len(self.csrcs)
        out = bytearray()
        if self.extension is not None:
            b0 |= 0x10
            profile, block = self.extension.pack()
            block += b"\x00" * (-len(block) % 4)
            out += _EXT_HEADER.pack(profile, len(block) // 4) + block
        header = _FIXED.pack(
            b0,
            (0x80 if self.marker else 0) | self.payload_type,
            self.sequence_number,
            self.timestamp,
            self.ssrc,
        )
        csrcs = struct.pack(f"!{len(self.csrcs)}I", *self.csrcs)
        tail = b"\x00" * (self.padding - 1) + bytes((self.padding,)) if self.padding else b""
        return header + csrcs + bytes(out) + self.payload + tail

    def extension_value(self, ext_id: int) -> bytes | None:
        """The value of RFC 8285 extension element ``ext_id``, if the packet carries it."""
        return None if self.extension is None else self.extension.get(ext_id)


# --- the data path: read and rewrite in place ----------------------------------------------------


def rtp_header(data: Buffer) -> tuple[int, int, int, int, int, int]:
    """RFC 3550 §5.1: ``(marker_pt, seq, timestamp, ssrc, payload_offset, payload_end)``.

    ``marker_pt`` is the second byte (``& 0x7F`` is the payload type, ``& 0x80`` the marker);
    ``data[payload_offset:payload_end]`` is the payload without padding. Checks the version, the
    CSRC count, the extension length and the padding count against the length of ``data``.
    """
    size = len(data)
    if size < HEADER_SIZE:
        raise ParseError("RTP packet shorter than its fixed header")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise ParseError(f"RTP version {b0 >> 6}, expected 2")
    offset = HEADER_SIZE + ((b0 & 0x0F) << 2)
    if b0 & 0x10:
        if offset + 4 > size:
            raise ParseError("RTP header extension truncated")
        offset += 4 + (((data[offset + 2] << 8) | data[offset + 3]) << 2)
    if offset > size:
        raise ParseError("RTP header longer than the packet")
    end = size
    if b0 & 0x20:
        padding = data[size - 1]
        if padding == 0 or padding > size - offset:
            raise ParseError(f"RTP padding count {padding} invalid")
        end -= padding
    return b1, seq, ts, ssrc, offset, end


def find_extension(data: Buffer, ext_id: int) -> tuple[int, int] | None:
    """RFC 8285 §4.2/§4.3: ``(offset, length)`` of extension element ``ext_id``'s value in ``data``.

    ``None`` when the packet has no such element (or no RFC 8285 extension block). Reads only as far
    as the element; call :func:`rtp_header` first to validate the packet as a whole.
    """
    size = len(data)
    if size < HEADER_SIZE or not data[0] & 0x10:
        return None
    pos = HEADER_SIZE + ((data[0] & 0x0F) << 2)
    if pos + 4 > size:
        raise ParseError("RTP header extension truncated")
    profile = (data[pos] << 8) | data[pos + 1]
    end = pos + 4 + (((data[pos + 2] << 8) | data[pos + 3]) << 2)
    if end > size:
        raise ParseError("RTP header extension longer than the packet")
    pos += 4
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            byte = data[pos]
            found = byte >> 4
            if found == 0:
                pos += 1
                continue
            if found == 15:
                return None
            length = (byte & 0x0F) + 1
            if pos + 1 + length > end:
                raise ParseError(f"one-byte header extension {found} overruns the extension block")
            if found == ext_id:
                return pos + 1, length
            pos += 1 + length
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos < end:
            found = data[pos]
            if found == 0:
                pos += 1
                continue
            if pos + 2 > end:
                raise ParseError(f"two-byte header extension {found} has no length")
            length = data[pos + 1]
            if pos + 2 + length > end:
                raise ParseError(f"two-byte header extension {found} overruns the extension block")
            if found == ext_id:
                return pos + 2, length
            pos += 2 + length
    return None


def rewrite_header(buffer: bytearray, sequence_number: int, timestamp: int, ssrc: int) -> None:
    """Write a new sequence number, timestamp and SSRC into a packet copy (one ``pack_into``)."""
    _SEQ_TS_SSRC.pack_into(buffer, 2, sequence_number, timestamp, ssrc)


def set_payload_type(buffer: bytearray, payload_type: int) -> None:
    """Change the payload type in place, keeping the marker bit."""
    buffer[1] = (buffer[1] & 0x80) | payload_type


# --- RFC 4588 RTX ---------------------------------------------------------------------------------


def wrap_rtx(data: Buffer, *, sequence_number: int, ssrc: int, payload_type: int) -> bytes:
    """RFC 4588 §4: a retransmission packet carrying ``data``.

    The RTX packet keeps the marker, timestamp, CSRCs and header extension; takes the RTX payload
    type, SSRC and its own sequence number; and its payload is the original sequence number (OSN)
    followed by the original payload. The original padding is removed (RFC 4588 §4).
    """
    b1, _, _, _, offset, end = rtp_header(data)
    header = bytearray(data[:offset])
    header[0] &= 0xDF
    header[1] = (b1 & 0x80) | payload_type
    _U16.pack_into(header, 2, sequence_number)
    _U32.pack_into(header, 8, ssrc)
    header += data[2:4]
    header += data[offset:end]
    return bytes(header)


def unwrap_rtx(data: Buffer, *, ssrc: int, payload_type: int) -> bytes:
    """RFC 4588 §4: the original packet inside an RTX packet (padding of the RTX packet dropped).

    Raises ParseError for an RTX packet without an OSN, e.g. the padding-only probes that
    browsers send on the RTX SSRC (check ``payload_offset == payload_end`` to skip those first).
    """
    b1, _, _, _, offset, end = rtp_header(data)
    if end - offset < 2:
        raise ParseError("RTX packet shorter than its original sequence number")
    header = bytearray(data[:offset])
    header[0] &= 0xDF
    header[1] = (b1 & 0x80) | payload_type
    header[2:4] = data[offset : offset + 2]
    _U32.pack_into(header, 8, ssrc)
    header += data[offset + 2 : end]
    return bytes(header)


def padding_packet(
    *, ssrc: int, payload_type: int, sequence_number: int, timestamp: int, extension: bytes, size: int
) -> bytes:
    """RFC 3550 §5.1: a packet of ``size`` padding bytes and no payload (P bit set, the last byte
    counts the padding), with a one-byte-form header extension block (RFC 8285 §4.2) made of the
    ``extension`` elements. Sent on an RTX SSRC it probes bandwidth without touching the media
    stream (RFC 4588 §4 lets receivers drop it: it has no original sequence number)."""
    if not 1 <= size <= 255:
        raise ValueError("padding is 1 to 255 bytes")
    block = extension + bytes(-len(extension) % 4)
    header = bytearray(
        _FIXED.pack(0xB0 if block else 0xA0, payload_type & 0x7F, sequence_number, timestamp, ssrc)
    )
    if block:
        header += _U16.pack(ONE_BYTE_PROFILE) + _U16.pack(len(block) // 4) + block
    return bytes(header) + bytes(size - 1) + bytes((size,))


# --- RFC 5761 §4 demultiplexing -------------------------------------------------------------------


def is_rtcp(data: Buffer) -> bool:
    """RFC 5761 §4: with RTP and RTCP on one port, a second byte of 192-223 means RTCP.

    RTP payload types 64-95 are forbidden when multiplexing, so marker+PT never takes those
    values; RTCP packet types 200-206 (SR, RR, SDES, BYE, APP, RTPFB, PSFB) and 207 (XR) fall inside.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223
