"""The few bytes of HTTP/1.1 (RFC 9112), HTTP CONNECT (RFC 9110 §9.3.6) and WebSocket (RFC 6455) the
check speaks. Pure: builders return bytes, parsers take bytes and raise only ``ParseError``.

The check talks to exactly one server and only needs a status line, a few headers and a body with a
Content-Length, so a small codec here keeps every failure (refused, reset, TLS) in one place instead
of spread over a general HTTP client's exception types.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from meet443.exceptions import ParseError

__all__ = [
    "MAX_HEAD",
    "Frame",
    "FrameReader",
    "ResponseHead",
    "connect_request",
    "encode_frame",
    "head_end",
    "http_request",
    "parse_response_head",
    "websocket_accept",
    "websocket_request",
]

#: Response heads longer than this are refused (the server's are a few hundred bytes).
MAX_HEAD = 16 * 1024
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA
#: RFC 6455 §1.3.
_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_FRAME = 1 << 20


def _header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    out = b""
    for name, value in headers:
        if any(c in name + value for c in "\r\n"):
            raise ValueError("header names and values must not contain CR or LF")
        out += f"{name}: {value}\r\n".encode("latin-1")
    return out


def http_request(
    method: str, target: str, host: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
) -> bytes:
    """RFC 9112 §3: a request with ``Host`` and, for a body (or POST), ``Content-Length``."""
    all_headers = [("Host", host), ("User-Agent", "meet443-check"), *headers]
    if body or method in ("POST", "PUT"):
        all_headers.append(("Content-Length", str(len(body))))
    return f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + _header_lines(all_headers) + b"\r\n" + body


def connect_request(host: str, port: int, authorization: str | None = None) -> bytes:
    """RFC 9110 §9.3.6: ask an HTTP proxy for a tunnel to ``host:port`` (IPv6 in brackets)."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    headers = [("Host", authority)]
    if authorization is not None:
        headers.append(("Proxy-Authorization", authorization))
    return f"CONNECT {authority} HTTP/1.1\r\n".encode("latin-1") + _header_lines(headers) + b"\r\n"


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    #: Lower-case names; a repeated header keeps its last value.
    headers: dict[str, str]

    @property
    def content_length(self) -> int | None:
        raw = self.headers.get("content-length")
        if raw is None:
            return None
        if not raw.strip().isdigit():
            raise ParseError(f"bad Content-Length {raw!r}")
        return int(raw)


def head_end(buffer: bytes) -> int | None:
    """The offset just past ``\\r\\n\\r\\n``, or None if the head is not complete yet."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise ParseError("response head too long")
        return None
    return end + 4


def parse_response_head(head: bytes) -> ResponseHead:
    """RFC 9112 §4: ``HTTP/1.1 200 OK`` and the header fields, up to the empty line."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise ParseError("undecodable head") from None
    lines = text.split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ParseError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ParseError(f"malformed header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    return ResponseHead(int(code), reason, headers)


# --------------------------------------------------------------------------------------------------
# WebSocket (RFC 6455)


def websocket_request(target: str, host: str, key: str, origin: str) -> bytes:
    """RFC 6455 §4.1: the opening handshake."""
    return http_request(
        "GET",
        target,
        host,
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key),
            ("Sec-WebSocket-Version", "13"),
            ("Origin", origin),
        ],
    )


def websocket_key(nonce: bytes) -> str:
    """RFC 6455 §4.1: base64 of 16 random bytes."""
    if len(nonce) != 16:
        raise ValueError("the nonce must be 16 bytes")
    return base64.b64encode(nonce).decode("ascii")


def websocket_accept(key: str) -> str:
    """RFC 6455 §4.2.2: what the server must answer in ``Sec-WebSocket-Accept``."""
    digest = hashlib.sha1(key.encode("ascii") + _WEBSOCKET_GUID).digest()  # noqa: S324 -- the RFC's choice
    return base64.b64encode(digest).decode("ascii")


def encode_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """RFC 6455 §5.2: one final frame, masked (§5.3: every client frame is)."""
    if len(mask) != 4:
        raise ValueError("the mask is 4 bytes")
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


@dataclass(frozen=True, slots=True)
class Frame:
    opcode: int
    payload: bytes


class FrameReader:
    """Splits the server's byte stream into frames (unmasked, RFC 6455 §5.1); fragments are refused."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while True:
            buffer = self._buffer
            if len(buffer) < 2:
                return frames
            first, second = buffer[0], buffer[1]
            if not first & 0x80:
                raise ParseError("fragmented WebSocket frames are not expected here")
            if second & 0x80:
                raise ParseError("a server must not mask its frames (RFC 6455 §5.1)")
            length, offset = second & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    return frames
                (length,) = struct.unpack_from("!H", buffer, 2)
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    return frames
                (length,) = struct.unpack_from("!Q", buffer, 2)
                offset = 10
            if length > _MAX_FRAME:
                raise ParseError("WebSocket frame too large")
            if len(buffer) < offset + length:
                return frames
            frames.append(Frame(first & 0x0F, buffer[offset : offset + length]))
            self._buffer = buffer[offset + length :]
