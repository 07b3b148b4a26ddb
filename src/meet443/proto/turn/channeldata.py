"""ChannelData messages (RFC 8656 §12.4) and the framing of STUN/ChannelData on stream transports.

The typed :class:`ChannelData` is the oracle; the relay's per-packet path uses
:func:`channel_data_header` and slices instead, and the tests check both agree.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self

from meet443.exceptions import ParseError

CHANNEL_MIN = 0x4000
#: RFC 8656 §12 narrowed channels to 0x4000-0x4FFF, but RFC 5766 §11 allows 0x4000-0x7FFF and its
#: clients (coturn's turnutils among them) pick from all of it; coturn accepts all of it. First bytes
#: 0x50-0x7F are unassigned in RFC 7983 §7, so accepting them costs the demultiplexer nothing.
CHANNEL_MAX = 0x7FFF
_HEADER = struct.Struct("!HH")
#: RFC 8656 §12.4: the largest ChannelData a client may send (the length field is 16 bits).
MAX_CHANNEL_DATA = 4 + 0xFFFF


@dataclass(frozen=True, slots=True)
class ChannelData:
    """RFC 8656 §12.4: channel number, length, application data (padded to 4 bytes on streams)."""

    channel: int
    data: bytes

    @classmethod
    def parse(cls, data: bytes | memoryview) -> Self:
        """Decode one message; trailing padding (up to 3 bytes) is accepted and ignored."""
        if len(data) < 4:
            raise ParseError("ChannelData shorter than its header")
        channel, length = _HEADER.unpack_from(data)
        if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
            raise ParseError(f"channel number {channel:#06x} outside 0x4000-0x7FFF")
        if not 4 + length <= len(data) <= 4 + length + 3:
            raise ParseError("ChannelData length does not match the data")
        return cls(channel, bytes(data[4 : 4 + length]))

    def __bytes__(self) -> bytes:
        return _HEADER.pack(self.channel, len(self.data)) + self.data

    def padded(self) -> bytes:
        """The form sent over TCP and TLS (RFC 8656 §12.5): padded to a multiple of 4 bytes."""
        raw = bytes(self)
        return raw + b"\x00" * (-len(raw) % 4)


def channel_data_header(channel: int, length: int) -> bytes:
    return _HEADER.pack(channel, length)


class StreamFramer:
    """Splits a TCP/TLS byte stream into STUN and ChannelData messages (RFC 8656 §12.5).

    ``feed`` returns whole messages; a stream that starts with anything else raises ParseError and
    must be closed, since there is no way to find the next message boundary. ``max_buffer`` bounds
    the memory one connection may hold.
    """

    __slots__ = ("_buffer", "max_buffer")

    def __init__(self, max_buffer: int = 2 * MAX_CHANNEL_DATA) -> None:
        self._buffer = bytearray()
        self.max_buffer = max_buffer

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        buffer = self._buffer
        offset = 0
        while len(buffer) - offset >= 4:
            first = buffer[offset]
            length = (buffer[offset + 2] << 8) | buffer[offset + 3]
            if first < 0x40:
                size = 20 + length
                padded = size
            elif first < 0x80:
                size = 4 + length
                padded = size + (-size % 4)
            else:
                raise ParseError(f"stream byte {first:#04x} starts neither STUN nor ChannelData")
            if len(buffer) - offset < padded:
                break
            messages.append(bytes(buffer[offset : offset + size]))
            offset += padded
        del buffer[:offset]
        if len(buffer) > self.max_buffer:
            raise ParseError("stream message larger than allowed")
        return messages
