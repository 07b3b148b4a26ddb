"""The meetings REST API over aiohttp's test client: ``/v1/meetings`` and ``/v1/openapi.json``."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from meet443.aio.api import CreateMeetingRequest, FailedAuthLimit, add_api_routes, openapi_document
from meet443.aio.node import NodeService
from meet443.app import build_signaling_server
from meet443.node import NodeCore
from meet443.proto.signaling.admission import Refusal, RoomAdmission, RoomMode
from meet443.store import MeetingStore
from meet443.store.postgres import PostgresStore
from tests.aio.test_signaling import Peer
from tests.postgres import PostgresServer

PUBLIC_URL = "https://meet.example.org"
NOW_S = 1_900_000_000.0  # 2030-03-17T17:46:40Z
END_DATE = "2030-03-18T00:00:00Z"
VALID = b'{"endDate": "2030-03-18T00:00:00Z", "roomMode": "normal"}'
Client = TestClient[web.Request, web.Application]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def api_key(store: MeetingStore, runner: asyncio.Runner) -> str:
    return runner.run(store.api_keys.create("tests", now_ms=int(NOW_S * 1000)))[1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def api_client(
    store: MeetingStore,
    public_url: str = PUBLIC_URL,
    monotonic: FakeClock | None = None,
    failed_auth: FailedAuthLimit | None = None,
) -> AsyncIterator[Client]:
    app = web.Application()
    add_api_routes(
        app,
        store,
        public_url,
        clock=lambda: NOW_S,
        monotonic=monotonic or FakeClock(),
        failed_auth=failed_auth,
    )
    async with TestClient(TestServer(app)) as client:
        yield client


async def create(client: Client, key: str, **body: object) -> dict[str, Any]:
    response = await client.post(
        "/v1/meetings", json={"endDate": END_DATE, "roomMode": "normal", **body}, headers=bearer(key)
    )
    assert response.status == 201, await response.text()
    answer = await response.json()
    assert isinstance(answer, dict)
    return answer


async def error_of(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    answer = await response.json()
    assert set(answer) == {"error"}
    assert set(answer["error"]) == {"code", "message"}
    assert isinstance(answer["error"]["message"], str)
    code = answer["error"]["code"]
    assert isinstance(code, str)
    return code


class TestCreate:
    async def test_created_meeting(self, store: MeetingStore, api_key: str) -> None:
        async with api_client(store) as client:
            response = await client.post(
                "/v1/meetings",
                json={"endDate": END_DATE, "roomMode": "group", "roomNamePrefix": "team"},
                headers=bearer(api_key),
            )
            assert response.status == 201
            assert response.headers["Cache-Control"] == "no-store"
            body = await response.json()
            assert set(body) == {
                "meetingId",
                "roomName",
                "roomUrl",
                "hostRoomUrl",
                "roomMode",
                "startDate",
                "endDate",
            }
            assert re.fullmatch(r"team-[a-z2-7]{16}", body["roomName"])
            assert body["roomUrl"] == f"{PUBLIC_URL}/{body['roomName']}"
            url, _, key = body["hostRoomUrl"].partition("?roomKey=")
            assert url == body["roomUrl"]
            assert response.headers["Location"] == f"{PUBLIC_URL}/v1/meetings/{body['meetingId']}"
            assert body["roomMode"] == "group"
            assert body["startDate"] == "2030-03-17T17:46:40.000Z"
            assert body["endDate"] == "2030-03-18T00:00:00.000Z"
            answer = await store.admission(
                body["roomName"],
                key,
                int(NOW_S * 1000),
                require_api_key=True,
                default_mode=RoomMode.NORMAL,
            )
            assert answer == RoomAdmission(
                body["roomName"],
                RoomMode.GROUP,
                api_created=True,
                end_ms=1_900_022_400_000,
                host_key_valid=True,
            )

    async def test_end_date_with_offset(self, store: MeetingStore, api_key: str) -> None:
        async with api_client(store) as client:
            body = await create(client, api_key, endDate="2030-03-18T02:30:00.250+02:30")
            assert body["endDate"] == "2030-03-18T00:00:00.250Z"

    @pytest.mark.parametrize(
        "forged",
        [
            {"Host": "evil.example"},
            {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example"},
        ],
    )
    async def test_urls_come_from_the_public_url_only(
        self, store: MeetingStore, api_key: str, forged: dict[str, str]
    ) -> None:
        async with api_client(store, public_url="https://meet.example.org:8443/") as client:
            response = await client.post(
                "/v1/meetings",
                json={"endDate": END_DATE, "roomMode": "normal"},
                headers={**bearer(api_key), **forged},
            )
            assert response.status == 201
            body = await response.json()
            text = json.dumps(body) + response.headers["Location"]
            assert "evil" not in text
            assert body["roomUrl"] == f"https://meet.example.org:8443/{body['roomName']}"
            assert body["hostRoomUrl"].startswith(body["roomUrl"] + "?roomKey=")
            got = await client.get(f"/v1/meetings/{body['meetingId']}", headers={**bearer(api_key), **forged})
            assert (await got.json())["roomUrl"] == body["roomUrl"]

    @pytest.mark.parametrize(
        ("body", "status", "code"),
        [
            (b"{", 400, "bad-request"),
            (b"not json", 400, "bad-request"),
            (b"", 400, "bad-request"),
            (b"[]", 422, "invalid-request"),
            (b'{"roomMode": "normal"}', 422, "invalid-request"),
            (b'{"endDate": "2030-03-18T00:00:00Z"}', 422, "invalid-request"),
            (b'{"endDate": "2030-03-18T00:00:00Z", "roomMode": "huge"}', 422, "invalid-request"),
            (b'{"endDate": 1900051200, "roomMode": "normal"}', 422, "invalid-request"),
            (b'{"endDate": "tomorrow", "roomMode": "normal"}', 422, "invalid-request"),
            (b'{"endDate": "2030-03-18T00:00:00", "roomMode": "normal"}', 422, "invalid-request"),
            (b'{"endDate": "2030-03-17T17:46:40Z", "roomMode": "normal"}', 422, "invalid-request"),
            (b'{"endDate": "2020-01-01T00:00:00Z", "roomMode": "normal"}', 422, "invalid-request"),
            (b'{"endDate": "2031-03-18T00:00:00Z", "roomMode": "normal"}', 422, "invalid-request"),
            (b'{"endDate": "2030-03-18T00:00:00Z", "roomMode": "normal", "x": 1}', 422, "invalid-request"),
            (b'{"endDate": "2030-03-18T00:00:00Z", "roomMode": "normal", "roomNamePrefix": "Team"}', 422,
             "invalid-request"),
            (b'{"endDate": "2030-03-18T00:00:00Z", "roomMode": "normal", "roomNamePrefix": 7}', 422,
             "invalid-request"),
            (VALID[:-1] + b', "roomNamePrefix": "' + b"a" * 48 + b'"}', 422, "invalid-request"),
            (VALID[:-1] + b', "pad": "' + b"x" * 20000 + b'"}', 413, "too-large"),
        ],
    )  # fmt: skip
    async def test_bad_bodies(
        self, store: MeetingStore, api_key: str, body: bytes, status: int, code: str
    ) -> None:
        async with api_client(store) as client:
            headers = {**bearer(api_key), "Content-Type": "application/json"}
            response = await client.post("/v1/meetings", data=body, headers=headers)
            assert await error_of(response, status) == code

    async def test_null_prefix_is_no_prefix(self, store: MeetingStore, api_key: str) -> None:
        async with api_client(store) as client:
            body = await create(client, api_key, roomNamePrefix=None)
            assert re.fullmatch(r"[a-z2-7]{16}", body["roomName"])

    async def test_other_methods_get_a_json_405(self, store: MeetingStore, api_key: str) -> None:
        async with api_client(store) as client:
            response = await client.get("/v1/meetings", headers=bearer(api_key))
            assert await error_of(response, 405) == "method-not-allowed"
            assert response.headers["Allow"] == "POST"
            response = await client.put("/v1/meetings/" + "0" * 32, headers=bearer(api_key))
            assert await error_of(response, 405) == "method-not-allowed"
            assert response.headers["Allow"] == "GET, HEAD, DELETE"


class TestAuthentication:
    @pytest.mark.parametrize(
        ("headers", "challenge"),
        [
            ({}, 'Bearer realm="meet443"'),
            ({"Authorization": "Bearer"}, 'Bearer realm="meet443"'),
            (
                {"Authorization": "Bearer m443_000000000000_abc"},
                'Bearer realm="meet443", error="invalid_token"',
            ),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, 'Bearer realm="meet443", error="invalid_token"'),
        ],
    )
    async def test_without_a_valid_key(
        self, store: MeetingStore, api_key: str, headers: dict[str, str], challenge: str
    ) -> None:
        async with api_client(store) as client:
            meeting_id = (await create(client, api_key))["meetingId"]
            requests = [
                client.post(
                    "/v1/meetings", json={"endDate": END_DATE, "roomMode": "normal"}, headers=headers
                ),
                client.get(f"/v1/meetings/{meeting_id}", headers=headers),
                client.delete(f"/v1/meetings/{meeting_id}", headers=headers),
            ]
            for request in requests:
                response = await request
                assert await error_of(response, 401) == "unauthorized"
                assert response.headers["WWW-Authenticate"] == challenge
            assert await store.get(meeting_id) is not None

    async def test_scheme_is_case_insensitive(self, store: MeetingStore, api_key: str) -> None:
        async with api_client(store) as client:
            response = await client.post(
                "/v1/meetings",
                json={"endDate": END_DATE, "roomMode": "normal"},
                headers={"Authorization": f"bearer {api_key}"},
            )
            assert response.status == 201

    async def test_revoked_key(self, store: MeetingStore, api_key: str) -> None:
        async with api_client(store) as client:
            await create(client, api_key)
            key_id = api_key.split("_")[1]
            await store.api_keys.revoke(key_id, now_ms=0)
            response = await client.post(
                "/v1/meetings", json={"endDate": END_DATE, "roomMode": "normal"}, headers=bearer(api_key)
            )
            assert await error_of(response, 401) == "unauthorized"

    async def test_failed_attempts_are_rate_limited_per_address(
        self, store: MeetingStore, api_key: str
    ) -> None:
        clock = FakeClock()
        limit = FailedAuthLimit(rate=0.5, burst=2)
        async with api_client(store, monotonic=clock, failed_auth=limit) as client:
            wrong = bearer("m443_000000000000_" + "a" * 52)
            for _ in range(2):
                assert await error_of(await client.get("/v1/meetings/" + "0" * 32, headers=wrong), 401)
            response = await client.get("/v1/meetings/" + "0" * 32, headers=wrong)
            assert await error_of(response, 429) == "rate-limited"
            assert response.headers["Retry-After"] == "2"
            # Shut out: invalid keys get 429 until a token refills.
            clock.now += 1
            response = await client.get("/v1/meetings/" + "0" * 32, headers=wrong)
            assert await error_of(response, 429) == "rate-limited"
            clock.now += 1
            assert await error_of(await client.get("/v1/meetings/" + "0" * 32, headers=wrong), 401)

    async def test_bad_keys_do_not_lock_out_a_valid_key(self, store: MeetingStore, api_key: str) -> None:
        """Issue 10 §4: 10 bad keys from an address made its next valid request 429; now 201."""

        async with api_client(store) as client:
            wrong = bearer("m443_000000000000_" + "a" * 52)
            statuses = [
                (await client.get("/v1/meetings/" + "0" * 32, headers=wrong)).status for _ in range(11)
            ]
            assert statuses == [401] * 10 + [429]
            await create(client, api_key)
            assert (await client.get("/v1/meetings/" + "0" * 32, headers=wrong)).status == 429


class TestFailedAuthLimit:
    def test_budget_is_per_address_and_refills(self) -> None:
        limit = FailedAuthLimit(rate=1.0, burst=3)
        assert all(limit.failed("192.0.2.1", 0.0) for _ in range(3))
        assert not limit.failed("192.0.2.1", 0.0)
        assert limit.retry_after("192.0.2.1", 0.25) == 0.75
        assert limit.retry_after("192.0.2.2", 0.25) is None
        assert limit.failed("192.0.2.2", 0.25)
        assert limit.retry_after("192.0.2.1", 1.0) is None
        assert limit.failed("192.0.2.1", 1.0)
        assert not limit.failed("192.0.2.1", 1.0)

    def test_memory_is_bounded(self) -> None:
        limit = FailedAuthLimit(rate=1.0, burst=1, max_addresses=4)
        for n in range(10):
            address = f"192.0.2.{n}"
            limit.failed(address, 0.0)
            limit.failed(address, 0.0)
        shut_out = [n for n in range(10) if limit.retry_after(f"192.0.2.{n}", 0.5) is not None]
        assert shut_out == [6, 7, 8, 9]


class TestGetAndDelete:
    async def test_get(self, store: MeetingStore, api_key: str) -> None:
        async with api_client(store) as client:
            created = await create(client, api_key)
            response = await client.get(f"/v1/meetings/{created['meetingId']}", headers=bearer(api_key))
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
            body = await response.json()
            expected = dict(created)
            del expected["hostRoomUrl"]
            assert body == expected
            assert "roomKey" not in json.dumps(body)

    @pytest.mark.parametrize("meeting_id", ["0" * 32, "nope", "A" * 32, "0" * 33])
    async def test_unknown(self, store: MeetingStore, api_key: str, meeting_id: str) -> None:
        async with api_client(store) as client:
            for method in (client.get, client.delete):
                response = await method(f"/v1/meetings/{meeting_id}", headers=bearer(api_key))
                assert await error_of(response, 404) == "not-found"

    async def test_delete(self, store: MeetingStore, api_key: str) -> None:
        async with api_client(store) as client:
            created = await create(client, api_key)
            path = f"/v1/meetings/{created['meetingId']}"
            response = await client.delete(path, headers=bearer(api_key))
            assert response.status == 204
            assert await response.read() == b""
            assert await error_of(await client.get(path, headers=bearer(api_key)), 404) == "not-found"
            assert await error_of(await client.delete(path, headers=bearer(api_key)), 404) == "not-found"
            answer = await store.admission(
                created["roomName"],
                None,
                int(NOW_S * 1000),
                require_api_key=False,
                default_mode=RoomMode.NORMAL,
            )
            assert answer is Refusal.MEETING_ENDED


class TestScopedKeys:
    """A key sees and deletes only the meetings it created; an admin key sees them all."""

    async def test_other_keys_meetings_are_not_found(self, store: MeetingStore, api_key: str) -> None:
        other = (await store.api_keys.create("other", now_ms=int(NOW_S * 1000)))[1]
        admin = (await store.api_keys.create("ops", now_ms=int(NOW_S * 1000), admin=True))[1]

        async with api_client(store) as client:
            mine = await create(client, api_key)
            theirs = await create(client, other)
            path = f"/v1/meetings/{mine['meetingId']}"
            for method in (client.get, client.delete):
                assert await error_of(await method(path, headers=bearer(other)), 404) == "not-found"
            assert (await client.get(path, headers=bearer(api_key))).status == 200
            assert (await client.get(path, headers=bearer(admin))).status == 200
            assert (await client.delete(path, headers=bearer(admin))).status == 204
            theirs_path = f"/v1/meetings/{theirs['meetingId']}"
            assert (await client.delete(theirs_path, headers=bearer(other))).status == 204


@pytest.mark.postgresql
class TestStoreUnavailable:
    async def test_503_while_postgres_does_not_answer(self, postgres: PostgresServer) -> None:
        """A statement that cannot finish (here: a table locked past ``statement_timeout``) is a 503
        with Retry-After, on every route; once the table is free, the same requests succeed."""
        url = await postgres.fresh_database()
        store = await PostgresStore.connect(f"{url}&statement_timeout=200")
        blocker = await asyncpg.connect(url)
        try:
            key_id, key = await store.api_keys.create("tests", now_ms=int(NOW_S * 1000))
            created = await store.create(
                created_by=key_id,
                end_ms=int(NOW_S * 1000) + 3_600_000,
                mode=RoomMode.NORMAL,
                now_ms=int(NOW_S * 1000),
            )
            path = f"/v1/meetings/{created.meeting.meeting_id}"
            async with api_client(store) as client:
                async with blocker.transaction():
                    await blocker.execute("LOCK TABLE meetings")
                    for response in (
                        await client.post(
                            "/v1/meetings",
                            json={"endDate": END_DATE, "roomMode": "normal"},
                            headers=bearer(key),
                        ),
                        await client.get(path, headers=bearer(key)),
                        await client.delete(path, headers=bearer(key)),
                    ):
                        assert await error_of(response, 503) == "store-unavailable"
                        assert response.headers["Retry-After"] == "5"
                    await blocker.execute("LOCK TABLE api_keys")
                    assert (
                        await error_of(await client.get(path, headers=bearer(key)), 503)
                        == "store-unavailable"
                    )
                await create(client, key)
                assert (await client.get(path, headers=bearer(key))).status == 200
        finally:
            await blocker.close()
            await store.close()


class TestDeleteEndsTheMeeting:
    """Issue 10 §4: ``DELETE`` ends the meeting: ``ended`` and close 1000 for everyone, no resume."""

    async def test_participants_are_sent_away(self, store: MeetingStore, api_key: str) -> None:
        async def directory(room: str, room_key: str | None, now: float) -> RoomAdmission | Refusal:
            return await store.admission(
                room,
                room_key,
                int(now * 1000),
                require_api_key=True,
                default_mode=RoomMode.NORMAL,
            )

        core = build_signaling_server(turn_secret="s", public_url=PUBLIC_URL, turn_port=443)
        service = NodeService(
            NodeCore(core), None, directory=directory, public_url=PUBLIC_URL, clock=lambda: NOW_S
        )
        app = web.Application()
        service.signaling.add_routes(app)
        add_api_routes(app, store, PUBLIC_URL, clock=lambda: NOW_S, on_meeting_deleted=service.end_meeting)
        async with TestClient(TestServer(app)) as client:
            created = await create(client, api_key)
            room = created["roomName"]
            url = str(client.make_url("/v1/ws"))
            ada = Peer(await client.session.ws_connect(url))
            bob = Peer(await client.session.ws_connect(url))
            assert (await ada.join(room))["type"] == "joined"
            assert (await bob.join(room, "Bob"))["type"] == "joined"
            await ada.expect("participant-joined")
            token = bob.resume_token
            await bob.ws.close()  # bob's socket drops: he may resume for 30 s
            assert (await ada.expect("participant-updated"))["participant"]["connected"] is False

            response = await client.delete(f"/v1/meetings/{created['meetingId']}", headers=bearer(api_key))
            assert response.status == 204
            assert await ada.recv() == {"type": "ended"}
            assert await ada.closed() == 1000

            bob = Peer(await client.session.ws_connect(url))
            answer = await bob.join(room, "Bob", resumeToken=token)
            assert answer["type"] == "error" and answer["code"] == "meeting-ended", answer
            assert await bob.closed() == 1000


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


class TestOpenApi:
    async def test_served_without_a_key_and_matches_the_routes(self, store: MeetingStore) -> None:
        async with api_client(store, public_url="https://meet.example.org/") as client:
            response = await client.get("/v1/openapi.json")
            assert response.status == 200
            assert response.content_type == "application/json"
            document = await response.json()
            assert document["openapi"] == "3.1.0"
            assert document["servers"] == [{"url": "https://meet.example.org"}]
            assert client.app is not None
            routes = {
                (route.resource.canonical, route.method.lower())
                for route in client.app.router.routes()
                if route.resource is not None and route.method not in ("*", "HEAD")
            }
            documented = {
                (path, method)
                for path, item in document["paths"].items()
                for method in item
                if method in ("get", "post", "put", "patch", "delete")
            }
            assert documented == routes

    def test_refs_resolve(self) -> None:
        document = openapi_document(PUBLIC_URL)
        for ref in _refs(document):
            node: Any = document
            for part in ref.removeprefix("#/").split("/"):
                node = node[part]
            assert isinstance(node, dict), ref

    async def test_schemas_match_the_bodies(self, store: MeetingStore, api_key: str) -> None:
        schemas = openapi_document(PUBLIC_URL)["components"]["schemas"]
        request_fields = {field.encode_name for field in msgspec.structs.fields(CreateMeetingRequest)}
        assert set(schemas["CreateMeetingRequest"]["properties"]) == request_fields
        assert schemas["RoomMode"]["enum"] == [mode.value for mode in RoomMode]
        meeting = schemas["Meeting"]
        created_extra = schemas["CreatedMeeting"]["allOf"][1]

        async with api_client(store) as client:
            created = await create(client, api_key)
            assert set(created) == set(meeting["required"]) | set(created_extra["required"])
            assert set(meeting["required"]) == set(meeting["properties"])
            for name in ("meetingId", "roomName"):
                assert re.fullmatch(meeting["properties"][name]["pattern"], created[name])
