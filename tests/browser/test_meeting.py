"""Meetings in the browser, end to end: pages, media, mesh, chat, host controls, resume, TURN.

The lab (built once for the module):

    cli  10.200.61.2 ──── 10.200.61.1  srv  10.200.62.1 ──── 10.200.62.2  cli2
    (browsers)                (meet443 serve :8443,            (a second browser, whose
                               routes between the two)          network the tests break)

Every participant is a browser context (its own fake camera and microphone) in the Chromium that
runs inside ``cli``; the resume test puts one participant in ``cli2`` so that only its WebSocket
breaks. Media flows directly between the clients unless a test forces TURN.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.netns import Lab, Namespace, wait_listening
from lab.pki import LabPki

from .conftest import require_lab
from .lab_extra import (
    BrowserPool,
    Meet443Web,
    Participant,
    call_failed,
    close_people,
    default_route,
    enable_forwarding,
    ipv4_only,
    lab_prefix,
    media_flowing,
    media_growing,
    server_route_exists,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SERVER_IP, CLIENT_IP = "10.200.61.1", "10.200.61.2"
SERVER2_IP, CLIENT2_IP = "10.200.62.1", "10.200.62.2"
PORT = 8443  # not 443: the page must carry the port into its wss:// and TURN URLs
FORCED_RELAY_PORT = 8445  # a second server, started with --force-relay
EMBED_PORT = 8444  # a third-party site on another origin that embeds meetings
EMBED_ORIGIN = f"https://{SERVER_IP}:{EMBED_PORT}"
NO_MEDIA = (  # a participant without camera or microphone (as on a machine that has none)
    "navigator.mediaDevices.getUserMedia = () => "
    "Promise.reject(new DOMException('Requested device not found', 'NotFoundError'));"
)
MEDIA_TIMEOUT_S = 30

EMBEDDER = Path(__file__).with_name("embedder.py")

_rooms = itertools.count(1)


@dataclass
class Site:
    lab: Lab
    srv: Namespace
    cli: Namespace
    cli2: Namespace
    web: Meet443Web
    browsers: BrowserPool
    workdir: Path
    pki: LabPki

    def room(self, tag: str) -> str:
        return f"{tag}-{next(_rooms)}-{int(time.time()) % 100000}"


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, browser_pki: LabPki, browsers: BrowserPool
) -> Iterator[Site]:
    require_lab()
    work = tmp_path_factory.mktemp("meeting-lab")
    with Lab(work, prefix=lab_prefix("m")) as lab:
        srv, cli, cli2 = lab.namespace("srv"), lab.namespace("cli"), lab.namespace("cli2")
        ipv4_only(srv, cli, cli2)
        lab.veth(srv, f"{SERVER_IP}/24", cli, f"{CLIENT_IP}/24")
        lab.veth(srv, f"{SERVER2_IP}/24", cli2, f"{CLIENT2_IP}/24")
        default_route(cli, SERVER_IP)
        default_route(cli2, SERVER2_IP)
        enable_forwarding(srv)
        web = Meet443Web(
            srv, SERVER_IP, PORT, browser_pki, work / "server", extra=("--embed-origin", EMBED_ORIGIN)
        ).start()
        try:
            yield Site(lab, srv, cli, cli2, web, browsers, work, browser_pki)
        finally:
            browsers.release(cli, cli2)


@pytest.fixture(scope="module")
def signaling(site: Site) -> None:
    """Tests that need meetings (not just pages) need the server's WebSocket endpoint."""
    if not server_route_exists(site.web, site.cli, "/v1/ws"):
        pytest.fail("the server under test has no /v1/ws (signaling is not wired into meet443 serve)")


@pytest.fixture
def people(site: Site, console_log: list[str], request: pytest.FixtureRequest) -> Iterator[list[Participant]]:
    """Participants opened by a test; their contexts are closed after it."""
    opened: list[Participant] = []
    yield opened
    close_people(opened, call_failed(request), site.web)


