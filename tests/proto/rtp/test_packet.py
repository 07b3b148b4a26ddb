"""RTP codec (RFC 3550 §5.1, RFC 8285, RFC 4588, RFC 5761 §4) both ways, the in-place readers
against the codec, aiortc's RTP module as an independent oracle, and fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from aiortc import rtp as aiortc_rtp
from hypothesis import given
from hypothesis import strategies as st

from meet443.exceptions import ParseError
from meet443.proto.rtp.packet import (
    HeaderExtension,
    OneByteExtensions,
    RawExtension,
    RtpPacket,
    TwoByteExtensions,
    find_extension,
    is_rtcp,
    padding_packet,
    rewrite_header,
    rtp_header,
    set_payload_type,
    unwrap_rtx,
    wrap_rtx,
)

from .vectors import (
    RTP_RFC8285_ONE_BYTE,
    RTP_RFC8285_TWO_BYTE,
    RTP_WITH_CSRCS,
    RTP_WITH_PADDING,
)

# --- strategies ---------------------------------------------------------------------------------

one_byte_elements = st.lists(
    st.builds(HeaderExtension, st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=6
).map(tuple)
two_byte_elements = st.lists(
    st.builds(HeaderExtension, st.integers(1, 255), st.binary(max_size=40)), max_size=6
).map(tuple)
extensions = st.one_of(
    st.none(),
    one_byte_elements.map(OneByteExtensions),
    st.builds(TwoByteExtensions, two_byte_elements, st.integers(0, 15)),
    st.builds(
        RawExtension,
        st.integers(0, 0xFFFF).filter(lambda p: p != 0xBEDE and p & 0xFFF0 != 0x1000),
        st.binary(max_size=12).map(lambda b: b + b"\x00" * (-len(b) % 4)),
    ),
)
packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence_number=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=extensions,
    padding=st.integers(0, 255),
)


class TestRfc3550FixedHeader:
    """RFC 3550 §5.1."""

    def test_decodes_csrcs(self) -> None:
        packet = RtpPacket.parse(RTP_WITH_CSRCS)
        assert packet == RtpPacket(
            payload_type=96,
            sequence_number=0x1234,
            timestamp=0x89ABCDEF,
            ssrc=0x01020304,
            payload=b"abc",
            marker=True,
            csrcs=(0x0A0B0C0D, 0x11121314),
        )
        assert bytes(packet) == RTP_WITH_CSRCS

    def test_padding(self) -> None:
        packet = RtpPacket.parse(RTP_WITH_PADDING)
        assert (packet.payload, packet.padding) == (b"abc", 4)
        assert bytes(packet) == RTP_WITH_PADDING
        assert rtp_header(RTP_WITH_PADDING)[4:] == (20, 23)

    def test_header_view_agrees(self) -> None:
        for data in (RTP_WITH_CSRCS, memoryview(RTP_WITH_CSRCS), bytearray(RTP_WITH_CSRCS)):
            assert rtp_header(data) == (0xE0, 0x1234, 0x89ABCDEF, 0x01020304, 20, 23)

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            RTP_WITH_CSRCS[:11],
            b"\x40" + RTP_WITH_CSRCS[1:],  # version 1
            b"\x8f" + RTP_WITH_CSRCS[1:12],  # 15 CSRCs announced, none there
            bytes.fromhex("90600001 00000002 deadbeef") + b"\xbe\xde",  # extension header cut
            bytes.fromhex("90600001 00000002 deadbeef") + bytes.fromhex("bede0002") + b"\x10\xaa",
            RTP_WITH_PADDING[:-1] + b"\x00",  # padding count 0
            RTP_WITH_PADDING[:-1] + b"\x20",  # padding longer than the payload
        ],
        ids=["empty", "short", "version", "csrc", "ext-header", "ext-length", "pad-zero", "pad-long"],
    )
    def test_malformed(self, data: bytes) -> None:
        with pytest.raises(ParseError):
            RtpPacket.parse(data)
        with pytest.raises(ParseError):
            rtp_header(data)

    @given(packets)
    def test_round_trip(self, packet: RtpPacket) -> None:
        assert RtpPacket.parse(bytes(packet)) == packet

    def test_refuses_to_encode_nonsense(self) -> None:
        with pytest.raises(ValueError, match="CSRC"):
            bytes(RtpPacket(0, 0, 0, 0, csrcs=(1,) * 16))
        with pytest.raises(ValueError, match="padding"):
            bytes(RtpPacket(0, 0, 0, 0, padding=256))


class TestRfc8285HeaderExtensions:
    """RFC 8285 §4.2 and §4.3, from the RFC's own figures."""

    def test_one_byte_figure(self) -> None:
        packet = RtpPacket.parse(RTP_RFC8285_ONE_BYTE)
        assert packet.extension == OneByteExtensions(
            (
                HeaderExtension(1, b"\xaa"),
                HeaderExtension(2, b"\xbb\xcc"),
                HeaderExtension(3, b"\x01\x02\x03\x04"),
            )
        )
        assert packet.payload == b"payload"
        assert packet.extension_value(2) == b"\xbb\xcc"
        assert packet.extension_value(4) is None
        # The figure pads between elements; we write them back to back and pad at the end.
        assert bytes(packet)[12:28] == bytes.fromhex("bede0003 10aa21bb cc330102 03040000")
        assert RtpPacket.parse(bytes(packet)) == packet

    def test_two_byte_figure(self) -> None:
        packet = RtpPacket.parse(RTP_RFC8285_TWO_BYTE)
        assert packet.extension == TwoByteExtensions(
            (HeaderExtension(1, b""), HeaderExtension(2, b"\xdd"), HeaderExtension(3, b"\x01\x02\x03\x04"))
        )
        assert RtpPacket.parse(bytes(packet)) == packet

    @pytest.mark.parametrize(
        ("data", "ext_id", "value"),
        [
            (RTP_RFC8285_ONE_BYTE, 1, b"\xaa"),
            (RTP_RFC8285_ONE_BYTE, 2, b"\xbb\xcc"),
            (RTP_RFC8285_ONE_BYTE, 3, b"\x01\x02\x03\x04"),
            (RTP_RFC8285_ONE_BYTE, 5, None),
            (RTP_RFC8285_TWO_BYTE, 1, b""),
            (RTP_RFC8285_TWO_BYTE, 2, b"\xdd"),
            (RTP_RFC8285_TWO_BYTE, 3, b"\x01\x02\x03\x04"),
            (RTP_RFC8285_TWO_BYTE, 9, None),
            (RTP_WITH_CSRCS, 1, None),
        ],
    )
    def test_find_extension_in_place(self, data: bytes, ext_id: int, value: bytes | None) -> None:
        found = find_extension(data, ext_id)
        if value is None:
            assert found is None
        else:
            assert found is not None
            offset, length = found
            assert data[offset : offset + length] == value

    def test_id_15_ends_the_block(self) -> None:
        """RFC 8285 §4.2: "processing of the entire extension should terminate at that point"."""
        data = bytes.fromhex("90600001 00000002 deadbeef bede0001 10aaf021") + b"x"
        assert RtpPacket.parse(data).extension == OneByteExtensions((HeaderExtension(1, b"\xaa"),))
        assert find_extension(data, 2) is None

    def test_other_profiles_are_kept_raw(self) -> None:
        # pion/rtp TestBasic (https://github.com/pion/rtp/blob/master/packet_test.go): profile 1.
        data = bytes.fromhex("90e0698f d9c293da 1c642782 00010001 ffffffff 9836be88 9e")
        packet = RtpPacket.parse(data)
        assert packet.extension == RawExtension(1, b"\xff\xff\xff\xff")
        assert (packet.sequence_number, packet.timestamp, packet.ssrc) == (27023, 3653407706, 476325762)
        assert bytes(packet) == data
        assert packet.extension_value(1) is None
        assert find_extension(data, 1) is None

    @pytest.mark.parametrize(
        "extension",
        [
            OneByteExtensions((HeaderExtension(15, b"x"),)),
            OneByteExtensions((HeaderExtension(1, b""),)),
            OneByteExtensions((HeaderExtension(1, b"x" * 17),)),
            TwoByteExtensions((HeaderExtension(0, b"x"),)),
            TwoByteExtensions((HeaderExtension(1, b"x" * 256),)),
            RawExtension(1, b"abc"),
        ],
    )
    def test_refuses_unencodable_elements(self, extension: OneByteExtensions) -> None:
        with pytest.raises(ValueError, match="extension"):
            bytes(RtpPacket(96, 1, 2, 3, extension=extension))

    @pytest.mark.parametrize(
        "block",
        [
            bytes.fromhex("bede0001 13aabbcc"),  # one-byte element of 4 bytes in 3
            bytes.fromhex("10000001 0105aabb"),  # two-byte element of 5 bytes in 2
            bytes.fromhex("10000001 00000007"),  # two-byte element without its length
        ],
    )
    def test_overrunning_elements(self, block: bytes) -> None:
        data = bytes.fromhex("90600001 00000002 deadbeef") + block
        with pytest.raises(ParseError):
            RtpPacket.parse(data)
        with pytest.raises(ParseError):
            find_extension(data, 7)

    @given(st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=20)), min_size=1, max_size=5))
    def test_same_bytes_as_aiortc(self, elements: list[tuple[int, bytes]]) -> None:
        """aiortc picks the one-byte form when every element fits it, as we do."""
        profile, block = aiortc_rtp.pack_header_extensions(elements)
        ours = tuple(HeaderExtension(i, v) for i, v in elements)
        fits = all(i <= 14 and 1 <= len(v) <= 16 for i, v in elements)
        extension = OneByteExtensions(ours) if fits else TwoByteExtensions(ours)
        packed_profile, packed = extension.pack()
        assert (packed_profile, packed + b"\x00" * (-len(packed) % 4)) == (profile, block)
        assert aiortc_rtp.unpack_header_extensions(profile, block) == elements


