"""A throwaway test CA and one server certificate, made with the openssl CLI.

P-256 keys: generated in milliseconds, and every client in the lab (coturn's uclient, Python's ssl,
Chromium) accepts them.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LabPki:
    ca: Path  # the CA certificate clients trust
    cert: Path  # leaf certificate (server)
    key: Path  # leaf private key


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_test_pki(
    directory: Path,
    ips: Sequence[str] = ("127.0.0.1", "127.0.0.2", "::1"),
    dns: Sequence[str] = ("localhost",),
    days: int = 2,
) -> LabPki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "leaf.pem", directory / "leaf.key", directory / "leaf.csr"
    ext = directory / "leaf.ext"
    san = ",".join([*(f"DNS:{d}" for d in dns), *(f"IP:{ip}" for ip in ips)])
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={san}\n"
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", str(days),
             "-subj", "/CN=meet443 test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    _openssl("req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", str(days), "-extfile", ext)  # fmt: skip
    return LabPki(ca=ca, cert=cert, key=key)
