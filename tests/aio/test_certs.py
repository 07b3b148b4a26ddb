"""The self-signed fallback certificate and the server TLS context."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meet443.aio.certs import ensure_certificate, make_server_ssl_context

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def _load(cert_path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert_path.read_bytes())


def _san(cert: x509.Certificate) -> tuple[set[str], set[object]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), set(san.get_values_for_type(x509.IPAddress))


class TestEnsureCertificate:
    def test_generates_self_signed_pair_with_sans(self, tmp_path: Path) -> None:
        cert_path, key_path = ensure_certificate(tmp_path, ["meet.example.org", "192.0.2.7", "[2001:db8::1]"])
        assert cert_path == tmp_path / "tls" / "cert.pem"
        assert key_path == tmp_path / "tls" / "key.pem"
        cert = _load(cert_path)
        dns, ips = _san(cert)
        assert dns == {"meet.example.org", "localhost"}
        assert ips == {
            ipaddress.ip_address("192.0.2.7"),
            ipaddress.ip_address("2001:db8::1"),
            ipaddress.ip_address("127.0.0.1"),
        }
        assert cert.issuer == cert.subject
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert datetime.timedelta(days=365) <= lifetime <= datetime.timedelta(days=366)

    def test_key_is_private(self, tmp_path: Path) -> None:
        _, key_path = ensure_certificate(tmp_path, ["192.0.2.7"])
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    def test_reused_on_second_call(self, tmp_path: Path) -> None:
        cert_path, key_path = ensure_certificate(tmp_path, ["meet.example.org", "192.0.2.7"])
        first = (cert_path.read_bytes(), key_path.read_bytes())
        again = ensure_certificate(tmp_path, ["192.0.2.7", "MEET.example.org."])
        assert again == (cert_path, key_path)
        assert (cert_path.read_bytes(), key_path.read_bytes()) == first

    def test_subset_of_hosts_reuses(self, tmp_path: Path) -> None:
        cert_path, _ = ensure_certificate(tmp_path, ["a.example.org", "b.example.org"])
        first = cert_path.read_bytes()
        ensure_certificate(tmp_path, ["b.example.org"])
        assert cert_path.read_bytes() == first

    def test_regenerated_for_new_host(self, tmp_path: Path) -> None:
        cert_path, _ = ensure_certificate(tmp_path, ["a.example.org"])
        first = cert_path.read_bytes()
        ensure_certificate(tmp_path, ["b.example.org"])
        assert cert_path.read_bytes() != first
        assert "b.example.org" in _san(_load(cert_path))[0]

    def test_regenerated_near_expiry(self, tmp_path: Path) -> None:
        cert_path, _ = ensure_certificate(tmp_path, ["192.0.2.7"], now=NOW)
        first = cert_path.read_bytes()
        ensure_certificate(tmp_path, ["192.0.2.7"], now=NOW + datetime.timedelta(days=300))
        assert cert_path.read_bytes() == first
        ensure_certificate(tmp_path, ["192.0.2.7"], now=NOW + datetime.timedelta(days=360))
        assert cert_path.read_bytes() != first

    def test_regenerated_when_files_are_garbage(self, tmp_path: Path) -> None:
        cert_path, key_path = ensure_certificate(tmp_path, ["192.0.2.7"])
        key_path.write_text("not a key")
        ensure_certificate(tmp_path, ["192.0.2.7"])
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        make_server_ssl_context(cert_path, key_path)

    def test_regenerated_when_key_does_not_match(self, tmp_path: Path) -> None:
        cert_path, key_path = ensure_certificate(tmp_path / "one", ["192.0.2.7"])
        _, other_key = ensure_certificate(tmp_path / "two", ["192.0.2.7"])
        key_path.write_bytes(other_key.read_bytes())
        first = cert_path.read_bytes()
        ensure_certificate(tmp_path / "one", ["192.0.2.7"])
        assert cert_path.read_bytes() != first
        make_server_ssl_context(cert_path, key_path)

    def test_loud_warning(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.WARNING, logger="meet443.aio.certs"):
            ensure_certificate(tmp_path, ["192.0.2.7"])
        (record,) = caplog.records
        assert record.levelno == logging.WARNING
        assert "SELF-SIGNED" in record.getMessage()
        assert "--cert" in record.getMessage()
        assert "turns:" in record.getMessage()


def _handshake(
    server_context: ssl.SSLContext, client_alpn: list[str] | None, tls12_ciphers: str | None = None
) -> ssl.SSLObject:
    """A TLS handshake over memory BIOs; returns the server side. With ``tls12_ciphers`` the client
    speaks TLS 1.2 only and offers just those suites."""
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    if tls12_ciphers is not None:
        client_context.maximum_version = ssl.TLSVersion.TLSv1_2
        client_context.set_ciphers(tls12_ciphers)
    if client_alpn is not None:
        client_context.set_alpn_protocols(client_alpn)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(c_in, c_out, server_side=False)
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return server
    raise AssertionError("handshake did not finish")


class TestServerContext:
    def test_loads_generated_pair(self, tmp_path: Path) -> None:
        context = make_server_ssl_context(*ensure_certificate(tmp_path, ["192.0.2.7"]))
        # TLS 1.0 and 1.1 are refused by the floor; testing it live needs deprecated client settings.
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2

    def test_browser_gets_http11(self, tmp_path: Path) -> None:
        context = make_server_ssl_context(*ensure_certificate(tmp_path, ["192.0.2.7"]))
        assert _handshake(context, ["h2", "http/1.1"]).selected_alpn_protocol() == "http/1.1"

    def test_turn_client_without_alpn(self, tmp_path: Path) -> None:
        context = make_server_ssl_context(*ensure_certificate(tmp_path, ["192.0.2.7"]))
        assert _handshake(context, None).selected_alpn_protocol() is None

    def test_turn_client_with_rfc7443_alpn(self, tmp_path: Path) -> None:
        context = make_server_ssl_context(*ensure_certificate(tmp_path, ["192.0.2.7"]))
        assert _handshake(context, ["stun.turn"]).selected_alpn_protocol() == "stun.turn"

    @pytest.mark.parametrize("cbc", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-SHA256"])
    def test_no_cbc_suites_in_tls12(self, tmp_path: Path, cbc: str) -> None:
        context = make_server_ssl_context(*ensure_certificate(tmp_path, ["192.0.2.7"]))
        with pytest.raises(ssl.SSLError):
            _handshake(context, None, tls12_ciphers=cbc)
        assert _handshake(context, None, tls12_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256").cipher() is not None
        tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
        assert tls12 and not [name for name in tls12 if "GCM" not in name and "CHACHA20" not in name]

    def test_unknown_alpn_is_not_fatal(self, tmp_path: Path) -> None:
        context = make_server_ssl_context(*ensure_certificate(tmp_path, ["192.0.2.7"]))
        assert _handshake(context, ["imap"]).selected_alpn_protocol() is None
