"""The signaling state machine (docs/signaling.md), driven on a fake clock with no I/O."""

from __future__ import annotations

import itertools
import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meet443.proto.addresses import address_key
from meet443.proto.signaling.admission import Refusal, RoomAdmission, RoomMode
from meet443.proto.signaling.messages import CLIENT_TYPES, Pause, Publish, Speaker, SubscribeOffer
from meet443.proto.signaling.room import (
    ChatPosted,
    Close,
    LeftSfu,
    LookupRoom,
    MeetingEnded,
    Output,
    RevokeTurn,
    RoomChanged,
    Send,
    SignalingLimits,
    SignalingServer,
    ToSfu,
)
from meet443.regions import Probe

T0 = 1_800_000_000.0
TTL = 600
ROOM_KEY = "host-key-do-not-log"
SECRET_CREDENTIAL = "credential-do-not-log"


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class Harness:
    """One server, an in-memory directory and the frames each connection has received."""

    def __init__(
        self,
        *,
        force_relay: bool = False,
        max_participants: int = 1000,
        server_epoch: int = 0,
        resume_key: bytes = b"resume-key-do-not-log",
        **limits: Any,
    ) -> None:
        self.clock = FakeClock()
        counter = itertools.count(1)
        self.server = SignalingServer(
            ice_servers=self.ice_servers,
            token=lambda n: f"{next(counter):0{2 * n}x}",
            force_relay=force_relay,
            max_participants=max_participants,
            limits=SignalingLimits(**limits),
            server_epoch=server_epoch,
            resume_key=resume_key,
            known_regions=lambda: ("eu", "us", "ap"),
        )
        self.inbox: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.closed: dict[int, tuple[int, str]] = {}
        self.meetings: dict[str, RoomAdmission | Refusal] = {}
        self.auto_admit = True
        self.lookups: list[LookupRoom] = []
        self.ended: list[str] = []
        self.sfu: list[ToSfu | LeftSfu] = []
        self.revoked: list[RevokeTurn] = []
        self.posted: list[ChatPosted] = []
        #: Rooms named by RoomChanged, in order.
        self.changed: list[str] = []
        self.conns = itertools.count(1)
        self.ice_calls: list[tuple[str, float]] = []
        self.ice_rtts: list[Mapping[str, float]] = []
        self.ice_unreachable: list[frozenset[str]] = []

    def ice_servers(
        self, participant_id: str, now: float, probe: Probe
    ) -> tuple[list[dict[str, object]], int]:
        self.ice_calls.append((participant_id, now))
        self.ice_rtts.append(probe.rtts)
        self.ice_unreachable.append(probe.unreachable)
        return (
            [
                {
                    "urls": ["turn:h:443?transport=udp"],
                    "username": f"{int(now) + TTL}:{participant_id}",
                    "credential": SECRET_CREDENTIAL,
                }
            ],
            TTL,
        )

    def directory(self, room: str, room_key: str | None) -> RoomAdmission | Refusal:
        answer = self.meetings.get(room)
        if answer is None:
            return RoomAdmission(room, RoomMode.NORMAL, api_created=False, end_ms=None, host_key_valid=False)
        if isinstance(answer, RoomAdmission) and answer.api_created:
            valid = room_key == ROOM_KEY
            return RoomAdmission(room, answer.mode, True, answer.end_ms, host_key_valid=valid)
        return answer

    def process(self, outputs: list[Output]) -> list[Output]:
        for output in outputs:
            if isinstance(output, Send):
                assert output.conn not in self.closed, "frame after close"
                self.inbox[output.conn].append(json.loads(output.payload))
            elif isinstance(output, Close):
                self.closed[output.conn] = (output.code, output.reason)
            elif isinstance(output, LookupRoom):
                self.lookups.append(output)
                if self.auto_admit:
                    self.answer(output)
            elif isinstance(output, ToSfu | LeftSfu):
                self.sfu.append(output)
            elif isinstance(output, RevokeTurn):
                self.revoked.append(output)
            elif isinstance(output, ChatPosted):
                self.posted.append(output)
            elif isinstance(output, RoomChanged):
                self.changed.append(output.room)
            else:
                assert isinstance(output, MeetingEnded)
                self.ended.append(output.room)
        check_invariants(self.server)
        return outputs

    def answer(self, lookup: LookupRoom) -> list[Output]:
        answer = self.directory(lookup.room, lookup.room_key)
        return self.process(self.server.admit(lookup.conn, answer, self.clock.now))

    def connect(self, ip: str = "192.0.2.1") -> Client:
        client = Client(self, next(self.conns))
        self.process(self.server.connect(client.conn, ip, self.clock.now))
        return client

    def joined(self, room: str = "standup", name: str = "Ada", **fields: Any) -> Client:
        client = self.connect(fields.pop("ip", "192.0.2.1"))
        reply = client.join(room, name, **fields)
        assert reply["type"] == "joined", reply
        return client

    def tick(self, seconds: float) -> list[Output]:
        self.clock.advance(seconds)
        return self.process(self.server.handle_timer(self.clock.now))

    def drop(self, client: Client) -> None:
        self.process(self.server.disconnected(client.conn, self.clock.now))


class Client:
    def __init__(self, harness: Harness, conn: int) -> None:
        self.h = harness
        self.conn = conn
        self.self_id = ""
        self.resume_token = ""

    def raw(self, data: bytes | str) -> list[Output]:
        return self.h.process(self.h.server.receive(self.conn, data, self.h.clock.now))

    def send(self, type: str, **fields: Any) -> list[Output]:
        return self.raw(json.dumps({"type": type, **fields}))

    def join(self, room: str = "standup", name: str = "Ada", **fields: Any) -> dict[str, Any]:
        self.send("join", v=1, room=room, displayName=name, **fields)
        reply = self.inbox[-1] if self.inbox else {}
        if reply.get("type") == "joined":
            self.self_id = reply["selfId"]
            self.resume_token = reply["resumeToken"]
        return reply

    @property
    def inbox(self) -> list[dict[str, Any]]:
        return self.h.inbox[self.conn]

    def take(self) -> list[dict[str, Any]]:
        messages = list(self.inbox)
        self.inbox.clear()
        return messages

    def types(self) -> list[str]:
        return [m["type"] for m in self.take()]

    def last_error(self) -> str:
        errors = [m for m in self.inbox if m["type"] == "error"]
        assert errors, self.inbox
        return str(errors[-1]["code"])

    @property
    def closed(self) -> tuple[int, str] | None:
        return self.h.closed.get(self.conn)


def check_invariants(server: SignalingServer) -> None:
    rooms = server._rooms
    count = 0
    for name, room in rooms.items():
        assert room.name == name
        assert room.participants or room.knockers, "empty rooms are forgotten"
        assert len(room.participants) <= room.capacity
        for p in room.participants.values():
            assert p.room is room
            assert p.resume_token is not None
            assert server._resume_tokens[p.resume_token] is p
            if p.conn is not None:
                assert server._connections[p.conn].participant is p
        for k in room.knockers.values():
            assert k.conn is not None
            assert server._connections[k.conn].participant is k
        count += len(room.participants) + len(room.knockers)
    assert server.participant_count == count
    assert server.sockets.held() == server.connection_count
    assert len(server._resume_tokens) == sum(len(r.participants) for r in rooms.values())
    for c in server._connections.values():
        if c.participant is not None:
            assert c.participant.conn == c.conn
            assert rooms.get(c.participant.room.name) is c.participant.room


@pytest.fixture
def h() -> Harness:
    return Harness()


# --------------------------------------------------------------------------------------------------


