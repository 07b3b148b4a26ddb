"""The TLS certificate of the one TCP port (HTTPS, WebSocket and TURN over TLS share it).

Without ``--cert``/``--key`` meet443 makes a self-signed certificate so that a first run works at all;
browsers will show a warning for HTTPS and silently refuse ``turns:`` with it, so the operator is told so.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ensure_certificate", "make_server_ssl_context"]

logger = logging.getLogger(__name__)

VALIDITY = datetime.timedelta(days=365)
#: Make a new certificate when the old one has less than this left, rather than fail mid-run.
RENEW_BEFORE = datetime.timedelta(days=7)
#: Tolerate clients whose clock is a little behind.
BACKDATE = datetime.timedelta(hours=1)

#: ALPN: "http/1.1" for browsers; "stun.turn" (RFC 7443 §6) for TURN clients that send ALPN at all.
#: Most TURN-over-TLS clients, browsers included, send no ALPN; the handshake then goes on without one.
ALPN_PROTOCOLS = ("http/1.1", "stun.turn")

_HostName = str | ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse_host(host: str) -> _HostName | None:
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:
        # SAN dNSName holds A-labels only (RFC 5280 §4.2.1.6).
        return text.encode("idna").decode("ascii").lower().rstrip(".")
    except UnicodeError:
        logger.warning("TLS: %r is not a valid host name; leaving it out of the certificate", host)
        return None


def _wanted_names(hosts: Sequence[str]) -> list[_HostName]:
    names: list[_HostName] = []
    for host in [*hosts, "localhost", "127.0.0.1"]:
        name = _parse_host(host)
        if name is not None and name not in names:
            names.append(name)
    return names


def _certificate_names(cert: x509.Certificate) -> set[_HostName]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names: set[_HostName] = {name.lower() for name in san.get_values_for_type(x509.DNSName)}
    for address in san.get_values_for_type(x509.IPAddress):
        # A SAN iPAddress may be a network in name constraints; ours are always single addresses.
        if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            names.add(address)
    return names


def _reusable(cert_path: Path, key_path: Path, names: Sequence[_HostName], now: datetime.datetime) -> bool:
    """True if the pair on disk loads, matches, covers every name and is not about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        logger.info("cannot reuse %s: %s", cert_path, exc)
        return False
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        logger.info("cannot reuse %s: it does not match %s", cert_path, key_path)
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < now or cert.not_valid_before_utc > now:
        logger.info("cannot reuse %s: it expires %s", cert_path, cert.not_valid_after_utc)
        return False
    missing = [str(name) for name in names if name not in _certificate_names(cert)]
    if missing:
        logger.info("cannot reuse %s: it does not cover %s", cert_path, ", ".join(missing))
        return False
    return True


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    # Write then rename: a reader (another worker, a crash halfway) never sees half a key.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)  # the umask may have narrowed it, O_CREAT on an old file kept it
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _generate(names: Sequence[_HostName], now: datetime.datetime) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = str(names[0])
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meet443 self-signed"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(name) if isinstance(name, str) else x509.IPAddress(name) for name in names
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_certificate(
    data_dir: Path, hosts: Sequence[str], *, now: datetime.datetime | None = None
) -> tuple[Path, Path]:
    """Return ``(cert.pem, key.pem)`` under ``<data_dir>/tls``, generating a self-signed pair if needed.

    The pair on disk is reused when it covers ``hosts`` (DNS names or IP literals, IPv6 with or without
    brackets) plus ``localhost`` and ``127.0.0.1`` and has more than a week left; otherwise a new ECDSA
    P-256 pair valid for 365 days replaces it. The key file has mode 0600.
    """
    moment = now or datetime.datetime.now(datetime.UTC)
    tls_dir = data_dir / "tls"
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    names = _wanted_names(hosts)
    if cert_path.exists() and key_path.exists() and _reusable(cert_path, key_path, names, moment):
        action = "reusing the"
    else:
        tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert_pem, key_pem = _generate(names, moment)
        # Key first: a certificate never sits next to a key it does not belong to for longer than a rename.
        _write_atomically(key_path, key_pem, 0o600)
        _write_atomically(cert_path, cert_pem, 0o644)
        action = "generated a"
    logger.warning(
        "TLS: %s SELF-SIGNED certificate %s for %s. Browsers will warn on HTTPS and will NOT use "
        "turns: (TURN over TLS) with it, so clients behind strict firewalls cannot connect. "
        "Pass --cert and --key with a certificate from a CA (for example Let's Encrypt).",
        action,
        cert_path,
        ", ".join(map(str, names)),
    )
    return cert_path, key_path


#: TLS 1.2 suites: forward secret AEAD only (Mozilla's "intermediate" list without DHE, for which no
#: parameters are loaded). CBC suites are gone: Lucky13-style padding oracles, and every client
#: that can do WebRTC can do GCM or ChaCha20. TLS 1.3 suites are not affected by this string.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)


def make_server_ssl_context(
    cert: Path, key: Path, *, alpn_protocols: Sequence[str] = ALPN_PROTOCOLS
) -> ssl.SSLContext:
    """A server-side context, TLS 1.2 or newer, offering ``alpn_protocols`` (``http/1.1`` first).

    A client that offers none of them, or no ALPN at all (most TURN clients), still completes the
    handshake: OpenSSL then simply does not acknowledge ALPN.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers(TLS12_CIPHERS)
    context.load_cert_chain(certfile=cert, keyfile=key)
    if alpn_protocols:
        context.set_alpn_protocols(list(alpn_protocols))
    return context
