"""Typed STUN attributes (RFC 8489 §14, RFC 8656 §18, RFC 8445 §16.1, RFC 5780 §7.2).

Each attribute is a frozen dataclass with a ``TYPE`` number, ``pack(transaction_id)`` for its value
bytes and ``unpack(value, transaction_id)``; the message codec adds the TLV header and padding.
``unpack`` raises only :class:`~meet443.exceptions.ParseError`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from meet443.exceptions import ParseError
from meet443.proto.addresses import Address

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02


class Attribute:
    """Base of every attribute: a type number and a way to and from its value bytes."""

    TYPE: ClassVar[int]
    __slots__ = ()

    def pack(self, transaction_id: bytes) -> bytes:
        raise NotImplementedError

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        raise NotImplementedError


def _pack_address(address: Address, xor_with: bytes | None) -> bytes:
    """RFC 8489 §14.1/§14.2: family, port and address, XORed with cookie+transaction id if asked."""
    host, port = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"not an IP address: {host!r}") from exc
    raw = ip.packed
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    if xor_with is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, xor_with, strict=False))
    return struct.pack("!BBH", 0, family, port) + raw


def _unpack_address(value: bytes, xor_with: bytes | None) -> Address:
    if len(value) < 4:
        raise ParseError("address attribute too short")
    _, family, port = struct.unpack_from("!BBH", value)
    raw = value[4:]
    if family == FAMILY_IPV4:
        if len(raw) != 4:
            raise ParseError("IPv4 address attribute has wrong length")
    elif family == FAMILY_IPV6:
        if len(raw) != 16:
            raise ParseError("IPv6 address attribute has wrong length")
    else:
        raise ParseError(f"unknown address family {family:#x}")
    if xor_with is not None:
        port ^= MAGIC_COOKIE >> 16
        raw = bytes(a ^ b for a, b in zip(raw, xor_with, strict=False))
    return (str(ipaddress.ip_address(raw)), port)


def _utf8(value: bytes, limit: int, name: str) -> str:
    if len(value) > limit:
        raise ParseError(f"{name} longer than {limit} bytes")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"{name} is not UTF-8") from exc


def _u32(value: bytes, name: str) -> int:
    if len(value) != 4:
        raise ParseError(f"{name} must be 4 bytes")
    return int.from_bytes(value, "big")


def _empty(value: bytes, name: str) -> None:
    if value:
        raise ParseError(f"{name} must be empty")


@dataclass(frozen=True, slots=True)
class _Text(Attribute):
    """A UTF-8 string attribute of bounded length (RFC 8489 §14.3, §14.9, §14.14)."""

    MAX_BYTES: ClassVar[int] = 763
    NAME: ClassVar[str] = "attribute"
    value: str

    def pack(self, transaction_id: bytes) -> bytes:
        return self.value.encode()

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(_utf8(value, cls.MAX_BYTES, cls.NAME))


@dataclass(frozen=True, slots=True)
class _Flag(Attribute):
    """An attribute whose presence is its meaning: the value must be empty."""

    NAME: ClassVar[str] = "attribute"

    def pack(self, transaction_id: bytes) -> bytes:
        return b""

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        _empty(value, cls.NAME)
        return cls()


@dataclass(frozen=True, slots=True)
class MappedAddress(Attribute):
    """RFC 8489 §14.1 MAPPED-ADDRESS (kept for old clients; we send the XOR form)."""

    TYPE: ClassVar[int] = 0x0001
    address: Address

    def pack(self, transaction_id: bytes) -> bytes:
        return _pack_address(self.address, None)

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(_unpack_address(value, None))


@dataclass(frozen=True, slots=True)
class XorMappedAddress(Attribute):
    """RFC 8489 §14.2 XOR-MAPPED-ADDRESS."""

    TYPE: ClassVar[int] = 0x0020
    address: Address

    def pack(self, transaction_id: bytes) -> bytes:
        return _pack_address(self.address, MAGIC_COOKIE_BYTES + transaction_id)

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(_unpack_address(value, MAGIC_COOKIE_BYTES + transaction_id))


@dataclass(frozen=True, slots=True)
class XorPeerAddress(XorMappedAddress):
    """RFC 8656 §18.3 XOR-PEER-ADDRESS."""

    TYPE: ClassVar[int] = 0x0012


@dataclass(frozen=True, slots=True)
class XorRelayedAddress(XorMappedAddress):
    """RFC 8656 §18.5 XOR-RELAYED-ADDRESS."""

    TYPE: ClassVar[int] = 0x0016


@dataclass(frozen=True, slots=True)
class Username(_Text):
    """RFC 8489 §14.3 USERNAME (at most 513 bytes)."""

    TYPE: ClassVar[int] = 0x0006
    MAX_BYTES: ClassVar[int] = 513
    NAME: ClassVar[str] = "USERNAME"


@dataclass(frozen=True, slots=True)
class UserHash(Attribute):
    """RFC 8489 §14.4 USERHASH (SHA-256 of username:realm)."""

    TYPE: ClassVar[int] = 0x001E
    value: bytes

    def pack(self, transaction_id: bytes) -> bytes:
        return self.value

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 32:
            raise ParseError("USERHASH must be 32 bytes")
        return cls(value)


@dataclass(frozen=True, slots=True)
class MessageIntegrity(Attribute):
    """RFC 8489 §14.5 MESSAGE-INTEGRITY: HMAC-SHA1, 20 bytes."""

    TYPE: ClassVar[int] = 0x0008
    hmac: bytes

    def pack(self, transaction_id: bytes) -> bytes:
        return self.hmac

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 20:
            raise ParseError("MESSAGE-INTEGRITY must be 20 bytes")
        return cls(value)


@dataclass(frozen=True, slots=True)
class MessageIntegritySha256(Attribute):
    """RFC 8489 §14.6 MESSAGE-INTEGRITY-SHA256: HMAC-SHA256, 16 to 32 bytes in steps of 4."""

    TYPE: ClassVar[int] = 0x001C
    hmac: bytes

    def pack(self, transaction_id: bytes) -> bytes:
        return self.hmac

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if not 16 <= len(value) <= 32 or len(value) % 4:
            raise ParseError("MESSAGE-INTEGRITY-SHA256 must be 16 to 32 bytes, a multiple of 4")
        return cls(value)


@dataclass(frozen=True, slots=True)
class Fingerprint(Attribute):
    """RFC 8489 §14.7 FINGERPRINT: CRC-32 of the message XOR 0x5354554E."""

    TYPE: ClassVar[int] = 0x8028
    crc: int

    def pack(self, transaction_id: bytes) -> bytes:
        return self.crc.to_bytes(4, "big")

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(_u32(value, "FINGERPRINT"))


@dataclass(frozen=True, slots=True)
class ErrorCode(Attribute):
    """RFC 8489 §14.8 ERROR-CODE: class*100 + number, and a UTF-8 reason phrase."""

    TYPE: ClassVar[int] = 0x0009
    code: int
    reason: str

    def pack(self, transaction_id: bytes) -> bytes:
        return struct.pack("!HBB", 0, self.code // 100, self.code % 100) + self.reason.encode()[:763]

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise ParseError("ERROR-CODE too short")
        _, klass, number = struct.unpack_from("!HBB", value)
        klass &= 0x07
        if not 3 <= klass <= 6 or number > 99:
            raise ParseError("ERROR-CODE out of range")
        return cls(klass * 100 + number, _utf8(value[4:], 763, "reason phrase"))


@dataclass(frozen=True, slots=True)
class Realm(_Text):
    """RFC 8489 §14.9 REALM."""

    TYPE: ClassVar[int] = 0x0014
    NAME: ClassVar[str] = "REALM"


@dataclass(frozen=True, slots=True)
class Nonce(Attribute):
    """RFC 8489 §14.10 NONCE (kept as bytes: it is opaque to the client)."""

    TYPE: ClassVar[int] = 0x0015
    value: bytes

    def pack(self, transaction_id: bytes) -> bytes:
        return self.value

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) > 763:
            raise ParseError("NONCE longer than 763 bytes")
        return cls(value)


@dataclass(frozen=True, slots=True)
class PasswordAlgorithms(Attribute):
    """RFC 8489 §14.11 PASSWORD-ALGORITHMS: list of (algorithm, parameters)."""

    TYPE: ClassVar[int] = 0x8002
    algorithms: tuple[tuple[int, bytes], ...]

    def pack(self, transaction_id: bytes) -> bytes:
        out = b""
        for number, params in self.algorithms:
            out += struct.pack("!HH", number, len(params)) + params + b"\x00" * (-len(params) % 4)
        return out

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        algorithms = []
        offset = 0
        while offset < len(value):
            if offset + 4 > len(value):
                raise ParseError("PASSWORD-ALGORITHMS truncated")
            number, length = struct.unpack_from("!HH", value, offset)
            params = value[offset + 4 : offset + 4 + length]
            if len(params) != length:
                raise ParseError("PASSWORD-ALGORITHMS truncated")
            algorithms.append((number, params))
            offset += 4 + length + (-length % 4)
        return cls(tuple(algorithms))


@dataclass(frozen=True, slots=True)
class PasswordAlgorithm(Attribute):
    """RFC 8489 §14.12 PASSWORD-ALGORITHM: 1 = MD5, 2 = SHA-256."""

    TYPE: ClassVar[int] = 0x001D
    algorithm: int
    parameters: bytes = b""

    def pack(self, transaction_id: bytes) -> bytes:
        return struct.pack("!HH", self.algorithm, len(self.parameters)) + self.parameters

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise ParseError("PASSWORD-ALGORITHM too short")
        number, length = struct.unpack_from("!HH", value)
        if len(value) - 4 < length:
            raise ParseError("PASSWORD-ALGORITHM truncated")
        return cls(number, value[4 : 4 + length])


@dataclass(frozen=True, slots=True)
class UnknownAttributes(Attribute):
    """RFC 8489 §14.13 UNKNOWN-ATTRIBUTES: the comprehension-required types we did not understand."""

    TYPE: ClassVar[int] = 0x000A
    types: tuple[int, ...]

    def pack(self, transaction_id: bytes) -> bytes:
        return b"".join(t.to_bytes(2, "big") for t in self.types)

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) % 2:
            raise ParseError("UNKNOWN-ATTRIBUTES has odd length")
        return cls(tuple(struct.unpack(f"!{len(value) // 2}H", value)))


@dataclass(frozen=True, slots=True)
class Software(_Text):
    """RFC 8489 §14.14 SOFTWARE."""

    TYPE: ClassVar[int] = 0x8022
    NAME: ClassVar[str] = "SOFTWARE"


@dataclass(frozen=True, slots=True)
class AlternateServer(MappedAddress):
    """RFC 8489 §14.15 ALTERNATE-SERVER (encoded like MAPPED-ADDRESS)."""

    TYPE: ClassVar[int] = 0x8023


@dataclass(frozen=True, slots=True)
class ChannelNumber(Attribute):
    """RFC 8656 §18.1 CHANNEL-NUMBER, then 2 bytes RFFU (the server checks the range, see channeldata.py)."""

    TYPE: ClassVar[int] = 0x000C
    number: int

    def pack(self, transaction_id: bytes) -> bytes:
        return struct.pack("!HH", self.number, 0)

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 4:
            raise ParseError("CHANNEL-NUMBER must be 4 bytes")
        return cls(struct.unpack_from("!H", value)[0])


@dataclass(frozen=True, slots=True)
class Lifetime(Attribute):
    """RFC 8656 §18.2 LIFETIME in seconds."""

    TYPE: ClassVar[int] = 0x000D
    seconds: int

    def pack(self, transaction_id: bytes) -> bytes:
        return self.seconds.to_bytes(4, "big")

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(_u32(value, "LIFETIME"))


@dataclass(frozen=True, slots=True)
class Data(Attribute):
    """RFC 8656 §18.4 DATA."""

    TYPE: ClassVar[int] = 0x0013
    value: bytes

    def pack(self, transaction_id: bytes) -> bytes:
        return self.value

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(value)


@dataclass(frozen=True, slots=True)
class RequestedAddressFamily(Attribute):
    """RFC 8656 §18.6 REQUESTED-ADDRESS-FAMILY: 0x01 IPv4, 0x02 IPv6."""

    TYPE: ClassVar[int] = 0x0017
    family: int

    def pack(self, transaction_id: bytes) -> bytes:
        return bytes([self.family, 0, 0, 0])

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 4:
            raise ParseError("REQUESTED-ADDRESS-FAMILY must be 4 bytes")
        return cls(value[0])


@dataclass(frozen=True, slots=True)
class AdditionalAddressFamily(RequestedAddressFamily):
    """RFC 8656 §18.11 ADDITIONAL-ADDRESS-FAMILY (only IPv6 is allowed in it)."""

    TYPE: ClassVar[int] = 0x8000


@dataclass(frozen=True, slots=True)
class EvenPort(Attribute):
    """RFC 8656 §18.7 EVEN-PORT; R asks to reserve the next port too."""

    TYPE: ClassVar[int] = 0x0018
    reserve: bool

    def pack(self, transaction_id: bytes) -> bytes:
        return b"\x80" if self.reserve else b"\x00"

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 1:
            raise ParseError("EVEN-PORT must be 1 byte")
        return cls(bool(value[0] & 0x80))


@dataclass(frozen=True, slots=True)
class RequestedTransport(Attribute):
    """RFC 8656 §18.8 REQUESTED-TRANSPORT: an IANA protocol number (17 = UDP)."""

    TYPE: ClassVar[int] = 0x0019
    protocol: int

    def pack(self, transaction_id: bytes) -> bytes:
        return bytes([self.protocol, 0, 0, 0])

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 4:
            raise ParseError("REQUESTED-TRANSPORT must be 4 bytes")
        return cls(value[0])


@dataclass(frozen=True, slots=True)
class DontFragment(_Flag):
    """RFC 8656 §18.9 DONT-FRAGMENT (no value)."""

    TYPE: ClassVar[int] = 0x001A
    NAME: ClassVar[str] = "DONT-FRAGMENT"


@dataclass(frozen=True, slots=True)
class ReservationToken(Attribute):
    """RFC 8656 §18.10 RESERVATION-TOKEN (8 bytes)."""

    TYPE: ClassVar[int] = 0x0022
    token: bytes

    def pack(self, transaction_id: bytes) -> bytes:
        return self.token

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 8:
            raise ParseError("RESERVATION-TOKEN must be 8 bytes")
        return cls(value)


@dataclass(frozen=True, slots=True)
class AddressErrorCode(Attribute):
    """RFC 8656 §18.12 ADDRESS-ERROR-CODE: which family failed in a dual allocation, and why."""

    TYPE: ClassVar[int] = 0x8001
    family: int
    code: int
    reason: str

    def pack(self, transaction_id: bytes) -> bytes:
        head = struct.pack("!BBBB", self.family, 0, self.code // 100, self.code % 100)
        return head + self.reason.encode()

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise ParseError("ADDRESS-ERROR-CODE too short")
        family, _, klass, number = struct.unpack_from("!BBBB", value)
        return cls(family, (klass & 7) * 100 + number, _utf8(value[4:], 763, "reason phrase"))


@dataclass(frozen=True, slots=True)
class Priority(Attribute):
    """RFC 8445 §16.1 PRIORITY."""

    TYPE: ClassVar[int] = 0x0024
    value: int

    def pack(self, transaction_id: bytes) -> bytes:
        return self.value.to_bytes(4, "big")

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(_u32(value, "PRIORITY"))


@dataclass(frozen=True, slots=True)
class UseCandidate(_Flag):
    """RFC 8445 §16.1 USE-CANDIDATE (no value)."""

    TYPE: ClassVar[int] = 0x0025
    NAME: ClassVar[str] = "USE-CANDIDATE"


@dataclass(frozen=True, slots=True)
class IceControlled(Attribute):
    """RFC 8445 §16.1 ICE-CONTROLLED: the agent's 64-bit tie-breaker."""

    TYPE: ClassVar[int] = 0x8029
    tie_breaker: int

    def pack(self, transaction_id: bytes) -> bytes:
        return self.tie_breaker.to_bytes(8, "big")

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) != 8:
            raise ParseError("ICE-CONTROLLED/ICE-CONTROLLING must be 8 bytes")
        return cls(int.from_bytes(value, "big"))


