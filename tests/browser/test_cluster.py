"""Many nodes, one service (issue 15, docs/cluster.md), end to end in the cluster lab.

    c1 ─┐                 ┌─ n1  meet443 serve ─┐
    c2 ─┼── rt (router) ──┼─ n2  meet443 serve ─┼── db: redis-server, PostgreSQL
    c3 ─┘                 └─ n3  meet443 serve ─┘

(tests/lab/cluster.py draws the addresses.) Every meeting URL is ``https://meet.cx.test/<room>``;
client namespace c1 resolves that name to n1, c2 to n2, c3 to n3, as DNS round robin would send
three people to three nodes. One cluster serves the whole module.

1. Any node serves any meeting: Ann (via n1) and Bob (via n2) open the same URL, see and hear each
   other and chat both ways; the same for a group room, whose SFU runs on its home node and is
   reached by the participant whose edge is another node.
2. Placement is atomic: 50 times, the first join of a new room reaches all three nodes at once; each
   time exactly one node is its home (Redis' lease and epoch, and the three participants meet in
   one room with one host).
3. Redis restarts (empty) in the middle of a call: media keeps flowing; no chat message sent
   before, during or after is lost or shown twice; the home takes its room's lease again, so a third
   person joining through n3 lands in the same room.
4. The firewall team's view: the rules ``meet443 firewall-rules`` prints from the live cluster
   (/v1/network), loaded as a client's outbound firewall, are enough for a call across two nodes;
   without their accept rules the same client cannot join.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError

from lab.cluster import DB_IP, NODE_PORT, PUBLIC_NAME, Cluster, ClusterNode, cluster_lab
from lab.netns import Namespace
from lab.pki import LabPki

from .conftest import require_lab
from .lab_extra import (
    BrowserPool,
    Participant,
    call_failed,
    media_flowing,
    media_growing,
    send_chat,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PROBE = Path(__file__).resolve().parents[1] / "lab" / "placement_probe.py"
MEDIA_TIMEOUT_S = 30
PLACEMENT_TRIALS = 50
#: Chat history and registry after a Redis restart: nodes announce themselves every second.
RECOVERY_S = 10

_rooms = itertools.count(1)


def room_name(tag: str) -> str:
    return f"cx-{tag}-{next(_rooms)}-{int(time.time()) % 100000}"


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, browser_pki: LabPki, browsers: BrowserPool
) -> Iterator[Cluster]:
    require_lab()
    work = tmp_path_factory.mktemp("cluster-lab")
    with cluster_lab(work, browser_pki, prefix=f"cx{os.getpid() % 1000}-", clients=3) as c:
        try:
            # Not an assertion here (test_every_node_is_in_the_registry makes it): only a wait, so
            # that the tests do not race the nodes' first heartbeats.
            deadline = time.monotonic() + RECOVERY_S
            while live_nodes(c) != {n.node_id for n in c.nodes} and time.monotonic() < deadline:
                time.sleep(0.2)
            yield c
        finally:
            browsers.release(*c.clients)


@pytest.fixture
def people(
    cluster: Cluster, console_log: list[str], request: pytest.FixtureRequest
) -> Iterator[list[Participant]]:
    opened: list[Participant] = []
    yield opened
    for p in opened:
        p.close()
    if call_failed(request):
        print("\n" + cluster.logs(6000))
        print("--- redis keys ---\n" + cluster.redis.raw("--scan", "--pattern", "meet443:*")[-3000:])
    dead = cluster.dead_nodes()
    assert not dead, "\n".join(dead)


# --------------------------------------------------------------------------------------------------
# What the cluster says about itself


def live_nodes(cluster: Cluster) -> set[str]:
    """Node ids with a live registry entry (docs/cluster.md "Redis": ``meet443:node:<id>``)."""
    return {key.removeprefix("meet443:node:") for key in cluster.redis.keys("meet443:node:*")}


def home_of(cluster: Cluster, room: str) -> str | None:
    """The room's home node id, from its lease ``"<node id> <epoch>"``."""
    lease = cluster.redis.raw("GET", f"meet443:room:{room}:home").strip()
    return lease.rpartition(" ")[0] or None