class TestJoin:
    """docs/signaling.md "Connection lifecycle" 1-3 and the ``joined`` message."""

    def test_first_joiner_is_host(self, h: Harness) -> None:
        ada = h.connect()
        joined = ada.join("standup", "  Ada ")
        assert joined["type"] == "joined"
        assert joined["resumed"] is False
        assert joined["host"] is True
        assert joined["room"] == {"name": "standup", "mode": "normal", "locked": False, "maxParticipants": 4}
        assert joined["participants"] == []
        assert joined["chat"] == []
        assert joined["iceTransportPolicy"] == "all"
        assert joined["iceServers"][0]["username"] == f"{int(T0) + TTL}:{joined['selfId']}"
        assert len(joined["resumeToken"]) >= 32  # 128 bits as hex

    def test_second_joiner_sees_first_and_is_announced(self, h: Harness) -> None:
        ada = h.joined(name="Ada")
        ada.take()
        bob = h.connect()
        joined = bob.join("standup", "Bob")
        assert joined["host"] is False
        assert [p["id"] for p in joined["participants"]] == [ada.self_id]
        assert joined["participants"][0] == {
            "id": ada.self_id,
            "displayName": "Ada",
            "host": True,
            "audio": False,
            "video": False,
            "screen": False,
            "connected": True,
            "hand": False,
        }
        assert ada.take() == [
            {
                "type": "participant-joined",
                "participant": {
                    "id": bob.self_id,
                    "displayName": "Bob",
                    "host": False,
                    "audio": False,
                    "video": False,
                    "screen": False,
                    "connected": True,
                    "hand": False,
                },
            }
        ]
        assert ada.self_id != bob.self_id

    def test_join_is_two_phase(self, h: Harness) -> None:
        h.auto_admit = False
        ada = h.connect()
        outputs = ada.send("join", v=1, room="standup", displayName="Ada", roomKey="k")
        assert outputs == [LookupRoom(ada.conn, "standup", "k")]
        assert ada.inbox == []
        ada.send("ping")  # heartbeats while the directory answers
        assert ada.types() == ["pong"]
        ada.send("chat", text="hi", clientMessageId="1")
        assert ada.last_error() == "not-joined"
        ada.send("join", v=1, room="standup", displayName="Ada")
        assert ada.last_error() == "already-joined"
        h.answer(h.lookups[0])
        assert ada.inbox[-1]["type"] == "joined"

    def test_admit_after_disconnect_is_ignored(self, h: Harness) -> None:
        h.auto_admit = False
        ada = h.connect()
        ada.join()
        h.drop(ada)
        assert h.answer(h.lookups[0]) == []
        assert h.server.room_count == 0

    def test_force_relay(self) -> None:
        h = Harness(force_relay=True)
        assert h.connect().join()["iceTransportPolicy"] == "relay"

    def test_not_joined_first(self, h: Harness) -> None:
        ada = h.connect()
        for message in ("ping", "leave", "end", "ice-refresh"):
            ada.send(message)
            assert ada.last_error() == "not-joined"
        assert ada.inbox[-1]["ref"] == "ice-refresh"
        assert ada.closed is None

    def test_already_joined(self, h: Harness) -> None:
        ada = h.joined()
        ada.join("other")
        assert ada.last_error() == "already-joined"
        assert h.server.room_of(ada.conn) == "standup"

    def test_unsupported_version_closes_1002(self, h: Harness) -> None:
        ada = h.connect()
        ada.send("join", v=2, room="standup", displayName="Ada")
        assert ada.last_error() == "unsupported-version"
        assert ada.closed == (1002, "unsupported-version")
        assert h.server.connection_count == 0

    @pytest.mark.parametrize("room", ["Standup", "-x", "api", "v1", "healthz", "a" * 65, "", "a_b", "a.b"])
    def test_bad_room_name_closes_1000(self, h: Harness, room: str) -> None:
        ada = h.connect()
        ada.join(room)
        assert ada.last_error() == "bad-room-name"
        assert ada.closed == (1000, "bad-room-name")
        assert h.lookups == []  # refused before asking the directory

    @pytest.mark.parametrize("refusal", list(Refusal))
    def test_directory_refusal_closes_1000(self, h: Harness, refusal: Refusal) -> None:
        h.meetings["gone"] = refusal
        ada = h.connect()
        ada.join("gone")
        assert ada.last_error() == refusal.value
        assert ada.closed == (1000, refusal.value)
        assert h.server.room_count == 0

    def test_display_name_is_cleaned(self, h: Harness) -> None:
        h.joined(name="Ada")
        bob = h.connect()
        assert bob.join(name="\u202e Bob\u0007 ")["type"] == "joined"
        assert h.server._rooms["standup"].participants[bob.self_id].display_name == "Bob"

    def test_bad_display_name_keeps_socket(self, h: Harness) -> None:
        ada = h.connect()
        ada.join(name="   ")
        assert ada.last_error() == "bad-message"
        assert ada.closed is None
        assert ada.join(name="Ada")["type"] == "joined"


class TestGroupRooms:
    """docs/signaling.md "Group rooms": media requests go to the SFU, its answers come back."""

    @pytest.fixture
    def h(self) -> Harness:
        h = Harness()
        h.meetings["town-hall"] = RoomAdmission("town-hall", RoomMode.GROUP, True, None, False)
        return h

    def test_join_and_requests_reach_the_sfu(self, h: Harness) -> None:
        ada = h.joined("town-hall")
        assert h.sfu == [ToSfu("town-hall", ada.self_id, None)]
        ada.send("publish", sdp="v=0", sources={"0": "microphone"})
        ada.send("pause", mid="v0", paused=True)
        assert h.sfu[1:] == [
            ToSfu("town-hall", ada.self_id, Publish("v=0", {"0": "microphone"})),
            ToSfu("town-hall", ada.self_id, Pause("v0", paused=True)),
        ]

    def test_normal_rooms_refuse_sfu_requests(self, h: Harness) -> None:
        ada = h.joined("standup")
        ada.send("subscribe-answer", sdp="v=0")
        assert ada.last_error() == "not-group-room"
        assert h.sfu == []

    def test_sfu_messages_reach_one_participant_or_the_room(self, h: Harness) -> None:
        ada, bob = h.joined("town-hall"), h.joined("town-hall", "Bob")
        ada.take(), bob.take()
        h.process(h.server.deliver("town-hall", bob.self_id, SubscribeOffer("v=0", [])))
        assert ada.take() == [] and bob.types() == ["subscribe-offer"]
        h.process(h.server.broadcast("town-hall", Speaker(ada.self_id)))
        assert ada.take() == bob.take() == [{"type": "speaker", "participantId": ada.self_id}]
        h.process(h.server.deliver("elsewhere", bob.self_id, Speaker(None)))
        assert bob.take() == []

    def test_a_late_joiner_hears_who_is_speaking(self, h: Harness) -> None:
        ada = h.joined("town-hall")
        assert ada.take()[0]["speaker"] is None
        h.process(h.server.broadcast("town-hall", Speaker(ada.self_id)))
        assert h.joined("town-hall", "Bob").take()[0]["speaker"] == ada.self_id
        h.process(h.server.broadcast("town-hall", Speaker(None)))
        assert h.joined("town-hall", "Cy").take()[0]["speaker"] is None
        h.process(h.server.broadcast("town-hall", Speaker(ada.self_id)))
        ada.send("leave")
        assert h.joined("town-hall", "Di").take()[0]["speaker"] is None, "a speaker who left is not one"

    def test_offer_waits_for_a_resume_and_leaving_tells_the_sfu(self, h: Harness) -> None:
        ada = h.joined("town-hall")
        h.drop(ada)
        h.process(h.server.deliver("town-hall", ada.self_id, SubscribeOffer("v=0", [])))
        back = h.connect()
        back.join("town-hall", resumeToken=ada.resume_token)
        assert "subscribe-offer" in back.types()
        assert h.sfu == [ToSfu("town-hall", ada.self_id, None)], "a resume is not a new SFU participant"
        back.send("leave")
        assert h.sfu[-1] == LeftSfu("town-hall", ada.self_id)


class TestCapacity:
    """docs/signaling.md "Rooms": a normal room holds 4; the server has a participant cap."""

    def test_fifth_gets_room_full(self, h: Harness) -> None:
        for i in range(4):
            h.joined(name=f"p{i}", ip=f"192.0.2.{i}")
        fifth = h.connect()
        fifth.join()
        assert fifth.last_error() == "room-full"
        assert fifth.closed == (1000, "room-full")

    def test_group_room_holds_50(self, h: Harness) -> None:
        h.meetings["all-hands"] = RoomAdmission("all-hands", RoomMode.GROUP, True, None, False)
        for i in range(50):
            assert h.joined("all-hands", ip=f"10.0.{i}.1").inbox[-1]["room"]["maxParticipants"] == 50
        late = h.connect()
        late.join("all-hands")
        assert late.last_error() == "room-full"

    def test_awaiting_resume_keeps_its_slot(self, h: Harness) -> None:
        clients = [h.joined(ip=f"192.0.2.{i}") for i in range(4)]
        h.drop(clients[0])
        fifth = h.connect()
        fifth.join()
        assert fifth.last_error() == "room-full"
        h.tick(31)  # the slot is free once the resume window has passed
        assert h.connect().join()["type"] == "joined"

    def test_server_capacity(self) -> None:
        h = Harness(max_participants=2)
        h.joined("a")
        h.joined("b")
        late = h.connect()
        late.join("c")
        assert late.last_error() == "room-full"
        assert late.closed == (1000, "room-full")
        assert h.server.room_count == 2

    def test_connection_cap(self) -> None:
        h = Harness(max_participants=1, max_connections=2)
        h.connect()
        h.connect()
        third = h.connect()
        assert third.closed == (1013, "server busy")
        assert h.server.connection_count == 2


