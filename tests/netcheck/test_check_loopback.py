"""``meet443 check`` against a real ``meet443 serve`` on 127.0.0.1: every path works on loopback; a
certificate the client does not trust reads as TLS interception; usage errors exit 2.

Every packet goes to 127.0.0.1. The server relays only between its own check allocations.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.pki import LabPki, make_test_pki

HOST = "127.0.0.1"


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    pki: LabPki
    log: Path

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"


def _free_port() -> int:
    # The kernel picks a TCP port; the same number is then tried for UDP by the server.
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("check-loopback")
    pki = make_test_pki(tmp / "pki")
    port = _free_port()
    log = tmp / "server.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "meet443", "serve", "--listen", HOST, "--port", str(port),
                "--public-ip", HOST, "--relay-ports", "41000-41999", "--other-udp-port", "0",
                "--cert", str(pki.cert), "--key", str(pki.key), "--data-dir", str(tmp / "data"),
                "--check-rate", "60", "--workers", "2",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError(log.read_text())
            try:
                socket.create_connection((HOST, port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start:\n" + log.read_text()) from None
                time.sleep(0.1)
        yield Served(process, port, pki, log)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def check(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "meet443", "check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout, done.stderr


def test_everything_works_on_loopback(served: Served) -> None:
    status, out, err = check(served.url, "--json", "--ca-file", str(served.pki.ca))
    assert status == 0, err
    report = json.loads(out)
    assert report["server"] == served.url
    checks = {c["name"]: c for c in report["checks"]}
    assert all(c["ok"] for c in checks.values()), [c["detail"] for c in checks.values() if not c["ok"]]
    assert report["best_path"] == "direct-udp" and report["p2p_direct"] is True
    for name in ("turn-udp", "turn-tcp", "turn-tls"):
        assert checks[name]["loss"] == 0.0 and checks[name]["rtt_ms"] is not None, checks[name]
    # Both media workers' SFU ports answered (POST /v1/network/check-credentials names them).
    assert "(the SFU's, one per media worker) reached" in checks["direct-udp"]["detail"], checks["direct-udp"]
    assert checks["stun"]["detail"].startswith(f"server-reflexive address {HOST}:")
    assert checks["direct-udp"]["port"] != served.port
    # Progress went to stderr, one line per check (stderr is not a terminal here).
    assert len([line for line in err.splitlines() if line.strip()]) == len(checks)


def test_table_and_verdict(served: Served) -> None:
    status, out, _ = check(served.url, "--ca-file", str(served.pki.ca), "--no-progress")
    assert status == 0
    assert "service" in out and "destination port" in out and "protocol" in out
    assert "best media path: direct-udp; peer to peer without relay: yes" in out


def test_untrusted_certificate_reads_as_interception(served: Served) -> None:
    status, out, _ = check(served.url, "--json", "--no-progress")
    assert status == 1  # no signaling: no call
    report = json.loads(out)
    checks = {c["name"]: c for c in report["checks"]}
    assert not checks["https"]["ok"] and not checks["wss"]["ok"]
    assert "does not verify" in checks["https"]["detail"]
    assert "meet443 test CA" in checks["https"]["detail"]  # the foreign certificate's issuer is named
    assert checks["stun"]["ok"]  # UDP does not care
    assert report["best_path"] == "none"


def test_nothing_listening(served: Served) -> None:
    port = _free_port()
    status, out, _ = check(f"https://{HOST}:{port}", "--json", "--no-progress", "--timeout", "1")
    assert status == 1
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert "refused" in checks["https"]["detail"]
    assert not any(c["ok"] for c in checks.values())


@pytest.mark.parametrize(
    "args",
    [
        ["http://example.org"],
        ["https://example.org/room"],
        ["https://example.org", "--proxy", "https://proxy:3128"],
        ["https://example.org", "--ca-file", "/nonexistent/ca.pem"],
        ["https://example.org", "--timeout", "0"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    status, _, err = check(*args)
    assert status == 2, err
    assert "meet443 check: error:" in err