def clients_of(node: ClusterNode) -> set[str]:
    """Addresses with an established TCP connection to the node's main port: who it serves."""
    out = node.ns.run(["ss", "-Htn", "state", "established", f"( sport = :{NODE_PORT} )"]).stdout
    return {line.split()[-1].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def client_ip(ns: Namespace) -> str:
    out = ns.run(["ip", "-4", "-o", "addr", "show", "scope", "global"]).stdout
    return out.split()[3].split("/")[0]


# --------------------------------------------------------------------------------------------------
# People


def join(
    cluster: Cluster, browsers: BrowserPool, people: list[Participant], log: list[str], url: str, name: str,
    client: Namespace,
) -> Participant:  # fmt: skip
    p = Participant(browsers.browser(client), name, log)
    people.append(p)
    sep = "&" if "?" in url else "?"
    p.open(f"{url}{sep}displayName={name}&autojoin=1")
    return p


def call_of_two(
    cluster: Cluster, browsers: BrowserPool, people: list[Participant], log: list[str], tag: str
) -> tuple[str, Participant, Participant, list[dict[str, Any]]]:
    """Ann through n1 and Bob through n2 in a new room; its name, them, and their states once
    media flows both ways."""
    room = room_name(tag)
    url = f"{cluster.public_url}/{room}"
    a = join(cluster, browsers, people, log, url, "Ann", cluster.clients[0])
    a.wait_phase("in-call")
    b = join(cluster, browsers, people, log, url, "Bob", cluster.clients[1])
    b.wait_phase("in-call")
    states = wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what=f"media both ways ({tag})")
    return room, a, b, states


def chat_texts(p: Participant) -> list[str]:
    """The texts this page shows as delivered (not pending), in its order."""
    return [m["text"] for m in p.state()["chat"] if not m.get("pending")]


def hear_each_other(people: list[Participant]) -> None:
    """Every page's level meter marks every other participant as speaking (the fake microphone
    beeps): audio arrives and is decoded, not only bytes."""
    ids = {p.state()["selfId"] for p in people}

    def everyone_heard() -> bool:
        return all(ids - {s["selfId"]} <= set(s["speaking"]) for s in (p.state() for p in people))

    wait_until(
        everyone_heard, 20, interval=0.1, what=lambda: f"speaking: {[p.state()['speaking'] for p in people]}"
    )


def chat_both_ways(a: Participant, b: Participant, texts: tuple[str, str]) -> None:
    send_chat(a, texts[0])
    send_chat(b, texts[1])
    wait_until(
        lambda: all(set(texts) <= set(chat_texts(p)) for p in (a, b)), 10, what=f"both showing {texts}"
    )


def on_edges(pairs: list[tuple[Namespace, ClusterNode]]) -> None:
    """Each client's browser holds a connection (its page and WebSocket) to the node its public
    name resolved to: the call really spans nodes. (It may also reach the room's home directly:
    TURN URIs name the home node, docs/cluster.md.)"""
    for client, node in pairs:
        ip = client_ip(client)
        assert ip in clients_of(node), f"{client.name} ({ip}) has no connection to {node.name}"


# --------------------------------------------------------------------------------------------------
# 1. Any node serves any meeting


def test_every_node_is_in_the_registry(cluster: Cluster) -> None:
    assert live_nodes(cluster) == {n.node_id for n in cluster.nodes}, cluster.logs(1500)


@pytest.mark.timeout(120)
def test_any_node_serves_any_meeting(
    cluster: Cluster, browsers: BrowserPool, people: list[Participant], console_log: list[str]
) -> None:
    c1, c2 = cluster.clients[0], cluster.clients[1]
    room, a, b, before = call_of_two(cluster, browsers, people, console_log, "two")
    wait_until(lambda: media_growing([a, b], before), 15, what="media still flowing")
    on_edges([(c1, cluster.nodes[0]), (c2, cluster.nodes[1])])
    # One node is the room's home (the least loaded of the first joiner's closest region, which
    # here is every node's): Ann and Bob reached different nodes, so at least one is relayed to it.
    assert home_of(cluster, room) in {n.node_id for n in cluster.nodes}
    for s in (a.state(), b.state()):
        assert sorted(p["displayName"] for p in s["participants"]) == ["Ann", "Bob"], s["participants"]
    hear_each_other([a, b])
    chat_both_ways(a, b, ("hello from n1", "hello from n2"))
    assert chat_texts(a) == chat_texts(b) == ["hello from n1", "hello from n2"]


def create_group_meeting(cluster: Cluster, via: ClusterNode) -> str:
    """``POST /v1/meetings`` (``roomMode: group``) on one node, with an API key made in the shared
    database; the meeting's URL (on the public name)."""
    argv = [sys.executable, "-m", "meet443", "api-key", "create", "--data-dir", str(via.workdir / "data")]
    argv += cluster.database_flags
    token = via.ns.run(argv).stdout.split()[0]
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    code = (
        "import json, ssl, sys, urllib.request\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
        "body = json.dumps({'endDate': sys.argv[3], 'roomMode': 'group'}).encode()\n"
        "req = urllib.request.Request(sys.argv[1], body, {'Authorization': 'Bearer ' + sys.argv[4],"
        " 'Content-Type': 'application/json'})\n"
        "print(urllib.request.urlopen(req, context=ctx, timeout=10).read().decode())\n"
    )
    done = via.ns.run(
        [sys.executable, "-c", code, f"{via.node_url}/v1/meetings", str(cluster.pki.ca), end, token]
    )
    return str(json.loads(done.stdout)["roomUrl"])


