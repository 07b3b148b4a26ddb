"""A DNS server for one lab namespace: answers A queries for the lab's names from a fixed table.

Chromium resolves the host of a ``turn:`` URI over UDP (a WebRTC STUN/TURN server) through its own
DNS client, which does not read the namespace's hosts file the way page loads and TURN over TCP do:
with nothing listening on the resolv.conf server the lookup fails ("TURN host lookup received
error", ICE error 701) and the browser gathers no relayed candidate. Real deployments have DNS; the
lab gets this. Run inside the namespace, bound to the resolv.conf address (``hosts_file``):

    python dns_server.py --listen 127.0.0.1 n1.cx.test=10.200.130.2 meet.cx.test=10.200.130.18

RFC 1035 §4.1: one question per query; an A question for a known name gets its address (TTL 1 s),
any other question for a known name an empty answer (so an AAAA lookup does not wait), an unknown
name NXDOMAIN. A malformed datagram is dropped.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import struct

TYPE_A = 1
CLASS_IN = 1
FLAG_QR, FLAG_AA, FLAG_RD = 0x8000, 0x0400, 0x0100
RCODE_NXDOMAIN = 3
TTL_S = 1


def question(query: bytes) -> tuple[str, int, int, int]:
    """The name, type and class of a query's one question, and the offset after it (RFC 1035 §4.1.2)."""
    (count,) = struct.unpack_from("!H", query, 4)
    if count != 1:
        raise ValueError("one question per query")
    labels, offset = [], 12
    while (length := query[offset]) != 0:
        if length > 63:
            raise ValueError("no compression in a question")
        labels.append(query[offset + 1 : offset + 1 + length].decode("ascii").lower())
        offset += 1 + length
    qtype, qclass = struct.unpack_from("!HH", query, offset + 1)
    return ".".join(labels), qtype, qclass, offset + 5


def answer(query: bytes, names: dict[str, bytes]) -> bytes:
    """The response to `query` (RFC 1035 §4.1.1): the question echoed, then at most one A record."""
    name, qtype, qclass, end = question(query)
    (ident, flags) = struct.unpack_from("!HH", query, 0)
    address = names.get(name)
    records = b""
    if address is not None and qtype == TYPE_A and qclass == CLASS_IN:
        # A pointer to the question's name at offset 12 (RFC 1035 §4.1.4).
        records = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL_S, 4) + address
    rcode = RCODE_NXDOMAIN if address is None else 0
    header = struct.pack(
        "!HHHHHH", ident, FLAG_QR | FLAG_AA | (flags & FLAG_RD) | rcode, 1, 1 if records else 0, 0, 0
    )
    return header + query[12:end] + records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=53)
    parser.add_argument("names", nargs="+", help="NAME=IPV4")
    args = parser.parse_args()
    names = {}
    for item in args.names:
        name, _, address = item.partition("=")
        names[name.lower().rstrip(".")] = ipaddress.IPv4Address(address).packed
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.listen, args.port))
    print(f"dns on {args.listen}:{args.port}: {sorted(names)}", flush=True)
    while True:
        query, source = sock.recvfrom(512)
        try:
            response = answer(query, names)
        except (ValueError, IndexError, struct.error, UnicodeDecodeError):
            continue
        sock.sendto(response, source)


if __name__ == "__main__":
    main()
