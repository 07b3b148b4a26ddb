"""A single node restarted under a meeting (issue 15 item 6, issue 14 item 4): SIGTERM, then
``meet443 serve`` again on the same data dir. Participants resume as themselves within the 30 s
window (docs/signaling.md "Node restarts").

The lab (built once for the module):

    cli  10.200.110.2 ──── 10.200.110.1  srv
    (browsers; meet.lab443.test → srv)      (meet443 serve :8443, started per test)

The server is reached by the name the lab certificate holds (the hosts file of ``cli``), because
its address is this module's own.
"""

from __future__ import annotations

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
    BrowserPool,
    FirefoxBrowser,
    FirefoxParticipant,
    Meet443Web,
    Participant,
    call_failed,
    close_people,
    default_route,
    firefox_tools_missing,
    hosts_file,
    ipv4_only,
    media_flowing,
    media_growing,
    send_chat,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

SERVER_IP, CLIENT_IP = "10.200.110.1", "10.200.110.2"
SERVER_NAME = "meet.lab443.test"
PORT = 8443
MEDIA_TIMEOUT_S = 30
#: docs/signaling.md "Node restarts": the default --shutdown-timeout.
SHUTDOWN_TIMEOUT_S = 10


@dataclass
class Site:
    lab: Lab
    srv: Namespace
    cli: Namespace
    browsers: BrowserPool
    workdir: Path
    pki: LabPki


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, browser_pki: LabPki, browsers: BrowserPool
) -> Iterator[Site]:
    require_lab()
    work = tmp_path_factory.mktemp("restart-lab")
    with Lab(work, prefix=f"rs{time.time_ns() % 10000}-") as lab:
        srv, cli = lab.namespace("srv"), lab.namespace("cli")
        ipv4_only(srv, cli)
        lab.veth(srv, f"{SERVER_IP}/24", cli, f"{CLIENT_IP}/24")
        default_route(cli, SERVER_IP)
        with hosts_file(cli, {SERVER_NAME: SERVER_IP}):
            try:
                yield Site(lab, srv, cli, browsers, work, browser_pki)
            finally:
                browsers.release(cli)


@pytest.fixture(scope="module")
def firefox(site: Site) -> Iterator[FirefoxBrowser]:
    """Firefox in ``cli`` beside Chromium, started only for the test that asks for it."""
    missing = firefox_tools_missing()
    if missing is not None:
        pytest.fail(f"cannot run the Firefox test: {missing}", pytrace=False)
    browser = FirefoxBrowser(site.cli, site.pki, site.workdir)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def servers(site: Site) -> list[Meet443Web]:
    """The server of a test (each test starts its own, in its own data dir)."""
    return []


@pytest.fixture
def people(
    site: Site, servers: list[Meet443Web], console_log: list[str], request: pytest.FixtureRequest
) -> Iterator[list[Participant]]:
    opened: list[Participant] = []
    yield opened
    close_people(opened, call_failed(request), *servers)
    for web in servers:
        if web.proc is not None:
            site.lab.procs.stop(web.proc)


def start_server(site: Site, servers: list[Meet443Web], tag: str, *extra: str) -> Meet443Web:
    web = Meet443Web(site.srv, SERVER_IP, PORT, site.pki, site.workdir / tag, extra=extra, name=SERVER_NAME)
    servers.append(web)
    return web.start()


def sigterm(site: Site, web: Meet443Web) -> float:
    """SIGTERM the server; how long it took to exit (it must exit cleanly, within the timeout)."""
    assert web.proc is not None
    started = time.monotonic()
    site.lab.procs.stop(web.proc, grace_s=SHUTDOWN_TIMEOUT_S + 5)
    took = time.monotonic() - started
    assert web.proc.popen.returncode == 0, web.log()[-3000:]
    assert took < SHUTDOWN_TIMEOUT_S, took
    return took


