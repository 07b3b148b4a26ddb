"""RTCP packets as typed values (RFC 3550 §6.4-6.6, RFC 4585 §6, RFC 5104 §4.3.1, REMB, TWCC).

Each packet is a frozen dataclass with ``bytes()``; :func:`parse_rtcp` splits a compound packet
(RFC 3550 §6.1; reduced-size feedback of RFC 5506 §3 too) and decodes each part. Packets this
module does not know (APP, XR, other feedback formats) come back as :class:`RtcpUnknown`, so a
compound packet always round-trips. Parsers raise only :class:`~meet443.exceptions.ParseError`.

RTCP runs at a few packets per second per stream, so there is no separate in-place path here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Self, TypeAlias

from meet443.exceptions import ParseError
from meet443.proto.rtp.packet import Buffer

SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204
RTPFB = 205
PSFB = 206
XR = 207

#: RFC 4585 §6.2.1 and draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1 (RTPFB FMT values).
FMT_NACK = 1
FMT_TRANSPORT_CC = 15
#: RFC 4585 §6.3, RFC 5104 §4.3.1 and draft-alvestrand-rmcat-remb-03 §2 (PSFB FMT values).
FMT_PLI = 1
FMT_FIR = 4
FMT_AFB = 15

_HEADER = struct.Struct("!BBH")
_FEEDBACK = struct.Struct("!II")
_REPORT_BLOCK = struct.Struct("!IIIIII")
_SENDER_INFO = struct.Struct("!IQIII")
_U32 = struct.Struct("!I")

#: Seconds from the NTP epoch (1900) to the Unix epoch (1970), RFC 868.
NTP_UNIX_OFFSET = 2_208_988_800


def ntp_from_unix(seconds: float) -> int:
    """RFC 3550 §4: a wall-clock time as a 64-bit NTP timestamp (32.32 fixed point)."""
    return round((seconds + NTP_UNIX_OFFSET) * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def unix_from_ntp(ntp: int) -> float:
    return ntp / (1 << 32) - NTP_UNIX_OFFSET


def ntp_middle(ntp: int) -> int:
    """RFC 3550 §6.4.1: the middle 32 bits of an NTP timestamp, as LSR carries it."""
    return (ntp >> 16) & 0xFFFFFFFF


def _header(packet_type: int, count: int, payload: bytes) -> bytes:
    """RFC 3550 §6.4.1 common header; pads the payload to 32 bits with the P bit when needed."""
    padding = -len(payload) % 4
    if padding:
        payload += b"\x00" * (padding - 1) + bytes((padding,))
    first = 0x80 | (0x20 if padding else 0) | count
    return _HEADER.pack(first, packet_type, len(payload) // 4) + payload


class RtcpPacket:
    """Base of the RTCP packet types; ``PACKET_TYPE`` is the RTCP PT (RFC 3550 §12.1)."""

    PACKET_TYPE: ClassVar[int]
    __slots__ = ()

    def __bytes__(self) -> bytes:
        raise NotImplementedError


# --- RFC 3550 §6.4: sender and receiver reports ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """RFC 3550 §6.4.1 reception report block (24 bytes).

    ``packets_lost`` is signed 24-bit (duplicates can make it negative); ``last_sr`` is the middle
    32 bits of the last SR's NTP time and ``delay_since_last_sr`` is in units of 1/65536 s.
    """

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    last_sr: int
    delay_since_last_sr: int

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> Self:
        ssrc, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        return cls(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = max(-0x800000, min(0x7FFFFF, self.packets_lost)) & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            (self.fraction_lost & 0xFF) << 24 | lost,
            self.highest_sequence,
            self.jitter,
            self.last_sr,
            self.delay_since_last_sr,
        )


def _report_blocks(payload: bytes, offset: int, count: int, name: str) -> tuple[ReportBlock, ...]:
    if offset + 24 * count > len(payload):
        raise ParseError(f"{name} shorter than its {count} report blocks")
    return tuple(ReportBlock.parse(payload, offset + 24 * i) for i in range(count))


@dataclass(frozen=True, slots=True)
class SenderReport(RtcpPacket):
    """RFC 3550 §6.4.1 SR: sender info, up to 31 report blocks, profile-specific extension."""

    PACKET_TYPE: ClassVar[int] = SR
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    @classmethod
    def parse(cls, payload: bytes, count: int) -> Self:
        if len(payload) < 24:
            raise ParseError("SR shorter than its sender info")
        ssrc, ntp, rtp, packets, octets = _SENDER_INFO.unpack_from(payload)
        reports = _report_blocks(payload, 24, count, "SR")
        return cls(ssrc, ntp, rtp, packets, octets, reports, payload[24 + 24 * count :])

    def __bytes__(self) -> bytes:
        if len(self.reports) > 31:
            raise ValueError("an SR carries at most 31 report blocks")
        info = _SENDER_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        blocks = b"".join(bytes(block) for block in self.reports)
        return _header(SR, len(self.reports), info + blocks + self.extension)


@dataclass(frozen=True, slots=True)
class ReceiverReport(RtcpPacket):
    """RFC 3550 §6.4.2 RR: the reporter's SSRC and up to 31 report blocks."""

    PACKET_TYPE: ClassVar[int] = RR
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    @classmethod
    def parse(cls, payload: bytes, count: int) -> Self:
        if len(payload) < 4:
            raise ParseError("RR shorter than its SSRC")
        reports = _report_blocks(payload, 4, count, "RR")
        return cls(_U32.unpack_from(payload)[0], reports, payload[4 + 24 * count :])

    def __bytes__(self) -> bytes:
        if len(self.reports) > 31:
            raise ValueError("an RR carries at most 31 report blocks")
        blocks = b"".join(bytes(block) for block in self.reports)
        return _header(RR, len(self.reports), _U32.pack(self.ssrc) + blocks + self.extension)


