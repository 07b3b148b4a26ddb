"""The whole SFU without I/O: signaling in, ICE checks, DTLS handshakes, SRTP media across.

Each "browser" here is made of the project's own client-side pieces: a STUN check as a controlling
full agent sends it (RFC 8445 §7.2.2), a DTLS client (:class:`DtlsSrtpSession`) and an SRTP session
keyed from it. Independent peers (aiortc, Chromium) are in tests/e2e and tests/browser.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meet443.proto.addresses import Address, ServerPort, ToClientFrom
from meet443.proto.dtls.certificate import DtlsCertificate
from meet443.proto.dtls.events import HandshakeCompleted
from meet443.proto.dtls.session import DtlsRole, DtlsSrtpSession
from meet443.proto.rtp.packet import RtpPacket
from meet443.proto.rtp.srtp import SrtpSession
from meet443.proto.sdp.description import SessionDescription
from meet443.proto.sdp.negotiation import remote_transport
from meet443.proto.signaling.messages import (
    MAX_SDP_BYTES,
    ErrorMessage,
    Publish,
    PublishAnswer,
    Republish,
    Resubscribe,
    SubscribeAnswer,
    SubscribeOffer,
)
from meet443.proto.stun.attributes import IceControlling, Priority, UseCandidate, Username
from meet443.proto.stun.keys import short_term_key
from meet443.proto.stun.message import Message, Method, StunClass
from meet443.sfu.conference import Conference, Output, Signal

NOW = 1_800_000_000.0
SFU: Address = ("203.0.113.1", 443)
ROOM = "town-hall"
FIXTURES = Path(__file__).parents[1] / "proto" / "sdp" / "fixtures"
#: aiortc's offer (tests/proto/sdp/fixtures): Opus on PT 96 with SSRC 631536170, VP8 with RTX.
AIORTC_AUDIO_SSRC = 631536170


def seeded(seed: int):
    return random.Random(seed).randbytes


SFU_CERT = DtlsCertificate.generate(NOW, seeded(1))


@dataclass
class Browser:
    """One participant: its two connections' ICE, DTLS and SRTP as a browser would run them."""

    name: str
    address: Address
    cert: DtlsCertificate
    ufrag: str
    inbox: list[object] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    dtls: dict[str, DtlsSrtpSession] = field(default_factory=dict)
    srtp: dict[str, SrtpSession] = field(default_factory=dict)
    remote: dict[str, tuple[str, str]] = field(default_factory=dict)  # role -> SFU ufrag, pwd

    def fingerprint_line(self) -> str:
        f = self.cert.fingerprint
        return f"a=fingerprint:{f.algorithm} {f.value().split(' ', 1)[1]}"

    def publish_offer(self) -> str:
        text = (FIXTURES / "aiortc_offer.sdp").read_text()
        text = re.sub(r"a=ice-ufrag:\S+", f"a=ice-ufrag:{self.ufrag}", text)
        text = re.sub(r"a=ice-pwd:\S+", "a=ice-pwd:" + "p" * 22, text)
        text = re.sub(r"a=fingerprint:sha-(384|512) .*\r?\n", "", text)
        return re.sub(r"a=fingerprint:sha-256 .*", self.fingerprint_line(), text)

    def subscribe_answer(self, offer: str) -> str:
        sections = SessionDescription.parse(offer).media
        mids = [m.mid for m in sections]
        lines = [
            "v=0",
            "o=- 1 1 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE " + " ".join(map(str, mids)),
        ]
        for media in sections:
            pts = " ".join(media.formats)
            lines += [f"m={media.kind} 9 UDP/TLS/RTP/SAVPF {pts}", "c=IN IP4 0.0.0.0", f"a=mid:{media.mid}"]
            lines += ["a=recvonly", "a=rtcp-mux", f"a=ice-ufrag:{self.ufrag}s", "a=ice-pwd:" + "q" * 22]
            lines += [self.fingerprint_line(), "a=setup:active"]
            lines += [str(a) for a in media.attributes if str(a).startswith(("a=rtpmap", "a=fmtp"))]
        return "\r\n".join(lines) + "\r\n"

    def check(self, role: str) -> bytes:
        ufrag, pwd = self.remote[role]
        local = self.ufrag if role == "publish" else self.ufrag + "s"
        request = Message(
            Method.BINDING,
            StunClass.REQUEST,
            random.Random(hash((self.name, role))).randbytes(12),
            [Username(f"{ufrag}:{local}"), Priority(1853824767), IceControlling(7), UseCandidate()],
        )
        return request.encode(short_term_key(pwd), fingerprint=True)


