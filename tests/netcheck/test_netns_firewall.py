"""``meet443 check`` and ``meet443 firewall-rules`` behind a real firewall, in network namespaces.

    cl 10.200.91.2 ── 10.200.91.1  rt  10.200.92.1 ── 10.200.92.2 srv
    (meet443 check)   (nftables forward policy;       (meet443 serve --port 443,
                       tinyproxy on 10.200.91.1:3128)  test CA certificate)

The router's forward chain is the client network's firewall: each policy below is loaded into it,
then ``meet443 check --json`` runs inside ``cl`` and must find the right verdict. Then the rules that
``meet443 firewall-rules`` prints (from the serve options, and from the live /v1/network) are loaded
as the forward policy instead, and must be enough for a media path and no wider than asked.

Traffic stays inside the lab: cl, rt and srv talk over their 10.200.9x.y veth addresses only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.netns import Lab, Namespace, Proc, unavailable_reason, wait_listening
from tests.lab.pki import LabPki, make_test_pki

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network-namespace tests need root"),
]

CLIENT_IP, ROUTER_CLIENT_IP = "10.200.91.2", "10.200.91.1"
ROUTER_SERVER_IP, SERVER_IP = "10.200.92.1", "10.200.92.2"
URL = f"https://{SERVER_IP}"
OTHER_UDP_PORT = 3478
RELAY_PORTS = "50000-50999"
PROXY_PORT = 3128
CLOSED_PORT = 8080  # a TCP and UDP listener in srv that no rule opens
TABLE = "meet443_out"  # the generated rules' table: loading a policy replaces the previous one
TIMEOUT = "2"
ALL_CHECKS = (
    "https",
    "wss",
    "stun",
    "sfu-udp",
    "turn-udp",
    "turn-tcp",
    "turn-tls",
    "direct-udp",
    "p2p-inbound",
)

LISTENER = """
import socket, threading
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", {port})); tcp.listen(16)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", {port}))
def echo():
    while True:
        data, source = udp.recvfrom(2048)
        udp.sendto(data, source)
threading.Thread(target=echo, daemon=True).start()
while True:
    tcp.accept()[0].close()
"""

PROBE = """
import socket, sys
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if kind == "tcp":
        socket.create_connection((host, port), timeout=1.5).close()
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
        s.sendto(b"x", (host, port)); s.recvfrom(16)
    print("open")
except OSError:
    print("blocked")
