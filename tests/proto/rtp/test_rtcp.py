"""RTCP codecs both ways: RFC 3550 §6.4-6.6, RFC 4585 §6, RFC 5104 §4.3.1, REMB and transport-wide CC.

Vectors are real packets (Chrome's REMB, browser TWCC feedback from pion's test suite) or built by
aiortc's RTCP module, an independent implementation, and checked in both directions.
"""

from __future__ import annotations

import contextlib
import struct

import pytest
from aiortc import rtp as aiortc_rtp
from hypothesis import given
from hypothesis import strategies as st

from meet443.exceptions import ParseError
from meet443.proto.rtp.rtcp import (
    FirEntry,
    FullIntraRequest,
    GenericNack,
    Goodbye,
    PictureLossIndication,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpPacket,
    RtcpUnknown,
    RunLengthChunk,
    SdesChunk,
    SdesItem,
    SenderReport,
    SourceDescription,
    StatusVectorChunk,
    TransportCcFeedback,
    ntp_from_unix,
    ntp_middle,
    parse_rtcp,
    serialize_rtcp,
    unix_from_ntp,
)

from .vectors import (
    REMB_CHROME,
    TWCC_BROWSER,
    TWCC_EMPTY,
    TWCC_ONE_BIT_VECTOR,
    TWCC_ONE_PACKET,
    TWCC_RUN_OF_SEVEN,
)

u32 = st.integers(0, 0xFFFFFFFF)
report_blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    packets_lost=st.integers(-(1 << 23), (1 << 23) - 1),
    highest_sequence=u32,
    jitter=u32,
    last_sr=u32,
    delay_since_last_sr=u32,
)


def one(data: bytes) -> object:
    packets = parse_rtcp(data)
    assert len(packets) == 1
    return packets[0]


class TestRfc3550SenderAndReceiverReports:
    """RFC 3550 §6.4.1 and §6.4.2."""

    @given(u32, st.integers(0, (1 << 64) - 1), u32, u32, u32, st.lists(report_blocks, max_size=31))
    def test_sender_report_same_as_aiortc(
        self, ssrc: int, ntp: int, rtp: int, packets: int, octets: int, blocks: list[ReportBlock]
    ) -> None:
        theirs = aiortc_rtp.RtcpSrPacket(
            ssrc=ssrc,
            sender_info=aiortc_rtp.RtcpSenderInfo(ntp, rtp, packets, octets),
            reports=[aiortc_rtp.RtcpReceiverInfo(*_fields(block)) for block in blocks],
        )
        ours = SenderReport(ssrc, ntp, rtp, packets, octets, tuple(blocks))
        assert bytes(ours) == bytes(theirs)
        assert one(bytes(theirs)) == ours

    @given(u32, st.lists(report_blocks, max_size=31))
    def test_receiver_report_same_as_aiortc(self, ssrc: int, blocks: list[ReportBlock]) -> None:
        theirs = aiortc_rtp.RtcpRrPacket(
            ssrc=ssrc, reports=[aiortc_rtp.RtcpReceiverInfo(*_fields(b)) for b in blocks]
        )
        ours = ReceiverReport(ssrc, tuple(blocks))
        assert bytes(ours) == bytes(theirs)
        assert one(bytes(theirs)) == ours

    def test_profile_specific_extension_is_kept(self) -> None:
        report = ReceiverReport(1, (ReportBlock(2, 3, -4, 5, 6, 7, 8),), extension=b"ext!")
        assert one(bytes(report)) == report

    def test_packets_lost_is_signed_24_bit_and_clamped(self) -> None:
        block = ReportBlock(1, 0, -1, 0, 0, 0, 0)
        assert bytes(block)[5:8] == b"\xff\xff\xff"
        assert ReportBlock.parse(bytes(ReportBlock(1, 0, 1 << 30, 0, 0, 0, 0))).packets_lost == (1 << 23) - 1

    @pytest.mark.parametrize(
        "data",
        [
            bytes.fromhex("80c80001") + b"\x00" * 4,  # SR without sender info
            bytes.fromhex("81c90001") + b"\x00" * 4,  # RR announcing a block it lacks
            bytes.fromhex("80c90000"),  # RR without SSRC
        ],
    )
    def test_truncated(self, data: bytes) -> None:
        with pytest.raises(ParseError):
            parse_rtcp(data)

    def test_too_many_blocks(self) -> None:
        with pytest.raises(ValueError, match="31"):
            bytes(ReceiverReport(1, (ReportBlock(1, 0, 0, 0, 0, 0, 0),) * 32))
        with pytest.raises(ValueError, match="31"):
            bytes(SenderReport(1, 0, 0, 0, 0, (ReportBlock(1, 0, 0, 0, 0, 0, 0),) * 32))