def join_all(
    site: Site,
    web: Meet443Web,
    people: list[Participant],
    log: list[str],
    room: str,
    firefox: FirefoxBrowser | None = None,
) -> list[Participant]:
    """Ann and Bob in Chromium, or Bob in ``firefox`` when given."""
    joined = []
    for name in ("Ann", "Bob"):
        if name == "Bob" and firefox is not None:
            p: Participant = FirefoxParticipant(firefox, name, log)
        else:
            p = Participant(site.browsers.browser(site.cli), name, log)
        people.append(p)
        p.open(web.room_url(room, displayName=name, autojoin=1))
        joined.append(p)
    for p in joined:
        p.wait_phase("in-call")
    return joined


def chats(people: Sequence[Participant], count: int) -> Any:
    """Every participant's chat as (epoch, seq, text), once all have ``count`` confirmed messages."""
    views = []
    for p in people:
        view = [(m["epoch"], m["seq"], m["text"]) for m in p.state()["chat"] if not m["pending"]]
        if len(view) != count:
            return False
        views.append(view)
    return views


def resumed(people: Sequence[Participant], ids: Sequence[str]) -> Any:
    """Everyone's socket is open again under its old id, and sees the others connected."""
    states = [p.state() for p in people]
    for s, own in zip(states, ids, strict=True):
        if s["signaling"] != "open" or s["selfId"] != own:
            return False
        if sorted(q["id"] for q in s["participants"] if q["connected"]) != sorted(ids):
            return False
    return states


def test_p2p_call_keeps_flowing_and_resumes_across_a_restart(
    site: Site, servers: list[Meet443Web], people: list[Participant], console_log: list[str]
) -> None:
    web = start_server(site, servers, "p2p")
    a, b = join_all(site, web, people, console_log, f"restart-p2p-{int(time.time()) % 100000}")
    before = wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="media before the restart")
    ids = [s["selfId"] for s in before]
    send_chat(a, "before")
    (first, _) = wait_until(lambda: chats([a, b], 1), 10, what="the first chat message on both sides")

    took = sigterm(site, web)
    # The media path is browser to browser: the server's absence does not touch it.
    during = wait_until(
        lambda: media_growing([a, b], before), 10, what="media growing while the server is down"
    )
    web.start()
    states = wait_until(lambda: resumed([a, b], ids), 30, what="both resumed under their old ids")
    assert all(s["connections"] for s in states)
    wait_until(lambda: media_growing([a, b], during), 10, what="media growing after the restart")

    send_chat(b, "after")
    views = wait_until(lambda: chats([a, b], 2), 10, what="the chat after the restart, once")
    epoch, seq, _ = first[0]
    assert views == [[(epoch, seq, "before"), (epoch, seq + 1, "after")]] * 2
    log = web.log()
    assert "restored with 2 participants awaiting resume" in log, log[-3000:]
    print(f"SIGTERM to exit: {took:.2f} s")


@pytest.mark.parametrize("bob_in", ["chromium", "firefox"])
def test_group_room_media_comes_back_through_sfu_restart(
    site: Site,
    servers: list[Meet443Web],
    people: list[Participant],
    console_log: list[str],
    request: pytest.FixtureRequest,
    bob_in: str,
) -> None:
    web = start_server(site, servers, f"group-{bob_in}", "--default-room-mode", "group")
    room = f"restart-group-{int(time.time()) % 100000}"
    firefox = request.getfixturevalue("firefox") if bob_in == "firefox" else None
    a, b = join_all(site, web, people, console_log, room, firefox)
    before = wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="media before the restart")
    ids = [s["selfId"] for s in before]
    assert [s["sfuRestarts"] for s in before] == [0, 0]

    sigterm(site, web)
    web.start()
    restarted = time.monotonic()
    wait_until(lambda: resumed([a, b], ids), 30, what="both resumed under their old ids")
    states = wait_until(
        lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="media through the new SFU session"
    )
    back_after = time.monotonic() - restarted
    assert [s["sfuRestarts"] for s in states] == [1, 1]
    assert [s["selfId"] for s in states] == ids
    wait_until(lambda: media_growing([a, b], states), 10, what="media growing after the restart")
    print(f"media back {back_after:.1f} s after the server listened again")
