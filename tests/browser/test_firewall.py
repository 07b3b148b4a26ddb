"""Two browsers behind a corporate firewall reach each other through meet443 on port 443.

    c1 10.200.71.2 ─┐
                    ├─ rt (router + nftables firewall) 10.200.73.1 ──── 10.200.73.2 srv
    c2 10.200.72.2 ─┘                                                 (meet443 serve --port 443)

The router forwards between all three links, and its firewall decides what the clients may open
(return traffic of allowed connections always passes; nothing may open a connection *to* a client):

  (a) only TCP 443                          → media over TURN TCP (or TURN TLS)
  (b) only TLS on TCP 443 (first payload    → media over TURN TLS; TURN over plain TCP is cut off
      byte 0x16, remembered per connection)
  (c) TCP 443 and UDP 443                   → media over TURN UDP
  (d) everything                            → media flows directly, client to client
  (e) a group room of four, only TLS on     → all reach the SFU through TURN TLS (the relay's
      TCP 443                                 hop to the SFU stays inside the server)

Each participant runs in the Chromium inside its own client namespace; the page, the WebSocket and
TURN all go to the one server address and port.
"""

from __future__ import annotations

import datetime
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lab.netns import Lab, Namespace
from lab.pki import LabPki

from .conftest import require_lab
from .lab_extra import (
    BrowserPool,
    FirewallPolicy,
    Meet443Web,
    Participant,
    call_failed,
    corporate_ruleset,
    default_route,
    enable_forwarding,
    ipv4_only,
    lab_prefix,
    media_flowing,
    media_growing,
    nft_counter,
    server_route_exists,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SERVER_IP = "10.200.73.2"
TABLE = "corp"
MEDIA_TIMEOUT_S = 45  # blocked transports time out in the background while the others connect

_rooms = itertools.count(1)


@dataclass
class Corp:
    lab: Lab
    c1: Namespace
    c2: Namespace
    rt: Namespace
    srv: Namespace
    client_ifaces: tuple[str, str]
    web: Meet443Web
    browsers: BrowserPool

    def apply(self, policy: FirewallPolicy) -> None:
        self.rt.load_nft(corporate_ruleset(TABLE, self.client_ifaces, policy))


@pytest.fixture(scope="module")
def corp(
    tmp_path_factory: pytest.TempPathFactory, browser_pki: LabPki, browsers: BrowserPool
) -> Iterator[Corp]:
    require_lab()
    work = tmp_path_factory.mktemp("corp-lab")
    with Lab(work, prefix=lab_prefix("f")) as lab:
        c1, c2, rt, srv = (lab.namespace(n) for n in ("c1", "c2", "rt", "srv"))
        ipv4_only(c1, c2, rt, srv)
        l1 = lab.veth(rt, "10.200.71.1/24", c1, "10.200.71.2/24")
        l2 = lab.veth(rt, "10.200.72.1/24", c2, "10.200.72.2/24")
        lab.veth(rt, "10.200.73.1/24", srv, f"{SERVER_IP}/24")
        default_route(c1, "10.200.71.1")
        default_route(c2, "10.200.72.1")
        default_route(srv, "10.200.73.1")
        enable_forwarding(rt)
        web = Meet443Web(srv, SERVER_IP, 443, browser_pki, work / "server").start()
        site = Corp(lab, c1, c2, rt, srv, (l1.a_dev, l2.a_dev), web, browsers)
        site.apply(FirewallPolicy("open", everything=True))
        try:
            if not server_route_exists(web, c1, "/v1/ws"):
                pytest.fail("the server under test has no /v1/ws (signaling is not wired into meet443 serve)")
            yield site
        finally:
            browsers.release(c1, c2)


def call(
    corp: Corp, log: list[str], tag: str, path_ok: Callable[[list[tuple[str, str | None]]], bool]
) -> tuple[list[Participant], list[dict[str, Any]]]:
    """Ann in c1 and Bob in c2 join one room; returns once media flows both ways over a path that
    `path_ok` accepts. (ICE may start on a worse pair and move to a better one moments later.)"""
    room = f"corp-{tag}-{next(_rooms)}-{int(time.time()) % 100000}"
    people = []
    for name, ns in (("Ann", corp.c1), ("Bob", corp.c2)):
        p = Participant(corp.browsers.browser(ns), name, log)
        people.append(p)
        p.open(corp.web.room_url(room, displayName=name, autojoin=1))
        p.wait_phase("in-call", 30)
    try:
        wait_until(lambda: media_flowing(people), MEDIA_TIMEOUT_S, what=f"media ({tag})")

        def on_path() -> Any:
            states = media_flowing(people)
            return states if states and path_ok(paths(states)) else False

        before = wait_until(
            on_path, 20, what=lambda: f"the expected path ({tag}); now {people_states(people)}"
        )
        after = wait_until(lambda: media_growing(people, before), 15, what=f"media still flowing ({tag})")
    except BaseException:
        for p in people:
            p.close()
        raise
    return people, after


def paths(states: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(c["candidateType"], c["relayProtocol"]) for s in states for c in s["connections"]]


def people_states(people: list[Participant]) -> Any:
    """Selected paths, and every candidate pair: why ICE chose what it chose."""
    states = [p.target.evaluate("window.meet443.state({detail: true})") for p in people]
    return [
        {p.name: [(c["candidateType"], c["relayProtocol"], c["candidatePairs"]) for c in s["connections"]]}
        for p, s in zip(people, states, strict=True)
    ]


@pytest.fixture
def session(
    corp: Corp, console_log: list[str], request: pytest.FixtureRequest
) -> Iterator[list[Participant]]:
    opened: list[Participant] = []
    yield opened
    for p in opened:
        p.close()
    if call_failed(request):
        print("\n--- server log ---\n" + corp.web.log()[-6000:])
        print("--- firewall ---\n" + corp.rt.run(["nft", "list", "table", "inet", TABLE]).stdout)
    assert corp.web.alive(), corp.web.log()[-4000:]


@pytest.mark.timeout(150)
def test_a_only_tcp_443_gives_turn_over_tcp_or_tls(
    corp: Corp, session: list[Participant], console_log: list[str]
) -> None:
    corp.apply(FirewallPolicy("tcp443"))
    people, states = call(
        corp, console_log, "tcp", lambda ps: all(k == "relay" and p in ("tcp", "tls") for k, p in ps)
    )
    session += people
    for kind, proto in paths(states):
        assert kind == "relay" and proto in ("tcp", "tls"), paths(states)


@pytest.mark.timeout(150)
def test_b_only_tls_on_443_gives_turn_over_tls(
    corp: Corp, session: list[Participant], console_log: list[str]
) -> None:
    corp.apply(FirewallPolicy("tls443", tls_only=True))
    people, states = call(corp, console_log, "tls", lambda ps: ps == [("relay", "tls")] * 2)
    session += people
    assert paths(states) == [("relay", "tls"), ("relay", "tls")], paths(states)
    # The firewall really told them apart: TURN over plain TCP was cut off, TLS records passed.
    assert nft_counter(corp.rt, TABLE, "not_tls") > 0
    assert nft_counter(corp.rt, TABLE, "tls_appdata") > 0


@pytest.mark.timeout(150)
def test_c_udp_443_too_gives_turn_over_udp(
    corp: Corp, session: list[Participant], console_log: list[str]
) -> None:
    corp.apply(FirewallPolicy("udp443", udp443=True))
    people, states = call(corp, console_log, "udp", lambda ps: ps == [("relay", "udp")] * 2)
    session += people
    assert paths(states) == [("relay", "udp"), ("relay", "udp")], paths(states)


@pytest.mark.timeout(150)
def test_c2_udp_opening_during_a_call_moves_it_to_turn_udp(
    corp: Corp, session: list[Participant], console_log: list[str]
) -> None:
    """The path upgrade: a call that had to start on a TCP/TLS relay gathers once more a few
    seconds after connecting; if UDP 443 is open by then, media moves to TURN over UDP."""
    corp.apply(FirewallPolicy("tcp443"))
    room = f"corp-upgrade-{next(_rooms)}-{int(time.time()) % 100000}"
    for name, ns in (("Ann", corp.c1), ("Bob", corp.c2)):
        p = Participant(corp.browsers.browser(ns), name, console_log)
        session.append(p)
        p.open(corp.web.room_url(room, displayName=name, autojoin=1))
        p.wait_phase("in-call", 30)

    def connected() -> bool:
        states = [p.state() for p in session]
        return all(
            s["connections"] and s["connections"][0]["iceState"] in ("connected", "completed") for s in states
        )

    wait_until(connected, MEDIA_TIMEOUT_S, interval=0.1, what="ICE connected over TCP 443")
    corp.apply(FirewallPolicy("udp443", udp443=True))  # well within the 3 s before the check

    def on_udp() -> Any:
        states = media_flowing(session)
        return states if states and paths(states) == [("relay", "udp")] * 2 else False

    states = wait_until(on_udp, 30, what=lambda: f"TURN UDP after the upgrade; now {people_states(session)}")
    assert sum(s["connections"][0]["pathUpgrades"] for s in states) >= 1, states


@pytest.mark.timeout(150)
def test_d_open_network_goes_direct(corp: Corp, session: list[Participant], console_log: list[str]) -> None:
    corp.apply(FirewallPolicy("open", everything=True))
    people, states = call(corp, console_log, "open", lambda ps: all(k != "relay" for k, _ in ps))
    session += people
    for kind, _ in paths(states):
        assert kind in ("host", "srflx", "prflx"), paths(states)


def group_meeting(corp: Corp) -> str:
    """``POST /v1/meetings`` with ``roomMode: group`` (an API key made for the purpose); its URL."""
    data = corp.web.workdir / "data"
    key = corp.srv.run([sys.executable, "-m", "meet443", "api-key", "create", "--data-dir", str(data)])
    token = key.stdout.split()[0]  # the key is the first line; the rest is advice
    end = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    code = (
        "import json, ssl, sys, urllib.request\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
        "body = json.dumps({'endDate': sys.argv[3], 'roomMode': 'group'}).encode()\n"
        "req = urllib.request.Request(sys.argv[1], body, {'Authorization': 'Bearer ' + sys.argv[4],"
        " 'Content-Type': 'application/json'})\n"
        "print(urllib.request.urlopen(req, context=ctx, timeout=10).read().decode())\n"
    )
    done = corp.srv.run(
        [sys.executable, "-c", code, corp.web.origin + "/v1/meetings", str(corp.web.pki.ca), end, token]
    )
    return str(json.loads(done.stdout)["roomUrl"])


@pytest.mark.timeout(150)
def test_e_group_room_through_turn_tls(
    corp: Corp, session: list[Participant], console_log: list[str]
) -> None:
    """Four people, two behind each client link, all through TURN TLS into the SFU."""
    corp.apply(FirewallPolicy("tls443", tls_only=True))
    url = group_meeting(corp)
    for name, ns in (("Ann", corp.c1), ("Bob", corp.c2), ("Cy", corp.c1), ("Dee", corp.c2)):
        p = Participant(corp.browsers.browser(ns), name, console_log)
        session.append(p)
        p.open(f"{url}?displayName={name}&autojoin=1")
    for p in session:
        p.wait_phase("in-call", 30)
    states = wait_until(
        lambda: media_flowing(session),
        MEDIA_TIMEOUT_S,
        what=lambda: (
            "group media through TURN TLS; pairs: "
            + json.dumps([p.target.evaluate("window.meet443.state({detail: true})")["sfu"] for p in session])
        ),
    )
    for state in states:
        assert state["mode"] == "group" and len(state["connections"]) == 3, state["connections"]
        assert paths([state]) == [("relay", "tls")] * 3, paths([state])
        assert (state["sfu"]["publishCandidateType"], state["sfu"]["publishRelayProtocol"]) == (
            "relay",
            "tls",
        )
    after = wait_until(lambda: media_growing(session, states), 15, what="group media still flowing")
    assert all(c["framesDecoded"] > 0 for s in after for c in s["connections"])
    assert nft_counter(corp.rt, TABLE, "tls_appdata") > 0
