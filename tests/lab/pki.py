"""A throwaway test CA and server certificates, made with the openssl CLI.

P-256 keys: generated in milliseconds, and every client in the lab (coturn's uclient, Python's ssl,
Chromium) accepts them. `make_test_pki` makes the CA and one leaf; `issue_leaf` signs more leaves
with the same CA (a cluster's nodes, each for its own name and the shared public name), so one
trusted CA covers every server of a lab.
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

    @property
    def ca_key(self) -> Path:
        """The CA's private key, beside its certificate (for `issue_leaf`)."""
        return self.ca.with_suffix(".key")


EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def make_test_pki(
    directory: Path,
    ips: Sequence[str] = ("127.0.0.1", "127.0.0.2", "::1"),
    dns: Sequence[str] = ("localhost",),
    days: int = 2,
) -> LabPki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = directory / "ca.pem"
    _openssl("req", "-x509", *EC, "-keyout", directory / "ca.key", "-out", ca, "-days", str(days),
             "-subj", "/CN=meet443 test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return issue_leaf(LabPki(ca=ca, cert=ca, key=directory / "ca.key"), directory, "leaf", ips, dns, days)


def issue_leaf(
    pki: LabPki, directory: Path, stem: str, ips: Sequence[str], dns: Sequence[str], days: int = 2
) -> LabPki:
    """A server certificate ``directory/stem.pem`` (key ``stem.key``) for `dns` and `ips`, signed
    by `pki`'s CA; the CA stays the one clients already trust."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    csr, ext = directory / f"{stem}.csr", directory / f"{stem}.ext"
    san = ",".join([*(f"DNS:{d}" for d in dns), *(f"IP:{ip}" for ip in ips)])
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={san}\n"
    )
    _openssl("req", *EC, "-keyout", key, "-out", csr, "-subj", f"/CN={dns[0] if dns else 'localhost'}")
    _openssl("x509", "-req", "-in", csr, "-CA", pki.ca, "-CAkey", pki.ca_key, "-CAcreateserial",
             "-out", cert, "-days", str(days), "-extfile", ext)  # fmt: skip
    return LabPki(ca=pki.ca, cert=cert, key=key)
