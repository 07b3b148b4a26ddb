"""The meetings REST API: ``/v1/meetings`` for API-key holders, ``/v1/openapi.json`` for everyone.

::

    POST   /v1/meetings             {"endDate", "roomMode", "roomNamePrefix"?}  201 meeting + hostRoomUrl
    GET    /v1/meetings/{meetingId}                                             200 meeting
    DELETE /v1/meetings/{meetingId}                                             204, the meeting ends
    GET    /v1/openapi.json                                                     200 the OpenAPI 3.1 document

The network endpoints (``/v1/network``, :mod:`meet443.aio.network`) use this module's authentication
and are described in the same OpenAPI document when ``network=True``.

Requests carry ``Authorization: Bearer m443_<id>_<secret>`` (``meet443 api-key create``). A key sees
and deletes only the meetings it created, unless it is an admin key (``--admin``); another key's
meeting is a 404, as if it did not exist. Deleting a meeting ends it for everyone in it (the
``on_meeting_deleted`` callback, which ``app.py`` points at the signaling service). Errors are
``{"error": {"code", "message"}}``. Every URL in an answer is built from the configured public URL, never
from the request's ``Host`` header, which the client controls. While the store cannot be reached
(PostgreSQL restarting), requests get ``503 store-unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import re
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web

from meet443.config import parse_public_url
from meet443.exceptions import StoreUnavailable
from meet443.meetings import (
    MAX_ROOM_NAME_PREFIX,
    ApiKey,
    Meeting,
    NewMeeting,
    check_meeting_end,
    check_room_name_prefix,
)
from meet443.proto.ratelimit import KeyedRateLimiter
from meet443.proto.signaling.admission import RoomMode
from meet443.store import MeetingStore

__all__ = [
    "CreateMeetingRequest",
    "FailedAuthLimit",
    "MeetingsApi",
    "add_api_routes",
    "error_response",
    "openapi_document",
]

logger = logging.getLogger("meet443.api")

MEETINGS_PATH = "/v1/meetings"
MEETING_PATH = "/v1/meetings/{meetingId}"
OPENAPI_PATH = "/v1/openapi.json"
#: A create request is a few hundred bytes.
MAX_BODY_BYTES = 16 * 1024
#: Failed API-key checks per address: a burst of 10, then one every 10 s.
FAILED_AUTH_RATE = 0.1
FAILED_AUTH_BURST = 10.0
FAILED_AUTH_MAX_ADDRESSES = 4096

_MEETING_ID = re.compile(r"[0-9a-f]{32}")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_JSON = "application/json"


class CreateMeetingRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True, frozen=True):
    """The body of ``POST /v1/meetings``."""

    end_date: datetime.datetime
    room_mode: RoomMode
    room_name_prefix: str | None = None


class FailedAuthLimit:
    """Per-address budget of failed API-key checks.

    Failures spend tokens of a :class:`KeyedRateLimiter`. When an address has none left, it is shut out
    until one token has refilled, and while shut out its invalid keys get 429 instead of 401. A valid
    key is always let in: people and a CRM behind one NAT address share it with whoever is guessing,
    and guessing a key (256 random bits) is hopeless anyway; the budget bounds how fast an address
    learns that its guesses fail. Memory is bounded by ``max_addresses`` in both tables (least
    recently used entries go first).
    """

    def __init__(
        self,
        rate: float = FAILED_AUTH_RATE,
        burst: float = FAILED_AUTH_BURST,
        max_addresses: int = FAILED_AUTH_MAX_ADDRESSES,
    ) -> None:
        self._failures = KeyedRateLimiter(rate, burst, max_addresses)
        self._shut_out: OrderedDict[str, float] = OrderedDict()
        self._max_addresses = max_addresses
        self._refill_seconds = 1.0 / rate

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds until ``address`` may try again, or None if it may try now."""
        until = self._shut_out.get(address)
        if until is None:
            return None
        if now >= until:
            del self._shut_out[address]
            return None
        return until - now

    def failed(self, address: str, now: float) -> bool:
        """Count a failure; False when it was over the budget (answer 429, not 401)."""
        if self._failures.allow(address, now):
            return True
        self._shut_out[address] = now + self._refill_seconds
        self._shut_out.move_to_end(address)
        if len(self._shut_out) > self._max_addresses:
            self._shut_out.popitem(last=False)
        return False


# --------------------------------------------------------------------------------------------------
# Errors and bodies