def join(
    site: Site,
    people: list[Participant],
    log: list[str],
    room: str,
    name: str,
    ns: Namespace | None = None,
    web: Meet443Web | None = None,
    init_script: str | None = None,
    **params: Any,
) -> Participant:
    p = Participant(site.browsers.browser(ns or site.cli), name, log)
    people.append(p)
    if init_script:
        p.page.add_init_script(init_script)
    p.open((web or site.web).room_url(room, displayName=name, autojoin=1, **params))
    return p


# --------------------------------------------------------------------------------------------------
# Pages


@pytest.mark.timeout(90)
def test_landing_creates_a_room_and_prejoin_shows_the_camera(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    p = Participant(site.browsers.browser(site.cli), "A", console_log)
    people.append(p)
    response = p.page.goto(site.web.origin + "/", wait_until="domcontentloaded")
    assert response is not None and response.status == 200
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
    p.page.click("#create")
    p.page.wait_for_url(lambda url: url.rstrip("/") != site.web.origin, timeout=10_000)
    room = p.page.url.rsplit("/", 1)[1]
    assert room and room == room.lower(), p.page.url
    p.wait_phase("prejoin")
    # The preview plays the fake camera; both device lists are filled in.
    p.wait_js("document.getElementById('preview-video').videoWidth > 0", 15)
    assert p.page.locator("#videoinput-select option").count() >= 1
    assert p.page.locator("#audioinput-select option").count() >= 1
    assert p.page.locator("#media-error").is_hidden()
    # Typing a name enables "Join now".
    p.page.fill("#name-input", "Ada")
    assert p.page.is_enabled("#join-button")
    p.page.screenshot(path=str(site.workdir / "prejoin.png"))
    violations = [line for line in console_log if "Content Security Policy" in line]
    assert not violations, violations


@pytest.mark.timeout(60)
def test_room_key_leaves_the_address_bar_and_history(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    p = Participant(site.browsers.browser(site.cli), "A", console_log)
    people.append(p)
    p.open(site.web.room_url("key-test", displayName="Kim", roomKey="s3cret-key", relay="tcp"))
    p.wait_phase("prejoin")
    assert "roomKey" not in p.page.url and "s3cret" not in p.page.url, p.page.url
    assert "relay=tcp" in p.page.url and "displayName=Kim" in p.page.url
    assert p.page.input_value("#name-input") == "Kim"
    # The history entry was rewritten too: going away and back does not bring the key back.
    p.page.goto(site.web.origin + "/", wait_until="domcontentloaded")
    p.page.go_back(wait_until="domcontentloaded")
    assert "/key-test?" in p.page.url and "s3cret" not in p.page.url, p.page.url


@pytest.mark.timeout(60)
def test_denied_camera_is_explained_and_joining_still_possible(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    p = Participant(site.browsers.browser(site.cli), "A", console_log)
    people.append(p)
    # What Chrome does when the person (or a policy) blocks camera and microphone for the site.
    p.page.add_init_script(
        "navigator.mediaDevices.getUserMedia = () => "
        "Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
    )
    p.open(site.web.room_url("denied-test", displayName="Dee"))
    p.wait_phase("prejoin")
    p.page.wait_for_selector("#media-error:not([hidden])", timeout=10_000)
    assert "blocked" in p.page.inner_text("#media-error")
    assert p.page.is_enabled("#join-button")
    assert p.state()["local"]["error"] == "denied"


# --------------------------------------------------------------------------------------------------
# Calls


@pytest.mark.timeout(120)
def test_two_participants_see_and_hear_each_other(
    site: Site, signaling: None, people: list[Participant], console_log: list[str]
) -> None:
    room = site.room("two")
    a = join(site, people, console_log, room, "Ann")
    a.wait_phase("in-call")
    b = join(site, people, console_log, room, "Bob")
    b.wait_phase("in-call")
    before = wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="media both ways")
    after = wait_until(lambda: media_growing([a, b], before), 15, what="media still flowing")
    for s in after:
        assert [p["displayName"] for p in s["participants"]] in (["Ann", "Bob"], ["Bob", "Ann"])
        (c,) = s["connections"]
        assert c["iceState"] in ("connected", "completed"), c
        assert c["candidateType"] in ("host", "srflx", "prflx"), c  # the lab lets them talk directly
        assert c["frameWidth"] > 0, c
    # The first one in an ad-hoc room is its host.
    assert [s["host"] for s in after] == [True, False]
    a.page.wait_for_selector("#net-badge:not([hidden])", timeout=10_000)
    assert "Direct" in a.page.inner_text("#net-badge")
    a.page.screenshot(path=str(site.workdir / "call-two.png"))


@pytest.mark.timeout(120)
def test_microphone_camera_and_screen_share_reach_the_others(
    site: Site, signaling: None, people: list[Participant], console_log: list[str]
) -> None:
    room = site.room("toggles")
    a = join(site, people, console_log, room, "Ann")
    a.wait_phase("in-call")
    b = join(site, people, console_log, room, "Bob")
    b.wait_phase("in-call")
    wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="media")
    ann_id = a.state()["selfId"]
    ann_tile = b.page.locator(f"#grid .tile[data-id='{ann_id}']")

    def ann_seen_by_bob() -> dict[str, Any]:
        seen: dict[str, Any] = next(p for p in b.state()["participants"] if p["id"] == ann_id)
        return seen

    def bob_receives() -> dict[str, Any]:
        link: dict[str, Any] = b.state()["connections"][0]
        return link

    a.page.click("#ctl-mic")
    wait_until(lambda: ann_seen_by_bob()["audio"] is False, 10, what="Ann muted, as Bob sees it")
    assert ann_tile.locator(".tile-mic").is_visible()
    a.page.click("#ctl-cam")
    wait_until(lambda: ann_seen_by_bob()["video"] is False, 10, what="Ann's camera off, as Bob sees it")
    assert "video-off" in (ann_tile.get_attribute("class") or "")
    a.page.click("#ctl-cam")
    a.page.click("#ctl-mic")
    wait_until(lambda: ann_seen_by_bob()["video"] and ann_seen_by_bob()["audio"], 10, what="Ann back")
    camera_width = bob_receives()["frameWidth"]
    # Screen sharing swaps the track under the same sender (Chrome's fake screen is 960 wide).
    a.page.click("#ctl-screen")
    wait_until(lambda: ann_seen_by_bob()["screen"], 10, what="Ann sharing, as Bob sees it")
    wait_until(
        lambda: bob_receives()["frameWidth"] not in (0, camera_width), 15, what=lambda: f"{bob_receives()}"
    )
    a.page.click("#ctl-screen")
    wait_until(lambda: not ann_seen_by_bob()["screen"], 10, what="Ann stopped sharing")
    wait_until(lambda: bob_receives()["frameWidth"] == camera_width, 15, what=lambda: f"{bob_receives()}")


@pytest.mark.timeout(150)
def test_three_in_a_mesh(
    site: Site, signaling: None, people: list[Participant], console_log: list[str]
) -> None:
    room = site.room("mesh")
    trio = []
    for name in ("Ann", "Bob", "Cy"):
        trio.append(join(site, people, console_log, room, name))
        trio[-1].wait_phase("in-call")
    before = wait_until(lambda: media_flowing(trio), MEDIA_TIMEOUT_S + 15, what="media in the mesh")
    wait_until(lambda: media_growing(trio, before), 15, what="media still flowing in the mesh")
    for s in before:
        assert len(s["participants"]) == 3 and len(s["connections"]) == 2, s
    trio[0].page.screenshot(path=str(site.workdir / "call-three.png"))


@pytest.mark.timeout(90)
def test_chat(site: Site, signaling: None, people: list[Participant], console_log: list[str]) -> None:
    room = site.room("chat")
    a = join(site, people, console_log, room, "Ann")
    a.wait_phase("in-call")
    b = join(site, people, console_log, room, "Bob")
    b.wait_phase("in-call")
    a.page.click("#ctl-chat")
    a.page.fill("#chat-input", "Hello <b>Bob</b> 👋")
    a.page.press("#chat-input", "Enter")
    b.page.wait_for_selector("#unread:not([hidden])", timeout=10_000)  # Bob's chat is closed
    b.page.click("#ctl-chat")
    b.page.wait_for_selector(".chat-message .chat-text >> text=Hello <b>Bob</b> 👋", timeout=10_000)
    assert b.page.locator(".chat-message b").count() == 0  # text, never HTML
    b.page.fill("#chat-input", "Hi Ann")
    b.page.click("#chat-send")
    a.page.wait_for_selector(".chat-message .chat-text >> text=Hi Ann", timeout=10_000)

    def both_see_two() -> Any:
        chats = [[(m["displayName"], m["text"], m["pending"]) for m in p.state()["chat"]] for p in (a, b)]
        return chats if all(len(c) == 2 for c in chats) else False

    chats = wait_until(both_see_two, 10, what="two chat messages on both sides")
    expected = [("Ann", "Hello <b>Bob</b> 👋", False), ("Bob", "Hi Ann", False)]
    assert chats == [expected, expected]
    # A late joiner gets the history.
    c = join(site, people, console_log, room, "Cy")
    c.wait_phase("in-call")
    wait_until(lambda: len(c.state()["chat"]) == 2, 10, what="chat history for a late joiner")


@pytest.mark.timeout(120)
def test_lock_and_knock(
    site: Site, signaling: None, people: list[Participant], console_log: list[str]
) -> None:
    room = site.room("lock")
    host = join(site, people, console_log, room, "Hana")
    host.wait_phase("in-call")
    host.page.click("#ctl-people")
    host.page.check("#lock-toggle")
    host.page.wait_for_selector("#lock-badge:not([hidden])", timeout=10_000)
    assert host.state()["room"]["locked"] is True

    guest = join(site, people, console_log, room, "Gus")
    guest.wait_phase("knocking")
    assert "locked" in guest.page.inner_text("#status-text")
    host.page.wait_for_selector("#knock-list button[data-action=admit]", timeout=10_000)
    assert "Gus" in host.page.inner_text("#knock-list")
    host.page.click("#knock-list button[data-action=admit]")
    guest.wait_phase("in-call")

    intruder = join(site, people, console_log, room, "Ivy")
    intruder.wait_phase("knocking")
    host.page.wait_for_selector("#knock-list button[data-action=reject]", timeout=10_000)
    host.page.click("#knock-list button[data-action=reject]")
    intruder.wait_phase("rejected")
    names = sorted(p["displayName"] for p in host.state()["participants"])
    assert names == ["Gus", "Hana"]
    wait_until(lambda: media_flowing([host, guest]), MEDIA_TIMEOUT_S, what="media after admission")


@pytest.mark.timeout(90)
def test_host_kicks_and_ends(
    site: Site, signaling: None, people: list[Participant], console_log: list[str]
) -> None:
    room = site.room("kick")
    host = join(site, people, console_log, room, "Hana")
    host.wait_phase("in-call")
    bob = join(site, people, console_log, room, "Bob")
    bob.wait_phase("in-call")
    cy = join(site, people, console_log, room, "Cy")
    cy.wait_phase("in-call")
    bob_id = bob.state()["selfId"]
    host.page.click("#ctl-people")
    row = host.page.locator(f"#people-list li[data-id='{bob_id}']")
    row.locator("button[data-action=mute]").first.click()  # mute him first
    wait_until(lambda: bob.state()["local"]["audio"] is False, 10, what="Bob muted by the host")
    row.locator("button[data-action=kick]").click()
    bob.wait_phase("kicked")
    assert "removed" in bob.page.inner_text("#status-title")
    wait_until(
        lambda: bob_id not in {p["id"] for p in host.state()["participants"]},
        10,
        what="Bob gone from the host's list",
    )
    # End for all takes two clicks (no modal dialog).
    host.page.click("#end-all")
    host.page.click("#end-all")
    cy.wait_phase("ended")
    host.wait_phase("ended")
    assert "ended" in cy.page.inner_text("#status-title")


@pytest.mark.timeout(120)
def test_websocket_dropped_and_restored_resumes(
    site: Site, signaling: None, people: list[Participant], console_log: list[str]
) -> None:
    room = site.room("resume")
    a = join(site, people, console_log, room, "Ann")
    a.wait_phase("in-call")
    b = join(site, people, console_log, room, "Bob", ns=site.cli2)
    b.wait_phase("in-call")
    wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="media before the drop")
    a_id, b_id = a.state()["selfId"], b.state()["selfId"]

    # Bob's network refuses the server's TCP port: his socket is reset the next time he sends,
    # and every reconnection attempt is refused until the rule goes.
    block = f"""
table inet drop_ws {{
  chain out {{
    type filter hook output priority 0;
    ip daddr {site.web.host} tcp dport {site.web.port} reject with tcp reset
  }}
}}
"""
    site.cli2.load_nft(block)
    try:
        b.page.click("#ctl-chat")
        b.page.fill("#chat-input", "typed while offline")
        b.page.press("#chat-input", "Enter")
        b.page.wait_for_selector("#banner:not([hidden])", timeout=15_000)
        assert "Reconnecting" in b.page.inner_text("#banner")
        assert b.state()["signaling"] == "reconnecting"
        time.sleep(3)  # a few refused attempts
    finally:
        site.cli2.run(["nft", "delete", "table", "inet", "drop_ws"])

    b.page.wait_for_selector("#banner", state="hidden", timeout=20_000)
    sb = b.state()
    assert sb["signaling"] == "open" and sb["selfId"] == b_id, sb
    sa = a.state()
    assert sa["selfId"] == a_id
    assert [p["id"] for p in sa["participants"]] == [a_id, b_id], sa["participants"]

    # The message typed during the outage arrives once; the call never stopped.
    def delivered() -> Any:
        texts = [m["text"] for m in a.state()["chat"]]
        return texts if texts == ["typed while offline"] else False

    wait_until(delivered, 10, what="the offline chat message, once")
    before = wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="media after resume")
    wait_until(lambda: media_growing([a, b], before), 15, what="media growing after resume")


