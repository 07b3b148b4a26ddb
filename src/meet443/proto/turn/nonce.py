"""Stateless nonces for the long-term credential mechanism (RFC 8489 §9.2.2, RFC 8656 §7.2).

A nonce carries its own expiry and a MAC over it and the client's IP, so the server keeps no state
for clients that never authenticate, and a nonce taken from one address is useless from another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct


class NonceFactory:
    """Makes and checks nonces of the form base64(expiry || MAC(secret, expiry || client ip))."""

    __slots__ = ("_secret", "lifetime")

    def __init__(self, secret: bytes, lifetime: float = 600.0) -> None:
        self._secret = secret
        self.lifetime = lifetime

    def _mac(self, expiry: int, client_ip: str) -> bytes:
        return hmac.new(
            self._secret, struct.pack("!Q", expiry) + client_ip.encode(), hashlib.sha256
        ).digest()[:12]

    def issue(self, client_ip: str, now: float) -> bytes:
        expiry = int(now + self.lifetime)
        return base64.urlsafe_b64encode(struct.pack("!Q", expiry) + self._mac(expiry, client_ip))

    def is_valid(self, nonce: bytes, client_ip: str, now: float) -> bool:
        """False for a nonce that is forged, from another address, or stale (answer 438)."""
        try:
            raw = base64.urlsafe_b64decode(nonce)
        except ValueError:
            return False
        if len(raw) != 20:
            return False
        (expiry,) = struct.unpack_from("!Q", raw)
        return expiry > now and hmac.compare_digest(raw[8:], self._mac(expiry, client_ip))
