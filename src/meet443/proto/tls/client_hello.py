"""The TLS ClientHello, read before the handshake so the TCP port can choose who terminates TLS.

A client's first flight is one or more handshake records (RFC 8446 §5.1: a handshake message may
span records, up to 2^14 bytes of fragment each) holding the ClientHello (RFC 8446 §4.1.2; RFC 5246
§7.4.1.2, where the extensions are optional). The port peeks at the flight without consuming it:
:meth:`ClientHello.missing` says how many more bytes it needs at least (so a ClientHello split over
several TCP reads, as post-quantum key shares make it, is waited for), and :meth:`ClientHello.parse`
reads it. What is read is the ALPN protocol list (RFC 7301 §3.1) and the server name (RFC 6066 §3);
the other extensions are kept as they are. Only :class:`~meet443.exceptions.ParseError` is raised.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from meet443.exceptions import ParseError

__all__ = [
    "ALPN",
    "MAX_CLIENT_HELLO",
    "MAX_FLIGHT",
    "SERVER_NAME",
    "ClientHello",
    "Extension",
    "alpn_extension",
    "server_name_extension",
]

#: ContentType handshake and HandshakeType client_hello (RFC 8446 §5.1, §4).
HANDSHAKE = 22
CLIENT_HELLO = 1
#: Extension types: server_name (RFC 6066 §3), application_layer_protocol_negotiation (RFC 7301 §3.1).
SERVER_NAME = 0
ALPN = 16
RECORD_HEADER = 5
HANDSHAKE_HEADER = 4
#: RFC 8446 §5.1: a record's fragment is at most 2^14 bytes.
MAX_FRAGMENT = 1 << 14
#: The largest ClientHello message accepted. Browsers' are about 2 kB with a post-quantum key share;
#: the protocol allows 2^24 bytes, which a server must not buffer for anyone who asks.
MAX_CLIENT_HELLO = 1 << 14
#: The largest first flight (record headers included) that is read to find the ClientHello.
MAX_FLIGHT = 2 * MAX_CLIENT_HELLO
_RECORD = struct.Struct("!BBBH")


@dataclass(frozen=True, slots=True)
class Extension:
    """One extension as it is on the wire (RFC 8446 §4.2): its type and its opaque data."""

    type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ClientHello:
    """RFC 8446 §4.1.2 (and RFC 5246 §7.4.1.2): what a client offers before the handshake."""

    random: bytes
    cipher_suites: tuple[int, ...]
    extensions: tuple[Extension, ...] = ()
    session_id: bytes = b""
    compression_methods: bytes = b"\x00"
    legacy_version: int = 0x0303

    @property
    def alpn(self) -> tuple[bytes, ...] | None:
        """The protocols offered by ALPN (RFC 7301 §3.1), in the client's order; None without the
        extension."""
        data = self._extension(ALPN)
        return None if data is None else _protocol_names(data)

    @property
    def server_name(self) -> str | None:
        """The host_name of the server_name extension (RFC 6066 §3); None without one."""
        data = self._extension(SERVER_NAME)
        return None if data is None else _host_name(data)

    def _extension(self, kind: int) -> bytes | None:
        for extension in self.extensions:
            if extension.type == kind:
                return extension.data
        return None

    @classmethod
    def missing(cls, flight: bytes) -> int:
        """How many more bytes the first flight needs at least before :meth:`parse` can read the
        ClientHello (0: it can now). ``ParseError`` as soon as the flight cannot hold one: another
        record type, a bad record length, another handshake message, or more than
        :data:`MAX_CLIENT_HELLO`."""
        return _reassemble(flight)[1]

    @classmethod
    def parse(cls, flight: bytes) -> ClientHello:
        """The ClientHello of a complete first flight (records); bytes after it are not read."""
        message, missing = _reassemble(flight)
        if missing:
            raise ParseError(f"ClientHello incomplete: {missing} more bytes needed at least")
        reader = _Reader(message, HANDSHAKE_HEADER)
        legacy_version = reader.integer(2)
        random = reader.take(32)
        session_id = reader.vector(1, 0, 32)
        suites = reader.vector(2, 2, 0xFFFE)
        if len(suites) % 2:
            raise ParseError("ClientHello cipher_suites of an odd length")
        compression = reader.vector(1, 1, 0xFF)
        extensions: list[Extension] = []
        if not reader.done:  # RFC 5246 §7.4.1.2: a TLS 1.2 ClientHello may end here
            block = _Reader(reader.vector(2, 0, 0xFFFF))
            while not block.done:
                extensions.append(Extension(block.integer(2), block.vector(2, 0, 0xFFFF)))
            if not reader.done:
                raise ParseError("bytes after the ClientHello's extensions")
        kinds = [extension.type for extension in extensions]
        if len(set(kinds)) != len(kinds):
            raise ParseError("ClientHello with an extension twice")  # RFC 8446 §4.2
        hello = cls(
            random,
            tuple(int.from_bytes(suites[i : i + 2]) for i in range(0, len(suites), 2)),
            tuple(extensions),
            session_id,
            compression,
            legacy_version,
        )
        # The two extensions the port reads are checked now, so reading them cannot fail later.
        _ = hello.alpn, hello.server_name
        return hello

    def __bytes__(self) -> bytes:
        """One handshake record (version 0x0301, as TLS 1.3 clients send, RFC 8446 §5.1)."""
        suites = b"".join(suite.to_bytes(2) for suite in self.cipher_suites)
        block = b"".join(e.type.to_bytes(2) + _vector(2, e.data) for e in self.extensions)
        body = (
            self.legacy_version.to_bytes(2)
            + self.random
            + _vector(1, self.session_id)
            + _vector(2, suites)
            + _vector(1, self.compression_methods)
            + _vector(2, block)
        )
        message = bytes([CLIENT_HELLO]) + len(body).to_bytes(3) + body
        return _RECORD.pack(HANDSHAKE, 3, 1, len(message)) + message


def alpn_extension(protocols: tuple[bytes, ...]) -> Extension:
    """RFC 7301 §3.1: a ProtocolNameList."""
    return Extension(ALPN, _vector(2, b"".join(_vector(1, name) for name in protocols)))


def server_name_extension(host: str) -> Extension:
    """RFC 6066 §3: a ServerNameList of one host_name."""
    name = b"\x00" + _vector(2, host.encode("ascii"))
    return Extension(SERVER_NAME, _vector(2, name))


def _reassemble(flight: bytes) -> tuple[bytes, int]:
    """The handshake message so far (header included) from the flight's records, and how many
    more bytes of the flight are needed at least (0: the ClientHello is complete)."""
    message = bytearray()
    offset = 0
    while True:
        if len(flight) < offset + RECORD_HEADER:
            return bytes(message), offset + RECORD_HEADER - len(flight)
        kind, major, _, length = _RECORD.unpack_from(flight, offset)
        if kind != HANDSHAKE or major != 3:
            raise ParseError("not a TLS handshake record")
        if not 0 < length <= MAX_FRAGMENT:
            raise ParseError(f"TLS record of {length} bytes")  # RFC 8446 §5.1: no empty fragments
        start, end = offset + RECORD_HEADER, offset + RECORD_HEADER + length
        if end > MAX_FLIGHT:
            raise ParseError("ClientHello spread over too many records")
        message += flight[start:end]
        if len(message) >= HANDSHAKE_HEADER:
            if message[0] != CLIENT_HELLO:
                raise ParseError(f"first handshake message of type {message[0]}, not ClientHello")
            total = HANDSHAKE_HEADER + int.from_bytes(message[1:HANDSHAKE_HEADER])
            if total > MAX_CLIENT_HELLO:
                raise ParseError(f"ClientHello of {total} bytes")
            if len(message) >= total:
                return bytes(message[:total]), 0
        if len(flight) < end:
            return bytes(message), end - len(flight)
        offset = end


def _vector(width: int, data: bytes) -> bytes:
    return len(data).to_bytes(width) + data


class _Reader:
    """Reads RFC 8446 §3 presentation-language fields; ``ParseError`` past the end."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    @property
    def done(self) -> bool:
        return self.offset == len(self.data)

    def take(self, count: int) -> bytes:
        end = self.offset + count
        if end > len(self.data):
            raise ParseError("TLS field runs past its container")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def integer(self, width: int) -> int:
        return int.from_bytes(self.take(width))

    def vector(self, width: int, least: int, most: int) -> bytes:
        length = self.integer(width)
        if not least <= length <= most:
            raise ParseError(f"TLS vector of {length} bytes, not {least}-{most}")
        return self.take(length)


