"""Group rooms in the browser, end to end: every participant publishes to the server's SFU and
receives the others from it (docs/signaling.md "Group rooms"), no mesh.

The lab (built once for the module):

    cli  10.200.61.2 ──── 10.200.61.1  srv
    (browsers)                (meet443 serve :8443 --default-room-mode group)

Every participant is a browser context (its own fake camera and microphone) in the Chromium that
runs inside ``cli``. Media goes to the SFU on the server's main UDP port; nothing flows between
the clients.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
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
    media_flowing,
    media_growing,
    server_route_exists,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SERVER_IP, CLIENT_IP = "10.200.61.1", "10.200.61.2"
PORT = 443  # production: browsers reach the SFU on the second UDP port (docs/signaling.md)
MEDIA_TIMEOUT_S = 30
PLAYING_REMOTE_TILES = (
    "[...document.querySelectorAll('#grid .tile:not(.self) video')].filter((v) => v.videoWidth > 0).length"
)

_rooms = itertools.count(1)


@dataclass
class Site:
    lab: Lab
    srv: Namespace
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
    work = tmp_path_factory.mktemp("group-lab")
    with Lab(work, prefix=lab_prefix("g")) as lab:
        srv, cli = lab.namespace("srv"), lab.namespace("cli")
        ipv4_only(srv, cli)
        lab.veth(srv, f"{SERVER_IP}/24", cli, f"{CLIENT_IP}/24")
        default_route(cli, SERVER_IP)
        web = Meet443Web(
            srv, SERVER_IP, PORT, browser_pki, work / "server", extra=("--default-room-mode", "group")
        ).start()
        if not server_route_exists(web, cli, "/v1/ws"):
            pytest.fail("the server under test has no /v1/ws (signaling is not wired into meet443 serve)")
        try:
            yield Site(lab, srv, cli, web, browsers, work)
        finally:
            browsers.release(cli)


@pytest.fixture
def people(site: Site, console_log: list[str], request: pytest.FixtureRequest) -> Iterator[list[Participant]]:
    """Participants opened by a test; their contexts are closed after it."""
    opened: list[Participant] = []
    yield opened
    close_people(opened, call_failed(request), site.web)


def join_all(
    site: Site,
    people: list[Participant],
    log: list[str],
    room: str,
    names: Sequence[str],
    **params: str | int,
) -> list[Participant]:
    """Open every page first, then wait: the joins overlap instead of queueing one by one.
    `params` go into each page's URL (e.g. ``videoCodec="h264"``)."""
    joined = []
    for name in names:
        p = Participant(site.browsers.browser(site.cli), name, log)
        people.append(p)
        p.open(site.web.room_url(room, displayName=name, autojoin=1, **params))
        joined.append(p)
    for p in joined:
        s = p.wait_phase("in-call")
        assert s["mode"] == "group" and s["room"]["mode"] == "group", s["room"]
    return joined


def flow(people: Sequence[Participant]) -> str:
    """What each participant receives from whom, for a failure message."""
    lines = []
    for p in people:
        s = p.state()
        sfu = s.get("sfu", {})
        links = [
            f"{c['peerId']}: {c['framesDecoded']} frames ({c['keyFramesDecoded']} key, {c['pliCount']} PLI, "
            f"{c['bytesReceived']} B) {c['frameWidth']}w {c['codec']}, {c['audioBytesReceived']} B audio"
            for c in s["connections"]
        ]
        sections = {x["mid"]: x["participantId"] for x in sfu.get("sections", [])}
        layers = {
            x["rid"]: f"{x['framesSent']}f/{x['frameWidth']}w/{x['codec']}" for x in sfu.get("layers", [])
        }
        lines.append(
            f"{p.name} {s['selfId']} pub={sfu.get('publishIceState')} sub={sfu.get('subscribeIceState')} "
            f"layers={layers} sections={sections} | " + "; ".join(links)
        )
    return "\n".join(lines)


def wait_flowing(people: Sequence[Participant], timeout_s: float = MEDIA_TIMEOUT_S) -> Any:
    """`media_flowing` for everyone; a timeout says who got what from whom."""
    return wait_until(lambda: media_flowing(people), timeout_s, what=lambda: f"media:\n{flow(people)}")


def through_the_sfu(states: Sequence[dict[str, Any]]) -> None:
    """Both connections with the SFU are up; media reaches everyone over the subscribe one."""
    for s in states:
        assert s["mode"] == "group", s
        sfu = s["sfu"]
        assert sfu["publishIceState"] in ("connected", "completed"), sfu
        assert sfu["publishCandidateType"] in ("host", "srflx", "prflx"), sfu
        assert sfu["subscribeIceState"] in ("connected", "completed"), sfu
        assert sfu["publishBytesSent"] > 0, sfu
        assert sorted(sfu["sources"].values()) == ["camera", "microphone"], sfu
        for c in s["connections"]:
            assert c["iceState"] in ("connected", "completed"), c
            # The lab routes the client straight to the server: no TURN needed.
            assert c["candidateType"] in ("host", "srflx", "prflx"), c
            assert c["frameWidth"] > 0, c


