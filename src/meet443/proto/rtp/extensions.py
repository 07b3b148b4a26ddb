"""Values of the RTP header extensions an SFU reads or writes (the ids come from SDP ``a=extmap``).

Each value is a frozen dataclass with ``parse()``/``bytes()``; the data path uses the functions
beside it, which read or write in place through :func:`~meet443.proto.rtp.packet.find_extension`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self

from meet443.exceptions import ParseError
from meet443.proto.rtp.packet import Buffer, find_extension

#: RFC 6464 §4 (client-to-mixer audio level).
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
#: draft-holmer-rmcat-transport-wide-cc-extensions-01 §2.
TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
#: RFC 8852 §3.1 and §3.2 (simulcast layer identifiers), RFC 9143 §15 (BUNDLE MID).
RTP_STREAM_ID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RTP_STREAM_ID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"

_U16 = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class AudioLevel:
    """RFC 6464 §3: voice activity flag V and the level in -dBov (0 = loudest, 127 = silence)."""

    voice: bool
    level: int

    @classmethod
    def parse(cls, value: bytes) -> Self:
        # RFC 6464 §3 allows the one-byte form (1 byte) and the two-byte form (padded to 2 bytes).
        if not value:
            raise ParseError("audio level extension is empty")
        return cls(bool(value[0] & 0x80), value[0] & 0x7F)

    def __bytes__(self) -> bytes:
        if not 0 <= self.level <= 127:
            raise ValueError("audio level must be 0-127 (-dBov)")
        return bytes(((0x80 if self.voice else 0) | self.level,))


def audio_level(data: Buffer, ext_id: int) -> AudioLevel | None:
    """RFC 6464 level of an audio packet, read in place; ``None`` when the packet has none."""
    found = find_extension(data, ext_id)
    if found is None:
        return None
    if found[1] < 1:
        raise ParseError("audio level extension is empty")
    byte = data[found[0]]
    return AudioLevel(bool(byte & 0x80), byte & 0x7F)


@dataclass(frozen=True, slots=True)
class TransportSequenceNumber:
    """draft-holmer-rmcat-transport-wide-cc-extensions-01 §2: a 16-bit per-transport counter."""

    value: int

    @classmethod
    def parse(cls, value: bytes) -> Self:
        if len(value) != 2:
            raise ParseError("transport-wide sequence number must be 2 bytes")
        return cls(_U16.unpack(value)[0])

    def __bytes__(self) -> bytes:
        return _U16.pack(self.value)


def transport_sequence_number(data: Buffer, ext_id: int) -> int | None:
    """The transport-wide sequence number of a packet, read in place."""
    found = find_extension(data, ext_id)
    if found is None:
        return None
    if found[1] != 2:
        raise ParseError("transport-wide sequence number must be 2 bytes")
    return int(_U16.unpack_from(data, found[0])[0])


def write_transport_sequence_number(buffer: bytearray, ext_id: int, value: int) -> bool:
    """Overwrite the transport-wide sequence number in place (per subscriber, after rewriting).

    Returns False when the packet has no such element: the SFU can only renumber an element the
    publisher's packet already carries, which holds when both sides negotiated the same id.
    """
    found = find_extension(buffer, ext_id)
    if found is None or found[1] != 2:
        return False
    _U16.pack_into(buffer, found[0], value & 0xFFFF)
    return True


_RID_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
#: RFC 4566 §9 ``token`` characters, which RFC 5888 §4 uses for the MID.
_TOKEN_CHARS = _RID_CHARS | frozenset(b"!#$%&'*+.^`{|}~")


def _sdes_text(data: Buffer, ext_id: int, allowed: frozenset[int], name: str) -> str | None:
    found = find_extension(data, ext_id)
    if found is None:
        return None
    offset, length = found
    raw = bytes(data[offset : offset + length])
    # Some senders pad the string with NULs to a word boundary.
    text = raw.rstrip(b"\x00")
    if not text or not allowed.issuperset(text):
        raise ParseError(f"{name} {raw!r} has characters outside its grammar")
    return text.decode("ascii")


def rtp_stream_id(data: Buffer, ext_id: int) -> str | None:
    """RFC 8852 §3.1 RtpStreamId (or §3.2 RepairedRtpStreamId): the simulcast layer's RID."""
    return _sdes_text(data, ext_id, _RID_CHARS, "RID")


def media_id(data: Buffer, ext_id: int) -> str | None:
    """RFC 9143 §15 MID: which m-line (transceiver) a packet belongs to."""
    return _sdes_text(data, ext_id, _TOKEN_CHARS, "MID")