"""


@dataclass
class Site:
    lab: Lab
    cl: Namespace
    rt: Namespace
    srv: Namespace
    client_dev: str
    pki: LabPki
    server: Proc
    workdir: Path
    api_key: str

    def load(self, ruleset: str) -> None:
        self.rt.load_nft(ruleset)

    def check(self, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        prefix = ["env", *(f"{k}={v}" for k, v in (env or {}).items())] if env else []
        argv = [*prefix, sys.executable, "-m", "meet443", "check", URL, "--json", "--no-progress",
                "--ca-file", str(self.pki.ca), "--timeout", TIMEOUT, *extra]  # fmt: skip
        done = self.cl.run(argv, check=False, timeout=90)
        assert done.returncode in (0, 1), done.stdout + done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        return done.returncode, report

    def reachable(self, kind: str, port: int) -> bool:
        done = self.cl.run([sys.executable, "-c", PROBE, kind, SERVER_IP, str(port)], timeout=30)
        return done.stdout.strip() == "open"

    def firewall_rules(self, *args: str) -> str:
        done = self.srv.run([sys.executable, "-m", "meet443", "firewall-rules", *args], timeout=60)
        return done.stdout


def policy(name: str, client_dev: str) -> str:
    """The client network's firewall, as the forward policy of the router (plus its input chain)."""
    client = f'iifname "{client_dev}"'
    rules: list[str] = []
    proxy_input = ""
    if name == "open":
        rules.append("accept")
    else:
        if name == "tls443":
            # The first payload byte of a new TCP 443 connection decides, remembered in the ct mark:
            # 0x16 (a TLS handshake record) marks it TLS (1), anything else refused (2).
            rules += [
                f"{client} tcp dport 443 ct mark 2 drop",
                f"{client} tcp dport 443 ct state established ct mark 0 @ih,0,8 0x16 ct mark set 1 accept",
                f"{client} tcp dport 443 ct state established ct mark 0 @ih,0,8 != 0x16 ct mark set 2 drop",
            ]
        rules.append("ct state established,related accept")
        if name == "udp-blocked":
            rules.append(f"{client} meta l4proto tcp ct state new accept")
        if name in ("tcp443", "tls443", "tcp443+udp443"):
            rules.append(f"{client} tcp dport 443 ct state new accept")
        if name == "tcp443+udp443":
            rules.append(f"{client} udp dport 443 accept")
        if name == "proxy":
            # Nothing is forwarded; the client may talk to the proxy on the router, nothing else.
            proxy_input = f"""
  chain input {{
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    {client} tcp dport {PROXY_PORT} accept
  }}"""
    body = "\n    ".join(rules)
    return f"""
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  chain forward {{
    type filter hook forward priority 0; policy drop;
    {body}
  }}{proxy_input}
}}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(f"the namespace lab cannot run here: {reason}")
    work = tmp_path_factory.mktemp("netcheck-lab")
    with Lab(work, prefix=f"k{os.getpid() % 10000}-") as lab:
        cl, rt, srv = lab.namespace("cl"), lab.namespace("rt"), lab.namespace("srv")
        to_client = lab.veth(rt, f"{ROUTER_CLIENT_IP}/24", cl, f"{CLIENT_IP}/24")
        lab.veth(rt, f"{ROUTER_SERVER_IP}/24", srv, f"{SERVER_IP}/24")
        cl.run(["ip", "route", "replace", "default", "via", ROUTER_CLIENT_IP])
        srv.run(["ip", "route", "replace", "default", "via", ROUTER_SERVER_IP])
        rt.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        pki = make_test_pki(work / "pki", ips=(SERVER_IP,), dns=())
        data = work / "data"
        created = subprocess.run(
            [sys.executable, "-m", "meet443", "api-key", "create", "--label", "it", "--data-dir", str(data)],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        server = srv.spawn(
            [sys.executable, "-m", "meet443", "serve", *serve_options(data),
             "--cert", str(pki.cert), "--key", str(pki.key), "--check-rate", "1000"],
            name="meet443",
        )  # fmt: skip
        for proto in ("tcp", "udp"):
            wait_listening(srv, SERVER_IP, 443, proto, proc=server)
        listener = srv.spawn([sys.executable, "-c", LISTENER.format(port=CLOSED_PORT)], name="listener")
        wait_listening(srv, "0.0.0.0", CLOSED_PORT, "tcp", proc=listener)
        yield Site(lab, cl, rt, srv, to_client.a_dev, pki, server, work, created.stdout.strip())
        assert server.alive(), server.describe()


def serve_options(data: Path) -> list[str]:
    """The options firewall-rules shares with serve (the same option table)."""
    return ["--listen", SERVER_IP, "--port", "443", "--public-ip", SERVER_IP, "--relay-ports", RELAY_PORTS,
            "--other-udp-port", str(OTHER_UDP_PORT), "--data-dir", str(data)]  # fmt: skip


def oks(report: dict[str, Any]) -> set[str]:
    return {c["name"] for c in report["checks"] if c["ok"]}


def detail(report: dict[str, Any], name: str) -> str:
    return next(str(c["detail"]) for c in report["checks"] if c["name"] == name)


# name, checks that must work (all others must not), best_path, p2p_direct
POLICIES = [
    ("open", set(ALL_CHECKS), "direct-udp", True),
    ("udp-blocked", {"https", "wss", "turn-tcp", "turn-tls"}, "turn-tcp", False),
    ("tcp443", {"https", "wss", "turn-tcp", "turn-tls"}, "turn-tcp", False),
    ("tls443", {"https", "wss", "turn-tls"}, "turn-tls", False),
    (
        "tcp443+udp443",
        {"https", "wss", "stun", "sfu-udp", "turn-udp", "turn-tcp", "turn-tls"},
        "sfu-udp",
        False,
    ),
]


@pytest.mark.parametrize(("name", "working", "best", "p2p"), POLICIES, ids=[p[0] for p in POLICIES])
def test_policy(site: Site, name: str, working: set[str], best: str, p2p: bool) -> None:
    site.load(policy(name, site.client_dev))
    status, report = site.check()
    assert oks(report) == working, report
    assert (report["best_path"], report["p2p_direct"]) == (best, p2p), report
    assert status == 0
    if name == "tls443":
        # Connected, then cut off after the first (non-TLS) bytes: named as such.
        assert "was accepted, but Allocate got no answer" in detail(report, "turn-tcp")
    if name == "tcp443+udp443":
        assert "unsolicited UDP is filtered" in detail(report, "p2p-inbound")


def test_behind_an_http_connect_proxy(site: Site, tmp_path: Path) -> None:
    proxy = start_tinyproxy(site, tmp_path)
    try:
        site.load(policy("proxy", site.client_dev))
        # The proxy comes from the environment, as it would on a managed desktop.
        status, report = site.check(env={"HTTPS_PROXY": f"http://{ROUTER_CLIENT_IP}:{PROXY_PORT}"})
        assert oks(report) == {"https", "wss", "turn-tls"}, report
        assert (report["best_path"], report["p2p_direct"]) == ("turn-tls", False)
        assert status == 0
        # Without the proxy, nothing gets out at all.
        status, report = site.check()
        assert oks(report) == set() and report["best_path"] == "none" and status == 1
    finally:
        site.lab.procs.stop(proxy)


def start_tinyproxy(site: Site, tmp_path: Path) -> Proc:
    binary = "/usr/bin/tinyproxy"
    if not Path(binary).exists():
        pytest.fail("tinyproxy is missing: apt-get install tinyproxy (scripts/test.sh installs it)")
    config = tmp_path / "tinyproxy.conf"
    config.write_text(
        f"Port {PROXY_PORT}\nListen {ROUTER_CLIENT_IP}\nTimeout 60\nMaxClients 64\nLogLevel Info\n"
        f"Allow {CLIENT_IP}\nConnectPort 443\nDisableViaHeader Yes\n"
    )
    proc = site.rt.spawn([binary, "-d", "-c", str(config)], name="tinyproxy")
    wait_listening(site.rt, ROUTER_CLIENT_IP, PROXY_PORT, "tcp", proc=proc)
    return proc


class TestGeneratedRules:
    """The nftables rules of ``meet443 firewall-rules``, loaded as the router's forward policy."""

    def test_from_serve_options_and_from_v1_network_agree(self, site: Site) -> None:
        from_config = site.firewall_rules("--format", "nftables", *serve_options(site.workdir / "data"))
        from_api = site.firewall_rules(
            "--format", "nftables", "--url", URL, "--api-key", site.api_key, "--ca-file", str(site.pki.ca)
        )
        assert from_config == from_api
        assert f"ip daddr {SERVER_IP} tcp dport 443" in from_config
        refused = site.srv.run(
            [sys.executable, "-m", "meet443", "firewall-rules", "--url", URL, "--api-key", "m443_bad_key",
             "--ca-file", str(site.pki.ca)],
            check=False, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 2 and "refused the API key" in refused.stderr

    def test_default_rules_give_udp_media_and_nothing_more(self, site: Site) -> None:
        site.load(self.rules(site))
        status, report = site.check()
        assert status == 0
        assert report["best_path"] == "sfu-udp" and not report["p2p_direct"], report
        assert oks(report) == {"https", "wss", "stun", "sfu-udp", "turn-udp", "turn-tcp", "turn-tls"}
        # No wider than needed: other ports of the server stay closed.
        assert not site.reachable("tcp", CLOSED_PORT)
        assert not site.reachable("udp", CLOSED_PORT)

    def test_p2p_rules_open_direct_udp(self, site: Site) -> None:
        site.load(self.rules(site, "--p2p"))
        status, report = site.check()
        assert status == 0
        assert report["best_path"] == "direct-udp" and report["p2p_direct"], report
        assert "p2p-inbound" not in oks(report)  # still nothing unsolicited gets in
        assert site.reachable("udp", CLOSED_PORT)  # UDP 1024-65535 is what --p2p asks for
        assert not site.reachable("tcp", CLOSED_PORT)

    def test_relay_direct_rules_open_the_relay_range_only(self, site: Site) -> None:
        site.load(self.rules(site, "--relay-direct"))
        status, report = site.check()
        assert status == 0 and report["best_path"] == "sfu-udp", report
        assert "direct-udp" not in oks(report)  # the other port is outside the relay range
        assert not site.reachable("udp", CLOSED_PORT)

    def test_sanity_the_closed_port_listens(self, site: Site) -> None:
        site.load(policy("open", site.client_dev))
        assert site.reachable("tcp", CLOSED_PORT) and site.reachable("udp", CLOSED_PORT)

    @staticmethod
    def rules(site: Site, *options: str) -> str:
        return site.firewall_rules(
            "--format", "nftables", "--url", URL, "--api-key", site.api_key, "--ca-file", str(site.pki.ca),
            "--client-net", f"{CLIENT_IP.rsplit('.', 1)[0]}.0/24", *options,
        )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The same check in the browser: /check in headless Chromium inside the client namespace

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def chromium(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium running inside ``cl``, trusting the lab CA through an NSS database (no flag that
    ignores certificate errors: TURN over TLS verifies the certificate too)."""
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415
    except ImportError:
        pytest.fail("playwright is missing (pip install -e '.[test]')")
    for tool in (CHROMIUM, "/usr/bin/certutil"):
        if not Path(tool).exists():
            pytest.fail(f"{tool} is missing (apt-get install chromium libnss3-tools)")
    home = tmp_path_factory.mktemp("chromium-home")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    for argv in (
        ["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"],
        ["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "lab-ca", "-i", str(site.pki.ca)],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=30)
    wrapper = home / "chromium-in-netns.sh"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {site.cl.name} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(wrapper), args=list(CHROMIUM_FLAGS), env={**os.environ, "HOME": str(home)}
        )
        try:
            yield browser
        finally:
            browser.close()


def check_page(browser: Any, timeout_s: float = 60) -> dict[str, Any]:
    """Open /check, wait for the verdict, return ``window.meet443.state()``."""
    context = browser.new_context()
    try:
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(f"{URL}/check", wait_until="domcontentloaded")
        deadline = time.monotonic() + timeout_s
        while page.evaluate("document.body.dataset.phase") != "done":
            assert time.monotonic() < deadline, (page.evaluate("window.meet443.state()"), console)
            time.sleep(0.25)
        state: dict[str, Any] = page.evaluate("window.meet443.state()")
        return state
    finally:
        context.close()


def page_oks(state: dict[str, Any]) -> set[str]:
    return {name for name, check in state["checks"].items() if check.get("ok")}


class TestCheckPage:
    """WSS, STUN on both UDP ports, relay-only gathering per TURN transport and a relayed loopback call."""

    def test_open_network(self, site: Site, chromium: Any) -> None:
        site.load(policy("open", site.client_dev))
        state = check_page(chromium)
        assert page_oks(state) == {"https", "wss", "stun", "direct-udp", "turn-udp", "turn-tcp", "turn-tls"}
        assert (state["best_path"], state["p2p_direct"]) == ("direct-udp", True), state
        for transport in ("udp", "tcp", "tls"):
            check = state["checks"][f"turn-{transport}"]
            assert check["loss"] == 0 and check["rtt_ms"] is not None, check
            assert check["detail"].startswith(f"relayed candidate {SERVER_IP}:5"), check

    def test_only_tcp_443(self, site: Site, chromium: Any) -> None:
        site.load(policy("tcp443", site.client_dev))
        state = check_page(chromium)
        assert page_oks(state) == {"https", "wss", "turn-tcp", "turn-tls"}, state
        assert (state["best_path"], state["p2p_direct"]) == ("turn-tcp", False)
        assert any("UDP 443" in line for line in state["advice"])
