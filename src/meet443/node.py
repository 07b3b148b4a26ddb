"""One node's protocol cores composed sans I/O: what a datagram or a signaling message does.

:class:`NodeCore` sits on :class:`~meet443.proto.turn.server.TurnServer`,
:class:`~meet443.sfu.conference.Conference` and
:class:`~meet443.proto.signaling.room.SignalingServer` the way aioquic's ``H3Connection`` sits on
``QuicConnection``: it decides which core gets what arrives, hands what one core says to another,
and returns only what must leave the process. Bytes and ``now`` in, outputs out; the asyncio layer
(:mod:`meet443.aio.node`) moves them and arms one timer from :meth:`NodeCore.get_timer`.

Datagrams (RFC 7983 §7, first byte):

* main port: STUN is parsed once; an ICE check for a group-room connection goes to the SFU, any
  other STUN to TURN. ChannelData goes to TURN's relay, DTLS and SRTP/SRTCP to the SFU.
* the other port (:attr:`ServerPort.OTHER`): ICE checks, DTLS and SRTP for the SFU (browsers ignore
  candidates below port 1024, so with ``--port 443`` they reach the SFU here); any other STUN is an
  RFC 5780 Binding for TURN's change-port answers, never a TURN request.
* from one of our own relay sockets (a client behind a firewall reaching the SFU through TURN): the
  SFU only. A relay never reaches TURN itself: no TURN-through-TURN chaining.

Signaling: a group-room request goes to the SFU, and the SFU's answers and offers go back to the
room's participants through the signaling core, all within one call. A participant gone from its
meeting for good has its TURN allocations deleted and its credentials refused at once.

Worker processes (``--workers N``, :mod:`meet443.workers`). The control process's node has the
signaling core and a :class:`~meet443.workers.WorkerPlacement` but no TURN core or SFU: a
group-room request leaves as :class:`ToWorker` for the worker that runs the room, a revocation for
every worker, and what a worker's SFU says comes back through :meth:`NodeCore.receive_from_worker`.
A worker's node has TURN and the SFU but no signaling: the SFU's signaling messages leave as
outputs, and an SFU flow of another worker met on the main port leaves as :class:`Forward`.

Timers. Each core tells its next deadline (``get_timer``) and handles it (``handle_timer``); the
node's deadline is the earliest it has armed for any core. TURN and signaling look at every
allocation and socket to find theirs (1.9 ms for 2,000 sockets), so the node asks them only after
they handled their timer; a message can only add deadlines seconds ahead (a heartbeat, a resume
window, a permission), so after one the node wakes that core within :data:`SWEEP_SECONDS` at most,
as the once-a-second tick did. The SFU answers in O(1) (see :meth:`Conference.get_timer`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

from meet443.exceptions import ParseError
from meet443.proto.addresses import Address, ServerPort, ToClientFrom, Transport
from meet443.proto.demux import KIND_BY_FIRST_BYTE, PacketKind
from meet443.proto.signaling.admission import Refusal, RoomAdmission
from meet443.proto.signaling.room import LeftSfu, RevokeTurn, SignalingServer, ToSfu
from meet443.proto.signaling.room import Output as SignalingOutput
from meet443.proto.signaling.snapshot import RoomSnapshot
from meet443.proto.stun.message import Message
from meet443.proto.turn.allocation import ClientFlow
from meet443.proto.turn.server import Output as TurnOutput
from meet443.proto.turn.server import ToClient, ToPeer, TurnServer
from meet443.sfu.conference import Conference, RoomSignal, Signal
from meet443.sfu.conference import Output as ConferenceOutput
from meet443.workers import MainPortRoutes, WorkerPlacement

logger = logging.getLogger(__name__)

#: How late a TURN or signaling deadline added by a message may be served (see the module docstring).
SWEEP_SECONDS = 1.0

_STUN = PacketKind.STUN
_CHANNEL_DATA = PacketKind.CHANNEL_DATA
_MAIN = ServerPort.MAIN
_UDP = Transport.UDP
_NEVER = math.inf


@dataclass(frozen=True, slots=True)
class ToWorker:
    """Control process: a request for media worker ``worker``'s SFU or TURN core (None: every one)."""

    worker: int | None
    message: ToSfu | LeftSfu | RevokeTurn


@dataclass(frozen=True, slots=True)
class Forward:
    """Worker: a datagram from ``source`` on the main port that is worker ``worker``'s SFU's."""

    worker: int
    source: Address
    data: bytes