@pytest.mark.timeout(150)
def test_ice_restarts_when_the_media_path_breaks(
    site: Site, signaling: None, people: list[Participant], console_log: list[str]
) -> None:
    # Relay over UDP only: no TCP path for ICE to fall back to on its own.
    room = site.room("restart")
    a = join(site, people, console_log, room, "Ann", relay="udp")
    a.wait_phase("in-call")
    b = join(site, people, console_log, room, "Bob", ns=site.cli2, relay="udp")  # impolite: restarts
    b.wait_phase("in-call")
    wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="media before the break")

    def bob_link() -> dict[str, Any]:
        link: dict[str, Any] = b.state()["connections"][0]
        return link

    assert bob_link()["polite"] is False and bob_link()["iceRestarts"] == 0
    cut = """
table inet cut_media {
  chain out { type filter hook output priority 0; meta l4proto udp drop; }
  chain in { type filter hook input priority 0; meta l4proto udp drop; }
}
"""
    site.cli2.load_nft(cut)  # signaling (TCP) stays up; media (UDP) is gone
    try:
        wait_until(lambda: bob_link()["iceRestarts"] >= 1, 30, what=lambda: f"an ICE restart: {bob_link()}")
    finally:
        site.cli2.run(["nft", "delete", "table", "inet", "cut_media"])
    before = wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="media after the restart")
    wait_until(lambda: media_growing([a, b], before), 15, what="media growing after the restart")
    assert bob_link()["iceState"] in ("connected", "completed")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("relay", ["udp", "tcp", "tls"])
