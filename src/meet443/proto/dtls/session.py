"""DTLS-SRTP (RFC 5764 over DTLS 1.2, RFC 6347) for one peer connection, over OpenSSL memory BIOs.

Sans-I/O in the aioquic shape: ``receive_datagram(data, now)`` feeds a datagram from the peer,
``datagrams_to_send()`` takes what to send back (to the ICE selected pair), ``get_timer()`` /
``handle_timer(now)`` drive retransmission, ``next_event()`` yields
:class:`~meet443.proto.dtls.events.HandshakeCompleted` (with the SRTP profile and keys) or
:class:`~meet443.proto.dtls.events.HandshakeFailed`.

The SFU is the DTLS server (it answers ``a=setup:passive``, RFC 5763 §5); the client role exists for
tests and for a browser that answers an SFU offer with ``setup:passive``. Both sides must present a
certificate; the remote one must match a fingerprint from the remote SDP (RFC 8122 §5, RFC 5763
§5). The check runs inside OpenSSL's verify callback, so a mismatch aborts the handshake with a
``bad_certificate`` alert before any key is derived.

OpenSSL is the one part of ``proto/`` that reads a clock (STYLE.md §1): its DTLS retransmission
timer (RFC 6347 §4.2.4: 1 s doubling to 60 s) runs on the wall clock. ``get_timer()`` maps the time
OpenSSL reports as left (``DTLSv1_get_timeout``) onto the caller's ``now``, and ``handle_timer``
calls ``DTLSv1_handle_timeout``, which retransmits the last flight if OpenSSL agrees it is due.
A retransmitted flight from the peer is answered by OpenSSL with our last flight again (RFC 6347
§4.2.4), also after the handshake completed (a lost final flight).

A memory BIO does not keep datagram boundaries, so outgoing bytes are split into DTLS records and
packed into datagrams of at most ``mtu`` bytes; OpenSSL already fragments handshake messages to
fit that MTU (``set_ciphertext_mtu`` with ``OP_NO_QUERY_MTU``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import struct
from collections import deque
from collections.abc import Sequence
from typing import Any

from OpenSSL import SSL, crypto

from meet443.proto.dtls.certificate import (
    DtlsCertificate,
    certificate_fingerprint,
    fingerprint_matches,
)
from meet443.proto.dtls.events import (
    ApplicationData,
    DtlsClosed,
    DtlsEvent,
    DtlsFailure,
    HandshakeCompleted,
    HandshakeFailed,
)
from meet443.proto.rtp.srtp import (
    DEFAULT_PROFILES,
    EXPORTER_LABEL,
    SrtpKeyingMaterial,
    SrtpProfile,
)
from meet443.proto.sdp.attributes import Fingerprint, SetupRole

logger = logging.getLogger(__name__)

#: DTLS 1.2 on the wire (RFC 6347 §4.1); OpenSSL's constant is not exported by pyOpenSSL.
DTLS1_2_VERSION = 0xFEFD
#: The record header: type, version, epoch, sequence number (48 bits), length (RFC 6347 §4.1).
RECORD_HEADER = 13
#: Path MTU budget for DTLS datagrams; what browsers use, below IPv6's 1280 minimum with headers.
DEFAULT_MTU = 1200
#: RFC 8827 §6.5 requires ECDHE with AES-GCM; keep to what browsers offer, ECDSA certificates.
CIPHERS = b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"


class DtlsRole(enum.Enum):
    CLIENT = "client"
    SERVER = "server"

    @classmethod
    def for_local_setup(cls, setup: SetupRole) -> DtlsRole:
        """RFC 8842 §5: ``active`` connects (client), ``passive`` accepts (server)."""
        if setup is SetupRole.ACTIVE:
            return cls.CLIENT
        if setup is SetupRole.PASSIVE:
            return cls.SERVER
        raise ValueError(f"a negotiated setup role is active or passive, not {setup.value}")


class DtlsState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


class Trigger(enum.Enum):
    START = "start"
    HANDSHAKE_DONE = "handshake done"
    FAILURE = "failure"
    CLOSE = "close"


S, T = DtlsState, Trigger
#: Every transition of a session, in one place; a missing entry is a bug and raises.
TRANSITIONS: dict[tuple[DtlsState, Trigger], DtlsState] = {
    (S.NEW, T.START): S.CONNECTING,
    (S.CONNECTING, T.HANDSHAKE_DONE): S.CONNECTED,
    (S.CONNECTING, T.FAILURE): S.FAILED,
    (S.CONNECTED, T.FAILURE): S.FAILED,
    (S.NEW, T.CLOSE): S.CLOSED,
    (S.CONNECTING, T.CLOSE): S.CLOSED,
    (S.CONNECTED, T.CLOSE): S.CLOSED,
    (S.FAILED, T.CLOSE): S.CLOSED,
}
del S, T


def split_records(data: bytes) -> list[bytes]:
    """Cut OpenSSL's output stream into DTLS records (a truncated tail stays one piece)."""
    records = []
    offset = 0
    while offset < len(data):
        if offset + RECORD_HEADER > len(data):
            records.append(data[offset:])
            break
        (length,) = struct.unpack_from("!H", data, offset + 11)
        end = offset + RECORD_HEADER + length
        records.append(data[offset:end])
        offset = end
    return records