def sfu_ice(description: str) -> tuple[str, str]:
    remote = remote_transport(SessionDescription.parse(description))
    return remote.ice_ufrag, remote.ice_pwd


class Room:
    """A Conference and the wire: every datagram it sends is delivered to the browser it names."""

    def __init__(self) -> None:
        self.sfu = Conference(SFU_CERT, [SFU], seeded(2))
        self.browsers: dict[str, Browser] = {}
        self.by_address: dict[Address, Browser] = {}
        self.now = NOW

    def join(self, name: str, port: int) -> Browser:
        b = Browser(name, ("198.51.100.7", port), DtlsCertificate.generate(NOW, seeded(port)), f"u{port}")
        self.browsers[name] = b
        self.by_address[b.address] = b
        self.deliver(self.sfu.request(ROOM, name, None, self.now))
        return b

    def deliver(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, Signal):
                self.browsers[output.participant].inbox.append(output.message)
            elif isinstance(output, ToClientFrom):
                browser = self.by_address[output.address]
                browser.received.append(output.data)

    def last(self, b: Browser, kind: type) -> object:
        found = [m for m in b.inbox if isinstance(m, kind)]
        assert found, b.inbox
        return found[-1]

    def connect(self, b: Browser, role: str, port: ServerPort = ServerPort.MAIN) -> None:
        """ICE check with USE-CANDIDATE to our ``port``, then the DTLS handshake with the SFU as server."""
        check = Message.parse(b.check(role))
        assert self.sfu.owns_stun(check)
        before = len(b.received)
        self.deliver(self.sfu.receive_check(check, b.address, self.now, port))
        response = Message.parse(b.received[before])
        assert response.klass == StunClass.SUCCESS
        dtls = b.dtls[role] = DtlsSrtpSession(b.cert, DtlsRole.CLIENT, [SFU_CERT.fingerprint], label=b.name)
        dtls.start(self.now)
        self.handshake(b, dtls)
        event = dtls.next_event()
        assert isinstance(event, HandshakeCompleted), event
        b.srtp[role] = SrtpSession.from_keying_material(event.keys, client=True)

    def handshake(self, b: Browser, dtls: DtlsSrtpSession) -> None:
        """Carry the client's flights to the SFU and its answers back until nothing is left."""
        for _ in range(10):
            outgoing = dtls.datagrams_to_send()
            if not outgoing:
                return
            for datagram in outgoing:
                mark = len(b.received)
                self.deliver(self.sfu.receive_datagram(datagram, b.address, self.now))
                for answer in b.received[mark:]:
                    dtls.receive_datagram(answer, self.now)
                del b.received[mark:]

    def publish(self, b: Browser) -> PublishAnswer:
        self.deliver(
            self.sfu.request(ROOM, b.name, Publish(b.publish_offer(), {"0": "microphone"}), self.now)
        )
        answer = self.last(b, PublishAnswer)
        assert isinstance(answer, PublishAnswer)
        b.remote["publish"] = sfu_ice(answer.sdp)
        return answer

    def subscribe(self, b: Browser) -> SubscribeOffer:
        offer = self.last(b, SubscribeOffer)
        assert isinstance(offer, SubscribeOffer)
        b.remote["subscribe"] = sfu_ice(offer.sdp)
        self.deliver(self.sfu.request(ROOM, b.name, SubscribeAnswer(b.subscribe_answer(offer.sdp)), self.now))
        return offer


def audio_packet(seq: int) -> bytes:
    return bytes(
        RtpPacket(
            payload_type=96,
            sequence_number=seq,
            timestamp=960 * seq,
            ssrc=AIORTC_AUDIO_SSRC,
            payload=b"\xfc" * 40,
        )
    )


@pytest.fixture
def room() -> Room:
    return Room()


