"""The SFU's answer to publisher offers and its own subscriber offers (RFC 3264, RFC 8829, RFC 8853)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from meet443.exceptions import UnacceptableDescription
from meet443.proto.sdp.attributes import (
    Candidate,
    Direction,
    EndOfCandidates,
    ExtMap,
    Fingerprint,
    Group,
    IceLite,
    IcePwd,
    IceUfrag,
    Msid,
    Rid,
    RidDirection,
    RtcpMux,
    Setup,
    SetupRole,
    SimulcastStream,
    Ssrc,
    SsrcGroup,
    parse_attribute,
)
from meet443.proto.sdp.description import Connection, SessionDescription
from meet443.proto.sdp.negotiation import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
    URI_TRANSPORT_CC,
    LocalTransport,
    MediaPolicy,
    SendSection,
    build_answer,
    build_subscriber_offer,
    remote_transport,
    send_section_from,
)

FIXTURES = Path(__file__).parent / "fixtures"
LOCAL = LocalTransport(
    ice_ufrag="SfUufrAg",
    ice_pwd="sfuPasswordSfuPassword24",
    fingerprint=Fingerprint("sha-256", bytes(range(32))),
    addresses=(("198.51.100.7", 443), ("2001:db8::7", 443)),
)


def offer(name: str) -> SessionDescription:
    return SessionDescription.parse((FIXTURES / name).read_bytes())


def replace_line(description: SessionDescription, old: str, new: str | None) -> SessionDescription:
    """The description with one a= line changed or removed (by its text), parsed again."""
    text = str(description)
    assert f"a={old}\r\n" in text
    return SessionDescription.parse(text.replace(f"a={old}\r\n", "" if new is None else f"a={new}\r\n"))


class TestAnswerToChromiumSimulcastOffer:
    """RFC 8829 §5.3.1 answer to Chromium's audio + 3-layer simulcast + data channel offer."""

    offer = offer("chromium_publish_simulcast.sdp")
    answer = build_answer(offer, LOCAL, session_id=4242)

    def test_session_level(self) -> None:
        assert self.answer.origin.session_id == 4242
        assert self.answer.get(Group) == Group("BUNDLE", ("0", "1"))
        assert self.answer.ice_lite  # RFC 8839 §5.3
        assert [m.mid for m in self.answer.media] == ["0", "1", "2"]  # RFC 3264 §6: same order

    def test_data_channel_is_rejected(self) -> None:
        application = self.answer.media[2]
        assert application.rejected and application.port == 0
        assert application.formats == ["webrtc-datachannel"]
        assert application.mid == "2"
        assert application.candidates == [] and application.direction is None

    @pytest.mark.parametrize("index", [0, 1])
    def test_transport_of_accepted_sections(self, index: int) -> None:
        media = self.answer.media[index]
        assert (media.port, media.proto) == (443, "UDP/TLS/RTP/SAVPF")
        assert media.connections == [Connection("IN", "IP4", "198.51.100.7")]
        assert media.get(IceUfrag) == IceUfrag("SfUufrAg")
        assert media.get(IcePwd) == IcePwd("sfuPasswordSfuPassword24")
        assert media.get(Fingerprint) == LOCAL.fingerprint
        assert media.get(Setup) == Setup(SetupRole.PASSIVE)  # RFC 5763 §5: the SFU is DTLS server
        assert media.rtcp_mux
        assert media.direction is Direction.RECVONLY
        host4, host6 = media.candidates
        assert (host4.address, host4.port, host4.type, host6.address) == (
            "198.51.100.7",
            443,
            "host",
            "2001:db8::7",
        )
        # RFC 8445 §5.1.2.1: type preference 126, local preference 65535 then 65534, component 1.
        assert host4.priority == (126 << 24) | (65535 << 8) | 255
        assert host6.priority == (126 << 24) | (65534 << 8) | 255
        assert media.has(EndOfCandidates)

    def test_audio(self) -> None:
        audio = self.answer.media[0]
        (opus,) = audio.codecs()
        assert (opus.payload_type, opus.name, opus.clock_rate, opus.channels) == (111, "opus", 48000, 2)
        assert opus.parameters == "minptime=10;useinbandfec=1"
        assert opus.feedback == (("transport-cc", None),)
        # Offered ids are kept (RFC 8285 §6); only the extensions the SFU reads are accepted.
        assert {(e.id, e.uri) for e in audio.extmaps} == {
            (1, URI_AUDIO_LEVEL),
            (2, URI_ABS_SEND_TIME),
            (3, URI_TRANSPORT_CC),
            (4, URI_MID),
        }

    def test_video_codecs(self) -> None:
        video = self.answer.media[1]
        codecs = video.codecs()
        assert [(c.payload_type, c.mime_subtype) for c in codecs] == [
            (96, "vp8"),
            (97, "rtx"),
            (108, "h264"),  # Constrained Baseline 42e01f, packetization-mode 1
            (109, "rtx"),
        ]
        assert codecs[1].apt == 96 and codecs[3].apt == 108
        assert codecs[2].fmtp["profile-level-id"] == "42e01f"
        assert set(codecs[0].feedback) == {
            ("goog-remb", None),
            ("transport-cc", None),
            ("ccm", "fir"),
            ("nack", None),
            ("nack", "pli"),
        }
        assert codecs[1].feedback == ()

    def test_video_extensions(self) -> None:
        assert {(e.id, e.uri) for e in self.answer.media[1].extmaps} == {
            (2, URI_ABS_SEND_TIME),
            (3, URI_TRANSPORT_CC),
            (4, URI_MID),
            (10, URI_RID),
            (11, URI_REPAIRED_RID),
        }

    def test_simulcast_receives_the_offered_rids(self) -> None:
        """RFC 8853 §5.3: the answer mirrors the send streams as recv streams, RFC 8851 §7 the rids."""
        video = self.answer.media[1]
        assert [(r.rid, r.direction) for r in video.rids] == [
            ("q", RidDirection.RECV),
            ("h", RidDirection.RECV),
            ("f", RidDirection.RECV),
        ]
        assert video.simulcast is not None
        assert video.simulcast.send == ()
        assert video.simulcast.recv == (
            (SimulcastStream("q"),),
            (SimulcastStream("h"),),
            (SimulcastStream("f"),),
        )

    def test_answer_round_trips(self) -> None:
        text = str(self.answer)
        assert SessionDescription.parse(text) == self.answer
        assert "a=simulcast:recv q;h;f\r\n" in text

    def test_remote_transport_of_offer_and_answer(self) -> None:
        remote = remote_transport(self.offer)
        audio = self.offer.media[0]
        assert (remote.ice_ufrag, remote.ice_pwd) == self.offer.ice_credentials(audio)
        assert remote.fingerprints == tuple(self.offer.fingerprints(audio))
        assert remote.setup is SetupRole.ACTPASS and not remote.ice_lite
        ours = remote_transport(self.answer)
        assert (ours.ice_ufrag, ours.setup, ours.ice_lite) == ("SfUufrAg", SetupRole.PASSIVE, True)
        assert "sfuPassword" not in repr(ours)


