"""Self-signed ECDSA certificates for DTLS-SRTP and their SDP fingerprints (RFC 8122, RFC 8827 §6.5).

WebRTC endpoints authenticate each other by the certificate fingerprint carried in the signed-in
signaling channel, not by a CA, so the certificate is self-signed. ECDSA P-256 is what browsers
generate by default and the smallest to put in a handshake flight.

The private key comes from the cryptography library's CSPRNG (a documented exception to
"randomness comes in through a parameter": key generation must not be replayable); the serial
number and validity dates come from the injected ``token_bytes`` and ``now``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from meet443.proto.sdp.attributes import Fingerprint

#: RFC 8122 §5 hash functions this module can compute, by their SDP names.
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "sha-1": hashes.SHA1,
    "sha-224": hashes.SHA224,
    "sha-256": hashes.SHA256,
    "sha-384": hashes.SHA384,
    "sha-512": hashes.SHA512,
}


def certificate_fingerprint(certificate: x509.Certificate, algorithm: str = "sha-256") -> Fingerprint:
    """RFC 8122 §5: the hash of the DER certificate, as an ``a=fingerprint`` attribute."""
    name = algorithm.lower()
    if name not in HASHES:
        raise ValueError(f"unsupported fingerprint hash {algorithm!r}")
    return Fingerprint(name, certificate.fingerprint(HASHES[name]()))


def fingerprint_matches(certificate: x509.Certificate, expected: Iterable[Fingerprint]) -> bool:
    """Whether the certificate matches one of the expected fingerprints with a hash we support.

    RFC 8122 §5 lets a description carry several fingerprints; libwebrtc checks only one. A match
    on any supported one is enough; fingerprints with unsupported hashes (md5, md2) never match.
    """
    for fingerprint in expected:
        if fingerprint.hash_function in HASHES and (
            certificate_fingerprint(certificate, fingerprint.hash_function).digest == fingerprint.digest
        ):
            return True
    return False


@dataclass(frozen=True, slots=True)
class DtlsCertificate:
    """A certificate and its private key; share one across all sessions of a server process."""

    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(
        cls,
        now: float,
        token_bytes: Callable[[int], bytes],
        *,
        common_name: str = "meet443",
        lifetime: datetime.timedelta = datetime.timedelta(days=30),
    ) -> DtlsCertificate:
        """A fresh ECDSA P-256 certificate valid from a day before ``now`` (Unix seconds)."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        start = datetime.datetime.fromtimestamp(now, datetime.UTC)
        # RFC 5280 §4.1.2.2: a positive serial of at most 20 bytes; 63 random bits.
        serial = int.from_bytes(token_bytes(8), "big") >> 1 or 1
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start - datetime.timedelta(days=1))
            .not_valid_after(start + lifetime)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @property
    def fingerprint(self) -> Fingerprint:
        """The SHA-256 fingerprint to put in ``a=fingerprint`` (what browsers use)."""
        return certificate_fingerprint(self.certificate, "sha-256")
