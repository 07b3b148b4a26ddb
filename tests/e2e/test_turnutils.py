"""coturn's ``turnutils_uclient`` as an independent client: RFC 8656 allocations, permissions,
channels (RFC 8656 §12) and Send/Data indications (§10, §11) over UDP, TCP and TLS on one port.

Loads are paced (well under either server's capacity), so any loss is a bug, not congestion.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lab.pki import LabPki
from lab.turnutils import TRANSPORTS, Transport, UclientLoad, UclientRun, run_uclient

from .conftest import AUTHS, IMPLS, Auth, TurnSite, TurnSites

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# uclient's sessions start 1-6 s after allocating; 50 messages at 10 ms add 0.5 s; a clean run
# ends as soon as all echoes are back. 60 s is far beyond a healthy run and bounds a broken one.
UCLIENT_TIMEOUT_S = 60.0
# A rejection takes uclient well under a second (it retries a 401 up to 32 times, then exits 255).
REJECTION_TIMEOUT_S = 20.0


# uclient's TLS reader assumes one TURN frame per SSL_read, and OpenSSL returns one TLS record per
# SSL_read. Against coturn it sometimes counts TLS messages lost (seen at 4 x 100 messages/s on a
# busy machine), at times printing UCLIENT_TLS_MISREAD, while the peer echoed every one, TCP loses
# nothing and aioice over TLS loses nothing. What fits: coturn puts several frames into one record
# and uclient keeps the first and drops the rest, or misparses a record that ends mid-frame.
UCLIENT_TLS_MISREAD = "Wrong integrity in a message received from server"


@dataclass
class Exchange:
    run: UclientRun
    to_peer: int  # datagrams the relay delivered to the peer (nftables, in the site's namespace)
    from_peer: int  # the peer's echoes towards the relay


def uclient(
    site: TurnSite,
    load: UclientLoad,
    auth: Auth,
    pki: LabPki,
    *,
    password: str | None = None,
    timeout: float = UCLIENT_TIMEOUT_S,
) -> Exchange:
    creds = site.uclient_credentials(auth)
    if password is not None:
        creds = type(creds)(user=creds.user, password=password)
    to0, from0 = site.peer_traffic()
    run = run_uclient(site.ns, load.argv(site.addr, site.peer, creds, ca=pki.ca), timeout=timeout)
    to1, from1 = site.peer_traffic()
    return Exchange(run, to1 - to0, from1 - from0)


def explain(run: UclientRun) -> str:
    """The run, plus what we know about uclient quirks that explain its failure."""
    text = run.describe()
    if "channel bind: error 400" in run.output:
        text += (
            "\nhint: uclient picks random channel numbers in 0x4000-0x7FFF (RFC 5766 §11; coturn accepts"
            " that range, and so must meet443), while RFC 8656 §12 allows only 0x4000-0x4FFF."
        )
    if "-S" in run.argv and "Total lost packets 0 " not in run.output:
        text += (
            "\nhint: over TLS uclient reads one TURN frame per SSL_read (one TLS record): if the server"
            " puts several frames into one record, uclient drops all but the first"
            + (" and misparses the rest" if UCLIENT_TLS_MISREAD in run.output else "")
            + ". The relay's own delivery is checked by the peer counters; aioice's TLS test parses the"
            " stream properly."
        )
    if run.timed_out and not run.output.strip():
        text += (
            "\nhint: no answer at all. A server that rate-limits unauthenticated requests should, over"
            " TCP/TLS, answer or close the connection: uclient (like any client on a stream) waits forever."
        )
    return text


def assert_no_loss(ex: Exchange, load: UclientLoad, impl: str) -> None:
    run = ex.run
    assert not run.timed_out, f"uclient still running after {UCLIENT_TIMEOUT_S}s:\n{run.describe()}"
    assert run.returncode == 0, explain(run)
    report = run.report()
    assert report.sent == load.total_messages, run.describe()
    assert report.send_dropped == 0, run.describe()
    # Client -> relay -> peer -> relay, counted in the namespace: independent of uclient's parsing.
    assert (ex.to_peer, ex.from_peer) == (report.sent, report.sent), run.describe()
    if impl == "coturn" and load.transport == "tls":
        # The reference server relayed every message both ways (counted above); uclient's own count
        # is not reliable against it over TLS (see UCLIENT_TLS_MISREAD). meet443 gets no such pass.
        return
    assert report.errors == (), explain(run)
    assert report.received == report.sent, explain(run)
    assert report.lost == 0, explain(run)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("auth", AUTHS)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("impl", IMPLS)
def test_paced_channel_data_round_trips(
    turn_sites: TurnSites, pki: LabPki, impl: str, transport: Transport, auth: Auth
) -> None:
    """4 allocations x 50 x 120-byte ChannelData messages every 10 ms, every one echoed back."""
    site = turn_sites.get(impl, auth)
    load = UclientLoad(transport, clients=4, messages=50, size=120, interval_ms=10)
    assert_no_loss(uclient(site, load, auth, pki), load, impl)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("impl", IMPLS)
def test_full_size_datagrams(turn_sites: TurnSites, pki: LabPki, impl: str, transport: Transport) -> None:
    """1000-byte payloads, the size of a video RTP packet, over every transport."""
    site = turn_sites.get(impl, "user")
    load = UclientLoad(transport, clients=2, messages=50, size=1000, interval_ms=10)
    assert_no_loss(uclient(site, load, "user", pki), load, impl)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("impl", IMPLS)
def test_send_and_data_indications(
    turn_sites: TurnSites, pki: LabPki, impl: str, transport: Transport
) -> None:
    """RFC 8656 §10/§11: ``-s`` sends Send indications; the echoes must come back as Data indications."""
    site = turn_sites.get(impl, "user")
    load = UclientLoad(transport, clients=2, messages=30, size=120, interval_ms=10, send_indications=True)
    assert_no_loss(uclient(site, load, "user", pki), load, impl)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("impl", IMPLS)
def test_wrong_password_cannot_allocate(
    turn_sites: TurnSites, pki: LabPki, impl: str, transport: Transport
) -> None:
    site = turn_sites.get(impl, "user")
    load = UclientLoad(transport, clients=1, messages=5)
    ex = uclient(site, load, "user", pki, password="not-the-password", timeout=REJECTION_TIMEOUT_S)
    run = ex.run
    assert not run.timed_out, explain(run)
    assert run.returncode != 0, run.describe()
    assert "Cannot complete Allocation" in run.output, run.describe()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", IMPLS)
def test_loopback_peer_denied_by_default(turn_sites: TurnSites, pki: LabPki, impl: str) -> None:
    """Without an explicit allowance a relay must not reach the server's own loopback (RFC 8656
    §21.1 "Risk of Relaying to Internal Addresses"): the permission is refused with 403."""
    site = turn_sites.get(impl, "user", allow_loopback_peers=False)
    # -s: CreatePermission (§9) rather than ChannelBind, so the answer is about the peer address.
    load = UclientLoad("udp", clients=1, messages=5, send_indications=True)
    ex = uclient(site, load, "user", pki, timeout=REJECTION_TIMEOUT_S)
    run = ex.run
    assert not run.timed_out, run.describe()
    assert run.returncode != 0, run.describe()
    assert "create permission error 403" in run.output, run.describe()
    assert ex.to_peer == 0, f"{ex.to_peer} datagrams reached the denied peer"
