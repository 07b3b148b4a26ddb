"""The ClientHello reader: RFC 8448 §3's ClientHello, real ones from OpenSSL (Python's ssl), a
ClientHello split over reads and records, and fuzzing."""

from __future__ import annotations

import contextlib
import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meet443.exceptions import ParseError
from meet443.proto.tls.client_hello import (
    MAX_CLIENT_HELLO,
    ClientHello,
    Extension,
    alpn_extension,
    server_name_extension,
)

# RFC 8448 §3 "Simple 1-RTT Handshake": {client} send handshake record, the complete record.
RFC8448_CLIENT_HELLO = bytes.fromhex(
    """
    16 03 01 00 c4 01 00 00 c0 03 03 cb 34 ec b1 e7 81 63 ba 1c 38 c6 da cb 19 6a 6d ff a2 1a 8d 99
    12 ec 18 a2 ef 62 83 02 4d ec e7 00 00 06 13 01 13 03 13 02 01 00 00 91 00 00 00 0b 00 09 00 00
    06 73 65 72 76 65 72 ff 01 00 01 00 00 0a 00 14 00 12 00 1d 00 17 00 18 00 19 01 00 01 01 01 02
    01 03 01 04 00 23 00 00 00 33 00 26 00 24 00 1d 00 20 99 38 1d e5 60 e4 bd 43 d2 3d 8e 43 5a 7d
    ba fe b3 c0 6e 51 c1 3c ae 4d 54 13 69 1e 52 9a af 2c 00 2b 00 03 02 03 04 00 0d 00 20 00 1e 04
    03 05 03 06 03 02 03 08 04 08 05 08 06 04 01 05 01 06 01 02 01 04 02 05 02 06 02 02 02 00 2d 00
    02 01 01 00 1c 00 02 40 01
    """
)


def openssl_client_hello(alpn: list[str] | None, server_name: str | None = "meet.example") -> bytes:
    """The first flight of Python's ssl (OpenSSL) client, as it would go on the wire."""
    context = ssl.create_default_context()
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    if server_name is None:
        context.check_hostname = False
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def records(message: bytes, size: int) -> bytes:
    """A handshake message cut into records of ``size`` bytes of fragment (RFC 8446 §5.1)."""
    return b"".join(
        b"\x16\x03\x01" + len(chunk).to_bytes(2) + chunk
        for chunk in (message[i : i + size] for i in range(0, len(message), size))
    )


class TestRfc8448Section3:
    def test_reads_every_field(self) -> None:
        hello = ClientHello.parse(RFC8448_CLIENT_HELLO)
        assert hello.random.hex().startswith("cb34ecb1e78163ba")
        assert hello.cipher_suites == (0x1301, 0x1303, 0x1302)
        assert hello.session_id == b"" and hello.compression_methods == b"\x00"
        assert [e.type for e in hello.extensions] == [0, 0xFF01, 10, 35, 51, 43, 13, 45, 28]
        assert hello.server_name == "server"
        assert hello.alpn is None

    def test_encodes_it_back(self) -> None:
        assert bytes(ClientHello.parse(RFC8448_CLIENT_HELLO)) == RFC8448_CLIENT_HELLO

    def test_every_shorter_read_asks_for_more(self) -> None:
        for cut in range(len(RFC8448_CLIENT_HELLO)):
            missing = ClientHello.missing(RFC8448_CLIENT_HELLO[:cut])
            assert 0 < missing <= len(RFC8448_CLIENT_HELLO) - cut
            with pytest.raises(ParseError):
                ClientHello.parse(RFC8448_CLIENT_HELLO[:cut])
        assert ClientHello.missing(RFC8448_CLIENT_HELLO) == 0

    def test_bytes_after_it_are_not_read(self) -> None:
        # 0-RTT data or a pipelined record may follow in the same read.
        assert ClientHello.parse(RFC8448_CLIENT_HELLO + b"\x17\x03\x03\x00\x01x").server_name == "server"


class TestOpenSslClientHellos:
    @pytest.mark.parametrize(
        "alpn",
        [None, ["http/1.1"], ["h2", "http/1.1"], ["stun.turn"]],
        ids=["none", "http1", "h2-http1", "stun.turn"],
    )
    def test_alpn_as_offered(self, alpn: list[str] | None) -> None:
        hello = ClientHello.parse(openssl_client_hello(alpn))
        assert hello.alpn == (None if alpn is None else tuple(name.encode() for name in alpn))
        assert hello.server_name == "meet.example"
        assert 0x1301 in hello.cipher_suites

    def test_no_server_name_for_an_address(self) -> None:
        assert ClientHello.parse(openssl_client_hello(None, None)).server_name is None

    def test_split_over_reads_and_records(self) -> None:
        flight = openssl_client_hello(["http/1.1"])
        message = flight[5:]
        for size in (1, 7, 100, len(message)):
            fragmented = records(message, size)
            for cut in range(0, len(fragmented), 13):
                assert ClientHello.missing(fragmented[:cut]) > 0
            assert ClientHello.missing(fragmented) == 0
            assert ClientHello.parse(fragmented).alpn == (b"http/1.1",)