# --- RFC 3550 §6.5-6.6: SDES and BYE ----------------------------------------------------------------

SDES_END = 0
SDES_CNAME = 1


@dataclass(frozen=True, slots=True)
class SdesItem:
    """RFC 3550 §6.5: item type (1 = CNAME, ... 8 = PRIV) and its value (up to 255 bytes)."""

    type: int
    value: bytes


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[SdesItem, ...]


@dataclass(frozen=True, slots=True)
class SourceDescription(RtcpPacket):
    """RFC 3550 §6.5 SDES: per source a list of items, each chunk ended by a null and padded."""

    PACKET_TYPE: ClassVar[int] = SDES
    chunks: tuple[SdesChunk, ...]

    @classmethod
    def parse(cls, payload: bytes, count: int) -> Self:
        chunks = []
        pos = 0
        for _ in range(count):
            if pos + 4 > len(payload):
                raise ParseError("SDES chunk truncated")
            ssrc = _U32.unpack_from(payload, pos)[0]
            pos += 4
            items = []
            while True:
                if pos >= len(payload):
                    raise ParseError("SDES chunk without its terminating null item")
                item_type = payload[pos]
                if item_type == SDES_END:
                    pos += 1
                    break
                if pos + 2 > len(payload) or pos + 2 + payload[pos + 1] > len(payload):
                    raise ParseError("SDES item overruns the packet")
                length = payload[pos + 1]
                items.append(SdesItem(item_type, payload[pos + 2 : pos + 2 + length]))
                pos += 2 + length
            pos += -pos % 4
            chunks.append(SdesChunk(ssrc, tuple(items)))
        return cls(tuple(chunks))

    def __bytes__(self) -> bytes:
        if len(self.chunks) > 31:
            raise ValueError("an SDES packet carries at most 31 chunks")
        out = bytearray()
        for chunk in self.chunks:
            out += _U32.pack(chunk.ssrc)
            for item in chunk.items:
                if len(item.value) > 255 or not 1 <= item.type <= 255:
                    raise ValueError(f"SDES item {item.type} cannot be encoded")
                out += bytes((item.type, len(item.value))) + item.value
            out += b"\x00" * (4 - len(out) % 4)
        return _header(SDES, len(self.chunks), bytes(out))