def _fields(block: ReportBlock) -> tuple[int, ...]:
    return (
        block.ssrc,
        block.fraction_lost,
        block.packets_lost,
        block.highest_sequence,
        block.jitter,
        block.last_sr,
        block.delay_since_last_sr,
    )


class TestRfc3550SourceDescription:
    """RFC 3550 §6.5."""

    # A CNAME chunk laid out per RFC 3550 §6.5: SSRC, CNAME (1) of 16 bytes, null, one pad byte.
    VECTOR = bytes.fromhex("81ca0006 11223344 0110") + b"user@example.org" + b"\x00\x00"

    def test_vector_both_ways(self) -> None:
        sdes = SourceDescription((SdesChunk(0x11223344, (SdesItem(1, b"user@example.org"),)),))
        assert one(self.VECTOR) == sdes
        assert bytes(sdes) == self.VECTOR

    @given(u32, st.binary(min_size=1, max_size=64))
    def test_cname_against_aiortc(self, ssrc: int, cname: bytes) -> None:
        theirs = aiortc_rtp.RtcpSdesPacket(chunks=[aiortc_rtp.RtcpSourceInfo(ssrc=ssrc, items=[(1, cname)])])
        ours = SourceDescription((SdesChunk(ssrc, (SdesItem(1, cname),)),))
        # aiortc ends a chunk with two nulls before padding, sometimes a word more than needed.
        assert one(bytes(theirs)) == ours
        parsed = aiortc_rtp.RtcpPacket.parse(bytes(ours))[0]
        assert isinstance(parsed, aiortc_rtp.RtcpSdesPacket)
        assert parsed.chunks[0].ssrc == ssrc
        assert parsed.chunks[0].items == [(1, cname)]

    @given(
        st.lists(
            st.tuples(u32, st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=30)), max_size=3)),
            max_size=5,
        )
    )
    def test_round_trip_many_chunks(self, chunks: list[tuple[int, list[tuple[int, bytes]]]]) -> None:
        sdes = SourceDescription(
            tuple(SdesChunk(s, tuple(SdesItem(t, v) for t, v in items)) for s, items in chunks)
        )
        assert one(bytes(sdes)) == sdes

    @pytest.mark.parametrize(
        "data",
        [
            bytes.fromhex("81ca0001 11223344"),  # no terminating null
            bytes.fromhex("81ca0002 11223344 01100000"),  # item longer than the packet
            bytes.fromhex("82ca0002 11223344 00000000"),  # two chunks announced, one present
        ],
    )
    def test_malformed(self, data: bytes) -> None:
        with pytest.raises(ParseError):
            parse_rtcp(data)


class TestRfc3550Goodbye:
    """RFC 3550 §6.6."""

    def test_with_reason(self) -> None:
        # RFC 3550 §6.6: SC=2, two SSRCs, length 6 + "leaving", one pad byte to the 32-bit boundary.
        data = bytes.fromhex("82cb0004 00000001 00000002 07") + b"leaving"
        assert one(data) == Goodbye((1, 2), b"leaving")
        assert bytes(Goodbye((1, 2), b"leaving")) == data

    @given(st.lists(u32, max_size=31))
    def test_same_as_aiortc(self, ssrcs: list[int]) -> None:
        theirs = bytes(aiortc_rtp.RtcpByePacket(sources=ssrcs))
        assert bytes(Goodbye(tuple(ssrcs))) == theirs
        assert one(theirs) == Goodbye(tuple(ssrcs))

    @given(st.lists(u32, max_size=5), st.none() | st.binary(max_size=255))
    def test_round_trip(self, ssrcs: list[int], reason: bytes | None) -> None:
        assert one(bytes(Goodbye(tuple(ssrcs), reason))) == Goodbye(tuple(ssrcs), reason)

    def test_reason_overrun(self) -> None:
        with pytest.raises(ParseError, match="reason"):
            parse_rtcp(bytes.fromhex("81cb0002 00000001 09616263"))


