"""asyncio adapter for the SFU: moves datagrams between the main UDP port and :class:`Conference`,
signaling requests from the signaling core to it and its messages back, and ticks its timers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable

from meet443.exceptions import ParseError
from meet443.proto.addresses import Address
from meet443.proto.dtls.certificate import DtlsCertificate
from meet443.proto.signaling.messages import ServerMessage
from meet443.proto.signaling.room import LeftSfu, ToSfu
from meet443.proto.stun.message import Message
from meet443.sfu.conference import Conference, Output, RoomSignal, SendDatagram, Signal

logger = logging.getLogger(__name__)

#: NACK answers, keyframe requests and reports run on this tick; 20 ms is below a frame interval.
TICK_SECONDS = 0.02


class SfuService:
    """One process's SFU on the shared UDP port (``MainUdpProtocol`` hands it its datagrams)."""

    def __init__(
        self,
        addresses: tuple[Address, ...],
        *,
        deliver: Callable[[str, str, ServerMessage], None],
        broadcast: Callable[[str, ServerMessage], None],
        last_n: int = 9,
        nack: bool = True,
    ) -> None:
        certificate = DtlsCertificate.generate(time.time(), os.urandom)
        self.conference = Conference(certificate, addresses, os.urandom, last_n=last_n, nack=nack)
        self.udp_transport: asyncio.DatagramTransport | None = None
        #: The second UDP port, where browsers reach the SFU when the main port is below 1024.
        self.other_transport: asyncio.DatagramTransport | None = None
        #: Remote addresses whose checks came to the second port: answers leave from it too.
        self._via_other: set[Address] = set()
        self._deliver = deliver
        self._broadcast = broadcast
        self._timer: asyncio.Task[None] | None = None

    # -- from the signaling core ------------------------------------------------------------------

    def signaling_output(self, output: ToSfu | LeftSfu) -> None:
        now = time.time()
        if isinstance(output, ToSfu):
            self.apply(self.conference.request(output.room, output.participant, output.message, now))
        else:
            self.apply(self.conference.leave(output.room, output.participant, now))

    # -- from the UDP port ------------------------------------------------------------------------

    def check(self, data: bytes, source: Address, *, other_port: bool = False) -> bool:
        """A STUN datagram: answer it if it is an ICE check for us; False leaves it to TURN."""
        try:
            message = Message.parse(data)
        except ParseError:
            return False
        if not self.conference.owns_stun(message):
            return False
        if other_port:
            self._via_other.add(source)
        elif source in self._via_other:
            self._via_other.discard(source)
        self.apply(self.conference.receive_check(message, source, time.time()))
        return True

    def datagram(self, data: bytes, source: Address) -> None:
        now = time.time()
        media = self.conference.receive_media(data, source, now)
        if media is None:
            self.apply(self.conference.receive_datagram(data, source, now))
            return
        datagrams, outputs = media
        if outputs:
            self.apply(outputs)
        main, other, via_other = self.udp_transport, self.other_transport, self._via_other
        for address, packet in datagrams:
            # RFC 8445 §7.2.2: answer from the address the check was sent to.
            transport = other if address in via_other else main
            if transport is not None:
                transport.sendto(packet, address)

    def apply(self, outputs: list[Output]) -> None:
        main, other, via_other = self.udp_transport, self.other_transport, self._via_other
        for output in outputs:
            if isinstance(output, SendDatagram):
                # RFC 8445 §7.2.2: answer from the address the check was sent to.
                transport = other if output.address in via_other else main
                if transport is not None:
                    transport.sendto(output.data, output.address)
            elif isinstance(output, Signal):
                self._deliver(output.room, output.participant, output.message)
            elif isinstance(output, RoomSignal):
                self._broadcast(output.room, output.message)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            if not (self.conference.routers or self.conference.mux.sessions):
                continue
            try:
                self.apply(self.conference.handle_timer(time.time()))
                if len(self._via_other) > len(self.conference.mux.sessions) * 4:
                    # Forget the addresses of pairs that went away (each session has a few).
                    self._via_other &= self.conference.mux.routed_addresses()
            except Exception:
                # A bug in one room's timers must not stop every room's: log it and go on.
                logger.exception("SFU timer failed")

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