class TestGroupCall:
    def test_audio_from_one_publisher_reaches_a_subscriber(self, room: Room) -> None:
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        offer = room.subscribe(bob)
        audio = next(t for t in offer.tracks if t.kind == "audio")
        assert (audio.participant_id, audio.source) == ("alice", "microphone")
        room.connect(alice, "publish")
        room.connect(bob, "subscribe")

        mark = len(bob.received)
        for seq in range(100, 105):
            room.deliver(
                room.sfu.receive_datagram(
                    alice.srtp["publish"].protect(audio_packet(seq)), alice.address, room.now
                )
            )
        forwarded = [
            RtpPacket.parse(bob.srtp["subscribe"].unprotect(d))
            for d in bob.received[mark:]
            if 128 <= d[0] < 192 and not 192 <= d[1] <= 223
        ]
        assert len(forwarded) == 5
        section = SessionDescription.parse(offer.sdp).media_by_mid(audio.mid)
        assert section is not None
        assert {p.ssrc for p in forwarded} == set(section.ssrcs()), "the slot's own SSRC"
        assert {p.payload_type for p in forwarded} == {111}, "the SFU's Opus payload type"
        assert [p.payload for p in forwarded] == [b"\xfc" * 40] * 5
        seqs = [p.sequence_number for p in forwarded]
        assert seqs == list(range(seqs[0], seqs[0] + 5))
        assert room.sfu.router_counters.packets_forwarded == 5

    def test_forged_media_and_garbage_are_dropped(self, room: Room) -> None:
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        room.subscribe(bob)
        room.connect(alice, "publish")
        room.connect(bob, "subscribe")
        mark = len(bob.received)
        forged = bytearray(alice.srtp["publish"].protect(audio_packet(7)))
        forged[-1] ^= 1
        room.deliver(room.sfu.receive_datagram(bytes(forged), alice.address, room.now))
        room.deliver(room.sfu.receive_datagram(b"\x80" + bytes(3), ("192.0.2.99", 1), room.now))
        room.deliver(room.sfu.receive_datagram(b"\xff\x00", alice.address, room.now))
        assert len(bob.received) == mark
        dropped = room.sfu.counters.dropped
        assert dropped["srtp_auth"] == 1 and dropped["unknown_source"] == 1

    def test_a_bad_description_gets_an_error_and_changes_nothing(self, room: Room) -> None:
        alice = room.join("alice", 40001)
        room.deliver(room.sfu.request(ROOM, "alice", Publish("v=0\r\nthis is not sdp", {}), room.now))
        error = room.last(alice, ErrorMessage)
        assert isinstance(error, ErrorMessage) and error.code == "bad-description"
        room.publish(alice)  # the next, good offer works

    def test_leaving_removes_the_slot_owner_and_the_sessions(self, room: Room) -> None:
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        room.subscribe(bob)
        assert len(room.sfu.mux.sessions) == 2
        room.deliver(room.sfu.leave(ROOM, "alice", room.now))
        assert len(room.sfu.mux.sessions) == 1
        room.deliver(room.sfu.leave(ROOM, "bob", room.now))
        assert room.sfu.routers == {} and room.sfu.mux.sessions == {}

    def test_resubscribe_restarts_ice_with_new_credentials(self, room: Room) -> None:
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        first = room.subscribe(bob)
        room.deliver(room.sfu.request(ROOM, "bob", Resubscribe(), room.now))
        second = room.last(bob, SubscribeOffer)
        assert isinstance(second, SubscribeOffer)
        assert sfu_ice(second.sdp) != sfu_ice(first.sdp)


AIORTC_VIDEO_FORMATS = "UDP/TLS/RTP/SAVPF 97 98 99 100 101 102"


def answered_video(answer: PublishAnswer) -> list[str]:
    video = next(m for m in SessionDescription.parse(answer.sdp).media if m.kind == "video")
    return [c.mime_subtype for c in video.codecs() if c.mime_subtype != "rtx"]