@pytest.mark.timeout(150)
def test_group_room_sfu_on_home_reached_through_another_node(
    cluster: Cluster, browsers: BrowserPool, people: list[Participant], console_log: list[str]
) -> None:
    c1, c3 = cluster.clients[0], cluster.clients[2]
    edge = cluster.nodes[2]
    url = create_group_meeting(cluster, edge)  # made on n3, stored for every node
    assert url.startswith(cluster.public_url + "/"), url
    room = url.rsplit("/", 1)[1]
    a = join(cluster, browsers, people, console_log, url, "Ann", c1)
    a.wait_phase("in-call")
    b = join(cluster, browsers, people, console_log, url, "Cy", c3)
    b.wait_phase("in-call")
    states = wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="group media both ways")
    wait_until(lambda: media_growing([a, b], states), 15, what="group media still flowing")
    assert all(s["mode"] == "group" for s in states), [s["mode"] for s in states]
    # The home is the placement's choice (the least loaded node of Ann's closest region).
    home = next(n for n in cluster.nodes if n.node_id == home_of(cluster, room))
    on_edges([(c1, cluster.nodes[0]), (c3, edge)])
    # Cy's signaling goes to n3, but the SFU he sends to is the home's: media goes to the home.
    detail = b.target.evaluate("window.meet443.state({detail: true})")["sfu"]
    used = [p["remote"] for p in detail["publishPairs"] if p["state"] == "succeeded" and p["nominated"]]
    assert used and all(home.ip in r for r in used), detail["publishPairs"]
    chat_both_ways(a, b, ("group hello from n1", "group hello from n3"))


# --------------------------------------------------------------------------------------------------
# 2. Placement


@pytest.mark.timeout(120)
def test_first_joins_racing_on_three_nodes_make_one_home(cluster: Cluster) -> None:
    client = cluster.clients[2]
    argv = ["env", f"REDISCLI_AUTH={cluster.redis.password}", sys.executable, PROBE,
            "--ca", str(cluster.pki.ca), "--public", PUBLIC_NAME, "--redis-host", DB_IP,
            "--trials", str(PLACEMENT_TRIALS), "--tag", str(int(time.time()) % 100000),
            *(arg for n in cluster.nodes for arg in ("--node", n.ip))]  # fmt: skip
    started = time.monotonic()
    done = client.run(argv, timeout=100)
    elapsed = time.monotonic() - started
    trials = [json.loads(line) for line in done.stdout.splitlines()]
    assert trials, done.stderr[-3000:]
    node_ids = {n.node_id for n in cluster.nodes}
    bad = []
    for t in trials:
        one_room = all(len(ids) == 3 and ids == t["ids"][0] for ids in t["ids"])
        if t["errors"] or t["hosts"].count(True) != 1 or not one_room or t["home"] is None:
            bad.append(t)
            continue
        home, _, epoch = t["home"].rpartition(" ")
        # One claim won, and no second claim ever bumped the fencing epoch.
        if home not in node_ids or epoch != "1" or t["epoch"] != "1":
            bad.append(t)
    assert not bad, f"{len(bad)} of {len(trials)} trials without exactly one home:\n" + "\n".join(
        json.dumps(t) for t in bad[:5]
    )
    assert len(trials) == PLACEMENT_TRIALS, done.stderr[-3000:]
    homes = {t["home"].rpartition(" ")[0] for t in trials}
    print(f"placement: {len(trials)} trials in {elapsed:.1f} s; homes used: {sorted(homes)}")


# --------------------------------------------------------------------------------------------------
# 3. Redis restarts mid-call


