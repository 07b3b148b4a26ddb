"""DTLS-SRTP in memory: two sessions (client and server) handshake through a harness, no sockets.

RFC 5764 (https://www.rfc-editor.org/rfc/rfc5764), RFC 6347 (DTLS 1.2), RFC 8122 (fingerprints).
"""

from __future__ import annotations

import datetime
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from meet443.proto.dtls.certificate import DtlsCertificate, certificate_fingerprint, fingerprint_matches
from meet443.proto.dtls.events import (
    ApplicationData,
    DtlsClosed,
    DtlsEvent,
    DtlsFailure,
    HandshakeCompleted,
    HandshakeFailed,
)
from meet443.proto.dtls.session import (
    TRANSITIONS,
    DtlsRole,
    DtlsSrtpSession,
    DtlsState,
    Trigger,
    pack_datagrams,
    split_records,
)
from meet443.proto.rtp.srtp import SrtpProfile
from meet443.proto.sdp.attributes import Fingerprint, SetupRole, parse_attribute
from tests.proto.turn.harness import FakeClock

NOW = 1_800_000_000.0


def seeded(seed: int) -> Callable[[int], bytes]:
    source = random.Random(seed)
    return source.randbytes


SERVER_CERT = DtlsCertificate.generate(NOW, seeded(1))
CLIENT_CERT = DtlsCertificate.generate(NOW, seeded(2))


@dataclass
class DtlsPair:
    """Two in-memory endpoints and the wire between them (aioquic's client_and_server shape)."""

    client: DtlsSrtpSession
    server: DtlsSrtpSession
    clock: FakeClock

    @classmethod
    def create(
        cls,
        *,
        client_pins: Sequence[Fingerprint] | None = None,
        server_pins: Sequence[Fingerprint] | None = None,
        client_profiles: Sequence[SrtpProfile] = (
            SrtpProfile.AEAD_AES_128_GCM,
            SrtpProfile.AES128_CM_SHA1_80,
        ),
        server_profiles: Sequence[SrtpProfile] = (
            SrtpProfile.AEAD_AES_128_GCM,
            SrtpProfile.AES128_CM_SHA1_80,
        ),
        mtu: int = 1200,
    ) -> DtlsPair:
        client = DtlsSrtpSession(
            CLIENT_CERT,
            DtlsRole.CLIENT,
            client_pins or [SERVER_CERT.fingerprint],
            profiles=client_profiles,
            mtu=mtu,
            label="client",
        )
        server = DtlsSrtpSession(
            SERVER_CERT,
            DtlsRole.SERVER,
            server_pins or [CLIENT_CERT.fingerprint],
            profiles=server_profiles,
            mtu=mtu,
            label="server",
        )
        return cls(client, server, FakeClock(100.0))

    def roundtrip(
        self, rounds: int = 10, drop: Callable[[str, bytes], bool] = lambda side, data: False
    ) -> int:
        """Carry datagrams both ways until both go quiet; return how many crossed."""
        crossed = 0
        for _ in range(rounds):
            moved = False
            for sender, receiver, name in (
                (self.client, self.server, "c>s"),
                (self.server, self.client, "s>c"),
            ):
                for datagram in sender.datagrams_to_send():
                    moved = True
                    if not drop(name, datagram):
                        crossed += 1
                        receiver.receive_datagram(datagram, self.clock.now)
            if not moved:
                break
        return crossed

    def handshake(self) -> tuple[HandshakeCompleted, HandshakeCompleted]:
        self.client.start(self.clock.now)
        self.roundtrip()
        client_event, server_event = self.client.next_event(), self.server.next_event()
        assert isinstance(client_event, HandshakeCompleted), client_event
        assert isinstance(server_event, HandshakeCompleted), server_event
        return client_event, server_event


def state_of(session: DtlsSrtpSession) -> DtlsState:
    """The state, read through a call so that mypy does not carry an earlier narrowing over."""
    return session.state


def drain(session: DtlsSrtpSession) -> list[DtlsEvent]:
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


