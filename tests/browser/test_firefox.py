"""Firefox (Debian's firefox-esr, driven over WebDriver BiDi) in calls with Chromium, on an open
network and behind a firewall that lets only TLS on TCP 443 through.

    c1 10.200.71.2 (Chromium) ─┐                       ┌ 10.200.73.2  meet443 :443, public URL by IP
                               ├─ rt (router, nft) ────┤
    c2 10.200.72.2 (Firefox) ──┘                       └ 10.200.73.3  meet443 :443, public URL
                                                                      https://meet.lab443.test

Both servers run in ``srv``. The clients resolve ``meet.lab443.test`` through hosts files in
/etc/netns/<ns>/ that the module creates and removes. Firefox ignores ``turns:`` URIs whose host
is an IP address, so behind the TLS-only firewall it gets media through the server with a host
name, and through the other one none at all: then its page says so, and its /check names why.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.netns import Lab, Namespace
from lab.pki import LabPki

from .conftest import SERVER_NAMES, require_lab
from .lab_extra import (
    BrowserPool,
    FirefoxBrowser,
    FirefoxParticipant,
    FirewallPolicy,
    Meet443Web,
    Participant,
    call_failed,
    close_people,
    corporate_ruleset,
    create_meeting,
    default_route,
    enable_forwarding,
    firefox_tools_missing,
    hosts_file,
    ipv4_only,
    lab_prefix,
    media_flowing,
    media_growing,
    nft_counter,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

BY_IP, BY_NAME = "10.200.73.2", "10.200.73.3"
HOST_NAME = SERVER_NAMES[1]
TABLE = "corp"
MEDIA_TIMEOUT_S = 30
VP8, H264 = "video/VP8", "video/H264"

_rooms = itertools.count(1)


@dataclass
class Site:
    lab: Lab
    c1: Namespace
    c2: Namespace
    rt: Namespace
    by_ip: Meet443Web
    by_name: Meet443Web
    chromium: BrowserPool
    firefox: FirefoxBrowser
    client_ifaces: tuple[str, str]
    workdir: Path

    def apply(self, policy: FirewallPolicy) -> None:
        self.rt.load_nft(corporate_ruleset(TABLE, self.client_ifaces, policy))

    def room(self, tag: str) -> str:
        return f"ff-{tag}-{next(_rooms)}-{int(time.time()) % 100000}"


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, browser_pki: LabPki, browsers: BrowserPool
) -> Iterator[Site]:
    require_lab()
    missing = firefox_tools_missing()
    if missing is not None:
        pytest.fail(f"cannot run the Firefox tests: {missing}", pytrace=False)
    work = tmp_path_factory.mktemp("firefox-lab")
    with Lab(work, prefix=lab_prefix("x")) as lab:
        c1, c2, rt, srv = (lab.namespace(n) for n in ("c1", "c2", "rt", "srv"))
        ipv4_only(c1, c2, rt, srv)
        l1 = lab.veth(rt, "10.200.71.1/24", c1, "10.200.71.2/24")
        l2 = lab.veth(rt, "10.200.72.1/24", c2, "10.200.72.2/24")
        uplink = lab.veth(rt, "10.200.73.1/24", srv, f"{BY_IP}/24")
        srv.run(["ip", "addr", "add", f"{BY_NAME}/24", "dev", uplink.b_dev])
        default_route(c1, "10.200.71.1")
        default_route(c2, "10.200.72.1")
        default_route(srv, "10.200.73.1")
        enable_forwarding(rt)
        by_ip = Meet443Web(srv, BY_IP, 443, browser_pki, work / "by-ip", relay_ports=(50000, 50499)).start()
        by_name = Meet443Web(
            srv, BY_NAME, 443, browser_pki, work / "by-name", relay_ports=(50500, 50999), name=HOST_NAME
        ).start()
        with hosts_file(c1, {HOST_NAME: BY_NAME}), hosts_file(c2, {HOST_NAME: BY_NAME}):
            firefox = FirefoxBrowser(c2, browser_pki, work)
            site = Site(lab, c1, c2, rt, by_ip, by_name, browsers, firefox, (l1.a_dev, l2.a_dev), work)
            site.apply(FirewallPolicy("open", everything=True))
            try:
                yield site
            finally:
                firefox.close()
                browsers.release(c1)


@pytest.fixture
def people(site: Site, console_log: list[str], request: pytest.FixtureRequest) -> Iterator[list[Participant]]:
    opened: list[Participant] = []
    yield opened
    close_people(opened, call_failed(request), site.by_ip, site.by_name)


def chromium(site: Site, people: list[Participant], log: list[str], name: str) -> Participant:
    p = Participant(site.chromium.browser(site.c1), name, log)
    people.append(p)
    return p


def firefox(site: Site, people: list[Participant], log: list[str], name: str) -> Participant:
    p = FirefoxParticipant(site.firefox, name, log)
    people.append(p)
    return p


def flow(people: list[Participant]) -> str:
    """Who receives what from whom, for failure messages."""
    lines = []
    for p in people:
        s = p.state()
        links = [
            f"{c['peerId']}: {c['iceState']} {c['candidateType']}/{c['relayProtocol']} "
            f"{c['framesDecoded']} frames {c['codec']}, {c['audioBytesReceived']} B audio"
            for c in s["connections"]
        ]
        lines.append(f"{p.name} {s['selfId']} {s['phase']} problem={s['mediaProblem']} | " + "; ".join(links))
    return "\n".join(lines)


def call(people: list[Participant]) -> list[dict[str, Any]]:
    """Media flows every way, and keeps flowing."""
    for p in people:
        p.wait_phase("in-call", 30)
    before = wait_until(
        lambda: media_flowing(people), MEDIA_TIMEOUT_S, what=lambda: f"media:\n{flow(people)}"
    )
    after: list[dict[str, Any]] = wait_until(
        lambda: media_growing(people, before), 15, what=lambda: f"media still flowing:\n{flow(people)}"
    )
    for s in after:
        assert s["mediaProblem"] is None, s["mediaProblem"]
    return after


@pytest.mark.timeout(120)
@pytest.mark.parametrize("firefox_first", [False, True], ids=["chromium-first", "firefox-first"])
def test_firefox_and_chromium_peer_to_peer(
    site: Site, people: list[Participant], console_log: list[str], firefox_first: bool
) -> None:
    site.apply(FirewallPolicy("open", everything=True))
    room = site.room("p2p")
    ann = chromium(site, people, console_log, "Ann")
    fox = firefox(site, people, console_log, "Fox")
    for p in (fox, ann) if firefox_first else (ann, fox):
        p.open(site.by_name.room_url(room, displayName=p.name, autojoin=1))
        p.wait_phase("in-call", 30)
    states = call([ann, fox])
    for s in states:
        (link,) = s["connections"]
        assert s["mode"] == "normal" and link["iceState"] in ("connected", "completed"), link
        assert link["codec"] == VP8, link


@pytest.mark.timeout(120)
def test_group_room_of_two_chromium_and_one_firefox(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    """Firefox publishes three simulcast layers to the SFU; everyone decodes everyone."""
    site.apply(FirewallPolicy("open", everything=True))
    url = create_meeting(site.by_name, "group")
    three = [
        chromium(site, people, console_log, "Ann"),
        chromium(site, people, console_log, "Bob"),
        firefox(site, people, console_log, "Fox"),
    ]
    for p in three:
        p.open(f"{url}?displayName={p.name}&autojoin=1")
    states = call(three)
    fox = states[2]
    assert fox["mode"] == "group" and fox["sfu"]["publishIceState"] in ("connected", "completed"), fox["sfu"]
    layers = fox["sfu"]["layers"]
    assert sorted(x["rid"] for x in layers) == ["f", "h", "q"], layers
    sending = {x["rid"]: x for x in layers if x["framesSent"] > 0}
    assert {"q", "h"} <= set(sending), layers
    assert sending["q"]["frameWidth"] < sending["h"]["frameWidth"], layers


@pytest.mark.timeout(120)
def test_firefox_joining_an_h264_publisher_decodes_it_within_5_s(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    """Firefox (no H.264 decoder) joins a group room where Ann publishes H.264: the room falls back
    to VP8 (docs/signaling.md "Video codecs") and Firefox decodes Ann's video within 5 s of
    joining; once Firefox leaves, Ann goes back to H.264 for Bob."""
    site.apply(FirewallPolicy("open", everything=True))
    url = create_meeting(site.by_name, "group")
    ann = chromium(site, people, console_log, "Ann")
    bob = chromium(site, people, console_log, "Bob")
    for p in (ann, bob):
        p.open(f"{url}?displayName={p.name}&autojoin=1&videoCodec=h264")
    call([ann, bob])

    def ann_sends(codec: str) -> Any:
        layers = ann.state()["sfu"]["layers"]
        sending = [x for x in layers if x["framesSent"] > 0]
        return layers if sending and {x["codec"] for x in layers} == {codec} else 0

    wait_until(lambda: ann_sends(H264), 10, what="Ann publishing H.264")
    fox = firefox(site, people, console_log, "Fox")
    fox.open(f"{url}?displayName=Fox&autojoin=1")
    fox.wait_phase("in-call", 30)
    joined = time.monotonic()
    ann_id = ann.state()["selfId"]

    def fox_decodes_ann() -> Any:
        links = {c["peerId"]: c for c in fox.state()["connections"]}
        link = links.get(ann_id)
        return link if link is not None and link["framesDecoded"] > 0 else None

    link = wait_until(
        fox_decodes_ann, 5, interval=0.1, what=lambda: f"Fox decoding Ann:\n{flow([ann, bob, fox])}"
    )
    took = time.monotonic() - joined
    print(f"Firefox decoded the H.264 publisher's video {took:.1f} s after joining (as {link['codec']})")
    assert link["codec"] == VP8, link
    wait_until(lambda: ann_sends(VP8), 5, what="Ann sending VP8 while Firefox is in the room")
    fox.target.evaluate("document.getElementById('ctl-leave').click()")
    fox.wait_phase("left", 10)
    wait_until(lambda: ann_sends(H264), 15, what="Ann back on H.264 once Firefox left")
    wait_until(
        lambda: all(c["codec"] == H264 and c["framesDecoded"] > 0 for c in bob.state()["connections"]),
        10,
        what=lambda: f"Bob decoding Ann in H.264 again:\n{flow([ann, bob])}",
    )


@pytest.mark.timeout(150)
def test_firefox_behind_a_tls_only_firewall_gets_media_through_turn_tls_by_host_name(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    site.apply(FirewallPolicy("tls443", tls_only=True))
    room = site.room("tls")
    ann = chromium(site, people, console_log, "Ann")
    fox = firefox(site, people, console_log, "Fox")
    for p in (ann, fox):
        p.open(site.by_name.room_url(room, displayName=p.name, autojoin=1))
    states = call([ann, fox])
    (fox_link,) = states[1]["connections"]
    assert (fox_link["candidateType"], fox_link["relayProtocol"]) == ("relay", "tls"), fox_link
    assert nft_counter(site.rt, TABLE, "tls_appdata") > 0


@pytest.mark.timeout(150)
def test_firefox_behind_a_tls_only_firewall_with_an_ip_address_url_is_told_why(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    """The server is addressed by IP: Firefox has no relay it will use. Its page says the call
    cannot connect, within 15 s, with what to try and a link to /check; its /check names the
    cause instead of "blocked"."""
    site.apply(FirewallPolicy("tls443", tls_only=True))
    room = site.room("ip")
    ann = chromium(site, people, console_log, "Ann")
    fox = firefox(site, people, console_log, "Fox")
    for p in (ann, fox):
        p.open(site.by_ip.room_url(room, displayName=p.name, autojoin=1))
    for p in (ann, fox):
        p.wait_phase("in-call", 30)
    joined = time.monotonic()
    problem = wait_until(
        lambda: fox.state()["mediaProblem"], 20, interval=0.2, what=lambda: f"Fox told:\n{flow([ann, fox])}"
    )
    took = time.monotonic() - joined
    print(f"Firefox said the call cannot connect {took:.1f} s after joining")
    assert problem["headline"] == "Can't connect to Ann.", problem
    assert f"IP address ({BY_IP})" in problem["advice"] and "Chrome or Edge" in problem["advice"], problem
    shown = fox.target.evaluate(
        "(() => { const box = document.getElementById('media-problem');"
        " return box.hidden ? null : [box.innerText, box.querySelector('a').getAttribute('href')]; })()"
    )
    assert shown is not None and shown[1] == "/check" and "Firefox cannot use" in shown[0], shown
    tile = fox.target.evaluate("document.querySelector('#grid .tile:not(.self) .tile-state').textContent")
    assert tile == "Can't connect", tile
    fox.page.screenshot(str(site.workdir / "firefox-cannot-connect.png"))
    # Ann (Chromium) has a relay, but nothing reaches Fox: her page says so too, naming him.
    ann_problem = wait_until(lambda: ann.state()["mediaProblem"], 20, what="Ann told")
    assert ann_problem["headline"] == "Can't connect to Fox.", ann_problem
    assert "Firefox" not in ann_problem["advice"], ann_problem

    check = firefox(site, people, console_log, "Fox-check")
    check.open(site.by_ip.origin + "/check")
    result = wait_until(
        lambda: (
            check.target.evaluate("window.meet443 && window.meet443.state().phase === 'done'")
            and check.target.evaluate("window.meet443.state()")
        ),
        45,
        what="the check done",
    )
    tls = result["checks"]["turn-tls"]
    assert tls["state"] == "browser" and tls["ignoredAt"] == BY_IP, tls
    assert "not a firewall block" in tls["detail"], tls
    row = check.target.evaluate("document.querySelector('tr[data-check=\"turn-tls\"] .result').textContent")
    assert row == "not used by Firefox at an IP address", row
    assert "Firefox" in result["summary"] and result["best_path"] == "none", result
    check.page.screenshot(str(site.workdir / "firefox-check.png"))
