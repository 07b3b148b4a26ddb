"""A TURN client as a sans-I/O value (RFC 8656 §7-§12 client side, RFC 8489 §9.2 long-term credentials).

Used by ``meet443 check``: it builds requests and reads answers; sending, retransmitting and waiting
belong to the asyncio layer (:mod:`meet443.netcheck.probes`). Randomness (transaction ids) comes in
through ``random_bytes``.

::

    session = TurnClientSession(username, password, os.urandom)
    tid, data = session.request(Method.ALLOCATE, [RequestedTransport(17)])
    ... send data, receive an answer with transaction id tid ...
    match session.receive(answer_bytes):
        case Answer(message) if session.learn_challenge(message): ... build the request again
        case Answer(message): ... done
        case ChannelMessage(number, payload): ... relayed data
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meet443.exceptions import ParseError
from meet443.proto.addresses import Address
from meet443.proto.stun.attributes import (
    Attribute,
    ChannelNumber,
    Data,
    ErrorCode,
    Lifetime,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from meet443.proto.stun.keys import long_term_key
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.proto.turn.channeldata import ChannelData

__all__ = [
    "Answer",
    "ChannelMessage",
    "DataMessage",
    "Incoming",
    "TurnClientSession",
    "binding_request",
    "describe_error",
    "mapped_address",
    "relayed_address",
]

UDP_PROTOCOL = 17


@dataclass(frozen=True, slots=True)
class Answer:
    """A STUN response (success or error) to one of our requests."""

    message: Message


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """RFC 8656 §12.4: ChannelData from the server (a peer's datagram on a bound channel)."""

    number: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class DataMessage:
    """RFC 8656 §10.4: a Data indication (a peer's datagram without a channel)."""

    peer: Address
    payload: bytes


Incoming = Answer | ChannelMessage | DataMessage


def binding_request(transaction_id: bytes, attributes: Sequence[Attribute] = ()) -> bytes:
    """RFC 8489 §6.1: an unauthenticated Binding request."""
    return Message(Method.BINDING, StunClass.REQUEST, transaction_id, list(attributes)).encode()


def relayed_address(message: Message) -> Address | None:
    """RFC 8656 §7.3: XOR-RELAYED-ADDRESS of a successful Allocate answer."""
    relayed = message.get(XorRelayedAddress)
    return relayed.address if message.klass == StunClass.SUCCESS and relayed is not None else None


def mapped_address(message: Message) -> Address | None:
    """RFC 8489 §14.2: XOR-MAPPED-ADDRESS of a successful answer."""
    mapped = message.get(XorMappedAddress)
    return mapped.address if message.klass == StunClass.SUCCESS and mapped is not None else None


def describe_error(message: Message) -> str:
    """``"403 Forbidden"``, for reports."""
    error = message.get(ErrorCode)
    return f"{error.code} {error.reason}" if error else "no error code"


class TurnClientSession:
    """Long-term credentials for one TURN client 5-tuple: challenge, nonce, signed requests."""

    def __init__(self, username: str, password: str, random_bytes: Callable[[int], bytes]) -> None:
        self.username = username
        self._password = password
        self._random_bytes = random_bytes
        self.realm: str | None = None
        self.nonce: bytes | None = None
        self._key: bytes | None = None

    def __repr__(self) -> str:
        return f"TurnClientSession(username={self.username!r}, realm={self.realm!r})"

    def request(self, method: Method, attributes: Sequence[Attribute] = ()) -> tuple[bytes, bytes]:
        """``(transaction_id, bytes)``: signed once a challenge told us the realm and nonce."""
        transaction_id = self._random_bytes(12)
        body = list(attributes)
        if self.realm is None or self.nonce is None or self._key is None:
            return transaction_id, Message(method, StunClass.REQUEST, transaction_id, body).encode()
        body += [Username(self.username), Realm(self.realm), Nonce(self.nonce)]
        return transaction_id, Message(method, StunClass.REQUEST, transaction_id, body).encode(self._key)

    def learn_challenge(self, message: Message) -> bool:
        """RFC 8489 §9.2.5: a 401 or 438 with REALM and NONCE; True if the request should be retried.

        A 401 after we already signed with this realm means the credentials are wrong: no retry.
        """
        error, realm, nonce = message.get(ErrorCode), message.get(Realm), message.get(Nonce)
        if error is None or error.code not in (401, 438) or realm is None or nonce is None:
            return False
        if error.code == 401 and self.realm == realm.value and self.nonce is not None:
            return False
        self.nonce = nonce.value
        if realm.value != self.realm or self._key is None:
            self.realm = realm.value
            self._key = long_term_key(self.username, realm.value, self._password)
        return True

    def authentic(self, message: Message) -> bool:
        """RFC 8489 §9.2.5: a success answer must carry our key's integrity."""
        return self._key is not None and message.check_integrity(self._key)

    # -- requests of RFC 8656 --------------------------------------------------------------------

    def allocate(self, lifetime: int | None = None) -> tuple[bytes, bytes]:
        attributes: list[Attribute] = [RequestedTransport(UDP_PROTOCOL)]
        if lifetime is not None:
            attributes.append(Lifetime(lifetime))
        return self.request(Method.ALLOCATE, attributes)

    def channel_bind(self, number: int, peer: Address) -> tuple[bytes, bytes]:
        return self.request(Method.CHANNEL_BIND, [ChannelNumber(number), XorPeerAddress(peer)])

    def create_permission(self, peer: Address) -> tuple[bytes, bytes]:
        return self.request(Method.CREATE_PERMISSION, [XorPeerAddress(peer)])

    def delete(self) -> tuple[bytes, bytes]:
        """RFC 8656 §7.3: Refresh with LIFETIME 0 deletes the allocation."""
        return self.request(Method.REFRESH, [Lifetime(0)])

    @staticmethod
    def channel_data(number: int, payload: bytes, stream: bool) -> bytes:
        """RFC 8656 §12.5: over TCP/TLS, ChannelData is padded to a multiple of four bytes."""
        message = ChannelData(number, payload)
        return message.padded() if stream else bytes(message)

    # -- answers ---------------------------------------------------------------------------------

    @staticmethod
    def receive(data: bytes) -> Incoming | None:
        """Classify one datagram or stream message from the server; None for anything else."""
        if not data:
            return None
        if 0x40 <= data[0] <= 0x7F:
            try:
                channel = ChannelData.parse(data)
            except ParseError:
                return None
            return ChannelMessage(channel.channel, channel.data)
        try:
            message = Message.parse(data)
        except ParseError:
            return None
        if message.klass in (StunClass.SUCCESS, StunClass.ERROR):
            return Answer(message)
        if message.klass == StunClass.INDICATION and message.method == Method.DATA:
            peer, payload = message.get(XorPeerAddress), message.get(Data)
            if peer is not None and payload is not None:
                return DataMessage(peer.address, payload.value)
        return None
