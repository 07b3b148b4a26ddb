"""What the control process and the media workers say to each other (``meet443 serve --workers N``).

STYLE.md §9: a message that crosses a process is a typed, versioned struct. Every message here is a
:class:`msgspec.Struct` tagged by its ``kind``, encoded with MessagePack and sent as one record of a
``SOCK_SEQPACKET`` socketpair (the kernel keeps record boundaries and carries descriptors with
``SCM_RIGHTS``, so no framing is needed). Unknown fields are ignored, so a newer peer's extra field
does not break an older one; :data:`VERSION` is checked once, in :class:`Hello`.

The channel is a local socketpair between a parent and its child: reliable and ordered while both
live, gone with either. Every handler is idempotent anyway (a join for a member the SFU knows is a
no-op, a revocation is a maximum, a relay set is replaced), because a respawned worker is sent the
state it needs again.

Datagrams that reach the main UDP port on one worker but belong to another worker's SFU
(SO_REUSEPORT hashes flows, not rooms) travel between workers as :class:`ForwardedDatagram`
records on unix datagram sockets: a per-packet path, so a fixed binary header, not MessagePack.

Pure: no sockets, clocks or randomness here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgspec

from meet443.exceptions import ParseError
from meet443.proto.addresses import Address
from meet443.proto.signaling.messages import ServerMessage, SfuRequest

__all__ = [
    "VERSION",
    "ClusterTurn",
    "ForwardedDatagram",
    "Hello",
    "HttpConnection",
    "IpcMessage",
    "MetricsQuery",
    "MetricsReport",
    "QuotaHeld",
    "Ready",
    "RelaysChanged",
    "Revoke",
    "RoomSignal",
    "SfuCall",
    "SfuLeave",
    "SfuSignal",
    "TlsFiles",
    "TurnConnection",
    "WorkerGone",
    "WorkerSettings",
    "decode",
    "encode",
]

#: Bumped when a message changes meaning; a worker refuses a :class:`Hello` of another version.
VERSION = 2


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything worker ``index`` of ``count`` needs to build its TURN core and SFU.

    It holds the TURN secret and static passwords: it only ever crosses the socketpair, is never
    logged (no ``__repr__`` of it is written anywhere) and never appears in a command line.
    """

    index: int
    count: int
    listen: str
    public_ip: str
    public_ipv6: str | None
    port: int
    #: Every worker's SFU port, by worker index (worker k's is ``sfu_ports[k]``).
    sfu_ports: list[int]
    #: This worker's share of ``--relay-ports`` and the whole range.
    relay_ports: tuple[int, int]
    all_relay_ports: tuple[int, int]
    realm: str
    turn_secret: str
    turn_users: dict[str, str]
    allow_peers: list[str]
    max_allocations_per_user: int
    #: This worker's share of ``--max-allocations``.
    max_allocations: int
    allocation_bandwidth: int
    unauth_rate: float
    sfu_last_n: int
    sfu_nack: bool
    log_level: str
    #: This worker's share of ``--max-pending-connections`` and of one address's share of it.
    max_pending: int
    pending_per_address: int
    #: The TLS certificate chain and key of the TCP port (``--cert``/``--key`` or the generated
    #: ones), as paths: a worker terminates TURN over TLS itself. :class:`TlsFiles` replaces them.
    tls_files: TlsFiles


class _Message(msgspec.Struct, tag_field="kind", frozen=True):
    pass


class Hello(_Message, tag="hello", frozen=True):
    """control → worker, first: who it is. Its descriptors ride along (SCM_RIGHTS), in this order:
    its main-port socket, its SFU-port socket, its forwarding inbox, then every worker's inbox
    sending end by index."""

    version: int
    settings: WorkerSettings


class Ready(_Message, tag="ready", frozen=True):
    """worker → control: serving its sockets."""

    pid: int


class SfuCall(_Message, tag="sfu", frozen=True):
    """control → worker: a group-room participant joined (``request`` None) or sent a request."""

    room: str
    participant: str
    request: SfuRequest | None


class SfuLeave(_Message, tag="sfu-leave", frozen=True):
    """control → worker: a participant left its group room for good."""

    room: str
    participant: str


class Revoke(_Message, tag="revoke", frozen=True):
    """control → every worker: delete this participant's allocations, refuse its credentials."""

    participant: str
    until: float


class ClusterTurn(_Message, tag="cluster-turn", frozen=True):
    """control → every worker: what the cluster link sets on TURN (docs/cluster.md "TURN across
    nodes"): the other live nodes as ``(addresses, sfu_ports, relay_ports)`` for the peer policy,
    and the addresses a new allocation is sent to (Try Alternate) while this node drains. Sent when
    it changes and to every (re)spawned worker; it replaces the previous one."""

    nodes: list[tuple[list[str], list[int], tuple[int, int]]]
    alternates: list[tuple[str, int]]


