"""What a DTLS-SRTP session tells its caller; read them with ``next_event()`` and ``match``."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meet443.proto.rtp.srtp import SrtpKeyingMaterial, SrtpProfile
from meet443.proto.sdp.attributes import Fingerprint


class DtlsFailure(enum.Enum):
    """Why a handshake failed."""

    FINGERPRINT_MISMATCH = "remote certificate does not match the SDP fingerprint"
    NO_CERTIFICATE = "remote sent no certificate"
    NO_SRTP_PROFILE = "no common SRTP protection profile (RFC 5764 use_srtp)"
    PROTOCOL_ERROR = "DTLS protocol error or alert"


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """RFC 5764 §4: DTLS is up; ``keys`` are the SRTP master keys for both directions."""

    profile: SrtpProfile
    keys: SrtpKeyingMaterial
    #: SHA-256 fingerprint of the certificate the remote presented (it matched the SDP).
    remote_fingerprint: Fingerprint
    cipher: str
    version: str


@dataclass(frozen=True, slots=True)
class HandshakeFailed:
    reason: DtlsFailure
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DtlsClosed:
    """The remote sent close_notify (RFC 5246 §7.2.1), or the caller closed the session."""


@dataclass(frozen=True, slots=True)
class ApplicationData:
    """DTLS application data (SCTP for data channels, RFC 8261); the SFU does not use it yet."""

    data: bytes


DtlsEvent = HandshakeCompleted | HandshakeFailed | DtlsClosed | ApplicationData
