"""A tiny asyncio stand-in for the server's media port, for interop tests only.

One UDP socket on 127.0.0.1 carries every session, as the real port does: datagrams go through the
:class:`IceLiteMux`; STUN is answered, DTLS is fed to the session's :class:`DtlsSrtpSession`, SRTP
is collected. The adapter is the aioquic shape: bytes and ``loop.time()`` in, bytes out, and one
timer task calling ``handle_timer``.
"""

from __future__ import annotations

import asyncio
import os
from collections import defaultdict
from dataclasses import dataclass, field

from meet443.proto.addresses import Address
from meet443.proto.demux import PacketKind
from meet443.proto.dtls.certificate import DtlsCertificate
from meet443.proto.dtls.events import DtlsEvent, HandshakeCompleted, HandshakeFailed
from meet443.proto.dtls.session import DtlsSrtpSession
from meet443.proto.ice.events import IceEvent, PairNominated
from meet443.proto.ice.lite import IceLiteMux, Reply, Routed


@dataclass
class EdgeSession:
    dtls: DtlsSrtpSession | None
    nominated: asyncio.Event = field(default_factory=asyncio.Event)
    handshake: asyncio.Future[DtlsEvent] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    media: list[bytes] = field(default_factory=list)
    media_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    dtls_from: list[Address] = field(default_factory=list)


class UdpEdge(asyncio.DatagramProtocol):
    def __init__(self, certificate: DtlsCertificate | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.mux = IceLiteMux(os.urandom)
        self.certificate = certificate
        self.sessions: dict[str, EdgeSession] = {}
        self.ice_events: list[IceEvent] = []
        self.dtls_events: dict[str, list[DtlsEvent]] = defaultdict(list)
        self.transport: asyncio.DatagramTransport | None = None
        self.address: Address = ("127.0.0.1", 0)
        self._timer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, certificate: DtlsCertificate | None = None) -> UdpEdge:
        loop = asyncio.get_running_loop()
        _, edge = await loop.create_datagram_endpoint(lambda: cls(certificate), local_addr=("127.0.0.1", 0))
        return edge

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's transport
        self.address = transport.get_extra_info("sockname")[:2]
        self._timer = self.loop.create_task(self._tick())

    def add_session(
        self, session_id: str, dtls: DtlsSrtpSession | None, remote_ufrag: str | None
    ) -> tuple[str, str]:
        """A mux session (and its DTLS session, if already known); returns the local ufrag and pwd."""
        session = self.mux.create_session(session_id, self.loop.time(), remote_ufrag=remote_ufrag)
        self.sessions[session_id] = EdgeSession(dtls)
        return session.local.ufrag, session.local.pwd

    def attach_dtls(self, session_id: str, dtls: DtlsSrtpSession) -> None:
        """For an SFU offer: DTLS can start once the browser's answer named its fingerprint."""
        self.sessions[session_id].dtls = dtls

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        now = self.loop.time()
        source = (addr[0], addr[1])
        match self.mux.receive_datagram(data, source, now):
            case Reply(answer):
                self.transport.sendto(answer, source)
            case Routed(session, PacketKind.DTLS):
                edge = self.sessions[session.id]
                edge.dtls_from.append(source)
                if edge.dtls is not None:
                    edge.dtls.receive_datagram(data, now)
                    self._flush_dtls(session.id, source)
            case Routed(session, _):  # SRTP and SRTCP
                edge = self.sessions[session.id]
                edge.media.append(data)
                edge.media_arrived.set()
        self._process_events()

    def send_to_session(self, session_id: str, data: bytes) -> bool:
        assert self.transport is not None
        session = self.mux.sessions[session_id]
        if session.selected is None:
            return False
        self.transport.sendto(data, session.selected)
        return True

    def _flush_dtls(self, session_id: str, source: Address | None) -> None:
        assert self.transport is not None
        edge = self.sessions[session_id]
        assert edge.dtls is not None
        session = self.mux.sessions.get(session_id)
        destination = None
        if session is not None:
            destination = session.reply_address(source) if source else session.selected
        for datagram in edge.dtls.datagrams_to_send():
            if destination is not None:
                self.transport.sendto(datagram, destination)
        while (event := edge.dtls.next_event()) is not None:
            self.dtls_events[session_id].append(event)
            if isinstance(event, HandshakeCompleted | HandshakeFailed) and not edge.handshake.done():
                edge.handshake.set_result(event)

    def _process_events(self) -> None:
        while (event := self.mux.next_event()) is not None:
            self.ice_events.append(event)
            if isinstance(event, PairNominated):
                self.sessions[event.session_id].nominated.set()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = self.loop.time()
            self.mux.handle_timer(now)
            for session_id, edge in self.sessions.items():
                if edge.dtls is not None:
                    edge.dtls.handle_timer(now)
                    self._flush_dtls(session_id, None)
            self._process_events()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()