class TestVideoCodecPerRoom:
    """docs/signaling.md "Group rooms": nobody is sent a codec their answer did not accept; a room
    with such a subscriber falls back to a codec everyone decodes, by asking for a new offer."""

    def test_a_subscriber_without_h264_makes_the_h264_publisher_send_vp8_until_it_leaves(
        self, room: Room
    ) -> None:
        alice, fox = room.join("alice", 40001), room.join("fox", 40002)
        h264_first = alice.publish_offer().replace(
            AIORTC_VIDEO_FORMATS, "UDP/TLS/RTP/SAVPF 99 100 101 102 97 98"
        )
        alice.publish_offer = lambda: h264_first  # type: ignore[method-assign]
        assert answered_video(room.publish(alice))[0] == "h264", "nobody has answered yet"
        offer = room.last(fox, SubscribeOffer)
        assert isinstance(offer, SubscribeOffer)
        firefox = fox.subscribe_answer(offer.sdp).replace(
            "UDP/TLS/RTP/SAVPF 96 97 102 103", "UDP/TLS/RTP/SAVPF 96 97"
        )
        room.deliver(room.sfu.request(ROOM, "fox", SubscribeAnswer(firefox), room.now))
        assert [m for m in alice.inbox if isinstance(m, Republish)] == [Republish()]
        assert answered_video(room.publish(alice)) == ["vp8", "h264"]
        # Firefox leaves: the room goes back to the publisher's first choice.
        room.deliver(room.sfu.leave(ROOM, "fox", room.now))
        assert len([m for m in alice.inbox if isinstance(m, Republish)]) == 2
        assert answered_video(room.publish(alice))[0] == "h264"

    def test_subscribers_that_decode_everything_ask_for_nothing(self, room: Room) -> None:
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        room.subscribe(bob)
        room.deliver(room.sfu.leave(ROOM, "bob", room.now))
        assert not [m for m in alice.inbox if isinstance(m, Republish)]


class TestDataPath:
    """Conference.receive_media (the adapter's per-packet path, plain ``(address, data)`` pairs)
    against receive_datagram (typed outputs): the same packets reach the same subscribers."""

    def test_pairs_and_typed_outputs_carry_one_stream(self, room: Room) -> None:
        alice = room.join("alice", 40001)
        subscribers = [room.join(name, port) for name, port in (("bob", 40002), ("carol", 40003))]
        room.publish(alice)
        for b in subscribers:
            room.subscribe(b)
        room.connect(alice, "publish")
        for b in subscribers:
            room.connect(b, "subscribe")
        marks = {b.name: len(b.received) for b in subscribers}
        protect = alice.srtp["publish"].protect
        for seq in range(100, 104):
            room.deliver(room.sfu.receive_datagram(protect(audio_packet(seq)), alice.address, room.now))
        for seq in range(104, 108):
            media = room.sfu.receive_media(protect(audio_packet(seq)), alice.address, room.now)
            assert media is not None
            datagrams, outputs = media
            assert [(port, address) for port, address, _ in datagrams] == [
                (ServerPort.MAIN, b.address) for b in subscribers
            ]
            room.deliver([*outputs, *(ToClientFrom(*datagram) for datagram in datagrams)])
        for b in subscribers:
            forwarded = [
                RtpPacket.parse(b.srtp["subscribe"].unprotect(d))
                for d in b.received[marks[b.name] :]
                if 128 <= d[0] < 192 and not 192 <= d[1] <= 223
            ]
            seqs = [p.sequence_number for p in forwarded]
            assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(8)], b.name
            assert {p.payload for p in forwarded} == {b"\xfc" * 40}
        assert room.sfu.router_counters.packets_forwarded == 16

    def test_anything_but_srtp_is_left_to_receive_datagram(self, room: Room) -> None:
        alice = room.join("alice", 40001)
        room.publish(alice)
        assert room.sfu.receive_media(b"\x16\xfe\xfd" + bytes(10), alice.address, room.now) is None
        assert room.sfu.receive_media(b"", alice.address, room.now) is None
        assert room.sfu.receive_media(b"\x80" + bytes(3), ("192.0.2.99", 1), room.now) == ([], [])
        assert room.sfu.counters.dropped == {"unknown_source": 1}


AIORTC_VIDEO_SSRC = 2448158011


def video_packet(seq: int, ssrc: int, *, key: bool, content: bytes = b"") -> bytes:
    # RFC 7741 §4.2 descriptor (S bit, partition 0) and §4.3 payload header (P bit 0: keyframe).
    payload = bytes((0x10, 0x00 if key else 0x01, 0, 0)) + content.ljust(200, b"\0")
    return bytes(
        RtpPacket(payload_type=97, sequence_number=seq, timestamp=3000 * seq, ssrc=ssrc, payload=payload)
    )


