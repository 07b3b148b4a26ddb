"""DTLS-SRTP keying (RFC 5764 §4.2) and SRTP/SRTCP protection through the typed wrapper (RFC 3711,
RFC 7714): a real DTLS handshake in memory, aiortc's key split as an oracle, tampering and replay."""

from __future__ import annotations

import contextlib
import datetime

import pylibsrtp
import pytest
from aiortc import rtcdtlstransport
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from meet443.exceptions import ParseError
from meet443.proto.rtp.packet import RtpPacket
from meet443.proto.rtp.rtcp import PictureLossIndication, SenderReport, parse_rtcp, serialize_rtcp
from meet443.proto.rtp.srtp import EXPORTER_LABEL, SrtpKeyingMaterial, SrtpProfile, SrtpSession

PROFILES = [SrtpProfile.AES128_CM_SHA1_80, SrtpProfile.AEAD_AES_128_GCM]
AIORTC_PROFILES = {
    SrtpProfile.AES128_CM_SHA1_80: rtcdtlstransport.SRTP_AES128_CM_SHA1_80,
    SrtpProfile.AEAD_AES_128_GCM: rtcdtlstransport.SRTP_AEAD_AES_128_GCM,
}


def sessions(profile: SrtpProfile) -> tuple[SrtpSession, SrtpSession]:
    material = SrtpKeyingMaterial.split(profile, bytes(range(profile.keying_material_length)))
    return (
        SrtpSession.from_keying_material(material, client=True),
        SrtpSession.from_keying_material(material, client=False),
    )


def rtp(seq: int, size: int = 1100) -> bytes:
    return bytes(RtpPacket(96, seq, seq * 3000, 0x1234, bytes(size - 12)))


class TestRfc5764KeyingMaterial:
    """RFC 5764 §4.2."""

    @pytest.mark.parametrize("profile", PROFILES)
    def test_layout_same_as_aiortc(self, profile: SrtpProfile) -> None:
        material = bytes(range(profile.keying_material_length))
        keys = SrtpKeyingMaterial.split(profile, material)
        key, salt = profile.key_length, profile.salt_length
        # client_write_key | server_write_key | client_write_salt | server_write_salt
        assert keys.client_write_key == material[:key]
        assert keys.server_write_key == material[key : 2 * key]
        assert keys.client_write_salt == material[2 * key : 2 * key + salt]
        assert keys.server_write_salt == material[2 * key + salt :]
        oracle = AIORTC_PROFILES[profile]
        assert keys.master(client=True) == oracle.get_key_and_salt(material, 0)
        assert keys.master(client=False) == oracle.get_key_and_salt(material, 1)

    def test_lengths(self) -> None:
        assert SrtpProfile.AES128_CM_SHA1_80.keying_material_length == 60
        assert SrtpProfile.AEAD_AES_128_GCM.keying_material_length == 56
        with pytest.raises(ValueError, match="56 bytes"):
            SrtpKeyingMaterial.split(SrtpProfile.AEAD_AES_128_GCM, bytes(60))
        with pytest.raises(ValueError, match="30 bytes"):
            SrtpSession(SrtpProfile.AES128_CM_SHA1_80, local_master=bytes(28), remote_master=bytes(30))

    def test_keys_stay_out_of_repr(self) -> None:
        keys = SrtpKeyingMaterial.split(SrtpProfile.AES128_CM_SHA1_80, b"\xab" * 60)
        assert repr(keys) == "SrtpKeyingMaterial(profile=<SrtpProfile.AES128_CM_SHA1_80: 1>)"

    def test_openssl_names(self) -> None:
        for profile in PROFILES:
            assert SrtpProfile.from_openssl_name(profile.openssl_name) is profile
        with pytest.raises(ParseError):
            SrtpProfile.from_openssl_name(b"SRTP_NULL_NULL")

    @pytest.mark.parametrize("profile", PROFILES)
    def test_real_dtls_handshake(self, profile: SrtpProfile) -> None:
        """Two pyOpenSSL DTLS endpoints in memory negotiate use_srtp, export RFC 5705 keying
        material, and the sessions built from it on each side understand each other."""
        client, server = _dtls_pair(profile)
        assert (
            client.get_selected_srtp_profile() == server.get_selected_srtp_profile() == profile.openssl_name
        )
        material = client.export_keying_material(EXPORTER_LABEL, profile.keying_material_length)
        assert server.export_keying_material(EXPORTER_LABEL, profile.keying_material_length) == material
        selected = SrtpProfile.from_openssl_name(client.get_selected_srtp_profile())
        keys = SrtpKeyingMaterial.split(selected, material)
        ours = SrtpSession.from_keying_material(keys, client=True)
        theirs = SrtpSession.from_keying_material(keys, client=False)
        assert theirs.unprotect(ours.protect(rtp(1))) == rtp(1)
        assert ours.unprotect(theirs.protect(rtp(2))) == rtp(2)


