"""STUN messages (RFC 8489 §5, §6, §14.5-§14.7): header, attribute TLVs, integrity and fingerprint.

``Message.parse(data)`` decodes and remembers where the integrity attributes sit in the original
bytes, so ``check_integrity(key)`` verifies exactly what the sender signed. ``Message.encode(key=...)``
appends MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT as the RFC orders them; ``bytes(message)`` writes
the attributes as they are, which makes ``bytes(Message.parse(x)) == x`` hold for test vectors.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from meet443.exceptions import ParseError
from meet443.proto.stun.attributes import (
    KNOWN_ATTRIBUTES,
    MAGIC_COOKIE,
    Attribute,
    Fingerprint,
    MessageIntegrity,
    MessageIntegritySha256,
    UnknownAttribute,
)

HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E
_HEADER = struct.Struct("!HHI12s")
_TLV = struct.Struct("!HH")

A = TypeVar("A", bound=Attribute)
# Attributes that encode() computes and places last itself (RFC 8489 §14.5-§14.7).
_TRAILING_ATTRIBUTES = (MessageIntegrity, MessageIntegritySha256, Fingerprint)


class StunClass(enum.IntEnum):
    """RFC 8489 §5: the two class bits C1 C0."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class Method(enum.IntEnum):
    """STUN methods: Binding (RFC 8489) and the TURN methods (RFC 8656 §17)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


def message_type(method: int, klass: int) -> int:
    """RFC 8489 §5: interleave the 12 method bits with the 2 class bits."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((klass & 0b01) << 4)
        | ((klass & 0b10) << 7)
    )


def split_message_type(value: int) -> tuple[int, int]:
    """Inverse of :func:`message_type`: ``(method, class)``."""
    method = (value & 0x000F) | ((value & 0x00E0) >> 1) | ((value & 0x3E00) >> 2)
    klass = ((value & 0x0010) >> 4) | ((value & 0x0100) >> 7)
    return method, klass


def looks_like_stun(data: bytes | memoryview) -> bool:
    """Cheap test for the demultiplexer: top bits 00, length a multiple of 4, the magic cookie."""
    return (
        len(data) >= HEADER_LENGTH
        and data[0] < 0x40
        and data[3] & 0x03 == 0
        and data[4:8] == b"\x21\x12\xa4\x42"
    )


