"""Regions: the deployment's live regions, and which TURN servers a participant is given from the
round trips its browser measured to each (issue #16, docs/cluster.md "Closest relay").

Sans I/O. :class:`RegionMap` is what a node knows of the deployment's regions at one moment: its own
region and, for each live region, the node a browser pings (``GET /v1/rtt`` on its URL) and that
node's TURN URIs. Where the map comes from is the adapter's business: a single node describes
itself (:meth:`RegionMap.single`), a node started with ``--region-node`` lists the nodes given there,
and a cluster fills it from its node registry. :meth:`RegionMap.turn_uris` is the choice itself:
the closest measured region's URIs, then one fallback region's, at most :data:`MAX_TURN_URIS` in all.

The JSON form (``GET /v1/regions``, read by ``static/js/regions.js``)::

    {"version": 1, "self": "eu", "regions": [{"name": "eu", "rttUrl": "https://eu.meet.example/v1/rtt"}, ...]}
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

__all__ = [
    "MAX_REGIONS",
    "MAX_RTT_MS",
    "MAX_TURN_URIS",
    "NO_PROBE",
    "REGIONS_PATH",
    "REGION_NAME",
    "RTT_PATH",
    "Probe",
    "Region",
    "RegionMap",
    "RegionNode",
    "live_regions",
    "place_room",
]

#: Each URI costs the browser one TURN allocation per peer connection, and Firefox warns from five
#: ICE servers on: the closest region's three transports plus a fallback region's three.
MAX_TURN_URIS = 6
#: Where a browser measures its round trip to a node, and where it learns which nodes to measure.
RTT_PATH = "/v1/rtt"
REGIONS_PATH = "/v1/regions"
#: A region name as ``--region`` takes it and a ``join`` may carry it.
REGION_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}"
#: Regions a ``join`` may report; a deployment has a handful, so this only bounds what a client sends.
MAX_REGIONS = 16
#: A round trip longer than this is no measurement (the browser gives up long before).
MAX_RTT_MS = 10_000.0
VERSION = 1

_NAME = re.compile(REGION_NAME)


@dataclass(frozen=True, slots=True)
class Probe:
    """What a browser found when it timed each region's node (docs/signaling.md ``join.rtts`` and
    ``join.unreachable``): round trips in milliseconds, and the regions that never answered."""

    rtts: Mapping[str, float] = field(default_factory=dict)
    unreachable: frozenset[str] = frozenset()


#: A participant that sent no measurements (an older client, a script, a single region).
NO_PROBE = Probe()


@dataclass(frozen=True, slots=True)
class Region:
    """One live region as browsers see it: the node they ping and the TURN URIs they may be given."""

    name: str
    #: The node's origin, ``https://host[:port]``; the browser pings ``url + RTT_PATH``.
    url: str
    turn_uris: tuple[str, ...]

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"region name {self.name!r} must match {REGION_NAME}")
        parts = urllib.parse.urlsplit(self.url)
        # http only for a node behind a TLS-terminating proxy (like --public-url).
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"region {self.name}: {self.url!r} is not an https://host[:port] origin")

    @property
    def host(self) -> str:
        host = urllib.parse.urlsplit(self.url).hostname
        assert host is not None  # checked in __post_init__
        return host

    @property
    def rtt_url(self) -> str:
        return self.url.rstrip("/") + RTT_PATH


@dataclass(frozen=True, slots=True)
class RegionMap:
    """The live regions, in a stable order, and the name of this node's own region (``local``)."""

    local: str
    regions: tuple[Region, ...]

    def __post_init__(self) -> None:
        names = [r.name for r in self.regions]
        if len(set(names)) != len(names):
            raise ValueError(f"each region once, got {names}")
        if self.local not in names:
            raise ValueError(f"this node's region {self.local!r} is not among {names}")

    @classmethod
    def single(cls, name: str, url: str, turn_uris: Sequence[str]) -> RegionMap:
        """This node alone: one region, itself (the single-node default)."""
        return cls(name, (Region(name, url, tuple(turn_uris)),))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "self": self.local,
            "regions": [{"name": r.name, "rttUrl": r.rtt_url} for r in self.regions],
        }

    def origins(self) -> tuple[str, ...]:
        """Every region node's origin: what the web page may fetch from, and who may read ``/v1/rtt``."""
        return tuple(dict.fromkeys(r.url.rstrip("/") for r in self.regions))

    def ranked(self, rtts: Mapping[str, float], unreachable: Collection[str] = ()) -> tuple[Region, ...]:
        """The closest region and one fallback, from the browser's round trips in milliseconds.

        Regions the browser measured come first, closest first (ties by name). A fallback must be
        a region the browser reached: one it did not measure is used only when it measured no
        second region, and then this node's own region first (the browser reached it, it holds
        the signaling socket), then the others in list order, never one in ``unreachable`` (the
        browser's probe of it timed out or failed). With nothing but unreachable regions left
        there is no fallback: the closest region gets every URI.
        """
        by_name = {r.name: r for r in self.regions}
        measured = sorted(
            (rtt, name)
            for name, rtt in rtts.items()
            if name in by_name and math.isfinite(rtt) and 0 <= rtt <= MAX_RTT_MS
        )
        order = [by_name[name] for _, name in measured]
        for region in (by_name[self.local], *self.regions):
            if region not in order and region.name not in unreachable:
                order.append(region)
        # Every region failed the browser's probe, yet it reached this node: its own region then.
        return tuple(order[:2]) or (by_name[self.local],)

    def turn_uris(self, rtts: Mapping[str, float], unreachable: Collection[str] = ()) -> list[str]:
        """The closest region's TURN URIs, then its fallback's: at most :data:`MAX_TURN_URIS`, half each."""
        ranked = self.ranked(rtts, unreachable)
        # An even share each, so a region with several nodes cannot crowd out the fallback.
        share = MAX_TURN_URIS // len(ranked)
        return list(dict.fromkeys(uri for region in ranked for uri in region.turn_uris[:share]))


