"""Transport addresses as the socket layer gives them, normalised to ``(ip, port)``."""

from __future__ import annotations

import enum
import ipaddress
from typing import NamedTuple

#: ``(ip, port)``; IPv6 addresses are plain strings without scope or flow info.
Address = tuple[str, int]


class Transport(enum.Enum):
    """How a client reaches the server (RFC 8656 §3.1: UDP, TCP or TLS-over-TCP)."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"

    @property
    def is_stream(self) -> bool:
        return self is not Transport.UDP


class ServerPort(enum.IntEnum):
    """The server's two UDP ports. The main one carries STUN, TURN, ChannelData and the SFU's
    media; the other one answers Binding requests (RFC 5780 CHANGE-REQUEST, "change port") and is
    the SFU's second host candidate, for browsers that ignore candidates below port 1024.

    An int, so that an adapter finds a port's socket by indexing a tuple.
    """

    MAIN = 0
    OTHER = 1


class ToClientFrom(NamedTuple):
    """A datagram for ``address`` that must leave from our UDP ``port``: a Binding answer (RFC 5780
    §6.1), or SFU traffic on the candidate pair it belongs to (RFC 8445 §7.2.2)."""

    port: ServerPort
    address: Address
    data: bytes


def address_key(remote_ip: str) -> str:
    """The key of a per-address limit or share: IPv4 as is, IPv6 by its /64 (one subscriber's prefix)."""
    try:
        address = ipaddress.ip_address(remote_ip.partition("%")[0])
    except ValueError:
        return remote_ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
