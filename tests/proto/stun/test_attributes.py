"""RFC 8489 §14 and the TURN/ICE attributes: a value a peer got wrong makes the whole message a
ParseError (a server answers 400 or drops it), never a wrong value or another exception."""

from __future__ import annotations

import struct

import pytest

from meet443.exceptions import ParseError
from meet443.proto.stun.attributes import (
    MAGIC_COOKIE,
    AddressErrorCode,
    Attribute,
    ChangeRequest,
    ChannelNumber,
    DontFragment,
    ErrorCode,
    EvenPort,
    IceControlled,
    IceControlling,
    MessageIntegrity,
    MessageIntegritySha256,
    Nonce,
    PasswordAlgorithm,
    PasswordAlgorithms,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    UnknownAttributes,
    UserHash,
    Username,
    XorMappedAddress,
)
from meet443.proto.stun.message import Message, Method, StunClass


def with_attribute(kind: type[Attribute], value: bytes) -> bytes:
    """A Binding request carrying one attribute of ``kind`` with this raw value (RFC 8489 §14)."""
    tlv = struct.pack("!HH", kind.TYPE, len(value)) + value + bytes(-len(value) % 4)
    return struct.pack("!HHI", 0x0001, len(tlv), MAGIC_COOKIE) + b"t" * 12 + tlv


MALFORMED = [
    (XorMappedAddress, b"\x00\x01\x00", "too short"),
    (XorMappedAddress, b"\x00\x01\x00\x01" + bytes(16), "IPv4 address attribute has wrong length"),
    (XorMappedAddress, b"\x00\x02\x00\x01" + bytes(4), "IPv6 address attribute has wrong length"),
    (XorMappedAddress, b"\x00\x03\x00\x01" + bytes(4), "unknown address family"),
    (Username, b"u" * 514, "longer than 513 bytes"),
    (Username, b"\xff\xfe", "not UTF-8"),
    (Nonce, b"n" * 764, "longer than 763 bytes"),
    (DontFragment, b"\x01", "must be empty"),
    (UserHash, bytes(31), "32 bytes"),
    (MessageIntegrity, bytes(19), "20 bytes"),
    (MessageIntegritySha256, bytes(12), "16 to 32 bytes"),
    (ErrorCode, b"\x00\x00\x04", "too short"),
    (ErrorCode, b"\x00\x00\x07\x00", "out of range"),
    (ErrorCode, b"\x00\x00\x04\x64", "out of range"),  # 4xx with a number of 100
    (PasswordAlgorithms, b"\x00\x01", "truncated"),
    (PasswordAlgorithms, b"\x00\x01\x00\x08\x00\x00", "truncated"),
    (PasswordAlgorithm, b"\x00\x01", "too short"),
    (PasswordAlgorithm, b"\x00\x01\x00\x08", "truncated"),
    (UnknownAttributes, b"\x00\x01\x00", "odd length"),
    (ChannelNumber, b"\x40\x00", "4 bytes"),
    (RequestedAddressFamily, b"\x01", "4 bytes"),
    (EvenPort, b"\x80\x00", "1 byte"),
    (RequestedTransport, b"\x11", "4 bytes"),
    (ReservationToken, bytes(4), "8 bytes"),
    (AddressErrorCode, b"\x01\x00\x04", "too short"),
    (IceControlled, bytes(4), "8 bytes"),
]


class TestMalformedValues:
    @pytest.mark.parametrize(
        ("kind", "value", "reason"),
        MALFORMED,
        ids=[f"{k.__name__}-{i}" for i, (k, _, _) in enumerate(MALFORMED)],
    )
    def test_is_a_parse_error_naming_the_fault(
        self, kind: type[Attribute], value: bytes, reason: str
    ) -> None:
        with pytest.raises(ParseError, match=reason):
            Message.parse(with_attribute(kind, value))

    def test_a_host_name_cannot_be_encoded_as_an_address(self) -> None:
        """RFC 8489 §14.1: addresses travel as IP addresses; a name is the caller's mistake."""
        message = Message(
            Method.BINDING, StunClass.SUCCESS, b"t" * 12, [XorMappedAddress(("example.org", 1))]
        )
        with pytest.raises(ValueError, match="not an IP address"):
            message.encode()

    def test_well_formed_edge_values_parse(self) -> None:
        """The limits themselves are allowed: 513 bytes of USERNAME, 763 of NONCE, a 6xx error,
        a 32-byte SHA-256 MAC."""
        for kind, value in (
            (Username, b"u" * 513),
            (Nonce, b"n" * 763),
            (ErrorCode, b"\x00\x00\x06\x63"),
            (MessageIntegritySha256, bytes(32)),
        ):
            assert isinstance(Message.parse(with_attribute(kind, value)).attributes[0], kind)


class TestRoundTrip:
    @pytest.mark.parametrize(
        "attribute",
        [
            AddressErrorCode(2, 440, "Address Family not Supported"),  # RFC 8656 §18.13
            ChangeRequest(change_ip=False, change_port=True),  # RFC 5780 §7.2
            IceControlled(0x0123456789ABCDEF),  # RFC 8445 §16.1
            IceControlling(1),
        ],
        ids=lambda a: type(a).__name__,
    )
    def test_decodes_to_what_was_encoded(self, attribute: Attribute) -> None:
        message = Message(Method.BINDING, StunClass.REQUEST, b"t" * 12, [attribute])
        assert Message.parse(bytes(message)).attributes == [attribute]