def _error_text(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def error_response(
    status: type[web.HTTPException], code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.HTTPException:
    """``{"error": {"code", "message"}}`` with ``status``, not cached."""
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    return status(text=_error_text(code, message), content_type=_JSON, headers=all_headers)


_error = error_response

#: Seconds a client should wait before retrying while the store is unreachable.
STORE_RETRY_AFTER = 5


def _store_unavailable(exc: StoreUnavailable) -> web.HTTPException:
    logger.warning("meetings API: %s", exc)
    return _error(
        web.HTTPServiceUnavailable,
        "store-unavailable",
        "the meetings database cannot be reached; try again shortly",
        {"Retry-After": str(STORE_RETRY_AFTER)},
    )


def _answer_503_while_unreachable(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreUnavailable as exc:
            raise _store_unavailable(exc) from None

    return answer


def _iso(ms: int) -> str:
    """``2030-01-01T12:00:00.000Z``, as JavaScript's ``Date.prototype.toISOString`` writes it."""
    moment = _EPOCH + datetime.timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(moment: datetime.datetime) -> int:
    return (moment - _EPOCH) // datetime.timedelta(milliseconds=1)


class MeetingsApi:
    """The handlers; :func:`add_api_routes` builds one and registers them."""

    def __init__(
        self,
        store: MeetingStore,
        public_url: str,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        failed_auth: FailedAuthLimit | None = None,
        network: bool = False,
        on_meeting_deleted: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self._on_meeting_deleted = on_meeting_deleted
        self.public_url = parse_public_url(public_url)
        self._clock = clock
        self._monotonic = monotonic
        self.failed_auth = failed_auth or FailedAuthLimit()
        self._openapi = json.dumps(openapi_document(self.public_url, network=network), indent=1).encode()

    def room_url(self, room_name: str) -> str:
        return f"{self.public_url}/{room_name}"

    def _meeting_body(self, meeting: Meeting) -> dict[str, str]:
        return {
            "meetingId": meeting.meeting_id,
            "roomName": meeting.room_name,
            "roomUrl": self.room_url(meeting.room_name),
            "roomMode": meeting.mode.value,
            "startDate": _iso(meeting.start_ms),
            "endDate": _iso(meeting.end_ms),
        }

    def _created_body(self, created: NewMeeting) -> dict[str, str]:
        body = self._meeting_body(created.meeting)
        key = urllib.parse.quote(created.host_room_key, safe="")
        body["hostRoomUrl"] = f"{body['roomUrl']}?roomKey={key}"
        return body

    async def authenticate(self, request: web.Request) -> ApiKey:
        """The request's valid API key; raises 401, or 429 for an invalid one from an address over
        its budget."""
        address = request.remote or ""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        key = None
        if scheme.lower() == "bearer" and token.strip():
            try:
                key = await self.store.api_keys.verify(token.strip())
            except StoreUnavailable as exc:
                # /v1/network authenticates here too.
                raise _store_unavailable(exc) from None
        if key is not None:
            return key
        retry_after = self.failed_auth.retry_after(address, self._monotonic())
        if retry_after is not None:
            raise self._rate_limited(retry_after)
        if not self.failed_auth.failed(address, self._monotonic()):
            raise self._rate_limited(self.failed_auth.retry_after(address, self._monotonic()) or 1.0)
        # RFC 6750 §3: say which scheme is expected, and that a token that was sent is not valid.
        challenge = 'Bearer realm="meet443"' + (', error="invalid_token"' if token.strip() else "")
        raise _error(
            web.HTTPUnauthorized,
            "unauthorized",
            "send Authorization: Bearer <API key> (create one with `meet443 api-key create`)",
            {"WWW-Authenticate": challenge},
        )

    @staticmethod
    def _rate_limited(retry_after: float) -> web.HTTPException:
        return _error(
            web.HTTPTooManyRequests,
            "rate-limited",
            "too many requests with an invalid API key from this address",
            {"Retry-After": str(max(1, math.ceil(retry_after)))},
        )

    @staticmethod
    def _meeting_id(request: web.Request) -> str:
        meeting_id = request.match_info["meetingId"]
        if not _MEETING_ID.fullmatch(meeting_id):
            raise _error(web.HTTPNotFound, "not-found", "no such meeting")
        return meeting_id

    async def create_meeting(self, request: web.Request) -> web.Response:
        key = await self.authenticate(request)
        body = await request.read()
        if len(body) > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(
                MAX_BODY_BYTES,
                len(body),
                text=_error_text("too-large", f"the body is over {MAX_BODY_BYTES} bytes"),
                content_type=_JSON,
            )
        try:
            wanted = msgspec.json.decode(body, type=CreateMeetingRequest)
        except msgspec.ValidationError as exc:
            raise _error(web.HTTPUnprocessableEntity, "invalid-request", str(exc)) from None
        except msgspec.DecodeError:
            raise _error(web.HTTPBadRequest, "bad-request", "the body is not valid JSON") from None
        if wanted.end_date.tzinfo is None:
            raise _error(
                web.HTTPUnprocessableEntity,
                "invalid-request",
                "endDate needs a time zone, for example 2030-01-01T12:00:00Z",
            )
        now_ms = int(self._clock() * 1000)
        end_ms = _ms(wanted.end_date)
        try:
            check_meeting_end(end_ms, now_ms)
            if wanted.room_name_prefix is not None:
                check_room_name_prefix(wanted.room_name_prefix)
        except ValueError as exc:
            raise _error(web.HTTPUnprocessableEntity, "invalid-request", str(exc)) from None
        created = await self.store.create(
            end_ms=end_ms,
            mode=wanted.room_mode,
            now_ms=now_ms,
            room_name_prefix=wanted.room_name_prefix,
            created_by=key.key_id,
        )
        return web.json_response(
            self._created_body(created),
            status=201,
            headers={
                "Cache-Control": "no-store",
                "Location": f"{self.public_url}/v1/meetings/{created.meeting.meeting_id}",
            },
        )

    async def get_meeting(self, request: web.Request) -> web.Response:
        key = await self.authenticate(request)
        meeting = await self.store.get(self._meeting_id(request), created_by=key.scope)
        if meeting is None:
            raise _error(web.HTTPNotFound, "not-found", "no such meeting")
        return web.json_response(self._meeting_body(meeting), headers={"Cache-Control": "no-store"})

    async def delete_meeting(self, request: web.Request) -> web.Response:
        key = await self.authenticate(request)
        deleted = await self.store.delete(self._meeting_id(request), created_by=key.scope)
        if deleted is None:
            raise _error(web.HTTPNotFound, "not-found", "no such meeting")
        if self._on_meeting_deleted is not None:
            self._on_meeting_deleted(deleted.room_name)
        return web.Response(status=204, headers={"Cache-Control": "no-store"})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._openapi, content_type=_JSON, headers={"Cache-Control": "no-cache"})

    @staticmethod
    def method_not_allowed(allowed: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A JSON 405 for the other methods on a resource (aiohttp's own is plain text)."""

        async def handler(request: web.Request) -> web.Response:
            return web.Response(
                status=405,
                text=_error_text(
                    "method-not-allowed", f"{request.method} is not allowed here; use {allowed}"
                ),
                content_type=_JSON,
                headers={"Allow": allowed},
            )

        return handler


def add_api_routes(
    app: web.Application,
    store: MeetingStore,
    public_url: str,
    *,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    failed_auth: FailedAuthLimit | None = None,
    network: bool = False,
    on_meeting_deleted: Callable[[str], None] | None = None,
) -> MeetingsApi:
    """Register the API on ``app``; ``public_url`` is the only source of the URLs in answers.

    ``network``: the caller also registers :func:`meet443.aio.network.add_network_routes`, so the
    OpenAPI document describes those paths too. ``on_meeting_deleted(room_name)``: a meeting was
    deleted; whoever is in it must be sent away.
    """
    api = MeetingsApi(
        store,
        public_url,
        clock=clock,
        monotonic=monotonic,
        failed_auth=failed_auth,
        network=network,
        on_meeting_deleted=on_meeting_deleted,
    )
    meetings = app.router.add_resource(MEETINGS_PATH)
    meetings.add_route("POST", _answer_503_while_unreachable(api.create_meeting))
    meetings.add_route("*", api.method_not_allowed("POST"))
    meeting = app.router.add_resource(MEETING_PATH)
    meeting.add_route("GET", _answer_503_while_unreachable(api.get_meeting))
    # aiohttp sends the headers only
    meeting.add_route("HEAD", _answer_503_while_unreachable(api.get_meeting))
    meeting.add_route("DELETE", _answer_503_while_unreachable(api.delete_meeting))
    meeting.add_route("*", api.method_not_allowed("GET, HEAD, DELETE"))
    app.router.add_get(OPENAPI_PATH, api.openapi)
    return api


# --------------------------------------------------------------------------------------------------
# The OpenAPI document


def _error_response(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def openapi_document(public_url: str, *, network: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the handlers above, with ``public_url`` as the server.

    ``network``: include ``/v1/network`` and ``/v1/network/check-credentials``.
    """
    document = _meetings_document(public_url)
    if network:
        _add_network_paths(document)
    return document


def _add_network_paths(document: dict[str, Any]) -> None:
    ports = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
    strings = {"type": "array", "items": {"type": "string"}}
    document["paths"]["/v1/network"] = {
        "get": {
            "operationId": "getNetwork",
            "summary": "Host names, ports, protocols and server addresses a client network must reach",
            "responses": {
                "200": {
                    "description": "The deployment's network contract; `meet443 firewall-rules --url` "
                    "turns it into firewall rules",
                    "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Network"}}},
                },
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "429": {"$ref": "#/components/responses/RateLimited"},
            },
        }
    }
    document["paths"]["/v1/network/check-credentials"] = {
        "post": {
            "operationId": "createCheckCredentials",
            "summary": "Short-lived TURN credentials for a network check (they relay only to this server)",
            "security": [],
            "responses": {
                "200": {
                    "description": "Credentials valid for `ttl` seconds",
                    "content": {_JSON: {"schema": {"$ref": "#/components/schemas/CheckCredentials"}}},
                },
                "429": {"$ref": "#/components/responses/RateLimited"},
            },
        }
    }
    schemas = document["components"]["schemas"]
    schemas["Network"] = {
        "type": "object",
        "required": ["version", "publicUrl", "hostnames", "services", "nodes"],
        "properties": {
            "version": {"const": 1},
            "publicUrl": {"type": "string", "format": "uri"},
            "hostnames": strings,
            "services": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "purpose", "protocol", "ports", "destination", "required"],
                    "properties": {
                        "name": {"type": "string"},
                        "purpose": {"type": "string"},
                        "protocol": {"enum": ["tcp", "udp"]},
                        "ports": ports,
                        "destination": {"enum": ["servers", "any"]},
                        "required": {"type": "boolean"},
                    },
                },
            },
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "name",
                        "self",
                        "hostnames",
                        "addresses",
                        "tcpPort",
                        "udpPort",
                        "relayPorts",
                    ],
                    "properties": {
                        "name": {"type": "string"},
                        "self": {"type": "boolean"},
                        "hostnames": strings,
                        "addresses": strings,
                        "tcpPort": {"type": "integer"},
                        "udpPort": {"type": "integer"},
                        "relayPorts": ports,
                    },
                },
            },
        },
    }
    schemas["CheckCredentials"] = {
        "type": "object",
        "required": ["username", "credential", "ttl", "iceServers", "otherUdpPort", "relayPorts"],
        "properties": {
            "username": {"type": "string", "description": "`<expiry>:check-<random>`"},
            "credential": {"type": "string"},
            "ttl": {"type": "integer"},
            "iceServers": {"type": "array", "items": {"type": "object"}},
            "otherUdpPort": {
                "type": ["integer", "null"],
                "description": "the second UDP port, which answers STUN Binding requests and "
                "CHANGE-REQUEST (RFC 5780)",
            },
            "relayPorts": ports,
        },
    }


def _meetings_document(public_url: str) -> dict[str, Any]:
    date_time = {"type": "string", "format": "date-time"}
    url = {"type": "string", "format": "uri"}
    meeting_id = {
        "name": "meetingId",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
    }
    json_body = {_JSON: {"schema": {"$ref": "#/components/schemas/Meeting"}}}
    refs = {
        status: {"$ref": f"#/components/responses/{name}"}
        for status, name in [
            ("400", "BadRequest"),
            ("401", "Unauthorized"),
            ("404", "NotFound"),
            ("413", "TooLarge"),
            ("422", "Invalid"),
            ("429", "RateLimited"),
            ("503", "Unavailable"),
        ]
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "meet443 meetings API",
            "version": "1",
            "description": "Create meetings with unguessable room names that exist until their end date. "
            "Authenticate with an API key from `meet443 api-key create`. A key sees and deletes only "
            "the meetings it created (others are `404`), unless it is an admin key "
            "(`meet443 api-key create --admin`).",
        },
        "servers": [{"url": public_url}],
        "security": [{"apiKey": []}],
        "paths": {
            MEETINGS_PATH: {
                "post": {
                    "operationId": "createMeeting",
                    "summary": "Create a meeting",
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/CreateMeetingRequest"}}},
                    },
                    "responses": {
                        "201": {
                            "description": "The meeting. `hostRoomUrl` carries the host room key and is "
                            "shown only here: it cannot be fetched again.",
                            "headers": {"Location": {"schema": url}},
                            "content": {_JSON: {"schema": {"$ref": "#/components/schemas/CreatedMeeting"}}},
                        },
                        **{s: refs[s] for s in ("400", "401", "413", "422", "429", "503")},
                    },
                }
            },
            MEETING_PATH: {
                "parameters": [meeting_id],
                "get": {
                    "operationId": "getMeeting",
                    "summary": "Get a meeting (without its host room URL)",
                    "responses": {
                        "200": {"description": "The meeting, also after its end date", "content": json_body},
                        **{s: refs[s] for s in ("401", "404", "429", "503")},
                    },
                },
                "delete": {
                    "operationId": "deleteMeeting",
                    "summary": "Delete a meeting, which ends it",
                    "description": "Everyone in the meeting gets the signaling message `ended` and their "
                    "sockets close with 1000; nobody can resume into it, and its room refuses every "
                    "later join with `meeting-ended`.",
                    "responses": {
                        "204": {"description": "Deleted and ended"},
                        **{s: refs[s] for s in ("401", "404", "429", "503")},
                    },
                },
            },
            OPENAPI_PATH: {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {_JSON: {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key `m443_<id>_<secret>` from `meet443 api-key create`",
                }
            },
            "schemas": {
                "RoomMode": {
                    "type": "string",
                    "enum": [mode.value for mode in RoomMode],
                    "description": "`normal`: peer to peer, at most 4 participants; `group`: through the SFU",
                },
                "CreateMeetingRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["endDate", "roomMode"],
                    "properties": {
                        "endDate": {
                            **date_time,
                            "description": "RFC 3339 with a time zone; in the future, at most 365 days ahead",
                        },
                        "roomMode": {"$ref": "#/components/schemas/RoomMode"},
                        "roomNamePrefix": {
                            "type": ["string", "null"],
                            "pattern": "^[a-z0-9][a-z0-9-]*$",
                            "maxLength": MAX_ROOM_NAME_PREFIX,
                            "description": "The room name becomes `<prefix>-<16 random characters>`",
                        },
                    },
                },
                "Meeting": {
                    "type": "object",
                    "required": ["meetingId", "roomName", "roomUrl", "roomMode", "startDate", "endDate"],
                    "properties": {
                        "meetingId": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                        "roomName": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,63}$"},
                        "roomUrl": url,
                        "roomMode": {"$ref": "#/components/schemas/RoomMode"},
                        "startDate": date_time,
                        "endDate": date_time,
                    },
                },
                "CreatedMeeting": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Meeting"},
                        {
                            "type": "object",
                            "required": ["hostRoomUrl"],
                            "properties": {
                                "hostRoomUrl": {
                                    **url,
                                    "description": "`roomUrl?roomKey=<key>`: whoever opens it is a host",
                                }
                            },
                        },
                    ]
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                },
            },
            "responses": {
                "BadRequest": _error_response("The body is not JSON (`bad-request`)"),
                "Unauthorized": _error_response(
                    "No valid API key (`unauthorized`)",
                    {"WWW-Authenticate": {"schema": {"type": "string"}}},
                ),
                "NotFound": _error_response(
                    "No such meeting, it was deleted, or another (non-admin) API key created it (`not-found`)"
                ),
                "TooLarge": _error_response(f"The body is over {MAX_BODY_BYTES} bytes (`too-large`)"),
                "Invalid": _error_response(
                    "The body has the wrong shape, or endDate or roomNamePrefix is not allowed "
                    "(`invalid-request`)"
                ),
                "RateLimited": _error_response(
                    "Too many invalid API keys from this address (`rate-limited`); valid keys still work",
                    {"Retry-After": {"schema": {"type": "integer"}}},
                ),
                "Unavailable": _error_response(
                    "The meetings database cannot be reached now (`store-unavailable`); retry after "
                    "Retry-After seconds",
                    {"Retry-After": {"schema": {"type": "integer"}}},
                ),
            },
        },
    }