class TestDataPathAgreesWithCodec:
    """The in-place functions are checked against the typed codec, the oracle (STYLE.md §4)."""

    @given(packets)
    def test_header_fields(self, packet: RtpPacket) -> None:
        data = bytes(packet)
        b1, seq, ts, ssrc, offset, end = rtp_header(memoryview(data))
        assert (b1 & 0x7F, bool(b1 & 0x80)) == (packet.payload_type, packet.marker)
        assert (seq, ts, ssrc) == (packet.sequence_number, packet.timestamp, packet.ssrc)
        assert data[offset:end] == packet.payload
        assert len(data) - end == packet.padding

    @given(packets)
    def test_extension_lookup(self, packet: RtpPacket) -> None:
        data = bytes(packet)
        elements = getattr(packet.extension, "elements", ())
        for ext_id in {e.id for e in elements} | {1, 7, 200}:
            found = find_extension(data, ext_id)
            expected = packet.extension_value(ext_id)
            assert (None if found is None else data[found[0] : found[0] + found[1]]) == expected

    @given(packets, st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF))
    def test_rewrite_in_place(self, packet: RtpPacket, seq: int, ts: int, ssrc: int) -> None:
        buffer = bytearray(bytes(packet))
        rewrite_header(buffer, seq, ts, ssrc)
        set_payload_type(buffer, 111)
        rewritten = RtpPacket.parse(buffer)
        assert rewritten == RtpPacket(
            111, seq, ts, ssrc, packet.payload, packet.marker, packet.csrcs, packet.extension, packet.padding
        )


