"""meet443.regions: which TURN servers a participant gets from the round trips its browser measured."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from meet443.aio.http import render_metrics
from meet443.aio.relay import join_rtts
from meet443.config import load_serve_config, turn_uris_for
from meet443.network import NetworkDescription
from meet443.proto.signaling.room import SignalingServer
from meet443.regions import MAX_TURN_URIS, Region, RegionMap, RegionNode, live_regions, place_room
from meet443.state import NodeInfo


def region(name: str) -> Region:
    url = f"https://{name}.meet.example"
    return Region(name, url, tuple(turn_uris_for(url, 443)))


EU, US, AP = region("eu"), region("us"), region("ap")
WORLD = RegionMap("us", (EU, US, AP))


class TestChoice:
    def test_closest_measured_then_the_next_closest(self) -> None:
        assert WORLD.ranked({"eu": 61.0, "us": 12.0, "ap": 120.0}) == (US, EU)
        assert WORLD.ranked({"eu": 9.0, "us": 60.0, "ap": 50.0}) == (EU, AP)

    def test_uris_are_the_closest_three_then_the_fallback_three(self) -> None:
        uris = WORLD.turn_uris({"ap": 10.0, "eu": 60.0, "us": 120.0})
        assert uris == [*AP.turn_uris, *EU.turn_uris]
        assert len(uris) == MAX_TURN_URIS

    def test_unmeasured_regions_are_a_last_resort_with_this_node_first(self) -> None:
        assert WORLD.ranked({"ap": 30.0}) == (AP, US)
        assert WORLD.ranked({"us": 30.0}) == (US, EU)
        assert WORLD.ranked({}) == (US, EU)

    def test_a_measured_fallback_beats_any_unmeasured_one_even_this_nodes(self) -> None:
        assert WORLD.ranked({"ap": 30.0, "eu": 200.0}) == (AP, EU)
        assert WORLD.ranked({"ap": 30.0, "eu": 200.0}, unreachable={"us"}) == (AP, EU)

    def test_a_region_the_browser_could_not_reach_is_never_the_fallback(self) -> None:
        assert WORLD.ranked({"ap": 30.0}, unreachable={"us"}) == (AP, EU)
        assert WORLD.turn_uris({"ap": 30.0}, unreachable={"us"}) == [*AP.turn_uris, *EU.turn_uris]
        assert WORLD.ranked({}, unreachable={"us", "eu"}) == (AP,)

    def test_with_no_reachable_second_region_the_closest_gets_every_uri(self) -> None:
        assert WORLD.ranked({"eu": 30.0}, unreachable={"us", "ap"}) == (EU,)
        big = Region("eu", EU.url, EU.turn_uris + tuple(turn_uris_for("https://eu2.meet.example", 443)))
        world = RegionMap("us", (big, US, AP))
        assert world.turn_uris({"eu": 30.0}, unreachable={"us", "ap"}) == list(big.turn_uris)

    def test_all_unreachable_leaves_this_nodes_region_which_the_browser_reached(self) -> None:
        assert WORLD.ranked({}, unreachable={"us", "eu", "ap"}) == (US,)

    def test_a_measured_region_counts_as_reached_whatever_the_list_says(self) -> None:
        assert WORLD.ranked({"ap": 30.0, "eu": 40.0}, unreachable={"eu"}) == (AP, EU)

    def test_unknown_regions_and_impossible_values_are_ignored(self) -> None:
        assert WORLD.ranked({"mars": 1.0, "ap": math.inf, "eu": -5.0, "us": 99.0}) == (US, EU)
        assert WORLD.ranked({"ap": math.nan, "eu": 1e9}) == (US, EU)

    def test_ties_go_by_name(self) -> None:
        assert WORLD.ranked({"us": 20.0, "eu": 20.0, "ap": 20.0}) == (AP, EU)

    def test_a_region_with_many_nodes_leaves_room_for_the_fallback(self) -> None:
        big = Region("eu", EU.url, EU.turn_uris + tuple(turn_uris_for("https://eu2.meet.example", 443)))
        world = RegionMap("eu", (big, US))
        uris = world.turn_uris({"eu": 5.0, "us": 50.0})
        assert uris == [*EU.turn_uris, *US.turn_uris]

    def test_a_single_node_hands_out_its_own_uris(self) -> None:
        alone = RegionMap.single(
            "default", "https://meet.example", turn_uris_for("https://meet.example", 443)
        )
        assert alone.turn_uris({}) == turn_uris_for("https://meet.example", 443)
        assert alone.turn_uris({"default": 3.0, "other": 1.0}) == turn_uris_for("https://meet.example", 443)


class TestDescription:
    def test_json_lists_each_region_and_its_rtt_url(self) -> None:
        assert WORLD.to_json() == {
            "version": 1,
            "self": "us",
            "regions": [
                {"name": "eu", "rttUrl": "https://eu.meet.example/v1/rtt"},
                {"name": "us", "rttUrl": "https://us.meet.example/v1/rtt"},
                {"name": "ap", "rttUrl": "https://ap.meet.example/v1/rtt"},
            ],
        }
        assert WORLD.origins() == (EU.url, US.url, AP.url)

    @pytest.mark.parametrize(
        ("name", "url"),
        [
            ("bad name", "https://a.example"),
            ("", "https://a.example"),
            ("eu", "ftp://a.example"),
            ("eu", "https://a.example/path"),
            ("eu", "https://"),
        ],
    )
    def test_bad_regions_are_refused(self, name: str, url: str) -> None:
        with pytest.raises(ValueError):
            Region(name, url, ())

    def test_each_region_once_and_this_node_among_them(self) -> None:
        with pytest.raises(ValueError, match="each region once"):
            RegionMap("eu", (EU, EU))
        with pytest.raises(ValueError, match="not among"):
            RegionMap("ap", (EU, US))


class TestLiveRegions:
    """A cluster's registry as regions: one node per region, the least loaded that takes participants."""

    @staticmethod
    def node(region: str, host: str, load: float = 0.0, accepts: bool = True) -> RegionNode:
        url = f"https://{host}"
        return RegionNode(region, url, tuple(turn_uris_for(url, 443)), load, accepts)

    def test_least_loaded_node_that_accepts_stands_for_its_region(self) -> None:
        nodes = [
            self.node("eu", "eu1.example", 0.1),  # this node's region: this node stands for it
            self.node("us", "us1.example", 0.5),
            self.node("us", "us2.example", 0.2),
            self.node("us", "us3.example", 0.0, accepts=False),
            self.node("ap", "ap1.example", 0.9, accepts=False),
            self.node("", "old.example"),  # a node of a version without regions
        ]
        regions = live_regions(EU, nodes)
        assert [(r.name, r.url) for r in regions.regions] == [("eu", EU.url), ("us", "https://us2.example")]
        assert regions.local == "eu"

    def test_alone_in_the_registry_is_one_region(self) -> None:
        assert live_regions(EU, []).regions == (EU,)


