"""tests/lab/dns_server.py: the lab's DNS answers (RFC 1035 §4.1), without a namespace."""

from __future__ import annotations

import ipaddress
import struct

from lab.dns_server import TYPE_A, answer

NAMES = {"n1.cx.test": ipaddress.IPv4Address("10.200.130.2").packed}


def query(name: str, qtype: int = TYPE_A, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def test_a_known_name_gets_its_address() -> None:
    response = answer(query("N1.cx.test"), NAMES)
    ident, flags, _, answers = struct.unpack_from("!HHHH", response)
    assert (ident, flags & 0x000F, answers) == (0x1234, 0, 1)
    assert response.endswith(bytes([10, 200, 130, 2]))


def test_aaaa_for_a_known_name_is_empty_and_an_unknown_name_nxdomain() -> None:
    _, flags, _, answers = struct.unpack_from("!HHHH", answer(query("n1.cx.test", qtype=28), NAMES))
    assert (flags & 0x000F, answers) == (0, 0)
    _, flags, _, answers = struct.unpack_from("!HHHH", answer(query("elsewhere.test"), NAMES))
    assert (flags & 0x000F, answers) == (3, 0)