@dataclass(frozen=True, slots=True)
class Goodbye(RtcpPacket):
    """RFC 3550 §6.6 BYE: the sources leaving and an optional reason (kept as bytes)."""

    PACKET_TYPE: ClassVar[int] = BYE
    ssrcs: tuple[int, ...]
    reason: bytes | None = None

    @classmethod
    def parse(cls, payload: bytes, count: int) -> Self:
        if 4 * count > len(payload):
            raise ParseError("BYE shorter than its SSRC list")
        ssrcs = struct.unpack_from(f"!{count}I", payload)
        reason = None
        rest = payload[4 * count :]
        if rest:
            if 1 + rest[0] > len(rest):
                raise ParseError("BYE reason overruns the packet")
            reason = rest[1 : 1 + rest[0]]
        return cls(tuple(ssrcs), reason)

    def __bytes__(self) -> bytes:
        if len(self.ssrcs) > 31:
            raise ValueError("a BYE carries at most 31 SSRCs")
        out = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason is not None:
            if len(self.reason) > 255:
                raise ValueError("BYE reason longer than 255 bytes")
            reason = bytes((len(self.reason),)) + self.reason
            out += reason + b"\x00" * (-len(reason) % 4)
        return _header(BYE, len(self.ssrcs), out)


# --- RFC 4585 / RFC 5104 feedback --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GenericNack(RtcpPacket):
    """RFC 4585 §6.2.1 Generic NACK: (PID, BLP) pairs, each naming PID and up to 16 followers.

    The pairs are kept as sent so a packet round-trips; :meth:`lost` expands them and
    :meth:`for_lost` packs a list of sequence numbers into as few pairs as it can.
    """

    PACKET_TYPE: ClassVar[int] = RTPFB
    FMT: ClassVar[int] = FMT_NACK
    sender_ssrc: int
    media_ssrc: int
    pairs: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        sender, media = _FEEDBACK.unpack_from(payload)
        fci = payload[8:]
        if len(fci) % 4:
            raise ParseError("NACK FCI is not a whole number of (PID, BLP) pairs")
        values = struct.unpack(f"!{len(fci) // 2}H", fci)
        return cls(sender, media, tuple(zip(values[::2], values[1::2], strict=True)))

    def __bytes__(self) -> bytes:
        fci = b"".join(struct.pack("!HH", pid, blp) for pid, blp in self.pairs)
        return _header(RTPFB, FMT_NACK, _FEEDBACK.pack(self.sender_ssrc, self.media_ssrc) + fci)

    def lost(self) -> list[int]:
        """The sequence numbers reported lost, in the order the pairs name them."""
        out = []
        for pid, blp in self.pairs:
            out.append(pid)
            out.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
        return out

    @classmethod
    def for_lost(cls, sender_ssrc: int, media_ssrc: int, lost: Iterable[int]) -> Self:
        """Pack sequence numbers (given oldest first, wrap allowed) into (PID, BLP) pairs."""
        pairs: list[list[int]] = []
        for seq in lost:
            if pairs:
                offset = (seq - pairs[-1][0]) & 0xFFFF
                if 1 <= offset <= 16:
                    pairs[-1][1] |= 1 << (offset - 1)
                    continue
            pairs.append([seq & 0xFFFF, 0])
        return cls(sender_ssrc, media_ssrc, tuple((pid, blp) for pid, blp in pairs))


