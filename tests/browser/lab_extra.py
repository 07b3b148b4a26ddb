"""What browser tests add to the namespace lab (tests/lab): Chromium inside a namespace, a trusted
test CA, `meet443 serve` as the server under test, and the "corporate firewall" rulesets.

- Chromium runs through a tiny wrapper (``ip netns exec NS /usr/bin/chromium "$@"``) that Playwright
  starts as its ``executable_path``: Playwright talks to it over a pipe, and every packet the browser
  sends leaves from inside the namespace.
- HTTPS, WSS and ``turns:`` are verified against the lab CA, which Chromium trusts through an NSS
  database in ``$HOME/.pki/nssdb`` (certutil). No certificate-ignoring flags.
- A `Meet443Web` is one ``python -m meet443 serve`` in a namespace; its URL uses an IP address that
  is in the certificate's subjectAltName.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.netns import (
    Lab,
    LabError,
    Namespace,
    Proc,
    default_route,
    enable_forwarding,
    hosts_file,
    ipv4_only,
    wait_listening,
)
from lab.pki import LabPki

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # reported by browser_tools_missing(); the tests then skip
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Remote audio plays without a click; the page's "turn on sound" button is for real people.
    "--autoplay-policy=no-user-gesture-required",
    # Several participants share one browser; hidden pages must keep their timers and media going.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
)
FIREFOX = "/usr/bin/firefox-esr"
FIREFOX_DRIVER = Path(__file__).with_name("firefox") / "driver.mjs"
NETNS_ENV = "MEET443_CHROMIUM_NETNS"
WRAPPER = f"""#!/bin/sh
# Playwright starts this instead of Chromium: the browser runs inside the lab namespace ${NETNS_ENV}.
exec ip netns exec "${NETNS_ENV}" {CHROMIUM} "$@"
"""


def browser_tools_missing() -> str | None:
    """Why browser tests cannot run here, or None."""
    missing = [tool for tool in (CHROMIUM, "certutil", "openssl") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install chromium libnss3-tools openssl)"
    if sync_playwright is None:
        return "playwright is not installed (pip install playwright; Debian's chromium is used)"
    return None


def firefox_tools_missing() -> str | None:
    """Why the Firefox tests cannot run here, or None."""
    if shutil.which(FIREFOX) is None or shutil.which("node") is None:
        return f"missing {FIREFOX} or node (apt-get install firefox-esr nodejs)"
    if not (FIREFOX_DRIVER.parent / "node_modules" / "puppeteer-core").is_dir():
        return f"puppeteer-core is not installed: cd {FIREFOX_DRIVER.parent} && npm ci (scripts/test.sh does)"
    return None


def chromium_wrapper(directory: Path) -> Path:
    path = directory / "chromium-netns.sh"
    path.write_text(WRAPPER)
    path.chmod(0o755)
    return path


def nss_home(pki: LabPki, directory: Path) -> Path:
    """A $HOME whose NSS database trusts the lab CA for TLS servers (what Chromium on Linux reads)."""
    trust_lab_ca(directory / ".pki" / "nssdb", pki)
    return directory


def trust_lab_ca(nssdb: Path, pki: LabPki) -> None:
    """A new NSS database in `nssdb` (Chromium's ~/.pki/nssdb, or a Firefox profile) that trusts
    the lab CA to identify TLS servers."""
    nssdb.mkdir(parents=True, exist_ok=True)
    db = f"sql:{nssdb}"
    for argv in (
        ["certutil", "-d", db, "-N", "--empty-password"],
        ["certutil", "-d", db, "-A", "-t", "C,,", "-n", "meet443-lab-ca", "-i", str(pki.ca)],
    ):
        subprocess.run(argv, check=True, capture_output=True, timeout=30)


# --------------------------------------------------------------------------------------------------
# The server under test


@dataclass
class Meet443Web:
    """``meet443 serve`` on ``host:port`` (TCP and UDP) inside `ns`, with the lab certificate."""

    ns: Namespace
    host: str
    port: int
    pki: LabPki
    workdir: Path
    relay_ports: tuple[int, int] = (50000, 50999)
    extra: Sequence[str] = ()
    #: A host name for the public URL (and so the TURN URIs) instead of the address; the clients
    #: resolve it through their namespace's hosts file (`hosts_file`).
    name: str | None = None
    proc: Proc | None = field(default=None, init=False)

    @property
    def origin(self) -> str:
        return f"https://{self.name or self.host}" + ("" if self.port == 443 else f":{self.port}")

    def argv(self) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        return [
            sys.executable, "-m", "meet443", "serve",
            "--listen", self.host, "--port", str(self.port),
            "--public-ip", self.host, "--public-url", self.origin,
            "--relay-ports", f"{self.relay_ports[0]}-{self.relay_ports[1]}",
            "--cert", str(self.pki.cert), "--key", str(self.pki.key),
            "--data-dir", str(data), "--log-level", "info",
            # Every browser of a test comes from one client address; the default 10 joins a
            # minute per address would refuse the later tests of a module.
            "--joins-per-minute", "600",
            *self.extra,
        ]  # fmt: skip

    def start(self, timeout: float = 20.0) -> Meet443Web:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = self.ns.spawn(self.argv(), name=f"meet443-{self.port}")
        for proto in ("tcp", "udp"):
            wait_listening(self.ns, self.host, self.port, proto, timeout=timeout, proc=self.proc)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def log(self) -> str:
        return self.proc.log_text() if self.proc is not None else ""

    def room_url(self, room: str, **params: str | int) -> str:
        query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
        return f"{self.origin}/{room}" + (f"?{query}" if query else "")

    def get(self, path: str, via: Namespace, timeout: float = 10.0) -> tuple[int, dict[str, str], str]:
        """An HTTPS GET from inside `via`, verified against the lab CA: (status, headers, body)."""
        code = (
            "import json, ssl, sys, urllib.request, urllib.error\n"
            "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
            "try:\n"
            "    r = urllib.request.urlopen(sys.argv[1], context=ctx, timeout=float(sys.argv[3]))\n"
            "    status, headers, body = r.status, dict(r.headers), r.read().decode('utf-8', 'replace')\n"
            "except urllib.error.HTTPError as e:\n"
            "    status, headers, body = e.code, dict(e.headers), e.read().decode('utf-8', 'replace')\n"
            "print(json.dumps([status, headers, body]))\n"
        )
        done = via.run(
            [sys.executable, "-c", code, self.origin + path, str(self.pki.ca), str(timeout)],
            timeout=timeout + 5,
        )
        status, headers, body = json.loads(done.stdout)
        return status, headers, body


def create_meeting(web: Meet443Web, room_mode: str) -> str:
    """``POST /v1/meetings`` (with an API key made for the purpose) from the server's namespace;
    the meeting's ``roomUrl``."""
    data = web.workdir / "data"
    key = web.ns.run([sys.executable, "-m", "meet443", "api-key", "create", "--data-dir", str(data)])
    token = key.stdout.split()[0]  # the key is the first line; the rest is advice
    code = (
        "import json, ssl, sys, urllib.request\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
        "body = json.dumps({'endDate': sys.argv[5], 'roomMode': sys.argv[3]}).encode()\n"
        "req = urllib.request.Request(sys.argv[1], body, {'Authorization': 'Bearer ' + sys.argv[4],"
        " 'Content-Type': 'application/json'})\n"
        "print(urllib.request.urlopen(req, context=ctx, timeout=10).read().decode())\n"
    )
    url = f"https://{web.host}" + ("" if web.port == 443 else f":{web.port}") + "/v1/meetings"
    end = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = web.ns.run([sys.executable, "-c", code, url, str(web.pki.ca), room_mode, token, end])
    return str(json.loads(done.stdout)["roomUrl"])


def server_route_exists(web: Meet443Web, via: Namespace, path: str = "/v1/ws") -> bool:
    """Whether the server answers `path` at all (a plain GET of a WebSocket endpoint is 400/426)."""
    try:
        status, _, _ = web.get(path, via)
    except (LabError, subprocess.SubprocessError, json.JSONDecodeError):
        return False
    return status != 404


# --------------------------------------------------------------------------------------------------
# Routers and firewalls


@dataclass(frozen=True)
class FirewallPolicy:
    """What the corporate firewall lets clients open towards the outside."""

    name: str
    tcp443: bool = True  # any TCP to port 443
    tls_only: bool = False  # ...but only if it speaks TLS (first payload byte 0x16)
    udp443: bool = False
    everything: bool = False


def corporate_ruleset(table: str, client_ifaces: Sequence[str], policy: FirewallPolicy) -> str:
    """nftables for the router's forward hook.

    TLS-only is stateful: conntrack remembers per connection (ct mark) what its first payload byte
    from the client was. ``@ih,0,8`` is the first byte after the TCP header (nft's "inner header"
    base, which honours the TCP data offset); a packet without payload cannot be loaded there, so
    the SYN and bare ACKs pass that rule untouched. 0x16 (a TLS handshake record) marks the
    connection TLS (1); any other first byte — TURN over TCP starts with 0x00 or 0x01 — marks it
    refused (2) and every later packet of it is dropped. Later segments need not start at a TLS
    record boundary, so they are not checked byte by byte; those that start with 0x17 (application
    data) are counted, which shows the relay really carried TLS records.
    """
    clients = "{ " + ", ".join(f'"{i}"' for i in client_ifaces) + " }"
    rules: list[str] = []
    if policy.everything:
        rules.append("accept")
    else:
        if policy.tls_only:
            rules += [
                f"iifname {clients} tcp dport 443 ct mark 2 counter name not_tls drop",
                f"iifname {clients} tcp dport 443 ct state established ct mark 0 @ih,0,8 0x16 "
                "ct mark set 1 counter name tls_hello accept",
                f"iifname {clients} tcp dport 443 ct state established ct mark 0 @ih,0,8 != 0x16 "
                "ct mark set 2 counter name not_tls drop",
                f"iifname {clients} tcp dport 443 ct mark 1 @ih,0,8 0x17 counter name tls_appdata accept",
            ]
        rules.append("ct state established,related accept")
        if policy.tcp443:
            rules.append(f"iifname {clients} tcp dport 443 ct state new accept")
        if policy.udp443:
            rules.append(f"iifname {clients} udp dport 443 accept")
        rules.append("counter name dropped drop")
    body = "\n    ".join(rules)
    return f"""
table inet {table}
delete table inet {table}
table inet {table} {{
  counter not_tls {{ }}
  counter tls_hello {{ }}
  counter tls_appdata {{ }}
  counter dropped {{ }}
  chain forward {{
    type filter hook forward priority 0; policy drop;
    {body}
  }}
}}
"""


def nft_counter(ns: Namespace, table: str, name: str) -> int:
    out = ns.run(["nft", "-j", "list", "counter", "inet", table, name]).stdout
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    raise LabError(f"no counter {name} in {table}")


def prometheus(ns: Namespace, address: str) -> dict[str, float]:
    """A server's Prometheus counters at ``address`` (its ``--metrics-listen``, reachable only inside
    ``ns``): ``name{labels}`` -> value."""
    code = (
        "import sys, urllib.request\nprint(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())\n"
    )
    text = ns.run([sys.executable, "-c", code, f"http://{address}/metrics"]).stdout
    values = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z0-9_]+(?:\{[^}]*\})?) ([0-9.eE+-]+)$", line)
        if m:
            values[m[1]] = float(m[2])
    return values