class TestRfc4585GenericNack:
    """RFC 4585 §6.2.1."""

    def test_pairs(self) -> None:
        nack = GenericNack.for_lost(1, 2, [100, 101, 116, 117, 200])
        assert nack.pairs == ((100, 0b1000_0000_0000_0001), (117, 0), (200, 0))
        assert nack.lost() == [100, 101, 116, 117, 200]

    def test_wraps_around(self) -> None:
        nack = GenericNack.for_lost(1, 2, [65534, 65535, 0, 1])
        assert nack.pairs == ((65534, 0b111),)
        assert nack.lost() == [65534, 65535, 0, 1]

    @given(st.lists(st.integers(0, 60000), max_size=40, unique=True).map(sorted), u32, u32)
    def test_same_as_aiortc(self, lost: list[int], sender: int, media: int) -> None:
        theirs = bytes(aiortc_rtp.RtcpRtpfbPacket(fmt=1, ssrc=sender, media_ssrc=media, lost=lost))
        ours = GenericNack.for_lost(sender, media, lost)
        assert bytes(ours) == theirs
        assert one(theirs) == ours
        assert ours.lost() == lost

    def test_odd_fci(self) -> None:
        # 10 bytes of FCI, padded to 12 with the P bit: not a whole number of (PID, BLP) pairs.
        with pytest.raises(ParseError, match="pairs"):
            parse_rtcp(bytes.fromhex("a1cd0004 00000001 00000002 00010002 00ff0002"))


class TestRfc4585PictureLoss:
    """RFC 4585 §6.3.1."""

    @given(u32, u32)
    def test_same_as_aiortc(self, sender: int, media: int) -> None:
        theirs = bytes(aiortc_rtp.RtcpPsfbPacket(fmt=1, ssrc=sender, media_ssrc=media))
        assert bytes(PictureLossIndication(sender, media)) == theirs
        assert one(theirs) == PictureLossIndication(sender, media)

    def test_without_ssrcs(self) -> None:
        with pytest.raises(ParseError, match="SSRC"):
            parse_rtcp(bytes.fromhex("81ce0001 00000001"))


class TestRfc5104FullIntraRequest:
    """RFC 5104 §4.3.1."""

    # RFC 5104 §4.3.1.1 layout: PSFB FMT=4, media SSRC 0, then per entry SSRC, Seq nr., 24 bits reserved.
    VECTOR = bytes.fromhex("84ce0006 00000001 00000000 0000abcd 07000000 0000beef ff000000")

    def test_vector_both_ways(self) -> None:
        fir = FullIntraRequest(1, (FirEntry(0xABCD, 7), FirEntry(0xBEEF, 255)))
        assert one(self.VECTOR) == fir
        assert bytes(fir) == self.VECTOR

    def test_partial_entry(self) -> None:
        with pytest.raises(ParseError, match="FIR"):
            parse_rtcp(bytes.fromhex("84ce0003 00000001 00000000 0000abcd"))


