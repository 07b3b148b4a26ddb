"""The node core (src/meet443/node.py): routing between TURN, the SFU and signaling, on a fake clock.

Every core is the real one; only the relay sockets are a fake pool (addresses, no sockets) and time
is an argument.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import pytest

from meet443.node import SWEEP_SECONDS, NodeCore, Output
from meet443.proto.addresses import Address, ServerPort, ToClientFrom, Transport
from meet443.proto.dtls.certificate import DtlsCertificate
from meet443.proto.rtp.packet import RtpPacket
from meet443.proto.signaling.admission import RoomAdmission, RoomMode
from meet443.proto.signaling.room import Close, LookupRoom, Send, SignalingServer
from meet443.proto.stun.attributes import (
    ChannelNumber,
    RequestedTransport,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.proto.turn.allocation import ClientFlow
from meet443.proto.turn.channeldata import ChannelData
from meet443.proto.turn.client import TurnClientSession
from meet443.proto.turn.credentials import CredentialStore
from meet443.proto.turn.peer_policy import PeerPolicy
from meet443.proto.turn.server import ToClient, ToPeer, TurnServer, TurnSettings
from meet443.sfu.conference import TICK_SECONDS, Conference, Datagram
from tests.sfu.test_conference import SFU, SFU_CERT, Browser, Room, audio_packet, seeded, sfu_ice

NOW = 1_800_000_000.0
SERVER_IP = SFU[0]
OTHER_PORT = 3478
CLIENT: Address = ("198.51.100.7", 50000)
PEER: Address = ("192.0.2.10", 40000)


class FakeRelays:
    """A relay port pool without sockets (``RelayPortPool``)."""

    def __init__(self) -> None:
        self.ports = iter(range(50000, 60000))
        self.open_relays: set[Address] = set()

    def open(self, family: int, *, even: bool = False, port: int | None = None) -> Address | None:
        relay = (SERVER_IP, port or next(self.ports))
        self.open_relays.add(relay)
        return relay

    def close(self, relay: Address) -> None:
        self.open_relays.discard(relay)


class Node:
    """A node core with all three cores, and the WebSocket frames each connection received."""

    def __init__(self, *, sfu: bool = True) -> None:
        self.now = NOW
        self.relays = FakeRelays()
        ids = iter(range(1, 1000))
        self.signaling = SignalingServer(
            ice_servers=lambda participant, now, rtts: ([], 3600), token=lambda n: f"{next(ids):0{2 * n}x}"
        )
        settings = TurnSettings(
            realm="meet.test",
            change_port=True,
            server_addresses=frozenset({SERVER_IP}),
            allocation_bandwidth=1e9,
        )
        self.turn = TurnServer(
            settings,
            CredentialStore("secret", {"alice": "wonderland"}),
            PeerPolicy(
                ["192.0.2.0/24"], server_addresses=[SERVER_IP], main_port=SFU[1], relay_ports=(50000, 59999)
            ),
            self.relays,
            random.Random(3).randbytes,
        )
        conference = Conference(SFU_CERT, [SFU, (SERVER_IP, OTHER_PORT)], seeded(2)) if sfu else None
        self.core = NodeCore(self.signaling, self.turn, conference)
        self.inbox: dict[int, list[dict[str, Any]]] = {}
        self.closed: dict[int, tuple[int, str]] = {}
        self.datagrams: list[Datagram] = []
        self.to_peers: list[ToPeer] = []

    def take(self, outputs: list[Output]) -> list[Output]:
        """Delivers frames, answers lookups (every room a group room) and collects datagrams."""
        for output in outputs:
            if isinstance(output, Send):
                self.inbox.setdefault(output.conn, []).append(json.loads(output.payload))
            elif isinstance(output, Close):
                self.closed[output.conn] = (output.code, output.reason)
            elif isinstance(output, LookupRoom):
                admission = RoomAdmission(output.room, RoomMode.GROUP, False, None, False)
                self.take(self.core.admit(output.conn, admission, self.now))
            elif isinstance(output, ToClientFrom) or output.__class__ is tuple:
                self.datagrams.append(tuple(output))  # type: ignore[arg-type]
            elif isinstance(output, ToClient):
                self.datagrams.append((ServerPort.MAIN, output.flow.address, output.data))
            elif isinstance(output, ToPeer):
                self.to_peers.append(output)
        return outputs

    def join(self, conn: int, name: str, room: str = "town-hall") -> dict[str, Any]:
        self.take(self.core.connect(conn, "198.51.100.7", self.now))
        self.send(conn, {"type": "join", "v": 1, "room": room, "displayName": name})
        return self.inbox[conn][-1]

    def send(self, conn: int, message: dict[str, Any]) -> None:
        self.take(self.core.receive_signaling(conn, json.dumps(message), self.now))

    def last(self, conn: int, kind: str) -> dict[str, Any]:
        found = [m for m in self.inbox.get(conn, []) if m["type"] == kind]
        assert found, self.inbox.get(conn)
        return found[-1]

    def datagram(
        self, port: ServerPort, data: bytes, source: Address
    ) -> list[tuple[ServerPort, Address, bytes]]:
        mark = len(self.datagrams)
        self.take(self.core.receive_datagram(port, data, source, self.now))
        return self.datagrams[mark:]


def binding_request(transaction_id: bytes = b"t" * 12) -> bytes:
    return bytes(Message(Method.BINDING, StunClass.REQUEST, transaction_id, []))


class TestGroupRoomThroughSignaling:
    """docs/signaling.md "Group rooms": signaling → SFU → signaling, inside one call of the core."""

    def test_publish_reaches_the_other_participant_as_a_subscribe_offer(self) -> None:
        node = Node()
        assert node.join(1, "Alice")["type"] == "joined"
        assert node.join(2, "Bob")["type"] == "joined"
        alice = Browser("alice", CLIENT, SFU_CERT, "ualice")
        node.send(1, {"type": "publish", "sdp": alice.publish_offer(), "sources": {"0": "microphone"}})
        answer = node.last(1, "publish-answer")
        assert "a=ice-lite" in answer["sdp"]
        offer = node.last(2, "subscribe-offer")
        alice_id = node.last(1, "joined")["selfId"]
        assert {t["participantId"] for t in offer["tracks"]} == {alice_id}
        assert {"kind": "audio", "source": "microphone"}.items() <= offer["tracks"][0].items()
        assert (
            node.core.conference is not None and node.core.conference.track_count == 2
        )  # aiortc's audio and video

    def test_leaving_removes_the_participant_from_the_sfu(self) -> None:
        node = Node()
        node.join(1, "Alice")
        alice = Browser("alice", CLIENT, SFU_CERT, "ualice")
        node.send(1, {"type": "publish", "sdp": alice.publish_offer(), "sources": {"0": "microphone"}})
        conference = node.core.conference
        assert conference is not None and conference.participant_count == 1
        node.send(1, {"type": "leave"})
        assert conference.participant_count == 0
        assert conference.routers == {}

    def test_a_node_without_an_sfu_refuses_nothing_it_cannot_serve(self) -> None:
        node = Node(sfu=False)
        node.join(1, "Alice")
        alice = Browser("alice", CLIENT, SFU_CERT, "ualice")
        node.send(1, {"type": "publish", "sdp": alice.publish_offer(), "sources": {"0": "microphone"}})
        assert [m["type"] for m in node.inbox[1]] == ["joined"]


class TestSfuRestart:
    """docs/signaling.md "SFU restart": the SFU forgets a room; its participants start over."""

    def test_everyone_is_told_and_publishes_again_on_new_connections(self) -> None:
        node = Node()
        alice_id = node.join(1, "Alice")["selfId"]
        bob_id = node.join(2, "Bob")["selfId"]
        node.join(3, "Carol", room="other-room")
        alice = Browser("alice", CLIENT, SFU_CERT, "ualice")
        node.send(1, {"type": "publish", "sdp": alice.publish_offer(), "sources": {"0": "microphone"}})
        first = sfu_ice(node.last(1, "publish-answer")["sdp"])
        conference = node.core.conference
        assert conference is not None and conference.track_count == 2
        node.inbox.clear()
        node.take(node.core.restart_sfu("town-hall", node.now))
        assert node.inbox[1] == [{"type": "sfu-restart"}]
        assert node.inbox[2] == [{"type": "sfu-restart"}]
        assert 3 not in node.inbox  # another room's media session is untouched
        # Members again, with nothing published and no connection: the old ICE session is gone.
        assert conference.participant_count == 3 and conference.track_count == 0
        alice.remote["publish"] = first
        assert not conference.owns_stun(Message.parse(alice.check("publish")))
        # A publish of the old peer connection still in flight, then the new one's (a new certificate).
        node.send(1, {"type": "publish", "sdp": alice.publish_offer(), "sources": {"0": "microphone"}})
        stale = sfu_ice(node.last(1, "publish-answer")["sdp"])
        again = Browser("alice", CLIENT, DtlsCertificate.generate(NOW, seeded(5)), "ualice2")
        node.send(1, {"type": "publish", "sdp": again.publish_offer(), "sources": {"0": "microphone"}})
        again.remote["publish"] = sfu_ice(node.last(1, "publish-answer")["sdp"])
        assert again.remote["publish"] not in (first, stale)
        alice.remote["publish"] = stale
        assert not conference.owns_stun(Message.parse(alice.check("publish")))
        assert conference.owns_stun(Message.parse(again.check("publish")))
        offer = node.last(2, "subscribe-offer")
        assert {t["participantId"] for t in offer["tracks"]} == {alice_id}
        assert node.signaling.room_of(2) == "town-hall" and bob_id != alice_id

    def test_a_participant_awaiting_resume_gets_it_after_joined(self) -> None:
        node = Node()
        token = node.join(1, "Alice")["resumeToken"]
        node.join(2, "Bob")
        node.take(node.core.disconnected(1, node.now))
        node.take(node.core.restart_sfu("town-hall", node.now))
        node.take(node.core.connect(4, "198.51.100.7", node.now))
        node.send(
            4, {"type": "join", "v": 1, "room": "town-hall", "displayName": "Alice", "resumeToken": token}
        )
        assert [m["type"] for m in node.inbox[4]] == ["joined", "sfu-restart"]

    def test_an_unknown_room_is_a_no_op(self) -> None:
        assert Node().core.restart_sfu("nowhere", NOW) == []


def connected_publisher(node: Node, port: ServerPort) -> Browser:
    """Alice joins, publishes and connects her publish connection through ``port``."""
    node.join(1, "Alice")
    alice = Browser("alice", CLIENT, SFU_CERT, "ualice")
    node.send(1, {"type": "publish", "sdp": alice.publish_offer(), "sources": {"0": "microphone"}})
    alice.remote["publish"] = sfu_ice(node.last(1, "publish-answer")["sdp"])
    answers = node.datagram(port, alice.check("publish"), CLIENT)
    assert [(p, a) for p, a, _ in answers] == [(port, CLIENT)]
    assert Message.parse(answers[0][2]).klass == StunClass.SUCCESS
    return alice


class TestWhichPortAnswers:
    """RFC 8445 §7.2.2: the SFU answers a check, and sends DTLS and media, from the port it came to."""

    @pytest.mark.parametrize("port", [ServerPort.MAIN, ServerPort.OTHER])
    def test_ice_check_answered_from_its_port(self, port: ServerPort) -> None:
        connected_publisher(Node(), port)

    def test_media_leaves_from_the_port_the_subscriber_checked(self) -> None:
        """Bob's subscribe connection was checked on the other port: his copies leave from there,
        while Alice's connection stays on the main port."""
        node = Node()
        room = Room()
        assert node.core.conference is not None
        room.sfu = node.core.conference
        alice = room.join("alice", 40001)
        room.publish(alice)
        bob = room.join("bob", 40002)
        room.subscribe(bob)
        room.connect(alice, "publish", ServerPort.MAIN)
        room.connect(bob, "subscribe", ServerPort.OTHER)
        sent = node.datagram(ServerPort.MAIN, alice.srtp["publish"].protect(audio_packet(7)), alice.address)
        media = [(port, address) for port, address, data in sent if not 192 <= data[1] <= 223]
        assert media == [(ServerPort.OTHER, bob.address)]
        forwarded = RtpPacket.parse(bob.srtp["subscribe"].unprotect(sent[-1][2]))
        assert forwarded.payload == b"\xfc" * 40


