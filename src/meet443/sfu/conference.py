"""The SFU of every group room behind the one UDP port, sans I/O: datagrams, signaling and ``now``
in; datagrams and signaling messages out.

Each participant has two peer connections with the SFU (docs/signaling.md "Group rooms"): a
*publish* connection it offers and the SFU answers, and a *subscribe* connection the SFU offers. A
connection is one ICE-lite session (RFC 8445 §2.5, all sessions share the port through
:class:`~meet443.proto.ice.IceLiteMux`), one DTLS association where the SFU is the server (RFC 5763
§5) and one SRTP session keyed from it (RFC 5764 §4.2). Packets are told apart by their first byte
(RFC 7983) and routed to a connection by the 5-tuple a nominated check validated. Decrypted media
goes to the room's :class:`~meet443.sfu.router.Router`, whose packets for others are encrypted
with their keys.

OpenSSL keeps its own clock and random source for DTLS: the one documented exception to "time and
randomness come from the caller".
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from meet443.exceptions import ParseError, ProtocolError
from meet443.proto.addresses import Address, ServerPort, ToClientFrom
from meet443.proto.demux import KIND_BY_FIRST_BYTE, PacketKind
from meet443.proto.dtls.certificate import DtlsCertificate
from meet443.proto.dtls.events import HandshakeCompleted, HandshakeFailed
from meet443.proto.dtls.session import DtlsRole, DtlsSrtpSession, DtlsState
from meet443.proto.ice import ConsentExpired, IceLiteMux, IceState, IceStateChanged, PairNominated
from meet443.proto.rtp.srtp import SrtpSession
from meet443.proto.sdp.attributes import Fingerprint, SetupRole
from meet443.proto.sdp.description import SessionDescription
from meet443.proto.sdp.negotiation import LocalTransport, build_answer, remote_transport
from meet443.proto.signaling.messages import (
    ErrorMessage,
    Pause,
    Publish,
    PublishAnswer,
    Republish,
    Resubscribe,
    ServerMessage,
    SfuRequest,
    SfuTrack,
    Speaker,
    SubscribeAnswer,
    SubscribeOffer,
    Tracks,
)
from meet443.proto.stun.message import Message
from meet443.sfu.codecs import VideoCodecPlan
from meet443.sfu.descriptions import (
    PUBLISH_POLICY,
    SUBSCRIBER_PROFILE,
    accepted_codecs,
    published_tracks,
    publisher_video_codecs,
    subscriber_offer,
)
from meet443.sfu.events import DominantSpeaker, RouterEvent, SlotsAssigned, SlotsGrown
from meet443.sfu.router import Router, RouterCounters
from meet443.sfu.tracks import Outgoing, PcRole, Slot

logger = logging.getLogger(__name__)

#: A subscriber's keyframe requests are repeated this long after its connection came up.
KEYFRAME_AGAIN_SECONDS = 1.0
#: Group rooms' timers (NACK answers, keyframe requests, reports) run on this tick; 20 ms is below
#: a frame interval.
TICK_SECONDS = 0.02

_STUN = PacketKind.STUN
_DTLS = PacketKind.DTLS
_RTP = PacketKind.RTP


@dataclass(frozen=True, slots=True)
class Signal:
    """A signaling message for one participant of a room."""

    room: str
    participant: str
    message: ServerMessage


@dataclass(frozen=True, slots=True)
class RoomSignal:
    """A signaling message for everyone in a room."""

    room: str
    message: ServerMessage


#: Datagrams leave from the port of their candidate pair (:class:`ToClientFrom`).
Output = ToClientFrom | Signal | RoomSignal
#: The data path's form of :class:`ToClientFrom`: ``(port, address, data)``, a plain tuple, no
#: object per copy (``bench/sfu_datapath.py``). :meth:`Conference.receive_media` returns these.
Datagram = tuple[ServerPort, Address, bytes]


@dataclass
class ConferenceCounters:
    datagrams_in: int = 0
    connections: int = 0
    dtls_handshakes: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class _PeerConnection:
    """One peer connection of a participant: ICE session, DTLS association, SRTP keys."""

    __slots__ = ("dtls", "ice_id", "member", "port", "remote", "role", "srtp")

    def __init__(self, member: _Member, role: PcRole, ice_id: str) -> None:
        self.member = member
        self.role = role
        self.ice_id = ice_id
        self.dtls: DtlsSrtpSession | None = None
        self.srtp: SrtpSession | None = None
        #: Where to send: the nominated pair's remote address (RFC 8445 §8.1.1), from its local port.
        self.remote: Address | None = None
        self.port = ServerPort.MAIN


@dataclass(eq=False)
class _Member:
    room: str
    id: str
    publish: _PeerConnection | None = None
    subscribe: _PeerConnection | None = None
    #: RFC 3264 §8: the version of the subscribe offer; an offer waits for the previous answer.
    offer_version: int = 0
    offer_in_flight: bool = False
    offer_wanted: bool = False
    publish_version: int = 0
    tracks: int = 0


class Conference:
    """All group rooms of this process; see the module docstring."""

    def __init__(
        self,
        certificate: DtlsCertificate,
        addresses: Iterable[Address],
        token_bytes: Callable[[int], bytes],
        *,
        last_n: int = 9,
        nack: bool = True,
        ufrag_tag: str = "",
    ) -> None:
        """``ufrag_tag`` starts every ICE ufrag (a media worker's tag, :mod:`meet443.workers`)."""
        self.certificate = certificate
        self.addresses = tuple(addresses)
        self._token_bytes = token_bytes
        self.nack = nack
        self.last_n = last_n
        self.mux = IceLiteMux(token_bytes, ufrag_tag=ufrag_tag)
        self.routers: dict[str, Router] = {}
        self.codec_plans: dict[str, VideoCodecPlan] = {}
        self._members: dict[tuple[str, str], _Member] = {}
        self._by_ice: dict[str, _PeerConnection] = {}
        self._connecting: set[_PeerConnection] = set()
        self._keyframes_due: deque[tuple[float, _Member]] = deque()
        self._session_id = int.from_bytes(token_bytes(6), "big")
        self.counters = ConferenceCounters()
        self.router_counters = RouterCounters()
        self._out: list[Output] = []
        self._ticked_at = 0.0

    @property
    def participant_count(self) -> int:
        return len(self._members)

    @property
    def track_count(self) -> int:
        """Tracks published into group rooms now."""
        return sum(m.tracks for m in self._members.values())

    # -- signaling --------------------------------------------------------------------------------

    def request(self, room: str, participant: str, message: SfuRequest | None, now: float) -> list[Output]:
        """A participant joined a group room (``None``) or sent a media request."""
        out = self._out = []
        member = self._members.get((room, participant))
        if member is None:
            if message is not None:
                return out  # left already: a late request of a gone participant
            member = self._members[room, participant] = _Member(room, participant)
            router = self.routers.get(room)
            if router is None:
                router = self.routers[room] = Router(
                    token_bytes=self._token_bytes, last_n=self.last_n, nack=self.nack
                )
                router.counters = self.router_counters  # one set of totals for the metrics
                self.codec_plans[room] = VideoCodecPlan()
            self._handle(room, router.add_participant(participant, SUBSCRIBER_PROFILE, now), now)
            return out
        try:
            if isinstance(message, Publish):
                self._on_publish(member, message, now)
            elif isinstance(message, SubscribeAnswer):
                self._on_subscribe_answer(member, message, now)
            elif isinstance(message, Resubscribe):
                self._on_resubscribe(member, now)
            elif isinstance(message, Pause):
                self._handle(
                    room, self.routers[room].set_paused(participant, message.mid, message.paused, now), now
                )
        except (ParseError, ProtocolError, ValueError) as exc:
            logger.info("room %s: %s's description refused: %s", room, participant, exc)
            kind = type(message).__struct_config__.tag if message is not None else None
            ref = kind if isinstance(kind, str) else None
            self._signal(member, ErrorMessage("bad-description", str(exc)[:200], ref))
        return out

    def leave(self, room: str, participant: str, now: float) -> list[Output]:
        """A participant left its room for good: its connections close, its tracks go."""
        out = self._out = []
        member = self._members.pop((room, participant), None)
        if member is None:
            return out
        for connection in (member.publish, member.subscribe):
            if connection is not None:
                self._close(connection, now)
        self._handle(room, self.routers[room].remove_participant(participant, now), now)
        self._republish(room, self.codec_plans[room].remove(participant))
        if not any(key[0] == room for key in self._members):
            del self.routers[room]
            del self.codec_plans[room]
        return out

    def forget_room(self, room: str, now: float) -> list[Output]:
        """Drop every connection, track and slot of ``room`` (its media session is lost: the
        worker or node serving it restarted). Its participants come back with ``request(room,
        participant, None)`` and publish on new connections (docs/signaling.md "SFU restart")."""
        out = self._out = []
        for key in [key for key in self._members if key[0] == room]:
            member = self._members.pop(key)
            for connection in (member.publish, member.subscribe):
                if connection is not None:
                    self._close(connection, now)
        self._keyframes_due = deque(due for due in self._keyframes_due if due[1].room != room)
        self.routers.pop(room, None)
        self.codec_plans.pop(room, None)
        return out

    def _on_publish(self, member: _Member, message: Publish, now: float) -> None:
        offer = SessionDescription.parse(message.sdp)
        remote = remote_transport(offer)
        connection = member.publish
        if (
            connection is not None
            and connection.dtls is not None
            and (connection.dtls.remote_fingerprints != tuple(remote.fingerprints))
        ):
            # Another certificate: a new peer connection (the client started over after an
            # sfu-restart, and a publish of its old one reached us first). Its DTLS starts afresh.
            self._close(connection, now)
            connection = None
        if connection is None:
            connection = member.publish = self._connection(member, PcRole.PUBLISH, remote.ice_ufrag, now)
        session = self.mux.sessions[connection.ice_id]
        if session.remote_ufrag != remote.ice_ufrag:
            self.mux.restart(connection.ice_id, remote.ice_ufrag)  # RFC 8445 §9: the browser restarted
        if connection.dtls is None:
            connection.dtls = self._dtls(connection, DtlsRole.SERVER, remote.fingerprints)
        member.publish_version += 1
        order = self.codec_plans[member.room].answer_order(member.id, publisher_video_codecs(offer))
        answer = build_answer(
            offer,
            self._local(connection),
            session_id=self._session_id,
            session_version=member.publish_version,
            policy=replace(PUBLISH_POLICY, video_codecs=order) if order else PUBLISH_POLICY,
        )
        tracks = published_tracks(offer, answer, message.sources)
        member.tracks = len(tracks)
        self._signal(member, PublishAnswer(str(answer)))
        self._handle(member.room, self.routers[member.room].publish(member.id, tracks, now), now)

    def _on_subscribe_answer(self, member: _Member, message: SubscribeAnswer, now: float) -> None:
        connection = member.subscribe
        if connection is None or not member.offer_in_flight:
            raise ProtocolError("no subscribe offer is waiting for an answer")
        answer = SessionDescription.parse(message.sdp)
        remote = remote_transport(answer)
        self.mux.set_remote_ufrag(connection.ice_id, remote.ice_ufrag)
        if connection.dtls is None:
            # We offered actpass; RFC 8842 §5.3: the answerer picks, and browsers pick active.
            local_setup = SetupRole.PASSIVE if remote.setup is SetupRole.ACTIVE else SetupRole.ACTIVE
            role = DtlsRole.for_local_setup(local_setup)
            connection.dtls = self._dtls(connection, role, remote.fingerprints)
            if role is DtlsRole.CLIENT:
                connection.dtls.start(now)  # sent once ICE gives us an address
        member.offer_in_flight = False
        kept = accepted_codecs(answer)
        room = member.room
        self._handle(
            room, self.routers[room].set_decodable(member.id, frozenset().union(*kept.values()), now), now
        )
        if "video" in kept:
            self._republish(room, self.codec_plans[room].subscriber_decodes(member.id, kept["video"]))
        if member.offer_wanted:
            self._offer(member, now)

    def _republish(self, room: str, publishers: Iterable[str]) -> None:
        """Ask publishers for a new offer: the SFU's answer would now put another video codec first."""
        for publisher in publishers:
            member = self._members.get((room, publisher))
            if member is not None:
                sending = self.codec_plans[room].sending(publisher)
                logger.info(
                    "room %s: %s is to stop sending %s; asking for a new offer", room, publisher, sending
                )
                self._signal(member, Republish())

    def _on_resubscribe(self, member: _Member, now: float) -> None:
        connection = member.subscribe
        if connection is not None:
            self.mux.restart(connection.ice_id, None)
        member.offer_in_flight = False  # the client dropped the old negotiation
        self._offer(member, now)

    def _offer(self, member: _Member, now: float) -> None:
        """RFC 8829 §5.2: (re-)offer the subscribe connection's sections, one negotiation at a time."""
        if member.offer_in_flight:
            member.offer_wanted = True
            return
        slots = self.routers[member.room].slots(member.id)
        if not slots:
            return
        connection = member.subscribe
        if connection is None:
            connection = member.subscribe = self._connection(member, PcRole.SUBSCRIBE, None, now)
        dtls = connection.dtls
        if dtls is None:
            setup = SetupRole.ACTPASS
        else:
            setup = SetupRole.PASSIVE if dtls.role is DtlsRole.SERVER else SetupRole.ACTIVE
        member.offer_version += 1
        offer = subscriber_offer(
            self._local(connection),
            slots,
            cname=f"sfu-{member.room}",
            session_id=self._session_id,
            session_version=member.offer_version,
            setup=setup,
            nack=self.nack,
        )
        member.offer_in_flight, member.offer_wanted = True, False
        self._signal(member, SubscribeOffer(str(offer), _tracks(slots)))

    # -- datagrams --------------------------------------------------------------------------------

    def owns_stun(self, message: Message) -> bool:
        """Is this STUN message on the shared port an ICE check for a group-room connection?"""
        return self.mux.owns(message)

    def receive_check(
        self, message: Message, source: Address, now: float, local: ServerPort = ServerPort.MAIN
    ) -> list[Output]:
        """RFC 8445 §7.3: a connectivity check that arrived on our port ``local`` (parsed once by
        the node, see :meth:`owns_stun`); RFC 8445 §7.2.2: the answer leaves from that port."""
        out = self._out = []
        reply = self.mux.handle_binding(message, source, now, local)
        if reply is not None:
            out.append(ToClientFrom(local, source, reply))
        self._ice_events(now)
        return out

    def receive_datagram(self, data: bytes, source: Address, now: float) -> list[Output]:
        """DTLS or SRTP/SRTCP from a validated 5-tuple (RFC 7983); anything else is dropped."""
        media = self.receive_media(data, source, now)
        if media is not None:
            datagrams, out = media
            out.extend(ToClientFrom(port, address, packet) for port, address, packet in datagrams)
            return out
        out = self._out = []
        self.counters.datagrams_in += 1
        kind = KIND_BY_FIRST_BYTE[data[0]] if data else PacketKind.UNKNOWN
        session = self.mux.route(source)
        if session is None:
            self.counters.drop("unknown_source")
            return out
        connection = self._by_ice[session.id]
        if kind is _DTLS:
            dtls = connection.dtls
            if dtls is None:
                self.counters.drop("dtls_before_description")
                return out
            if connection.remote is None:
                # DTLS before nomination: answer on the validated pair it came in on.
                connection.remote, connection.port = source, session.pairs[source].local
            dtls.receive_datagram(data, now)
            self._dtls_progress(connection, now)
        else:
            self.counters.drop(f"udp_{kind.value}")
        return out

    def receive_media(
        self, data: bytes, source: Address, now: float
    ) -> tuple[list[Datagram], list[Output]] | None:
        """RFC 7983 §7 SRTP/SRTCP for the adapter's data path: the copies for subscribers as
        ``(port, address, protected packet)`` triples, and what else the packet caused (RTCP to its
        publisher, signaling) as outputs. Any other datagram gives None: use
        :meth:`receive_datagram`, which returns the same packets as typed outputs.
        """
        if not data or KIND_BY_FIRST_BYTE[data[0]] is not _RTP:
            return None
        self._out = []
        self.counters.datagrams_in += 1
        session = self.mux.route(source)
        if session is None:
            self.counters.drop("unknown_source")
            return [], self._out
        return self._receive_media(self._by_ice[session.id], data, now), self._out

    def _receive_media(self, connection: _PeerConnection, data: bytes, now: float) -> list[Datagram]:
        """RFC 3711 §3.3/§3.4: unprotect, route, protect each copy with its subscriber's keys."""
        srtp = connection.srtp
        if srtp is None:
            self.counters.drop("media_before_keys")
            return []
        member = connection.member
        room = member.room
        router = self.routers[room]
        # RFC 5761 §4: RTCP packet types 192-223 share the second byte's range with no RTP type
        # a browser uses (payload types 64-95 with the marker bit).
        rtcp = len(data) > 1 and 192 <= data[1] <= 223
        try:
            plain = srtp.unprotect_rtcp(data) if rtcp else srtp.unprotect(data)
        except ParseError:
            self.counters.drop("srtp_auth")
            return []
        if rtcp:
            self._handle(room, router.receive_rtcp(member.id, connection.role, plain, now), now)
            return []
        copies: list[tuple[str, bytes]] = []
        self._handle(room, router.forward_rtp(member.id, connection.role, plain, now, copies), now)
        datagrams: list[Datagram] = []
        members = self._members
        for name, packet in copies:
            # As in _send: a subscriber not connected (yet, or any more) is counted.
            subscribe = members[room, name].subscribe
            if subscribe is None or subscribe.srtp is None or subscribe.remote is None:
                self.counters.drop("not_connected")
                continue
            datagrams.append((subscribe.port, subscribe.remote, subscribe.srtp.protect(packet)))
        return datagrams

    # -- timers -----------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` should run: every :data:`TICK_SECONDS` while any group room
        exists, else at the earliest ICE, DTLS or keyframe deadline (None: nothing to do).

        A room's router has deadlines everywhere (NACKs per source, keyframe requests, layer
        choice per slot, probes, reports), due every few milliseconds while media flows: a tick is
        cheaper than finding the earliest after every packet. Measured (``bench/sfu_datapath.py``
        rooms, timeit): the router's exact deadline takes 36 µs in a 1 → 10 room and 654 µs in a
        1 → 40 room, against 0.05 µs for this answer, and a packet's whole forwarding ~60-250 µs.
        """
        if self.routers:
            return self._ticked_at + TICK_SECONDS
        deadlines = [c.dtls.get_timer() for c in self._connecting if c.dtls is not None]
        deadlines.append(self.mux.get_timer())
        if self._keyframes_due:
            deadlines.append(self._keyframes_due[0][0])
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timer(self, now: float) -> list[Output]:
        out = self._out = []
        self._ticked_at = now
        self.mux.handle_timer(now)
        self._ice_events(now)
        for connection in list(self._connecting):
            dtls = connection.dtls
            assert dtls is not None  # only _dtls() adds to _connecting, with the session it makes
            dtls.handle_timer(now)
            self._dtls_progress(connection, now)
        while self._keyframes_due and self._keyframes_due[0][0] <= now:
            self._start_subscriber(self._keyframes_due.popleft()[1], now)
        for room, router in list(self.routers.items()):
            self._handle(room, router.handle_timer(now), now)
        return out

    # -- internals --------------------------------------------------------------------------------

    def _connection(
        self, member: _Member, role: PcRole, remote_ufrag: str | None, now: float
    ) -> _PeerConnection:
        ice_id = f"{member.room}/{member.id}/{role.value}"
        self.mux.create_session(ice_id, now, remote_ufrag=remote_ufrag)
        connection = _PeerConnection(member, role, ice_id)
        self._by_ice[ice_id] = connection
        self.counters.connections += 1
        return connection

    def _local(self, connection: _PeerConnection) -> LocalTransport:
        credentials = self.mux.sessions[connection.ice_id].local
        return LocalTransport(
            credentials.ufrag, credentials.pwd, self.certificate.fingerprint, self.addresses
        )

    def _dtls(
        self, connection: _PeerConnection, role: DtlsRole, fingerprints: Sequence[Fingerprint]
    ) -> DtlsSrtpSession:
        dtls = DtlsSrtpSession(self.certificate, role, fingerprints, label=connection.ice_id)
        self._connecting.add(connection)
        return dtls

    def _close(self, connection: _PeerConnection, now: float) -> None:
        if connection.dtls is not None:
            connection.dtls.close(now)
            self._flush_dtls(connection, connection.dtls)
        self._connecting.discard(connection)
        self.mux.close_session(connection.ice_id)
        self._by_ice.pop(connection.ice_id, None)

    def _start_subscriber(self, member: _Member, now: float) -> None:
        router = self.routers.get(member.room)
        if router is not None and self._members.get((member.room, member.id)) is member:
            self._handle(member.room, router.subscriber_connected(member.id, now), now)

    def _dtls_progress(self, connection: _PeerConnection, now: float) -> None:
        dtls = connection.dtls
        assert dtls is not None
        self._flush_dtls(connection, dtls)
        while (event := dtls.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                profile = event.profile
                connection.srtp = SrtpSession.from_keying_material(
                    event.keys, client=dtls.role is DtlsRole.CLIENT
                )
                self.counters.dtls_handshakes += 1
                logger.info("%s: DTLS-SRTP up (%s, %s)", connection.ice_id, event.cipher, profile.name)
                if connection.role is PcRole.SUBSCRIBE:
                    self._start_subscriber(connection.member, now)
                    # Once more a moment later: some receivers (aiortc) set up their decoders only
                    # after the handshake, and drop what arrives before.
                    self._keyframes_due.append((now + KEYFRAME_AGAIN_SECONDS, connection.member))
            elif isinstance(event, HandshakeFailed):
                logger.info("%s: DTLS failed: %s %s", connection.ice_id, event.reason.value, event.detail)
        if dtls.state is not DtlsState.CONNECTING and dtls.state is not DtlsState.NEW:
            self._connecting.discard(connection)

    def _flush_dtls(self, connection: _PeerConnection, dtls: DtlsSrtpSession) -> None:
        datagrams = dtls.datagrams_to_send()
        if datagrams and connection.remote is not None:
            for datagram in datagrams:
                self._out.append(ToClientFrom(connection.port, connection.remote, datagram))

    def _ice_events(self, now: float) -> None:
        while (event := self.mux.next_event()) is not None:
            connection = self._by_ice.get(event.session_id)
            if connection is None:
                continue
            if isinstance(event, PairNominated):
                session = self.mux.sessions[event.session_id]
                connection.remote, connection.port = event.remote, session.pairs[event.remote].local
                if connection.dtls is not None:  # a DTLS client's first flight waited for this
                    self._flush_dtls(connection, connection.dtls)
            elif isinstance(event, ConsentExpired) and event.selected:
                # RFC 7675 §5.1: nothing more goes to that address until a check nominates one.
                logger.info("%s: consent expired for %s", connection.ice_id, event.remote)
                connection.remote = None
            elif isinstance(event, IceStateChanged) and event.state is IceState.FAILED:
                logger.info("%s: ICE failed", connection.ice_id)

    def _handle(self, room: str, results: Iterable[Outgoing | RouterEvent], now: float) -> None:
        # The router names only its participants, and a member leaves both at once (leave());
        # slots exist only after a SlotsGrown, whose offer made the subscribe connection.
        members = self._members
        for result in results:
            if isinstance(result, Outgoing):
                self._send(members[room, result.participant], result)
            elif isinstance(result, SlotsGrown):
                self._offer(members[room, result.participant], now)
            elif isinstance(result, SlotsAssigned):
                self._signal(members[room, result.participant], Tracks(_tracks(result.slots)))
            elif isinstance(result, DominantSpeaker):
                self._out.append(RoomSignal(room, Speaker(result.participant)))

    def _send(self, member: _Member, outgoing: Outgoing) -> None:
        connection = member.publish if outgoing.role is PcRole.PUBLISH else member.subscribe
        if connection is None or connection.srtp is None or connection.remote is None:
            self.counters.drop("not_connected")
            return
        srtp = connection.srtp
        data = srtp.protect_rtcp(outgoing.data) if outgoing.rtcp else srtp.protect(outgoing.data)
        self._out.append(ToClientFrom(connection.port, connection.remote, data))

    def _signal(self, member: _Member, message: ServerMessage) -> None:
        self._out.append(Signal(member.room, member.id, message))


def _tracks(slots: Iterable[Slot]) -> list[SfuTrack]:
    return [
        SfuTrack(
            slot.mid,
            "audio" if slot.kind == "audio" else "video",
            slot.participant,
            slot.source,  # type: ignore[arg-type]
        )
        for slot in slots
    ]