class TestRfc3711Protection:
    @pytest.mark.parametrize("profile", PROFILES)
    def test_round_trip_rtp_and_rtcp(self, profile: SrtpProfile) -> None:
        client, server = sessions(profile)
        for seq in range(5):
            protected = client.protect(rtp(seq))
            assert protected != rtp(seq)
            assert len(protected) == 1100 + (10 if profile is SrtpProfile.AES128_CM_SHA1_80 else 16)
            assert server.unprotect(protected) == rtp(seq)
        compound = serialize_rtcp([SenderReport(0x1234, 1, 2, 3, 4), PictureLossIndication(0x1234, 5)])
        assert parse_rtcp(client.unprotect_rtcp(server.protect_rtcp(compound))) == parse_rtcp(compound)

    @pytest.mark.parametrize("profile", PROFILES)
    def test_tampering_is_a_parse_error(self, profile: SrtpProfile) -> None:
        client, server = sessions(profile)
        protected = bytearray(client.protect(rtp(1)))
        protected[40] ^= 1
        with pytest.raises(ParseError, match="SRTP"):
            server.unprotect(bytes(protected))
        rtcp = bytearray(client.protect_rtcp(bytes(SenderReport(1, 2, 3, 4, 5))))
        rtcp[10] ^= 1
        with pytest.raises(ParseError, match="SRTCP"):
            server.unprotect_rtcp(bytes(rtcp))

    @pytest.mark.parametrize("profile", PROFILES)
    def test_replay_is_a_parse_error(self, profile: SrtpProfile) -> None:
        client, server = sessions(profile)
        protected = client.protect(rtp(7))
        server.unprotect(protected)
        with pytest.raises(ParseError, match="replay"):
            server.unprotect(protected)
        rtcp = client.protect_rtcp(bytes(SenderReport(1, 2, 3, 4, 5)))
        server.unprotect_rtcp(rtcp)
        with pytest.raises(ParseError, match="replay"):
            server.unprotect_rtcp(rtcp)

    def test_wrong_direction_fails(self) -> None:
        client, _ = sessions(SrtpProfile.AEAD_AES_128_GCM)
        with pytest.raises(ParseError):
            client.unprotect(client.protect(rtp(1)))

    def test_retransmission_with_the_same_sequence_number(self) -> None:
        """RFC 4585 NACK without RTX resends the packet as it was: protect must allow it."""
        client, server = sessions(SrtpProfile.AES128_CM_SHA1_80)
        first = client.protect(rtp(3))
        assert client.protect(rtp(3)) == first
        assert server.unprotect(first) == rtp(3)

    @pytest.mark.parametrize("garbage", [b"", b"\x80", bytes(11), rtp(1)[:20], bytes(1600)])
    def test_garbage_is_a_parse_error(self, garbage: bytes) -> None:
        _, server = sessions(SrtpProfile.AES128_CM_SHA1_80)
        with pytest.raises(ParseError):
            server.unprotect(garbage)
        with pytest.raises(ParseError):
            server.unprotect_rtcp(garbage)


def _dtls_pair(profile: SrtpProfile) -> tuple[SSL.Connection, SSL.Connection]:
    def context() -> SSL.Context:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meet443-test")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.use_certificate(cert)
        ctx.use_privatekey(key)
        ctx.set_tlsext_use_srtp(profile.openssl_name)
        return ctx

    client = SSL.Connection(context(), None)
    client.set_connect_state()
    server = SSL.Connection(context(), None)
    server.set_accept_state()
    for _ in range(10):
        for connection in (client, server):
            with contextlib.suppress(SSL.WantReadError):
                connection.do_handshake()
        for source, sink in ((client, server), (server, client)):
            while True:
                try:
                    sink.bio_write(source.bio_read(65536))
                except SSL.WantReadError:
                    break
    return client, server


class TestProtectThroughLibsrtpDirectly:
    """SrtpSession.protect calls libsrtp itself (the per-copy path); pylibsrtp's own Session.protect
    with the same keys is the oracle."""

    @pytest.mark.parametrize("profile", PROFILES)
    def test_same_bytes_as_pylibsrtp(self, profile: SrtpProfile) -> None:
        material = SrtpKeyingMaterial.split(profile, bytes(range(profile.keying_material_length)))
        ours = SrtpSession.from_keying_material(material, client=True)
        oracle = pylibsrtp.Session(
            ours._policy(material.master(client=True), pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        for seq, size in ((1, 1100), (2, 12), (3, 1356), (3, 1100)):
            assert ours.protect(rtp(seq, size)) == oracle.protect(rtp(seq, size))

    def test_too_long_for_the_buffer(self) -> None:
        client, server = sessions(SrtpProfile.AEAD_AES_128_GCM)
        assert server.unprotect(client.protect(rtp(1, 1356))) == rtp(1, 1356)
        with pytest.raises(ValueError, match="too long"):
            client.protect(rtp(2, 1357))

    def test_a_libsrtp_error_raises(self) -> None:
        client, _ = sessions(SrtpProfile.AEAD_AES_128_GCM)
        with pytest.raises(pylibsrtp.Error):
            client.protect(b"\x80")  # shorter than an RTP header: libsrtp refuses it