class TestRembDraftAlvestrand:
    """draft-alvestrand-rmcat-remb-03 §2.2."""

    def test_chrome_packet(self) -> None:
        remb = one(REMB_CHROME)
        assert remb == Remb(1, 8_927_168, (1215622422,))
        assert bytes(remb) == REMB_CHROME

    @given(st.integers(0, 10**12), st.lists(u32, max_size=5))
    def test_same_as_aiortc(self, bitrate: int, ssrcs: list[int]) -> None:
        theirs = bytes(
            aiortc_rtp.RtcpPsfbPacket(
                fmt=15, ssrc=9, media_ssrc=0, fci=aiortc_rtp.pack_remb_fci(bitrate, ssrcs)
            )
        )
        assert bytes(Remb(9, bitrate, tuple(ssrcs))) == theirs
        parsed = one(theirs)
        assert isinstance(parsed, Remb)
        assert parsed.bitrate == aiortc_rtp.unpack_remb_fci(aiortc_rtp.pack_remb_fci(bitrate, ssrcs))[0]
        assert parsed.bitrate <= bitrate < parsed.bitrate * 1.00001 + 1

    def test_saturates(self) -> None:
        assert one(bytes(Remb(1, 1 << 100, ()))) == Remb(1, 0x3FFFF << 63, ())

    def test_other_application_feedback_is_kept(self) -> None:
        data = bytes.fromhex("8fce0003 00000001 00000000 41424344 00")[:-1]
        assert one(data) == RtcpUnknown(206, 15, data[4:])
        assert bytes(one(data)) == data  # type: ignore[call-overload]

    @pytest.mark.parametrize(
        "data",
        [
            bytes.fromhex("8fce0003 00000001 00000000 52454d42"),  # no bitrate
            bytes.fromhex("8fce0004 00000001 00000000 52454d42 02000001"),  # 2 SSRCs, none there
        ],
    )
    def test_truncated(self, data: bytes) -> None:
        with pytest.raises(ParseError, match="REMB"):
            parse_rtcp(data)