@pytest.mark.timeout(150)
def test_call_and_chat_survive_a_redis_restart(
    cluster: Cluster, browsers: BrowserPool, people: list[Participant], console_log: list[str]
) -> None:
    room, a, b, before = call_of_two(cluster, browsers, people, console_log, "redis")
    home = home_of(cluster, room)
    assert home is not None
    chat_both_ways(a, b, ("before a", "before b"))

    cluster.redis.stop()
    try:
        send_chat(a, "during a")
        send_chat(b, "during b")
        # Media does not go through Redis: frames keep decoding while it is down.
        during = wait_until(lambda: media_growing([a, b], before), 10, what="media while Redis is down")
        time.sleep(2)  # longer than a node's registry entry lives (NODE_TTL 3 s from the last beat)
    finally:
        cluster.redis.start()
    wait_until(lambda: live_nodes(cluster) == {n.node_id for n in cluster.nodes}, RECOVERY_S,
               what="every node back in the registry after the restart")  # fmt: skip
    wait_until(lambda: media_growing([a, b], during), 15, what="media after the restart")
    # Redis came back empty; the home takes its room's lease again, so a first join through a
    # third node finds the room instead of making a second one.
    wait_until(lambda: home_of(cluster, room) == home, RECOVERY_S,
               what="the home holding the room's lease again")  # fmt: skip
    c = join(cluster, browsers, people, console_log, f"{cluster.public_url}/{room}", "Cy", cluster.clients[2])
    c.wait_phase("in-call")
    wait_until(lambda: len(a.state()["participants"]) == 3, 10, what="Ann seeing Cy join through n3")
    assert sorted(p["displayName"] for p in c.state()["participants"]) == ["Ann", "Bob", "Cy"]
    send_chat(a, "after a")
    send_chat(b, "after b")
    expected = {"before a", "before b", "during a", "during b", "after a", "after b"}

    def everything_once() -> Any:
        views = [chat_texts(p) for p in (a, b)]
        return views if all(set(v) == expected for v in views) else False

    views = wait_until(
        everything_once, RECOVERY_S, what=lambda: f"all six messages: {[chat_texts(p) for p in (a, b)]}"
    )
    for view in views:
        assert len(view) == len(expected), f"a message shown twice: {view}"
    assert views[0] == views[1], views  # one order for everyone
    assert [s["selfId"] for s in (a.state(), b.state())] == [s["selfId"] for s in before]


# --------------------------------------------------------------------------------------------------
# 4. The firewall team's view


def cluster_firewall_rules(cluster: Cluster) -> str:
    """``meet443 firewall-rules`` for the live cluster (its /v1/network, admin key), as nftables
    for a client's own output chain."""
    via = cluster.nodes[0]
    argv = [
        sys.executable,
        "-m",
        "meet443",
        "api-key",
        "create",
        "--admin",
        "--data-dir",
        str(via.workdir / "data"),
    ]
    argv += cluster.database_flags
    key = via.ns.run(argv).stdout.split()[0]
    rules = via.ns.run([sys.executable, "-m", "meet443", "firewall-rules", "--url", cluster.public_url,
                        "--api-key", key, "--ca-file", str(cluster.pki.ca), "--format", "nftables",
                        "--hook", "output"])  # fmt: skip
    return rules.stdout


@pytest.mark.timeout(150)
def test_generated_firewall_rules_are_enough_for_a_call_across_nodes(
    cluster: Cluster, browsers: BrowserPool, people: list[Participant], console_log: list[str]
) -> None:
    ruleset = cluster_firewall_rules(cluster)
    for node in cluster.nodes:  # the cluster's view: every node, not only the one that answered
        assert f"ip daddr {node.ip} tcp dport {NODE_PORT}" in ruleset, ruleset
    c1, c3 = cluster.clients[0], cluster.clients[2]
    c3.load_nft(ruleset)
    try:
        url = create_group_meeting(cluster, cluster.nodes[0])
        a = join(cluster, browsers, people, console_log, url, "Ann", c1)
        a.wait_phase("in-call")
        b = join(cluster, browsers, people, console_log, url, "Fay", c3)  # behind the firewall, via n3
        b.wait_phase("in-call")
        states = wait_until(lambda: media_flowing([a, b]), MEDIA_TIMEOUT_S, what="media through the firewall")
        wait_until(lambda: media_growing([a, b], states), 15, what="media still flowing")
        on_edges([(c1, cluster.nodes[0]), (c3, cluster.nodes[2])])
        b.close()

        # The same table without its accept rules: nothing new may leave c3, and Fay cannot join.
        closed = "\n".join(line for line in ruleset.splitlines() if "ct state new accept" not in line)
        assert closed != ruleset
        c3.load_nft(closed)
        blocked = Participant(browsers.browser(c3), "Gil", console_log)
        people.append(blocked)
        with pytest.raises(PlaywrightError, match=r"ERR_|Timeout"):
            blocked.page.goto(
                f"{url}?displayName=Gil&autojoin=1", wait_until="domcontentloaded", timeout=8_000
            )
    finally:
        c3.run(["nft", "delete", "table", "inet", "meet443_out"], check=False)
