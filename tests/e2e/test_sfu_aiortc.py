"""Group rooms end to end with independent WebRTC stacks: aiortc participants through meet443's SFU.

docs/signaling.md "Group rooms": every participant publishes to the SFU and subscribes from it;
nobody connects to anybody else. ``meet443 serve --default-room-mode group`` runs in a server
namespace; each participant is a separate process (tests/lab/sfu_peer.py) in a client namespace
that reaches the server over its own veth link and nothing else:

    c1 10.200.91.2 ── 10.200.91.1 srv (meet443: HTTPS, WSS, TURN and the SFU on port 443)
    c2 10.200.92.2 ── 10.200.92.1 srv (c2 routes to 10.200.91.1 through it)

The participants decode what they receive (VP8 or H.264, and Opus, through aiortc's receiver tracks) and
read back the luma mark each publisher draws into its picture, so a test sees whose video arrives,
at what size, and how much of it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from browser.lab_extra import Meet443Web, default_route, ipv4_only
from lab.netns import Lab, Namespace, Proc, unavailable_reason
from lab.pki import LabPki, make_test_pki

from .conftest import require

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PEER = Path(__file__).resolve().parents[1] / "lab" / "sfu_peer.py"
SERVER_IP = "10.200.91.1"
DURATION_S = 12.0
#: At 30 fps a participant sends ~300 frames in DURATION_S; ICE, DTLS, the first keyframe and two
#: shared CPUs (aiortc encodes and decodes VP8 in Python threads) cost some of them.
MIN_VIDEO_FRAMES = 60
#: Opus frames are 20 ms: ~500 in DURATION_S.
MIN_AUDIO_FRAMES = 150
MARK_TOLERANCE = 12  # VP8 at aiortc's bitrate keeps a flat 48x48 square within a few luma steps


@dataclass
class GroupSite:
    lab: Lab
    server: Meet443Web
    pki: LabPki
    clients: tuple[Namespace, Namespace]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GroupSite]:
    require(unavailable_reason())
    work = tmp_path_factory.mktemp("sfu-aiortc")
    with Lab(work, prefix=f"q{os.getpid() % 10000}-") as lab:
        srv, c1, c2 = lab.namespace("srv"), lab.namespace("c1"), lab.namespace("c2")
        ipv4_only(srv, c1, c2)
        lab.veth(srv, f"{SERVER_IP}/24", c1, "10.200.91.2/24")
        lab.veth(srv, "10.200.92.1/24", c2, "10.200.92.2/24")
        default_route(c2, "10.200.92.1")
        pki = make_test_pki(work / "pki", ips=(SERVER_IP,))
        server = Meet443Web(srv, SERVER_IP, 443, pki, work / "server", extra=("--default-room-mode", "group"))
        server.start()
        yield GroupSite(lab, server, pki, (c1, c2))


@dataclass
class PeerSpec:
    ns: Namespace
    name: str
    mark: int
    publish: bool = True
    relay: bool = False
    publish_after: float = 0.0
    video_codec: str | None = None  # offer only this codec for the camera (sfu_peer.py --video-codec)


def run_peers(site: GroupSite, room: str, *specs: PeerSpec) -> dict[str, dict[str, Any]]:
    """Start every participant at once, wait for all to leave; their final reports by name."""
    procs: dict[str, Proc] = {}
    for spec in specs:
        argv = [
            sys.executable, str(PEER), "--origin", site.server.origin, "--ca", str(site.pki.ca),
            "--room", room, "--name", spec.name, "--mark", str(spec.mark), "--duration", str(DURATION_S),
            *([] if spec.publish else ["--no-publish"]), *(["--relay"] if spec.relay else []),
            "--publish-after", str(spec.publish_after),
            *(["--video-codec", spec.video_codec] if spec.video_codec else []),
        ]  # fmt: skip
        procs[spec.name] = spec.ns.spawn(argv, name=f"{room}-{spec.name}")
    deadline = time.monotonic() + DURATION_S + 40
    for proc in procs.values():
        proc.popen.wait(max(1.0, deadline - time.monotonic()))
    results: dict[str, dict[str, Any]] = {}
    for name, proc in procs.items():
        events = [json.loads(line) for line in proc.log_text().splitlines() if line.startswith("{")]
        final = [e for e in events if e["event"] == "result"]
        assert final, f"{name} printed no result: {proc.describe()}\nserver: {server_tail(site)}"
        results[name] = final[-1]
    assert site.server.alive(), f"meet443 died: {server_tail(site)}"
    return results


def server_tail(site: GroupSite) -> str:
    return "\n".join(site.server.log().splitlines()[-30:])


REPORT_KEYS = (
    "error", "selfId", "publish", "subscribe", "tracks", "received", "byMid", "rtpBySsrc",
    "signals", "errors", "publishCodec", "videoCodecs",
)  # fmt: skip


def describe(results: dict[str, dict[str, Any]]) -> str:
    brief = {name: {k: r.get(k) for k in REPORT_KEYS} for name, r in results.items()}
    return json.dumps(brief, indent=1)


def assert_receives(
    results: dict[str, dict[str, Any]], site: GroupSite, receiver: str, sender: str, mark: int
) -> None:
    """`receiver` decoded `sender`'s 320x240 video (with `sender`'s mark) and its audio."""
    context = f"{describe(results)}\nserver log:\n{server_tail(site)}"
    got = results[receiver]["received"].get(results[sender]["selfId"])
    assert got is not None, f"{receiver} got nothing from {sender}:\n{context}"
    assert got["videoFrames"] >= MIN_VIDEO_FRAMES, f"{receiver} <- {sender}: {got}\n{context}"
    assert set(got["sizes"]) == {"320x240"}, f"{receiver} <- {sender}: {got}"
    assert got["mark"] is not None and abs(got["mark"] - mark) <= MARK_TOLERANCE, (
        f"{receiver} decodes someone else's picture as {sender}'s: {got}"
    )
    assert got["audioFrames"] >= MIN_AUDIO_FRAMES, f"{receiver} <- {sender}: {got}\n{context}"


def assert_clean(results: dict[str, dict[str, Any]]) -> None:
    for name, r in results.items():
        assert "error" not in r, f"{name}: {r['error']}\n{describe(results)}"
        assert r["errors"] == [], f"{name} got signaling errors: {r['errors']}"
        assert r["selfId"] not in r["received"], f"{name} was sent its own media: {r['received']}"


def pair_of(result: dict[str, Any], side: str) -> dict[str, str]:
    pc = result[side]
    assert pc is not None and pc["state"] == "connected", f"{side}: {pc}"
    pair: dict[str, str] = pc["pair"]
    assert pair is not None, f"{side}: no nominated pair: {pc}"
    return pair


@pytest.mark.timeout(120)
def test_publisher_to_subscriber(site: GroupSite) -> None:
    c1, c2 = site.clients
    results = run_peers(
        site, "sfu-one-way", PeerSpec(c1, "alice", mark=200), PeerSpec(c2, "bob", mark=40, publish=False)
    )
    assert_clean(results)
    assert_receives(results, site, "bob", "alice", mark=200)
    assert results["alice"]["received"] == {}, "nobody else publishes"
    # Both connections end on the server's one UDP port (ICE-lite host candidate), from each
    # participant's own address.
    assert pair_of(results["alice"], "publish")["remote"] == f"{SERVER_IP}:443"
    assert pair_of(results["bob"], "subscribe")["remote"] == f"{SERVER_IP}:443"
    assert pair_of(results["bob"], "subscribe")["local"].startswith("host 10.200.92.2:")
    assert results["bob"]["publish"] is None


@pytest.mark.timeout(120)
def test_two_publishers_both_ways(site: GroupSite) -> None:
    c1, c2 = site.clients
    results = run_peers(site, "sfu-two-way", PeerSpec(c1, "alice", mark=60), PeerSpec(c2, "bob", mark=180))
    assert_clean(results)
    assert_receives(results, site, "bob", "alice", mark=60)
    assert_receives(results, site, "alice", "bob", mark=180)


@pytest.mark.timeout(120)
def test_h264_and_vp8_publishers_both_ways(site: GroupSite) -> None:
    """alice offers only H.264 for her camera (aiortc's libx264 encoder), bob his default (VP8):
    the SFU forwards each as it comes (payload types mapped to its own 102 and 96), and each
    decodes the other's picture, in the other's codec."""
    c1, c2 = site.clients
    results = run_peers(
        site,
        "sfu-h264",
        PeerSpec(c1, "alice", mark=90, video_codec="h264"),
        PeerSpec(c2, "bob", mark=170),
    )
    assert_clean(results)
    alice, bob = results["alice"], results["bob"]
    assert alice["publishCodec"] == "H264", describe(results)
    assert bob["publishCodec"] == "VP8", describe(results)
    assert bob["videoCodecs"].get(alice["selfId"]) == ["H264"], describe(results)
    assert alice["videoCodecs"].get(bob["selfId"]) == ["VP8"], describe(results)
    assert_receives(results, site, "bob", "alice", mark=90)
    assert_receives(results, site, "alice", "bob", mark=170)


@pytest.mark.timeout(120)
def test_relay_only_participant(site: GroupSite) -> None:
    """iceTransportPolicy relay: alice reaches the SFU only through meet443's TURN (UDP) on the
    same server, both publishing and subscribing; bob connects directly."""
    c1, c2 = site.clients
    results = run_peers(
        site, "sfu-relay", PeerSpec(c1, "alice", mark=70, relay=True), PeerSpec(c2, "bob", mark=190)
    )
    assert_clean(results)
    for side in ("publish", "subscribe"):
        pair = pair_of(results["alice"], side)
        assert pair["local"].startswith(f"relay {SERVER_IP}:"), f"alice {side} not relayed: {pair}"
        assert pair["remote"] == f"{SERVER_IP}:443", pair
    assert pair_of(results["bob"], "publish")["local"].startswith("host "), results["bob"]["publish"]
    assert_receives(results, site, "bob", "alice", mark=70)
    assert_receives(results, site, "alice", "bob", mark=190)


@pytest.mark.timeout(150)
def test_three_participants_see_each_other(site: GroupSite) -> None:
    """Three publishers (two sharing a namespace, as two tabs on one host would): every
    participant decodes the two others, each under the right participant id.

    They publish two seconds apart, so each subscribe offer adds one publisher's sections: aiortc
    (1.x) routes no packet of a second video section that arrives in the same first
    offer, and drops that video. A late joiner whose first offer carries several videos is covered
    by the Chromium group test (tests/browser/test_group.py) and, for the server's side, by
    tests/sfu/test_conference.py::TestLateJoiner."""
    c1, c2 = site.clients
    marks = {"alice": 40, "bob": 128, "carol": 220}
    results = run_peers(
        site,
        "sfu-three",
        PeerSpec(c1, "alice", marks["alice"]),
        PeerSpec(c2, "bob", marks["bob"], publish_after=2.0),
        PeerSpec(c1, "carol", marks["carol"], publish_after=4.0),
    )
    assert_clean(results)
    for receiver in marks:
        for sender, mark in marks.items():
            if sender != receiver:
                assert_receives(results, site, receiver, sender, mark=mark)