class TestDatagramRouting:
    """RFC 7983 on the shared ports: who gets what."""

    def test_plain_binding_is_turns_on_the_main_port(self) -> None:
        node = Node()
        (answer,) = node.datagram(ServerPort.MAIN, binding_request(), CLIENT)
        message = Message.parse(answer[2])
        assert answer[:2] == (ServerPort.MAIN, CLIENT)
        assert message.get(XorMappedAddress) == XorMappedAddress(CLIENT)

    def test_binding_on_the_other_port_is_answered_there(self) -> None:
        node = Node()
        (answer,) = node.datagram(ServerPort.OTHER, binding_request(), CLIENT)
        assert answer[:2] == (ServerPort.OTHER, CLIENT)

    def test_turn_requests_are_refused_on_the_other_port(self) -> None:
        node = Node()
        allocate = bytes(Message(Method.ALLOCATE, StunClass.REQUEST, b"a" * 12, [RequestedTransport(17)]))
        assert node.datagram(ServerPort.OTHER, allocate, CLIENT) == []
        assert node.turn.counters.dropped["other_port_not_binding"] == 1

    def test_malformed_stun_is_parsed_once_and_counted_once(self) -> None:
        node = Node()
        assert node.datagram(ServerPort.MAIN, b"\x00\x01\x00\x04" + bytes(16), CLIENT) == []
        assert node.turn.counters.dropped == {"malformed_stun": 1}

    def test_empty_and_unknown_datagrams_are_dropped(self) -> None:
        node = Node(sfu=False)
        assert node.datagram(ServerPort.MAIN, b"", CLIENT) == []
        assert node.datagram(ServerPort.MAIN, b"\x16\xfe\xfd" + bytes(10), CLIENT) == []
        assert node.datagram(ServerPort.OTHER, b"\x80" + bytes(11), CLIENT) == []
        assert node.turn.counters.dropped == {"empty": 1, "udp_dtls": 1, "other_port_not_stun": 1}

    def test_no_turn_through_turn(self) -> None:
        """A datagram from one of our relays reaches the SFU's connections only, never TURN."""
        node = Node()
        flow = ClientFlow(Transport.UDP, CLIENT, 0)
        session = TurnClientSession("alice", "wonderland", os.urandom)
        _, request = session.allocate()
        node.take(node.core.receive_stream(flow, request, node.now))  # any transport: a 401 challenge
        challenge = Message.parse(node.datagrams.pop()[2])
        assert session.learn_challenge(challenge)
        _, request = session.allocate()
        (answer,) = node.datagram(ServerPort.MAIN, request, CLIENT)
        relay = Message.parse(answer[2]).get(XorRelayedAddress)
        assert relay is not None
        relay_address = (SERVER_IP, relay.address[1])
        assert node.datagram(ServerPort.MAIN, binding_request(), relay_address) == []
        assert node.turn.counters.dropped["from_own_relay"] == 1
        # ChannelData from the relay finds no allocation of its own.
        frame = bytes(ChannelData(0x4000, b"hello"))
        assert node.datagram(ServerPort.MAIN, frame, relay_address) == []
        assert node.turn.counters.dropped["channel_data_without_allocation"] == 1

    def test_channel_data_is_relayed_to_its_peer(self) -> None:
        node = Node()
        session = TurnClientSession("alice", "wonderland", os.urandom)
        _, request = session.allocate()
        (challenge,) = node.datagram(ServerPort.MAIN, request, CLIENT)
        assert session.learn_challenge(Message.parse(challenge[2]))
        _, request = session.allocate()
        (answer,) = node.datagram(ServerPort.MAIN, request, CLIENT)
        relay = Message.parse(answer[2]).get(XorRelayedAddress)
        assert relay is not None
        _, bind = session.request(Method.CHANNEL_BIND, [ChannelNumber(0x4001), XorPeerAddress(PEER)])
        (bound,) = node.datagram(ServerPort.MAIN, bind, CLIENT)
        assert Message.parse(bound[2]).klass == StunClass.SUCCESS
        assert node.datagram(ServerPort.MAIN, bytes(ChannelData(0x4001, b"media")), CLIENT) == []
        assert node.to_peers == [ToPeer(relay.address, PEER, b"media")]