@dataclass(frozen=True, slots=True)
class PictureLossIndication(RtcpPacket):
    """RFC 4585 §6.3.1 PLI: no FCI."""

    PACKET_TYPE: ClassVar[int] = PSFB
    FMT: ClassVar[int] = FMT_PLI
    sender_ssrc: int
    media_ssrc: int

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        return cls(*_FEEDBACK.unpack_from(payload))

    def __bytes__(self) -> bytes:
        return _header(PSFB, FMT_PLI, _FEEDBACK.pack(self.sender_ssrc, self.media_ssrc))


@dataclass(frozen=True, slots=True)
class FirEntry:
    """RFC 5104 §4.3.1.1: the SSRC asked for a decoder refresh and the command sequence number."""

    ssrc: int
    sequence_number: int


@dataclass(frozen=True, slots=True)
class FullIntraRequest(RtcpPacket):
    """RFC 5104 §4.3.1 FIR: one entry per media sender; the media source SSRC field is 0."""

    PACKET_TYPE: ClassVar[int] = PSFB
    FMT: ClassVar[int] = FMT_FIR
    sender_ssrc: int
    entries: tuple[FirEntry, ...]
    media_ssrc: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        sender, media = _FEEDBACK.unpack_from(payload)
        fci = payload[8:]
        if len(fci) % 8:
            raise ParseError("FIR FCI is not a whole number of 8-byte entries")
        entries = tuple(FirEntry(_U32.unpack_from(fci, i)[0], fci[i + 4]) for i in range(0, len(fci), 8))
        return cls(sender, entries, media)

    def __bytes__(self) -> bytes:
        fci = b"".join(
            struct.pack("!IB3x", entry.ssrc, entry.sequence_number & 0xFF) for entry in self.entries
        )
        return _header(PSFB, FMT_FIR, _FEEDBACK.pack(self.sender_ssrc, self.media_ssrc) + fci)


@dataclass(frozen=True, slots=True)
class Remb(RtcpPacket):
    """draft-alvestrand-rmcat-remb-03 §2.2: receiver estimated maximum bitrate (bps) for SSRCs.

    The bitrate travels as an 18-bit mantissa and a 6-bit exponent; ``bytes()`` picks the smallest
    exponent, as libwebrtc does, so lossy values round down.
    """

    PACKET_TYPE: ClassVar[int] = PSFB
    FMT: ClassVar[int] = FMT_AFB
    IDENTIFIER: ClassVar[bytes] = b"REMB"
    sender_ssrc: int
    bitrate: int
    ssrcs: tuple[int, ...]
    media_ssrc: int = 0

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        sender, media = _FEEDBACK.unpack_from(payload)
        if len(payload) < 16:
            raise ParseError("REMB shorter than its bitrate field")
        count = payload[12]
        if len(payload) < 16 + 4 * count:
            raise ParseError("REMB shorter than its SSRC list")
        exponent = payload[13] >> 2
        mantissa = (payload[13] & 0x03) << 16 | payload[14] << 8 | payload[15]
        ssrcs = struct.unpack_from(f"!{count}I", payload, 16)
        return cls(sender, mantissa << exponent, tuple(ssrcs), media)

    def __bytes__(self) -> bytes:
        if len(self.ssrcs) > 255:
            raise ValueError("REMB names at most 255 SSRCs")
        exponent = max(0, min(63, (max(0, self.bitrate)).bit_length() - 18))
        mantissa = min(0x3FFFF, max(0, self.bitrate) >> exponent)
        fci = (
            self.IDENTIFIER
            + bytes((len(self.ssrcs), exponent << 2 | mantissa >> 16, mantissa >> 8 & 0xFF, mantissa & 0xFF))
            + struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        )
        return _header(PSFB, FMT_AFB, _FEEDBACK.pack(self.sender_ssrc, self.media_ssrc) + fci)


# --- draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1 ---------------------------------------

#: §3.1.1 packet status symbols.
NOT_RECEIVED = 0
SMALL_DELTA = 1
LARGE_DELTA = 2
#: §3.1.5: receive deltas are in multiples of 250 µs; the reference time in multiples of 64 ms.
DELTA_US = 250
REFERENCE_US = 64_000