class TestAnswerVariants:
    def test_sendrecv_offer_is_received_only(self) -> None:
        answer = build_answer(offer("chromium_sendrecv.sdp"), LOCAL, session_id=1)
        assert [m.direction for m in answer.media] == [Direction.RECVONLY, Direction.RECVONLY]
        assert answer.media[1].simulcast is None and answer.media[1].rids == []

    def test_recvonly_offer_gets_inactive_sections(self) -> None:
        """The SFU sends only on sections it offers itself (build_subscriber_offer)."""
        answer = build_answer(offer("chromium_recvonly.sdp"), LOCAL, session_id=1)
        assert [m.direction for m in answer.media] == [Direction.INACTIVE] * 3
        assert all(m.simulcast is None for m in answer.media)

    def test_aiortc_offer(self) -> None:
        source = offer("aiortc_offer.sdp")
        answer = build_answer(source, LOCAL, session_id=1)
        assert answer.get(Group) == Group("BUNDLE", ("0", "1"))
        assert [(c.payload_type, c.mime_subtype) for c in answer.media[0].codecs()] == [(96, "opus")]
        assert [(c.payload_type, c.mime_subtype) for c in answer.media[1].codecs()] == [
            (97, "vp8"),
            (98, "rtx"),
            (101, "h264"),
            (102, "rtx"),
        ]
        assert answer.media[2].rejected

    def test_h264_only_policy_prefers_constrained_baseline(self) -> None:
        policy = MediaPolicy(video_codecs=("h264",))
        video = build_answer(offer("chromium_sendrecv.sdp"), LOCAL, session_id=1, policy=policy).media[1]
        assert [c.fmtp.get("profile-level-id") for c in video.codecs() if c.mime_subtype == "h264"] == [
            "42e01f"
        ]

    def test_fewer_simulcast_layers(self) -> None:
        policy = MediaPolicy(max_simulcast_layers=2)
        video = build_answer(
            offer("chromium_publish_simulcast.sdp"), LOCAL, session_id=1, policy=policy
        ).media[1]
        assert [r.rid for r in video.rids] == ["q", "h"]
        assert video.simulcast is not None
        assert rids_of(video.simulcast.recv) == ["q", "h"]

    def test_rid_payload_type_restrictions_are_filtered(self) -> None:
        """RFC 8851 §7: a rid limited to refused formats goes; others keep only accepted formats."""
        source = offer("chromium_publish_simulcast.sdp")
        source = replace_line(source, "rid:q send", "rid:q send pt=98")  # VP9 only: refused
        source = replace_line(source, "rid:h send", "rid:h send pt=96,98;max-fps=30")
        video = build_answer(source, LOCAL, session_id=1).media[1]
        assert video.rids == [Rid("h", RidDirection.RECV, "pt=96;max-fps=30"), Rid("f", RidDirection.RECV)]
        assert video.simulcast is not None
        assert rids_of(video.simulcast.recv) == ["h", "f"]

    def test_simulcast_alternatives_and_pause_are_kept(self) -> None:
        source = replace_line(
            offer("chromium_publish_simulcast.sdp"), "simulcast:send q;h;f", "simulcast:send q,~h;f"
        )
        video = build_answer(source, LOCAL, session_id=1).media[1]
        assert str(video.simulcast) == "simulcast:recv q,~h;f"

    def test_no_rid_extension_means_no_simulcast(self) -> None:
        source = replace_line(offer("chromium_publish_simulcast.sdp"), f"extmap:10 {URI_RID}", None)
        video = build_answer(source, LOCAL, session_id=1).media[1]
        assert video.simulcast is None and video.rids == []

    def test_section_without_rtcp_mux_is_rejected(self) -> None:
        source = offer("chromium_sendrecv.sdp")
        text = str(source).replace("a=rtcp-mux\r\n", "", 1)  # only the audio section
        answer = build_answer(SessionDescription.parse(text), LOCAL, session_id=1)
        assert answer.media[0].rejected and not answer.media[1].rejected
        assert answer.get(Group) == Group("BUNDLE", ("1",))

    def test_section_without_common_codec_is_rejected(self) -> None:
        policy = MediaPolicy(video_codecs=("av2",))
        answer = build_answer(offer("chromium_sendrecv.sdp"), LOCAL, session_id=1, policy=policy)
        assert answer.media[1].rejected
        assert answer.media[1].formats == ["96"]

    def test_section_outside_bundle_is_rejected(self) -> None:
        source = replace_line(offer("chromium_sendrecv.sdp"), "group:BUNDLE 0 1", "group:BUNDLE 1")
        answer = build_answer(source, LOCAL, session_id=1)
        assert answer.media[0].rejected and answer.get(Group) == Group("BUNDLE", ("1",))

    def test_other_codecs_by_policy(self) -> None:
        policy = MediaPolicy(video_codecs=("vp9",))
        video = build_answer(offer("chromium_sendrecv.sdp"), LOCAL, session_id=1, policy=policy).media[1]
        assert [c.mime_subtype for c in video.codecs()] == ["vp9", "rtx"]

    def test_recv_rids_in_an_offer_are_ignored(self) -> None:
        source = replace_line(offer("chromium_publish_simulcast.sdp"), "rid:q send", "rid:q recv")
        video = build_answer(source, LOCAL, session_id=1).media[1]
        assert [r.rid for r in video.rids] == ["h", "f"]

    def test_no_usable_rid_means_no_simulcast(self) -> None:
        source = offer("chromium_publish_simulcast.sdp")
        for rid in "qhf":
            source = replace_line(source, f"rid:{rid} send", f"rid:{rid} send pt=98")
        video = build_answer(source, LOCAL, session_id=1).media[1]
        assert video.simulcast is None and video.rids == []

    def test_extmap_allow_mixed_only_when_offered(self) -> None:
        assert not build_answer(offer("aiortc_offer.sdp"), LOCAL, session_id=1).has(
            type(parse_attribute("extmap-allow-mixed"))
        )


