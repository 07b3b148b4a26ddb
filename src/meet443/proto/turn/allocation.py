"""One TURN allocation and everything whose lifetime hangs on it (RFC 8656 §6, §9, §12).

Every lifetime is an absolute expiry time in the server's clock; nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from meet443.proto.addresses import Address, Transport
from meet443.proto.ratelimit import TokenBucket

#: RFC 8656 §9: a permission lives 300 s unless refreshed.
PERMISSION_LIFETIME = 300.0
#: RFC 8656 §12: a channel binding lives 600 s unless refreshed.
CHANNEL_LIFETIME = 600.0
#: RFC 8656 §12.2: after a binding expires, neither its number nor its peer may be rebound for 5 min.
CHANNEL_QUARANTINE = 300.0


class ClientFlow(NamedTuple):
    """The client side of an allocation's 5-tuple (RFC 8656 §2): how and from where it reached us.

    ``connection`` tells TCP/TLS connections from the same address apart; it is 0 for UDP.
    """

    transport: Transport
    address: Address
    connection: int = 0


@dataclass(slots=True)
class ChannelBinding:
    """RFC 8656 §12: a channel number bound to one peer transport address."""

    number: int
    peer: Address
    expires: float


@dataclass(slots=True, eq=False)
class Allocation:
    """RFC 8656 §6: a relayed transport address owned by one client 5-tuple and one username."""

    flow: ClientFlow
    relay: Address
    username: str
    key: bytes
    expires: float
    bandwidth: TokenBucket
    #: Username whose REST expiry passed may still act on this allocation (issue: long calls).
    permissions: dict[str, float] = field(default_factory=dict)
    channels: dict[int, ChannelBinding] = field(default_factory=dict)
    channel_by_peer: dict[Address, ChannelBinding] = field(default_factory=dict)
    #: Numbers and peers of expired bindings, in quarantine until the given time (RFC 8656 §12.2).
    quarantine: dict[int | Address, float] = field(default_factory=dict)
    reservation_token: bytes | None = None

    @property
    def family(self) -> int:
        """4 or 6: the relay address family, which every peer must match (443 otherwise)."""
        return 6 if ":" in self.relay[0] else 4

    def install_permission(self, peer_ip: str, now: float) -> None:
        """RFC 8656 §9: install or refresh a permission for 300 s."""
        self.permissions[peer_ip] = now + PERMISSION_LIFETIME

    def has_permission(self, peer_ip: str, now: float) -> bool:
        return self.permissions.get(peer_ip, 0.0) > now

    def can_bind(self, number: int, peer: Address, now: float) -> bool:
        """RFC 8656 §11.2: a number names one peer and a peer has one number, also in quarantine."""
        existing = self.channels.get(number)
        if existing is not None:
            return existing.peer == peer
        bound_peer = self.channel_by_peer.get(peer)
        if bound_peer is not None:
            return False
        return self.quarantine.get(number, 0.0) <= now and self.quarantine.get(peer, 0.0) <= now

    def bind_channel(self, number: int, peer: Address, now: float) -> None:
        """RFC 8656 §11.2: bind or refresh a channel (and the permission for its peer's IP)."""
        binding = self.channels.get(number)
        if binding is None:
            binding = ChannelBinding(number, peer, now + CHANNEL_LIFETIME)
            self.channels[number] = binding
            self.channel_by_peer[peer] = binding
        else:
            binding.expires = now + CHANNEL_LIFETIME
        self.install_permission(peer[0], now)

    def next_expiry(self) -> float:
        """When :meth:`expire` (or the allocation's own end) next has something to do."""
        return min(
            self.expires,
            min(self.permissions.values(), default=self.expires),
            min((b.expires for b in self.channels.values()), default=self.expires),
            min(self.quarantine.values(), default=self.expires),
        )

    def expire(self, now: float) -> None:
        """Drop permissions and channel bindings whose time has passed."""
        for ip in [ip for ip, expiry in self.permissions.items() if expiry <= now]:
            del self.permissions[ip]
        for number in [n for n, b in self.channels.items() if b.expires <= now]:
            binding = self.channels.pop(number)
            del self.channel_by_peer[binding.peer]
            self.quarantine[number] = now + CHANNEL_QUARANTINE
            self.quarantine[binding.peer] = now + CHANNEL_QUARANTINE
        for key in [k for k, until in self.quarantine.items() if until <= now]:
            del self.quarantine[key]
