"""DTLS-SRTP for the SFU (RFC 5764, RFC 5763): certificates, the handshake, the SRTP keys.

* :mod:`.certificate`: self-signed ECDSA certificate and RFC 8122 fingerprints;
* :mod:`.session`: :class:`DtlsSrtpSession`, the sans-I/O handshake over OpenSSL memory BIOs;
* protection profiles and the RFC 5764 §4.2 key split come from :mod:`meet443.proto.rtp.srtp`;
* :mod:`.events`: what a session reports.
"""

from meet443.proto.dtls.certificate import DtlsCertificate, certificate_fingerprint
from meet443.proto.dtls.events import (
    ApplicationData,
    DtlsClosed,
    DtlsEvent,
    DtlsFailure,
    HandshakeCompleted,
    HandshakeFailed,
)
from meet443.proto.dtls.session import DtlsRole, DtlsSrtpSession, DtlsState
from meet443.proto.rtp.srtp import SrtpKeyingMaterial, SrtpProfile

__all__ = [
    "ApplicationData",
    "DtlsCertificate",
    "DtlsClosed",
    "DtlsEvent",
    "DtlsFailure",
    "DtlsRole",
    "DtlsSrtpSession",
    "DtlsState",
    "HandshakeCompleted",
    "HandshakeFailed",
    "SrtpKeyingMaterial",
    "SrtpProfile",
    "certificate_fingerprint",
]
