"""Conference: the orders and failures real browsers bring that test_conference.py's happy paths do
not (DTLS before the answer, an answerer that picks DTLS server, consent lost, a participant who
leaves mid-handshake), and the signaling a client may send at the wrong time."""

from __future__ import annotations

import logging
import re

import pytest

from meet443.proto.addresses import ToClientFrom
from meet443.proto.dtls.certificate import DtlsCertificate
from meet443.proto.dtls.events import HandshakeCompleted
from meet443.proto.dtls.session import DtlsRole, DtlsSrtpSession
from meet443.proto.rtp.packet import HeaderExtension, OneByteExtensions, RtpPacket
from meet443.proto.rtp.rtcp import PictureLossIndication, SenderReport, parse_rtcp, serialize_rtcp
from meet443.proto.rtp.srtp import SrtpSession
from meet443.proto.sdp.description import SessionDescription
from meet443.proto.signaling.messages import (
    ErrorMessage,
    Pause,
    Publish,
    PublishAnswer,
    Resubscribe,
    Speaker,
    SubscribeAnswer,
    SubscribeOffer,
)
from meet443.proto.stun.attributes import IceControlling, Priority, Username
from meet443.proto.stun.keys import short_term_key
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.sfu.conference import RoomSignal

from .test_conference import (
    AIORTC_VIDEO_SSRC,
    NOW,
    ROOM,
    SFU_CERT,
    Browser,
    Room,
    audio_packet,
    seeded,
    sfu_ice,
    video_packet,
)


@pytest.fixture
def room() -> Room:
    return Room()


def media_to(room: Room, b: Browser, mark: int) -> list[RtpPacket]:
    srtp = b.srtp["subscribe"]
    return [RtpPacket.parse(srtp.unprotect(d)) for d in b.received[mark:] if not 192 <= d[1] <= 223]


def send_media(room: Room, b: Browser, packet: bytes) -> None:
    room.deliver(room.sfu.receive_datagram(b.srtp["publish"].protect(packet), b.address, room.now))


def call(room: Room) -> tuple[Browser, Browser]:
    """alice publishes, bob receives, both connected."""
    alice, bob = room.join("alice", 40001), room.join("bob", 40002)
    room.publish(alice)
    room.subscribe(bob)
    room.connect(alice, "publish")
    room.connect(bob, "subscribe")
    return alice, bob


def check(b: Browser, role: str, *, nominate: bool) -> Message:
    """The browser's connectivity check, with USE-CANDIDATE or without (RFC 8445 §7.2.2)."""
    message = Message.parse(b.check(role))
    if nominate:
        return message
    attributes = [message.get(Username), message.get(Priority), message.get(IceControlling)]
    plain = Message(Method.BINDING, StunClass.REQUEST, message.transaction_id, attributes)  # type: ignore[arg-type]
    return Message.parse(plain.encode(short_term_key(b.remote[role][1]), fingerprint=True))