def _protocol_names(data: bytes) -> tuple[bytes, ...]:
    """RFC 7301 §3.1: ``ProtocolName protocol_name_list<2..2^16-1>``, each name 1-255 bytes."""
    names = _Reader(_whole(data, 2, 2))
    protocols: list[bytes] = []
    while not names.done:
        protocols.append(names.vector(1, 1, 0xFF))
    return tuple(protocols)


def _host_name(data: bytes) -> str | None:
    """RFC 6066 §3: the list's host_name (type 0); other name types are skipped, and a list may
    hold one name of a type."""
    names = _Reader(_whole(data, 2, 1))
    host: str | None = None
    seen: set[int] = set()
    while not names.done:
        kind = names.integer(1)
        name = names.vector(2, 1, 0xFFFF)
        if kind in seen:
            raise ParseError("server_name with two names of one type")
        seen.add(kind)
        if kind == 0:
            try:
                host = name.decode("ascii")
            except UnicodeDecodeError as exc:
                raise ParseError("server_name host_name is not ASCII") from exc
    return host


def _whole(data: bytes, width: int, least: int) -> bytes:
    """An extension's data that is exactly one vector of at least ``least`` bytes."""
    reader = _Reader(data)
    inner = reader.vector(width, least, (1 << (8 * width)) - 1)
    if not reader.done:
        raise ParseError("bytes after a TLS extension's list")
    return inner
