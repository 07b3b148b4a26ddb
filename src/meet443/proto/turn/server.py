"""The TURN server as a sans-I/O state machine (RFC 8656, with STUN Binding from RFC 8489).

Bytes and ``now`` go in, bytes and their destinations come out:

* ``receive(data, flow, now)``: a datagram or stream message from a client;
* ``receive_on_other_port(data, address, now)``: a datagram on the second UDP port, which only
  answers Binding requests (RFC 5780 NAT behaviour discovery, see :meth:`TurnServer._binding`);
* ``receive_from_peer(relay, peer, data, now)``: a datagram that arrived on a relay port;
* ``connection_closed(flow, now)``: a TCP/TLS client went away (its allocation goes too);
* ``revoke(user, until)``: a participant left its meeting; its allocations go and its
  credentials stop working (the signaling core says so, through ``app.py``);
* ``handle_timer(now)``: expire allocations, permissions, channels, reservations and cached answers.

Quotas and revocations are counts for the whole server, kept in the injected
:class:`~meet443.proto.turn.quota.QuotaLedger`.

Relay sockets are opened through the injected :class:`RelayPortPool`; randomness (nonce secret,
reservation tokens) through ``random_bytes``. ``now`` is wall-clock seconds, because REST usernames
carry a Unix expiry time.

The per-packet paths (ChannelData and Send in, peer datagrams out) avoid the typed codecs and read
headers in place; the tests check them against :class:`~meet443.proto.turn.channeldata.ChannelData`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from meet443.exceptions import ParseError, StunErrorResponse
from meet443.proto.addresses import Address, ServerPort, ToClientFrom, Transport, address_key
from meet443.proto.ratelimit import KeyedRateLimiter, TokenBucket
from meet443.proto.stun.attributes import (
    AdditionalAddressFamily,
    AddressErrorCode,
    AlternateServer,
    Attribute,
    ChangeRequest,
    ChannelNumber,
    Data,
    ErrorCode,
    EvenPort,
    Fingerprint,
    Lifetime,
    MessageIntegrity,
    MessageIntegritySha256,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    Software,
    UnknownAttributes,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from meet443.proto.stun.keys import long_term_key
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.proto.turn.allocation import Allocation, ClientFlow
from meet443.proto.turn.channeldata import CHANNEL_MAX, CHANNEL_MIN, channel_data_header
from meet443.proto.turn.check import is_check_username
from meet443.proto.turn.credentials import REST_SEPARATOR, CredentialStore, rest_username_expiry
from meet443.proto.turn.nonce import NonceFactory
from meet443.proto.turn.peer_policy import PeerPolicy
from meet443.proto.turn.quota import MemoryLedger, QuotaLedger

logger = logging.getLogger(__name__)

UDP_PROTOCOL = 17
FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02
#: RFC 8489 §6.3.1: remember answers long enough to cover a client's retransmissions (39.5 s).
RESPONSE_CACHE_SECONDS = 40.0
#: RFC 8656 §7.2 step 6: an unused reserved port is released after about 30 s.
RESERVATION_SECONDS = 30.0


class ToClient(NamedTuple):
    flow: ClientFlow
    data: bytes


class ToPeer(NamedTuple):
    relay: Address
    peer: Address
    data: bytes


Output = ToClient | ToPeer | ToClientFrom


class RelayPortPool(Protocol):
    """Opens and closes relay sockets; the asyncio adapter binds real ones, tests use a fake."""

    def open(self, family: int, *, even: bool = False, port: int | None = None) -> Address | None:
        """Bind a relay port of ``family`` (4 or 6), an even one if asked, or exactly ``port``."""

    def close(self, relay: Address) -> None:
        """Close the relay socket bound at ``relay``."""


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """Tunables of the TURN service; defaults follow RFC 8656 and the issue's quotas."""

    realm: str
    software: str = "meet443"
    default_lifetime: int = 600
    max_lifetime: int = 3600
    nonce_lifetime: float = 600.0
    #: Per participant: the user part of every REST username ``expiry:user`` it was handed.
    max_allocations_per_user: int = 10
    max_allocations: int = 10000
    #: Bytes per second a single allocation may relay in each direction; burst is twice that.
    allocation_bandwidth: float = 2_000_000.0
    unauthenticated_rate: float = 20.0
    unauthenticated_burst: float = 40.0
    response_cache_size: int = 50_000
    ipv6_relay: bool = False
    #: The adapter has a second UDP port, so CHANGE-REQUEST "change port" can be honoured.
    change_port: bool = False
    #: The server's own addresses: the only peers of an allocation made with check credentials.
    server_addresses: frozenset[str] = frozenset()
    #: Allocations made with check credentials, all together (they are handed out without login).
    max_check_allocations: int = 100
    #: Check allocations per source address (IPv6: per /64): five addresses are needed to fill the pool.
    max_check_allocations_per_address: int = 20
    #: Longest lifetime of a check allocation: a check takes seconds; Chrome refreshes a minute early.
    check_lifetime: int = 120

    def __post_init__(self) -> None:
        # Peers arrive as the codec writes IP addresses; compare like with like.
        normalised = frozenset(str(ipaddress.ip_address(a)) for a in self.server_addresses)
        object.__setattr__(self, "server_addresses", normalised)