class TurnConnection(_Message, tag="turn-connection", frozen=True):
    """control → worker: a TURN client's TCP or TLS connection, as the descriptor riding along.

    The descriptor is the client's own socket. ``transport`` is ``"tcp"``, or ``"tls"``: the
    ClientHello offered no HTTP by ALPN and is still unread in the socket; the worker does the
    handshake. ``age`` is how long ago it was accepted: its deadline to allocate counts from the
    accept. Until it allocates it is pending, and counts against the worker's share of
    ``--max-pending-connections`` (per address too).
    """

    transport: str
    peer: tuple[str, int]
    age: float


class HttpConnection(_Message, tag="http-connection", frozen=True):
    """worker → control: a TLS connection handed over as TURN whose first decrypted bytes are
    not STUN but (a client without ALPN) HTTP. The descriptor riding along is one end of a stream
    socketpair carrying the decrypted bytes both ways (the worker keeps the TLS session); the
    control process serves HTTPS on it for ``peer``, accepted ``age`` seconds ago."""

    peer: tuple[str, int]
    age: float


class TlsFiles(_Message, tag="tls-files", frozen=True):
    """control → every worker: the TCP port's certificate chain and key were reloaded (SIGHUP);
    load them (paths) for the next handshakes."""

    cert: str
    key: str


class SfuSignal(_Message, tag="signal", frozen=True):
    """worker → control: an SFU message for one participant."""

    room: str
    participant: str
    message: ServerMessage


class RoomSignal(_Message, tag="room-signal", frozen=True):
    """worker → control: an SFU message for everyone in a room."""

    room: str
    message: ServerMessage


class RelaysChanged(_Message, tag="relays", frozen=True):
    """worker → control → every other worker: worker ``worker`` opened and closed these relay
    ports. A datagram from one of them is relayed and must never reach TURN (no TURN-through-TURN),
    whichever worker the main port hands it to. Applying one twice changes nothing."""

    worker: int
    opened: list[int]
    closed: list[int]


class QuotaHeld(_Message, tag="quota", frozen=True):
    """worker → control → every other worker: how many allocations worker ``worker`` holds under
    ``key`` (:mod:`meet443.proto.turn.quota` keys); a count, not a delta, so it is idempotent."""

    worker: int
    key: str
    held: int


class WorkerGone(_Message, tag="worker-gone", frozen=True):
    """control → every other worker: worker ``worker`` died; its allocations died with it."""

    worker: int


class MetricsQuery(_Message, tag="metrics?", frozen=True):
    """control → worker: send your metrics."""

    query: int


class MetricsReport(_Message, tag="metrics", frozen=True):
    """worker → control: the worker's Prometheus exposition, for :class:`MetricsQuery` ``query``."""

    query: int
    text: str


IpcMessage = (
    Hello
    | Ready
    | SfuCall
    | SfuLeave
    | Revoke
    | ClusterTurn
    | TurnConnection
    | HttpConnection
    | TlsFiles
    | SfuSignal
    | RoomSignal
    | RelaysChanged
    | QuotaHeld
    | WorkerGone
    | MetricsQuery
    | MetricsReport
)

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(IpcMessage)


def encode(message: IpcMessage) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes) -> IpcMessage:
    """One record; :class:`~meet443.exceptions.ParseError` if it is not a message we know."""
    try:
        message: IpcMessage = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ParseError(f"bad IPC message: {exc}") from exc
    return message


_HEADER = struct.Struct("!BH")


@dataclass(frozen=True, slots=True)
class ForwardedDatagram:
    """A datagram from ``source`` that arrived on the main port of another worker.

    Wire: the length of the source IP's text (1 byte), the source port (2 bytes), the IP text, the
    datagram.
    """

    source: Address
    data: bytes

    def __bytes__(self) -> bytes:
        ip = self.source[0].encode("ascii")
        return _HEADER.pack(len(ip), self.source[1]) + ip + self.data

    @classmethod
    def parse(cls, record: bytes) -> ForwardedDatagram:
        if len(record) < _HEADER.size:
            raise ParseError("forwarded datagram shorter than its header")
        length, port = _HEADER.unpack_from(record)
        end = _HEADER.size + length
        if not 0 < length <= 45 or len(record) < end:
            raise ParseError("forwarded datagram with a bad source")
        try:
            ip = record[_HEADER.size : end].decode("ascii")
        except UnicodeDecodeError as exc:
            raise ParseError("forwarded datagram with a bad source") from exc
        return cls((ip, port), record[end:])
