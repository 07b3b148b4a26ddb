"""End-to-end fixtures: TURN servers under test, each in its own network namespace.

Every server runs in a namespace that has ONLY ``lo``: whatever a regression makes it send, nothing
can leave the machine. The echo peer (``turnutils_peer``) listens on 127.0.0.2 in the same
namespace; loopback is on both servers' default deny lists, so the lab allows it explicitly
(meet443 ``--allow-peer 127.0.0.0/8``, coturn ``--allow-loopback-peers``) — except for the site
that checks the deny list itself.

Tests are parametrized by implementation with ids ``coturn`` and ``meet443``; the meet443 cases
carry the ``meet443`` marker (``-m "not meet443"`` deselects them).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:  # `lab` lives in tests/; importlib import mode does not add it
    sys.path.insert(0, str(TESTS_DIR))

from lab.netns import Lab, LabError, Namespace, unavailable_reason  # noqa: E402
from lab.pki import LabPki, make_test_pki  # noqa: E402
from lab.turnserver import IMPLEMENTATIONS, TurnAuth, TurnServerConfig, TurnServerUnderTest  # noqa: E402
from lab.turnutils import UclientCredentials, start_peer  # noqa: E402

Auth = Literal["secret", "user"]

SERVER_HOST = "127.0.0.1"
SERVER_PORT = 443
RELAY_PORTS = (49152, 49407)
PEER = ("127.0.0.2", 3480)
REALM = "meet443.test"
SECRET = "lab-rest-secret-7c1f0a"
# A pool of static users, handed out in turn. uclient leaves one allocation per session behind
# over UDP (its "probe" allocation is never deleted; it lives for uclient's 777 s lifetime), and
# meet443 limits allocations per user (default 10): a fresh user per client run keeps one test's
# leftovers from eating the next test's quota. REST usernames get a fresh name the same way.
USERS = (("u", "p"), *((f"u{i}", f"p{i}") for i in range(1, 32)))

# Counts datagrams to and from the echo peer inside a site's namespace: what the relay delivered,
# independently of what the TURN client manages to parse.
PEER_COUNTERS = f"""
table inet e2e {{
  counter to_peer {{ }}
  counter from_peer {{ }}
  chain out {{
    type filter hook output priority 0; policy accept;
    ip daddr {PEER[0]} udp dport {PEER[1]} counter name to_peer
    ip saddr {PEER[0]} udp sport {PEER[1]} counter name from_peer
  }}
}}
"""

IMPLS = [
    pytest.param("coturn", id="coturn"),
    pytest.param("meet443", id="meet443", marks=pytest.mark.meet443),
]
AUTHS = [pytest.param("secret", id="rest-secret"), pytest.param("user", id="static-user")]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "meet443: runs against meet443's own server (python -m meet443 serve)")


def require(reason: str | None) -> None:
    """Skip with `reason` — except in CI (CI=true), where these tests must run, so fail instead."""
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI must run the end-to-end tests, but: {reason}", pytrace=False)
    pytest.skip(reason)


def coturn_tools_missing() -> str | None:
    missing = [t for t in ("turnserver", "turnutils_uclient", "turnutils_peer") if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (apt-get install coturn)" if missing else None


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require(unavailable_reason())
    require(coturn_tools_missing())
    with Lab(tmp_path_factory.mktemp("lab")) as the_lab:
        yield the_lab


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class TurnSite:
    """A server under test in its own lo-only namespace, and the echo peer beside it."""

    impl: str
    ns: Namespace
    server: TurnServerUnderTest
    _runs: Iterator[int] = field(default_factory=itertools.count, repr=False)

    @property
    def addr(self) -> tuple[str, int]:
        return self.server.config.host, self.server.config.port

    @property
    def peer(self) -> tuple[str, int]:
        return PEER

    @property
    def auth(self) -> TurnAuth:
        return self.server.config.auth

    def uclient_credentials(self, auth: Auth) -> UclientCredentials:
        """Fresh credentials for one uclient run: uclient derives REST ones from the secret."""
        n = next(self._runs)
        if auth == "secret":
            assert self.auth.secret is not None
            return UclientCredentials(user=f"alice{n}", secret=self.auth.secret)
        name, password = self.auth.users[n % len(self.auth.users)]
        return UclientCredentials(user=name, password=password)

    def peer_traffic(self) -> tuple[int, int]:
        """(datagrams relayed to the peer, datagrams the peer sent back) since the site started."""

        def packets(counter: str) -> int:
            out = self.ns.run(["nft", "-j", "list", "counter", "inet", "e2e", counter]).stdout
            return next(int(i["counter"]["packets"]) for i in json.loads(out)["nftables"] if "counter" in i)

        return packets("to_peer"), packets("from_peer")

    def credentials(self, auth: Auth) -> tuple[str, str]:
        """Fresh (username, password) for a client library."""
        n = next(self._runs)
        if auth == "secret":
            return self.auth.rest_credentials(f"alice{n}")
        return self.auth.users[n % len(self.auth.users)]


class TurnSites:
    """Starts sites on first use and keeps them for the session.

    meet443 takes the REST secret and the static user at once, so one meet443 site serves both
    credential kinds; coturn 4.6 cannot, so it gets one site per kind. A site that failed to start
    fails every later test that asks for it at once, with the same message.
    """

    def __init__(self, lab: Lab, pki: LabPki, workdir: Path) -> None:
        self.lab, self.pki, self.workdir = lab, pki, workdir
        self._sites: dict[tuple[str, str, bool], TurnSite | str] = {}

    def get(self, impl: str, auth: Auth, *, allow_loopback_peers: bool = True) -> TurnSite:
        key = (impl, auth if impl == "coturn" else "both", allow_loopback_peers)
        if key not in self._sites:
            try:
                self._sites[key] = self._start(impl, key[1], allow_loopback_peers)
            except LabError as exc:
                self._sites[key] = f"{impl} site did not start: {exc}"
        site = self._sites[key]
        if isinstance(site, str):
            pytest.fail(site, pytrace=False)
        if not site.server.alive():
            assert site.server.proc is not None
            pytest.fail(f"{impl} server died: {site.server.proc.describe()}", pytrace=False)
        return site

    def _start(self, impl: str, auth: str, allow_loopback_peers: bool) -> TurnSite:
        n = len(self._sites)
        ns = self.lab.namespace(f"s{n}")
        creds = TurnAuth(
            realm=REALM,
            secret=SECRET if auth in {"secret", "both"} else None,
            users=USERS if auth in {"user", "both"} else (),
        )
        config = TurnServerConfig(
            host=SERVER_HOST,
            port=SERVER_PORT,
            relay_ports=RELAY_PORTS,
            auth=creds,
            pki=self.pki,
            workdir=self.workdir / f"site{n}-{impl}",
            allow_peers=("127.0.0.0/8",) if allow_loopback_peers else (),
        )
        server = IMPLEMENTATIONS[impl](config)
        ns.load_nft(PEER_COUNTERS)
        start_peer(ns, *PEER)
        server.start(ns)
        return TurnSite(impl=impl, ns=ns, server=server)


@pytest.fixture(scope="session")
def turn_sites(lab: Lab, pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> TurnSites:
    return TurnSites(lab, pki, tmp_path_factory.mktemp("sites"))
