"""DTLS-SRTP protection profiles and the split of the exported keying material (RFC 5764 §4.2).

The keying material exported with label ``EXTRACTOR-dtls_srtp`` (RFC 5705, RFC 5764 §4.2) is laid
out as ``client_write_key | server_write_key | client_write_salt | server_write_salt``; the client
protects what it sends with the client keys and the server with the server keys.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

#: RFC 5764 §4.2: the exporter label for DTLS-SRTP.
EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"


class SrtpProfile(enum.Enum):
    """SRTP protection profiles the SFU negotiates, as OpenSSL names them.

    * ``SRTP_AEAD_AES_128_GCM``: RFC 7714 §14.2, profile 0x0007; 16-byte key, 12-byte salt.
    * ``SRTP_AES128_CM_SHA1_80``: RFC 5764 §4.1.2, profile 0x0001; 16-byte key, 14-byte salt.
    """

    AEAD_AES_128_GCM = "SRTP_AEAD_AES_128_GCM"
    AES128_CM_SHA1_80 = "SRTP_AES128_CM_SHA1_80"

    @property
    def openssl_name(self) -> bytes:
        return self.value.encode()

    @property
    def profile_id(self) -> int:
        """The ``SRTPProtectionProfile`` number on the wire (RFC 5764 §4.1.2, RFC 7714 §14.2)."""
        return 0x0007 if self is SrtpProfile.AEAD_AES_128_GCM else 0x0001

    @property
    def key_length(self) -> int:
        return 16

    @property
    def salt_length(self) -> int:
        return 12 if self is SrtpProfile.AEAD_AES_128_GCM else 14

    @property
    def material_length(self) -> int:
        """How many bytes to export: two keys and two salts."""
        return 2 * (self.key_length + self.salt_length)


#: The SFU's preference: AEAD first (cheaper, and authenticates with a 16-byte tag), then the
#: profile every WebRTC implementation must support (RFC 8827 §6.5).
DEFAULT_PROFILES = (SrtpProfile.AEAD_AES_128_GCM, SrtpProfile.AES128_CM_SHA1_80)


@dataclass(frozen=True, slots=True)
class SrtpKeyingMaterial:
    """Master keys and salts for both directions, from this endpoint's point of view.

    ``local_*`` protects what this endpoint sends, ``remote_*`` unprotects what it receives. Never
    log them (``repr`` hides them).
    """

    profile: SrtpProfile
    local_key: bytes = field(repr=False)
    local_salt: bytes = field(repr=False)
    remote_key: bytes = field(repr=False)
    remote_salt: bytes = field(repr=False)

    @classmethod
    def split(cls, profile: SrtpProfile, material: bytes, *, is_server: bool) -> SrtpKeyingMaterial:
        """RFC 5764 §4.2: cut the exported block into the client and server keys and salts."""
        k, s = profile.key_length, profile.salt_length
        if len(material) != 2 * (k + s):
            raise ValueError(f"{profile.value} needs {2 * (k + s)} bytes of keying material")
        client_key, server_key = material[:k], material[k : 2 * k]
        client_salt, server_salt = material[2 * k : 2 * k + s], material[2 * k + s :]
        if is_server:
            return cls(profile, server_key, server_salt, client_key, client_salt)
        return cls(profile, client_key, client_salt, server_key, server_salt)

    @property
    def local_master(self) -> bytes:
        """Key followed by salt, the form libsrtp takes for a policy."""
        return self.local_key + self.local_salt

    @property
    def remote_master(self) -> bytes:
        return self.remote_key + self.remote_salt