def rids_of(streams: tuple[tuple[SimulcastStream, ...], ...]) -> list[str]:
    return [alternative.rid for stream in streams for alternative in stream]


class TestUnacceptableOffers:
    def test_no_bundle(self) -> None:
        source = replace_line(offer("chromium_sendrecv.sdp"), "group:BUNDLE 0 1", None)
        with pytest.raises(UnacceptableDescription, match="BUNDLE"):
            build_answer(source, LOCAL, session_id=1)

    def test_offerer_insists_on_being_dtls_server(self) -> None:
        source = offer("chromium_sendrecv.sdp")
        text = str(source).replace("a=setup:actpass", "a=setup:passive")
        with pytest.raises(UnacceptableDescription, match="DTLS server"):
            build_answer(SessionDescription.parse(text), LOCAL, session_id=1)

    def test_active_offerer_is_fine(self) -> None:
        text = str(offer("chromium_sendrecv.sdp")).replace("a=setup:actpass", "a=setup:active")
        assert build_answer(SessionDescription.parse(text), LOCAL, session_id=1).media[0].get(Setup) == Setup(
            SetupRole.PASSIVE
        )

    def test_missing_ice_credentials(self) -> None:
        text = "".join(
            line + "\r\n"
            for line in str(offer("chromium_sendrecv.sdp")).split("\r\n")
            if line and not line.startswith("a=ice-pwd")
        )
        with pytest.raises(UnacceptableDescription, match="ICE"):
            build_answer(SessionDescription.parse(text), LOCAL, session_id=1)

    def test_short_ice_credentials(self) -> None:
        source = offer("aiortc_offer.sdp")
        ufrag, _ = remote_transport(source).ice_ufrag, None
        text = str(source).replace(f"a=ice-ufrag:{ufrag}", "a=ice-ufrag:abc")
        with pytest.raises(UnacceptableDescription, match="too short"):
            remote_transport(SessionDescription.parse(text))

    def test_missing_fingerprint(self) -> None:
        text = "".join(
            line + "\r\n"
            for line in str(offer("chromium_sendrecv.sdp")).split("\r\n")
            if line and not line.startswith("a=fingerprint")
        )
        with pytest.raises(UnacceptableDescription, match="fingerprint"):
            build_answer(SessionDescription.parse(text), LOCAL, session_id=1)

    def test_section_without_mid(self) -> None:
        source = replace_line(offer("chromium_sendrecv.sdp"), "mid:1", None)
        with pytest.raises(UnacceptableDescription, match="mid"):
            build_answer(source, LOCAL, session_id=1)

    def test_nothing_acceptable(self) -> None:
        policy = MediaPolicy(audio_codecs=(), video_codecs=())
        with pytest.raises(UnacceptableDescription, match="no offered section"):
            build_answer(offer("chromium_sendrecv.sdp"), LOCAL, session_id=1, policy=policy)

    def test_remote_transport_without_bundle_uses_the_first_live_section(self) -> None:
        source = replace_line(offer("chromium_sendrecv.sdp"), "group:BUNDLE 0 1", None)
        assert (
            remote_transport(source).ice_ufrag,
            remote_transport(source).ice_pwd,
        ) == source.ice_credentials(source.media[0])

    def test_all_rejected(self) -> None:
        text = (
            str(offer("chromium_sendrecv.sdp"))
            .replace("m=audio 9 ", "m=audio 0 ")
            .replace("m=video 9 ", "m=video 0 ")
        )
        with pytest.raises(UnacceptableDescription, match="rejected"):
            remote_transport(SessionDescription.parse(text))