@pytest.mark.timeout(90)
def test_four_in_a_group_room_all_see_and_hear_each_other(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    four = join_all(site, people, console_log, site.room("group"), ("Ann", "Bob", "Cy", "Dee"))
    before = wait_flowing(four)
    after = wait_until(lambda: media_growing(four, before), 15, what="media still flowing")
    through_the_sfu(after)
    for s in after:
        assert len(s["participants"]) == 4 and len(s["connections"]) == 3, s
        # Without ?videoCodec= the camera goes as VP8 (the SFU's first choice).
        assert {c["codec"] for c in s["connections"]} == {"video/VP8"}, s["connections"]
    # Each tile of the others plays video; the badge shows the path to the SFU.
    page = four[0].page
    wait_until(lambda: page.evaluate(PLAYING_REMOTE_TILES) == 3, 10, what="three remote tiles playing video")
    page.wait_for_selector("#net-badge:not([hidden])", timeout=10_000)
    assert "Direct" in page.inner_text("#net-badge")
    page.screenshot(path=str(site.workdir / "group-four.png"))
    # A fifth on a phone: five tiles, none a sliver, every name whole, nothing off the screen.
    phone = Participant(site.browsers.browser(site.cli), "Eve on a phone", console_log, **SCREENS["390x844"])
    people.append(phone)
    phone.open(site.web.room_url(after[0]["roomName"], displayName="Eve on a phone", autojoin=1))
    phone.wait_phase("in-call")
    phone.wait_js("document.querySelectorAll('#grid .tile').length === 5", what="five tiles on the phone")
    assert phone.page.evaluate(TILES) == []
    assert phone.page.evaluate(FIT, ["body", True]) == []
    phone.page.screenshot(path=str(site.workdir / "group-phone.png"))


@pytest.mark.timeout(90)
def test_one_leaves_and_the_others_keep_receiving(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    four = join_all(site, people, console_log, site.room("leave"), ("Ann", "Bob", "Cy", "Dee"))
    wait_flowing(four)
    leaver, stay = four[-1], four[:-1]
    leaver_id = leaver.state()["selfId"]
    leaver.page.click("#ctl-leave")
    leaver.wait_phase("left")
    wait_until(
        lambda: all(len(p.state()["connections"]) == 2 for p in stay),
        10,
        what=lambda: f"two connections each: {[len(p.state()['connections']) for p in stay]}",
    )
    for p in stay:
        assert leaver_id not in {c["peerId"] for c in p.state()["connections"]}
        assert p.page.locator(f"#grid .tile[data-id='{leaver_id}']").count() == 0
    before = wait_flowing(stay, 15)
    after = wait_until(lambda: media_growing(stay, before), 15, what="media still flowing among the three")
    through_the_sfu(after)


@pytest.mark.timeout(90)
def test_screen_share_is_a_tile_of_its_own(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    ann, bob = join_all(site, people, console_log, site.room("screen"), ("Ann", "Bob"))
    wait_flowing([ann, bob])
    ann_id = ann.state()["selfId"]
    screen_tile = f"#grid .tile.screen[data-id='{ann_id}:screen'] video"
    # Sharing adds a third section to Ann's publish connection (a new publish); the camera stays.
    ann.page.click("#ctl-screen")
    wait_until(
        lambda: sorted(ann.state()["sfu"]["sources"].values()) == ["camera", "microphone", "screen"],
        10,
        what=lambda: f"Ann publishing her screen: {ann.state()['sfu']['sources']}",
    )
    wait_until(
        lambda: bob.page.evaluate(f"(document.querySelector({screen_tile!r}) || {{}}).videoWidth > 0"),
        20,
        what="Ann's screen on a tile of its own at Bob's",
    )
    camera = bob.page.locator(f"#grid .tile[data-id='{ann_id}']")
    assert "screen" not in (camera.get_attribute("class") or ""), "the camera tile stays a camera tile"
    shown = bob.page.locator(f"#grid .tile[data-id='{ann_id}:screen']")
    assert "featured" in (shown.get_attribute("class") or ""), "the screen share is shown large"
    assert camera.locator("video").evaluate("(v) => v.videoWidth > 0"), "the camera keeps playing"
    bob.page.screenshot(path=str(site.workdir / "group-screen.png"))
    ann.page.click("#ctl-screen")
    wait_until(
        lambda: sorted(ann.state()["sfu"]["sources"].values()) == ["camera", "microphone"],
        10,
        what="Ann's screen section gone",
    )
    bob.page.wait_for_selector(screen_tile, state="detached", timeout=15_000)
    before = wait_flowing([ann, bob], 15)
    wait_until(lambda: media_growing([ann, bob], before), 15, what="media still flowing after sharing")


HIDE_PAGE = (
    "(hidden) => { Object.defineProperty(document, 'visibilityState', "
    "{value: hidden ? 'hidden' : 'visible', configurable: true}); "
    "document.dispatchEvent(new Event('visibilitychange')); }"
)


@pytest.mark.timeout(90)
def test_a_hidden_page_pauses_its_videos_and_keeps_the_audio(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    """docs/signaling.md `pause`: a page nobody looks at needs no video; back in view, it resumes."""
    ann, bob = join_all(site, people, console_log, site.room("pause"), ("Ann", "Bob"))
    wait_flowing([ann, bob])

    def received() -> tuple[int, int]:
        (c,) = bob.state()["connections"]
        return int(c["bytesReceived"]), int(c["audioBytesReceived"])

    bob.page.evaluate(HIDE_PAGE, True)
    time.sleep(2)  # what was in flight arrives
    video, audio = received()
    time.sleep(3)
    video_later, audio_later = received()
    assert video_later - video < 20_000, "the video kept coming to a hidden page"
    assert audio_later - audio > 3_000, "the audio stopped too"  # Opus: a few kB a second
    bob.page.evaluate(HIDE_PAGE, False)
    wait_until(lambda: received()[0] > video_later + 50_000, 15, what="video again once visible")


# --------------------------------------------------------------------------------------------------
# H.264 (?videoCodec=h264): the publisher offers only H.264 (and RTX) for its camera, in three
# simulcast encodings; the SFU forwards it as is (payload type 102 in every subscribe offer).

H264 = "video/H264"


def sending_layers(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """rid -> outbound-rtp summary of the simulcast encodings that have sent frames."""
    return {x["rid"]: x for x in state["sfu"]["layers"] if x["framesSent"] > 0}


@pytest.mark.timeout(90)
def test_h264_simulcast_is_decoded_by_everyone(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    """Three people publish H.264 with three simulcast encodings; each decodes the two others,
    and what each receives really is H.264, one of the sender's layers."""
    three = join_all(site, people, console_log, site.room("h264"), ("Ann", "Bob", "Cy"), videoCodec="h264")
    before = wait_flowing(three)
    after = wait_until(
        lambda: media_growing(three, before), 15, what=lambda: f"media growing:\n{flow(three)}"
    )
    through_the_sfu(after)
    by_id = {s["selfId"]: s for s in after}
    for s in after:
        # The publisher: three encodings, all H.264; the lowest ones at least are sending.
        layers = s["sfu"]["layers"]
        assert sorted(x["rid"] for x in layers) == ["f", "h", "q"], layers
        assert {x["codec"] for x in layers} == {H264}, layers
        sending = sending_layers(s)
        assert {"q", "h"} <= set(sending), layers
        assert sending["q"]["frameWidth"] < sending["h"]["frameWidth"], layers
        # Its subscribers: H.264 decoded, at the width of one of its layers.
        for c in s["connections"]:
            assert c["codec"] == H264, f"{c['peerId']} -> {s['selfId']}:\n{flow(three)}"
            widths = {x["frameWidth"] for x in sending_layers(by_id[c["peerId"]]).values()}
            assert c["frameWidth"] in widths, (
                f"{c['peerId']} -> {s['selfId']} at {c['frameWidth']}w: {widths}"
            )


@pytest.mark.timeout(90)
def test_h264_subscribers_climb_to_the_top_layer(
    site: Site, people: list[Participant], console_log: list[str]
) -> None:
    """Every subscriber starts on the lowest layer (docs/signaling.md "Group rooms") and, with
    nothing limiting the path, is switched up to the widest layer its publisher sends.

    Chromium's H.264 encoder undershoots its layer targets, and Chromium fills the gap with RTX
    "payload padding" (old packets resent on one layer's RTX SSRC, ~700 kbit/s): the SFU must
    not count it into that layer's bitrate, or a subscriber on the padded lowest layer seems to
    get more than the next layer needs and is never probed up (tests/sfu/test_router.py).
    """
    two = join_all(site, people, console_log, site.room("h264-up"), ("Ann", "Bob"), videoCodec="h264")
    wait_flowing(two)

    def everyone_on_top() -> Any:
        states = {s["selfId"]: s for s in (p.state() for p in two)}
        for s in states.values():
            for c in s["connections"]:
                top = max(
                    (x["frameWidth"] for x in sending_layers(states[c["peerId"]]).values()), default=1 << 16
                )
                if c["codec"] != H264 or c["frameWidth"] < top:
                    return False
        return states

    wait_until(
        everyone_on_top, 30, what=lambda: f"every subscriber on its publisher's top layer:\n{flow(two)}"
    )