class TestRfc5764Handshake:
    """RFC 5764 §4.1 use_srtp negotiation and §4.2 key derivation."""

    def test_keys_mirror_each_other(self) -> None:
        pair = DtlsPair.create()
        client_event, server_event = pair.handshake()
        assert pair.client.state is pair.server.state is DtlsState.CONNECTED
        assert client_event.profile is server_event.profile is SrtpProfile.AEAD_AES_128_GCM
        client_keys, server_keys = client_event.keys, server_event.keys
        assert client_keys == server_keys, "both cut the same exported block (RFC 5764 §4.2)"
        assert client_keys.master(client=True) != client_keys.master(client=False)
        assert (len(client_keys.client_write_key), len(client_keys.client_write_salt)) == (16, 12)
        assert pair.server.keys == server_keys
        assert client_event.version == "DTLSv1.2"
        assert "GCM" in client_event.cipher

    def test_remote_fingerprint_in_event(self) -> None:
        client_event, server_event = DtlsPair.create().handshake()
        assert client_event.remote_fingerprint == SERVER_CERT.fingerprint
        assert server_event.remote_fingerprint == CLIENT_CERT.fingerprint

    def test_server_preference_picks_gcm(self) -> None:
        client_first_cm = (SrtpProfile.AES128_CM_SHA1_80, SrtpProfile.AEAD_AES_128_GCM)
        client_event, _ = DtlsPair.create(client_profiles=client_first_cm).handshake()
        assert client_event.profile is SrtpProfile.AEAD_AES_128_GCM

    def test_aes_cm_when_the_client_has_only_that(self) -> None:
        client_event, server_event = DtlsPair.create(
            client_profiles=(SrtpProfile.AES128_CM_SHA1_80,)
        ).handshake()
        assert server_event.profile is SrtpProfile.AES128_CM_SHA1_80
        assert (len(server_event.keys.server_write_key), len(server_event.keys.server_write_salt)) == (16, 14)
        assert client_event.keys == server_event.keys

    def test_no_common_profile_fails_both_sides(self) -> None:
        pair = DtlsPair.create(
            client_profiles=(SrtpProfile.AES128_CM_SHA1_80,), server_profiles=(SrtpProfile.AEAD_AES_128_GCM,)
        )
        pair.client.start(pair.clock.now)
        pair.roundtrip()
        for session in (pair.client, pair.server):
            (event,) = [e for e in drain(session) if isinstance(e, HandshakeFailed)]
            assert event.reason is DtlsFailure.NO_SRTP_PROFILE
            assert session.state is DtlsState.FAILED
            assert session.keys is None

    def test_datagrams_fit_the_mtu(self) -> None:
        pair = DtlsPair.create(mtu=300)
        sizes: list[int] = []

        def record(side: str, data: bytes) -> bool:
            sizes.append(len(data))
            return False

        pair.client.start(pair.clock.now)
        pair.roundtrip(drop=record)
        assert isinstance(pair.client.next_event(), HandshakeCompleted)
        assert max(sizes) <= 300 and len(sizes) > 4

    def test_server_waits_for_the_client(self) -> None:
        pair = DtlsPair.create()
        pair.server.start(pair.clock.now)
        pair.server.start(pair.clock.now)  # a second start changes nothing
        assert pair.server.datagrams_to_send() == [] and pair.server.get_timer() is None
        assert pair.server.state is DtlsState.CONNECTING


class TestRfc8122FingerprintCheck:
    """RFC 8122 §5 / RFC 5763 §5: the certificate must match a fingerprint from the SDP."""

    def wrong(self) -> Fingerprint:
        return Fingerprint("sha-256", bytes(32))

    def test_server_refuses_a_client_with_the_wrong_certificate(self) -> None:
        pair = DtlsPair.create(server_pins=[self.wrong()])
        pair.client.start(pair.clock.now)
        pair.roundtrip()
        (server_event,) = drain(pair.server)
        assert server_event == HandshakeFailed(DtlsFailure.FINGERPRINT_MISMATCH)
        assert pair.server.keys is None and pair.server.state is DtlsState.FAILED
        # The client hears the bad_certificate alert and fails too, without keys.
        (client_event,) = drain(pair.client)
        assert isinstance(client_event, HandshakeFailed)
        assert client_event.reason is DtlsFailure.PROTOCOL_ERROR
        assert pair.client.keys is None

    def test_client_refuses_a_server_with_the_wrong_certificate(self) -> None:
        pair = DtlsPair.create(client_pins=[self.wrong()])
        pair.client.start(pair.clock.now)
        pair.roundtrip()
        assert drain(pair.client) == [HandshakeFailed(DtlsFailure.FINGERPRINT_MISMATCH)]
        assert not any(isinstance(e, HandshakeCompleted) for e in drain(pair.server))

    @pytest.mark.parametrize("algorithm", ["sha-1", "sha-224", "sha-384", "sha-512", "SHA-256"])
    def test_other_hash_functions(self, algorithm: str) -> None:
        pin = certificate_fingerprint(CLIENT_CERT.certificate, algorithm)
        DtlsPair.create(server_pins=[pin]).handshake()

    def test_one_matching_fingerprint_among_several_is_enough(self) -> None:
        DtlsPair.create(server_pins=[self.wrong(), CLIENT_CERT.fingerprint]).handshake()

    def test_unsupported_hash_never_matches(self) -> None:
        md5 = Fingerprint("md5", bytes(16))
        assert not fingerprint_matches(CLIENT_CERT.certificate, [md5])
        with pytest.raises(ValueError):
            certificate_fingerprint(CLIENT_CERT.certificate, "md5")

    def test_a_pin_is_required(self) -> None:
        with pytest.raises(ValueError):
            DtlsSrtpSession(SERVER_CERT, DtlsRole.SERVER, [])
        with pytest.raises(ValueError):
            DtlsSrtpSession(SERVER_CERT, DtlsRole.SERVER, [CLIENT_CERT.fingerprint], profiles=())