class TestTimers:
    """One deadline for the node: each core's, asked only when the core handled its timer."""

    def test_an_idle_node_wakes_for_nothing(self) -> None:
        """A Binding leaves no state (no allocation, no cached answer): one sweep after the message,
        then no deadline at all."""
        node = Node()
        assert node.core.get_timer() is None
        node.datagram(ServerPort.MAIN, binding_request(), CLIENT)
        wakes = []
        while (deadline := node.core.get_timer()) is not None:
            wakes.append(deadline - NOW)
            node.take(node.core.handle_timer(deadline))
        assert wakes == [SWEEP_SECONDS]

    def test_a_message_has_its_core_looked_at_within_a_sweep(self) -> None:
        node = Node()
        node.take(node.core.connect(1, "198.51.100.7", node.now))
        assert node.core.get_timer() == NOW + SWEEP_SECONDS
        node.take(node.core.handle_timer(NOW + SWEEP_SECONDS))
        # Then the signaling core's own deadline: the unjoined socket's join deadline.
        timer = node.core.get_timer()
        assert timer == node.signaling.get_timer()
        assert timer is not None and timer > NOW + SWEEP_SECONDS

    def test_signaling_deadlines_are_served(self) -> None:
        node = Node()
        node.take(node.core.connect(1, "198.51.100.7", node.now))
        deadline = node.core.get_timer()
        while deadline is not None and 1 not in node.closed:
            node.now = deadline
            node.take(node.core.handle_timer(deadline))
            deadline = node.core.get_timer()
        # Never joined, never pinged: the join deadline and the heartbeat limit are both 30 s.
        assert node.closed[1] in {(1008, "no join"), (1001, "heartbeat timeout")}
        assert node.now - NOW == pytest.approx(node.signaling.limits.join_deadline, abs=SWEEP_SECONDS)
        assert node.core.get_timer() is None

    def test_a_group_room_keeps_the_sfu_tick_and_an_empty_one_stops_it(self) -> None:
        node = Node()
        node.join(1, "Alice")
        timer = node.core.get_timer()
        assert timer is not None and timer <= NOW + TICK_SECONDS
        node.now += 0.5
        node.take(node.core.handle_timer(node.now))
        assert node.core.get_timer() == pytest.approx(node.now + TICK_SECONDS)
        node.send(1, {"type": "leave"})
        node.now += 1.5
        node.take(node.core.handle_timer(node.now))
        # The room is gone: no 20 ms tick, only the open socket's heartbeat deadline.
        timer = node.core.get_timer()
        assert timer is not None and timer > node.now + 10

    def test_a_turn_allocation_is_expired_on_time(self) -> None:
        node = Node()
        session = TurnClientSession("alice", "wonderland", os.urandom)
        _, request = session.allocate(lifetime=60)
        (challenge,) = node.datagram(ServerPort.MAIN, request, CLIENT)
        session.learn_challenge(Message.parse(challenge[2]))
        _, request = session.allocate(lifetime=60)
        node.datagram(ServerPort.MAIN, request, CLIENT)
        assert len(node.turn.allocations) == 1
        assert node.core.get_timer() == NOW + SWEEP_SECONDS
        while (deadline := node.core.get_timer()) is not None and node.turn.allocations:
            node.now = deadline
            node.take(node.core.handle_timer(deadline))
        assert node.now == pytest.approx(NOW + 60)
        assert node.relays.open_relays == set()
