"""Media workers sans I/O (src/meet443/workers.py, the worker parts of src/meet443/node.py): room
placement, the main port's forwarding between workers, the replicated quota ledger, and a control
node with two worker nodes wired together in memory."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meet443 import ipc
from meet443.node import Forward, NodeCore, Output, ToWorker
from meet443.proto.addresses import ServerPort, ToClientFrom
from meet443.proto.signaling.admission import RoomAdmission, RoomMode
from meet443.proto.signaling.room import (
    Close,
    LeftSfu,
    LookupRoom,
    RevokeTurn,
    Send,
    SignalingServer,
    ToSfu,
)
from meet443.proto.stun.attributes import Username
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.sfu.conference import Conference, RoomSignal, Signal
from meet443.workers import (
    MAX_ROUTES,
    ClusterTurnState,
    MainPortRoutes,
    ReplicatedLedger,
    WorkerPlacement,
    apply_cluster_turn,
    split_range,
    ufrag_tag,
)
from tests.proto.turn.harness import FakeClock, make_server
from tests.sfu.test_conference import SFU, SFU_CERT, Browser, seeded, sfu_ice

NOW = 1_800_000_000.0


class TestPlacement:
    def test_new_rooms_go_to_the_least_loaded_worker_and_stay(self) -> None:
        placement = WorkerPlacement(2)
        assert placement.joined("a", "p1") == 0
        assert placement.joined("b", "p2") == 1  # worker 0 has a participant now
        assert placement.joined("a", "p3") == 0  # a room stays where it is
        assert placement.joined("c", "p4") == 1  # 2 participants on 0, 1 on 1
        assert placement.load(0) == (2, 1) and placement.load(1) == (2, 2)
        assert placement.joined("d", "p5") == 0  # equal participants: fewer rooms wins
        assert placement.rooms_on(0) == ["a", "d"]
        assert placement.members("a") == ["p1", "p3"]

    def test_a_room_is_freed_by_its_last_leave_and_repeats_are_harmless(self) -> None:
        placement = WorkerPlacement(3)
        placement.joined("a", "p1")
        placement.joined("a", "p1")
        assert placement.load(0) == (1, 1)
        assert placement.left("a", "p1") == 0
        assert placement.left("a", "p1") is None
        assert placement.worker_of("a") is None and placement.load(0) == (0, 0)

    def test_worker_count_is_bounded_by_the_ufrag_tags(self) -> None:
        with pytest.raises(ValueError, match="workers"):
            WorkerPlacement(65)

    def test_relay_ranges_split_without_overlap(self) -> None:
        assert split_range((49152, 65535), 2) == [(49152, 57343), (57344, 65535)]
        slices = split_range((40000, 40999), 3)
        assert slices == [(40000, 40332), (40333, 40665), (40666, 40999)]
        with pytest.raises(ValueError, match="smaller"):
            split_range((40000, 40001), 3)


def check(ufrag: str, transaction: bytes = b"c" * 12) -> Message:
    return Message(Method.BINDING, StunClass.REQUEST, transaction, [Username(f"{ufrag}:remote")])


class TestMainPortRoutes:
    def test_a_check_for_another_workers_ufrag_names_that_worker(self) -> None:
        routes = MainPortRoutes(0, 3)
        assert routes.owner_of_check(check(ufrag_tag(2) + "AAAAAAA")) == 2
        assert routes.owner_of_check(check(ufrag_tag(0) + "AAAAAAA")) is None  # ours
        assert routes.owner_of_check(check(ufrag_tag(5) + "AAAAAAA")) is None  # no such worker
        assert routes.owner_of_check(check(ufrag_tag(2) + "AAAA")) is None  # not our ufrag length
        plain = Message(Method.BINDING, StunClass.REQUEST, b"p" * 12, [])
        assert routes.owner_of_check(plain) is None  # TURN's Binding

    def test_routes_are_learnt_forgotten_and_bounded(self) -> None:
        routes = MainPortRoutes(0, 2)
        routes.learn(("192.0.2.1", 1), 1)
        assert routes.route(("192.0.2.1", 1)) == 1
        routes.forget(("192.0.2.1", 1))
        assert routes.route(("192.0.2.1", 1)) is None
        for port in range(MAX_ROUTES + 10):
            routes.learn(("192.0.2.2", port), 1)
        assert len(routes) == MAX_ROUTES
        assert routes.route(("192.0.2.2", 0)) is None  # the oldest went first
        assert routes.route(("192.0.2.2", MAX_ROUTES + 9)) == 1


class TestReplicatedLedger:
    def test_held_counts_every_worker_and_own_changes_are_published(self) -> None:
        published: list[tuple[str, int]] = []
        ledger = ReplicatedLedger(lambda key, held: published.append((key, held)))
        ledger.allocated("user:p")
        ledger.others_hold(1, "user:p", 3)
        ledger.others_hold(2, "user:p", 2)
        assert ledger.held("user:p") == 6
        ledger.released("user:p")
        assert published == [("user:p", 1), ("user:p", 0)]
        ledger.worker_gone(1)
        assert ledger.held("user:p") == 2
        ledger.others_hold(2, "user:p", 0)
        assert ledger.held("user:p") == 0 and len(ledger) == 0


class Cluster:
    """A control node and two worker nodes, their messages carried in memory (what the channels
    and inboxes of aio/control.py and aio/worker.py do with real processes)."""

    def __init__(self) -> None:
        ids = iter(range(1, 1000))
        self.control = NodeCore(
            SignalingServer(
                ice_servers=lambda participant, now, rtts: ([], 3600),
                token=lambda n: f"{next(ids):0{2 * n}x}",
            ),
            placement=WorkerPlacement(2),
        )
        self.workers = [
            NodeCore(
                None,
                None,
                Conference(SFU_CERT, [SFU, (SFU[0], 3478 + k)], seeded(10 + k), ufrag_tag=ufrag_tag(k)),
                routes=MainPortRoutes(k, 2),
            )
            for k in range(2)
        ]
        self.inbox: dict[int, list[dict[str, Any]]] = {}
        self.to_workers: list[ToWorker] = []
        #: (worker that sent it, port, address, data)
        self.datagrams: list[tuple[int, Any, Any, bytes]] = []
        self.forwarded = 0

    def control_outputs(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Send):
                self.inbox.setdefault(output.conn, []).append(json.loads(output.payload))
            elif isinstance(output, LookupRoom):
                admission = RoomAdmission(output.room, RoomMode.GROUP, False, None, False)
                self.control_outputs(self.control.admit(output.conn, admission, NOW))
            elif isinstance(output, ToWorker):
                self.to_workers.append(output)
                targets = range(2) if output.worker is None else [output.worker]
                for k in targets:
                    if not isinstance(output.message, RevokeTurn):  # these workers run no TURN
                        self.worker_outputs(k, self.workers[k].from_control(output.message, NOW))
            else:
                assert not isinstance(output, Close), output

    def worker_outputs(self, k: int, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Signal | RoomSignal):
                self.control_outputs(self.control.receive_from_worker(output))
            elif isinstance(output, Forward):
                self.forwarded += 1
                self.worker_outputs(
                    output.worker,
                    self.workers[output.worker].receive_datagram(
                        ServerPort.MAIN, output.data, output.source, NOW
                    ),
                )
            elif isinstance(output, ToClientFrom) or output.__class__ is tuple:
                port, address, data = output  # type: ignore[misc]
                self.datagrams.append((k, port, address, data))

    def join(self, conn: int, name: str, room: str) -> str:
        self.control_outputs(self.control.connect(conn, "198.51.100.7", NOW))
        self.send(conn, {"type": "join", "v": 1, "room": room, "displayName": name})
        joined = self.last(conn, "joined")
        return str(joined["selfId"])

    def send(self, conn: int, message: dict[str, Any]) -> None:
        self.control_outputs(self.control.receive_signaling(conn, json.dumps(message), NOW))

    def last(self, conn: int, kind: str) -> dict[str, Any]:
        found = [m for m in self.inbox.get(conn, []) if m["type"] == kind]
        assert found, self.inbox.get(conn)
        return found[-1]


class TestControlAndWorkers:
    def test_two_rooms_run_on_two_workers(self) -> None:
        cluster = Cluster()
        cluster.join(1, "Alice", "room-a")
        cluster.join(2, "Bob", "room-b")
        assert cluster.control.placement is not None
        assert cluster.control.placement.worker_of("room-a") == 0
        assert cluster.control.placement.worker_of("room-b") == 1
        for conn, worker in ((1, 0), (2, 1)):
            browser = Browser(f"b{conn}", ("198.51.100.7", 40000 + conn), SFU_CERT, f"user{conn}")
            cluster.send(conn, {"type": "publish", "sdp": browser.publish_offer(), "sources": {}})
            ufrag, _ = sfu_ice(cluster.last(conn, "publish-answer")["sdp"])
            assert ufrag.startswith(ufrag_tag(worker))  # the answer came from the room's worker
            conference = cluster.workers[worker].conference
            assert conference is not None and conference.participant_count == 1

    def test_a_check_on_the_wrong_workers_main_port_is_forwarded_and_answered(self) -> None:
        cluster = Cluster()
        cluster.join(1, "Alice", "room-a")
        cluster.join(2, "Bob", "room-b")  # on worker 1
        bob = Browser("bob", ("198.51.100.9", 40002), SFU_CERT, "ubob")
        cluster.send(2, {"type": "publish", "sdp": bob.publish_offer(), "sources": {}})
        bob.remote["publish"] = sfu_ice(cluster.last(2, "publish-answer")["sdp"])
        # SO_REUSEPORT hands Bob's flow on the main port to worker 0.
        cluster.worker_outputs(0, cluster.workers[0].receive_datagram(
            ServerPort.MAIN, bob.check("publish"), bob.address, NOW
        ))  # fmt: skip
        assert cluster.forwarded == 1
        ((sender, port, address, answer),) = cluster.datagrams
        assert (sender, port, address) == (1, ServerPort.MAIN, bob.address)
        assert Message.parse(answer).klass == StunClass.SUCCESS
        # What follows from that address (DTLS) goes the same way, without a check.
        cluster.worker_outputs(0, cluster.workers[0].receive_datagram(
            ServerPort.MAIN, b"\x16\xfe\xfd" + b"\x00" * 20, bob.address, NOW
        ))  # fmt: skip
        assert cluster.forwarded == 2

    def test_leaving_and_revoking_reach_the_workers(self) -> None:
        cluster = Cluster()
        alice = cluster.join(1, "Alice", "room-a")
        cluster.send(1, {"type": "leave"})
        messages = [w.message for w in cluster.to_workers]
        assert ToSfu("room-a", alice, None) in messages
        assert LeftSfu("room-a", alice) in messages
        revokes = [w for w in cluster.to_workers if isinstance(w.message, RevokeTurn)]
        assert [w.worker for w in revokes] == [None]  # every worker

    def test_a_dead_workers_rooms_are_rejoined_and_told_sfu_restart(self) -> None:
        cluster = Cluster()
        alice = cluster.join(1, "Alice", "room-a")
        bob = cluster.join(2, "Bob", "room-a")
        cluster.join(3, "Carol", "room-b")  # on worker 1: untouched
        respawned = NodeCore(
            None, None, Conference(SFU_CERT, [SFU], seeded(99), ufrag_tag=ufrag_tag(0)),
            routes=MainPortRoutes(0, 2),
        )  # fmt: skip
        cluster.workers[0] = respawned
        cluster.to_workers.clear()
        cluster.control_outputs(cluster.control.worker_died(0, NOW))
        assert {(w.worker, w.message) for w in cluster.to_workers} == {
            (0, ToSfu("room-a", alice, None)),
            (0, ToSfu("room-a", bob, None)),
        }
        assert respawned.conference is not None and respawned.conference.participant_count == 2
        for conn in (1, 2):
            assert cluster.inbox[conn][-1] == {"type": "sfu-restart"}
        assert all(m["type"] != "sfu-restart" for m in cluster.inbox[3])


class TestClusterTurn:
    """docs/cluster.md with ``--workers N``: the control process forwards what the cluster link
    sets on TURN to every worker, and the other nodes' revocations."""

    NODE = (("10.200.120.2",), (443, 3478, 3479), (51000, 51100))

    def test_sent_only_on_change_and_alternates_kept_until_replaced(self) -> None:
        state = ClusterTurnState()
        assert state.current == ipc.ClusterTurn([], [])  # what a worker spawned first is sent
        sent = state.update([self.NODE], None)
        assert sent == ipc.ClusterTurn([(["10.200.120.2"], [443, 3478, 3479], (51000, 51100))], [])
        assert state.update([self.NODE], None) is None  # every heartbeat, no change: no message
        draining = state.update([self.NODE], [("10.200.120.2", 443)])
        assert draining is not None and draining.alternates == [("10.200.120.2", 443)]
        gone = state.update([], None)  # the other node left; the alternates stay as they were
        assert gone == ipc.ClusterTurn([], [("10.200.120.2", 443)])
        assert state.current == gone  # what a respawned worker is sent at its hello

    def test_a_worker_applies_it_to_its_turn_core(self) -> None:
        turn, _ = make_server(FakeClock())
        message = ipc.decode(ipc.encode(ipc.ClusterTurn([(["10.200.120.2"], [3479], (51000, 51100))], [])))
        assert isinstance(message, ipc.ClusterTurn)
        assert not turn.policy.relay_allowed("10.200.120.2", 3479)
        apply_cluster_turn(turn, message)
        assert turn.policy.relay_allowed("10.200.120.2", 3479)
        assert turn.policy.relay_allowed("10.200.120.2", 51050)
        assert not turn.policy.relay_allowed("10.200.120.2", 22)
        assert not turn.alternates
        apply_cluster_turn(turn, ipc.ClusterTurn([], [("10.200.120.3", 443)]))
        assert not turn.policy.relay_allowed("10.200.120.2", 3479)
        assert turn.alternates == (("10.200.120.3", 443),)

    def test_another_nodes_revocation_goes_to_every_worker(self) -> None:
        cluster = Cluster()
        outputs = cluster.control.revoke_turn("p9", NOW + 60, NOW)
        assert outputs == [ToWorker(None, RevokeTurn("p9", NOW + 60))]
