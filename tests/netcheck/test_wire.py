"""The HTTP/1.1, CONNECT and WebSocket bytes of the check, both ways."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meet443.exceptions import ParseError
from meet443.netcheck.streams import Proxy, Target
from meet443.netcheck.wire import (
    OP_CLOSE,
    OP_TEXT,
    Frame,
    FrameReader,
    connect_request,
    encode_frame,
    head_end,
    http_request,
    parse_response_head,
    websocket_accept,
    websocket_key,
)


def unmasked(frame: bytes) -> bytes:
    """What a server would send: the same frame without the mask."""
    first, second = frame[0], frame[1] & 0x7F
    offset = 2 + {126: 2, 127: 8}.get(second, 0)
    mask, payload = frame[offset : offset + 4], frame[offset + 4 :]
    plain = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([first, frame[1] & 0x7F]) + frame[2:offset] + plain


class TestWebSocket:
    def test_rfc6455_section_1_3_example(self) -> None:
        # RFC 6455 §1.3: the sample nonce and its accept value.
        assert websocket_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert websocket_key(b"the sample nonce") == "dGhlIHNhbXBsZSBub25jZQ=="

    @pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
    def test_frames_round_trip(self, size: int) -> None:
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        frame = encode_frame(OP_TEXT, payload, b"\x01\x02\x03\x04")
        assert frame[1] & 0x80  # RFC 6455 §5.3: client frames are masked
        reader = FrameReader()
        # Fed in two pieces: the reader waits for the whole frame.
        server_frame = unmasked(frame)
        assert reader.feed(server_frame[:1]) == []
        assert reader.feed(server_frame[1:]) == [Frame(OP_TEXT, payload)]

    def test_two_frames_in_one_read(self) -> None:
        data = unmasked(encode_frame(OP_TEXT, b"a", b"\0\0\0\0")) + unmasked(
            encode_frame(OP_CLOSE, b"", b"\0\0\0\0")
        )
        assert FrameReader().feed(data) == [Frame(OP_TEXT, b"a"), Frame(OP_CLOSE, b"")]

    def test_refuses_masked_or_fragmented_server_frames(self) -> None:
        with pytest.raises(ParseError):
            FrameReader().feed(encode_frame(OP_TEXT, b"x", b"abcd"))
        with pytest.raises(ParseError):
            FrameReader().feed(b"\x01\x01x")

    @given(st.binary(max_size=64))
    def test_junk_raises_only_parse_error(self, junk: bytes) -> None:
        with contextlib.suppress(ParseError):
            FrameReader().feed(junk)


class TestHttp:
    def test_request(self) -> None:
        assert http_request("POST", "/v1/x", "h:8443") == (
            b"POST /v1/x HTTP/1.1\r\nHost: h:8443\r\nUser-Agent: meet443-check\r\nContent-Length: 0\r\n\r\n"
        )
        with pytest.raises(ValueError, match="CR or LF"):
            http_request("GET", "/", "h", [("X", "a\r\nInjected: 1")])

    def test_response_head(self) -> None:
        data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\nabc"
        end = head_end(data)
        assert end == len(data) - 3
        head = parse_response_head(data[:end])
        assert (head.status, head.reason, head.headers["upgrade"], head.content_length) == (
            101,
            "Switching Protocols",
            "websocket",
            3,
        )
        assert head_end(b"HTTP/1.1 200 OK\r\n") is None

    @pytest.mark.parametrize(
        "head",
        [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"],
    )
    def test_bad_heads(self, head: bytes) -> None:
        with pytest.raises(ParseError):
            parse_response_head(head)

    def test_head_too_long(self) -> None:
        with pytest.raises(ParseError):
            head_end(b"x" * 20000)

    def test_connect(self) -> None:
        assert (
            connect_request("10.0.0.1", 443) == b"CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\n\r\n"
        )
        assert connect_request("::1", 443, "Basic x").startswith(b"CONNECT [::1]:443 HTTP/1.1\r\n")


class TestUrls:
    def test_target(self) -> None:
        assert Target.parse("https://meet.example.org/") == Target("meet.example.org", 443)
        assert Target.parse("https://[::1]:8443").authority == "[::1]:8443"
        assert Target.parse("https://h:443").url == "https://h"
        for bad in ("http://h", "https://h/room", "https://u@h", "https://h:99999", "h"):
            with pytest.raises(ValueError):
                Target.parse(bad)

    def test_proxy(self) -> None:
        assert Proxy.parse("http://10.0.0.1:3128") == Proxy("10.0.0.1", 3128)
        assert Proxy.parse("proxy.corp:8080").host == "proxy.corp"
        with_auth = Proxy.parse("http://ann:s%40cret@p:3128")
        assert with_auth.authorization == "Basic " + base64.b64encode(b"ann:s@cret").decode()
        with pytest.raises(ValueError):
            Proxy.parse("https://p:3128")