class TestRfc6347Retransmission:
    """RFC 6347 §4.2.4: timers and repeated flights. OpenSSL's timer runs on the wall clock, so these
    tests wait for it (its first timeout is 1 s)."""

    def test_timer_is_reported_on_the_callers_clock(self) -> None:
        pair = DtlsPair.create()
        assert pair.client.get_timer() is None
        pair.client.start(500.0)
        timer = pair.client.get_timer()
        assert timer is not None and 500.5 < timer <= 501.0
        assert len(pair.client.datagrams_to_send()) == 1  # the ClientHello
        pair.client.handle_timer(500.1)  # not due: nothing happens
        assert pair.client.datagrams_to_send() == []

    def test_lost_client_hello_is_sent_again(self) -> None:
        pair = DtlsPair.create()
        pair.client.start(pair.clock.now)
        (hello,) = pair.client.datagrams_to_send()  # lost
        time.sleep(1.05)
        pair.client.handle_timer(pair.clock.advance(1.05))
        (again,) = pair.client.datagrams_to_send()
        assert again[0] == hello[0] == 22  # a handshake record
        pair.server.receive_datagram(again, pair.clock.now)
        pair.roundtrip()
        assert isinstance(pair.client.next_event(), HandshakeCompleted)

    def test_lost_final_flight_is_answered_again_after_the_handshake(self) -> None:
        """The server is done after its last flight; the client's repeat makes it send that again."""
        pair = DtlsPair.create()
        pair.client.start(pair.clock.now)
        pair.roundtrip(drop=lambda side, data: side == "s>c" and data[0] == 20)  # CCS + Finished lost
        assert pair.server.state is DtlsState.CONNECTED
        assert pair.client.keys is None
        time.sleep(1.05)
        pair.client.handle_timer(pair.clock.advance(1.05))
        pair.roundtrip()
        client_event = pair.client.next_event()
        assert isinstance(client_event, HandshakeCompleted)
        server_keys = pair.server.keys
        assert server_keys is not None
        assert client_event.keys == server_keys

    def test_handle_timer_does_nothing_once_connected(self) -> None:
        pair = DtlsPair.create()
        pair.handshake()
        pair.client.handle_timer(pair.clock.advance(100))
        assert pair.client.datagrams_to_send() == [] and pair.client.get_timer() is None


class TestAfterTheHandshake:
    def test_application_data_both_ways(self) -> None:
        pair = DtlsPair.create()
        pair.handshake()
        pair.client.send_application_data(b"sctp from client")
        pair.server.send_application_data(b"sctp from server")
        pair.roundtrip()
        assert drain(pair.server) == [ApplicationData(b"sctp from client")]
        assert drain(pair.client) == [ApplicationData(b"sctp from server")]

    def test_close_notify(self) -> None:
        pair = DtlsPair.create()
        pair.handshake()
        pair.client.close(pair.clock.now)
        assert pair.client.state is DtlsState.CLOSED
        pair.roundtrip()
        assert drain(pair.server) == [DtlsClosed()]
        assert pair.server.state is DtlsState.CLOSED
        pair.server.receive_datagram(b"\x17\xfe\xfd" + bytes(20), pair.clock.now)  # ignored now
        pair.client.close(pair.clock.now)  # twice is fine
        assert drain(pair.client) == []

    def test_send_before_connected(self) -> None:
        with pytest.raises(RuntimeError):
            DtlsPair.create().client.send_application_data(b"x")

    def test_close_before_start(self) -> None:
        pair = DtlsPair.create()
        pair.server.close(0.0)
        assert pair.server.state is DtlsState.CLOSED
        pair.server.receive_datagram(b"\x16\xfe\xfd", 0.0)
        assert pair.server.datagrams_to_send() == []

    def test_garbage_after_the_handshake_is_discarded(self) -> None:
        """RFC 6347 §4.1.2.7: invalid records are silently discarded."""
        pair = DtlsPair.create()
        pair.handshake()
        pair.server.receive_datagram(
            b"\x17\xfe\xfd\x00\x01" + bytes(6) + b"\x00\x10" + bytes(16), pair.clock.now
        )
        assert pair.server.state is DtlsState.CONNECTED and drain(pair.server) == []

    def test_a_failed_session_stops_its_timer_and_ignores_datagrams(self) -> None:
        pair = DtlsPair.create(server_pins=[Fingerprint("sha-256", bytes(32))])
        pair.client.start(0.0)
        pair.roundtrip()
        assert pair.client.state is DtlsState.FAILED  # on the server's bad_certificate alert
        assert pair.client.get_timer() is None
        drain(pair.client)
        pair.client.receive_datagram(b"\x16\xfe\xfd" + bytes(20), 1.0)
        pair.client.handle_timer(100.0)
        assert pair.client.datagrams_to_send() == [] and drain(pair.client) == []
        pair.client.close(2.0)
        assert state_of(pair.client) is DtlsState.CLOSED


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_before_the_handshake_never_raises(data: bytes) -> None:
    pair = DtlsPair.create()
    pair.server.receive_datagram(data, 0.0)
    pair.client.start(0.0)
    pair.roundtrip()
    # Either the garbage was discarded and the handshake went through, or the server failed cleanly.
    if pair.server.state is DtlsState.FAILED:
        assert isinstance(drain(pair.server)[-1], HandshakeFailed)
    else:
        assert pair.server.state is DtlsState.CONNECTED