class TestLateJoiner:
    def test_the_third_gets_each_video_on_the_section_the_offer_names(self, room: Room) -> None:
        """The newcomer's first offer carries both others' sections at once (a0 a1 v0 v1): every
        video section's SSRC carries the video of the participant its `tracks` entry names."""
        alice, bob = room.join("alice", 40001), room.join("bob", 40002)
        room.publish(alice)
        room.publish(bob)
        room.connect(alice, "publish")
        room.connect(bob, "publish")
        carol = room.join("carol", 40003)
        offer = room.subscribe(carol)
        room.connect(carol, "subscribe")
        description = SessionDescription.parse(offer.sdp)
        owner_of_ssrc: dict[int, tuple[str | None, str]] = {}
        for track in offer.tracks:
            section = description.media_by_mid(track.mid)
            assert section is not None
            owner_of_ssrc[next(iter(section.ssrcs()))] = (track.participant_id, track.kind)
        assert sorted(owner_of_ssrc.values()) == [
            ("alice", "audio"),
            ("alice", "video"),
            ("bob", "audio"),
            ("bob", "video"),
        ]
        mark = len(carol.received)
        for seq in range(1, 40):
            for sender in (alice, bob):
                # The two publishers share aiortc's SSRCs (same offer): the SFU tells them apart.
                packet = video_packet(seq, AIORTC_VIDEO_SSRC, key=seq % 10 == 1, content=sender.name.encode())
                data = sender.srtp["publish"].protect(packet)
                room.deliver(room.sfu.receive_datagram(data, sender.address, room.now))
            room.now += 0.05
            room.deliver(room.sfu.handle_timer(room.now))
        srtp = carol.srtp["subscribe"]
        got: dict[str, int] = {}
        for datagram in carol.received[mark:]:
            if 192 <= datagram[1] <= 223:
                continue
            forwarded = RtpPacket.parse(srtp.unprotect(datagram))
            owner, kind = owner_of_ssrc.get(forwarded.ssrc, ("?", "?"))
            if kind == "video":
                assert forwarded.payload[4:].rstrip(b"\0").decode() == owner, "another's picture"
            got[f"{owner}/{kind}"] = got.get(f"{owner}/{kind}", 0) + 1
        assert got.get("alice/video", 0) > 20 and got.get("bob/video", 0) > 20, got


class TestFiftyInARoom:
    def test_the_offer_stays_small_with_49_others_publishing(self, room: Room) -> None:
        """A bounded pool (16 audio, last-N 9 video + 2 screens) keeps every subscribe offer far
        below the signaling limit however many publish; all 49 others still reach the newcomer."""
        for i in range(49):
            room.publish(room.join(f"p{i}", 41000 + i))
        newcomer = room.join("last", 42000)
        offer = room.last(newcomer, SubscribeOffer)
        assert isinstance(offer, SubscribeOffer)
        kinds = [t.kind for t in offer.tracks]
        assert kinds.count("audio") == 16 and kinds.count("video") == 9
        assert len(offer.sdp.encode()) < MAX_SDP_BYTES // 2, len(offer.sdp)
        assert len({t.participant_id for t in offer.tracks}) >= 16


class TestForgetRoom:
    """docs/signaling.md "SFU restart": the SFU forgets a room; its participants come back on new
    peer connections (new ICE credentials, new certificates)."""

    def test_a_new_peer_connection_gets_a_new_dtls_association(self) -> None:
        room = Room()
        alice = room.join("alice", 40001)
        room.publish(alice)
        room.connect(alice, "publish")
        room.sfu.forget_room(ROOM, room.now)  # a DTLS close_notify to alice, which she ignores
        assert room.sfu.participant_count == 0 and room.sfu.routers == {}
        room.deliver(room.sfu.request(ROOM, "alice", None, room.now))
        room.publish(alice)  # a publish of the old peer connection, still in flight
        again = Browser("alice", alice.address, DtlsCertificate.generate(NOW, seeded(9)), "uagain")
        room.browsers["alice"] = room.by_address[again.address] = again
        room.publish(again)
        room.connect(again, "publish")  # the handshake completes: the SFU expects the new certificate