def test_forced_relay_uses_that_turn_transport(
    site: Site, signaling: None, people: list[Participant], console_log: list[str], relay: str
) -> None:
    room = site.room(f"relay-{relay}")
    a = join(site, people, console_log, room, "Ann", relay=relay)
    a.wait_phase("in-call")
    b = join(site, people, console_log, room, "Bob", relay=relay)
    b.wait_phase("in-call")
    states = wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what=f"media over TURN {relay}")
    for s in states:
        (c,) = s["connections"]
        assert c["candidateType"] == "relay", c
        assert c["relayProtocol"] == relay, c
    a.page.wait_for_selector("#net-badge:not([hidden])", timeout=10_000)
    wait_until(lambda: f"TURN {relay.upper()}" in a.page.inner_text("#net-badge"), 10, what="the TURN badge")


@pytest.mark.timeout(120)
def test_server_forced_relay_is_honoured(
    site: Site, signaling: None, people: list[Participant], console_log: list[str]
) -> None:
    forced = Meet443Web(
        site.srv,
        SERVER_IP,
        FORCED_RELAY_PORT,
        site.pki,
        site.workdir / "server-forced",
        relay_ports=(51000, 51999),
        extra=("--force-relay",),
    ).start()
    room = site.room("forced")
    a = join(site, people, console_log, room, "Ann", web=forced)
    a.wait_phase("in-call")
    b = join(site, people, console_log, room, "Bob", web=forced)
    b.wait_phase("in-call")
    states = wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="media, forced through TURN")
    for s in states:
        (c,) = s["connections"]
        assert c["candidateType"] == "relay" and c["relayProtocol"] in ("udp", "tcp", "tls"), c