class TestRefusals:
    @pytest.mark.parametrize(
        ("flight", "why"),
        [
            (b"GET / HTTP/1.1\r\n", "not a TLS handshake record"),
            (b"\x17\x03\x03\x00\x10", "not a TLS handshake record"),
            (b"\x16\x02\x00\x00\x10", "not a TLS handshake record"),
            (b"\x16\x03\x01\x00\x00", "TLS record of 0 bytes"),
            (b"\x16\x03\x01\x40\x01", "TLS record of 16385 bytes"),
            (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "type 2, not ClientHello"),
            (b"\x16\x03\x01\x00\x04\x01\x01\x00\x00", "ClientHello of 65540 bytes"),
        ],
    )
    def test_refused_from_the_first_bytes(self, flight: bytes, why: str) -> None:
        with pytest.raises(ParseError, match=why):
            ClientHello.missing(flight)

    def test_a_flight_of_one_byte_records_is_capped(self) -> None:
        message = b"\x01" + (MAX_CLIENT_HELLO - 4).to_bytes(3) + b"\x00" * 6000
        with pytest.raises(ParseError, match="too many records"):
            ClientHello.missing(records(message, 1))

    @pytest.mark.parametrize(
        "extension",
        [
            Extension(16, b""),  # ALPN without its list
            Extension(16, b"\x00\x02\x00\x00"),  # an empty protocol name (RFC 7301 §3.1)
            Extension(16, b"\x00\x03\x03h2"),  # a name running past the list
            Extension(16, b"\x00\x03\x02h2xx"),  # bytes after the list
            Extension(0, b"\x00\x00"),  # an empty ServerNameList (RFC 6066 §3)
            Extension(0, b"\x00\x05\x00\x00\x03hi"),  # a name past its list
            Extension(0, b"\x00\x0a\x00\x00\x02hi\x00\x00\x02yo"),  # two host_names
            Extension(0, b"\x00\x05\x00\x00\x02\xff\xfe"),  # not ASCII
        ],
    )
    def test_malformed_extensions(self, extension: Extension) -> None:
        with pytest.raises(ParseError):
            ClientHello.parse(bytes(ClientHello(b"r" * 32, (0x1301,), (extension,))))

    def test_an_extension_twice(self) -> None:
        twice = (alpn_extension((b"h2",)), alpn_extension((b"http/1.1",)))
        with pytest.raises(ParseError, match="twice"):
            ClientHello.parse(bytes(ClientHello(b"r" * 32, (0x1301,), twice)))

    def test_a_tls12_hello_without_extensions(self) -> None:
        record = bytes(ClientHello(b"r" * 32, (0xC02F,)))
        without = record[:-2]  # no extensions block at all (RFC 5246 §7.4.1.2)
        without = b"\x16\x03\x01" + (len(without) - 5).to_bytes(2) + b"\x01" + (len(without) - 9).to_bytes(3)
        without += record[9:-2]
        hello = ClientHello.parse(without)
        assert hello.extensions == () and hello.alpn is None and hello.server_name is None


names = st.binary(min_size=1, max_size=20)


class TestFuzz:
    @given(
        st.binary(min_size=32, max_size=32),
        st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=20),
        st.lists(names, min_size=1, max_size=5) | st.none(),
        st.from_regex(r"[a-z0-9.-]{1,40}", fullmatch=True) | st.none(),
        st.integers(1, 300),
    )
    def test_round_trip_in_any_records(
        self,
        random: bytes,
        suites: list[int],
        alpn: list[bytes] | None,
        host: str | None,
        size: int,
    ) -> None:
        extensions = []
        if host is not None:
            extensions.append(server_name_extension(host))
        if alpn is not None:
            extensions.append(alpn_extension(tuple(alpn)))
        hello = ClientHello(random, tuple(suites), tuple(extensions))
        flight = records(bytes(hello)[5:], size)
        assert ClientHello.missing(flight) == 0
        parsed = ClientHello.parse(flight)
        assert parsed == hello
        assert parsed.alpn == (None if alpn is None else tuple(alpn))
        assert parsed.server_name == host

    @given(st.binary(max_size=600))
    def test_garbage_raises_only_parse_error(self, data: bytes) -> None:
        with contextlib.suppress(ParseError):
            ClientHello.missing(data)
        with contextlib.suppress(ParseError):
            hello = ClientHello.parse(data)
            _ = hello.alpn, hello.server_name, bytes(hello)

    @given(st.binary(max_size=400), st.integers(0, len(RFC8448_CLIENT_HELLO) - 1))
    def test_a_corrupted_hello_raises_only_parse_error(self, noise: bytes, at: int) -> None:
        flight = bytearray(RFC8448_CLIENT_HELLO)
        flight[at : at + len(noise)] = noise
        with contextlib.suppress(ParseError):
            hello = ClientHello.parse(bytes(flight))
            _ = hello.alpn, hello.server_name
