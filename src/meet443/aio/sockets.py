"""Socket tuning shared by the UDP listeners."""

from __future__ import annotations

import socket

#: Media arrives in bursts (a keyframe is dozens of packets at once); a deep buffer absorbs one
#: event-loop turn's delay instead of dropping (RcvbufErrors in /proc/net/snmp).
MAIN_UDP_BUFFER_BYTES = 4 << 20
RELAY_UDP_BUFFER_BYTES = 1 << 20

# Linux: the *FORCE variants (root or CAP_NET_ADMIN) may exceed net.core.rmem_max/wmem_max.
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def enlarge_udp_buffers(sock: socket.socket, size: int) -> None:
    """Ask for ``size`` bytes of send and receive buffer, beyond the sysctl cap where allowed."""
    for forced, plain in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
