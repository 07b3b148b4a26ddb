"""Transport addresses as the socket layer gives them, normalised to ``(ip, port)``."""

from __future__ import annotations

import enum

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