class TestSignalingOrder:
    def test_counts_follow_joins_publishes_and_leaves(self, room: Room) -> None:
        alice = room.join("alice", 40001)
        room.join("bob", 40002)
        room.publish(alice)
        assert (room.sfu.participant_count, room.sfu.track_count) == (2, 2)  # aiortc: audio and video
        room.deliver(room.sfu.leave(ROOM, "alice", room.now))
        assert (room.sfu.participant_count, room.sfu.track_count) == (1, 0)

    def test_a_repeated_join_changes_nothing(self, room: Room) -> None:
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        offers = len(bob.inbox)
        assert room.sfu.request(ROOM, "bob", None, room.now) == []
        assert room.sfu.participant_count == 2 and len(bob.inbox) == offers

    def test_requests_of_someone_gone_are_ignored(self, room: Room) -> None:
        alice = room.join("alice", 40001)
        offer = alice.publish_offer()
        room.deliver(room.sfu.leave(ROOM, "alice", room.now))
        assert room.sfu.leave(ROOM, "alice", room.now) == []
        assert room.sfu.request(ROOM, "alice", Publish(offer, {}), room.now) == []
        assert room.sfu.participant_count == 0 and room.sfu.routers == {}

    def test_an_answer_with_no_offer_waiting_is_refused(self, room: Room) -> None:
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        offer = room.subscribe(bob)
        room.deliver(
            room.sfu.request(ROOM, "bob", SubscribeAnswer(bob.subscribe_answer(offer.sdp)), room.now)
        )
        error = room.last(bob, ErrorMessage)
        assert isinstance(error, ErrorMessage)
        assert (error.code, error.ref) == ("bad-description", "subscribe-answer")

    def test_a_new_offer_waits_for_the_answer_to_the_last(self, room: Room) -> None:
        """RFC 3264 §8 / RFC 8829 §5.2: one negotiation at a time; what changed meanwhile is
        offered as soon as the answer arrives, with the next version."""
        alice, bob, carol = room.join("alice", 40001), room.join("bob", 40002), room.join("carol", 40003)
        room.publish(alice)
        first = room.last(bob, SubscribeOffer)
        room.publish(carol)  # bob needs new sections while his first offer is unanswered
        assert room.last(bob, SubscribeOffer) is first
        room.subscribe(bob)
        second = room.last(bob, SubscribeOffer)
        assert isinstance(first, SubscribeOffer) and isinstance(second, SubscribeOffer)
        assert second is not first
        assert {t.participant_id for t in second.tracks} == {"alice", "carol"}
        version = re.search(r"o=\S+ \d+ (\d+)", second.sdp)
        assert version is not None and version.group(1) == "2"
        room.subscribe(bob)  # answered over the existing DTLS association
        room.connect(bob, "subscribe")

    def test_resubscribe_with_nothing_to_receive_sends_no_offer(self, room: Room) -> None:
        bob = room.join("bob", 40002)
        room.deliver(room.sfu.request(ROOM, "bob", Resubscribe(), room.now))
        assert bob.inbox == []

    def test_a_publisher_renegotiates_and_restarts_ice(self, room: Room) -> None:
        """RFC 8445 §9: a new remote ufrag restarts ICE (new SFU credentials); the same one keeps
        them. The DTLS association and its keys stay either way: media keeps flowing."""
        alice, bob = call(room)
        first = room.last(alice, PublishAnswer)
        assert isinstance(first, PublishAnswer)
        again = room.publish(alice)
        assert sfu_ice(again.sdp) == sfu_ice(first.sdp)
        alice.ufrag = "restarted"
        restarted = room.publish(alice)
        assert sfu_ice(restarted.sdp) != sfu_ice(first.sdp)
        mark = len(bob.received)
        send_media(room, alice, audio_packet(1))
        assert len(media_to(room, bob, mark)) == 1

    def test_pause_stops_that_section_for_that_subscriber(self, room: Room) -> None:
        alice, bob = call(room)
        offer = room.last(bob, SubscribeOffer)
        assert isinstance(offer, SubscribeOffer)
        video = next(t for t in offer.tracks if t.kind == "video")
        send_media(room, alice, video_packet(1, AIORTC_VIDEO_SSRC, key=True))
        room.deliver(room.sfu.request(ROOM, "bob", Pause(video.mid, True), room.now))
        mark = len(bob.received)
        send_media(room, alice, video_packet(2, AIORTC_VIDEO_SSRC, key=True))
        send_media(room, alice, audio_packet(1))
        assert [p.payload_type for p in media_to(room, bob, mark)] == [111]  # the audio only