class TestAgainstAiortc:
    """aiortc's RTP module, an independent implementation, reads our bytes and we read its bytes."""

    @given(packets.filter(lambda p: not isinstance(p.extension, RawExtension)))
    def test_aiortc_reads_ours(self, packet: RtpPacket) -> None:
        theirs = aiortc_rtp.RtpPacket.parse(bytes(packet))
        assert (theirs.payload_type, bool(theirs.marker)) == (packet.payload_type, packet.marker)
        assert (theirs.sequence_number, theirs.timestamp, theirs.ssrc) == (
            packet.sequence_number,
            packet.timestamp,
            packet.ssrc,
        )
        assert tuple(theirs.csrc) == packet.csrcs
        assert theirs.payload == packet.payload
        assert theirs.padding_size == packet.padding

    @given(
        st.integers(0, 127),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.binary(max_size=50),
        st.integers(0, 1),
        st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
        st.integers(0, 255),
    )
    def test_we_read_aiortc(
        self,
        pt: int,
        seq: int,
        ts: int,
        ssrc: int,
        payload: bytes,
        marker: int,
        csrcs: list[int],
        padding: int,
    ) -> None:
        theirs = aiortc_rtp.RtpPacket(pt, marker, seq, ts, ssrc, payload)
        theirs.csrc = csrcs
        theirs.padding_size = padding  # aiortc fills padding with random bytes: only the count counts
        data = theirs.serialize()
        assert RtpPacket.parse(data) == RtpPacket(
            pt, seq, ts, ssrc, payload, bool(marker), tuple(csrcs), None, padding
        )
        assert rtp_header(data)[:4] == ((marker << 7) | pt, seq, ts, ssrc)


