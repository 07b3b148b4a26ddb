"""Regions from the cluster's registry (docs/cluster.md "Regions"): three nodes on 127.0.0.2-4, each
its own region, sharing one real redis-server. ``/v1/regions`` lists what the registry says, a
``join`` carrying round trips gets the closest region's TURN URIs first, and the new room is placed
in that region (``meet443.regions.place_room``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from meet443.config import turn_uris_for
from tests.aio.test_cluster import (
    NODES,
    Cluster,
    Peer,
    cluster_files,
    common_port,
    home_of,
    run,
    session,
    start_node,
    wait_for_registry,
    wait_listening,
)
from tests.postgres import PostgresServer
from tests.redis_server import running_redis

REGIONS = ("eu", "us", "ap")


@pytest.fixture(scope="module")
def regional(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("cluster-regions")
    database, cert, key = cluster_files(tmp, postgres)
    with running_redis(tmp) as redis:
        port = common_port()
        nodes = [
            start_node(tmp, host, port, redis, cert, key, "--database", database, "--region", region)
            for host, region in zip(NODES, REGIONS, strict=True)
        ]
        try:
            for node in nodes:
                wait_listening(node)
            live = Cluster(redis, nodes, cert, port, api_key="")
            wait_for_registry(live, len(nodes))
            yield live
        finally:
            for node in nodes:
                node.stop()


def test_regions_come_from_the_registry_and_place_the_room(regional: Cluster) -> None:
    eu, us, ap = (f"https://{host}:{regional.port}" for host in NODES)

    async def scenario() -> None:
        async with session(regional) as http:
            async with http.get(f"{eu}/v1/regions") as listed:
                document = await listed.json()
            assert document["self"] == "eu"
            assert [(r["name"], r["rttUrl"]) for r in document["regions"]] == [
                ("eu", f"{eu}/v1/rtt"),
                ("ap", f"{ap}/v1/rtt"),
                ("us", f"{us}/v1/rtt"),
            ]
            async with http.get(f"{us}/v1/rtt", headers={"Origin": eu}) as rtt:
                assert rtt.status == 204
                assert rtt.headers["Access-Control-Allow-Origin"] == eu
                assert rtt.headers["Timing-Allow-Origin"] == eu

            # Ada reaches the eu node but measured us as closest: us's relay first, eu's second,
            # and her new room lives in us.
            ada = await Peer.on(http, regional.nodes[0])
            await ada.send(
                "join", v=1, room="near-us", displayName="Ada", rtts={"us": 8, "eu": 70, "ap": 140}
            )
            joined = await ada.recv()
            assert joined["type"] == "joined", joined
            assert joined["iceServers"][0]["urls"] == [
                *turn_uris_for(us, regional.port),
                *turn_uris_for(eu, regional.port),
            ]
            assert home_of(regional, "near-us") == regional.nodes[1].node_id

            # Without measurements the room stays where its first joiner arrived.
            bob = await Peer.on(http, regional.nodes[2])
            assert (await bob.join("no-measure", "Bob"))["type"] == "joined"
            assert home_of(regional, "no-measure") == regional.nodes[2].node_id

    run(scenario())


def test_a_node_that_stops_leaves_the_region_list(regional: Cluster) -> None:
    regional.nodes[2].stop()  # withdraws from the registry
    eu = f"https://{NODES[0]}:{regional.port}"

    async def scenario() -> None:
        names: list[str] = []
        async with session(regional) as http:
            # The eu node learns it at its next heartbeat (1 s).
            for _ in range(30):
                async with http.get(f"{eu}/v1/regions") as listed:
                    names = [r["name"] for r in (await listed.json())["regions"]]
                if names == ["eu", "us"]:
                    break
                await asyncio.sleep(0.1)
        assert names == ["eu", "us"]

    run(scenario())
