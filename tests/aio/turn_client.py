"""A minimal blocking TURN client over real sockets, built on meet443's own codec (test use only).

The independent clients (coturn's turnutils, aioice) live in tests/e2e; this one exists to drive
precise scenarios (garbage between requests, exact channel numbers) against a live server.
"""

from __future__ import annotations

import itertools
import os
import socket
import ssl
import struct

from meet443.proto.addresses import Address
from meet443.proto.stun.attributes import (
    Attribute,
    ChannelNumber,
    ErrorCode,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
)
from meet443.proto.stun.keys import long_term_key
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.proto.turn.channeldata import ChannelData, StreamFramer


class SocketTurnClient:
    def __init__(
        self,
        server: Address,
        username: str,
        password: str,
        transport: str = "udp",
        tls_context: ssl.SSLContext | None = None,
        timeout: float = 3.0,
        source: str | None = None,
    ) -> None:
        """``source``: the local address of a TCP or TLS connection (loopback has 127/8)."""
        self.username, self.password = username, password
        self.transport = transport
        self.realm = ""
        self.nonce = b""
        self._ids = itertools.count(1)
        self._framer = StreamFramer()
        self._pending: list[bytes] = []
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.connect(server)
        else:
            raw = socket.create_connection(
                server, timeout=timeout, source_address=None if source is None else (source, 0)
            )
            if transport == "tls":
                context = tls_context or ssl.create_default_context()
                raw = context.wrap_socket(raw, server_hostname=server[0])
            self.sock = raw
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.send(data)
        else:
            self.sock.sendall(data + b"\x00" * (-len(data) % 4) if data[0] >= 0x40 else data)

    def receive(self) -> bytes:
        if self.transport == "udp":
            return self.sock.recv(65535)
        while not self._pending:
            chunk = self.sock.recv(65535)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self._pending += self._framer.feed(chunk)
        return self._pending.pop(0)

    def request(self, method: Method, attributes: list[Attribute]) -> Message:
        """Sign with the current nonce; on 401/438 learn the new nonce and try once more."""
        for _ in range(2):
            transaction_id = os.urandom(12)
            signed: list[Attribute] = list(attributes)
            key = None
            if self.nonce:
                signed += [Username(self.username), Realm(self.realm), Nonce(self.nonce)]
                key = long_term_key(self.username, self.realm, self.password)
            self.send(Message(method, StunClass.REQUEST, transaction_id, signed).encode(key))
            while True:
                reply = Message.parse(self.receive())
                if reply.transaction_id == transaction_id:
                    break
            error = reply.get(ErrorCode)
            nonce, realm = reply.get(Nonce), reply.get(Realm)
            if error is not None and error.code in (401, 438) and nonce is not None and realm is not None:
                self.nonce, self.realm = nonce.value, realm.value
                continue
            return reply
        return reply

    def allocate(self) -> Address:
        reply = self.request(Method.ALLOCATE, [RequestedTransport(17)])
        relayed = reply.get(XorRelayedAddress)
        assert relayed is not None, reply
        return relayed.address

    def bind(self, channel: int, peer: Address) -> Message:
        return self.request(Method.CHANNEL_BIND, [ChannelNumber(channel), XorPeerAddress(peer)])

    def send_channel(self, channel: int, payload: bytes) -> None:
        self.send(bytes(ChannelData(channel, payload)))

    def receive_channel(self) -> ChannelData:
        return ChannelData.parse(self.receive())


def stun_binding_request() -> bytes:
    return struct.pack("!HHI", 1, 0, 0x2112A442) + os.urandom(12)
