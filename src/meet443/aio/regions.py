"""``/v1/regions`` and ``/v1/rtt``: what a browser measures to choose its closest TURN relay.

::

    GET /v1/regions   no login  200 the live regions (meet443.regions.RegionMap JSON), same origin
    GET /v1/rtt       no login  204, readable by every region node's origin (CORS), no-store

The room page asks its own node for ``/v1/regions``, then times a few ``GET /v1/rtt`` to each region's
node in parallel (``static/js/regions.js``). Those requests cross origins, so ``/v1/rtt`` answers
with ``Access-Control-Allow-Origin`` for the deployment's own origins (the public URL and every
region node) and ``Timing-Allow-Origin`` likewise, which lets the page read the Resource Timing entry
(connection and request times) instead of only its own clock. It carries no body and must never be
cached: a cached answer measures nothing.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

from aiohttp import web

from meet443.regions import REGIONS_PATH, RTT_PATH, RegionMap

__all__ = ["add_region_routes", "page_origins"]


def page_origins(public_url: str, regions: RegionMap) -> frozenset[str]:
    """Origins that may read ``/v1/rtt``: wherever a meet443 page of this deployment is served from."""
    parts = urllib.parse.urlsplit(public_url)
    return frozenset({f"{parts.scheme}://{parts.netloc}".lower(), *(o.lower() for o in regions.origins())})


def add_region_routes(app: web.Application, public_url: str, regions: Callable[[], RegionMap]) -> None:
    """``regions()`` is read on every request: a cluster's registry changes it while nodes come and go."""

    async def region_list(request: web.Request) -> web.Response:
        return web.json_response(regions().to_json(), headers={"Cache-Control": "no-store"})

    async def rtt(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "no-store", "Vary": "Origin"}
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() in page_origins(public_url, regions()):
            headers["Access-Control-Allow-Origin"] = origin
            headers["Timing-Allow-Origin"] = origin
        return web.Response(status=204, headers=headers)

    app.router.add_get(REGIONS_PATH, region_list)
    app.router.add_get(RTT_PATH, rtt)