class TestDtlsAndIce:
    def test_dtls_before_the_answer_is_dropped_and_the_retry_completes(self, room: Room) -> None:
        """A browser that got the offer starts ICE and DTLS at once; its answer may come later
        over signaling. The ClientHello before it is dropped; DTLS retransmits (RFC 6347 §4.2.4)."""
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        offer = room.last(bob, SubscribeOffer)
        assert isinstance(offer, SubscribeOffer)
        bob.remote["subscribe"] = sfu_ice(offer.sdp)
        room.deliver(room.sfu.receive_check(check(bob, "subscribe", nominate=True), bob.address, room.now))
        dtls = DtlsSrtpSession(bob.cert, DtlsRole.CLIENT, [SFU_CERT.fingerprint], label="bob")
        dtls.start(room.now)
        hello = dtls.datagrams_to_send()
        for datagram in hello:
            room.deliver(room.sfu.receive_datagram(datagram, bob.address, room.now))
        assert room.sfu.counters.dropped == {"dtls_before_description": len(hello)}
        room.deliver(
            room.sfu.request(ROOM, "bob", SubscribeAnswer(bob.subscribe_answer(offer.sdp)), room.now)
        )
        for datagram in hello:  # what the browser's retransmission timer resends
            mark = len(bob.received)
            room.deliver(room.sfu.receive_datagram(datagram, bob.address, room.now))
            for answer in bob.received[mark:]:
                dtls.receive_datagram(answer, room.now)
            del bob.received[mark:]
        room.handshake(bob, dtls)
        assert isinstance(dtls.next_event(), HandshakeCompleted)

    def test_an_answerer_that_picks_dtls_server_gets_the_client_hello(self, room: Room) -> None:
        """RFC 8842 §5.3: the SFU offered actpass; an answer with setup:passive makes the SFU the
        DTLS client, whose first flight goes out once ICE nominated the browser's address."""
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        offer = room.last(bob, SubscribeOffer)
        assert isinstance(offer, SubscribeOffer)
        bob.remote["subscribe"] = sfu_ice(offer.sdp)
        answer = bob.subscribe_answer(offer.sdp).replace("a=setup:active", "a=setup:passive")
        room.deliver(room.sfu.request(ROOM, "bob", SubscribeAnswer(answer), room.now))
        assert bob.received == []
        room.deliver(room.sfu.receive_check(check(bob, "subscribe", nominate=True), bob.address, room.now))
        hello = bob.received[1:]
        assert hello and all(20 <= d[0] <= 63 for d in hello), "no DTLS after the STUN response"
        server = DtlsSrtpSession(bob.cert, DtlsRole.SERVER, [SFU_CERT.fingerprint], label="bob")
        for datagram in hello:
            server.receive_datagram(datagram, room.now)
        del bob.received[:]
        room.deliver(room.sfu.handle_timer(room.now))  # a timer tick mid-handshake changes nothing
        for _ in range(10):
            flight = server.datagrams_to_send()
            if not flight:
                break
            for datagram in flight:
                room.deliver(room.sfu.receive_datagram(datagram, bob.address, room.now))
            for datagram in bob.received:
                server.receive_datagram(datagram, room.now)
            del bob.received[:]
        event = server.next_event()
        assert isinstance(event, HandshakeCompleted)
        bob.srtp["subscribe"] = SrtpSession.from_keying_material(event.keys, client=False)
        room.connect(alice, "publish")
        mark = len(bob.received)
        send_media(room, alice, audio_packet(1))
        assert len(media_to(room, bob, mark)) == 1

    def test_dtls_on_a_validated_pair_before_nomination_completes(self, room: Room) -> None:
        """RFC 8445 §7.3: a check without USE-CANDIDATE validates the pair; the browser may start
        DTLS on it, and the SFU answers where the ClientHello came from."""
        alice = room.join("alice", 40001)
        room.publish(alice)
        room.deliver(room.sfu.receive_check(check(alice, "publish", nominate=False), alice.address, room.now))
        del alice.received[:]
        dtls = DtlsSrtpSession(alice.cert, DtlsRole.CLIENT, [SFU_CERT.fingerprint], label="alice")
        dtls.start(room.now)
        room.handshake(alice, dtls)
        assert isinstance(dtls.next_event(), HandshakeCompleted)

    def test_a_certificate_not_in_the_offer_fails_the_handshake(self, room: Room) -> None:
        """RFC 8122 §5: the fingerprint must match; no SRTP keys, so its media is dropped."""
        alice = room.join("alice", 40001)
        room.publish(alice)
        alice.cert = DtlsCertificate.generate(NOW, seeded(666))  # not the one the offer names
        with pytest.raises(AssertionError):
            room.connect(alice, "publish")
        srtp = audio_packet(1) + bytes(10)  # keyed by a handshake the SFU refused
        room.deliver(room.sfu.receive_datagram(srtp, alice.address, room.now))
        assert room.sfu.counters.dtls_handshakes == 0
        assert room.sfu.counters.dropped == {"media_before_keys": 1}

    def test_checks_and_datagrams_from_strangers_get_nothing(self, room: Room) -> None:
        alice, _ = call(room)
        unsigned = Message(Method.BINDING, StunClass.REQUEST, bytes(12), [Username("x:y")])
        assert room.sfu.receive_check(unsigned, alice.address, room.now) == []  # no FINGERPRINT: not ICE
        hello = b"\x16\xfe\xfd" + bytes(20)
        assert room.sfu.receive_datagram(hello, ("192.0.2.99", 9), room.now) == []
        assert room.sfu.receive_datagram(b"\x10" + bytes(20), alice.address, room.now) == []  # ZRTP
        assert room.sfu.counters.dropped == {"unknown_source": 1, "udp_zrtp": 1}

    def test_no_nomination_in_time_is_logged_as_ice_failure(
        self, room: Room, caplog: pytest.LogCaptureFixture
    ) -> None:
        """RFC 8445 §8.1: a browser that never completes ICE; the operator's log says so."""
        alice = room.join("alice", 40001)
        room.publish(alice)
        with caplog.at_level(logging.INFO, logger="meet443.sfu.conference"):
            room.deliver(room.sfu.handle_timer(room.now + 31))
        assert f"{ROOM}/alice/publish: ICE failed" in caplog.messages
        assert alice.received == []

    def test_consent_lost_stops_media_to_that_address(self, room: Room) -> None:
        """RFC 7675 §5.1: no check for 30 s from the subscriber's selected pair: nothing more is
        sent there (the publisher, who keeps checking, still sends)."""
        alice, bob = call(room)
        mark = len(bob.received)
        for step in range(1, 5):
            room.now = NOW + 10 * step
            room.deliver(
                room.sfu.receive_check(check(alice, "publish", nominate=True), alice.address, room.now)
            )
            room.deliver(room.sfu.handle_timer(room.now))
        bob_sent = len(bob.received)
        send_media(room, alice, audio_packet(1))
        assert len(bob.received) == bob_sent, "media sent to a pair without consent"
        assert room.sfu.counters.dropped.get("not_connected", 0) >= 1
        room.deliver(room.sfu.receive_check(check(bob, "subscribe", nominate=True), bob.address, room.now))
        mark = len(bob.received)
        send_media(room, alice, audio_packet(2))
        assert len(media_to(room, bob, mark + 0)) >= 1, "a new nomination brings it back"


