"""Group rooms on bad networks: the SFU gives each subscriber the simulcast layer its own downlink
carries, and repairs loss with NACK/RTX (docs/signaling.md "Group rooms").

    pub 10.200.81.2 ─┐
    s1  10.200.82.2 ─┼─ rt (router; tc / nftables on its client links) ─ 10.200.73.2 srv
    s2  10.200.83.2 ─┘                                                   10.200.61.1 srv

``srv`` runs two ``meet443 serve --port 443 --default-room-mode group``: one as shipped (NACK on,
on 10.200.73.2) and one with ``--no-sfu-nack`` (on 10.200.61.1), each with metrics on its own
loopback port inside ``srv``. Every person is a Chromium in its own client namespace; the router's
egress towards a client is that client's download, so shaping (``tc tbf``) and loss (nft
``numgen random``) there hurt only what the SFU sends to that one subscriber. Subscribers join
with their camera off: only the publisher's video is measured, and two cores must run it all.
"""

from __future__ import annotations

import itertools
import re
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
    BrowserPool,
    Meet443Web,
    Participant,
    default_route,
    enable_forwarding,
    ipv4_only,
    lab_prefix,
    prometheus,
    server_route_exists,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# Both server addresses must be in the lab certificate (conftest.SERVER_IPS).
NACK_IP, NO_NACK_IP = "10.200.73.2", "10.200.61.1"
METRICS = "127.0.0.1:9100"  # inside each server's namespace
TOP_WIDTH = 1280
LOSS_TABLE = "loss"

_rooms = itertools.count(1)


@dataclass
class Net:
    lab: Lab
    pub: Namespace
    s1: Namespace
    s2: Namespace
    rt: Namespace
    srv: Namespace
    to_s1: str  # rt's interface towards s1: its egress is s1's download
    nack: Meet443Web
    no_nack: Meet443Web
    browsers: BrowserPool
    workdir: Path

    def room(self, tag: str) -> str:
        return f"{tag}-{next(_rooms)}-{int(time.time()) % 100000}"

    def metrics(self, web: Meet443Web) -> dict[str, float]:
        return prometheus(web.ns, METRICS)

    def shape_s1(self, rate: str) -> None:
        shape = ("rate", rate, "burst", "16kb", "latency", "200ms")
        self.rt.run(["tc", "qdisc", "replace", "dev", self.to_s1, "root", "tbf", *shape])

    def unshape_s1(self) -> None:
        self.rt.run(["tc", "qdisc", "del", "dev", self.to_s1, "root"], check=False)

    def lose_to_s1(self, percent: int) -> None:
        """Drop `percent` % of the UDP datagrams the router forwards to s1 (at random)."""
        self.rt.load_nft(
            f"""
table inet {LOSS_TABLE}
delete table inet {LOSS_TABLE}
table inet {LOSS_TABLE} {{
  counter lost {{ }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    oifname "{self.to_s1}" meta l4proto udp numgen random mod 100 < {percent} counter name lost drop
  }}
}}
"""
        )

    def lossless(self) -> None:
        self.rt.run(["nft", "delete", "table", "inet", LOSS_TABLE], check=False)

    def lost_packets(self) -> int:
        out = self.rt.run(["nft", "list", "counter", "inet", LOSS_TABLE, "lost"]).stdout
        m = re.search(r"packets (\d+)", out)
        assert m, out
        return int(m[1])


