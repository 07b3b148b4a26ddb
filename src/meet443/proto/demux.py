"""RFC 7983 §7: tell the protocols that share the one UDP port apart by their first byte."""

from __future__ import annotations

import enum


class PacketKind(enum.Enum):
    STUN = "stun"
    ZRTP = "zrtp"
    DTLS = "dtls"
    CHANNEL_DATA = "channel-data"
    RTP = "rtp"
    UNKNOWN = "unknown"


def _kind_of(first_byte: int) -> PacketKind:
    if first_byte <= 3:
        return PacketKind.STUN
    if 16 <= first_byte <= 19:
        return PacketKind.ZRTP
    if 20 <= first_byte <= 63:
        return PacketKind.DTLS
    if 64 <= first_byte <= 127:
        # RFC 7983 assigns 64-79; 80-127 are unassigned and carry RFC 5766's wider channel range.
        return PacketKind.CHANNEL_DATA
    if 128 <= first_byte <= 191:
        return PacketKind.RTP  # RTP and RTCP; RFC 5761 §4 splits them by payload type
    return PacketKind.UNKNOWN


#: Indexed by the first byte, so the per-packet path is one list lookup.
KIND_BY_FIRST_BYTE: tuple[PacketKind, ...] = tuple(_kind_of(b) for b in range(256))


def classify(data: bytes | memoryview) -> PacketKind:
    """The protocol of a datagram arriving on the shared UDP port."""
    return KIND_BY_FIRST_BYTE[data[0]] if data else PacketKind.UNKNOWN
