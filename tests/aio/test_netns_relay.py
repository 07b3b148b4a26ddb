"""TURN relay behaviour that names forbidden peers or needs IPv6: the server runs inside a namespace
with only ``lo``, so a regression can never send a packet off the machine."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.netns import Lab, Namespace, unavailable_reason, wait_listening

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

ROOT = Path(__file__).resolve().parents[2]
PORT = 3478
SERVER_V6, PEER_V6 = "fd00:443::1", "fd00:443::2"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Namespace]]:
    with Lab(tmp_path_factory.mktemp("netns-relay")) as lab:
        ns = lab.namespace("relay")
        for address in (SERVER_V6, PEER_V6):
            ns.run(["ip", "-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad"])
        yield lab, ns


def serve(ns: Namespace, tmp: Path, *extra: str) -> None:
    (tmp / "secret").write_text("netns-secret")
    proc = ns.spawn(
        [
            sys.executable, "-m", "meet443", "serve", "--listen", "127.0.0.1", "--port", str(PORT),
            "--public-ip", "127.0.0.1", "--public-ipv6", SERVER_V6, "--relay-ports", "50000-50999",
            "--turn-user", "u:p", "--turn-secret-file", str(tmp / "secret"), "--data-dir", str(tmp), *extra,
        ],
        name=f"meet443-{len(extra)}",
    )  # fmt: skip
    wait_listening(ns, "127.0.0.1", PORT, "udp", proc=proc)


def probe(ns: Namespace, *args: str) -> dict[str, object]:
    done = ns.run(
        [
            sys.executable,
            str(ROOT / "tests/aio/netns_turn_probe.py"),
            "127.0.0.1",
            str(PORT),
            "u",
            "p",
            *args,
        ],
        timeout=30,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_forbidden_peers_are_refused_and_ipv6_relays_work(
    lab: tuple[Lab, Namespace], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, ns = lab
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    serve(ns, tmp_path, "--allow-peer", f"{PEER_V6}/128")
    codes = probe(ns, "forbidden")
    # The server's own address passes at CreatePermission (its relay and main ports stay reachable);
    # every other forbidden range is refused with 403.
    assert codes == {
        "169.254.169.254": 403,
        "10.0.0.1": 403,
        "192.168.1.1": 403,
        "172.16.0.1": 403,
        "100.64.0.1": 403,
        "127.0.0.1": 0,
        "0.0.0.0": 403,
    }
    result = probe(ns, "ipv6", PEER_V6)
    assert result["relay"] is not None and result["relay"][0] == SERVER_V6  # type: ignore[index]
    assert result["mapped_denied"] == 403
    assert result["bound"] == 0
    assert result["peer_got"] == "over ipv6" and result["peer_saw_source"] == SERVER_V6
    assert result["client_got"] == "and back"