@pytest.fixture(scope="module")
def net(
    tmp_path_factory: pytest.TempPathFactory, browser_pki: LabPki, browsers: BrowserPool
) -> Iterator[Net]:
    require_lab()
    work = tmp_path_factory.mktemp("group-net-lab")
    with Lab(work, prefix=lab_prefix("n")) as lab:
        pub, s1, s2, rt, srv, srv2 = (lab.namespace(n) for n in ("pub", "s1", "s2", "rt", "srv", "srv2"))
        ipv4_only(pub, s1, s2, rt, srv, srv2)
        links = {}
        for ns, subnet in ((pub, 81), (s1, 82), (s2, 83)):
            links[ns.name] = lab.veth(rt, f"10.200.{subnet}.1/24", ns, f"10.200.{subnet}.2/24")
            default_route(ns, f"10.200.{subnet}.1")
        lab.veth(rt, "10.200.73.1/24", srv, f"{NACK_IP}/24")
        lab.veth(rt, "10.200.61.2/24", srv2, f"{NO_NACK_IP}/24")
        default_route(srv2, "10.200.61.2")
        default_route(srv, "10.200.73.1")
        enable_forwarding(rt)
        group = ("--default-room-mode", "group")
        nack = Meet443Web(
            srv, NACK_IP, 443, browser_pki, work / "nack", extra=(*group, "--metrics-listen", METRICS)
        ).start()
        no_nack = Meet443Web(
            srv2,
            NO_NACK_IP,
            443,
            browser_pki,
            work / "no-nack",
            extra=(*group, "--no-sfu-nack", "--metrics-listen", METRICS),
        ).start()
        for web in (nack, no_nack):
            if not server_route_exists(web, s1, "/v1/ws"):
                pytest.fail(f"{web.origin} has no /v1/ws (signaling is not wired into meet443 serve)")
        site = Net(lab, pub, s1, s2, rt, srv, links[s1.name].a_dev, nack, no_nack, browsers, work)
        try:
            yield site
        finally:
            browsers.release(pub, s1, s2)


@pytest.fixture
def people(net: Net, console_log: list[str], request: pytest.FixtureRequest) -> Iterator[list[Participant]]:
    """Participants opened by a test; closed after it, and the router's links made clean again."""
    opened: list[Participant] = []
    yield opened
    for p in opened:
        p.close()
    net.unshape_s1()
    net.lossless()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for web in (net.nack, net.no_nack):
            print(f"\n--- server log {web.origin} ---\n" + web.log()[-6000:])
    for web in (net.nack, net.no_nack):
        code = web.proc.popen.returncode if web.proc is not None else None
        assert web.alive(), f"{web.origin} exited ({code}); its log:\n{web.log()[-4000:]}"


def join(
    net: Net, web: Meet443Web, people: list[Participant], log: list[str], room: str, who: dict[str, Namespace]
) -> dict[str, Participant]:
    """Everyone in `who` (name -> namespace) joins; all but the first turn their camera off."""
    joined = {}
    for name, ns in who.items():
        p = Participant(net.browsers.browser(ns), name, log)
        people.append(p)
        p.open(web.room_url(room, displayName=name, autojoin=1))
        joined[name] = p
    for i, p in enumerate(joined.values()):
        s = p.wait_phase("in-call", 30)
        assert s["mode"] == "group", s["room"]
        if i > 0:
            p.page.click("#ctl-cam")
            p.wait_js("window.meet443.state().then((s) => !s.local.video)", 10, what=f"{p.name}'s camera off")
    return joined


def video_from(p: Participant, publisher_id: str) -> dict[str, Any]:
    """What `p` receives of the publisher's camera (inbound-rtp on its subscribe connection)."""
    for c in p.state()["connections"]:
        if c["peerId"] == publisher_id:
            return dict(c)
    return {"framesDecoded": 0, "frameWidth": 0, "freezeCount": 0, "totalFreezesDuration": 0.0}


def top_layer(publisher: Participant) -> dict[str, Any]:
    layers = publisher.state()["sfu"]["layers"]
    return next((x for x in layers if x["rid"] == "f"), {"frameWidth": 0, "bytesSent": 0})


@dataclass
class Sample:
    t: float
    s1: dict[str, Any]
    s2: dict[str, Any]
    layers: dict[str, tuple[int, int]]  # the publisher's rid -> (frameWidth, bytesSent)

    def line(self) -> str:
        sent = " ".join(f"{rid}:{w}w/{b // 1000}kB" for rid, (w, b) in sorted(self.layers.items()))
        got = "  ".join(
            f"{name} {v['frameWidth']:>4}w {v['framesDecoded']:>5}f {v.get('pliCount', 0):>3}pli"
            f" {v.get('bytesReceived', 0) // 1000:>5}kB"
            for name, v in (("s1", self.s1), ("s2", self.s2))
        )
        return f"{self.t:5.1f}s  {got}  pub {sent}"