class TestRateLimits:
    """docs/signaling.md: 50 messages/s (burst 100) per socket; joins and new rooms per address."""

    def test_burst_then_rate_limited(self, h: Harness) -> None:
        ada = h.joined()
        ada.take()
        for _ in range(99):  # the join took one token
            ada.send("ping")
        assert ada.types() == ["pong"] * 99
        ada.send("ping")
        ada.send("ping")
        assert ada.take() == [{"type": "error", "code": "rate-limited", "message": "too many messages"}]
        h.clock.advance(0.25)  # 12.5 tokens
        for _ in range(13):
            ada.send("ping")
        assert ada.types() == ["pong"] * 12  # and no second reply within the second
        assert ada.closed is None

    def test_one_reply_per_second(self, h: Harness) -> None:
        ada = h.joined()
        for _ in range(300):
            ada.send("ping")
        assert [m for m in ada.take() if m["type"] == "error"] == [
            {"type": "error", "code": "rate-limited", "message": "too many messages"}
        ]

    def test_ten_seconds_over_the_limit_closes_1008(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(ip="192.0.2.2")
        for _ in range(101):
            ada.send("ping")
        for _ in range(999):  # 100 messages/s against 50/s for ten seconds
            h.clock.advance(0.01)
            ada.send("ping")
        assert ada.closed is None
        for _ in range(3):
            h.clock.advance(0.01)
            ada.send("ping")
        assert ada.closed == (1008, "rate limit")
        # The participant may come back: an abusive socket is a dropped socket.
        assert bob.inbox[-1]["type"] == "participant-updated"
        assert bob.inbox[-1]["participant"]["connected"] is False

    def test_pausing_resets_the_abuse_clock(self, h: Harness) -> None:
        ada = h.joined()
        for _ in range(20):
            for _ in range(200):
                ada.send("ping")
            h.clock.advance(2.0)  # refills 100 tokens and ends the limited period
        assert ada.closed is None

    def test_joins_per_address(self) -> None:
        h = Harness(join_rate=1.0, join_burst=3.0)
        for i in range(3):
            h.joined(f"room-{i}")
        late = h.connect()
        late.join("room-9")
        assert late.last_error() == "too-many-joins"
        assert late.closed == (1013, "too-many-joins")
        assert h.connect(ip="192.0.2.99").join("room-9")["type"] == "joined"
        h.clock.advance(1.0)
        assert h.connect().join("room-8")["type"] == "joined"

    def test_ipv6_limited_per_64(self) -> None:
        h = Harness(join_burst=2.0)
        h.joined("a", ip="2001:db8:1:2::1")
        h.joined("b", ip="2001:db8:1:2::ffff")
        late = h.connect(ip="2001:db8:1:2:abcd::9")
        late.join("c")
        assert late.last_error() == "too-many-joins"
        assert h.connect(ip="2001:db8:1:3::1").join("c")["type"] == "joined"

    def test_address_key(self) -> None:
        assert address_key("192.0.2.1") == "192.0.2.1"
        assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
        assert address_key("2001:db8::1") == "2001:db8::/64"
        assert address_key("fe80::1%eth0") == "fe80::/64"
        assert address_key("") == ""

    def test_new_rooms_per_address(self) -> None:
        h = Harness(room_creation_rate=0.01, room_creation_burst=2.0)
        h.joined("a")
        h.joined("b")
        late = h.connect()
        late.join("c")
        assert late.last_error() == "too-many-joins"
        assert late.closed == (1013, "too-many-joins")
        # Joining an existing room is not creating one, nor is joining an API meeting.
        assert h.connect().join("a")["type"] == "joined"
        h.meetings["board"] = RoomAdmission("board", RoomMode.NORMAL, True, None, False)
        assert h.connect().join("board")["type"] == "joined"

    def test_more_than_20_errors_a_minute_closes_1008(self, h: Harness) -> None:
        ada = h.joined()
        for _ in range(20):
            ada.raw(b"garbage")
            h.clock.advance(1.0)
        assert ada.closed is None
        ada.raw(b"{}")
        assert ada.closed == (1008, "too many errors")

    def test_20_errors_spread_out_are_fine(self, h: Harness) -> None:
        ada = h.joined()
        for _ in range(100):
            ada.raw(b"garbage")
            ada.send("ping")
            h.clock.advance(3.5)
        assert ada.closed is None

    def test_unknown_participant_is_not_abuse(self, h: Harness) -> None:
        # Candidates keep trickling to a peer that just left: an honest race.
        ada = h.joined()
        for _ in range(40):
            ada.send("candidate", to="gone", candidate=None)
        assert ada.last_error() == "unknown-participant"
        assert ada.closed is None


class TestErrors:
    """docs/signaling.md "Error codes" that keep the socket open."""

    def test_bad_message(self, h: Harness) -> None:
        ada = h.joined()
        ada.raw(b"{nope")
        assert ada.last_error() == "bad-message"
        ada.send("chat", text="", clientMessageId="1")
        assert ada.inbox[-1] == {
            "type": "error",
            "code": "bad-message",
            "message": "Expected `str` of length >= 1 - at `$.text`",
            "ref": "chat",
        }

    def test_unknown_type(self, h: Harness) -> None:
        ada = h.joined()
        ada.send("teleport")
        assert ada.inbox[-1] == {
            "type": "error",
            "code": "unknown-type",
            "message": "unknown message type",
            "ref": "teleport",
        }

    def test_too_large(self, h: Harness) -> None:
        ada = h.joined()
        ada.send("chat", text="a" * 70_000, clientMessageId="1")
        assert ada.last_error() == "too-large"
        assert ada.closed is None
        ada.send("ping")
        assert ada.inbox[-1]["type"] == "pong"

    def test_not_host(self, h: Harness) -> None:
        h.joined()
        bob = h.joined(name="Bob")
        cases: list[tuple[str, dict[str, Any]]] = [
            ("lock", {"locked": True}),
            ("admit", {"participantId": "x"}),
            ("reject", {"participantId": "x"}),
            ("kick", {"participantId": "x"}),
            ("mute", {"participantId": "x", "kind": "audio"}),
            ("end", {}),
        ]
        for message, fields in cases:
            bob.send(message, **fields)
            assert bob.inbox[-1]["code"] == "not-host"
            assert bob.inbox[-1]["ref"] == message
        assert bob.closed is None

    def test_unknown_participant(self, h: Harness) -> None:
        ada = h.joined()
        cases: list[tuple[str, dict[str, Any]]] = [
            ("offer", {"to": "nobody", "sdp": "v=0"}),
            ("answer", {"to": ada.self_id, "sdp": "v=0"}),  # not to oneself either
            ("candidate", {"to": "nobody", "candidate": None}),
            ("admit", {"participantId": "nobody"}),
            ("reject", {"participantId": "nobody"}),
            ("kick", {"participantId": "nobody"}),
            ("mute", {"participantId": "nobody", "kind": "audio"}),
        ]
        for message, fields in cases:
            ada.send(message, **fields)
            assert ada.inbox[-1]["code"] == "unknown-participant"
            assert ada.inbox[-1]["ref"] == message

    def test_counted(self, h: Harness) -> None:
        ada = h.joined()
        ada.raw(b"x")
        ada.raw(b"y")
        ada.send("nope")
        assert h.server.counters.errors == {"bad-message": 2, "unknown-type": 1}


class TestRelay:
    """docs/signaling.md: offer, answer and candidate are relayed with ``from``, within a room."""

    def test_offer_answer_candidate(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        ada.take()
        bob.send("offer", to=ada.self_id, sdp="v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n")
        assert ada.take() == [
            {
                "type": "offer",
                "from": bob.self_id,
                "to": ada.self_id,
                "sdp": "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n",
            }
        ]
        ada.send("answer", to=bob.self_id, sdp="v=0\r\n")
        assert bob.take()[-1] == {"type": "answer", "from": ada.self_id, "to": bob.self_id, "sdp": "v=0\r\n"}
        candidate = {"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host", "sdpMLineIndex": 0}
        bob.send("candidate", to=ada.self_id, candidate=candidate)
        bob.send("candidate", to=ada.self_id, candidate=None)
        assert ada.take() == [
            {"type": "candidate", "from": bob.self_id, "to": ada.self_id, "candidate": candidate},
            {"type": "candidate", "from": bob.self_id, "to": ada.self_id, "candidate": None},
        ]
        assert bob.inbox == []

    def test_only_within_the_room(self, h: Harness) -> None:
        ada = h.joined("room-a")
        eve = h.joined("room-b", name="Eve")
        eve.take()
        ada.send("offer", to=eve.self_id, sdp="v=0")
        assert ada.last_error() == "unknown-participant"
        assert eve.inbox == []

    def test_backlog_while_awaiting_resume(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        h.drop(ada)
        bob.send("offer", to=ada.self_id, sdp="v=0 restart")
        bob.send("candidate", to=ada.self_id, candidate=None)
        assert not [m for m in bob.inbox if m["type"] == "error"]
        again = h.connect()
        again.join(resumeToken=ada.resume_token)
        assert [m["type"] for m in again.take()] == ["joined", "offer", "candidate"]

    def test_backlog_is_bounded(self) -> None:
        h = Harness(max_backlog_messages=3)
        ada = h.joined()
        bob = h.joined(name="Bob")
        h.drop(ada)
        for i in range(10):
            bob.send("offer", to=ada.self_id, sdp=f"v={i}")
        again = h.connect()
        again.join(resumeToken=ada.resume_token)
        assert [m.get("sdp") for m in again.take()] == [None, "v=7", "v=8", "v=9"]


class TestChat:
    """docs/signaling.md ``chat``: room-wide seq, de-duplication, history."""

    def test_seq_and_broadcast(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        ada.take()
        bob.take()
        h.clock.advance(1.5)
        ada.send("chat", text="hello", clientMessageId="a1")
        expected = {
            "type": "chat",
            "seq": 1,
            "from": ada.self_id,
            "displayName": "Ada",
            "text": "hello",
            "ts": int((T0 + 1.5) * 1000),
            "clientMessageId": "a1",
            "epoch": 0,
        }
        assert ada.take() == [expected]  # the sender's copy is its acknowledgement
        assert bob.take() == [expected]
        bob.send("chat", text="hi", clientMessageId="a1")  # ids are per sender
        assert ada.take()[0]["seq"] == 2
        # Each message once, for a cluster's shared history (docs/cluster.md "Chat").
        assert [(p.room, p.message.seq) for p in h.posted] == [("standup", 1), ("standup", 2)]

    def test_duplicate_is_not_broadcast(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        ada.send("chat", text="hello", clientMessageId="a1")
        ada.take()
        bob.take()
        ada.send("chat", text="hello", clientMessageId="a1")
        assert bob.take() == []
        assert [m["seq"] for m in ada.take()] == [1]
        assert len(h.posted) == 1

    def test_history_is_bounded(self) -> None:
        h = Harness(chat_history=200)
        ada = h.joined()
        for i in range(250):
            ada.send("chat", text=str(i), clientMessageId=str(i))
            h.clock.advance(0.1)
        joined = h.connect().join(name="Bob")
        assert [m["seq"] for m in joined["chat"]] == list(range(201, 251))
        joined = h.connect().join(name="Cy", lastChatSeq=0)
        assert [m["seq"] for m in joined["chat"]] == list(range(51, 251))
        joined = h.connect().join(name="Di", lastChatSeq=248)
        assert [m["seq"] for m in joined["chat"]] == [249, 250]

    def test_no_loss_no_duplicates_across_reconnect(self, h: Harness) -> None:
        """A client resends its unacknowledged messages after resuming; everyone sees each once."""
        ada = h.joined()
        bob = h.joined(name="Bob")
        ada.send("chat", text="one", clientMessageId="a1")
        seen = max(m["seq"] for m in ada.take() if m["type"] == "chat")
        ada.send("chat", text="two", clientMessageId="a2")  # reaches the server; the echo is lost
        h.drop(ada)
        bob.send("chat", text="while you were away", clientMessageId="b1")
        h.tick(5)
        again = h.connect()
        joined = again.join(resumeToken=ada.resume_token, lastChatSeq=seen)
        assert joined["resumed"] is True
        assert [(m["seq"], m["text"]) for m in joined["chat"]] == [(2, "two"), (3, "while you were away")]
        # A careful client would see "two" acknowledged above; a naive one resends everything.
        again.send("chat", text="one", clientMessageId="a1")
        again.send("chat", text="two", clientMessageId="a2")
        again.send("chat", text="three", clientMessageId="a3")
        bob_chat = [(m["seq"], m["text"]) for m in bob.take() if m["type"] == "chat"]
        assert bob_chat == [(1, "one"), (2, "two"), (3, "while you were away"), (4, "three")]

    def test_epochs(self) -> None:
        """Issue 10 §5: ``(epoch, seq)`` never repeats: not after a restart (a new server epoch),
        nor when a room empties and is made again (seq counts from 1 in a new epoch)."""
        ids = []
        for server_epoch in (1, 2):  # two runs of a server on one data dir
            h = Harness(server_epoch=server_epoch)
            for _ in range(2):  # the room made, emptied, made again
                ada = h.joined()
                ada.send("chat", text="hi", clientMessageId="a1")
                ids += [(m["epoch"], m["seq"]) for m in ada.take() if m["type"] == "chat"]
                ada.send("leave")
        assert ids == [(1 << 32, 1), ((1 << 32) + 1, 1), (2 << 32, 1), ((2 << 32) + 1, 1)]

    def test_last_chat_seq_of_another_epoch_is_ignored(self) -> None:
        """A client that saw seq 5 before a restart still gets messages 1 and 2 of the new run."""
        h = Harness(server_epoch=2)
        ada = h.joined()
        for i in range(2):
            ada.send("chat", text=str(i), clientMessageId=str(i))
        epoch = ada.take()[-1]["epoch"]
        stale = h.connect().join(name="Bob", lastChatSeq=5, lastChatEpoch=epoch - 1)
        assert [(m["epoch"], m["seq"]) for m in stale["chat"]] == [(epoch, 1), (epoch, 2)]
        current = h.connect().join(name="Cy", lastChatSeq=1, lastChatEpoch=epoch)
        assert [m["seq"] for m in current["chat"]] == [2]

    def test_knocker_gets_no_chat(self, h: Harness) -> None:
        ada = h.joined()
        ada.send("lock", locked=True)
        bob = h.connect()
        bob.join(name="Bob")
        ada.send("chat", text="secret plans", clientMessageId="1")
        assert "chat" not in bob.types()
        bob.send("chat", text="let me in", clientMessageId="1")
        assert bob.last_error() == "not-joined"


class TestChatBounds:
    def test_resend_after_the_history_rolled_on(self) -> None:
        h = Harness(chat_history=2)
        ada = h.joined()
        for i in range(3):
            ada.send("chat", text=str(i), clientMessageId=str(i))
        ada.take()
        ada.send("chat", text="0", clientMessageId="0")
        assert ada.take() == []  # too old to acknowledge, and still not broadcast again

    def test_no_history(self) -> None:
        h = Harness(chat_history=0)
        ada = h.joined()
        ada.send("chat", text="a", clientMessageId="1")
        ada.send("chat", text="a", clientMessageId="1")
        assert [m["seq"] for m in ada.take() if m["type"] == "chat"] == [1]

    def test_dedupe_window(self) -> None:
        h = Harness(chat_dedupe_window=2)
        ada = h.joined()
        for i in range(3):
            ada.send("chat", text=str(i), clientMessageId=str(i))
        ada.take()
        ada.send("chat", text="0", clientMessageId="0")  # forgotten: a new message
        assert [m["seq"] for m in ada.take()] == [4]


class TestMedia:
    def test_broadcast_as_participant_updated(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        ada.take()
        bob.send("media", audio=True, video=True, screen=False)
        assert ada.take() == [
            {
                "type": "participant-updated",
                "participant": {
                    "id": bob.self_id,
                    "displayName": "Bob",
                    "host": False,
                    "audio": True,
                    "video": True,
                    "screen": False,
                    "connected": True,
                    "hand": False,
                },
            }
        ]
        assert bob.inbox == [m for m in bob.inbox if m["type"] != "participant-updated"]
        assert h.connect().join(name="Cy")["participants"][1]["video"] is True


class TestHandAndReactions:
    """docs/signaling.md ``hand`` and ``reaction``."""

    def test_raised_hand_is_kept_and_announced(self, h: Harness) -> None:
        ada, bob = h.joined(), h.joined(name="Bob")
        ada.take(), bob.take()
        bob.send("hand", raised=True)
        [update] = ada.take()
        assert update["type"] == "participant-updated" and update["participant"]["hand"] is True
        bob.send("hand", raised=True)
        assert ada.take() == [], "no news, no message"
        assert bob.take() == []
        assert h.connect().join(name="Cy")["participants"][1]["hand"] is True, "a joiner sees the raised hand"
        bob.send("hand", raised=False)
        assert ada.take()[0]["participant"]["hand"] is False

    def test_reaction_reaches_everyone(self, h: Harness) -> None:
        ada, bob = h.joined(), h.joined(name="Bob")
        ada.take(), bob.take()
        bob.send("reaction", emoji="👏")
        wanted = [{"type": "reaction", "participantId": bob.self_id, "emoji": "👏"}]
        assert ada.take() == bob.take() == wanted

    @pytest.mark.parametrize("emoji", ["<b>hi</b>", "", "👍👍", "💩"])
    def test_only_the_listed_emoji(self, h: Harness, emoji: str) -> None:
        ada, bob = h.joined(), h.joined(name="Bob")
        ada.take()
        bob.send("reaction", emoji=emoji)
        assert bob.last_error() == "bad-message"
        assert ada.take() == []

    def test_reactions_have_their_own_rate(self, h: Harness) -> None:
        ada, bob = h.joined(), h.joined(name="Bob")
        ada.take(), bob.take()
        for _ in range(8):
            bob.send("reaction", emoji="🎉")
        assert len(ada.take()) == 5, "the burst"
        assert bob.last_error() == "rate-limited"
        assert bob.inbox[-1]["ref"] == "reaction"
        bob.send("chat", text="still here", clientMessageId="c1")
        assert [m["type"] for m in ada.take()] == ["chat"], "other messages are not limited"
        h.clock.advance(1.0)
        bob.send("reaction", emoji="🎉")
        assert [m["type"] for m in ada.take()] == ["reaction"]


class TestKnock:
    """docs/signaling.md: lock, knocking, knock, admit, reject, knock-cancelled."""

    def locked_room(self, h: Harness) -> tuple[Client, Client]:
        ada = h.joined()
        bob = h.joined(name="Bob")
        ada.send("lock", locked=True)
        room = {"name": "standup", "mode": "normal", "locked": True, "maxParticipants": 4}
        assert ada.take()[-1] == {"type": "room-updated", "room": room}
        assert bob.take()[-1] == {"type": "room-updated", "room": room}
        return ada, bob

    def test_knock_and_admit(self, h: Harness) -> None:
        ada, bob = self.locked_room(h)
        cy = h.connect()
        assert cy.join(name="Cy") == {"type": "knocking"}
        knock = ada.take()
        assert knock == [{"type": "knock", "participantId": knock[0]["participantId"], "displayName": "Cy"}]
        assert bob.take() == []  # only hosts hear knocks
        cy.send("ping")
        assert cy.take()[-1] == {"type": "pong"}
        ada.send("admit", participantId=knock[0]["participantId"])
        joined = cy.take()
        assert joined[0]["type"] == "joined"
        assert joined[0]["selfId"] == knock[0]["participantId"]
        assert joined[0]["room"]["locked"] is True
        assert {p["id"] for p in joined[0]["participants"]} == {ada.self_id, bob.self_id}
        assert [m["type"] for m in ada.take()] == ["knock-cancelled", "participant-joined"]
        assert [m["type"] for m in bob.take()] == ["participant-joined"]

    def test_reject(self, h: Harness) -> None:
        ada, _ = self.locked_room(h)
        cy = h.connect()
        cy.join(name="Cy")
        knocker = ada.take()[0]["participantId"]
        ada.send("reject", participantId=knocker)
        assert cy.take() == [{"type": "knocking"}, {"type": "rejected"}]
        assert cy.closed == (1000, "rejected")
        assert ada.take() == [{"type": "knock-cancelled", "participantId": knocker}]
        ada.send("admit", participantId=knocker)
        assert ada.last_error() == "unknown-participant"

    def test_knocker_leaves_or_drops(self, h: Harness) -> None:
        ada, _ = self.locked_room(h)
        cy = h.connect()
        cy.join(name="Cy")
        first = ada.take()[0]["participantId"]
        cy.send("leave")
        assert ada.take() == [{"type": "knock-cancelled", "participantId": first}]
        cy.join(name="Cy")
        second = ada.take()[0]["participantId"]
        h.drop(cy)
        assert ada.take() == [{"type": "knock-cancelled", "participantId": second}]

    def test_host_key_bypasses_lock(self, h: Harness) -> None:
        h.meetings["board"] = RoomAdmission("board", RoomMode.NORMAL, True, None, False)
        ada = h.joined("board", roomKey=ROOM_KEY)
        ada.send("lock", locked=True)
        boss = h.connect()
        assert boss.join("board", "Boss", roomKey=ROOM_KEY)["host"] is True
        guest = h.connect()
        assert guest.join("board", "Guest", roomKey="wrong") == {"type": "knocking"}

    def test_unlock_lets_knockers_in(self, h: Harness) -> None:
        ada, _ = self.locked_room(h)
        cy = h.connect()
        cy.join(name="Cy")
        ada.send("lock", locked=False)
        assert [m["type"] for m in cy.take()] == ["knocking", "joined"]

    def test_admit_into_full_room(self, h: Harness) -> None:
        ada, _ = self.locked_room(h)
        knockers = [h.connect() for _ in range(3)]
        for k in knockers:
            k.join(name="K")
        ids = [m["participantId"] for m in ada.take() if m["type"] == "knock"]
        ada.send("admit", participantId=ids[0])
        ada.send("admit", participantId=ids[1])
        ada.send("admit", participantId=ids[2])
        assert knockers[2].last_error() == "room-full"
        assert knockers[2].closed == (1000, "room-full")

    def test_too_many_knockers(self) -> None:
        h = Harness(max_knockers_per_room=2)
        ada = h.joined()
        ada.send("lock", locked=True)
        for _ in range(2):
            assert h.connect().join(name="K")["type"] == "knocking"
        late = h.connect()
        late.join(name="K")
        assert late.last_error() == "room-full"

    def test_host_who_returns_hears_pending_knocks(self, h: Harness) -> None:
        ada, _ = self.locked_room(h)
        h.drop(ada)
        cy = h.connect()
        cy.join(name="Cy")
        again = h.connect()
        again.join(resumeToken=ada.resume_token)
        assert [m["type"] for m in again.take()] == ["joined", "knock"]

    def test_empty_locked_room_lets_knockers_in(self, h: Harness) -> None:
        ada = h.joined()
        ada.send("lock", locked=True)
        cy = h.connect()
        cy.join(name="Cy")
        ada.send("leave")
        joined = cy.take()[-1]
        assert joined["type"] == "joined"
        assert joined["host"] is True  # the first in an empty ad-hoc room
        assert joined["room"]["locked"] is False


class TestHostActions:
    """docs/signaling.md: kick, mute, end; host hand-over in ad-hoc rooms."""

    def test_kick(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        cy = h.joined(name="Cy")
        cy.take()
        ada.send("kick", participantId=bob.self_id)
        assert bob.inbox[-1] == {"type": "kicked"}
        assert bob.closed == (1000, "kicked")
        assert cy.take() == [{"type": "participant-left", "id": bob.self_id, "reason": "kicked"}]
        # The kicked participant cannot resume.
        again = h.connect()
        assert again.join(name="Bob", resumeToken=bob.resume_token)["selfId"] != bob.self_id

    def test_kick_awaiting_resume(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        h.drop(bob)
        ada.take()
        ada.send("kick", participantId=bob.self_id)
        assert ada.take() == [{"type": "participant-left", "id": bob.self_id, "reason": "kicked"}]

    def test_mute_request(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        bob.take()
        ada.send("mute", participantId=bob.self_id, kind="audio")
        assert bob.take() == [{"type": "mute-request", "kind": "audio", "by": ada.self_id}]

    def test_end_ad_hoc(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        ada.send("end")
        for client in (ada, bob):
            assert client.inbox[-1] == {"type": "ended"}
            assert client.closed == (1000, "ended")
        assert h.server.room_count == 0
        assert h.server.participant_count == 0
        assert h.ended == []  # ad-hoc rooms are not in the directory
        assert h.connect().join()["type"] == "joined"  # a fresh room

    def test_end_api_meeting(self, h: Harness) -> None:
        end_ms = int((T0 + 3600) * 1000)
        h.meetings["board"] = RoomAdmission("board", RoomMode.NORMAL, True, end_ms, False)
        ada = h.joined("board", roomKey=ROOM_KEY)
        ada.send("lock", locked=True)
        knocker = h.connect()
        knocker.join("board", "K")
        ada.send("end")
        assert knocker.inbox[-1] == {"type": "ended"}
        assert h.ended == ["board"]
        late = h.connect()
        late.join("board", roomKey=ROOM_KEY)
        assert late.last_error() == "meeting-ended"
        assert late.closed == (1000, "meeting-ended")
        h.tick(3600)  # after its end time the directory refuses on its own; the memory is dropped
        assert h.server._ended_meetings == {}

    def test_ad_hoc_host_hands_over(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        bob.take()
        ada.send("leave")
        left, updated = bob.take()
        assert left == {"type": "participant-left", "id": ada.self_id, "reason": "left"}
        assert updated["type"] == "participant-updated"
        assert updated["participant"]["id"] == bob.self_id
        assert updated["participant"]["host"] is True
        bob.send("lock", locked=True)
        assert bob.inbox[-1]["type"] == "room-updated"

    def test_new_host_hears_pending_knocks(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        ada.send("lock", locked=True)
        ada.send("lock", locked=True)  # no change, no broadcast
        assert [m["type"] for m in bob.take()].count("room-updated") == 1
        h.connect().join(name="Cy")
        ada.send("leave")
        assert [m["type"] for m in bob.take()] == ["participant-left", "participant-updated", "knock"]

    def test_ended_meetings_are_bounded(self) -> None:
        h = Harness(max_ended_meetings=1)
        for name in ("one", "two"):
            h.meetings[name] = RoomAdmission(name, RoomMode.NORMAL, True, None, False)
            h.joined(name, roomKey=ROOM_KEY).send("end")
        assert list(h.server._ended_meetings) == ["two"]
        assert h.connect().join("one")["type"] == "joined"

    def test_api_room_hosts_are_key_holders_only(self, h: Harness) -> None:
        h.meetings["board"] = RoomAdmission("board", RoomMode.NORMAL, True, None, False)
        guest = h.connect()
        assert guest.join("board", "Guest")["host"] is False
        boss = h.connect()
        assert boss.join("board", "Boss", roomKey=ROOM_KEY)["host"] is True
        boss.send("leave")
        guest.send("end")
        assert guest.last_error() == "not-host"


class TestMeetingEnd:
    """docs/signaling.md: an API meeting ends at its ``endDate``."""

    def test_end_ms_enforced(self, h: Harness) -> None:
        end_ms = int((T0 + 60) * 1000)
        h.meetings["board"] = RoomAdmission("board", RoomMode.NORMAL, True, end_ms, False)
        ada = h.joined("board")
        assert h.server.get_timer() == T0 + 30  # ada's heartbeat deadline comes first
        for _ in range(5):
            h.tick(10)
            ada.send("ping")
        h.tick(9.5)
        assert ada.closed is None
        h.tick(0.5)
        assert ada.inbox[-1] == {"type": "ended"}
        assert ada.closed == (1000, "ended")
        assert h.server.room_count == 0
        assert h.ended == []  # the directory knows its own end date

    def test_join_after_end(self, h: Harness) -> None:
        h.meetings["board"] = RoomAdmission("board", RoomMode.NORMAL, True, int(T0 * 1000), False)
        ada = h.connect()
        ada.join("board")
        assert ada.last_error() == "meeting-ended"


class TestMeetingDeleted:
    """Issue 10 §4: a meeting deleted through the API ends for everyone, and nobody resumes into it."""

    def test_end_meeting(self, h: Harness) -> None:
        h.meetings["board"] = RoomAdmission("board", RoomMode.NORMAL, True, int((T0 + 3600) * 1000), False)
        ada = h.joined("board")
        bob = h.joined("board", name="Bob")
        h.drop(bob)
        ada.take()
        h.process(h.server.end_meeting("board", h.clock.now))
        assert ada.take() == [{"type": "ended"}]
        assert ada.closed == (1000, "ended")
        assert h.server.room_count == 0
        assert {r.participant for r in h.revoked} == {ada.self_id, bob.self_id}
        assert h.ended == []  # the directory deleted it itself
        # The directory would still answer from its cache or a lagging replica: the room stays shut.
        back = h.connect()
        assert back.join("board", name="Bob", resumeToken=bob.resume_token)["code"] == "meeting-ended"
        assert back.closed == (1000, "meeting-ended")
        h.process(h.server.end_meeting("nowhere", h.clock.now))  # no such room: nothing to do

    def test_resume_asks_the_directory(self, h: Harness) -> None:
        """Deleted by another process: the resume finds out from the directory and ends the room."""
        h.meetings["board"] = RoomAdmission("board", RoomMode.NORMAL, True, None, False)
        ada = h.joined("board")
        bob = h.joined("board", name="Bob")
        h.drop(bob)
        ada.take()
        h.meetings["board"] = Refusal.MEETING_ENDED
        back = h.connect()
        assert back.join("board", name="Bob", resumeToken=bob.resume_token)["code"] == "meeting-ended"
        assert ada.take() == [{"type": "ended"}]
        assert h.server.room_count == 0

    def test_resume_still_works(self, h: Harness) -> None:
        ada = h.joined()
        h.drop(ada)
        lookups = len(h.lookups)
        back = h.connect()
        reply = back.join(name="Ada", resumeToken=ada.resume_token)
        assert reply["resumed"] is True and reply["selfId"] == ada.self_id
        assert len(h.lookups) == lookups + 1


class TestLifecycle:
    """docs/signaling.md "Connection lifecycle" 4-6: heartbeat, resume, leave."""

    def test_ping_pong(self, h: Harness) -> None:
        ada = h.joined()
        ada.take()
        ada.send("ping")
        assert ada.take() == [{"type": "pong"}]

    def test_heartbeat_timeout_then_resume_timeout(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        for _ in range(3):
            h.tick(10)
            bob.send("ping")
        assert ada.closed == (1001, "heartbeat timeout")
        assert bob.closed is None
        updated = [m for m in bob.take() if m["type"] == "participant-updated"]
        assert updated[-1]["participant"]["connected"] is False
        for _ in range(3):
            h.tick(10)
            bob.send("ping")
        assert [m for m in bob.take() if m["type"] == "participant-left"] == [
            {"type": "participant-left", "id": ada.self_id, "reason": "timeout"}
        ]
        again = h.connect()
        joined = again.join(resumeToken=ada.resume_token)
        assert joined["resumed"] is False
        assert joined["selfId"] != ada.self_id

    def test_resume_same_id(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        bob.take()
        h.drop(ada)
        h.tick(29)
        bob.send("ping")
        again = h.connect(ip="198.51.100.7")  # a new network
        joined = again.join("standup", "Ada", resumeToken=ada.resume_token)
        assert joined["resumed"] is True
        assert joined["selfId"] == ada.self_id
        assert joined["host"] is True
        assert joined["resumeToken"] != ada.resume_token
        assert [p["id"] for p in joined["participants"]] == [bob.self_id]
        messages = bob.take()
        assert [m["type"] for m in messages] == ["participant-updated", "pong", "participant-updated"]
        assert messages[0]["participant"]["connected"] is False
        assert messages[2]["participant"]["connected"] is True
        assert h.server.participant_count == 2

    def test_old_token_is_spent(self, h: Harness) -> None:
        ada = h.joined()
        h.joined(name="Bob")
        h.drop(ada)
        again = h.connect()
        again.join(resumeToken=ada.resume_token)
        h.drop(again)
        thief = h.connect()
        assert thief.join(resumeToken=ada.resume_token)["resumed"] is False

    def test_resume_replaces_a_socket_not_yet_seen_dead(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        bob.take()
        again = h.connect()
        assert again.join(resumeToken=ada.resume_token)["selfId"] == ada.self_id
        assert ada.closed == (1000, "resumed on another socket")
        assert bob.take() == []  # nothing changed for the others
        h.drop(ada)  # the old socket's close arrives late: no effect
        assert bob.take() == []
        again.send("ping")
        assert again.inbox[-1]["type"] == "pong"

    def test_resume_token_for_another_room_joins_fresh(self, h: Harness) -> None:
        ada = h.joined("room-a")
        other = h.connect()
        joined = other.join("room-b", resumeToken=ada.resume_token)
        assert joined["resumed"] is False
        assert joined["selfId"] != ada.self_id
        assert h.server.room_of(ada.conn) == "room-a"

    def test_leave(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        bob.take()
        bob.send("leave")
        assert ada.take()[-1] == {"type": "participant-left", "id": bob.self_id, "reason": "left"}
        h.drop(bob)  # closing the socket after leave changes nothing
        assert ada.take() == []
        assert h.server.participant_count == 1

    def test_leave_then_join_again_on_the_same_socket(self, h: Harness) -> None:
        ada = h.joined()
        ada.send("leave")
        assert h.server.room_count == 0
        assert ada.join("other")["type"] == "joined"

    def test_join_deadline(self, h: Harness) -> None:
        idle = h.connect()
        for _ in range(2):
            h.tick(10)
            idle.send("ping")  # not-joined, but alive
        h.tick(10)
        assert idle.closed == (1008, "no join")

    def test_silent_unjoined_socket(self, h: Harness) -> None:
        idle = h.connect()
        h.tick(30)
        assert idle.closed == (1001, "heartbeat timeout")
        assert h.server.connection_count == 0

    def test_get_timer_sees_every_deadline(self, h: Harness) -> None:
        ada = h.joined()
        h.clock.advance(20)
        h.connect()
        h.drop(ada)
        assert h.server.get_timer() == T0 + 20 + 30  # the resume window and the new socket
        assert h.server.room_of(ada.conn) is None

    def test_participant_ids_never_collide(self) -> None:
        h = Harness()
        tokens = iter(["same", "resume-1", "same", "other", "resume-2"])
        h.server._token = lambda n: next(tokens)
        first = h.joined()
        second = h.joined(name="Bob")
        assert (first.self_id, second.self_id) == ("same", "other")

    def test_empty_room_forgotten(self, h: Harness) -> None:
        ada = h.joined()
        h.drop(ada)
        assert h.server.room_count == 1
        h.tick(31)
        assert h.server.room_count == 0
        assert h.server.get_timer() is None


class TestIceServers:
    """docs/signaling.md ``ice-servers``: pushed again before expiry and on ``ice-refresh``."""

    def test_refresh_on_request(self, h: Harness) -> None:
        ada = h.joined()
        ada.take()
        h.clock.advance(5)
        ada.send("ice-refresh")
        message = ada.take()[0]
        assert message["type"] == "ice-servers"
        assert message["ttl"] == TTL
        assert message["iceServers"][0]["username"] == f"{int(T0) + 5 + TTL}:{ada.self_id}"

    def test_pushed_at_half_ttl(self, h: Harness) -> None:
        ada = h.joined()
        ada.take()
        pushes = []
        for _ in range(70):
            h.tick(10)
            ada.send("ping")
            pushes += [h.clock.now for m in ada.take() if m["type"] == "ice-servers"]
        assert pushes == [T0 + 300, T0 + 600]

    def test_knockers_get_no_credentials(self, h: Harness) -> None:
        ada = h.joined()
        ada.send("lock", locked=True)
        calls = len(h.ice_calls)
        cy = h.connect()
        cy.join(name="Cy")
        cy.send("ice-refresh")
        assert cy.last_error() == "not-joined"
        assert len(h.ice_calls) == calls

    def test_refresh_is_rate_limited(self, h: Harness) -> None:
        """Each ``ice-refresh`` mints a credential: a burst of 3, then one per 10 s."""
        ada = h.joined()
        ada.take()
        minted = 0
        for _ in range(30):  # 30 asks in 3 s: the figure, 30 credentials before
            h.clock.advance(0.1)
            ada.send("ice-refresh")
            minted += sum(m["type"] == "ice-servers" for m in ada.inbox)
            ada.take()
        assert minted == 3
        ada.send("ice-refresh")
        assert ada.last_error() == "rate-limited"
        assert ada.inbox[-1]["ref"] == "ice-refresh"
        assert ada.closed is None
        h.clock.advance(10)
        ada.send("ice-refresh")
        assert ada.inbox[-1]["type"] == "ice-servers"

    def test_get_timer(self, h: Harness) -> None:
        assert h.server.get_timer() is None
        h.joined()
        assert h.server.get_timer() == T0 + 30
        h.tick(20)
        assert h.server.get_timer() == T0 + 30


class TestRegionRtts:
    """docs/signaling.md ``join.rtts``: the browser's round trips reach whoever picks the TURN servers."""

    def test_join_rtts_pick_every_credential(self, h: Harness) -> None:
        ada = h.connect()
        ada.join(rtts={"eu": 12.5, "us": 90})
        ada.take()
        ada.send("ice-refresh")
        assert ada.take()[0]["type"] == "ice-servers"
        assert h.ice_rtts == [{"eu": 12.5, "us": 90.0}] * 2

    def test_a_resume_measures_again_or_keeps_what_it_had(self, h: Harness) -> None:
        ada = h.connect()
        ada.join(rtts={"eu": 12.0})
        h.drop(ada)
        again = h.connect()
        again.join(resumeToken=ada.resume_token)
        assert h.ice_rtts[-1] == {"eu": 12.0}
        h.drop(again)
        third = h.connect()
        third.join(resumeToken=again.resume_token, rtts={"us": 30})
        assert h.ice_rtts[-1] == {"us": 30.0}

    def test_no_rtts_is_an_empty_map_and_a_knocker_keeps_its_own(self, h: Harness) -> None:
        ada = h.joined()
        assert h.ice_rtts == [{}]
        ada.send("lock", locked=True)
        cy = h.connect()
        cy.join(name="Cy", rtts={"ap": 7})
        ada.send("admit", participantId=ada.take()[-1]["participantId"])
        assert cy.take()[-1]["type"] == "joined"
        assert h.ice_rtts[-1] == {"ap": 7.0}

    @pytest.mark.parametrize(
        "rtts",
        [{"eu": -1}, {"eu": 1e6}, {"not a name": 1}, {"eu": "fast"}, {f"r{i}": 1 for i in range(17)}],
    )
    def test_bad_rtts_are_a_bad_message(self, h: Harness, rtts: dict[str, Any]) -> None:
        ada = h.connect()
        ada.join(rtts=rtts)
        assert ada.last_error() == "bad-message"
        assert h.ice_rtts == []


class TestUnreachableRegions:
    """docs/signaling.md ``join.unreachable``: regions the browser's probe could not reach reach the
    TURN choice (never a fallback) and are counted, known regions only, once per join."""

    def test_they_reach_every_credential_and_are_counted_per_join(self, h: Harness) -> None:
        ada = h.connect()
        ada.join(rtts={"eu": 12.5}, unreachable=["us", "mars"])
        ada.take()
        ada.send("ice-refresh")
        assert ada.take()[0]["type"] == "ice-servers"
        assert h.ice_unreachable == [frozenset({"us", "mars"})] * 2
        # "mars" is no region of this deployment: a client cannot invent metric labels.
        assert h.server.counters.region_probe_failures == {"us": 1}
        h.drop(ada)
        again = h.connect()
        again.join(resumeToken=ada.resume_token, unreachable=["us", "ap"])
        assert h.ice_rtts[-1] == {} and h.ice_unreachable[-1] == frozenset({"us", "ap"})
        assert h.server.counters.region_probe_failures == {"us": 2, "ap": 1}

    def test_a_region_measured_is_not_counted_as_unreachable(self, h: Harness) -> None:
        h.connect().join(rtts={"eu": 12.5}, unreachable=["eu"])
        assert h.server.counters.region_probe_failures == {}

    @pytest.mark.parametrize("unreachable", [["not a name"], "eu", [1], [f"r{i}" for i in range(17)]])
    def test_bad_lists_are_a_bad_message(self, h: Harness, unreachable: Any) -> None:
        ada = h.connect()
        ada.join(unreachable=unreachable)
        assert ada.last_error() == "bad-message"
        assert h.ice_unreachable == []
        assert h.server.counters.region_probe_failures == {}


class TestTurnRevocation:
    """A participant that leaves its meeting for good has its TURN credentials revoked, until the
    last one handed to it expires; one that only lost its socket keeps them (it may resume)."""

    def test_leave_kick_timeout_and_end(self, h: Harness) -> None:
        ada = h.joined()
        bob = h.joined(name="Bob")
        cy = h.joined(name="Cy")
        dee = h.joined(name="Dee")
        h.clock.advance(100)
        bob.send("ice-refresh")  # the last credential handed to bob expires 100 s later
        bob.send("leave")
        assert [(r.participant, r.until) for r in h.revoked] == [(bob.self_id, T0 + 100 + TTL)]
        ada.send("kick", participantId=cy.self_id)
        assert h.revoked[-1].participant == cy.self_id
        h.drop(dee)
        for _ in range(3):
            assert len(h.revoked) == 2  # awaiting resume: its call may go on
            h.tick(10)
            ada.send("ping")
        assert h.revoked[-1].participant == dee.self_id
        ada.send("end")
        assert [r.participant for r in h.revoked] == [bob.self_id, cy.self_id, dee.self_id, ada.self_id]

    def test_knockers_have_nothing_to_revoke(self, h: Harness) -> None:
        ada = h.joined()
        ada.send("lock", locked=True)
        h.connect().join(name="Cy")
        ada.send("end")
        assert [r.participant for r in h.revoked] == [ada.self_id]


class TestLogging:
    """STYLE.md §7: never log SDP, room keys, resume tokens or credentials."""

    def test_no_secrets(self, h: Harness, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="meet443")
        h.meetings["board"] = RoomAdmission("board", RoomMode.NORMAL, True, None, False)
        ada = h.joined("board", roomKey=ROOM_KEY)
        bob = h.joined("board", name="Bob")
        ada.send("offer", to=bob.self_id, sdp="v=0 sdp-do-not-log")
        ada.send("chat", text="chat-do-not-log", clientMessageId="1")
        ada.send("ice-refresh")
        h.drop(ada)
        h.connect().join("board", resumeToken=ada.resume_token)
        ada.send("kick", participantId=bob.self_id)
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert "joined" in text or "resumed" in text
        for secret in (ROOM_KEY, SECRET_CREDENTIAL, ada.resume_token, "sdp-do-not-log", "chat-do-not-log"):
            assert secret not in text

    def test_transitions_logged_once(self, h: Harness, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="meet443")
        ada = h.joined()
        h.drop(ada)
        h.tick(31)
        messages = [r.getMessage() for r in caplog.records]
        assert sum("awaiting resume" in m for m in messages) == 1
        assert sum("left room standup (timeout)" in m for m in messages) == 1
        assert sum("forgotten" in m for m in messages) == 1


# --------------------------------------------------------------------------------------------------
# Fuzzing: a participant sending anything never crashes the core or reaches another room.

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
TYPES = [*sorted(CLIENT_TYPES), "bogus"]


def messages(ids: list[str]) -> st.SearchStrategy[bytes]:
    """Well-typed messages that name real participants, of this room and of the other."""
    target = st.sampled_from(ids)
    structured = st.one_of(
        st.builds(lambda t: {"type": t}, st.sampled_from(TYPES)),
        st.builds(lambda to, sdp: {"type": "offer", "to": to, "sdp": sdp}, target, st.text(max_size=10)),
        st.builds(lambda to: {"type": "answer", "to": to, "sdp": "v=0"}, target),
        st.builds(lambda to: {"type": "candidate", "to": to, "candidate": None}, target),
        st.builds(
            lambda t, to: {"type": t, "participantId": to},
            st.sampled_from(["admit", "reject", "kick"]),
            target,
        ),
        st.builds(lambda to: {"type": "mute", "participantId": to, "kind": "audio"}, target),
        st.builds(lambda b: {"type": "lock", "locked": b}, st.booleans()),
        st.builds(lambda m: {"type": "chat", "text": "t", "clientMessageId": m}, st.sampled_from("abc")),
        st.builds(lambda a: {"type": "media", "audio": a, "video": a, "screen": False}, st.booleans()),
        st.builds(
            lambda room: {"type": "join", "v": 1, "room": room, "displayName": "X"},
            st.sampled_from(["room-a", "room-b", "Bad!"]),
        ),
    )
    return st.one_of(
        st.binary(max_size=64),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda t, rest: json.dumps({**rest, "type": t}).encode(),
            st.sampled_from(TYPES),
            st.dictionaries(
                st.sampled_from(["to", "sdp", "participantId", "text", "kind", "locked"]),
                json_values,
                max_size=3,
            ),
        ),
        structured.map(lambda m: json.dumps(m).encode()),
    )


def two_rooms() -> tuple[Harness, list[Client], list[Client]]:
    h = Harness()
    room_a = [h.joined("room-a", name=n, ip=f"192.0.2.{i}") for i, n in enumerate(["Ada", "Al"])]
    room_b = [h.joined("room-b", name=n, ip=f"198.51.100.{i}") for i, n in enumerate(["Bea", "Bo"])]
    room_b[0].send("lock", locked=True)
    knocker = h.connect(ip="203.0.113.9")
    knocker.join("room-b", "Kay")
    return h, room_a, room_b


class TestFuzz:
    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.data())
    def test_participant_cannot_reach_another_room(self, data: st.DataObject) -> None:
        h, room_a, room_b = two_rooms()
        h.auto_admit = False  # a join from the fuzzer stays pending: it must not reach room-b anyway
        ids = [c.self_id for c in room_a + room_b] + ["nobody"]
        ids += [m["participantId"] for m in room_b[0].inbox if m["type"] == "knock"]
        sender = room_a[0]
        b_conns = h.server.room_connections("room-b")
        for frame in data.draw(st.lists(messages(ids), max_size=25)):
            before = h.server.room_connections("room-a") | {sender.conn}
            outputs = sender.raw(frame)
            after = h.server.room_connections("room-a")
            for output in outputs:
                if isinstance(output, Send | Close):
                    assert output.conn in before | after
                    assert output.conn not in b_conns
            if data.draw(st.booleans()):
                h.tick(data.draw(st.floats(0, 20)))
                b_conns = h.server.room_connections("room-b")
        for client in room_b:
            assert all(m.get("from") not in {c.self_id for c in room_a} for m in client.inbox)

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 6),
                st.binary(max_size=40)
                | st.sampled_from(
                    [
                        b'{"type":"join","v":1,"room":"r","displayName":"x"}',
                        b'{"type":"leave"}',
                        b'{"type":"lock","locked":true}',
                        b'{"type":"lock","locked":false}',
                        b'{"type":"end"}',
                        b'{"type":"ping"}',
                    ]
                ),
            ),
            max_size=40,
        ),
        st.lists(st.sampled_from(["tick", "drop", "connect"]), max_size=10),
    )
    def test_any_interleaving_keeps_invariants(
        self, frames: list[tuple[int, bytes]], events: list[str]
    ) -> None:
        h = Harness(join_burst=1000, room_creation_burst=1000)
        clients = [h.connect(ip=f"192.0.2.{i}") for i in range(7)]
        for i, (who, frame) in enumerate(frames):
            clients[who].raw(frame)
            if events and i % 4 == 3:
                event = events.pop()
                if event == "tick":
                    h.tick(15)
                elif event == "drop":
                    h.drop(clients[who])
                    clients[who] = h.connect(ip=f"192.0.2.{who}")
                else:
                    clients.append(h.connect())
                    clients.pop(0)
        h.tick(100)
        h.tick(31)
        assert h.server.participant_count == 0
        assert h.server.room_count == 0


class TestAddressShares:
    """Issue 10 §2: one address cannot hold every socket; §6: nor fill a locked room's door."""

    def test_sockets_per_address(self) -> None:
        h = Harness(max_participants=1000, max_connections_per_address=3)
        mine = [h.connect("192.0.2.7") for _ in range(3)]
        refused = h.connect("192.0.2.7")
        assert refused.closed == (1013, "too many sockets from your address")
        assert h.connect("192.0.2.8").closed is None
        h.drop(mine[0])
        assert h.connect("192.0.2.7").closed is None  # the share is free again

    def test_ipv6_shares_by_64(self) -> None:
        h = Harness(max_connections_per_address=2)
        h.connect("2001:db8:1:2::1")
        h.connect("2001:db8:1:2::ffff")
        assert h.connect("2001:db8:1:2:3::9").closed == (1013, "too many sockets from your address")
        assert h.connect("2001:db8:1:3::1").closed is None

    def test_default_share_is_a_tenth_of_the_cap_and_at_least_100(self) -> None:
        assert Harness(max_participants=1000).server.sockets.share == 200
        assert Harness(max_participants=100).server.sockets.share == 100
        assert Harness(max_participants=10).server.sockets.share == 20  # never above the cap

    def test_every_way_out_frees_the_share(self, h: Harness) -> None:
        ada = h.joined()
        ada.send("lock", locked=True)
        bob = h.connect()
        bob.join(name="Bob")
        ada.send("reject", participantId=ada.take()[-1]["participantId"])
        cy = h.joined("other", ip="192.0.2.1")
        dee = h.joined("other", name="Dee")
        cy.send("kick", participantId=dee.self_id)
        eve = h.joined("third")
        again = h.connect()
        again.join("third", resumeToken=eve.resume_token)
        ada.send("end")
        assert h.server.sockets.held() == h.server.connection_count == 2  # cy and the resumed eve

    def test_one_address_cannot_fill_the_knock_queue(self) -> None:
        h = Harness(max_knockers_per_room=20, join_burst=100)
        ada = h.joined()
        ada.send("lock", locked=True)
        for _ in range(5):
            assert h.connect("203.0.113.9").join(name="K")["type"] == "knocking"
        sixth = h.connect("203.0.113.9")
        assert sixth.join(name="K")["type"] == "error"
        assert sixth.closed == (1000, "room-full")
        assert h.connect("203.0.113.10").join(name="K")["type"] == "knocking"

    def test_knocking_has_a_deadline_that_pings_do_not_extend(self, h: Harness) -> None:
        ada = h.joined()
        ada.send("lock", locked=True)
        cy = h.connect()
        assert cy.join(name="Cy")["type"] == "knocking"
        knocker = ada.take()[-1]["participantId"]
        for _ in range(29):
            h.tick(10)
            cy.send("ping")
            ada.send("ping")
        assert cy.closed is None
        h.tick(10)
        assert cy.last_error() == "knock-timeout"
        assert cy.closed == (1000, "knock-timeout")
        assert {"type": "knock-cancelled", "participantId": knocker} in ada.take()
        assert h.server.get_timer() is not None