class TestMedia:
    def test_a_subscriber_pli_reaches_the_publisher_as_srtcp(self, room: Room) -> None:
        """RFC 4585 §6.3.1 across the SFU: the subscriber's PLI for its section's SSRC becomes the
        SFU's PLI for the publisher's SSRC, SRTCP-protected with the publisher's keys."""
        alice, bob = call(room)
        send_media(room, alice, video_packet(1, AIORTC_VIDEO_SSRC, key=True))
        for _ in range(2):  # past the connect-time requests and their repeat (one PLI per 0.5 s)
            room.now += 1.0
            room.deliver(room.sfu.handle_timer(room.now))
        offer = room.last(bob, SubscribeOffer)
        assert isinstance(offer, SubscribeOffer)
        mark = len(alice.received)
        video = next(t for t in offer.tracks if t.kind == "video")
        section = SessionDescription.parse(offer.sdp).media_by_mid(video.mid)
        assert section is not None
        slot_ssrc = next(iter(section.ssrcs()))
        pli = serialize_rtcp([PictureLossIndication(0xB0B, slot_ssrc)])
        room.deliver(
            room.sfu.receive_datagram(bob.srtp["subscribe"].protect_rtcp(pli), bob.address, room.now)
        )
        got = [p for d in alice.received[mark:] for p in parse_rtcp(alice.srtp["publish"].unprotect_rtcp(d))]
        assert [p.media_ssrc for p in got if isinstance(p, PictureLossIndication)] == [AIORTC_VIDEO_SSRC]

    def test_sender_reports_wait_for_the_subscribers_keys(self, room: Room) -> None:
        """RFC 3550 §6.4.1 SRs for a subscriber whose DTLS is not up are dropped, never sent in
        the clear nor to an address ICE did not nominate."""
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        room.subscribe(bob)
        room.connect(alice, "publish")
        send_media(room, alice, audio_packet(1))
        sr = serialize_rtcp([SenderReport(631536170, 1 << 32, 960, 1, 40)])
        room.deliver(
            room.sfu.receive_datagram(alice.srtp["publish"].protect_rtcp(sr), alice.address, room.now)
        )
        room.now += 1.5
        room.deliver(room.sfu.handle_timer(room.now))
        assert bob.received == []
        assert room.sfu.counters.dropped.get("not_connected", 0) >= 1

    def test_a_loud_publisher_is_announced_as_speaker(self, room: Room) -> None:
        """RFC 6464 levels in the publisher's audio make it the room's dominant speaker."""
        alice, _ = call(room)
        outputs = []
        for seq in range(60):
            level = OneByteExtensions((HeaderExtension(2, bytes((0x80 | 20,))),))
            packet = RtpPacket(96, seq, seq * 960, 631536170, b"\xfc" * 40, extension=level)
            outputs += room.sfu.receive_datagram(
                alice.srtp["publish"].protect(bytes(packet)), alice.address, room.now
            )
            room.now += 0.02
            outputs += room.sfu.handle_timer(room.now)
        assert RoomSignal(ROOM, Speaker("alice")) in outputs


class TestTeardown:
    def test_leaving_before_answering_closes_the_unanswered_connection(self, room: Room) -> None:
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        room.last(bob, SubscribeOffer)
        room.deliver(room.sfu.leave(ROOM, "bob", room.now))
        assert list(room.sfu.mux.sessions) == [f"{ROOM}/alice/publish"]
        assert room.sfu.handle_timer(room.now) == []

    def test_leaving_right_after_connecting_cancels_the_second_keyframe_request(self, room: Room) -> None:
        """The repeated keyframe request a second after the subscriber connected finds it gone."""
        alice, bob = call(room)
        room.deliver(room.sfu.leave(ROOM, "bob", room.now))
        mark = len(alice.received)
        room.now += 2.0
        out = room.sfu.handle_timer(room.now)
        room.deliver(out)
        pli = [
            p
            for d in alice.received[mark:]
            for p in parse_rtcp(alice.srtp["publish"].unprotect_rtcp(d))
            if isinstance(p, PictureLossIndication)
        ]
        assert pli == [] and not any(isinstance(o, ToClientFrom) and o.address == bob.address for o in out)
