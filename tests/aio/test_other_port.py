"""The second UDP port of the TURN adapter (RFC 5780 "change port"), on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from meet443.aio.node import NodeService
from meet443.aio.turn import RelayPool, bind_other_port
from meet443.node import NodeCore
from meet443.proto.addresses import ServerPort
from meet443.proto.signaling.admission import Refusal
from meet443.proto.signaling.room import SignalingServer
from meet443.proto.stun.attributes import ChangeRequest, XorMappedAddress
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.proto.turn.credentials import CredentialStore
from meet443.proto.turn.peer_policy import PeerPolicy
from meet443.proto.turn.server import TurnServer, TurnSettings

HOST = "127.0.0.1"


def service() -> NodeService:
    relays = RelayPool(HOST, HOST, (41000, 41999))
    settings = TurnSettings(realm="r", change_port=True, server_addresses=frozenset({HOST}))
    turn = TurnServer(settings, CredentialStore("s", {}), PeerPolicy(), relays, os.urandom)
    signaling = SignalingServer(ice_servers=lambda participant, now, rtts: ([], 0), token=lambda n: "t")
    return NodeService(NodeCore(signaling, turn), relays, directory=no_meetings, public_url=f"https://{HOST}")


async def no_meetings(room: str, room_key: str | None, now: float) -> Refusal:
    return Refusal.ROOM_NOT_FOUND


def binding(*attributes: ChangeRequest) -> tuple[bytes, bytes]:
    transaction_id = os.urandom(12)
    return transaction_id, bytes(Message(Method.BINDING, StunClass.REQUEST, transaction_id, list(attributes)))


def test_a_taken_port_falls_back_unless_fixed() -> None:
    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind((HOST, 0))
            port = taken.getsockname()[1]
            with bind_other_port(HOST, port, (41000, 41999)) as flexible:
                chosen = flexible.getsockname()[1]
            assert chosen != port and not 41000 <= chosen <= 41999 and chosen >= 1024
            with pytest.raises(OSError):
                bind_other_port(HOST, port, (41000, 41999), fixed=True)

    asyncio.run(scenario())


def test_answers_on_both_ports() -> None:
    """A Binding to the other port is answered there; CHANGE-REQUEST to the main port is answered from
    the other port, to a socket that never sent there."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        turn = service()
        main = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        main.bind((HOST, 0))
        main.setblocking(False)
        await turn.listen_udp(ServerPort.MAIN, main)
        main_port = main.getsockname()[1]
        other_sock = bind_other_port(HOST, 0, (41000, 41999))
        other = other_sock.getsockname()[1]
        await turn.listen_udp(ServerPort.OTHER, other_sock)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind((HOST, 0))
        client.setblocking(False)
        try:
            for destination, attributes, source_port in (
                (other, (), other),
                (main_port, (ChangeRequest(change_port=True),), other),
                (other, (ChangeRequest(change_port=True),), main_port),
            ):
                transaction_id, data = binding(*attributes)
                client.sendto(data, (HOST, destination))
                answer, source = await asyncio.wait_for(loop.sock_recvfrom(client, 2048), 2)
                message = Message.parse(answer)
                assert message.transaction_id == transaction_id
                assert message.get(XorMappedAddress) == XorMappedAddress(client.getsockname())
                assert source == (HOST, source_port), (destination, attributes)
        finally:
            client.close()
            await turn.close()
            await asyncio.sleep(0)  # let the transports finish closing inside the loop

    asyncio.run(scenario())
