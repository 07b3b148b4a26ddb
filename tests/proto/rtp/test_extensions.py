"""Header extension values: RFC 6464 audio level, transport-wide sequence numbers
(draft-holmer-rmcat-transport-wide-cc-extensions-01 §2), RFC 8852 RIDs and RFC 9143 MIDs."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meet443.exceptions import ParseError
from meet443.proto.rtp.extensions import (
    AudioLevel,
    TransportSequenceNumber,
    audio_level,
    media_id,
    rtp_stream_id,
    transport_sequence_number,
    write_transport_sequence_number,
)
from meet443.proto.rtp.packet import HeaderExtension, OneByteExtensions, RtpPacket, TwoByteExtensions


def packet_with(*elements: tuple[int, bytes], two_byte: bool = False) -> bytes:
    items = tuple(HeaderExtension(i, v) for i, v in elements)
    extension = TwoByteExtensions(items) if two_byte else OneByteExtensions(items)
    return bytes(RtpPacket(111, 1, 960, 0xA0D10, b"opus", extension=extension))


class TestRfc6464AudioLevel:
    # RFC 6464 §3 https://www.rfc-editor.org/rfc/rfc6464#section-3: one byte, V then the level.
    @pytest.mark.parametrize(
        ("byte", "level"),
        [(0x80 | 30, AudioLevel(True, 30)), (127, AudioLevel(False, 127)), (0, AudioLevel(False, 0))],
    )
    def test_both_ways(self, byte: int, level: AudioLevel) -> None:
        assert AudioLevel.parse(bytes((byte,))) == level
        assert bytes(level) == bytes((byte,))
        assert audio_level(packet_with((1, bytes((byte,)))), 1) == level

    def test_two_byte_form_is_padded(self) -> None:
        """RFC 6464 §3: with the two-byte header the element is 2 bytes; the second is padding."""
        assert audio_level(packet_with((1, b"\x9e\x00"), two_byte=True), 1) == AudioLevel(True, 30)
        assert AudioLevel.parse(b"\x9e\x00") == AudioLevel(True, 30)

    def test_absent(self) -> None:
        assert audio_level(packet_with((2, b"\x05")), 1) is None
        assert audio_level(bytes(RtpPacket(111, 1, 2, 3)), 1) is None

    def test_invalid(self) -> None:
        with pytest.raises(ParseError):
            AudioLevel.parse(b"")
        with pytest.raises(ParseError, match="empty"):
            audio_level(packet_with((1, b""), (2, b"\x05"), two_byte=True), 1)
        with pytest.raises(ValueError, match="0-127"):
            bytes(AudioLevel(False, 128))


class TestTransportWideSequenceNumber:
    @given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
    def test_read_and_rewrite_in_place(self, original: int, new: int) -> None:
        data = packet_with((1, b"\x9e"), (5, bytes(TransportSequenceNumber(original))))
        assert transport_sequence_number(data, 5) == original
        assert TransportSequenceNumber.parse(
            RtpPacket.parse(data).extension_value(5) or b""
        ) == TransportSequenceNumber(original)
        buffer = bytearray(data)
        assert write_transport_sequence_number(buffer, 5, new)
        assert transport_sequence_number(buffer, 5) == new
        assert audio_level(buffer, 1) == AudioLevel(True, 30)
        assert RtpPacket.parse(buffer).payload == b"opus"

    def test_absent_or_wrong_size(self) -> None:
        data = packet_with((5, b"\x01\x02\x03"))
        assert transport_sequence_number(packet_with((1, b"x")), 5) is None
        assert not write_transport_sequence_number(bytearray(packet_with((1, b"x"))), 5, 1)
        assert not write_transport_sequence_number(bytearray(data), 5, 1)
        with pytest.raises(ParseError):
            transport_sequence_number(data, 5)
        with pytest.raises(ParseError):
            TransportSequenceNumber.parse(b"\x01")


class TestRfc8852Identifiers:
    def test_rid_and_mid(self) -> None:
        data = packet_with((10, b"h"), (11, b"1"), (12, b"q\x00"))
        assert rtp_stream_id(data, 10) == "h"
        assert media_id(data, 11) == "1"
        assert rtp_stream_id(data, 12) == "q"  # NUL padding some senders add
        assert rtp_stream_id(data, 13) is None

    def test_grammar(self) -> None:
        assert media_id(packet_with((1, b"audio.0")), 1) == "audio.0"
        with pytest.raises(ParseError, match="RID"):
            rtp_stream_id(packet_with((1, b"audio.0")), 1)
        with pytest.raises(ParseError, match="MID"):
            media_id(packet_with((1, b"a b")), 1)
        with pytest.raises(ParseError):
            rtp_stream_id(packet_with((1, b"\x00")), 1)

    @given(st.binary(max_size=16), st.booleans())
    def test_fuzz(self, value: bytes, two_byte: bool) -> None:
        data = packet_with((1, value), two_byte=two_byte or not value)
        for read in (rtp_stream_id, media_id, audio_level, transport_sequence_number):
            with contextlib.suppress(ParseError):
                read(data, 1)