class TestTransportWideCcFeedback:
    """draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1, with pion's browser vectors."""

    def test_browser_feedback(self) -> None:
        feedback = one(TWCC_BROWSER)
        assert feedback == TransportCcFeedback(
            sender_ssrc=2608133663,
            media_ssrc=2473712828,
            base_sequence=34108,
            packet_status_count=9,
            reference_time=6551830,
            feedback_count=179,
            chunks=(StatusVectorChunk((1, 1, 1, 1, 1, 0, 2), True), RunLengthChunk(0, 48)),
            deltas=(155, 170, 106, 170, 123, 265),
        )
        assert bytes(feedback) == TWCC_BROWSER
        base = 6551830 * 64_000
        assert feedback.results() == [
            (34108, base + 38750),
            (34109, base + 38750 + 42500),
            (34110, base + 38750 + 42500 + 26500),
            (34111, base + 38750 + 42500 + 26500 + 42500),
            (34112, base + 38750 + 42500 + 26500 + 42500 + 30750),
            (34113, None),
            (34114, base + 38750 + 42500 + 26500 + 42500 + 30750 + 66250),
            (34115, None),
            (34116, None),
        ]

    @pytest.mark.parametrize("data", [TWCC_ONE_PACKET, TWCC_RUN_OF_SEVEN, TWCC_ONE_BIT_VECTOR, TWCC_EMPTY])
    def test_round_trip(self, data: bytes) -> None:
        assert bytes(one(data)) == data  # type: ignore[call-overload]

    def test_decoded_values(self) -> None:
        assert one(TWCC_RUN_OF_SEVEN).deltas == (76, 36, 36, 16, 12, 12, 16)  # type: ignore[attr-defined]
        vector = one(TWCC_ONE_BIT_VECTOR)
        assert isinstance(vector, TransportCcFeedback)
        assert vector.statuses() == [1, 1, 1, 0, 1] + [0] * 9
        assert [seq for seq, arrival in vector.results() if arrival is not None] == [1, 2, 3, 5]
        assert one(TWCC_EMPTY) == TransportCcFeedback(2596996162, 0, 0, 0, 0, 0, (), ())

    def test_negative_large_delta(self) -> None:
        feedback = TransportCcFeedback.from_arrivals(1, 2, 0, 10, [1_000_000, 900_000, 900_250])
        # Reference time 15 x 64 ms = 3840 ticks of 250 µs; arrivals at ticks 4000, 3600, 3601.
        assert (feedback.reference_time, feedback.deltas) == (15, (160, -400, 1))
        assert feedback.statuses() == [1, 2, 1]
        parsed = one(bytes(feedback))
        assert isinstance(parsed, TransportCcFeedback)
        arrivals = [arrival for _, arrival in parsed.results()]
        assert arrivals[1] - arrivals[0] == -100_000  # type: ignore[operator]
        assert arrivals[2] - arrivals[1] == 250  # type: ignore[operator]

    @given(
        st.integers(0, 0xFFFF),
        st.integers(0, 10**9),
        st.lists(st.one_of(st.none(), st.integers(0, 300_000)), max_size=300),
    )
    def test_from_arrivals_round_trip(self, base: int, start: int, gaps: list[int | None]) -> None:
        """Built feedback decodes to the arrival times it was given (at 250 µs resolution)."""
        arrivals: list[int | None] = [start]
        now = start
        for gap in gaps:
            if gap is None:
                arrivals.append(None)
            else:
                now += gap - 20_000  # some arrive "earlier" than the previous one (reordering)
                arrivals.append(now)
        feedback = TransportCcFeedback.from_arrivals(7, 8, 42, base, arrivals)
        parsed = one(bytes(feedback))
        assert parsed == feedback
        assert isinstance(parsed, TransportCcFeedback)
        results = parsed.results()
        assert [seq for seq, _ in results] == [(base + i) & 0xFFFF for i in range(len(arrivals))]
        received = [(a, r) for a, (_, r) in zip(arrivals, results, strict=True) if a is not None]
        assert all(r is not None for _, r in received)
        first_sent, first_got = received[0]
        for sent, got in received:
            assert got is not None and first_got is not None
            assert (got - first_got) - (sent // 250 - first_sent // 250) * 250 == 0

    def test_from_arrivals_refuses(self) -> None:
        with pytest.raises(ValueError, match="received"):
            TransportCcFeedback.from_arrivals(1, 2, 0, 0, [None, 5])
        with pytest.raises(ValueError, match="range"):
            TransportCcFeedback.from_arrivals(1, 2, 0, 0, [0, 10_000_000])

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (TWCC_BROWSER[:24].replace(b"\xaf\xcd\x00\x07", b"\x8f\xcd\x00\x05"), "deltas truncated"),
            (bytes.fromhex("8fcd0005 00000001 00000002 00000001 00000000 60010000"), "reserved"),
            (bytes.fromhex("8fcd0004 00000001 00000002 00000003 00000000"), "chunks truncated"),
            (bytes.fromhex("8fcd0005 00000001 00000002 00000003 00000000 00000000"), "length 0"),
            (bytes.fromhex("8fcd0003 00000001 00000002 00000000"), "fixed fields"),
        ],
    )
    def test_malformed(self, data: bytes, reason: str) -> None:
        with pytest.raises(ParseError, match=reason):
            parse_rtcp(data)

    def test_chunk_encoding_limits(self) -> None:
        with pytest.raises(ValueError, match="7 symbols"):
            StatusVectorChunk((1, 2), True).pack()
        with pytest.raises(ValueError, match="14 symbols"):
            StatusVectorChunk((2,) * 14, False).pack()