@dataclass(slots=True)
class Message:
    """A STUN message. ``method`` and ``klass`` are kept as ints so unknown methods still parse."""

    method: int
    klass: int
    transaction_id: bytes
    attributes: list[Attribute] = field(default_factory=list)
    # Offsets of MESSAGE-INTEGRITY(-SHA256) in the parsed bytes; None for messages we build.
    raw: bytes | None = field(default=None, repr=False, compare=False)
    integrity_offset: int | None = field(default=None, repr=False, compare=False)
    integrity_sha256_offset: int | None = field(default=None, repr=False, compare=False)

    # -- access -----------------------------------------------------------------------------------

    def get(self, kind: type[A]) -> A | None:
        """The first attribute of exactly this class, or None."""
        for attribute in self.attributes:
            if type(attribute) is kind:
                return attribute
        return None

    def get_all(self, kind: type[A]) -> list[A]:
        return [a for a in self.attributes if type(a) is kind]

    def unknown_comprehension_required(self) -> tuple[int, ...]:
        """RFC 8489 §14: the comprehension-required types we did not understand."""
        return tuple(
            a.type for a in self.attributes if isinstance(a, UnknownAttribute) and a.comprehension_required
        )

    # -- decoding ---------------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """RFC 8489 §6: decode a message; raise ParseError for anything malformed.

        Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are
        ignored (§14.5); nothing may follow FINGERPRINT (§14.7), and a wrong FINGERPRINT is an error.
        """
        if len(data) < HEADER_LENGTH:
            raise ParseError("STUN message shorter than its header")
        msg_type, length, cookie, transaction_id = _HEADER.unpack_from(data)
        if msg_type & 0xC000:
            raise ParseError("first two bits of a STUN message must be zero")
        if cookie != MAGIC_COOKIE:
            raise ParseError("wrong magic cookie")
        if length % 4:
            raise ParseError("STUN message length is not a multiple of 4")
        if len(data) != HEADER_LENGTH + length:
            raise ParseError("STUN message length does not match the data")
        method, klass = split_message_type(msg_type)
        message = cls(method, klass, transaction_id, raw=bytes(data))
        offset = HEADER_LENGTH
        end = HEADER_LENGTH + length
        after_integrity = False
        while offset < end:
            if offset + 4 > end:
                raise ParseError("truncated attribute header")
            attr_type, attr_length = _TLV.unpack_from(data, offset)
            value_start = offset + 4
            value_end = value_start + attr_length
            if value_end > end:
                raise ParseError(f"attribute {attr_type:#06x} runs past the message")
            value = bytes(data[value_start:value_end])
            if after_integrity and attr_type not in (MessageIntegritySha256.TYPE, Fingerprint.TYPE):
                offset = value_end + (-attr_length % 4)
                continue
            kind = KNOWN_ATTRIBUTES.get(attr_type)
            attribute: Attribute = (
                kind.unpack(value, transaction_id) if kind else UnknownAttribute(attr_type, value)
            )
            if attr_type == MessageIntegrity.TYPE:
                message.integrity_offset = offset
                after_integrity = True
            elif attr_type == MessageIntegritySha256.TYPE:
                message.integrity_sha256_offset = offset
                after_integrity = True
            elif attr_type == Fingerprint.TYPE:
                if value_end != end:
                    raise ParseError("FINGERPRINT is not the last attribute")
                expected = fingerprint_of(data[:offset], offset - HEADER_LENGTH + 8)
                if int.from_bytes(value, "big") != expected:
                    raise ParseError("FINGERPRINT does not match")
            message.attributes.append(attribute)
            offset = value_end + (-attr_length % 4)
        return message

    def check_integrity(self, key: bytes) -> bool:
        """RFC 8489 §9.2.4 / §14.5 / §14.6: verify the strongest integrity attribute present."""
        if self.raw is None:
            return False
        sha256 = self.get(MessageIntegritySha256)
        if self.integrity_sha256_offset is not None and sha256 is not None:
            expected = _hmac_over(self.raw, self.integrity_sha256_offset, 4 + len(sha256.hmac), key, True)
            return hmac.compare_digest(expected[: len(sha256.hmac)], sha256.hmac)
        mi = self.get(MessageIntegrity)
        if self.integrity_offset is not None and mi is not None:
            expected = _hmac_over(self.raw, self.integrity_offset, 24, key, False)
            return hmac.compare_digest(expected, mi.hmac)
        return False

    @property
    def uses_sha256(self) -> bool:
        return self.integrity_sha256_offset is not None

    # -- encoding ---------------------------------------------------------------------------------

    def __bytes__(self) -> bytes:
        """The message with its attributes exactly as held (no integrity computed)."""
        body = _encode_attributes(self.attributes, self.transaction_id)
        return self._header(len(body)) + body

    def encode(
        self,
        key: bytes | None = None,
        *,
        sha256: bool = False,
        fingerprint: bool = False,
    ) -> bytes:
        """RFC 8489 §14.5-§14.7: append MESSAGE-INTEGRITY(-SHA256) with ``key``, then FINGERPRINT."""
        plain = [
            a
            for a in self.attributes
            if not isinstance(a, MessageIntegrity | MessageIntegritySha256 | Fingerprint)
        ]
        body = _encode_attributes(plain, self.transaction_id)
        if key is not None:
            size = 36 if sha256 else 24
            digest = _hmac(self._header(len(body) + size) + body, key, sha256)
            attr_type = MessageIntegritySha256.TYPE if sha256 else MessageIntegrity.TYPE
            body += _TLV.pack(attr_type, len(digest)) + digest
        if fingerprint:
            crc = fingerprint_of(self._header(len(body) + 8) + body, len(body) + 8)
            body += _TLV.pack(Fingerprint.TYPE, 4) + crc.to_bytes(4, "big")
        return self._header(len(body)) + body

    def _header(self, length: int) -> bytes:
        return _HEADER.pack(message_type(self.method, self.klass), length, MAGIC_COOKIE, self.transaction_id)


def _encode_attributes(attributes: Iterable[Attribute], transaction_id: bytes) -> bytes:
    parts = []
    for attribute in attributes:
        value = attribute.pack(transaction_id)
        attr_type = attribute.type if isinstance(attribute, UnknownAttribute) else attribute.TYPE
        parts.append(_TLV.pack(attr_type, len(value)) + value + b"\x00" * (-len(value) % 4))
    return b"".join(parts)


def _hmac(data: bytes, key: bytes, sha256: bool) -> bytes:
    return hmac.new(key, data, hashlib.sha256 if sha256 else hashlib.sha1).digest()


def _hmac_over(raw: bytes, offset: int, attribute_size: int, key: bytes, sha256: bool) -> bytes:
    """HMAC of the message up to ``offset`` with the length field covering that attribute."""
    length = offset - HEADER_LENGTH + attribute_size
    return _hmac(raw[:2] + length.to_bytes(2, "big") + raw[4:offset], key, sha256)


def fingerprint_of(data: bytes | memoryview, length: int) -> int:
    """RFC 8489 §14.7: CRC-32 of the message before FINGERPRINT, with ``length`` in its header."""
    header = bytes(data[:2]) + length.to_bytes(2, "big") + bytes(data[4:HEADER_LENGTH])
    crc = binascii.crc32(bytes(data[HEADER_LENGTH:]), binascii.crc32(header))
    return crc ^ FINGERPRINT_XOR