class TestRfc4588Rtx:
    ORIGINAL = RtpPacket(
        96,
        0x1234,
        90000,
        0xAAAA0001,
        b"frame data",
        marker=True,
        csrcs=(7,),
        extension=OneByteExtensions((HeaderExtension(3, b"\x01\x02"),)),
        padding=3,
    )

    def test_wrap(self) -> None:
        rtx = RtpPacket.parse(
            wrap_rtx(bytes(self.ORIGINAL), sequence_number=500, ssrc=0xBBBB0002, payload_type=97)
        )
        # RFC 4588 §4: OSN first, then the original payload; padding removed; M, ts, CSRC, ext kept.
        assert rtx == RtpPacket(
            97,
            500,
            90000,
            0xBBBB0002,
            b"\x12\x34frame data",
            marker=True,
            csrcs=(7,),
            extension=self.ORIGINAL.extension,
        )

    def test_unwrap(self) -> None:
        rtx = wrap_rtx(bytes(self.ORIGINAL), sequence_number=500, ssrc=0xBBBB0002, payload_type=97)
        restored = RtpPacket.parse(unwrap_rtx(rtx, ssrc=0xAAAA0001, payload_type=96))
        assert restored == RtpPacket(
            96, 0x1234, 90000, 0xAAAA0001, b"frame data", True, (7,), self.ORIGINAL.extension, 0
        )

    def test_padded_rtx_packet(self) -> None:
        rtx = RtpPacket(97, 9, 1, 2, b"\x00\x05abc", padding=5)
        assert RtpPacket.parse(unwrap_rtx(bytes(rtx), ssrc=3, payload_type=96)) == RtpPacket(
            96, 5, 1, 3, b"abc"
        )

    def test_padding_only_probe_has_no_osn(self) -> None:
        probe = bytes(RtpPacket(97, 9, 1, 2, b"", padding=200))
        _b1, _, _, _, offset, end = rtp_header(probe)
        assert offset == end
        with pytest.raises(ParseError, match="original sequence number"):
            unwrap_rtx(probe, ssrc=3, payload_type=96)

    @given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=30), st.integers(0, 1))
    def test_same_as_aiortc(self, seq: int, rtx_seq: int, payload: bytes, marker: int) -> None:
        original = aiortc_rtp.RtpPacket(96, marker, seq, 1234, 0x11, payload)
        theirs = aiortc_rtp.wrap_rtx(original, payload_type=97, sequence_number=rtx_seq, ssrc=0x22)
        ours = wrap_rtx(original.serialize(), sequence_number=rtx_seq, ssrc=0x22, payload_type=97)
        assert ours == theirs.serialize()
        assert (
            unwrap_rtx(ours, ssrc=0x11, payload_type=96)
            == aiortc_rtp.unwrap_rtx(theirs, 96, 0x11).serialize()
        )


class TestPaddingProbe:
    """RFC 3550 §5.1: P bit, no payload, the last padding byte counts the padding."""

    def test_parses_as_padding_only_with_the_extension(self) -> None:
        data = padding_packet(
            ssrc=0xBBBB0002,
            payload_type=97,
            sequence_number=9,
            timestamp=1234,
            extension=b"\x22\x01\x02\x03",
            size=240,
        )
        assert len(data) == 12 + 8 + 240 and data[-1] == 240
        assert RtpPacket.parse(data) == RtpPacket(
            97,
            9,
            1234,
            0xBBBB0002,
            b"",
            extension=OneByteExtensions((HeaderExtension(2, b"\x01\x02\x03"),)),
            padding=240,
        )

    def test_without_extension_and_bounds(self) -> None:
        assert (
            RtpPacket.parse(
                padding_packet(ssrc=1, payload_type=97, sequence_number=0, timestamp=0, extension=b"", size=1)
            ).padding
            == 1
        )
        with pytest.raises(ValueError):
            padding_packet(ssrc=1, payload_type=97, sequence_number=0, timestamp=0, extension=b"", size=256)


class TestRfc5761Demux:
    """RFC 5761 §4."""

    @pytest.mark.parametrize("packet_type", [200, 201, 202, 203, 204, 205, 206, 207])
    def test_rtcp(self, packet_type: int) -> None:
        assert is_rtcp(bytes((0x80, packet_type, 0, 1)))

    @given(st.integers(0, 127).filter(lambda pt: not 64 <= pt <= 95), st.booleans())
    def test_rtp_payload_types(self, pt: int, marker: bool) -> None:
        assert not is_rtcp(bytes(RtpPacket(pt, 1, 2, 3, marker=marker)))

    def test_too_short(self) -> None:
        assert not is_rtcp(b"\x80")


class TestFuzz:
    @given(st.binary(max_size=120))
    def test_parsers_raise_only_parse_error(self, data: bytes) -> None:
        for parse in (
            RtpPacket.parse,
            rtp_header,
            lambda d: find_extension(d, 1),
            lambda d: unwrap_rtx(d, ssrc=1, payload_type=96),
            lambda d: wrap_rtx(d, sequence_number=1, ssrc=1, payload_type=96),
        ):
            with contextlib.suppress(ParseError):
                parse(data)

    @given(st.binary(max_size=60), st.sampled_from([0xBEDE, 0x1000, 0x1003]), st.integers(0, 3))
    def test_behind_a_valid_header(self, body: bytes, profile: int, words: int) -> None:
        """Fuzz the extension block with a valid fixed header in front."""
        data = (
            bytes.fromhex("90600001 00000002 deadbeef")
            + profile.to_bytes(2, "big")
            + words.to_bytes(2, "big")
            + body
        )
        try:
            packet = RtpPacket.parse(data)
        except ParseError:
            return
        assert RtpPacket.parse(bytes(packet)) == packet
        for ext_id in range(16):
            found = find_extension(data, ext_id)
            value = packet.extension_value(ext_id)
            assert (None if found is None else data[found[0] : found[0] + found[1]]) == value