class TestProfiles:
    """The key split itself is tested with the SRTP sessions (tests/proto/rtp/test_srtp.py)."""

    def test_profile_ids_and_lengths(self) -> None:
        assert SrtpProfile.AES128_CM_SHA1_80.profile_id == 0x0001  # RFC 5764 §4.1.2
        assert SrtpProfile.AEAD_AES_128_GCM.profile_id == 0x0007  # RFC 7714 §14.2
        assert SrtpProfile.AEAD_AES_128_GCM.keying_material_length == 56
        assert SrtpProfile.AES128_CM_SHA1_80.keying_material_length == 60


class TestCertificate:
    def test_generated_certificate(self) -> None:
        certificate = SERVER_CERT.certificate
        assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
        assert isinstance(certificate.public_key().curve, ec.SECP256R1)  # type: ignore[union-attr]
        assert certificate.issuer == certificate.subject
        start = datetime.datetime.fromtimestamp(NOW, datetime.UTC)
        assert certificate.not_valid_before_utc == start - datetime.timedelta(days=1)
        assert certificate.not_valid_after_utc == start + datetime.timedelta(days=30)
        assert 0 < certificate.serial_number < 2**63
        assert DtlsCertificate.generate(NOW, seeded(1)).certificate.serial_number == certificate.serial_number
        assert "private_key" not in repr(SERVER_CERT)

    def test_fingerprint_is_sha256_of_der_in_rfc8122_form(self) -> None:
        der = SERVER_CERT.certificate.public_bytes(Encoding.DER)
        digest = hashes.Hash(hashes.SHA256())
        digest.update(der)
        expected = digest.finalize()
        assert SERVER_CERT.fingerprint == Fingerprint("sha-256", expected)
        line = str(SERVER_CERT.fingerprint)
        assert line == "fingerprint:sha-256 " + ":".join(f"{b:02X}" for b in expected)
        assert parse_attribute(line) == SERVER_CERT.fingerprint

    def test_zero_serial_is_avoided(self) -> None:
        certificate = DtlsCertificate.generate(NOW, bytes).certificate
        assert certificate.serial_number == 1
        assert isinstance(certificate, x509.Certificate)


class TestRecords:
    def test_split_and_pack(self) -> None:
        record = bytes([22, 0xFE, 0xFD]) + bytes(8) + (3).to_bytes(2, "big") + b"abc"
        assert split_records(record * 3) == [record] * 3
        assert split_records(record + b"\x16\xfe") == [record, b"\x16\xfe"]
        assert pack_datagrams([record] * 3, mtu=len(record) * 2) == [record * 2, record]
        assert pack_datagrams([record * 10], mtu=10) == [record * 10]  # too big alone still goes
        assert pack_datagrams([], mtu=100) == []


class TestStateMachine:
    def test_roles_from_setup(self) -> None:
        assert DtlsRole.for_local_setup(SetupRole.PASSIVE) is DtlsRole.SERVER
        assert DtlsRole.for_local_setup(SetupRole.ACTIVE) is DtlsRole.CLIENT
        with pytest.raises(ValueError):
            DtlsRole.for_local_setup(SetupRole.ACTPASS)

    def test_closed_is_terminal(self) -> None:
        assert not [key for key in TRANSITIONS if key[0] is DtlsState.CLOSED]
        assert TRANSITIONS[(DtlsState.FAILED, Trigger.CLOSE)] is DtlsState.CLOSED