#: What leaves the node: datagrams from our UDP ports (:class:`ToClientFrom`; on the SFU's data
#: path plain ``(port, address, data)`` tuples), from a relay socket (:class:`ToPeer`), to a TURN
#: client on any transport (:class:`ToClient`), the signaling core's frames, closes and lookups,
#: and between worker processes :class:`ToWorker` and :class:`Forward` (a worker's node also
#: passes its SFU's :class:`Signal` and :class:`RoomSignal` on).
Output = (
    TurnOutput | ConferenceOutput | SignalingOutput | tuple[ServerPort, Address, bytes] | ToWorker | Forward
)


@dataclass
class NodeCounters:
    """Datagrams the node itself dropped, by reason (the cores count their own)."""

    dropped: dict[str, int]

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class NodeCore:
    """The cores of one node and the routing between them; see the module docstring."""

    def __init__(
        self,
        signaling: SignalingServer | None,
        turn: TurnServer | None = None,
        conference: Conference | None = None,
        *,
        placement: WorkerPlacement | None = None,
        routes: MainPortRoutes | None = None,
    ) -> None:
        """``placement``: this is a control process, whose SFU rooms live on media workers;
        ``routes``: this is a media worker, one of several behind the main port."""
        self._signaling_server = signaling
        self.turn = turn
        self.conference = conference
        self.placement = placement
        self.routes = routes
        self.counters = NodeCounters({})
        #: Drops are counted where the single port's adapter counted them before: as TURN's.
        self._drop = (turn.counters if turn is not None else self.counters).drop
        #: When each core's handle_timer is due (inf: nothing armed).
        self._turn_due = _NEVER
        self._signaling_due = _NEVER
        self._conference_due = _NEVER
        #: The earliest of the three: what the adapter arms. Read it after every call.
        self.deadline = _NEVER

    # -- datagrams ------------------------------------------------------------------------------

    def receive_datagram(self, port: ServerPort, data: bytes, source: Address, now: float) -> list[Output]:
        """A datagram on one of our UDP ports (RFC 7983); anything unwanted is dropped and counted."""
        if not data:
            self._drop("empty")
            return []
        kind = KIND_BY_FIRST_BYTE[data[0]]
        turn, conference = self.turn, self.conference
        if kind is _CHANNEL_DATA and port is _MAIN and turn is not None:
            # Our relay sockets hold no allocation of their own: from them this is dropped too.
            allocation = turn.udp_allocations.get(source)
            if allocation is None:
                turn.counters.drop("channel_data_without_allocation")
                return []
            sent = turn.relay_channel_data(allocation, data, now)
            return [ToPeer(allocation.relay, sent[0], sent[1])] if sent is not None else []
        if kind is not _STUN:
            routes = self.routes
            if routes is not None and port is _MAIN and (owner := routes.route(source)) is not None:
                return [Forward(owner, source, data)]
            if conference is None:
                self._drop(f"udp_{kind.value}" if port is _MAIN else "other_port_not_stun")
                return []
            media = conference.receive_media(data, source, now)
            if media is None:  # DTLS, or anything else the SFU drops and counts
                return self._conference_outputs(conference.receive_datagram(data, source, now), now)
            datagrams, outputs = media
            if outputs:
                datagrams.extend(self._conference_outputs(outputs, now))  # type: ignore[arg-type]
            return datagrams  # type: ignore[return-value]
        return self._receive_stun(port, data, source, now)

    def _receive_stun(self, port: ServerPort, data: bytes, source: Address, now: float) -> list[Output]:
        """RFC 7983 §7 STUN: parsed once, then an ICE check for the SFU or a request for TURN."""
        try:
            message = Message.parse(data)
        except ParseError:
            self._drop("malformed_stun")
            return []
        conference, turn, routes = self.conference, self.turn, self.routes
        if conference is not None and conference.owns_stun(message):
            if routes is not None and port is _MAIN:
                routes.forget(source)
            outputs = conference.receive_check(message, source, now, port)
            return self._conference_outputs(outputs, now)
        if routes is not None and port is _MAIN and (owner := routes.owner_of_check(message)) is not None:
            routes.learn(source, owner)
            return [Forward(owner, source, data)]
        if turn is None:
            self._drop("stun_without_turn")
            return []
        if turn.is_own_relay(source):
            # No TURN-through-TURN chaining: our relays may reach the SFU's connections only.
            self._drop("from_own_relay")
            return []
        self._touch_turn(now)
        if port is _MAIN:
            return list(turn.receive_stun(message, ClientFlow(_UDP, source, 0), now))
        return list(turn.receive_binding_on_other_port(message, source, now))

    def receive_from_peer(self, relay: Address, peer: Address, data: bytes, now: float) -> ToClient | None:
        """RFC 8656 §10.3/§12.7: a peer's datagram on one of our relay sockets."""
        assert self.turn is not None
        return self.turn.receive_from_peer(relay, peer, data, now)

    def receive_stream(self, flow: ClientFlow, message: bytes, now: float) -> list[Output]:
        """One framed STUN message or ChannelData from a TURN client over TCP or TLS (RFC 8656 §3.1)."""
        assert self.turn is not None
        if message[:1] and KIND_BY_FIRST_BYTE[message[0]] is _STUN:
            self._touch_turn(now)
        return list(self.turn.receive(message, flow, now))

    def has_allocation(self, flow: ClientFlow) -> bool:
        """Does this TURN client's TCP or TLS connection hold an allocation?"""
        return self.turn is not None and flow in self.turn.allocations

    def stream_closed(self, flow: ClientFlow, now: float) -> None:
        """RFC 8656 §6.2: a TURN client's TCP or TLS connection ended, and its allocation with it."""
        assert self.turn is not None
        self.turn.connection_closed(flow, now)

    # -- signaling ------------------------------------------------------------------------------

    def connect(self, conn: int, remote_ip: str, now: float) -> list[Output]:
        """A signaling WebSocket was accepted."""
        return self._signaling_outputs(self.signaling.connect(conn, remote_ip, now), now)

    def receive_signaling(
        self, conn: int, data: bytes | str, now: float, *, binary: bool = False
    ) -> list[Output]:
        """One frame of a signaling WebSocket (a binary one is refused by the signaling core)."""
        return self._signaling_outputs(self.signaling.receive(conn, data, now, binary=binary), now)

    def admit(self, conn: int, admission: RoomAdmission | Refusal, now: float) -> list[Output]:
        """The meeting directory's answer to a :class:`~meet443.proto.signaling.room.LookupRoom`."""
        return self._signaling_outputs(self.signaling.admit(conn, admission, now), now)

    def disconnected(self, conn: int, now: float) -> list[Output]:
        """A signaling WebSocket closed."""
        return self._signaling_outputs(self.signaling.disconnected(conn, now), now)

    def end_meeting(self, room: str, now: float) -> list[Output]:
        """The meeting of ``room`` was deleted (REST API): everyone in it is sent away."""
        return self._signaling_outputs(self.signaling.end_meeting(room, now), now)

    @property
    def signaling(self) -> SignalingServer:
        """The signaling core (a media worker's node has none)."""
        assert self._signaling_server is not None, "a media worker's node has no signaling"
        return self._signaling_server

    # -- worker processes -----------------------------------------------------------------------

    def receive_from_worker(self, message: Signal | RoomSignal) -> list[Output]:
        """Control process: what a worker's SFU says goes to the room's participants."""
        signaling = self.signaling
        if isinstance(message, Signal):
            return list(signaling.deliver(message.room, message.participant, message.message))
        return list(signaling.broadcast(message.room, message.message))

    def from_control(self, message: ToSfu | LeftSfu | RevokeTurn, now: float) -> list[Output]:
        """Media worker: a :class:`ToWorker` request of the control process."""
        return self._signaling_outputs([message], now, input_=False)

    def revoke_turn(self, participant: str, until: float, now: float) -> list[Output]:
        """A participant of a room on another node left for good (docs/cluster.md "TURN across
        nodes"): its allocations here go and its credentials are refused until ``until``; a
        control process tells every worker."""
        if self.placement is not None:
            return [ToWorker(None, RevokeTurn(participant, until))]
        if self.turn is not None:
            self.turn.revoke(participant, until)
            self._touch_turn(now)
        return []

    def restore(self, snapshots: list[RoomSnapshot], now: float, *, new_chat_epoch: bool = False) -> None:
        """Rooms saved by an earlier run (docs/signaling.md "Node restarts"), before any connection;
        or by a node that died, as this node takes them over (docs/cluster.md "Failover")."""
        self.signaling.restore(snapshots, now, new_chat_epoch=new_chat_epoch)
        self._signaling_due = _or_never(self.signaling.get_timer())
        self._rearm()

    def restart_sfu(self, room: str, now: float) -> list[Output]:
        """The SFU lost ``room``'s media session (the media worker serving it died): the SFU
        forgets the room, and its participants are told to publish and subscribe again on new
        connections, keeping their ids (docs/signaling.md "SFU restart")."""
        out: list[Output] = []
        if self.conference is not None:
            out += self._conference_outputs(self.conference.forget_room(room, now), now)
        out += self._signaling_outputs(self.signaling.sfu_restarted(room), now)
        return out

    def worker_died(self, worker: int, now: float) -> list[Output]:
        """Control process: media worker ``worker`` died and is being respawned empty."""
        assert self.placement is not None
        out: list[Output] = []
        for room in self.placement.rooms_on(worker):
            logger.info("room %s: worker %d died, restarting its SFU sessions", room, worker)
            out += self.restart_sfu(room, now)
        return out

    # -- timers ---------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should run next, or None."""
        return None if self.deadline == _NEVER else self.deadline

    def handle_timer(self, now: float) -> list[Output]:
        """Runs every core whose deadline has come, then asks each for its next one."""
        out: list[Output] = []
        turn, conference = self.turn, self.conference
        if turn is not None and self._turn_due <= now:
            turn.handle_timer(now)
            self._turn_due = _or_never(turn.get_timer())
        signaling = self._signaling_server
        if signaling is not None and self._signaling_due <= now:
            out += self._signaling_outputs(signaling.handle_timer(now), now, input_=False)
            self._signaling_due = _or_never(signaling.get_timer())
        if conference is not None and self._conference_due <= now:
            out += self._conference_outputs(conference.handle_timer(now), now)
            self._conference_due = _or_never(conference.get_timer())
        self._rearm()
        return out

    def _touch_turn(self, now: float) -> None:
        """A TURN request may add a deadline (≥ 30 s ahead): have it looked at within a sweep."""
        due = now + SWEEP_SECONDS
        if due < self._turn_due:
            self._turn_due = due
            self.deadline = min(self.deadline, due)

    def _rearm(self) -> None:
        self.deadline = min(self._turn_due, self._signaling_due, self._conference_due)

    # -- composition ----------------------------------------------------------------------------

    def _signaling_outputs(
        self, outputs: Iterable[SignalingOutput], now: float, *, input_: bool = True
    ) -> list[Output]:
        """Signaling's outputs: group-room requests go to the SFU, whose answers come back.

        After an input (not a timer) the signaling core is looked at within a sweep.
        """
        out: list[Output] = []
        for output in outputs:
            if isinstance(output, ToSfu | LeftSfu):
                out += self._to_conference(output, now)
            elif isinstance(output, RevokeTurn):
                if self.placement is not None:
                    out.append(ToWorker(None, output))
                elif self.turn is not None:
                    self.turn.revoke(output.participant, output.until)
                    self._touch_turn(now)
                # Other nodes' TURN servers hear of it through the adapter (docs/cluster.md).
                out.append(output)
            else:
                out.append(output)
        if input_ and now + SWEEP_SECONDS < self._signaling_due:
            self._signaling_due = now + SWEEP_SECONDS
            self._rearm()
        return out

    def _to_conference(self, request: ToSfu | LeftSfu, now: float) -> list[Output]:
        placement = self.placement
        if placement is not None:
            if isinstance(request, ToSfu):
                new = placement.worker_of(request.room) is None
                worker = placement.joined(request.room, request.participant)
                if new:
                    logger.info("room %s: SFU on worker %d", request.room, worker)
                return [ToWorker(worker, request)]
            was = placement.left(request.room, request.participant)
            return [] if was is None else [ToWorker(was, request)]
        conference = self.conference
        if conference is None:
            logger.warning("room %s: a group-room request, but this node runs no SFU", request.room)
            return []
        if isinstance(request, ToSfu):
            outputs = conference.request(request.room, request.participant, request.message, now)
        else:
            outputs = conference.leave(request.room, request.participant, now)
        return self._conference_outputs(outputs, now)

    def _conference_outputs(self, outputs: list[ConferenceOutput], now: float) -> list[Output]:
        """The SFU's outputs: datagrams leave; signaling goes to the room's participants."""
        out: list[Output] = []
        for output in outputs:
            if isinstance(output, ToClientFrom):
                out.append(output)
            elif self._signaling_server is None:
                out.append(output)  # a worker: the control process's signaling delivers it
            elif isinstance(output, Signal):
                out += self.signaling.deliver(output.room, output.participant, output.message)
            elif isinstance(output, RoomSignal):
                out += self.signaling.broadcast(output.room, output.message)
        conference = self.conference
        assert conference is not None
        due = _or_never(conference.get_timer())
        if due < self._conference_due:
            self._conference_due = due
            self._rearm()
        return out


def _or_never(deadline: float | None) -> float:
    return _NEVER if deadline is None else deadline
