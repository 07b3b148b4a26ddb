"""Transport addresses as the socket layer gives them, normalised to ``(ip, port)``."""

from __future__ import annotations

import enum
import ipaddress

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