class TestCompound:
    """RFC 3550 §6.1: SR + SDES (+ BYE) in one datagram, and RFC 5506 reduced-size feedback."""

    PACKETS = (
        SenderReport(0x1111, ntp_from_unix(1_800_000_000.5), 90000, 10, 12000),
        SourceDescription((SdesChunk(0x1111, (SdesItem(1, b"cname"),)),)),
        Goodbye((0x1111,), b"bye"),
    )

    def test_round_trip(self) -> None:
        data = serialize_rtcp(self.PACKETS)
        assert tuple(parse_rtcp(data)) == self.PACKETS
        theirs = aiortc_rtp.RtcpPacket.parse(data)
        assert [type(p).__name__ for p in theirs] == ["RtcpSrPacket", "RtcpSdesPacket", "RtcpByePacket"]

    def test_reduced_size_feedback(self) -> None:
        data = serialize_rtcp([PictureLossIndication(1, 2), one(TWCC_BROWSER), one(REMB_CHROME)])  # type: ignore[list-item]
        assert [type(p) for p in parse_rtcp(data)] == [PictureLossIndication, TransportCcFeedback, Remb]

    def test_unknown_types_are_kept(self) -> None:
        app = bytes.fromhex("80cc0002 00000001") + b"name"
        xr = bytes.fromhex("80cf0001 00000001")
        assert parse_rtcp(app + xr) == [RtcpUnknown(204, 0, app[4:]), RtcpUnknown(207, 0, xr[4:])]
        assert serialize_rtcp(parse_rtcp(app + xr)) == app + xr

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\x80\xc8\x00",
            bytes.fromhex("40c90001 00000001"),  # version 1
            bytes.fromhex("80c90002 00000001"),  # length beyond the datagram
            bytes.fromhex("a0c90001 00000000"),  # padding count 0
            bytes.fromhex("a0c90001 00000009"),  # padding longer than the packet
            bytes.fromhex("a0c90000"),  # padding bit without any payload
        ],
    )
    def test_malformed(self, data: bytes) -> None:
        with pytest.raises(ParseError):
            parse_rtcp(data)

    @given(st.binary(max_size=200))
    def test_fuzz_raises_only_parse_error(self, data: bytes) -> None:
        with contextlib.suppress(ParseError):
            parse_rtcp(data)

    @given(st.sampled_from([200, 201, 202, 203, 205, 206]), st.integers(0, 31), st.binary(max_size=120))
    def test_fuzz_behind_valid_headers(self, packet_type: int, count: int, body: bytes) -> None:
        body = body[: len(body) - len(body) % 4]
        data = struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body
        try:
            packets = parse_rtcp(data)
        except ParseError:
            return
        reparsed = parse_rtcp(serialize_rtcp(packets))
        assert [type(p) for p in reparsed] == [type(p) for p in packets]


class TestNtp:
    def test_round_trip_and_middle(self) -> None:
        ntp = ntp_from_unix(1_800_000_000.25)
        assert ntp >> 32 == 1_800_000_000 + 2_208_988_800
        assert ntp & 0xFFFFFFFF == 1 << 30
        assert unix_from_ntp(ntp) == 1_800_000_000.25
        assert ntp_middle(ntp) == ((ntp >> 32) & 0xFFFF) << 16 | 0x4000


class TestEncodingLimits:
    """What cannot go on the wire is a ValueError at bytes() time (a local bug, not a peer's)."""

    def test_limits(self) -> None:
        chunk = SdesChunk(1, (SdesItem(1, b"x"),))
        with pytest.raises(ValueError, match="31 chunks"):
            bytes(SourceDescription((chunk,) * 32))
        with pytest.raises(ValueError, match="cannot be encoded"):
            bytes(SourceDescription((SdesChunk(1, (SdesItem(1, b"x" * 256),)),)))
        with pytest.raises(ValueError, match="31 SSRCs"):
            bytes(Goodbye(tuple(range(32))))
        with pytest.raises(ValueError, match="255 bytes"):
            bytes(Goodbye((1,), b"x" * 256))
        with pytest.raises(ValueError, match="255 SSRCs"):
            bytes(Remb(1, 1000, tuple(range(256))))
        with pytest.raises(ValueError, match="too many"):
            TransportCcFeedback.from_arrivals(1, 2, 0, 0, [0] * 0x10000)
        with pytest.raises(NotImplementedError):
            bytes(RtcpPacket())

    def test_delta_missing(self) -> None:
        # One packet, a run-length chunk saying "small delta", then the packet ends (P bit: 2 bytes
        # of padding), so the delta byte is missing.
        data = bytes.fromhex("afcd0005 00000001 00000002 00000001 00000000 20010002")
        with pytest.raises(ParseError, match="deltas truncated"):
            parse_rtcp(data)
        # The same with a large delta (2 bytes) of which only one is there.
        data = bytes.fromhex("afcd0005 00000001 00000002 00000001 00000000 4001aa01")
        with pytest.raises(ParseError, match="deltas truncated"):
            parse_rtcp(data)
