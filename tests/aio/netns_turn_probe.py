"""Run inside a test namespace: drive meet443's TURN with the test client and print JSON results.

Usage: python netns_turn_probe.py SERVER_HOST PORT USER PASSWORD SCENARIO
"""

from __future__ import annotations

import json
import socket
import sys

from meet443.proto.stun.attributes import (
    ErrorCode,
    RequestedAddressFamily,
    RequestedTransport,
    XorPeerAddress,
    XorRelayedAddress,
)
from meet443.proto.stun.message import Method
from tests.aio.turn_client import SocketTurnClient


def code(reply: object) -> int:
    error = reply.get(ErrorCode)  # type: ignore[attr-defined]
    return 0 if error is None else int(error.code)


def forbidden_peers(client: SocketTurnClient) -> dict[str, int]:
    client.allocate()
    peers = ["169.254.169.254", "10.0.0.1", "192.168.1.1", "172.16.0.1", "100.64.0.1", "127.0.0.1", "0.0.0.0"]
    return {p: code(client.request(Method.CREATE_PERMISSION, [XorPeerAddress((p, 80))])) for p in peers}


def ipv6_relay(client: SocketTurnClient, peer_host: str) -> dict[str, object]:
    reply = client.request(Method.ALLOCATE, [RequestedTransport(17), RequestedAddressFamily(2)])
    relay = reply.get(XorRelayedAddress)
    echo = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    echo.bind((peer_host, 0))
    echo.settimeout(3)
    peer = (peer_host, echo.getsockname()[1])
    denied = code(client.request(Method.CREATE_PERMISSION, [XorPeerAddress(("::ffff:169.254.169.254", 80))]))
    bound = code(client.bind(0x4001, peer))
    client.send_channel(0x4001, b"over ipv6")
    data, source = echo.recvfrom(100)
    echo.sendto(b"and back", source)
    back = client.receive_channel()
    return {
        "relay": list(relay.address) if relay else None,
        "mapped_denied": denied,
        "bound": bound,
        "peer_got": data.decode(),
        "peer_saw_source": source[0],
        "client_got": back.data.decode(),
    }


def main() -> None:
    host, port, user, password, scenario = sys.argv[1:6]
    client = SocketTurnClient((host, int(port)), user, password, "udp")
    try:
        result = forbidden_peers(client) if scenario == "forbidden" else ipv6_relay(client, sys.argv[6])
    finally:
        client.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