# --------------------------------------------------------------------------------------------------
# Browsers


class BrowserPool:
    """One Playwright driver; at most one Chromium per namespace, launched on first use, reused."""

    def __init__(self, workdir: Path, home: Path) -> None:
        assert sync_playwright is not None
        self.wrapper = chromium_wrapper(workdir)
        self.home = home
        self._pw_cm = sync_playwright()
        self.pw = self._pw_cm.start()
        self.browsers: dict[str, Any] = {}

    def browser(self, ns: Namespace) -> Any:
        if ns.name not in self.browsers or not self.browsers[ns.name].is_connected():
            env = {**os.environ, NETNS_ENV: ns.name, "HOME": str(self.home)}
            self.browsers[ns.name] = self.pw.chromium.launch(
                executable_path=str(self.wrapper), args=list(CHROMIUM_FLAGS), env=env, timeout=60_000
            )
        return self.browsers[ns.name]

    def release(self, *namespaces: Namespace) -> None:
        """Close the browsers running in `namespaces` (before the lab deletes them)."""
        for ns in namespaces:
            browser = self.browsers.pop(ns.name, None)
            if browser is not None:
                with contextlib.suppress(Exception):
                    browser.close()

    def close(self) -> None:
        for browser in self.browsers.values():
            with contextlib.suppress(Exception):
                browser.close()
        self.browsers.clear()
        self._pw_cm.__exit__(None, None, None)


