"""RFC 8656 §12.4-§12.5: ChannelData both ways, stream framing, and fuzzing of both parsers."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meet443.exceptions import ParseError
from meet443.proto.demux import PacketKind, classify
from meet443.proto.stun.message import Message
from meet443.proto.turn.channeldata import ChannelData, StreamFramer, channel_data_header

# RFC 8656 §12.4 layout: channel 0x4001, length 4, "data".
WIRE = bytes.fromhex("40010004") + b"data"


class TestRfc8656Section12ChannelData:
    def test_decodes_and_encodes(self) -> None:
        assert ChannelData.parse(WIRE) == ChannelData(0x4001, b"data")
        assert bytes(ChannelData(0x4001, b"data")) == WIRE
        assert channel_data_header(0x4001, 4) == WIRE[:4]

    def test_padding_on_streams(self) -> None:
        message = ChannelData(0x4002, b"abc")
        assert message.padded() == bytes.fromhex("40020003") + b"abc\x00"
        assert ChannelData.parse(message.padded()) == message

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"\x40\x01\x00",
            bytes.fromhex("3fff0000"),
            bytes.fromhex("80000000"),
            WIRE[:-1],
            WIRE + b"\x00" * 4,
        ],
    )
    def test_malformed(self, data: bytes) -> None:
        with pytest.raises(ParseError):
            ChannelData.parse(data)

    @given(st.integers(0x4000, 0x7FFF), st.binary(max_size=2000))
    def test_round_trip(self, channel: int, payload: bytes) -> None:
        assert ChannelData.parse(bytes(ChannelData(channel, payload))) == ChannelData(channel, payload)
        assert ChannelData.parse(ChannelData(channel, payload).padded()) == ChannelData(channel, payload)

    @given(st.binary(max_size=300))
    def test_fuzz_raises_only_parse_error(self, data: bytes) -> None:
        with contextlib.suppress(ParseError):
            ChannelData.parse(data)


class TestRfc8656Section12StreamFraming:
    def test_splits_mixed_messages_fed_byte_by_byte(self) -> None:
        stun = Message(1, 0, b"t" * 12, []).encode(fingerprint=True)
        stream = stun + ChannelData(0x4001, b"abcde").padded() + stun
        framer = StreamFramer()
        out: list[bytes] = []
        for byte in stream:
            out += framer.feed(bytes([byte]))
        assert out == [stun, bytes(ChannelData(0x4001, b"abcde")), stun]

    def test_garbage_first_byte(self) -> None:
        with pytest.raises(ParseError):
            StreamFramer().feed(b"\xff\x00\x00\x00")

    def test_bounded_buffer(self) -> None:
        framer = StreamFramer(max_buffer=100)
        with pytest.raises(ParseError):
            framer.feed(b"\x00\x01\xff\xfc" + b"\x00" * 200)

    @given(st.lists(st.binary(max_size=80), max_size=10))
    def test_fuzz_raises_only_parse_error(self, chunks: list[bytes]) -> None:
        framer = StreamFramer()
        try:
            for chunk in chunks:
                for message in framer.feed(chunk):
                    assert message[0] < 0x80
        except ParseError:
            pass


class TestRfc7983Demultiplexing:
    @pytest.mark.parametrize(
        ("first", "kind"),
        [
            (0, PacketKind.STUN),
            (3, PacketKind.STUN),
            (17, PacketKind.ZRTP),
            (22, PacketKind.DTLS),
            (64, PacketKind.CHANNEL_DATA),
            (127, PacketKind.CHANNEL_DATA),
            (128, PacketKind.RTP),
            (191, PacketKind.RTP),
            (200, PacketKind.UNKNOWN),
            (10, PacketKind.UNKNOWN),
        ],
    )
    def test_first_byte(self, first: int, kind: PacketKind) -> None:
        assert classify(bytes([first, 0])) is kind

    def test_empty(self) -> None:
        assert classify(b"") is PacketKind.UNKNOWN