def test_region_nodes_are_published_host_names(tmp_path: Path) -> None:
    config = load_serve_config(
        [
            "--data-dir", str(tmp_path), "--public-url", "https://eu.meet.example", "--region", "eu",
            "--region-node", "us=https://us.meet.example", "--region-node", "ap=https://203.0.113.9",
        ],
        {},
    )  # fmt: skip
    description = NetworkDescription.from_config(config)
    assert description.hostnames == ("eu.meet.example", "us.meet.example")
    assert NetworkDescription.from_json(description.to_json()) == description


@dataclass(frozen=True)
class Node:
    node_id: str
    region: str
    load: int = 0
    capacity: int = 100
    draining: bool = False


class TestPlacement:
    """Issue #16 item 3: a group room is placed in its first joiner's region, least loaded first."""

    EU1, EU2 = Node("eu1", "eu", load=40), Node("eu2", "eu", load=10)
    US1, AP1 = Node("us1", "us", load=0), Node("ap1", "ap", load=0)
    LIVE = (EU1, EU2, US1, AP1)

    def test_the_first_joiners_closest_region_least_loaded_node(self) -> None:
        assert place_room(self.US1, self.LIVE, {"eu": 12.0, "us": 80.0}) is self.EU2
        assert place_room(self.EU1, self.LIVE, {"eu": 90.0, "ap": 15.0}) is self.AP1

    def test_without_measurements_the_edge_while_it_takes_rooms(self) -> None:
        assert place_room(self.EU1, self.LIVE, {}) is self.EU1
        full = Node("eu1", "eu", load=100, capacity=100)
        assert place_room(full, [full, self.EU2, self.US1], {}) is self.EU2  # same region first
        draining = Node("eu1", "eu", draining=True)
        assert place_room(draining, [draining, self.US1], {}) is self.US1
        assert place_room(full, [full, Node("b", "eu", draining=True)], {}) is None

    def test_registry_entries_are_placed_as_they_are(self) -> None:
        def info(node_id: str, region: str, load: int) -> NodeInfo:
            url = f"https://{node_id}.example"
            return NodeInfo(
                node_id=node_id,
                node_url=url,
                region=region,
                addresses=("192.0.2.1",),
                port=443,
                sfu_ports=(443,),
                relay_ports=(50000, 50999),
                load=load,
                capacity=100,
            )

        eu, us_busy, us_idle = info("eu", "eu", 0), info("us1", "us", 50), info("us2", "us", 5)
        assert place_room(eu, [eu, us_busy, us_idle], {"us": 20.0, "eu": 90.0}) is us_idle

    def test_the_edge_wins_a_tie_so_no_relay_hop(self) -> None:
        a, b = Node("a", "eu"), Node("b", "eu")
        assert place_room(b, [a, b], {"eu": 5.0}) is b
        assert place_room(Node("x", "us"), [a, b], {"eu": 5.0}) is a

    def test_full_and_draining_nodes_are_skipped_then_the_next_region(self) -> None:
        full = Node("eu1", "eu", load=100, capacity=100)
        draining = Node("eu2", "eu", draining=True)
        us = Node("us1", "us", load=99, capacity=100)
        assert place_room(full, [full, draining, us], {"eu": 5.0, "us": 50.0}) is us
        assert place_room(full, [full, draining, us], {"eu": 5.0}) is us  # anywhere with room
        assert place_room(full, [full, draining], {"eu": 5.0}) is None

    def test_load_is_relative_to_each_nodes_limit(self) -> None:
        small, big = Node("small", "eu", load=5, capacity=10), Node("big", "eu", load=20, capacity=100)
        assert place_room(small, [small, big], {"eu": 3.0}) is big

    def test_impossible_measurements_are_ignored(self) -> None:
        assert place_room(self.EU1, self.LIVE, {"eu": math.nan, "ap": -1.0}) is self.EU1


def test_a_joins_rtts_reach_placement_validated() -> None:
    join = b'{"type":"join","v":1,"room":"r","displayName":"A","rtts":{"eu":12.5}}'
    assert join_rtts(join) == {"eu": 12.5}
    assert join_rtts(join.replace(b"12.5", b"-1")) == {}  # the core answers bad-message
    assert join_rtts(b'{"type":"join","v":1,"room":"r","displayName":"A"}') == {}
    assert join_rtts(b'{"type":"ping"}') == {}


def test_regions_clients_cannot_reach_are_a_metric() -> None:
    """docs/cluster.md "Regions" item 3: ``meet443_region_probe_failures_total{region}``."""
    signaling = SignalingServer(
        ice_servers=lambda participant, now, probe: ([], 3600),
        token=lambda n: "t" * n,
        known_regions=lambda: ("eu", "us"),
    )
    signaling.counters.region_probe_failures.update({"eu": 2, "us": 1})
    lines = render_metrics(None, signaling).splitlines()
    assert 'meet443_region_probe_failures_total{region="eu"} 2' in lines
    assert 'meet443_region_probe_failures_total{region="us"} 1' in lines