class Timeline:
    """Samples of what s1 and s2 receive from the publisher, timed from the test's start."""

    def __init__(self, publisher: Participant, s1: Participant, s2: Participant) -> None:
        self.publisher, self.s1, self.s2 = publisher, s1, s2
        self.publisher_id = publisher.state()["selfId"]
        self.start = time.monotonic()
        self.samples: list[Sample] = []
        self.marks: list[tuple[float, str]] = []

    def now(self) -> float:
        return time.monotonic() - self.start

    def mark(self, what: str) -> float:
        t = self.now()
        self.marks.append((t, what))
        return t

    def sample(self) -> Sample:
        layers = {
            x["rid"]: (x["frameWidth"], x["bytesSent"]) for x in self.publisher.state()["sfu"]["layers"]
        }
        s = Sample(
            self.now(), video_from(self.s1, self.publisher_id), video_from(self.s2, self.publisher_id), layers
        )
        self.samples.append(s)
        return s

    def until(self, ok: Any, timeout_s: float, what: str, extra: Any = lambda: "") -> Sample:
        deadline = time.monotonic() + timeout_s
        while True:
            s = self.sample()
            if ok(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{self}\n{extra()}")
            time.sleep(0.5)

    def __str__(self) -> str:
        events = [(t, f"-- {what}") for t, what in self.marks] + [(s.t, s.line()) for s in self.samples]
        return "\n".join(text for _, text in sorted(events, key=lambda e: e[0]))


@pytest.mark.timeout(200)
def test_simulcast_follows_each_subscribers_bandwidth(
    net: Net, people: list[Participant], console_log: list[str]
) -> None:
    who = {"Pub": net.pub, "S1": net.s1, "S2": net.s2}
    joined = join(net, net.nack, people, console_log, net.room("simulcast"), who)
    publisher, s1, s2 = joined["Pub"], joined["S1"], joined["S2"]
    timeline = Timeline(publisher, s1, s2)
    before = net.metrics(net.nack)

    def sfu_counters() -> str:
        now = net.metrics(net.nack)
        return "SFU since the start: " + ", ".join(
            f"{k.removeprefix('meet443_sfu_')} {now[k] - before.get(k, 0):.0f}"
            for k in sorted(now)
            if k.startswith("meet443_sfu_") and "_total" in k
        )

    # Chromium's sender ramps its estimate for ~20-30 s before the 1280-wide layer starts.
    def top_layer_sent(s: Sample) -> bool:
        previous = timeline.samples[-2].layers.get("f", (0, 0))[1] if len(timeline.samples) > 1 else 0
        width, sent = s.layers.get("f", (0, 0))
        return width >= TOP_WIDTH and sent > previous > 0

    timeline.until(top_layer_sent, 60, "the publisher's top layer", sfu_counters)
    timeline.mark("publisher sends layer f at 1280")
    timeline.until(
        lambda s: s.s1["frameWidth"] >= TOP_WIDTH and s.s2["frameWidth"] >= TOP_WIDTH,
        40,
        "both on the top layer",
        sfu_counters,
    )
    timeline.mark("both subscribers on the top layer")

    # s1's download shrinks to 300 kbit/s: it must drop to a layer that fits (q 320 or h 640).
    t_limit = timeline.mark("tbf 300kbit on rt -> s1")
    net.shape_s1("300kbit")
    down = timeline.until(lambda s: 0 < s.s1["frameWidth"] <= 640, 30, "s1 on a smaller layer", sfu_counters)
    limited_from = len(timeline.samples)
    time.sleep(5)
    held = timeline.sample()
    assert held.s1["frameWidth"] <= 640, f"s1 went back up while limited\n{timeline}\n{sfu_counters()}"
    assert held.s1["framesDecoded"] > down.s1["framesDecoded"], (
        f"s1 stopped decoding\n{timeline}\n{sfu_counters()}"
    )
    assert held.s2["framesDecoded"] > down.s2["framesDecoded"], (
        f"s2 stopped decoding\n{timeline}\n{sfu_counters()}"
    )
    limited = timeline.samples[limited_from:]
    assert all(s.s2["frameWidth"] >= TOP_WIDTH for s in limited), f"s2 left the top layer\n{timeline}"

    # The limit goes: probing lets s1's estimate grow, and s1 climbs back to the top layer.
    t_lift = timeline.mark("tbf removed")
    net.unshape_s1()
    back = timeline.until(
        lambda s: s.s1["frameWidth"] >= TOP_WIDTH, 45, "s1 back on the top layer", sfu_counters
    )
    recovered = back.t - t_lift
    counters = sfu_counters()
    print(
        f"\n{timeline}\nlimit -> smaller layer at s1: {down.t - t_limit:.1f}s; "
        f"lift -> top layer at s1: {recovered:.1f}s\n{counters}"
    )
    after = net.metrics(net.nack)
    assert back.s2["frameWidth"] >= TOP_WIDTH, f"s2 left the top layer\n{timeline}"
    assert after["meet443_sfu_layer_switches_total"] >= before["meet443_sfu_layer_switches_total"] + 2
    assert after["meet443_sfu_probe_packets_total"] > before["meet443_sfu_probe_packets_total"]
    assert recovered <= 20, f"s1 took {recovered:.1f}s to get the top layer back\n{timeline}"


def lossy_call(
    net: Net, web: Meet443Web, people: list[Participant], log: list[str], media_s: float
) -> dict[str, float]:
    """The publisher and s1 (5% of its download lost) for `media_s` seconds after s1's first frame.

    Returns what s1's receiver counted over that time and what the SFU did."""
    net.lose_to_s1(5)
    before = net.metrics(web)
    joined = join(net, web, people, log, net.room("loss"), {"Pub": net.pub, "S1": net.s1})
    publisher, s1 = joined["Pub"], joined["S1"]
    publisher_id = publisher.state()["selfId"]
    first = wait_until(
        lambda: (v := video_from(s1, publisher_id))["framesDecoded"] > 0 and v,
        30,
        interval=0.2,
        what="s1's first frame of the publisher",
    )
    lost_before = net.lost_packets()
    time.sleep(media_s)
    last = video_from(s1, publisher_id)
    after = net.metrics(web)
    result = {
        "frames": last["framesDecoded"] - first["framesDecoded"],
        "freezes": last["freezeCount"] - first["freezeCount"],
        "freeze_s": last["totalFreezesDuration"] - first["totalFreezesDuration"],
        "width": last["frameWidth"],
        "lost": net.lost_packets() - lost_before,
    }
    for name in ("retransmissions", "nacks_received", "plis_sent"):
        key = f"meet443_sfu_{name}_total"
        result[name] = after[key] - before[key]
    for p in (publisher, s1):
        p.close()
    net.lossless()
    return result


@pytest.mark.timeout(170)
def test_nack_repairs_five_percent_loss(net: Net, people: list[Participant], console_log: list[str]) -> None:
    media_s = 25
    with_nack = lossy_call(net, net.nack, people, console_log, media_s)
    without = lossy_call(net, net.no_nack, people, console_log, media_s)
    print(f"\n5% loss on s1's download, {media_s} s of media after the first frame:")
    for name, r in (("NACK on ", with_nack), ("NACK off", without)):
        print(
            f"  {name}: {r['freezes']:.0f} freezes, {r['freeze_s']:.2f} s frozen, {r['frames']:.0f} frames "
            f"decoded, last width {r['width']:.0f}; {r['lost']:.0f} datagrams dropped by rt; SFU: "
            f"{r['nacks_received']:.0f} NACKs in, {r['retransmissions']:.0f} retransmissions, "
            f"{r['plis_sent']:.0f} PLIs out"
        )
    assert with_nack["lost"] > 0 and without["lost"] > 0, "the loss rule dropped nothing"
    assert with_nack["retransmissions"] > 0, with_nack
    assert without["retransmissions"] == 0, without
    assert with_nack["frames"] > 0 and without["frames"] > 0
    assert with_nack["freeze_s"] <= without["freeze_s"] / 2, (with_nack, without)
    assert with_nack["freezes"] <= without["freezes"], (with_nack, without)