@dataclass(frozen=True, slots=True)
class IceControlling(IceControlled):
    """RFC 8445 §16.1 ICE-CONTROLLING."""

    TYPE: ClassVar[int] = 0x802A


@dataclass(frozen=True, slots=True)
class ChangeRequest(Attribute):
    """RFC 5780 §7.2 CHANGE-REQUEST: answer from another IP address (A, 0x04) and/or port (B, 0x02).

    NAT behaviour discovery: a Binding answer from a port the client never sent to shows whether
    the client's firewall lets unsolicited UDP in (RFC 5780 §4.4, filtering behaviour).
    """

    TYPE: ClassVar[int] = 0x0003
    change_ip: bool = False
    change_port: bool = False

    def pack(self, transaction_id: bytes) -> bytes:
        return struct.pack("!I", (0x04 if self.change_ip else 0) | (0x02 if self.change_port else 0))

    @classmethod
    def unpack(cls, value: bytes, transaction_id: bytes) -> Self:
        flags = _u32(value, "CHANGE-REQUEST")
        return cls(change_ip=bool(flags & 0x04), change_port=bool(flags & 0x02))


@dataclass(frozen=True, slots=True)
class UnknownAttribute(Attribute):
    """An attribute type this codec does not know; kept so a message round-trips byte for byte."""

    TYPE: ClassVar[int] = -1
    type: int
    value: bytes

    def pack(self, transaction_id: bytes) -> bytes:
        return self.value

    @property
    def comprehension_required(self) -> bool:
        """RFC 8489 §14: types 0x0000-0x7FFF must be understood or the request is refused (420)."""
        return self.type < 0x8000


KNOWN_ATTRIBUTES: dict[int, type[Attribute]] = {
    cls.TYPE: cls
    for cls in (
        MappedAddress,
        XorMappedAddress,
        XorPeerAddress,
        XorRelayedAddress,
        Username,
        UserHash,
        MessageIntegrity,
        MessageIntegritySha256,
        Fingerprint,
        ErrorCode,
        Realm,
        Nonce,
        PasswordAlgorithms,
        PasswordAlgorithm,
        UnknownAttributes,
        Software,
        AlternateServer,
        ChannelNumber,
        Lifetime,
        Data,
        RequestedAddressFamily,
        AdditionalAddressFamily,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken,
        AddressErrorCode,
        Priority,
        UseCandidate,
        IceControlled,
        IceControlling,
        ChangeRequest,
    )
}