@dataclass(frozen=True, slots=True)
class RunLengthChunk:
    """§3.1.3: one status symbol repeated ``run_length`` (13 bits) times."""

    symbol: int
    run_length: int

    def symbols(self) -> tuple[int, ...]:
        return (self.symbol,) * self.run_length

    def pack(self) -> int:
        return (self.symbol & 0x3) << 13 | (self.run_length & 0x1FFF)


@dataclass(frozen=True, slots=True)
class StatusVectorChunk:
    """§3.1.4: 14 one-bit symbols (received or not) or 7 two-bit symbols."""

    symbol_list: tuple[int, ...]
    two_bit: bool

    def symbols(self) -> tuple[int, ...]:
        return self.symbol_list

    def pack(self) -> int:
        if self.two_bit:
            if len(self.symbol_list) != 7:
                raise ValueError("a two-bit status vector holds 7 symbols")
            value = 0xC000
            for i, symbol in enumerate(self.symbol_list):
                value |= (symbol & 0x3) << (12 - 2 * i)
            return value
        if len(self.symbol_list) != 14 or any(symbol > 1 for symbol in self.symbol_list):
            raise ValueError("a one-bit status vector holds 14 symbols of 0 or 1")
        value = 0x8000
        for i, symbol in enumerate(self.symbol_list):
            value |= symbol << (13 - i)
        return value

    @classmethod
    def unpack(cls, value: int) -> Self:
        if value & 0x4000:
            return cls(tuple(value >> (12 - 2 * i) & 0x3 for i in range(7)), True)
        return cls(tuple(value >> (13 - i) & 0x1 for i in range(14)), False)


PacketChunk: TypeAlias = RunLengthChunk | StatusVectorChunk


