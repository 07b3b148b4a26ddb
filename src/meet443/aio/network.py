"""``/v1/network``: what a client network must reach, and credentials for checking it.

::

    GET  /v1/network                      admin API key  200 the NetworkDescription (meet443.network)
    POST /v1/network/check-credentials    no login       200 short-lived check credentials, 429 when
                                                          an address asks too often

``GET /v1/network`` takes the same API keys as the meetings API (``Authorization: Bearer``), with the
same budget of failed attempts per address: it lists every server address of the deployment, which
is for the IT department writing firewall rules (``meet443 firewall-rules --url``), not for everyone.

The check credentials (:mod:`meet443.proto.turn.check`) let ``meet443 check`` and the ``/check`` page
make TURN allocations before joining a meeting. The TURN core lets such an allocation relay only to
this server's own addresses, and they live 60 seconds; still, they are handed out without login, so
each address gets ``--check-rate`` per minute.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from meet443.aio.api import MeetingsApi, error_response
from meet443.network import NetworkDescription
from meet443.proto.ratelimit import KeyedRateLimiter
from meet443.proto.turn.check import CHECK_CREDENTIAL_TTL, check_credentials

__all__ = ["CHECK_CREDENTIALS_PATH", "NETWORK_PATH", "NetworkEndpoints", "add_network_routes"]

NETWORK_PATH = "/v1/network"
CHECK_CREDENTIALS_PATH = "/v1/network/check-credentials"
#: Addresses whose check-credential budget is remembered (least recently used go first).
CHECK_MAX_ADDRESSES = 4096


@dataclass(frozen=True)
class NetworkEndpoints:
    """What the two endpoints need from the running server."""

    description: NetworkDescription
    turn_secret: str
    turn_uris: Sequence[str]
    relay_ports: tuple[int, int]
    #: The second UDP port (RFC 5780 "change port"), known once it is bound.
    other_udp_port: Callable[[], int | None]
    check_rate_per_minute: int = 6
    #: The SFU ports, one per media worker (the first is ``other_udp_port``), lowest and highest.
    sfu_ports: tuple[int, int] | None = None
    #: In a cluster: every live node's description, from the registry (docs/cluster.md).
    nodes: Callable[[], NetworkDescription] | None = None


class NetworkApi:
    def __init__(
        self,
        endpoints: NetworkEndpoints,
        meetings: MeetingsApi,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        token: Callable[[], str] = lambda: secrets.token_urlsafe(12),
    ) -> None:
        self.endpoints = endpoints
        self.meetings = meetings
        self._clock = clock
        self._monotonic = monotonic
        self._token = token
        per_minute = float(endpoints.check_rate_per_minute)
        self._limit = KeyedRateLimiter(per_minute / 60.0, per_minute, CHECK_MAX_ADDRESSES)

    async def network(self, request: web.Request) -> web.Response:
        await self.meetings.authenticate(request)
        nodes = self.endpoints.nodes
        description = self.endpoints.description if nodes is None else nodes()
        return web.json_response(description.to_json(), headers={"Cache-Control": "no-store"})

    async def check_credentials(self, request: web.Request) -> web.Response:
        if not self._limit.allow(request.remote or "", self._monotonic()):
            retry = max(1, math.ceil(60.0 / self.endpoints.check_rate_per_minute))
            raise error_response(
                web.HTTPTooManyRequests,
                "rate-limited",
                "too many network checks from this address; try again in a minute",
                {"Retry-After": str(retry)},
            )
        username, password = check_credentials(
            self.endpoints.turn_secret, self._token(), self._clock(), CHECK_CREDENTIAL_TTL
        )
        uris = list(self.endpoints.turn_uris)
        body = {
            "username": username,
            "credential": password,
            "ttl": CHECK_CREDENTIAL_TTL,
            "iceServers": [{"urls": uris, "username": username, "credential": password}],
            "otherUdpPort": self.endpoints.other_udp_port(),
            "relayPorts": list(self.endpoints.relay_ports),
        }
        if self.endpoints.sfu_ports is not None:
            body["sfuPorts"] = list(self.endpoints.sfu_ports)
        return web.json_response(body, headers={"Cache-Control": "no-store"})


def add_network_routes(
    app: web.Application,
    endpoints: NetworkEndpoints,
    meetings: MeetingsApi,
    *,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> NetworkApi:
    """Register both endpoints; the meetings API (``add_api_routes(..., network=True)``) documents them."""
    api = NetworkApi(endpoints, meetings, clock=clock, monotonic=monotonic)
    network = app.router.add_resource(NETWORK_PATH)
    network.add_route("GET", api.network)
    network.add_route("HEAD", api.network)  # aiohttp sends the headers only
    network.add_route("*", MeetingsApi.method_not_allowed("GET, HEAD"))
    check = app.router.add_resource(CHECK_CREDENTIALS_PATH)
    check.add_route("POST", api.check_credentials)
    check.add_route("*", MeetingsApi.method_not_allowed("POST"))
    return api