class Participant:
    """One person in a meeting: a browser context (own fake camera and microphone) and its page."""

    def __init__(self, browser: Any, name: str, log: list[str], **context: Any) -> None:
        """`context`: Playwright context options beyond the 960x600 desktop default (a phone's
        viewport, is_mobile, has_touch)."""
        self.name = name
        options = {"viewport": {"width": 960, "height": 600}, "ignore_https_errors": False, **context}
        self.context = browser.new_context(**options)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.page.on("console", lambda m: log.append(f"[{name}] {m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: log.append(f"[{name}] pageerror: {e}"))
        self.target: Any = self.page  # the meeting's page, or its frame when embedded

    def open(self, url: str) -> Participant:
        self.page.goto(url, wait_until="domcontentloaded", timeout=20_000)
        self.target = self.page
        return self

    def open_embedded(self, url: str, frame_url_part: str) -> Participant:
        """Open a page that embeds the meeting in an iframe; drive the meeting inside the frame."""
        self.page.goto(url, wait_until="load", timeout=20_000)
        deadline = time.monotonic() + 15
        while (frame := next((f for f in self.page.frames if frame_url_part in f.url), None)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no iframe showing {frame_url_part}: {self.page.frames}")
            # A Playwright call, not time.sleep: the sync API takes in events (frame navigations)
            # only while it is called.
            self.page.wait_for_timeout(200)
        self.target = frame
        return self

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.target.evaluate("window.meet443.state()")
        return result

    def wait_js(self, expression: str, timeout_s: float = 20, what: str | None = None) -> Any:
        """Poll `expression` until truthy. (Playwright's wait_for_function evaluates strings with
        eval(), which the page's CSP rightly forbids; page.evaluate goes through DevTools.)"""
        return wait_until(
            lambda: self.target.evaluate(expression), timeout_s, interval=0.2, what=what or expression
        )

    def phase(self) -> str | None:
        result: str | None = self.target.evaluate("document.body && document.body.dataset.phase")
        return result

    def wait_phase(self, phase: str, timeout_s: float = 20) -> dict[str, Any]:
        expression = f"window.meet443 !== undefined && document.body.dataset.phase === {json.dumps(phase)}"
        deadline = time.monotonic() + timeout_s
        while not self.target.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: not in phase {phase!r} after {timeout_s}s: {self.phase()!r}"
                )
            time.sleep(0.2)
        return self.state()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.context.close()


# --------------------------------------------------------------------------------------------------
# Firefox


class FirefoxBrowser:
    """Debian's firefox-esr inside a namespace, driven over WebDriver BiDi by ``firefox/driver.mjs``
    (puppeteer-core, installed by ``npm ci`` in scripts/test.sh; no browser download).

    The node driver itself runs inside the namespace: puppeteer reaches Firefox over a WebSocket on
    that namespace's 127.0.0.1. It reads commands as JSON lines on stdin and answers on stdout; the
    profile trusts the lab CA through its own NSS database (certutil), as a person's would after
    importing it. Closing stdin closes the browser; the process is then waited for by its PID.
    """

    def __init__(self, ns: Namespace, pki: LabPki, workdir: Path) -> None:
        self.ns = ns
        profile = workdir / f"firefox-profile-{ns.name}"
        trust_lab_ca(profile, pki)
        self.log_path = workdir / f"firefox-{ns.name}.log"
        self._stderr = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            ns.exec_argv(["node", FIREFOX_DRIVER, FIREFOX, profile]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._ids = itertools.count(1)
        self._answers: dict[int, dict[str, Any]] = {}
        self._logs: dict[str, list[str]] = {}
        self._ready = threading.Event()
        self._done = threading.Condition()
        self.version = ""
        self._reader = threading.Thread(target=self._read, name=f"firefox-{ns.name}", daemon=True)
        self._reader.start()
        if not self._ready.wait(60):
            self.close()
            raise LabError(f"firefox did not start in {ns.name}: {self.log_path.read_text()[-2000:]}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            if message.get("ready"):
                self.version = message["version"]
                self._ready.set()
            elif message.get("event") == "console":
                self._logs.get(message["page"], []).append(message["text"])
            else:
                with self._done:
                    self._answers[message["id"]] = message
                    self._done.notify_all()
        with self._done:
            self._done.notify_all()

    def call(self, op: str, timeout_s: float = 30, **args: Any) -> Any:
        """Run one driver command and return its value; a failure raises with the driver's message."""
        assert self.proc.stdin is not None
        request_id = next(self._ids)
        self.proc.stdin.write(json.dumps({"id": request_id, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout_s
        with self._done:
            while request_id not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise LabError(f"firefox {op}: no answer ({self.log_path.read_text()[-1000:]})")
                self._done.wait(left)
            answer = self._answers.pop(request_id)
        if "error" in answer:
            raise LabError(f"firefox {op}: {answer['error']}")
        return answer["value"]

    def new_page(self, name: str, log: list[str]) -> FirefoxPage:
        self._logs[name] = log
        self.call("open", page=name, width=960, height=600)
        return FirefoxPage(self, name)

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@dataclass
class FirefoxPage:
    """One page of a `FirefoxBrowser`, with the few calls of Playwright's page the tests use."""

    browser: FirefoxBrowser
    name: str

    def goto(self, url: str) -> int | None:
        status: int | None = self.browser.call("goto", page=self.name, url=url)
        return status

    def evaluate(self, expression: str) -> Any:
        """An expression evaluated in the page (BiDi's script.evaluate, which the page's CSP does
        not restrict); a promise is awaited."""
        return self.browser.call("evaluate", page=self.name, expression=expression)

    def add_init_script(self, source: str) -> None:
        self.browser.call("initScript", page=self.name, source=source)

    def screenshot(self, path: str) -> None:
        self.browser.call("screenshot", page=self.name, path=path)

    def inner_text(self, selector: str) -> str:
        text: str = self.evaluate(f"document.querySelector({json.dumps(selector)}).innerText")
        return text


class FirefoxParticipant(Participant):
    """A `Participant` in Firefox: a page in a browser context of its own (own fake media)."""

    def __init__(self, browser: FirefoxBrowser, name: str, log: list[str]) -> None:
        self.name = name
        self.page = browser.new_page(f"{name}-{next(_firefox_pages)}", log)
        self.target = self.page

    def open(self, url: str) -> Participant:
        self.page.goto(url)
        return self

    def close(self) -> None:
        with contextlib.suppress(LabError):
            self.page.browser.call("closePage", page=self.page.name)


_firefox_pages = itertools.count(1)


def send_chat(p: Participant, text: str) -> None:
    """Type `text` into the chat (opening the panel if it is closed) and send it with Enter."""
    if p.page.locator("#chat-input").is_hidden():
        p.page.click("#ctl-chat")
    p.page.fill("#chat-input", text)
    p.page.press("#chat-input", "Enter")


def close_people(opened: Sequence[Participant], failed: bool, *servers: Meet443Web) -> None:
    """After a test: close its participants' contexts, show the servers' logs if it failed, and
    fail it if a server died meanwhile."""
    for p in opened:
        p.close()
    if failed:
        for web in servers:
            print(f"\n--- server log {web.origin} ---\n" + web.log()[-6000:])
    for web in servers:
        assert web.alive(), f"{web.origin} died; its log:\n{web.log()[-4000:]}"


def call_failed(request: Any) -> bool:
    """Whether the call phase of ``request``'s test failed (set by conftest's report hook)."""
    report = getattr(request.node, "rep_call", None)
    return report is not None and bool(report.failed)


def wait_until(
    check: Callable[[], Any], timeout_s: float, interval: float = 0.5, what: str | Callable[[], str] = "it"
) -> Any:
    """Call `check()` until it returns something truthy; fail with the last value after `timeout_s`.

    `what` names the awaited condition in the failure; a callable is asked only then (to describe
    the state at the time of failure, not at the start)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            name = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout_s}s waiting for {name}; last value: {last!r}")
        time.sleep(interval)


def media_flowing(people: Sequence[Participant], min_frames: int = 30) -> Any:
    """Every participant decodes video and receives audio from every other one.

    Returns the states when true, else False (for `wait_until`).
    """
    states = [p.state() for p in people]
    ids = {s["selfId"] for s in states}
    if None in ids or len(ids) != len(states):
        return False  # not everyone has joined (pages with no id and no peers would pass below)
    for s in states:
        peers = {c["peerId"]: c for c in s["connections"]}
        if set(peers) != ids - {s["selfId"]}:
            return False
        for c in peers.values():
            if c["framesDecoded"] < min_frames or c["audioBytesReceived"] <= 0 or c["bytesReceived"] <= 0:
                return False
    return states


def media_growing(people: Sequence[Participant], before: Sequence[dict[str, Any]]) -> Any:
    """Since `before` (states from `media_flowing`), video frames and audio bytes grew on every link."""
    after = [p.state() for p in people]
    for old, new in zip(before, after, strict=True):
        old_by_peer = {c["peerId"]: c for c in old["connections"]}
        for c in new["connections"]:
            o = old_by_peer.get(c["peerId"])
            if o is None:
                return False
            if c["framesDecoded"] <= o["framesDecoded"] or c["audioBytesReceived"] <= o["audioBytesReceived"]:
                return False
    return after


#: Phone and tablet sizes (issue 13); the phones as Playwright emulates them (mobile viewport, touch).
SCREENS: dict[str, dict[str, Any]] = {
    "360x640": {"viewport": {"width": 360, "height": 640}, "is_mobile": True, "has_touch": True},
    "390x844": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
    "768x1024": {"viewport": {"width": 768, "height": 1024}, "has_touch": True},
}

# Boxes of the visible, operable elements under `root` that stick out of the viewport (sideways
# always; also below or above with `vertical`, for screens that do not scroll), and a page that
# scrolls sideways at all.
FIT = """([root, vertical]) => {
  const doc = document.documentElement;
  const vw = doc.clientWidth, vh = doc.clientHeight;
  const bad = [];
  if (doc.scrollWidth > vw) bad.push(`page is ${doc.scrollWidth} px wide in a ${vw} px viewport`);
  if (window.innerWidth > vw) bad.push(`layout viewport ${window.innerWidth} px > ${vw} px`);
  const scope = document.querySelector(root) || document.body;
  const controls = scope.querySelectorAll(
    'button, a[href], input, select, [role=tab], h1, table, .checks tr');
  for (const el of controls) {
    if (!el.checkVisibility({ visibilityProperty: true }) || el.closest('.sr-only')) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const name = el.id || el.getAttribute('aria-label') || el.textContent.trim().slice(0, 30);
    const x = `x ${r.left.toFixed(0)}..${r.right.toFixed(0)}`;
    const y = `y ${r.top.toFixed(0)}..${r.bottom.toFixed(0)}`;
    if (r.left < -0.5 || r.right > vw + 0.5) bad.push(`${name}: ${x}`);
    if (vertical && (r.top < -0.5 || r.bottom > vh + 0.5)) bad.push(`${name}: ${y}`);
  }
  return bad;
}"""

# Tiles big enough to see a face, each name shown whole (not cut or covered) inside its tile.
TILES = """() => {
  const bad = [];
  for (const tile of document.querySelectorAll('#grid .tile')) {
    const t = tile.getBoundingClientRect();
    const name = tile.querySelector('.tile-name');
    const n = name.getBoundingClientRect();
    const label = name.textContent;
    const size = `${t.width.toFixed(0)}x${t.height.toFixed(0)}`;
    if (t.width < 120 || t.height < 90) bad.push(`${label}: tile ${size}`);
    if (name.scrollWidth > name.clientWidth) bad.push(`${label}: name cut off`);
    const inside = n.left >= t.left && n.right <= t.right && n.bottom <= t.bottom;
    if (!inside) bad.push(`${label}: name outside its tile`);
  }
  return bad;
}"""


def lab_prefix(tag: str) -> str:
    """A namespace prefix unique to this run: 'b' + tag + pid, short enough for veth names."""
    return f"b{tag}{os.getpid() % 10000}-"


__all__ = [
    "CHROMIUM_FLAGS",
    "FIT",
    "SCREENS",
    "TILES",
    "BrowserPool",
    "FirefoxBrowser",
    "FirefoxParticipant",
    "FirewallPolicy",
    "Lab",
    "Meet443Web",
    "Participant",
    "browser_tools_missing",
    "corporate_ruleset",
    "create_meeting",
    "default_route",
    "enable_forwarding",
    "firefox_tools_missing",
    "hosts_file",
    "ipv4_only",
    "lab_prefix",
    "media_flowing",
    "media_growing",
    "nft_counter",
    "nss_home",
    "send_chat",
    "server_route_exists",
    "wait_until",
]