@dataclass(frozen=True, slots=True)
class TransportCcFeedback(RtcpPacket):
    """draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1: per-packet arrival feedback.

    ``reference_time`` is signed 24-bit in 64 ms units, ``deltas`` are the receive deltas in 250 µs
    units, one per packet whose status is SMALL_DELTA (0-255) or LARGE_DELTA (signed 16-bit). The
    chunks are kept as sent so feedback round-trips byte for byte; :meth:`results` expands them and
    :meth:`from_arrivals` builds feedback from arrival times.
    """

    PACKET_TYPE: ClassVar[int] = RTPFB
    FMT: ClassVar[int] = FMT_TRANSPORT_CC
    sender_ssrc: int
    media_ssrc: int
    base_sequence: int
    packet_status_count: int
    reference_time: int
    feedback_count: int
    chunks: tuple[PacketChunk, ...]
    deltas: tuple[int, ...]

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        if len(payload) < 16:
            raise ParseError("transport-cc feedback shorter than its fixed fields")
        sender, media, base, count, reference, feedback_count = struct.unpack_from("!IIHH3sB", payload)
        reference_time = int.from_bytes(reference, "big", signed=True)
        pos = 16
        chunks: list[PacketChunk] = []
        statuses: list[int] = []
        while len(statuses) < count:
            if pos + 2 > len(payload):
                raise ParseError("transport-cc packet chunks truncated")
            value = payload[pos] << 8 | payload[pos + 1]
            pos += 2
            chunk: PacketChunk = (
                StatusVectorChunk.unpack(value)
                if value & 0x8000
                else RunLengthChunk(value >> 13 & 0x3, value & 0x1FFF)
            )
            if isinstance(chunk, RunLengthChunk) and chunk.run_length == 0:
                raise ParseError("transport-cc run-length chunk of length 0")
            chunks.append(chunk)
            statuses.extend(chunk.symbols()[: count - len(statuses)])
        deltas = []
        for status in statuses:
            if status == SMALL_DELTA:
                if pos + 1 > len(payload):
                    raise ParseError("transport-cc receive deltas truncated")
                deltas.append(payload[pos])
                pos += 1
            elif status == LARGE_DELTA:
                if pos + 2 > len(payload):
                    raise ParseError("transport-cc receive deltas truncated")
                deltas.append(int.from_bytes(payload[pos : pos + 2], "big", signed=True))
                pos += 2
            elif status != NOT_RECEIVED:
                raise ParseError("transport-cc status symbol 3 is reserved")
        return cls(sender, media, base, count, reference_time, feedback_count, tuple(chunks), tuple(deltas))

    def __bytes__(self) -> bytes:
        out = bytearray(_FEEDBACK.pack(self.sender_ssrc, self.media_ssrc))
        out += struct.pack("!HH", self.base_sequence, self.packet_status_count)
        out += (self.reference_time & 0xFFFFFF).to_bytes(3, "big") + bytes((self.feedback_count & 0xFF,))
        for chunk in self.chunks:
            out += chunk.pack().to_bytes(2, "big")
        symbols = [s for chunk in self.chunks for s in chunk.symbols()][: self.packet_status_count]
        deltas = iter(self.deltas)
        for symbol in symbols:
            if symbol == SMALL_DELTA:
                out.append(next(deltas))
            elif symbol == LARGE_DELTA:
                out += next(deltas).to_bytes(2, "big", signed=True)
        return _header(RTPFB, FMT_TRANSPORT_CC, bytes(out))

    def statuses(self) -> list[int]:
        return [s for chunk in self.chunks for s in chunk.symbols()][: self.packet_status_count]

    def results(self) -> list[tuple[int, int | None]]:
        """``(transport sequence number, arrival time in µs or None)`` for every reported packet.

        Arrival times are in the feedback sender's time base (reference time x 64 ms plus the
        running sum of deltas); only their differences mean anything.
        """
        time_us = self.reference_time * REFERENCE_US
        deltas = iter(self.deltas)
        out: list[tuple[int, int | None]] = []
        for i, status in enumerate(self.statuses()):
            seq = (self.base_sequence + i) & 0xFFFF
            if status == NOT_RECEIVED:
                out.append((seq, None))
            else:
                time_us += next(deltas) * DELTA_US
                out.append((seq, time_us))
        return out

    @classmethod
    def from_arrivals(
        cls,
        sender_ssrc: int,
        media_ssrc: int,
        feedback_count: int,
        base_sequence: int,
        arrivals_us: Sequence[int | None],
    ) -> Self:
        """Feedback for packets ``base_sequence, base_sequence + 1, ...`` arriving at the given µs.

        The first packet must have arrived (feedback starts at a received packet, as libwebrtc's
        does). Raises ValueError if two consecutive arrivals lie more than the signed 16-bit delta
        range (about 8 s) apart: split the feedback there.
        """
        if not arrivals_us or arrivals_us[0] is None:
            raise ValueError("transport-cc feedback must start with a received packet")
        if len(arrivals_us) > 0xFFFF:
            raise ValueError("too many packets for one feedback")
        reference_time = arrivals_us[0] // REFERENCE_US
        last_ticks = reference_time * (REFERENCE_US // DELTA_US)
        symbols: list[int] = []
        deltas: list[int] = []
        for arrival in arrivals_us:
            if arrival is None:
                symbols.append(NOT_RECEIVED)
                continue
            ticks = arrival // DELTA_US
            delta = ticks - last_ticks
            last_ticks = ticks
            if 0 <= delta <= 0xFF:
                symbols.append(SMALL_DELTA)
            elif -0x8000 <= delta <= 0x7FFF:
                symbols.append(LARGE_DELTA)
            else:
                raise ValueError("receive delta out of range; split the feedback")
            deltas.append(delta)
        return cls(
            sender_ssrc,
            media_ssrc,
            base_sequence & 0xFFFF,
            len(symbols),
            ((reference_time + 0x800000) & 0xFFFFFF) - 0x800000,
            feedback_count & 0xFF,
            _encode_chunks(symbols),
            tuple(deltas),
        )


def _encode_chunks(symbols: Sequence[int]) -> tuple[PacketChunk, ...]:
    """Greedy chunking: a run-length chunk where a run beats a vector, else the widest vector."""
    chunks: list[PacketChunk] = []
    i, total = 0, len(symbols)
    while i < total:
        run = 1
        while i + run < total and symbols[i + run] == symbols[i] and run < 0x1FFF:
            run += 1
        window = symbols[i : i + 14]
        one_bit = max(window) <= 1
        if run >= 14 or (run >= 7 and not one_bit) or i + run == total:
            chunks.append(RunLengthChunk(symbols[i], run))
            i += run
        elif one_bit:
            chunks.append(StatusVectorChunk(tuple(window) + (0,) * (14 - len(window)), False))
            i += 14
        else:
            seven = symbols[i : i + 7]
            chunks.append(StatusVectorChunk(tuple(seven) + (0,) * (7 - len(seven)), True))
            i += 7
    return tuple(chunks)


# --- anything else, and compound packets -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtcpUnknown(RtcpPacket):
    """A packet this module does not decode (APP, XR, other FMTs): kept whole for forwarding."""

    PACKET_TYPE: ClassVar[int] = 0
    packet_type: int
    count: int
    payload: bytes

    def __bytes__(self) -> bytes:
        return _header(self.packet_type, self.count, self.payload)


def _parse_feedback(packet_type: int, fmt: int, payload: bytes) -> RtcpPacket:
    if len(payload) < 8:
        raise ParseError("feedback message shorter than its two SSRCs")
    if packet_type == RTPFB:
        if fmt == FMT_NACK:
            return GenericNack.parse(payload)
        if fmt == FMT_TRANSPORT_CC:
            return TransportCcFeedback.parse(payload)
    else:
        if fmt == FMT_PLI:
            return PictureLossIndication.parse(payload)
        if fmt == FMT_FIR:
            return FullIntraRequest.parse(payload)
        if fmt == FMT_AFB and payload[8:12] == Remb.IDENTIFIER:
            return Remb.parse(payload)
    return RtcpUnknown(packet_type, fmt, payload)


def parse_rtcp(data: Buffer) -> list[RtcpPacket]:
    """RFC 3550 §6.1 / Appendix A.2: split a (compound or reduced-size) RTCP packet and decode it.

    Checks the version and that the length fields tile the datagram exactly; padding (P bit) is
    accepted on any part, as libwebrtc puts it on transport-cc feedback wherever it sits.
    """
    data = bytes(data)
    if not data:
        raise ParseError("empty RTCP packet")
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ParseError("RTCP header truncated")
        first, packet_type, length = _HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise ParseError(f"RTCP version {first >> 6}, expected 2")
        end = pos + 4 + 4 * length
        if end > len(data):
            raise ParseError("RTCP length field beyond the datagram")
        payload = data[pos + 4 : end]
        if first & 0x20:
            padding = payload[-1] if payload else 0
            if padding == 0 or padding > len(payload):
                raise ParseError(f"RTCP padding count {padding} invalid")
            payload = payload[:-padding]
        count = first & 0x1F
        packet: RtcpPacket
        if packet_type == SR:
            packet = SenderReport.parse(payload, count)
        elif packet_type == RR:
            packet = ReceiverReport.parse(payload, count)
        elif packet_type == SDES:
            packet = SourceDescription.parse(payload, count)
        elif packet_type == BYE:
            packet = Goodbye.parse(payload, count)
        elif packet_type in (RTPFB, PSFB):
            packet = _parse_feedback(packet_type, count, payload)
        else:
            packet = RtcpUnknown(packet_type, count, payload)
        packets.append(packet)
        pos = end
    return packets


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """RFC 3550 §6.1: a compound packet is its parts back to back."""
    return b"".join(bytes(packet) for packet in packets)
