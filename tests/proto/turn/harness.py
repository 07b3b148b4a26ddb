"""An in-memory TURN client and a fake relay port pool for driving :class:`TurnServer` without I/O."""

from __future__ import annotations

import random
from collections.abc import Sequence

from meet443.proto.addresses import Address, Transport
from meet443.proto.stun.attributes import (
    Attribute,
    ErrorCode,
    MessageIntegrity,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
)
from meet443.proto.stun.keys import long_term_key
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.proto.turn.allocation import ClientFlow
from meet443.proto.turn.credentials import CredentialStore
from meet443.proto.turn.peer_policy import PeerPolicy
from meet443.proto.turn.server import ToClient, TurnServer, TurnSettings

REALM = "meet443.test"
SERVER_IP = "198.51.100.1"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeRelayPorts:
    """Hands out ports from a small range, like the real pool, and records what is open."""

    def __init__(self, ip: str = SERVER_IP, low: int = 50000, high: int = 50009) -> None:
        self.ip = ip
        self.low, self.high = low, high
        self.open_ports: set[int] = set()
        self.closed: list[Address] = []

    def open(self, family: int, *, even: bool = False, port: int | None = None) -> Address | None:
        candidates = [port] if port is not None else range(self.low, self.high + 1)
        for candidate in candidates:
            if candidate in self.open_ports or not self.low <= candidate <= self.high:
                continue
            if even and candidate % 2:
                continue
            self.open_ports.add(candidate)
            return (self.ip if family == 4 else "2001:db8::1", candidate)
        return None

    def close(self, relay: Address) -> None:
        self.open_ports.discard(relay[1])
        self.closed.append(relay)


def make_server(
    clock: FakeClock,
    *,
    users: dict[str, str] | None = None,
    secret: str | None = "s3cret",
    allow: Sequence[str] = (),
    settings: TurnSettings | None = None,
    ports: FakeRelayPorts | None = None,
) -> tuple[TurnServer, FakeRelayPorts]:
    ports = ports or FakeRelayPorts()
    rng = random.Random(7)
    server = TurnServer(
        settings or TurnSettings(realm=REALM),
        CredentialStore(secret, users if users is not None else {"alice": "wonderland", "bob": "builder"}),
        PeerPolicy(allow, server_addresses=[SERVER_IP], main_port=3478, relay_ports=(ports.low, ports.high)),
        ports,
        rng.randbytes,
    )
    return server, ports


class TurnClient:
    """Speaks to a TurnServer the way a browser would: challenge, then signed requests."""

    _clients = 0

    def __init__(
        self,
        server: TurnServer,
        clock: FakeClock,
        username: str = "alice",
        password: str = "wonderland",
        address: Address = ("203.0.113.10", 40000),
        transport: Transport = Transport.UDP,
        connection: int = 0,
    ) -> None:
        self.server = server
        self.clock = clock
        self.username = username
        self.password = password
        self.flow = ClientFlow(transport, address, connection)
        self.nonce: bytes | None = None
        self.realm: str | None = None
        # Transaction ids are unique across clients, as real random 96-bit ids are.
        TurnClient._clients += 1
        self._tid = TurnClient._clients << 32

    @property
    def key(self) -> bytes:
        return long_term_key(self.username, self.realm or REALM, self.password)

    def transaction_id(self) -> bytes:
        self._tid += 1
        return self._tid.to_bytes(12, "big")

    def send_raw(self, data: bytes) -> list[bytes]:
        outputs = self.server.receive(data, self.flow, self.clock.now)
        return [o.data for o in outputs if isinstance(o, ToClient)]

    def exchange(self, message: Message, *, sign: bool = True, sha256: bool = False) -> Message:
        data = message.encode(self.key if sign else None, sha256=sha256)
        replies = self.send_raw(data)
        assert len(replies) == 1, replies
        reply = Message.parse(replies[0])
        assert reply.transaction_id == message.transaction_id
        return reply

    def request(
        self,
        method: Method,
        attributes: Sequence[Attribute] = (),
        *,
        sha256: bool = False,
        retry: bool = True,
    ) -> Message:
        """A signed request; on 401/438 take the new nonce and try once more, as clients do."""
        if self.nonce is None:
            probe = self.exchange(
                Message(method, StunClass.REQUEST, self.transaction_id(), list(attributes)), sign=False
            )
            self._learn(probe)
        message = Message(
            method,
            StunClass.REQUEST,
            self.transaction_id(),
            [*attributes, Username(self.username), Realm(self.realm or REALM), Nonce(self.nonce or b"")],
        )
        reply = self.exchange(message, sha256=sha256)
        error = reply.get(ErrorCode)
        if retry and error is not None and error.code in (401, 438) and reply.get(Nonce) is not None:
            self._learn(reply)
            return self.request(method, attributes, sha256=sha256, retry=False)
        return reply

    def _learn(self, reply: Message) -> None:
        nonce, realm = reply.get(Nonce), reply.get(Realm)
        assert nonce is not None and realm is not None, reply
        self.nonce, self.realm = nonce.value, realm.value

    def allocate(self, *extra: Attribute) -> Message:
        return self.request(Method.ALLOCATE, [RequestedTransport(17), *extra])


def error_code(message: Message) -> int | None:
    error = message.get(ErrorCode)
    return error.code if error else None


def is_signed_with(message: Message, key: bytes) -> bool:
    return message.get(MessageIntegrity) is not None and message.check_integrity(key)