@dataclass(slots=True)
class TurnCounters:
    """What the metrics endpoint shows; no per-user labels (secrets and privacy)."""

    packets_relayed: dict[Transport, int] = field(default_factory=lambda: dict.fromkeys(Transport, 0))
    bytes_relayed: dict[Transport, int] = field(default_factory=lambda: dict.fromkeys(Transport, 0))
    auth_failures: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    allocations_created: int = 0
    #: Allocate requests answered 300 (Try Alternate) while draining.
    allocations_redirected: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class TurnServer:
    """RFC 8656 §5-§12: allocations, permissions, channels, and the relay between client and peers."""

    def __init__(
        self,
        settings: TurnSettings,
        credentials: CredentialStore,
        policy: PeerPolicy,
        relay_ports: RelayPortPool,
        random_bytes: Callable[[int], bytes],
        ledger: QuotaLedger | None = None,
        nonce_key: bytes | None = None,
    ) -> None:
        """``nonce_key`` signs nonces (:class:`NonceFactory`); servers that share it accept each
        other's, as the media workers of one node must: a client's next request may reach
        another worker. Random when not given."""
        self.settings = settings
        self.ledger: QuotaLedger = ledger if ledger is not None else MemoryLedger()
        self.credentials = credentials
        self.policy = policy
        self.relay_ports = relay_ports
        self._random_bytes = random_bytes
        self._nonces = NonceFactory(nonce_key or random_bytes(32), settings.nonce_lifetime)
        self._unauthenticated = KeyedRateLimiter(
            settings.unauthenticated_rate, settings.unauthenticated_burst
        )
        self.allocations: dict[ClientFlow, Allocation] = {}
        self.by_relay: dict[Address, Allocation] = {}
        #: Relay port numbers in use (an IPv4 and an IPv6 relay may share one): see is_own_relay.
        self._relay_ports: dict[int, int] = {}
        #: Relay ports other media workers of this server hold open (``--workers``), told by the
        #: control process: their datagrams must not reach TURN here either.
        self.sibling_relay_ports: set[int] = set()
        #: UDP allocations by client address alone: the per-datagram lookup then builds no ClientFlow.
        self.udp_allocations: dict[Address, Allocation] = {}
        #: This server's allocations by quota user, so a revocation finds them.
        self._by_user: dict[str, set[Allocation]] = {}
        #: Allocations made with check credentials (:mod:`meet443.proto.turn.check`).
        self._check_allocations: set[Allocation] = set()
        self._responses: dict[tuple[ClientFlow, bytes], tuple[float, bytes]] = {}
        self._reservations: dict[bytes, tuple[Address, float]] = {}
        self.counters = TurnCounters()
        #: While this node drains (docs/cluster.md "Drain"): live nodes' TURN addresses, to which
        #: new Allocate requests are sent with 300 Try Alternate.
        self.alternates: tuple[Address, ...] = ()

    # -- entry points ---------------------------------------------------------------------------

    def receive(self, data: bytes, flow: ClientFlow, now: float) -> list[Output]:
        """A STUN message or ChannelData from a client; malformed input is dropped and counted."""
        if not data:
            self.counters.drop("empty")
            return []
        first = data[0]
        if 0x40 <= first <= 0x7F:
            allocation = self.allocations.get(flow)
            if allocation is None:
                self.counters.drop("channel_data_without_allocation")
                return []
            sent = self.relay_channel_data(allocation, data, now)
            return [ToPeer(allocation.relay, sent[0], sent[1])] if sent else []
        if first > 0x03:
            self.counters.drop("not_stun")
            return []
        try:
            message = Message.parse(data)
        except ParseError:
            self.counters.drop("malformed_stun")
            return []
        return self.receive_stun(message, flow, now)

    def receive_stun(self, message: Message, flow: ClientFlow, now: float) -> list[Output]:
        """A STUN message from a client, parsed once by whoever told it from other traffic on a
        shared port (RFC 7983); :meth:`receive` parses it itself."""
        if message.klass == StunClass.INDICATION:
            return self._indication(message, flow, now)
        if message.klass != StunClass.REQUEST:
            self.counters.drop("unexpected_stun_class")
            return []
        cached = self._responses.get((flow, message.transaction_id))
        if cached is not None:
            return [ToClient(flow, cached[1])]
        return self._request(message, flow, now)

    def receive_on_other_port(self, data: bytes, address: Address, now: float) -> list[Output]:
        """A datagram on the second UDP port: Binding requests only (RFC 5780 §6.1), no TURN.

        The plain answer leaves from this port; with CHANGE-REQUEST "change port" it leaves from
        the main port instead. Anything else is dropped: allocations live on the main port only.
        """
        if not data or data[0] > 0x03:
            self.counters.drop("other_port_not_stun")
            return []
        try:
            message = Message.parse(data)
        except ParseError:
            self.counters.drop("malformed_stun")
            return []
        return self.receive_binding_on_other_port(message, address, now)

    def receive_binding_on_other_port(self, message: Message, address: Address, now: float) -> list[Output]:
        """:meth:`receive_on_other_port` for a message parsed once by the node (RFC 7983)."""
        if message.method != Method.BINDING or message.klass != StunClass.REQUEST:
            self.counters.drop("other_port_not_binding")
            return []
        return self._binding(message, ClientFlow(Transport.UDP, address), now, ServerPort.OTHER)

    def relay_channel_data(
        self, allocation: Allocation, data: bytes, now: float
    ) -> tuple[Address, bytes] | None:
        """RFC 8656 §12.6: a ChannelData message from the client, to the peer its channel names."""
        if len(data) < 4:
            self.counters.drop("malformed_channel_data")
            return None
        number = (data[0] << 8) | data[1]
        length = (data[2] << 8) | data[3]
        binding = allocation.channels.get(number)
        if binding is None or binding.expires <= now:
            self.counters.drop("unbound_channel")
            return None
        if len(data) < 4 + length or len(data) > 4 + length + 3:
            self.counters.drop("malformed_channel_data")
            return None
        return self._to_peer(allocation, binding.peer, data[4 : 4 + length], now)

    def receive_from_peer(self, relay: Address, peer: Address, data: bytes, now: float) -> ToClient | None:
        """RFC 8656 §10.3 / §12.7: a peer's datagram, as ChannelData if bound, else a Data indication."""
        allocation = self.by_relay.get(relay)
        if allocation is None or allocation.expires <= now:
            self.counters.drop("no_allocation")
            return None
        if allocation.permissions.get(peer[0], 0.0) <= now:
            self.counters.drop("no_permission")
            return None
        if not allocation.bandwidth.take(now, len(data)):
            self.counters.drop("bandwidth")
            return None
        flow = allocation.flow
        binding = allocation.channel_by_peer.get(peer)
        if binding is not None and binding.expires > now:
            out = channel_data_header(binding.number, len(data)) + data
            if flow.transport is not Transport.UDP:
                out += b"\x00" * (-len(out) % 4)
        else:
            indication = Message(
                Method.DATA, StunClass.INDICATION, self._random_bytes(12), [XorPeerAddress(peer), Data(data)]
            )
            out = bytes(indication)
        self.counters.packets_relayed[flow.transport] += 1
        self.counters.bytes_relayed[flow.transport] += len(data)
        return ToClient(flow, out)

    def connection_closed(self, flow: ClientFlow, now: float) -> None:
        """RFC 8656 §6.2: an allocation over TCP/TLS ends with its connection."""
        allocation = self.allocations.get(flow)
        if allocation is not None:
            self._delete(allocation, "connection closed")

    def is_own_relay(self, address: Address) -> bool:
        """Did this datagram come from one of our relay sockets? (Not merely from a port in the
        relay range: clients on the server's own host use ephemeral ports in that range too.)"""
        return address[0] in self.settings.server_addresses and (
            address[1] in self._relay_ports or address[1] in self.sibling_relay_ports
        )

    def revoke(self, user: str, until: float) -> None:
        """A participant left (or was removed from) its meeting: delete its allocations now and
        refuse every request made with its credentials until ``until``, when the last of them
        expires. ``user`` is the user part of its REST usernames (``expiry:user``)."""
        self.ledger.revoke(user, until)
        for allocation in list(self._by_user.get(user, ())):
            self._delete(allocation, "credentials revoked")

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` next has something to expire (RFC 8656 §6-§12 lifetimes, cached
        answers, reservations, revocations), or None. It looks at every allocation: ask after
        :meth:`handle_timer`, not after every message (an input only adds deadlines seconds ahead)."""
        deadlines = [allocation.next_expiry() for allocation in self.allocations.values()]
        deadlines += [expiry for expiry, _ in self._responses.values()]
        deadlines += [expiry for _, expiry in self._reservations.values()]
        revocation = self.ledger.next_expiry()
        if revocation is not None:
            deadlines.append(revocation)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Expire everything whose lifetime has passed."""
        self.ledger.expire(now)
        for allocation in [a for a in self.allocations.values() if a.expires <= now]:
            self._delete(allocation, "expired")
        for allocation in self.allocations.values():
            allocation.expire(now)
        for key in [k for k, (expiry, _) in self._responses.items() if expiry <= now]:
            del self._responses[key]
        for token in [t for t, (_, expiry) in self._reservations.items() if expiry <= now]:
            relay, _ = self._reservations.pop(token)
            self.relay_ports.close(relay)

    # -- the per-packet path towards peers ------------------------------------------------------

    def _to_peer(
        self, allocation: Allocation, peer: Address, payload: bytes, now: float
    ) -> tuple[Address, bytes] | None:
        if allocation.expires <= now:
            self.counters.drop("no_allocation")
            return None
        if allocation.permissions.get(peer[0], 0.0) <= now:
            self.counters.drop("no_permission")
            return None
        if not self.policy.relay_allowed(peer[0], peer[1]):
            self.counters.drop("peer_denied")
            return None
        # Empty unless a network check runs, so the usual cost is one truth test. Permissions are per
        # IP (§9), so for a check allocation each datagram's port is checked too.
        if (
            self._check_allocations
            and allocation in self._check_allocations
            and not self._is_check_relay(peer)
        ):
            self.counters.drop("check_peer_denied")
            return None
        if not allocation.bandwidth.take(now, len(payload)):
            self.counters.drop("bandwidth")
            return None
        transport = allocation.flow.transport
        self.counters.packets_relayed[transport] += 1
        self.counters.bytes_relayed[transport] += len(payload)
        return peer, payload

    def _indication(self, message: Message, flow: ClientFlow, now: float) -> list[Output]:
        """RFC 8656 §10.2: a Send indication; anything wrong means a silent drop."""
        if message.method != Method.SEND:
            self.counters.drop("unexpected_indication")
            return []
        allocation = self.allocations.get(flow)
        peer = message.get(XorPeerAddress)
        payload = message.get(Data)
        if allocation is None or peer is None or payload is None:
            self.counters.drop("bad_send_indication")
            return []
        if _family(peer.address) != allocation.family:
            self.counters.drop("bad_send_indication")
            return []
        sent = self._to_peer(allocation, peer.address, payload.value, now)
        return [ToPeer(allocation.relay, sent[0], sent[1])] if sent else []

    # -- requests -------------------------------------------------------------------------------

    def _request(self, request: Message, flow: ClientFlow, now: float) -> list[Output]:
        if request.method == Method.BINDING:
            return self._binding(request, flow, now)
        handler = self._HANDLERS.get(request.method)
        if handler is None:
            return self._unauthenticated_error(request, flow, now, 400, "Unknown method")
        unknown = request.unknown_comprehension_required()
        if unknown:
            return self._unauthenticated_error(request, flow, now, 420, "Unknown Attribute", unknown)
        authenticated = self._authenticate(request, flow, now)
        if isinstance(authenticated, list):
            return authenticated
        username, key = authenticated
        if request.method == Method.ALLOCATE and self.alternates and flow not in self.allocations:
            alternate = self._alternate_for(flow.address)
            if alternate is not None:
                return [ToClient(flow, self._try_alternate(request, flow, alternate, key, now))]
        try:
            attributes = handler(self, request, flow, username, key, now)
        except StunErrorResponse as error:
            if error.code == 441:
                self.counters.auth_failures += 1
            attributes = [ErrorCode(error.code, error.reason)]
            return [ToClient(flow, self._answer(request, flow, StunClass.ERROR, attributes, key, now))]
        return [ToClient(flow, self._answer(request, flow, StunClass.SUCCESS, attributes, key, now))]

    def _alternate_for(self, client: Address) -> Address | None:
        """RFC 8489 §14.15: the alternate's family must be the request's source's."""
        family = _family(client)
        return next((a for a in self.alternates if _family(a) == family), None)

    def _try_alternate(
        self, request: Message, flow: ClientFlow, alternate: Address, key: bytes, now: float
    ) -> bytes:
        """RFC 8656 §7.2 and RFC 8489 §10: 300 (Try Alternate) with ALTERNATE-SERVER, after
        authentication so that the answer carries MESSAGE-INTEGRITY and cannot be forged."""
        self.counters.allocations_redirected += 1
        attributes: list[Attribute] = [ErrorCode(300, "Try Alternate"), AlternateServer(alternate)]
        return self._answer(request, flow, StunClass.ERROR, attributes, key, now)

    def _binding(
        self, request: Message, flow: ClientFlow, now: float, arrived_on: ServerPort = ServerPort.MAIN
    ) -> list[Output]:
        """RFC 8489 §6.3.1: answer with the reflexive address; rate limited (no amplification).

        RFC 5780 §6.1 CHANGE-REQUEST: with "change port" over UDP, the answer leaves from the other
        UDP port, and only towards the request's source address (no RESPONSE-PORT, so it cannot be
        aimed at anyone else), under the same per-address limit as every unauthenticated answer.
        This server has one IP address, so "change IP" (and any change over TCP/TLS, or without a
        second port) gets 420, as §6.1 asks of a server that cannot honour the request. As for
        every unauthenticated answer, only UDP is rate limited: a stream client cannot be spoofed.
        """
        if flow.transport is Transport.UDP and not self._unauthenticated.allow(flow.address[0], now):
            self.counters.drop("unauthenticated_rate")
            return []
        fingerprint = request.get(Fingerprint) is not None
        change = request.get(ChangeRequest)
        if change is not None and (change.change_ip or change.change_port):
            if change.change_ip or not self.settings.change_port or flow.transport is not Transport.UDP:
                error = Message(
                    Method.BINDING,
                    StunClass.ERROR,
                    request.transaction_id,
                    [
                        ErrorCode(420, "Unknown Attribute"),
                        UnknownAttributes((ChangeRequest.TYPE,)),
                        Software(self.settings.software),
                    ],
                )
                return [self._binding_answer(flow, arrived_on, error.encode(fingerprint=fingerprint))]
            arrived_on = ServerPort.OTHER if arrived_on is ServerPort.MAIN else ServerPort.MAIN
        response = Message(
            Method.BINDING,
            StunClass.SUCCESS,
            request.transaction_id,
            [XorMappedAddress(flow.address), Software(self.settings.software)],
        )
        return [self._binding_answer(flow, arrived_on, response.encode(fingerprint=fingerprint))]

    @staticmethod
    def _binding_answer(flow: ClientFlow, port: ServerPort, data: bytes) -> Output:
        if port is ServerPort.MAIN:
            return ToClient(flow, data)
        return ToClientFrom(port, flow.address, data)

    def _unauthenticated_error(
        self,
        request: Message,
        flow: ClientFlow,
        now: float,
        code: int,
        reason: str,
        unknown: tuple[int, ...] = (),
        challenge: bool = False,
    ) -> list[Output]:
        """An error sent before the client proved who it is: rate limited per source address.

        Only over UDP, where a forged source address turns answers into reflection. A TCP/TLS
        client has completed a handshake, cannot be spoofed, and would hang on silence.
        """
        if flow.transport is Transport.UDP and not self._unauthenticated.allow(flow.address[0], now):
            self.counters.drop("unauthenticated_rate")
            return []
        attributes: list[Attribute] = [ErrorCode(code, reason)]
        if unknown:
            attributes.append(UnknownAttributes(unknown))
        if challenge:
            attributes += [Realm(self.settings.realm), Nonce(self._nonces.issue(flow.address[0], now))]
        attributes.append(Software(self.settings.software))
        response = Message(request.method, StunClass.ERROR, request.transaction_id, attributes)
        return [ToClient(flow, response.encode(fingerprint=request.get(Fingerprint) is not None))]

    def _authenticate(
        self, request: Message, flow: ClientFlow, now: float
    ) -> tuple[str, bytes] | list[Output]:
        """RFC 8489 §9.2.4: the long-term credential mechanism, with stateless nonces."""
        if request.get(MessageIntegrity) is None and request.get(MessageIntegritySha256) is None:
            return self._unauthenticated_error(request, flow, now, 401, "Unauthenticated", challenge=True)
        username = request.get(Username)
        realm = request.get(Realm)
        nonce = request.get(Nonce)
        if username is None or realm is None or nonce is None:
            return self._unauthenticated_error(request, flow, now, 400, "Missing USERNAME, REALM or NONCE")
        if not self._nonces.is_valid(nonce.value, flow.address[0], now):
            return self._unauthenticated_error(request, flow, now, 438, "Stale Nonce", challenge=True)
        found = self.credentials.password_for(username.value, now)
        allocation = self.allocations.get(flow)
        if found is None or realm.value != self.settings.realm:
            self.counters.auth_failures += 1
            return self._unauthenticated_error(request, flow, now, 401, "Unauthenticated", challenge=True)
        password, expired = found
        # An expired REST username may keep using the allocation it already holds (a long call is
        # never cut at the credential TTL), but it cannot create a new one.
        if expired and (allocation is None or allocation.username != username.value):
            self.counters.auth_failures += 1
            return self._unauthenticated_error(request, flow, now, 401, "Credentials expired", challenge=True)
        try:
            key = long_term_key(username.value, self.settings.realm, password)
        except ParseError:
            key = b""
        if not key or not request.check_integrity(key):
            self.counters.auth_failures += 1
            return self._unauthenticated_error(request, flow, now, 401, "Unauthenticated", challenge=True)
        if self.ledger.is_revoked(quota_user(username.value), now):
            self.counters.auth_failures += 1
            return self._unauthenticated_error(request, flow, now, 401, "Credentials revoked", challenge=True)
        return username.value, key

    def _answer(
        self,
        request: Message,
        flow: ClientFlow,
        klass: StunClass,
        attributes: list[Attribute],
        key: bytes,
        now: float,
    ) -> bytes:
        """An authenticated answer, signed like the request, remembered for retransmissions."""
        attributes.append(Software(self.settings.software))
        response = Message(request.method, klass, request.transaction_id, attributes)
        data = response.encode(
            key, sha256=request.uses_sha256, fingerprint=request.get(Fingerprint) is not None
        )
        if len(self._responses) >= self.settings.response_cache_size:
            del self._responses[next(iter(self._responses))]
        self._responses[(flow, request.transaction_id)] = (now + RESPONSE_CACHE_SECONDS, data)
        return data

    # -- methods --------------------------------------------------------------------------------

    def _allocate(
        self, request: Message, flow: ClientFlow, username: str, key: bytes, now: float
    ) -> list[Attribute]:
        """RFC 8656 §7.2: receiving an Allocate request."""
        if flow in self.allocations:
            raise StunErrorResponse(437, "Allocation Mismatch")
        transport = request.get(RequestedTransport)
        if transport is None:
            raise StunErrorResponse(400, "REQUESTED-TRANSPORT missing")
        if transport.protocol != UDP_PROTOCOL:
            raise StunErrorResponse(442, "Unsupported Transport Protocol")
        token = request.get(ReservationToken)
        even_port = request.get(EvenPort)
        requested_family = request.get(RequestedAddressFamily)
        additional_family = request.get(AdditionalAddressFamily)
        if token is not None and (even_port is not None or requested_family is not None):
            raise StunErrorResponse(400, "RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY")
        if requested_family is not None and additional_family is not None:
            raise StunErrorResponse(400, "REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together")
        if additional_family is not None and additional_family.family != FAMILY_IPV6:
            raise StunErrorResponse(400, "ADDITIONAL-ADDRESS-FAMILY must be IPv6")
        family = 4
        if requested_family is not None:
            if requested_family.family not in (FAMILY_IPV4, FAMILY_IPV6):
                raise StunErrorResponse(440, "Address Family not Supported")
            family = 6 if requested_family.family == FAMILY_IPV6 else 4
            if family == 6 and not self.settings.ipv6_relay:
                raise StunErrorResponse(440, "Address Family not Supported")
        user = quota_user(username)
        if self.ledger.held(_USER + user) >= self.settings.max_allocations_per_user:
            raise StunErrorResponse(486, "Allocation Quota Reached")
        if len(self.allocations) >= self.settings.max_allocations:
            raise StunErrorResponse(486, "Allocation Quota Reached")
        check = is_check_username(username)
        if check and (
            self.ledger.held(_CHECK_POOL) >= self.settings.max_check_allocations
            or self.ledger.held(_check_key(flow)) >= self.settings.max_check_allocations_per_address
        ):
            raise StunErrorResponse(486, "Allocation Quota Reached")
        # DONT-FRAGMENT (RFC 8656 §7.2 step 4) is accepted and needs no action: WebRTC media
        # stays under the path MTU, and the attribute is comprehension-optional anyway.
        reserved: Address | None = None
        if token is not None:
            held = self._reservations.pop(token.token, None)
            if held is None:
                raise StunErrorResponse(508, "Insufficient Capacity")
            relay: Address | None = held[0]
        else:
            relay = self.relay_ports.open(family, even=even_port is not None)
            if relay is not None and even_port is not None and even_port.reserve:
                reserved = self.relay_ports.open(family, port=relay[1] + 1)
                if reserved is None:
                    self.relay_ports.close(relay)
                    relay = None
        if relay is None:
            raise StunErrorResponse(508, "Insufficient Capacity")
        lifetime = self._lifetime(request, check)
        allocation = Allocation(
            flow=flow,
            relay=relay,
            username=username,
            key=key,
            expires=now + lifetime,
            bandwidth=TokenBucket(self.settings.allocation_bandwidth, 2 * self.settings.allocation_bandwidth),
        )
        self.allocations[flow] = allocation
        if flow.transport is Transport.UDP:
            self.udp_allocations[flow.address] = allocation
        self.by_relay[relay] = allocation
        self._relay_ports[relay[1]] = self._relay_ports.get(relay[1], 0) + 1
        self.ledger.allocated(_USER + user)
        self._by_user.setdefault(user, set()).add(allocation)
        if check:
            self._check_allocations.add(allocation)
            self.ledger.allocated(_CHECK_POOL)
            self.ledger.allocated(_check_key(flow))
            self.ledger.allocated(_check_relay_key(relay))
        self.counters.allocations_created += 1
        logger.info("allocation %s:%d for %s %s:%d", *relay, flow.transport.value, *flow.address)
        attributes: list[Attribute] = [
            XorRelayedAddress(relay),
            Lifetime(lifetime),
            XorMappedAddress(flow.address),
        ]
        if reserved is not None:
            token_value = self._random_bytes(8)
            self._reservations[token_value] = (reserved, now + RESERVATION_SECONDS)
            attributes.append(ReservationToken(token_value))
        if additional_family is not None:
            # Dual allocation (RFC 8656 §7.2 step 8) is optional; this server relays one family per
            # allocation, so a client asking for IPv6 too learns it must allocate it separately.
            attributes.append(AddressErrorCode(FAMILY_IPV6, 440, "Address Family not Supported"))
        return attributes

    def _lifetime(self, request: Message, check: bool) -> int:
        """RFC 8656 §7.2 step 7: at least the default, at most the maximum (check allocations:
        at most :attr:`TurnSettings.check_lifetime`)."""
        asked = request.get(Lifetime)
        if asked is None:
            lifetime = self.settings.default_lifetime
        else:
            lifetime = max(self.settings.default_lifetime, min(asked.seconds, self.settings.max_lifetime))
        return min(lifetime, self.settings.check_lifetime) if check else lifetime

    def _owned_allocation(self, flow: ClientFlow, username: str) -> Allocation:
        allocation = self.allocations.get(flow)
        if allocation is None:
            raise StunErrorResponse(437, "Allocation Mismatch")
        if allocation.username != username:
            raise StunErrorResponse(441, "Wrong Credentials")
        return allocation

    def _refresh(
        self, request: Message, flow: ClientFlow, username: str, key: bytes, now: float
    ) -> list[Attribute]:
        """RFC 8656 §7.4: receiving a Refresh request (LIFETIME 0 deletes)."""
        allocation = self._owned_allocation(flow, username)
        family = request.get(RequestedAddressFamily)
        if family is not None and (6 if family.family == FAMILY_IPV6 else 4) != allocation.family:
            raise StunErrorResponse(443, "Peer Address Family Mismatch")
        asked = request.get(Lifetime)
        if asked is not None and asked.seconds == 0:
            self._delete(allocation, "refreshed to 0")
            return [Lifetime(0)]
        lifetime = (
            self.settings.default_lifetime
            if asked is None
            else min(asked.seconds, self.settings.max_lifetime)
        )
        if allocation in self._check_allocations:
            lifetime = min(lifetime, self.settings.check_lifetime)
        allocation.expires = now + lifetime
        return [Lifetime(lifetime)]

    def _peer_addresses(self, request: Message, allocation: Allocation) -> list[Address]:
        peers = [p.address for p in request.get_all(XorPeerAddress)]
        if not peers:
            raise StunErrorResponse(400, "XOR-PEER-ADDRESS missing")
        check = allocation in self._check_allocations
        for peer in peers:
            if _family(peer) != allocation.family:
                raise StunErrorResponse(443, "Peer Address Family Mismatch")
            if not self.policy.permission_allowed(peer[0]):
                raise StunErrorResponse(403, "Forbidden")
            if check and not self._is_check_relay(peer):
                raise StunErrorResponse(403, "Forbidden")
        return peers

    def _is_check_relay(self, peer: Address) -> bool:
        """A check allocation (credentials anyone may get) reaches this server's own addresses only,
        and of those only the relayed addresses of other check allocations: never a participant.
        The ledger knows them, also those of other processes (``--workers``)."""
        return peer[0] in self.settings.server_addresses and self.ledger.held(_check_relay_key(peer)) > 0

    def _create_permission(
        self, request: Message, flow: ClientFlow, username: str, key: bytes, now: float
    ) -> list[Attribute]:
        """RFC 8656 §9.2: receiving a CreatePermission request (all addresses or none)."""
        allocation = self._owned_allocation(flow, username)
        for peer in self._peer_addresses(request, allocation):
            allocation.install_permission(peer[0], now)
        return []

    def _channel_bind(
        self, request: Message, flow: ClientFlow, username: str, key: bytes, now: float
    ) -> list[Attribute]:
        """RFC 8656 §11.2: receiving a ChannelBind request."""
        allocation = self._owned_allocation(flow, username)
        number = request.get(ChannelNumber)
        if number is None or not CHANNEL_MIN <= number.number <= CHANNEL_MAX:
            raise StunErrorResponse(400, "CHANNEL-NUMBER missing or out of range")
        peers = self._peer_addresses(request, allocation)
        if len(peers) != 1:
            raise StunErrorResponse(400, "ChannelBind takes one XOR-PEER-ADDRESS")
        if not allocation.can_bind(number.number, peers[0], now):
            raise StunErrorResponse(400, "Channel or peer already bound")
        allocation.bind_channel(number.number, peers[0], now)
        return []

    _HANDLERS: dict[int, Callable[[TurnServer, Message, ClientFlow, str, bytes, float], list[Attribute]]] = {
        Method.ALLOCATE: _allocate,
        Method.REFRESH: _refresh,
        Method.CREATE_PERMISSION: _create_permission,
        Method.CHANNEL_BIND: _channel_bind,
    }

    # -- bookkeeping ----------------------------------------------------------------------------

    def _delete(self, allocation: Allocation, why: str) -> None:
        del self.allocations[allocation.flow]
        if allocation.flow.transport is Transport.UDP:
            del self.udp_allocations[allocation.flow.address]
        del self.by_relay[allocation.relay]
        port = allocation.relay[1]
        if self._relay_ports[port] > 1:
            self._relay_ports[port] -= 1
        else:
            del self._relay_ports[port]
        user = quota_user(allocation.username)
        self.ledger.released(_USER + user)
        held = self._by_user[user]
        held.discard(allocation)
        if not held:
            del self._by_user[user]
        if allocation in self._check_allocations:
            self._check_allocations.discard(allocation)
            self.ledger.released(_CHECK_POOL)
            self.ledger.released(_check_key(allocation.flow))
            self.ledger.released(_check_relay_key(allocation.relay))
        self.relay_ports.close(allocation.relay)
        logger.info("allocation %s:%d deleted (%s)", *allocation.relay, why)


#: Ledger keys (:mod:`meet443.proto.turn.quota`).
_USER = "user:"
_CHECK_POOL = "check"
_CHECK_RELAY = "check-relay:"


def _check_relay_key(relay: Address) -> str:
    """The relayed address of a check allocation (held 1 while it lives)."""
    return f"{_CHECK_RELAY}{relay[0]}:{relay[1]}"


def _check_key(flow: ClientFlow) -> str:
    return "check:" + address_key(flow.address[0])


def quota_user(username: str) -> str:
    """Whose quota an allocation counts against: the user part of a REST username ``expiry:user``
    (one participant, however many credentials it was handed), else the whole username (a static
    user, or a bare ``expiry`` REST username, which names nobody)."""
    if rest_username_expiry(username) is not None:
        user = username.partition(REST_SEPARATOR)[2]
        if user:
            return user
    return username


def _family(address: Address) -> int:
    return 6 if ":" in address[0] else 4