class TestLocalTransport:
    @pytest.mark.parametrize(
        "changes",
        [
            {"ice_ufrag": "abc"},
            {"ice_pwd": "short"},
            {"addresses": ()},
            {"addresses": (("sfu.example", 443),)},
        ],
    )
    def test_invalid(self, changes: dict[str, object]) -> None:
        with pytest.raises(ValueError):
            dataclasses.replace(LOCAL, **changes)  # type: ignore[arg-type]

    def test_pwd_not_in_repr(self) -> None:
        assert LOCAL.ice_pwd not in repr(LOCAL)

    def test_candidates(self) -> None:
        assert LOCAL.candidates()[0] == Candidate("1", 1, "udp", 2130706431, "198.51.100.7", 443, "host")


class TestSubscriberOffer:
    """RFC 8829 §5.2.1: the SFU offers the tracks it forwards as sendonly sections."""

    publisher_answer = build_answer(offer("chromium_publish_simulcast.sdp"), LOCAL, session_id=1)

    def sections(self) -> list[SendSection]:
        audio = send_section_from(
            self.publisher_answer.media[0],
            mid="a1",
            ssrc=1111,
            rtx_ssrc=None,
            cname="pub1",
            stream_id="stream-1",
            track_id="audio-1",
        )
        video = send_section_from(
            self.publisher_answer.media[1],
            mid="v1",
            ssrc=2222,
            rtx_ssrc=3333,
            cname="pub1",
            stream_id="stream-1",
            track_id="video-1",
        )
        old = SendSection(mid="v0", kind="video", codecs=video.codecs, stopped=True)
        return [audio, video, old]

    def test_sections_reuse_the_publisher_payload_types_and_extension_ids(self) -> None:
        audio, video, _ = self.sections()
        assert [c.payload_type for c in video.codecs] == [96, 97, 108, 109]
        assert {e.uri for e in video.extensions} == {URI_MID, URI_ABS_SEND_TIME, URI_TRANSPORT_CC}
        assert [c.payload_type for c in audio.codecs] == [111]

    def test_offer(self) -> None:
        offer_ = build_subscriber_offer(LOCAL, self.sections(), session_id=9, session_version=3)
        assert (offer_.origin.session_id, offer_.origin.session_version) == (9, 3)
        assert offer_.get(Group) == Group("BUNDLE", ("a1", "v1"))
        assert offer_.has(IceLite)
        audio, video, old = offer_.media
        for media in (audio, video):
            assert media.direction is Direction.SENDONLY
            assert media.get(Setup) == Setup(SetupRole.ACTPASS)
            assert media.get(RtcpMux) == RtcpMux()
            assert media.get(Msid) is not None
            assert len(media.candidates) == 2
        assert video.get(SsrcGroup) == SsrcGroup("FID", (2222, 3333))
        assert Ssrc(2222, "cname", "pub1") in video.attributes
        assert Ssrc(3333, "msid", "stream-1 video-1") in video.attributes
        assert video.get(Msid) == Msid("stream-1", "video-1")
        assert set(audio.ssrcs()) == {1111}
        assert old.rejected and old.mid == "v0" and old.formats == ["96", "97", "108", "109"]
        assert SessionDescription.parse(str(offer_)) == offer_

    def test_rtx_dropped_without_rtx_ssrc(self) -> None:
        section = send_section_from(
            self.publisher_answer.media[1],
            mid="v",
            ssrc=1,
            rtx_ssrc=None,
            cname="c",
            stream_id="s",
            track_id="t",
        )
        assert [c.mime_subtype for c in section.codecs] == ["vp8", "h264"]

    def test_reoffer_keeps_the_dtls_role_and_inactive_sends_no_ssrc(self) -> None:
        audio, video, _ = self.sections()
        paused = dataclasses.replace(video, direction=Direction.INACTIVE)
        offer_ = build_subscriber_offer(
            LOCAL,
            [audio, paused],
            session_id=9,
            session_version=4,
            setup=SetupRole.PASSIVE,
            extmap_allow_mixed=False,
        )
        assert offer_.media[1].get(Setup) == Setup(SetupRole.PASSIVE)
        assert offer_.media[1].direction is Direction.INACTIVE
        assert offer_.media[1].ssrcs() == {}

    def test_duplicate_mids(self) -> None:
        audio, *_ = self.sections()
        with pytest.raises(ValueError):
            build_subscriber_offer(LOCAL, [audio, audio], session_id=1, session_version=1)

    def test_ssrc_without_cname_or_msid(self) -> None:
        section = SendSection("x", "audio", self.sections()[0].codecs, ssrc=5)
        media = build_subscriber_offer(LOCAL, [section], session_id=1, session_version=1).media[0]
        assert media.ssrcs() == {} and media.get(Msid) is None

    def test_extensions_are_written(self) -> None:
        section = SendSection("x", "audio", self.sections()[0].codecs, extensions=(ExtMap(4, URI_MID),))
        media = build_subscriber_offer(LOCAL, [section], session_id=1, session_version=1).media[0]
        assert media.extmaps == [ExtMap(4, URI_MID)]
        assert media.ssrcs() == {}  # no SSRC given


