"""``GET /v1/ws`` on a real aiohttp server on 127.0.0.1, with real WebSocket clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from yarl import URL

from meet443.aio.node import NodeService
from meet443.aio.signaling import MAX_MSG_SIZE, origin_host_port
from meet443.app import build_signaling_server
from meet443.config import turn_uris_for
from meet443.node import NodeCore
from meet443.proto.signaling.admission import Refusal, RoomAdmission, RoomMode
from meet443.proto.signaling.messages import MAX_FRAME_BYTES
from meet443.proto.signaling.room import SignalingLimits
from meet443.proto.turn.credentials import rest_password

SECRET = "turn-secret-do-not-log"
PUBLIC_URL = "https://meet.example.test"
TIMEOUT = 5.0


async def always_ad_hoc(room: str, room_key: str | None, now: float) -> RoomAdmission | Refusal:
    if room == "no-such-meeting":
        return Refusal.ROOM_NOT_FOUND
    if room == "board":
        return RoomAdmission(room, RoomMode.NORMAL, True, None, host_key_valid=room_key == "key")
    return RoomAdmission(room, RoomMode.NORMAL, api_created=False, end_ms=None, host_key_valid=False)


@contextlib.asynccontextmanager
async def serving(
    directory: Callable[[str, str | None, float], Awaitable[RoomAdmission | Refusal]] = always_ad_hoc,
    **kwargs: Any,
) -> AsyncIterator[tuple[NodeService, str, aiohttp.ClientSession]]:
    kwargs.setdefault("limits", SignalingLimits(join_burst=100))
    adapter_kwargs = {
        name: kwargs.pop(name) for name in ("clock", "on_meeting_ended", "rooms") if name in kwargs
    }
    core = build_signaling_server(turn_secret=SECRET, public_url=PUBLIC_URL, turn_port=443, **kwargs)
    service = NodeService(NodeCore(core), None, directory=directory, public_url=PUBLIC_URL, **adapter_kwargs)
    app = web.Application()
    service.signaling.add_routes(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield service, str(server.make_url("/v1/ws")), session
    finally:
        await server.close()


class Peer:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.self_id = ""
        self.resume_token = ""

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, url: str) -> Peer:
        return cls(await session.ws_connect(url, autoping=True))

    async def send(self, type: str, **fields: Any) -> None:
        await self.ws.send_str(json.dumps({"type": type, **fields}))

    async def recv(self) -> dict[str, Any]:
        message = await self.ws.receive(timeout=TIMEOUT)
        assert message.type is WSMsgType.TEXT, message
        value: dict[str, Any] = json.loads(message.data)
        return value

    async def expect(self, type: str) -> dict[str, Any]:
        message = await self.recv()
        assert message["type"] == type, message
        return message

    async def join(self, room: str = "standup", name: str = "Ada", **fields: Any) -> dict[str, Any]:
        await self.send("join", v=1, room=room, displayName=name, **fields)
        joined = await self.recv()
        if joined["type"] == "joined":
            self.self_id, self.resume_token = joined["selfId"], joined["resumeToken"]
        return joined

    async def closed(self) -> int | None:
        while True:
            message = await self.ws.receive(timeout=TIMEOUT)
            if message.type is WSMsgType.CLOSE:
                # The code the server sent: aiohttp's close_code turns into 1006 when the server
                # drops the connection before the client's close reply is through.
                return int(message.data)
            if message.type in (WSMsgType.CLOSED, WSMsgType.CLOSING):
                return self.ws.close_code

    async def quiet(self) -> None:
        """Nothing is waiting for this peer: a ping is answered by the very next frame."""
        await self.send("ping")
        assert await self.recv() == {"type": "pong"}


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 30))


class TestMesh:
    def test_two_peers_negotiate_and_chat(self) -> None:
        async def scenario() -> None:
            async with serving() as (_, url, session):
                ada = await Peer.open(session, url)
                joined = await ada.join()
                assert joined["host"] is True
                assert joined["iceTransportPolicy"] == "all"
                bob = await Peer.open(session, url)
                joined = await bob.join(name="Bob")
                assert [p["id"] for p in joined["participants"]] == [ada.self_id]
                assert (await ada.expect("participant-joined"))["participant"]["id"] == bob.self_id

                # The later joiner is impolite and offers first (docs/signaling.md).
                await bob.send("offer", to=ada.self_id, sdp="v=0\r\n")
                assert await ada.recv() == {
                    "type": "offer",
                    "from": bob.self_id,
                    "to": ada.self_id,
                    "sdp": "v=0\r\n",
                }
                await ada.send("answer", to=bob.self_id, sdp="v=0\r\n")
                assert (await bob.expect("answer"))["from"] == ada.self_id
                candidate = {"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host", "sdpMid": "0"}
                await ada.send("candidate", to=bob.self_id, candidate=candidate)
                await ada.send("candidate", to=bob.self_id, candidate=None)
                assert (await bob.expect("candidate"))["candidate"] == candidate
                assert (await bob.expect("candidate"))["candidate"] is None

                await bob.send("chat", text="hello", clientMessageId="b1")
                for peer in (ada, bob):
                    chat = await peer.expect("chat")
                    assert (chat["seq"], chat["from"], chat["text"]) == (1, bob.self_id, "hello")

        run(scenario())

    def test_three_peers(self) -> None:
        async def scenario() -> None:
            async with serving() as (service, url, session):
                peers: list[Peer] = []
                for name in ("Ada", "Bob", "Cy"):
                    peer = await Peer.open(session, url)
                    joined = await peer.join(name=name)
                    assert [p["id"] for p in joined["participants"]] == [p.self_id for p in peers]
                    for earlier in peers:
                        assert (await earlier.expect("participant-joined"))["participant"][
                            "displayName"
                        ] == name
                    # The joiner offers to everyone already there.
                    for earlier in peers:
                        await peer.send("offer", to=earlier.self_id, sdp=f"from {name}")
                        assert (await earlier.expect("offer"))["sdp"] == f"from {name}"
                    peers.append(peer)
                assert service.node.signaling.participant_count == 3
                ada, bob, cy = peers
                await cy.send("leave")
                for peer in (ada, bob):
                    assert await peer.recv() == {
                        "type": "participant-left",
                        "id": cy.self_id,
                        "reason": "left",
                    }

        run(scenario())


class TestResume:
    def test_dropped_socket_resumes_with_the_same_id(self) -> None:
        async def scenario() -> None:
            async with serving() as (service, url, session):
                ada = await Peer.open(session, url)
                await ada.join()
                bob = await Peer.open(session, url)
                await bob.join(name="Bob")
                await ada.expect("participant-joined")
                await ada.send("chat", text="before", clientMessageId="a1")
                seen = (await ada.expect("chat"))["seq"]
                await bob.expect("chat")

                await ada.ws.close()  # the network drops; no leave
                update = await bob.expect("participant-updated")
                assert (update["participant"]["id"], update["participant"]["connected"]) == (
                    ada.self_id,
                    False,
                )
                await bob.send("chat", text="while away", clientMessageId="b1")
                await bob.expect("chat")

                again = await Peer.open(session, url)
                joined = await again.join(resumeToken=ada.resume_token, lastChatSeq=seen)
                assert joined["resumed"] is True
                assert joined["selfId"] == ada.self_id
                assert [m["text"] for m in joined["chat"]] == ["while away"]
                update = await bob.expect("participant-updated")
                assert update["participant"]["connected"] is True
                await bob.quiet()  # no participant-left or participant-joined
                await again.send("chat", text="before", clientMessageId="a1")  # a resend
                await bob.quiet()
                assert service.node.signaling.participant_count == 2

        run(scenario())


class TestIsolation:
    def test_fuzzed_frames_leave_the_other_room_untouched(self) -> None:
        async def scenario() -> None:
            async with serving() as (_, url, session):
                ada = await Peer.open(session, url)
                await ada.join("room-a")
                eve = await Peer.open(session, url)
                await eve.join("room-b", "Eve")
                rng = random.Random(443)
                frames: list[str | bytes] = [rng.randbytes(rng.randrange(1, 200)) for _ in range(10)]
                frames += [
                    json.dumps({"type": "offer", "to": eve.self_id, "sdp": "x"}),
                    json.dumps({"type": "kick", "participantId": eve.self_id}),
                    json.dumps({"type": "chat", "text": "x" * 4001, "clientMessageId": "1"}),
                    "{" * 10_000,
                    json.dumps({"type": "teleport"}),
                ]
                for frame in frames:
                    if isinstance(frame, bytes):
                        await ada.ws.send_bytes(frame)
                    else:
                        await ada.ws.send_str(frame)
                    assert (await ada.recv())["type"] == "error"
                await eve.quiet()
                await ada.quiet()

        run(scenario())


class TestLimits:
    def test_too_large_keeps_the_socket_much_larger_closes_it(self) -> None:
        async def scenario() -> None:
            async with serving() as (_, url, session):
                ada = await Peer.open(session, url)
                await ada.join()
                await ada.send("chat", text="x" * 100_000, clientMessageId="1")
                error = await ada.expect("error")
                assert error["code"] == "too-large"
                await ada.quiet()
                await ada.send("chat", text="x" * MAX_MSG_SIZE, clientMessageId="1")
                assert await ada.closed() == 1009  # aiohttp's own limit: message too big

        run(scenario())

    def test_joins_limited_per_remote_address(self) -> None:
        async def scenario() -> None:
            async with serving(limits=SignalingLimits(join_burst=2)) as (_, url, session):
                for room in ("a", "b"):
                    assert (await (await Peer.open(session, url)).join(room))["type"] == "joined"
                late = await Peer.open(session, url)
                error = await late.join("c")
                assert error["code"] == "too-many-joins"
                assert await late.closed() == 1013

        run(scenario())


class TestAdapter:
    def test_ice_servers_carry_turn_rest_credentials(self) -> None:
        async def scenario() -> None:
            async with serving(force_relay=True, credential_ttl=120, clock=lambda: 1_800_000_000.5) as (
                _,
                url,
                session,
            ):
                ada = await Peer.open(session, url)
                joined = await ada.join()
                assert joined["iceTransportPolicy"] == "relay"
                (server,) = joined["iceServers"]
                assert server["urls"] == turn_uris_for(PUBLIC_URL, 443)
                assert server["username"] == f"1800000120:{ada.self_id}"
                assert server["credential"] == rest_password(SECRET, server["username"])
                await ada.send("ice-refresh")
                assert (await ada.expect("ice-servers"))["ttl"] == 120

        run(scenario())

    def test_directory_refusal_and_failure(self) -> None:
        async def broken(room: str, room_key: str | None, now: float) -> RoomAdmission | Refusal:
            if room == "broken":
                raise OSError("database is locked")
            return await always_ad_hoc(room, room_key, now)

        async def scenario() -> None:
            async with serving(broken) as (_, url, session):
                ada = await Peer.open(session, url)
                assert (await ada.join("no-such-meeting"))["code"] == "room-not-found"
                assert await ada.closed() == 1000
                bob = await Peer.open(session, url)
                await bob.send("join", v=1, room="broken", displayName="Bob")
                assert await bob.closed() == 1011

        run(scenario())

    def test_end_tells_the_directory(self) -> None:
        ended: list[str] = []

        async def on_meeting_ended(room: str) -> None:
            ended.append(room)

        async def scenario() -> None:
            async with serving(on_meeting_ended=on_meeting_ended) as (_, url, session):
                ada = await Peer.open(session, url)
                assert (await ada.join("board", roomKey="key"))["host"] is True
                await ada.send("end")
                assert await ada.recv() == {"type": "ended"}
                assert await ada.closed() == 1000
                for _ in range(10):
                    await asyncio.sleep(0.01)
                    if ended:
                        break
                assert ended == ["board"]

        run(scenario())

    def test_heartbeat_timeout_from_the_timer(self) -> None:
        async def scenario() -> None:
            limits = SignalingLimits(heartbeat_timeout=0.5)
            async with serving(limits=limits) as (_, url, session):
                ada = await Peer.open(session, url)
                await ada.join()
                assert await ada.closed() == 1001

        run(scenario())

    def test_close_says_service_restart(self) -> None:
        """RFC 6455 §7.4: 1012, so that clients come back at once and resume."""

        async def scenario() -> None:
            async with serving() as (service, url, session):
                ada = await Peer.open(session, url)
                await ada.join()
                await service.close()
                assert await ada.closed() == 1012

        run(scenario())


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


async def refused(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> str:
    """A browser-like handshake that must get 403 and no upgrade; its plain-text reason."""
    async with session.get(url, headers={**UPGRADE, **headers}) as response:
        assert response.status == 403, response
        assert "Upgrade" not in response.headers and "Sec-WebSocket-Accept" not in response.headers
        assert response.content_type == "text/plain"
        return await response.text()


async def joins(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
    peer = Peer(await session.ws_connect(url, headers=headers))
    assert (await peer.join())["type"] == "joined"
    await peer.ws.close()


class TestOrigin:
    """Cross-site WebSocket hijacking: a page on another site must not open the socket."""

    @pytest.mark.parametrize(
        "origin",
        [
            "https://evil.example",
            "https://meet.example.test.evil.example",
            "https://127.0.0.2",  # not the Host
            "https://meet.example.test:8443",  # the public URL's host on another port
            "http://meet.example.test",  # port 80
            "https://[::1]",
            "chrome-extension://abcdefghijklmnop",
        ],
    )
    def test_foreign_origin_gets_403_and_no_socket(
        self, origin: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        async def scenario() -> None:
            async with serving() as (service, url, session):
                with caplog.at_level(logging.INFO, "meet443.aio.signaling"):
                    reason = await refused(session, url + "?roomKey=do-not-log", {"Origin": origin})
                assert "Origin does not match" in reason
                with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
                    await session.ws_connect(url, origin=origin)
                assert handshake.value.status == 403
                assert service.node.signaling.connection_count == 0
                assert service.node.signaling.counters.origin_refusals == 2
                # Still open to everyone else.
                await joins(session, url, {})

        run(scenario())
        (record, *_) = [r for r in caplog.records if r.name == "meet443.aio.signaling"]
        assert "refused /v1/ws" in record.getMessage() and origin in record.getMessage()
        assert "do-not-log" not in caplog.text and "roomKey" not in caplog.text

    @pytest.mark.parametrize(
        ("origin", "reason"),
        [
            ("null", "Origin null"),
            ("", "malformed"),
            ("https://meet.example.test/room?roomKey=do-not-log", "malformed"),
            ("https://user@meet.example.test", "malformed"),
            ("https://meet.example.test:99999", "malformed"),
        ],
    )
    def test_null_and_malformed_origins_are_refused(
        self, origin: str, reason: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        async def scenario() -> None:
            async with serving() as (service, url, session):
                with caplog.at_level(logging.INFO, "meet443.aio.signaling"):
                    assert reason in await refused(session, url, {"Origin": origin})
                assert service.node.signaling.counters.origin_refusals == 1

        run(scenario())
        assert "do-not-log" not in caplog.text

    def test_two_origin_headers_are_refused(self) -> None:
        async def scenario() -> None:
            async with serving() as (_, url, session):
                own = str(URL(url).origin()).replace("http://", "https://")
                headers = CIMultiDict([*UPGRADE.items(), ("Origin", own), ("Origin", "https://evil.example")])
                async with session.get(url, headers=headers) as response:
                    assert response.status == 403

        run(scenario())

    def test_no_origin_is_a_non_browser_client(self) -> None:
        async def scenario() -> None:
            async with serving() as (_, url, session):
                await joins(session, url, {})

        run(scenario())

    def test_the_host_headers_origin_opens_the_socket(self) -> None:
        async def scenario() -> None:
            async with serving() as (service, url, session):
                authority = URL(url).raw_authority  # 127.0.0.1:<port>, as the Host header says
                await joins(session, url, {"Origin": f"https://{authority}"})
                await joins(session, url, {"Origin": f"HTTPS://{authority}"})
                # The Host header, not the address connected to, names the server.
                await joins(
                    session, url, {"Host": "Meet.Other.Example", "Origin": "https://meet.other.example"}
                )
                assert service.node.signaling.counters.origin_refusals == 0

        run(scenario())

    def test_the_public_urls_origin_opens_the_socket(self) -> None:
        async def scenario() -> None:
            async with serving() as (service, url, session):
                for origin in (PUBLIC_URL, "https://MEET.example.test", "https://meet.example.test:443"):
                    await joins(session, url, {"Origin": origin})  # the Host header is 127.0.0.1:<port>
                assert service.node.signaling.counters.origin_refusals == 0

        run(scenario())

    def test_default_port_443_is_normalised(self) -> None:
        async def scenario() -> None:
            async with serving() as (service, url, session):
                for host, origin in [
                    ("meet.other.example", "https://meet.other.example:443"),
                    ("meet.other.example:443", "https://meet.other.example"),
                    ("meet.other.example:443", "https://meet.other.example:443"),
                    ("meet.other.example:8443", "https://meet.other.example:8443"),
                ]:
                    await joins(session, url, {"Host": host, "Origin": origin})
                for host, origin in [
                    ("meet.other.example:8443", "https://meet.other.example"),
                    ("meet.other.example", "https://meet.other.example:8443"),
                    ("meet.other.example", "http://meet.other.example"),  # http's default is 80
                ]:
                    await refused(session, url, {"Host": host, "Origin": origin})
                assert service.node.signaling.counters.origin_refusals == 3

        run(scenario())

    def test_idna_and_ipv6_hosts(self) -> None:
        async def scenario() -> None:
            async with serving() as (_, url, session):
                await joins(
                    session, url, {"Host": "xn--bcher-kva.example", "Origin": "https://BÜCHER.example"}
                )
                await joins(
                    session, url, {"Host": "[2001:DB8:0::1]:8443", "Origin": "https://[2001:db8::1]:8443"}
                )
                await refused(session, url, {"Host": "[2001:db8::1]", "Origin": "https://[2001:db8::2]"})

        run(scenario())


def test_origin_host_port() -> None:
    assert origin_host_port("https://Meet.Example") == ("meet.example", 443)
    assert origin_host_port("https://meet.example:443") == ("meet.example", 443)
    assert origin_host_port("http://meet.example") == ("meet.example", 80)
    assert origin_host_port("https://bücher.example") == ("xn--bcher-kva.example", 443)
    assert origin_host_port("https://[2001:db8:0::1]:8443") == ("2001:db8::1", 8443)
    assert origin_host_port("https://meet.example/") is None
    assert origin_host_port("https://meet.example/", any_path=True) == ("meet.example", 443)
    assert origin_host_port("https://meet.example/base", any_path=True) == ("meet.example", 443)
    for bad in ("null", "", "https://", "ftp://meet.example", "https://a..b.ü", "https://[fe80::1%25eth0]"):
        assert origin_host_port(bad) is None, bad


def test_binary_frames_are_refused() -> None:
    async def scenario() -> None:
        async with serving() as (_, url, session):
            ada = await Peer.open(session, url)
            await ada.join()
            await ada.ws.send_bytes(b'{"type":"ping"}')
            error = await ada.expect("error")
            assert error["code"] == "bad-message" and "binary" in error["message"]
            await ada.quiet()  # the socket stays open

    run(scenario())


def test_frame_limits_are_the_documented_ones() -> None:
    """docs/signaling.md's row for ``too-large`` states both limits the code enforces (see
    ``TestLimits.test_too_large_keeps_the_socket_much_larger_closes_it``)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "signaling.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `too-large`"))
    assert f"{MAX_FRAME_BYTES // 1024} KiB" in row and f"{MAX_MSG_SIZE // 1024} KiB" in row
    assert "stays open" in row and "1009" in row
