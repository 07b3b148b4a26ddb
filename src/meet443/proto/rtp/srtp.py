"""DTLS-SRTP keys (RFC 5764 §4.2) and a typed wrapper over pylibsrtp (RFC 3711, RFC 7714).

The DTLS layer exports ``2 * (key + salt)`` bytes with the label ``EXTRACTOR-dtls_srtp`` (RFC 5705)
and hands them to :meth:`SrtpKeyingMaterial.split`; :class:`SrtpSession` then protects what this
side sends and unprotects what it receives. Failures on received packets (authentication, replay,
garbage) raise :class:`~meet443.exceptions.ParseError`, like every other parser, so the server loop
drops and counts them.

Keys never appear in ``repr`` or logs (docs/STYLE.md §7).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Self

import pylibsrtp
from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]

from meet443.exceptions import ParseError

#: RFC 5764 §4.2: the RFC 5705 exporter label for SRTP keying material.
EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"
#: libsrtp's replay window (packets). 1024 absorbs the reordering of retransmissions at video rates.
REPLAY_WINDOW = 1024
#: The longest RTP packet :meth:`SrtpSession.protect` takes: pylibsrtp's 1,500-byte buffer less
#: the largest SRTP trailer (its ``SRTP_MAX_TRAILER_LEN``).
_PROTECT_LIMIT = 1500 - pylibsrtp.SRTP_MAX_TRAILER_LEN


class SrtpProfile(enum.Enum):
    """RFC 5764 §4.1.2 / RFC 7714 §14.2 DTLS-SRTP protection profiles (value: the use_srtp id)."""

    AES128_CM_SHA1_80 = 0x0001
    AEAD_AES_128_GCM = 0x0007

    @property
    def profile_id(self) -> int:
        """The ``SRTPProtectionProfile`` number on the wire (RFC 5764 §4.1.2, RFC 7714 §14.2)."""
        return self.value

    @property
    def key_length(self) -> int:
        return 16

    @property
    def salt_length(self) -> int:
        # RFC 3711 §8.2: 112-bit salt for AES-CM; RFC 7714 §12: 96-bit salt for AES-GCM.
        return 14 if self is SrtpProfile.AES128_CM_SHA1_80 else 12

    @property
    def openssl_name(self) -> bytes:
        """The name OpenSSL's ``set_tlsext_use_srtp`` and ``get_selected_srtp_profile`` use."""
        return (
            b"SRTP_AES128_CM_SHA1_80" if self is SrtpProfile.AES128_CM_SHA1_80 else b"SRTP_AEAD_AES_128_GCM"
        )

    @property
    def keying_material_length(self) -> int:
        """How many bytes to export: both sides' master keys and salts (RFC 5764 §4.2)."""
        return 2 * (self.key_length + self.salt_length)

    @classmethod
    def from_openssl_name(cls, name: bytes) -> SrtpProfile:
        for profile in cls:
            if profile.openssl_name == name:
                return profile
        raise ParseError(f"unsupported SRTP profile {name!r}")

    def _libsrtp(self) -> int:
        if self is SrtpProfile.AES128_CM_SHA1_80:
            return int(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
        return int(pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM)


#: The SFU's preference: AEAD first (cheaper, and authenticates with a 16-byte tag), then the
#: profile every WebRTC implementation must support (RFC 8827 §6.5).
DEFAULT_PROFILES = (SrtpProfile.AEAD_AES_128_GCM, SrtpProfile.AES128_CM_SHA1_80)


@dataclass(frozen=True, slots=True)
class SrtpKeyingMaterial:
    """RFC 5764 §4.2: the four values the exported keying material is cut into."""

    profile: SrtpProfile
    client_write_key: bytes = field(repr=False)
    server_write_key: bytes = field(repr=False)
    client_write_salt: bytes = field(repr=False)
    server_write_salt: bytes = field(repr=False)

    @classmethod
    def split(cls, profile: SrtpProfile, material: bytes) -> Self:
        """Cut ``client key | server key | client salt | server salt`` (RFC 5764 §4.2)."""
        key, salt = profile.key_length, profile.salt_length
        if len(material) != profile.keying_material_length:
            raise ValueError(
                f"{profile.name} needs {profile.keying_material_length} bytes of keying material"
            )
        return cls(
            profile,
            material[:key],
            material[key : 2 * key],
            material[2 * key : 2 * key + salt],
            material[2 * key + salt :],
        )

    def master(self, *, client: bool) -> bytes:
        """The master key and salt (concatenated, as libsrtp takes them) that one side writes with."""
        if client:
            return self.client_write_key + self.client_write_salt
        return self.server_write_key + self.server_write_salt


class SrtpSession:
    """One side of a DTLS-SRTP association: protect with our write key, unprotect with the peer's.

    ``protect``/``protect_rtcp`` take unprotected packets; retransmitting a packet with the same
    sequence number is allowed (RFC 4585 NACK without RTX). pylibsrtp copies into a 1500-byte
    buffer, so a packet plus its SRTP trailer must fit in 1500 bytes.
    """

    __slots__ = ("_rx", "_tx", "_tx_buffer", "_tx_cdata", "_tx_length", "_tx_srtp", "profile")

    def __init__(self, profile: SrtpProfile, *, local_master: bytes, remote_master: bytes) -> None:
        self.profile = profile
        self._tx = pylibsrtp.Session(self._policy(local_master, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self._rx = pylibsrtp.Session(self._policy(remote_master, pylibsrtp.Policy.SSRC_ANY_INBOUND))
        # protect() runs once per forwarded copy. pylibsrtp's Session.protect wraps libsrtp in
        # Python (checks, a new int* per call, two nested calls) that cost more than the AES-GCM
        # itself: ~3.1 against ~1.8 µs per 1,100-byte packet calling libsrtp through the same cffi
        # binding and the session's own buffer (timeit, bench/sfu_datapath.py "protect"). These
        # are pylibsrtp 1.0's internals (constraints.txt pins it); tests check both ways agree.
        self._tx_srtp = self._tx._srtp[0]
        self._tx_cdata = self._tx._cdata
        self._tx_buffer = self._tx._buffer
        self._tx_length = ffi.new("int *")

    def _policy(self, master: bytes, ssrc_type: int) -> pylibsrtp.Policy:
        expected = self.profile.key_length + self.profile.salt_length
        if len(master) != expected:
            raise ValueError(f"{self.profile.name} master key and salt must be {expected} bytes")
        policy = pylibsrtp.Policy(key=master, ssrc_type=ssrc_type, srtp_profile=self.profile._libsrtp())
        policy.allow_repeat_tx = True
        policy.window_size = REPLAY_WINDOW
        return policy

    @classmethod
    def from_keying_material(cls, material: SrtpKeyingMaterial, *, client: bool) -> Self:
        """The session of the DTLS client (``client=True``) or server, from RFC 5764 §4.2 keys."""
        return cls(
            material.profile,
            local_master=material.master(client=client),
            remote_master=material.master(client=not client),
        )

    def protect(self, packet: bytes) -> bytes:
        """RFC 3711 §3.3: encrypt and authenticate an RTP packet."""
        size = len(packet)
        if size > _PROTECT_LIMIT:
            raise ValueError("packet is too long")
        buffer = self._tx_buffer
        buffer[0:size] = packet
        length = self._tx_length
        length[0] = size
        status = lib.srtp_protect(self._tx_srtp, self._tx_cdata, length)
        if status:
            raise pylibsrtp.Error(f"srtp_protect failed ({status})")
        protected: bytes = buffer[0 : length[0]]
        return protected

    def protect_rtcp(self, packet: bytes) -> bytes:
        """RFC 3711 §3.4: encrypt and authenticate an RTCP (compound) packet."""
        return bytes(self._tx.protect_rtcp(packet))

    def unprotect(self, packet: bytes) -> bytes:
        """RFC 3711 §3.3: verify and decrypt an SRTP packet; ParseError on any failure."""
        try:
            return bytes(self._rx.unprotect(packet))
        except (pylibsrtp.Error, ValueError) as exc:
            raise ParseError(f"SRTP packet rejected: {exc}") from None

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """RFC 3711 §3.4: verify and decrypt an SRTCP packet; ParseError on any failure."""
        try:
            return bytes(self._rx.unprotect_rtcp(packet))
        except (pylibsrtp.Error, ValueError) as exc:
            raise ParseError(f"SRTCP packet rejected: {exc}") from None