class TestAiortcAcceptsOurDescriptions:
    """aiortc as an independent peer: it takes the SFU's answer and answers the SFU's offer."""

    def test_aiortc_takes_our_answer(self) -> None:
        async def run() -> None:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            try:
                pc.addTrack(AudioStreamTrack())
                pc.addTrack(VideoStreamTrack())
                pc.createDataChannel("chat")  # rejected by the SFU
                await pc.setLocalDescription(await pc.createOffer())
                answer = build_answer(SessionDescription.parse(pc.localDescription.sdp), LOCAL, session_id=5)
                await pc.setRemoteDescription(RTCSessionDescription(str(answer), "answer"))
                assert pc.signalingState == "stable"
                kinds = [(t.kind, t.currentDirection) for t in pc.getTransceivers()]
                assert kinds == [("audio", "sendonly"), ("video", "sendonly")]
            finally:
                await pc.close()

        asyncio.run(run())

    def test_aiortc_answers_our_subscriber_offer(self) -> None:
        sections = TestSubscriberOffer().sections()

        async def run() -> SessionDescription:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            try:
                offer_ = build_subscriber_offer(LOCAL, sections, session_id=9, session_version=1)
                await pc.setRemoteDescription(RTCSessionDescription(str(offer_), "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                return SessionDescription.parse(pc.localDescription.sdp)
            finally:
                await pc.close()

        answer = asyncio.run(run())
        audio, video = answer.media[:2]
        assert (audio.mid, video.mid) == ("a1", "v1")
        assert answer.direction_of(audio) is Direction.RECVONLY
        assert answer.direction_of(video) is Direction.RECVONLY
        assert remote_transport(answer).setup is SetupRole.ACTIVE  # the SFU stays the DTLS server
        assert [c.payload_type for c in video.codecs()][:2] == [96, 97]
