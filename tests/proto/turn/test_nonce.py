"""Stateless nonces (RFC 8489 §9.2.2, RFC 8656 §7.2): valid where and while issued, nowhere else."""

from __future__ import annotations

import base64

from meet443.proto.turn.nonce import NonceFactory

NOW = 1_800_000_000.0


class TestRfc8489StatelessNonce:
    def test_valid_from_its_address_until_it_expires(self) -> None:
        nonces = NonceFactory(b"secret", lifetime=600)
        nonce = nonces.issue("203.0.113.10", NOW)
        assert nonces.is_valid(nonce, "203.0.113.10", NOW + 599)
        assert not nonces.is_valid(nonce, "203.0.113.10", NOW + 600)  # stale: answer 438
        assert not nonces.is_valid(nonce, "203.0.113.11", NOW)  # taken from another address
        assert not NonceFactory(b"other secret").is_valid(nonce, "203.0.113.10", NOW)

    def test_forged_and_malformed_nonces_are_refused(self) -> None:
        nonces = NonceFactory(b"secret")
        raw = bytearray(base64.urlsafe_b64decode(nonces.issue("203.0.113.10", NOW)))
        raw[0:8] = (2**63).to_bytes(8, "big")  # a later expiry under the old MAC
        for nonce in (
            base64.urlsafe_b64encode(bytes(raw)),
            b"not base64!",  # what a client may echo back after mangling it
            base64.urlsafe_b64encode(b"short"),
            b"",
        ):
            assert not nonces.is_valid(nonce, "203.0.113.10", NOW)