@pytest.mark.timeout(90)
def test_fifth_participant_finds_the_room_full(
    site: Site, signaling: None, people: list[Participant], console_log: list[str]
) -> None:
    room = site.room("full")
    for name in ("P1", "P2", "P3", "P4"):
        join(site, people, console_log, room, name, init_script=NO_MEDIA).wait_phase("in-call")
    fifth = join(site, people, console_log, room, "P5")  # with a camera: it must go off
    s = fifth.wait_phase("failed")
    assert s["failure"]["code"] == "room-full", s
    assert s["local"]["videoTrack"] is None and s["local"]["audioTrack"] is None, s["local"]
    assert "full" in fifth.page.inner_text("#status-title")
    assert fifth.page.get_attribute("#status-check a", "href") == "/check"
    assert fifth.page.is_visible("#status-check")
    status, _, _ = site.web.get("/check", site.cli)  # the page the link leads to
    assert status == 200


@pytest.mark.timeout(120)
def test_works_inside_an_iframe(
    site: Site, signaling: None, people: list[Participant], console_log: list[str]
) -> None:
    room = site.room("embed")
    src = site.web.room_url(room, displayName="Emma", autojoin=1)
    embedder = site.srv.spawn(
        [sys.executable, str(EMBEDDER), SERVER_IP, str(EMBED_PORT), site.pki.cert, site.pki.key, src],
        name="embedder",
    )
    wait_listening(site.srv, SERVER_IP, EMBED_PORT, "tcp", proc=embedder)
    try:
        emma = Participant(site.browsers.browser(site.cli), "Emma", console_log)
        people.append(emma)
        emma.open_embedded(EMBED_ORIGIN + "/", f"/{room}")
        emma.wait_phase("in-call")
        assert emma.state()["roomName"] == room
        bob = join(site, people, console_log, room, "Bob")
        bob.wait_phase("in-call")
        wait_until(lambda: media_flowing([emma, bob]), MEDIA_TIMEOUT_S, what="media to and from the iframe")
        emma.page.screenshot(path=str(site.workdir / "embedded.png"))
    finally:
        site.lab.procs.stop(embedder)