@dataclass(frozen=True, slots=True)
class RegionNode:
    """A live node as the cluster's registry describes it, reduced to what choosing a region needs."""

    region: str
    url: str
    turn_uris: tuple[str, ...]
    #: Participants over capacity, 0 to 1.
    load: float
    #: Not draining and not full.
    accepts: bool


def live_regions(own: Region, nodes: Iterable[RegionNode]) -> RegionMap:
    """The regions of a cluster: this node stands for its own region; every other region that has a
    node taking participants is represented by its least loaded one (ties by URL). Regions whose
    nodes all drain or are full are left out: nobody should be sent to their relays."""
    best: dict[str, RegionNode] = {}
    for node in nodes:
        if node.region == own.name or not node.accepts or not _NAME.fullmatch(node.region):
            continue
        held = best.get(node.region)
        if held is None or (node.load, node.url) < (held.load, held.url):
            best[node.region] = node
    others = (Region(n.region, n.url, n.turn_uris) for _, n in sorted(best.items()))
    return RegionMap(own.name, (own, *others))


class PlacementNode(Protocol):
    """What placing a room reads of a node (the cluster registry's ``NodeInfo`` has it)."""

    @property
    def node_id(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def load(self) -> int: ...
    @property
    def capacity(self) -> int: ...
    @property
    def draining(self) -> bool: ...


N = TypeVar("N", bound=PlacementNode)


def place_room(edge: N, live: Sequence[N], rtts: Mapping[str, float]) -> N | None:
    """Issue #16 item 3: the home of a new room, in its first joiner's region.

    The region is the closest one the first joiner measured (``join.rtts``) that has a node with
    room to spare; there the least loaded node (participants over its per-node limit, ``capacity``)
    that is not draining and below its limit, the edge first among equals, then by id. A joiner
    that measured nothing (an older client, a script) stays on the node it reached (``edge``) as
    long as that node takes rooms, else on the least loaded node of the edge's region. When no node
    of those regions has room, the least loaded node anywhere; ``None`` when no node takes rooms.

    The room stays where it was placed: it is not moved when later joiners are mostly elsewhere,
    since moving a live room costs every participant a reconnect, while each of them still relays
    through their own closest TURN.
    """
    nodes = {n.node_id: n for n in live}
    nodes.setdefault(edge.node_id, edge)
    open_nodes = [n for n in nodes.values() if not n.draining and n.load < n.capacity]

    def key(n: N) -> tuple[float, bool, str]:
        return (n.load / max(1, n.capacity), n.node_id != edge.node_id, n.node_id)

    measured = sorted(
        (rtt, name) for name, rtt in rtts.items() if math.isfinite(rtt) and 0 <= rtt <= MAX_RTT_MS
    )
    if not measured and edge in open_nodes:
        return edge
    for region in [name for _, name in measured] or [edge.region]:
        here = [n for n in open_nodes if n.region == region]
        if here:
            return min(here, key=key)
    return min(open_nodes, key=key, default=None)
