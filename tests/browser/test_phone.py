"""Phones, tablets and people: every page fits 360x640, 390x844 (mobile, touch) and 768x1024, passes
an axe-core audit, and the call does what people used to Google Meet or Whereby expect (speaking
indicator, level meter, raised hand, reactions, pin and full screen, links in chat, unread count,
an invite card when alone, shortcuts, the camera button after a refusal).

The lab: one server (port 8443) in ``srv``, every browser in ``cli``; media flows directly.
Fitting is measured, not eyeballed: the boxes of the page's controls against the viewport.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.netns import Lab, Namespace
from lab.pki import LabPki

from .conftest import require_lab
from .lab_extra import (
    FIT,
    SCREENS,
    TILES,
    BrowserPool,
    Meet443Web,
    Participant,
    call_failed,
    close_people,
    default_route,
    ipv4_only,
    lab_prefix,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SERVER_IP, CLIENT_IP = "10.200.61.1", "10.200.61.2"
PORT = 8443
AXE = Path(__file__).with_name("node_modules") / "axe-core" / "axe.min.js"

_rooms = itertools.count(1)


@dataclass
class Site:
    lab: Lab
    cli: Namespace
    web: Meet443Web
    browsers: BrowserPool
    workdir: Path

    def room(self, tag: str) -> str:
        return f"{tag}-{next(_rooms)}-{int(time.time()) % 100000}"


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, browser_pki: LabPki, browsers: BrowserPool
) -> Iterator[Site]:
    require_lab()
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `npm ci --prefix tests/browser` (scripts/test.sh does)")
    work = tmp_path_factory.mktemp("phone-lab")
    with Lab(work, prefix=lab_prefix("p")) as lab:
        srv, cli = lab.namespace("srv"), lab.namespace("cli")
        ipv4_only(srv, cli)
        lab.veth(srv, f"{SERVER_IP}/24", cli, f"{CLIENT_IP}/24")
        default_route(cli, SERVER_IP)
        web = Meet443Web(srv, SERVER_IP, PORT, browser_pki, work / "server").start()
        try:
            yield Site(lab, cli, web, browsers, work)
        finally:
            browsers.release(cli)


@pytest.fixture
def people(site: Site, console_log: list[str], request: pytest.FixtureRequest) -> Iterator[list[Participant]]:
    opened: list[Participant] = []
    yield opened
    close_people(opened, call_failed(request), site.web)


def person(site: Site, people: list[Participant], log: list[str], name: str, **context: Any) -> Participant:
    p = Participant(site.browsers.browser(site.cli), name, log, **context)
    people.append(p)
    return p


def join(
    site: Site, people: list[Participant], log: list[str], room: str, name: str, **context: Any
) -> Participant:
    p = person(site, people, log, name, **context)
    p.open(site.web.room_url(room, displayName=name, autojoin=1))
    p.wait_phase("in-call")
    return p


def audit(p: Participant, what: str) -> list[str]:
    """axe-core on the page as it is now: the serious and critical violations, one line each.

    Injected through DevTools (page.evaluate), which the page's CSP does not govern; a <script>
    tag with the same text would be (rightly) refused."""
    if not p.page.evaluate("typeof window.axe === 'object'"):
        p.page.evaluate(AXE.read_text())
    found = p.page.evaluate(
        """async () => {
          const r = await axe.run(document, { resultTypes: ['violations'] });
          return r.violations
            .filter((v) => v.impact === 'serious' || v.impact === 'critical')
            .map((v) => {
              const where = v.nodes.slice(0, 4).map((n) => n.target.join(' ')).join(', ');
              return `${v.id} (${v.impact}): ${where}`;
            });
        }"""
    )
    return [f"{what}: {line}" for line in found]


def fits(p: Participant, what: str, root: str = "body", *, vertical: bool = False) -> list[str]:
    return [f"{what}: {line}" for line in p.page.evaluate(FIT, [root, vertical])]


def participant(p: Participant, pid: str) -> dict[str, Any]:
    found: dict[str, Any] = next(x for x in p.state()["participants"] if x["id"] == pid)
    return found


# --------------------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_every_page_fits_phones_and_tablets_and_passes_the_audit(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    room = site.room("fit")
    # Two people on laptops are in the call already; each phone or tablet makes it three.
    bob = join(site, people, console_log, room, "Bob Andersson")
    join(site, people, console_log, room, "Cy Okafor")
    problems: list[str] = []
    for size, options in SCREENS.items():
        p = person(site, people, console_log, f"Phone {size}", **options)
        page = p.page
        page.goto(site.web.origin + "/", wait_until="load")
        problems += fits(p, f"{size} landing")
        page.goto(site.web.origin + "/check", wait_until="load")
        page.wait_for_selector("#rows tr")
        problems += fits(p, f"{size} /check")
        page.goto(site.web.origin + "/Team_Sync", wait_until="load")
        problems += fits(p, f"{size} not a room")
        p.open(site.web.room_url(room, displayName=f"Phone {size}"))
        p.wait_phase("prejoin")
        problems += fits(p, f"{size} pre-join")
        page.click("#join-button")
        p.wait_phase("in-call")
        p.wait_js("document.querySelectorAll('#grid .tile').length === 3", what="three tiles")
        problems += fits(p, f"{size} call", vertical=True)
        problems += [f"{size} call: {line}" for line in page.evaluate(TILES)]
        page.click("#ctl-more")
        page.wait_for_selector("#more-menu:not([hidden])")
        problems += fits(p, f"{size} more menu", "#more-menu", vertical=True)
        if size == "390x844":
            problems += audit(p, f"{size} call, more menu open")
        # Every control is reachable: mic, camera, chat, people, screen, hand, invite, devices, leave.
        for needed in ("ctl-mic", "ctl-cam", "ctl-chat", "ctl-leave", "copy-link", "menu-copy"):
            assert page.is_visible(f"#{needed}"), f"{size}: #{needed} is not reachable"
        for pair in (
            ("ctl-people", "menu-people"),
            ("ctl-hand", "menu-hand"),
            ("ctl-devices", "menu-devices"),
        ):
            assert any(page.is_visible(f"#{one}") for one in pair), f"{size}: neither of {pair} is visible"
        people_button = "#ctl-people" if page.is_visible("#ctl-people") else "#menu-people"
        page.click(people_button)
        page.wait_for_selector("#panel-people:not([hidden])")
        problems += fits(p, f"{size} people", "#sidebar", vertical=True)
        page.click("#sidebar-close")
        page.screenshot(path=str(site.workdir / f"call-{size}.png"))
        if size == "390x844":
            page.click("#ctl-chat")
            page.wait_for_selector("#panel-chat:not([hidden])")
            problems += fits(p, f"{size} chat", "#sidebar", vertical=True)
            problems += audit(p, f"{size} call, chat open")
            for where, url in (
                ("landing", "/"),
                ("/check", "/check"),
                ("not a room", "/caf%C3%A9"),
            ):
                page.goto(site.web.origin + url, wait_until="load")
                problems += audit(p, f"{size} {where}")
            p.open(site.web.room_url(room, displayName="Audit"))
            p.wait_phase("prejoin")
            problems += audit(p, f"{size} pre-join")
        p.close()
    problems += audit(bob, "960x600 call")
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(180)
def test_what_people_expect_in_a_call(site: Site, people: list[Participant], console_log: list[str]) -> None:
    room = site.room("expect")
    ann = join(site, people, console_log, room, "Ann")
    # Alone: the invite card offers the link.
    ann.page.wait_for_selector("#invite:not([hidden])")
    assert f"/{room}" in ann.page.inner_text("#invite-url")
    # Her own level meter moves (the fake microphone beeps).
    wait_until(lambda: ann.state()["local"]["level"] > 0.01, 10, interval=0.1, what="Ann's microphone level")
    bob = join(site, people, console_log, room, "Bob")
    ann.page.wait_for_selector("#invite", state="hidden")
    ann_id, bob_id = ann.state()["selfId"], bob.state()["selfId"]

    # Peer to peer, the page measures who speaks: Ann hears Bob's beeps and marks his tile.
    wait_until(lambda: bob_id in ann.state()["speaking"], 20, interval=0.1, what="Bob speaking, as Ann hears")
    # Muted is announced (not only drawn), and the toggle keeps its name.
    mic = bob.page.locator("#ctl-mic")
    bob.page.keyboard.press("Control+d")  # Google Meet's shortcut
    wait_until(lambda: participant(ann, bob_id)["audio"] is False, 10, what="Bob muted by Ctrl+D")
    assert mic.get_attribute("aria-pressed") == "false" and mic.get_attribute("aria-label") == "Microphone"
    assert "Ctrl+D" in (mic.get_attribute("title") or "")
    bob_tile = ann.page.locator(f"#grid .tile[data-id='{bob_id}']")
    assert "microphone off" in bob_tile.locator("figcaption").inner_text()
    bob.page.click("#ctl-mic")
    assert mic.get_attribute("aria-pressed") == "true" and mic.get_attribute("aria-label") == "Microphone"

    # Raised hand: kept, shown, announced.
    bob.page.click("#ctl-hand")
    wait_until(lambda: participant(ann, bob_id)["hand"], 10, what="Bob's hand up, as Ann sees it")
    assert bob_tile.locator(".tile-hand").is_visible()
    # A reaction floats over the sender's tile for everyone.
    bob.page.click("#ctl-more")
    bob.page.click("#more-menu .reaction[data-emoji='🎉']")
    wait_until(
        lambda: {"participantId": bob_id, "emoji": "🎉"} in ann.state()["reactions"],
        10,
        what="Bob's 🎉 at Ann",
    )
    assert bob_tile.locator(".tile-reaction").inner_text() == "🎉"

    # Pin: Bob's tile large, then back.
    ann_self = ann.page.locator(f"#grid .tile[data-id='{ann_id}']")
    bob_tile.hover()
    bob_tile.locator(".tile-pin").click()
    assert "spotlight" in (ann.page.get_attribute("#grid", "class") or "")
    big, small = bob_tile.bounding_box(), ann_self.bounding_box()
    assert big is not None and small is not None
    assert big["width"] * big["height"] > 3 * small["width"] * small["height"], (big, small)
    bob_tile.locator(".tile-pin").click()
    assert "spotlight" not in (ann.page.get_attribute("#grid", "class") or "")
    # A screen share is shown large by itself (presenter layout).
    bob.page.click("#ctl-screen")
    wait_until(
        lambda: "featured" in (bob_tile.get_attribute("class") or ""),
        10,
        what="Bob's screen share large at Ann",
    )
    bob.page.click("#ctl-screen")
    # Full screen: one tile.
    bob_tile.hover()
    bob_tile.locator(".tile-full").click()
    ann.wait_js(
        "document.fullscreenElement && document.fullscreenElement.dataset.id === " + json.dumps(bob_id),
        what="Bob's tile full screen",
    )
    ann.page.evaluate("document.exitFullscreen()")

    # Chat: links open safely in a new tab, other schemes stay text; unread is a count.
    bob.page.click("#ctl-chat")
    bob.page.fill("#chat-input", "agenda: https://example.org/agenda. not javascript:alert(1)")
    bob.page.press("#chat-input", "Enter")
    bob.page.fill("#chat-input", "<b>bold?</b>")
    bob.page.press("#chat-input", "Enter")
    ann.page.wait_for_selector("#unread:not([hidden])")
    wait_until(lambda: ann.page.inner_text("#unread") == "2", 10, what="2 unread at Ann")
    assert ann.page.inner_text("#unread-text") == "2 unread messages"
    ann.page.click("#ctl-chat")
    link = ann.page.locator("#chat-log a")
    assert link.count() == 1
    assert link.get_attribute("href") == "https://example.org/agenda"
    assert link.get_attribute("rel") == "noopener noreferrer" and link.get_attribute("target") == "_blank"
    assert ann.page.locator("#chat-log b").count() == 0
    assert "<b>bold?</b>" in ann.page.inner_text("#chat-log")
    assert ann.page.is_hidden("#unread")

    # Speakers: a choice where the browser can play to one (setSinkId) and lists outputs.
    ann.page.click("#ctl-devices")
    has_outputs = bool(ann.state()["local"]["devices"]["audiooutput"])
    assert ann.page.is_visible("#call-audiooutput-select") == has_outputs
    ann.page.screenshot(path=str(site.workdir / "expect.png"))
    # The screen after the call passes the audit too.
    ann.page.click("#ctl-leave")
    ann.wait_phase("left")
    assert audit(ann, "after leaving") == []


@pytest.mark.timeout(60)
def test_camera_button_works_after_a_refusal(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    p = person(site, people, console_log, "Dee")
    # Refused until the person allows the camera in the browser's site settings.
    p.page.add_init_script(
        "const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);"
        "window.allowCamera = false;"
        "navigator.mediaDevices.getUserMedia = (c) => window.allowCamera ? real(c) : "
        "Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));"
    )
    p.open(site.web.room_url(site.room("denied"), displayName="Dee"))
    p.wait_phase("prejoin")
    p.page.wait_for_selector("#media-error:not([hidden])")
    assert p.page.get_attribute("#pre-cam", "aria-pressed") == "false"
    p.page.evaluate("window.allowCamera = true")
    p.page.click("#pre-cam")  # once
    wait_until(lambda: p.state()["local"]["hasVideo"], 10, what="the camera on after one click")
    assert p.page.get_attribute("#pre-cam", "aria-pressed") == "true"
