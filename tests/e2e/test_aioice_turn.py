"""aioice's TURN client (the one aiortc uses) against the server under test.

RFC 8656 §7 Allocate, §12 ChannelBind + ChannelData, §7.3 Refresh with lifetime 0 on close, over
UDP, TCP and TLS on one port; TLS is verified against the lab CA, with the server's IP in the SAN.
The client runs in the server's lo-only namespace (``ip netns exec``), as a separate process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.pki import LabPki
from lab.turnutils import TRANSPORTS, Transport

from .conftest import AUTHS, IMPLS, RELAY_PORTS, Auth, TurnSite, TurnSites

pytestmark = [pytest.mark.netns]

CLIENT = Path(__file__).with_name("aioice_turn_client.py")


def aioice_client(
    site: TurnSite, transport: Transport, username: str, password: str, pki: LabPki, *extra: str
) -> tuple[int, dict[str, Any]]:
    host, port = site.addr
    argv = [
        sys.executable, str(CLIENT), "--server", f"{host}:{port}", "--transport", transport,
        "--ca", str(pki.ca), "--username", username, "--password", password,
        "--peer-host", site.peer[0], *extra,
    ]  # fmt: skip
    done = site.ns.run(argv, check=False, timeout=40)
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output from {argv}:\n{done.stderr}"
    return done.returncode, json.loads(lines[-1])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("auth", AUTHS)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("impl", IMPLS)
def test_relay_round_trips(
    turn_sites: TurnSites, pki: LabPki, impl: str, transport: Transport, auth: Auth
) -> None:
    site = turn_sites.get(impl, auth)
    username, password = site.credentials(auth)
    rc, result = aioice_client(site, transport, username, password, pki, "--count", "50", "--size", "200")
    assert rc == 0, result
    relay_host, relay_port = result["relayed"]
    assert relay_host == site.server.config.host, result
    assert RELAY_PORTS[0] <= relay_port <= RELAY_PORTS[1], result
    # The peer is reached only through the relay: every datagram it saw came from the relayed address.
    assert result["peer_saw_sources"] == [f"{relay_host}:{relay_port}"], result
    assert result["received"] == result["sent"] == 50, result
    assert result["corrupted"] == [], result
    assert result["echo_senders"] == [f"{result['peer'][0]}:{result['peer'][1]}"], result
    assert result["errors"] == [], result


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("impl", IMPLS)
def test_full_size_datagrams(turn_sites: TurnSites, pki: LabPki, impl: str, transport: Transport) -> None:
    """1200-byte payloads, the largest a WebRTC stack sends (RTP + SRTP auth within a 1280 MTU)."""
    site = turn_sites.get(impl, "user")
    username, password = site.credentials("user")
    rc, result = aioice_client(site, transport, username, password, pki, "--count", "30", "--size", "1200")
    assert rc == 0, result
    assert result["received"] == 30 and result["corrupted"] == [], result


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", IMPLS)
def test_expired_rest_credentials_are_refused(turn_sites: TurnSites, pki: LabPki, impl: str) -> None:
    """draft-uberti-behave-turn-rest-00 §2.2: a username whose timestamp has passed is refused
    even though its HMAC is right."""
    site = turn_sites.get(impl, "secret")
    username, password = site.auth.rest_credentials("alice", ttl_s=-60)
    rc, result = aioice_client(site, "udp", username, password, pki, "--count", "1", "--timeout", "8")
    assert rc == 1, result
    assert "401" in result["error"] or "Unauthorized" in result["error"], result


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", IMPLS)
def test_wrong_rest_password_is_refused(turn_sites: TurnSites, pki: LabPki, impl: str) -> None:
    site = turn_sites.get(impl, "secret")
    username, _ = site.auth.rest_credentials("alice")
    rc, result = aioice_client(site, "tcp", username, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", pki, "--timeout", "8")
    assert rc == 1, result
    assert "401" in result["error"] or "Unauthorized" in result["error"], result
