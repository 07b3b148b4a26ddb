"""Devices mid-call: switching the camera from the in-call menu, and falling back when one goes away.

The lab: one server namespace and one client namespace whose Chromium has three fake cameras
(``--use-fake-device-for-media-stream=device-count=3``); both participants are contexts of it.
Chromium's second fake camera delivers 16-bit depth frames (Y16), which play in a <video> but which
WebRTC's encoder drops, so a switch to it would stop the video for reasons of the fake, not of the
client: the test switches between the first (I420) and the third (MJPEG) camera.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lab.netns import Lab, Namespace
from lab.pki import LabPki

from .conftest import require_lab
from .lab_extra import (
    CHROMIUM_FLAGS,
    NETNS_ENV,
    BrowserPool,
    Meet443Web,
    Participant,
    default_route,
    ipv4_only,
    lab_prefix,
    media_flowing,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SERVER_IP, CLIENT_IP = "10.200.61.1", "10.200.61.2"  # the lab certificate names SERVER_IP
PORT = 8443
MEDIA_TIMEOUT_S = 30
TWO_CAMERAS = tuple(
    "--use-fake-device-for-media-stream=device-count=3" if f == "--use-fake-device-for-media-stream" else f
    for f in CHROMIUM_FLAGS
)

_rooms = itertools.count(1)


@dataclass
class Site:
    web: Meet443Web
    browser: Any

    def room(self, tag: str) -> str:
        return f"{tag}-{next(_rooms)}-{int(time.time()) % 100000}"


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, browser_pki: LabPki, browsers: BrowserPool
) -> Iterator[Site]:
    require_lab()
    work = tmp_path_factory.mktemp("devices-lab")
    with Lab(work, prefix=lab_prefix("d")) as lab:
        srv, cli = lab.namespace("srv"), lab.namespace("cli")
        ipv4_only(srv, cli)
        lab.veth(srv, f"{SERVER_IP}/24", cli, f"{CLIENT_IP}/24")
        default_route(cli, SERVER_IP)
        web = Meet443Web(srv, SERVER_IP, PORT, browser_pki, work / "server").start()
        browser = launch_two_cameras(browsers, cli)
        try:
            yield Site(web, browser)
        finally:
            browser.close()


def launch_two_cameras(browsers: BrowserPool, ns: Namespace) -> Any:
    """A Chromium of the pool's kind (same wrapper, same trusted CA), but with two fake cameras."""
    env = {**os.environ, NETNS_ENV: ns.name, "HOME": str(browsers.home)}
    return browsers.pw.chromium.launch(
        executable_path=str(browsers.wrapper), args=list(TWO_CAMERAS), env=env, timeout=60_000
    )


@pytest.fixture
def people(site: Site) -> Iterator[list[Participant]]:
    opened: list[Participant] = []
    yield opened
    for p in opened:
        p.close()
    assert site.web.alive(), site.web.log()[-4000:]


def join(site: Site, people: list[Participant], log: list[str], room: str, name: str) -> Participant:
    p = Participant(site.browser, name, log)
    people.append(p)
    p.open(site.web.room_url(room, displayName=name, autojoin=1))
    return p


def frames_from(viewer: Participant, sender_id: str) -> int:
    conn = next(c for c in viewer.state()["connections"] if c["peerId"] == sender_id)
    return int(conn["framesDecoded"])


def video_senders(p: Participant) -> list[dict[str, Any]]:
    return [t for c in p.state()["connections"] for t in c["senders"] if t and t["kind"] == "video"]


@pytest.mark.timeout(120)
def test_camera_switch_mid_call(site: Site, people: list[Participant], console_log: list[str]) -> None:
    room = site.room("devices")
    alice = join(site, people, console_log, room, "Alice")
    alice.wait_phase("in-call")
    bob = join(site, people, console_log, room, "Bob")
    bob.wait_phase("in-call")
    wait_until(lambda: media_flowing([alice, bob]), MEDIA_TIMEOUT_S, what="media both ways")
    a = alice.state()
    cameras = a["local"]["devices"]["videoinput"]
    assert len(cameras) == 3, f"Chromium here offers {len(cameras)} fake cameras: {cameras}"
    before = a["local"]["videoTrack"]
    assert before and before["label"] == "fake_device_0", a["local"]
    other = next(c for c in cameras if c["label"] == "fake_device_2")

    # Alice mutes her microphone first: the switch must keep it muted.
    alice.page.click("#ctl-mic")
    alice.wait_js("window.meet443.state().then((s) => s.local.audioTrack.enabled === false)")

    # The in-call menu lists both cameras; Alice picks the other one.
    alice.page.click("#ctl-devices")
    assert alice.page.locator("#device-menu").is_visible()
    assert alice.page.locator("#call-videoinput-select option").count() == 3
    alice.page.select_option("#call-videoinput-select", other["deviceId"])

    def switched() -> Any:
        s = alice.state()
        senders = [t for c in s["connections"] for t in c["senders"] if t and t["kind"] == "video"]
        track = s["local"]["videoTrack"]
        ok = (
            track
            and track["deviceId"] == other["deviceId"]
            and senders
            and all(t["deviceId"] == other["deviceId"] and t["id"] == track["id"] for t in senders)
        )
        return s if ok else False

    after = wait_until(switched, 15, what="Alice's senders to carry the other camera")
    assert after["local"]["videoTrack"]["label"] != before["label"], (before, after["local"]["videoTrack"])
    assert after["local"]["selected"]["videoinput"] == other["deviceId"]
    assert after["local"]["audioTrack"]["enabled"] is False, "the switch unmuted the microphone"
    # No renegotiation: the same connection, no ICE restart.
    assert [c["iceRestarts"] for c in after["connections"]] == [c["iceRestarts"] for c in a["connections"]]

    # Bob keeps decoding Alice's video from the new camera.
    alice_id = a["selfId"]
    start = frames_from(bob, alice_id)
    wait_until(lambda: frames_from(bob, alice_id) > start + 30, 15, what="Bob decoding Alice's new camera")

    # The camera in use goes away (its track ends) and the devices change: Alice falls back to a
    # working camera, says so, and Bob still sees her.
    old_track_id = after["local"]["videoTrack"]["id"]
    alice.page.evaluate(
        "() => { const v = document.querySelector('.tile.self video'); "
        "v.srcObject.getVideoTracks().forEach((t) => t.stop()); "
        "navigator.mediaDevices.dispatchEvent(new Event('devicechange')); }"
    )

    def fell_back() -> Any:
        s = alice.state()
        track = s["local"]["videoTrack"]
        senders = [t for c in s["connections"] for t in c["senders"] if t and t["kind"] == "video"]
        ok = track and track["id"] != old_track_id and track["readyState"] == "live"
        ok = ok and senders and all(t["id"] == track["id"] for t in senders)
        return s if ok else False

    wait_until(fell_back, 15, what="Alice's camera to come back after it ended")
    assert "camera" in alice.page.inner_text("#toast").lower()
    start = frames_from(bob, alice_id)
    wait_until(lambda: frames_from(bob, alice_id) > start + 30, 15, what="Bob decoding after the fallback")
    assert alice.state()["local"]["audioTrack"]["enabled"] is False