def pack_datagrams(records: Sequence[bytes], mtu: int) -> list[bytes]:
    """Put whole records into as few datagrams of at most ``mtu`` bytes as possible, in order."""
    datagrams: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


class DtlsSrtpSession:
    """One DTLS association carrying the SRTP key exchange; see the module docstring."""

    def __init__(
        self,
        certificate: DtlsCertificate,
        role: DtlsRole,
        remote_fingerprints: Sequence[Fingerprint],
        *,
        profiles: Sequence[SrtpProfile] = DEFAULT_PROFILES,
        mtu: int = DEFAULT_MTU,
        label: str = "",
    ) -> None:
        if not remote_fingerprints:
            raise ValueError("the remote certificate must be pinned by at least one fingerprint")
        if not profiles:
            raise ValueError("offer at least one SRTP profile")
        self.role = role
        self.remote_fingerprints = tuple(remote_fingerprints)
        self.profiles = tuple(profiles)
        self.mtu = mtu
        self.state = DtlsState.NEW
        self.keys: SrtpKeyingMaterial | None = None
        self._label = label
        self._fingerprint_mismatch = False
        self._deadline: float | None = None
        self._outgoing: list[bytes] = []
        self._events: deque[DtlsEvent] = deque()

        context = SSL.Context(SSL.DTLS_METHOD)
        context.set_min_proto_version(DTLS1_2_VERSION)
        context.set_max_proto_version(DTLS1_2_VERSION)
        context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU | SSL.OP_NO_RENEGOTIATION)
        context.set_cipher_list(CIPHERS)
        context.use_certificate(certificate.certificate)
        context.use_privatekey(certificate.private_key)
        context.check_privatekey()
        # RFC 5763 §5: both sides send certificates; self-signed is expected, the pin decides.
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        context.set_tlsext_use_srtp(b":".join(p.openssl_name for p in self.profiles))
        self._ssl = SSL.Connection(context, None)
        self._ssl.set_ciphertext_mtu(mtu)
        if role is DtlsRole.SERVER:
            self._ssl.set_accept_state()
        else:
            self._ssl.set_connect_state()

    # -- entry points -----------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: a client sends its ClientHello; a server waits for one."""
        if self.state is not DtlsState.NEW:
            return
        self._transition(Trigger.START)
        if self.role is DtlsRole.CLIENT:
            self._handshake(now)

    def receive_datagram(self, data: bytes, now: float) -> None:
        """A DTLS datagram from the peer (first byte 20-63, RFC 7983)."""
        if self.state is DtlsState.NEW:
            self.start(now)
        if not data or self.state not in (DtlsState.CONNECTING, DtlsState.CONNECTED):
            return
        self._ssl.bio_write(data)
        if self.state is DtlsState.CONNECTING:
            self._handshake(now)
        if self.state is DtlsState.CONNECTED:
            self._read_application_data(now)

    def send_application_data(self, data: bytes) -> None:
        """Encrypt application data (SCTP for data channels) for the peer."""
        if self.state is not DtlsState.CONNECTED:
            raise RuntimeError("DTLS is not connected")
        self._ssl.send(data)
        self._flush()

    def close(self, now: float) -> None:
        """Send close_notify if connected and stop; no event follows a local close."""
        if self.state is DtlsState.CLOSED:
            return
        if self.state is DtlsState.CONNECTED:
            self._shutdown()
        self._deadline = None
        self._transition(Trigger.CLOSE)

    def datagrams_to_send(self) -> list[bytes]:
        datagrams, self._outgoing = self._outgoing, []
        return datagrams

    def next_event(self) -> DtlsEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When to call :meth:`handle_timer`: OpenSSL's retransmission timer, on the caller's clock."""
        return self._deadline

    def handle_timer(self, now: float) -> None:
        """RFC 6347 §4.2.4: retransmit the last flight when its timer expired."""
        if self._deadline is None or now < self._deadline or self.state is not DtlsState.CONNECTING:
            return
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:  # too many retransmissions
            self._fail(DtlsFailure.PROTOCOL_ERROR, _describe(exc))
            return
        self._flush()
        self._arm(now)

    # -- internals --------------------------------------------------------------------------------

    def _verify(self, connection: SSL.Connection, x509: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        """OpenSSL's verify callback: only the leaf certificate's fingerprint matters."""
        if depth != 0:  # pragma: no cover - browsers send one self-signed certificate, no chain
            return True
        if fingerprint_matches(x509.to_cryptography(), self.remote_fingerprints):
            return True
        self._fingerprint_mismatch = True
        return False

    def _handshake(self, now: float) -> None:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            self._flush()
            self._arm(now)
            return
        except SSL.Error as exc:
            self._flush()  # the alert OpenSSL queued
            if self._fingerprint_mismatch:
                self._fail(DtlsFailure.FINGERPRINT_MISMATCH, "")
            else:
                self._fail(DtlsFailure.PROTOCOL_ERROR, _describe(exc))
            return
        self._flush()
        self._arm(now)
        self._complete()

    def _complete(self) -> None:
        certificate = self._ssl.get_peer_certificate(as_cryptography=True)
        if certificate is None:  # pragma: no cover - VERIFY_FAIL_IF_NO_PEER_CERT refuses that earlier
            self._shutdown()
            self._fail(DtlsFailure.NO_CERTIFICATE, "")
            return
        if not fingerprint_matches(certificate, self.remote_fingerprints):  # pragma: no cover
            # The verify callback already refused it; this guards a future change of that path.
            self._shutdown()
            self._fail(DtlsFailure.FINGERPRINT_MISMATCH, "")
            return
        selected = self._ssl.get_selected_srtp_profile()
        profile = next((p for p in self.profiles if p.openssl_name == selected), None)
        if profile is None:
            self._shutdown()
            self._fail(DtlsFailure.NO_SRTP_PROFILE, selected.decode(errors="replace"))
            return
        material = self._ssl.export_keying_material(EXPORTER_LABEL, profile.keying_material_length)
        self.keys = SrtpKeyingMaterial.split(profile, material)
        self._transition(Trigger.HANDSHAKE_DONE)
        self._events.append(
            HandshakeCompleted(
                profile=profile,
                keys=self.keys,
                remote_fingerprint=certificate_fingerprint(certificate, "sha-256"),
                cipher=self._ssl.get_cipher_name() or "",
                version=self._ssl.get_protocol_version_name(),
            )
        )

    def _read_application_data(self, now: float) -> None:
        while True:
            try:
                data = self._ssl.recv(65536)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._flush()
                self._deadline = None
                self._transition(Trigger.CLOSE)
                self._events.append(DtlsClosed())
                return
            except SSL.Error as exc:
                self._flush()
                self._fail(DtlsFailure.PROTOCOL_ERROR, _describe(exc))
                return
            self._events.append(ApplicationData(data))
        # A retransmitted final flight of the peer makes OpenSSL resend ours.
        self._flush()

    def _shutdown(self) -> None:
        with contextlib.suppress(SSL.Error):  # nothing more to do on a broken association
            self._ssl.shutdown()
        self._flush()

    def _fail(self, reason: DtlsFailure, detail: str) -> None:
        self._deadline = None
        logger.info("dtls[%s] handshake failed: %s %s", self._label, reason.name, detail)
        self._transition(Trigger.FAILURE)
        self._events.append(HandshakeFailed(reason, detail))

    def _flush(self) -> None:
        chunks = []
        while True:
            try:
                chunk = self._ssl.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        if chunks:
            self._outgoing += pack_datagrams(split_records(b"".join(chunks)), self.mtu)

    def _arm(self, now: float) -> None:
        left = self._ssl.DTLSv1_get_timeout()
        self._deadline = None if left is None else now + left

    def _transition(self, trigger: Trigger) -> None:
        previous = self.state
        try:
            self.state = TRANSITIONS[(previous, trigger)]
        except KeyError:  # pragma: no cover - callers check the state first
            raise RuntimeError(f"no DTLS transition from {previous} on {trigger}") from None
        logger.debug("dtls[%s] %s -> %s (%s)", self._label, previous.value, self.state.value, trigger.value)


def _describe(exc: SSL.Error) -> str:
    """OpenSSL's reason strings (no key material is ever in them)."""
    parts: list[Any] = list(exc.args[0]) if exc.args and isinstance(exc.args[0], list) else list(exc.args)
    return "; ".join(str(p[-1]) if isinstance(p, tuple) and p else str(p) for p in parts)[:200]
