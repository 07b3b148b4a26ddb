"""Two browsers reach each other through meet443 on port 443 when UDP is blocked, and when an
HTTP CONNECT proxy is the only way out.

The lab is the one of test_firewall.py (its ``corp`` fixture and ``call`` helper, built again for
this module in namespaces of its own):

    c1 10.200.71.2 ─┐
                    ├─ rt (router + nftables firewall) 10.200.73.1 ──── 10.200.73.2 srv
    c2 10.200.72.2 ─┘   tinyproxy on 10.200.71.1:3128                (meet443 serve --port 443)

  (e) all TCP allowed, all UDP dropped     → media over TURN TCP (or TURN TLS)
  (f) nothing forwarded for the clients;   → page, WebSocket and TURN TCP (or TLS) all go through
      tinyproxy on the router may CONNECT     the proxy: Chromium tunnels TCP TURN through its HTTP
      to port 443 of the server               proxy with CONNECT; UDP has no way out at all

The proxy runs in the router namespace itself, so its own connections to the server are the
router's output, which the forward chain (the clients' firewall) does not see.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.netns import Namespace, Proc, wait_listening

from . import test_firewall
from .lab_extra import CHROMIUM_FLAGS, NETNS_ENV, BrowserPool, FirewallPolicy, Participant, nft_counter
from .test_firewall import SERVER_IP, TABLE, Corp, call, paths

# test_firewall's lab and per-test clean-up, as fixtures of this module (its own lab, built anew).
corp = test_firewall.corp
session = test_firewall.session

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PROXY_IP, PROXY_PORT = "10.200.71.1", 3128  # the router's address on c1's link; c2 reaches it too
TINYPROXY = "/usr/bin/tinyproxy"


def udp_blocked_ruleset(client_ifaces: tuple[str, ...]) -> str:
    """The forward chain for "any TCP may go out, no UDP at all" (same table as test_firewall's)."""
    clients = "{ " + ", ".join(f'"{i}"' for i in client_ifaces) + " }"
    return f"""
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  counter udp_dropped {{ }}
  counter dropped {{ }}
  chain forward {{
    type filter hook forward priority 0; policy drop;
    iifname {clients} meta l4proto udp counter name udp_dropped drop
    ct state established,related accept
    iifname {clients} meta l4proto tcp ct state new accept
    counter name dropped drop
  }}
}}
"""


@pytest.mark.timeout(150)
def test_e_udp_blocked_gives_turn_over_tcp_or_tls(
    corp: Corp, session: list[Participant], console_log: list[str]
) -> None:
    corp.rt.load_nft(udp_blocked_ruleset(corp.client_ifaces))
    people, states = call(
        corp, console_log, "noudp", lambda ps: all(k == "relay" and p in ("tcp", "tls") for k, p in ps)
    )
    session += people
    for kind, proto in paths(states):
        assert kind == "relay" and proto in ("tcp", "tls"), paths(states)
    # UDP really was tried (and dropped): the TCP path is the firewall's doing, not a preference.
    assert nft_counter(corp.rt, TABLE, "udp_dropped") > 0


# --------------------------------------------------------------------------------------------------
# Behind an HTTP CONNECT proxy


class ProxiedBrowsers:
    """Like `BrowserPool.browser`, but each Chromium is told to use the HTTP proxy for everything."""

    def __init__(self, pool: BrowserPool, proxy: str) -> None:
        self.pool = pool
        self.args = [*CHROMIUM_FLAGS, f"--proxy-server={proxy}"]
        self.browsers: dict[str, Any] = {}

    def browser(self, ns: Namespace) -> Any:
        if ns.name not in self.browsers:
            env = {**os.environ, NETNS_ENV: ns.name, "HOME": str(self.pool.home)}
            self.browsers[ns.name] = self.pool.pw.chromium.launch(
                executable_path=str(self.pool.wrapper), args=self.args, env=env, timeout=60_000
            )
        return self.browsers[ns.name]

    def close(self) -> None:
        for browser in self.browsers.values():
            with contextlib.suppress(Exception):
                browser.close()
        self.browsers.clear()


def start_tinyproxy(corp: Corp, workdir: Path) -> Proc:
    if not Path(TINYPROXY).exists():
        pytest.fail("tinyproxy is missing: apt-get install tinyproxy (scripts/test.sh installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    # Only the lab server: Chromium also asks for Google hosts (autofill, accounts), which the
    # proxy refuses without even resolving their names.
    only_server = workdir / "filter"
    only_server.write_text("^" + re.escape(SERVER_IP) + "$\n")
    config = workdir / "tinyproxy.conf"
    config.write_text(
        f"Port {PROXY_PORT}\nListen {PROXY_IP}\nTimeout 600\nMaxClients 64\nLogLevel Info\n"
        "Allow 10.200.71.0/24\nAllow 10.200.72.0/24\nConnectPort 443\nDisableViaHeader Yes\n"
        f'Filter "{only_server}"\nFilterDefaultDeny Yes\nFilterExtended Yes\n'
    )
    proc = corp.rt.spawn([TINYPROXY, "-d", "-c", str(config)], name="tinyproxy")
    wait_listening(corp.rt, PROXY_IP, PROXY_PORT, "tcp", proc=proc)
    return proc


@pytest.fixture
def proxied(corp: Corp, tmp_path: Path) -> Iterator[tuple[Corp, Proc]]:
    """`corp` whose clients may reach nothing but the proxy, and whose browsers use it."""
    proxy = start_tinyproxy(corp, tmp_path / "proxy")
    browsers = ProxiedBrowsers(corp.browsers, f"http://{PROXY_IP}:{PROXY_PORT}")
    try:
        yield dataclasses.replace(corp, browsers=browsers), proxy  # type: ignore[arg-type]
    finally:
        browsers.close()
        corp.lab.procs.stop(proxy)


@pytest.mark.timeout(150)
def test_f_http_connect_proxy_only_gives_turn_tcp_or_tls_through_it(
    proxied: tuple[Corp, Proc], session: list[Participant], console_log: list[str]
) -> None:
    site, proxy = proxied
    site.apply(FirewallPolicy("nothing", tcp443=False))  # forward: only return traffic, which is none
    people, states = call(
        site, console_log, "proxy", lambda ps: all(k == "relay" and p in ("tls", "tcp") for k, p in ps)
    )
    session += people
    for kind, proto in paths(states):
        assert kind == "relay" and proto in ("tls", "tcp"), paths(states)
    # Everything went through the proxy: the page, the WebSockets and the TURN connections are
    # CONNECT tunnels to the server's port 443 ...
    connects = re.findall(rf"CONNECT {re.escape(SERVER_IP)}:443", proxy.log_text())
    assert len(connects) >= 4, proxy.tail(60)  # at least a WebSocket and a TURN tunnel per person
    # ... and the router forwarded nothing: what the browsers tried directly (UDP, TCP) was dropped.
    assert nft_counter(site.rt, TABLE, "dropped") > 0
