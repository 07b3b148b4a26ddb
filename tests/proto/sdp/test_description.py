"""Session descriptions: RFC 8866 example, captured Chromium and aiortc offers, malformed input, fuzzing.

The ``fixtures/chromium_*.sdp`` files were captured from headless Chromium 156 with
``python -m tests.proto.sdp.chromium``; ``fixtures/aiortc_offer.sdp`` from aiortc 1.16.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meet443.exceptions import ParseError
from meet443.proto.sdp.attributes import (
    Direction,
    Fingerprint,
    Group,
    IceUfrag,
    Mid,
    RidDirection,
    SetupRole,
    SimulcastStream,
    SsrcGroup,
    UnknownAttribute,
)
from meet443.proto.sdp.codecs import Codec, H264Profile, h264_profile
from meet443.proto.sdp.description import (
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
)

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_FILES = sorted(FIXTURES.glob("*.sdp"))

# RFC 8866 §5 example (https://www.rfc-editor.org/rfc/rfc8866#section-5), with CRLF line ends.
RFC8866_EXAMPLE = (
    "v=0\r\n"
    "o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1\r\n"
    "s=Call to John Smith\r\n"
    "i=SDP Offer #1\r\n"
    "u=http://www.jdoe.example.com/home.html\r\n"
    "e=Jane Doe <jane@jdoe.example.com>\r\n"
    "p=+1 617 555-6011\r\n"
    "c=IN IP4 198.51.100.1\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 0\r\n"
    "m=audio 49180 RTP/AVP 0\r\n"
    "m=video 51372 RTP/AVP 99\r\n"
    "c=IN IP6 2001:db8::2\r\n"
    "a=rtpmap:99 h263-1998/90000\r\n"
)


def load(name: str) -> SessionDescription:
    return SessionDescription.parse((FIXTURES / name).read_bytes())


class TestRfc8866Section5Example:
    def test_fields(self) -> None:
        description = SessionDescription.parse(RFC8866_EXAMPLE)
        assert description.origin == Origin("jdoe", 3724394400, 3724394405, "IN", "IP4", "198.51.100.1")
        assert description.name == "Call to John Smith"
        assert description.information == "SDP Offer #1"
        assert description.uri == "http://www.jdoe.example.com/home.html"
        assert description.emails == ["Jane Doe <jane@jdoe.example.com>"]
        assert description.phones == ["+1 617 555-6011"]
        assert description.connection == Connection("IN", "IP4", "198.51.100.1")
        assert description.times == [Timing(0, 0)]
        assert [(m.kind, m.port, m.proto, m.formats) for m in description.media] == [
            ("audio", 49170, "RTP/AVP", ["0"]),
            ("audio", 49180, "RTP/AVP", ["0"]),
            ("video", 51372, "RTP/AVP", ["99"]),
        ]
        video = description.media[2]
        assert description.connection_of(video) == Connection("IN", "IP6", "2001:db8::2")
        assert description.connection_of(description.media[0]) == description.connection
        # PCMU is a static payload type (RFC 3551 §6): a codec without a=rtpmap.
        assert description.media[0].codecs() == [Codec(0, "PCMU", 8000, 1)]
        assert video.codecs() == [Codec(99, "h263-1998", 90000)]

    def test_round_trip(self) -> None:
        assert str(SessionDescription.parse(RFC8866_EXAMPLE)) == RFC8866_EXAMPLE

    def test_lf_line_ends_are_accepted_and_written_as_crlf(self) -> None:
        description = SessionDescription.parse(RFC8866_EXAMPLE.replace("\r\n", "\n"))
        assert str(description) == RFC8866_EXAMPLE

    def test_every_line_type(self) -> None:
        text = (
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nb=AS:256\r\nt=3034423619 3042462419\r\n"
            "r=7d 1h 0 25h\r\nt=0 0\r\nz=2882844526 -1h\r\nk=prompt\r\na=recvonly\r\n"
            "m=audio 49170/2 RTP/AVP 0\r\ni=voice\r\nc=IN IP4 224.2.1.1/127\r\nb=TIAS:64000\r\nk=prompt\r\n"
        )
        description = SessionDescription.parse(text)
        assert str(description) == text
        assert description.bandwidths == [Bandwidth("AS", 256)]
        assert description.times[0].repeats == ("7d 1h 0 25h",)
        assert description.zone == "2882844526 -1h"
        media = description.media[0]
        assert (media.port, media.port_count, media.information, media.key) == (49170, 2, "voice", "prompt")
        assert description.direction_of(media) is Direction.RECVONLY  # session-level default


class TestFixtureRoundTrip:
    @pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
    def test_byte_for_byte(self, path: Path) -> None:
        raw = path.read_bytes()
        description = SessionDescription.parse(raw)
        assert bytes(description) == raw
        assert SessionDescription.parse(str(description)) == description

    def test_fixtures_are_present(self) -> None:
        names = {p.name for p in FIXTURE_FILES}
        assert {"chromium_publish_simulcast.sdp", "chromium_sendrecv.sdp", "chromium_recvonly.sdp"} <= names
        assert "aiortc_offer.sdp" in names


class TestChromiumSimulcastOffer:
    """Chromium's Unified Plan offer: audio, 3-layer simulcast video (rids q, h, f), a data channel."""

    description = load("chromium_publish_simulcast.sdp")

    def test_bundle_and_mids(self) -> None:
        assert self.description.bundle_groups() == [Group("BUNDLE", ("0", "1", "2"))]
        assert [m.mid for m in self.description.media] == ["0", "1", "2"]
        assert [m.kind for m in self.description.media] == ["audio", "video", "application"]
        assert self.description.media_by_mid("1") is self.description.media[1]
        assert self.description.media_by_mid("9") is None
        assert not self.description.ice_lite

    def test_transport(self) -> None:
        for media in self.description.media:
            credentials = self.description.ice_credentials(media)
            assert credentials is not None
            ufrag, pwd = credentials
            assert len(ufrag) >= 4 and len(pwd) >= 22
            assert self.description.ice_options(media) == ("trickle",)
            (fingerprint,) = self.description.fingerprints(media)
            assert fingerprint.hash_function == "sha-256" and len(fingerprint.digest) == 32
            assert self.description.setup_of(media) is SetupRole.ACTPASS
        audio = self.description.media[0]
        assert all(c.component == 1 for c in audio.candidates)
        assert {c.transport for c in audio.candidates} == {"udp", "tcp"}

    def test_audio(self) -> None:
        audio = self.description.media[0]
        assert audio.direction is Direction.SENDRECV
        assert audio.rtcp_mux
        opus = audio.codecs()[0]
        assert (opus.payload_type, opus.mime_subtype, opus.clock_rate, opus.channels) == (
            111,
            "opus",
            48000,
            2,
        )
        assert opus.fmtp == {"minptime": "10", "useinbandfec": "1"}
        assert opus.feedback == (("transport-cc", None),)
        assert audio.extension_id("urn:ietf:params:rtp-hdrext:ssrc-audio-level") == 1
        assert audio.msid is not None
        (ssrc,) = audio.ssrcs()
        assert set(audio.ssrcs()[ssrc]) == {"cname", "msid"}

    def test_video_simulcast(self) -> None:
        video = self.description.media[1]
        assert video.direction is Direction.SENDONLY
        assert [(r.rid, r.direction) for r in video.rids] == [
            ("q", RidDirection.SEND),
            ("h", RidDirection.SEND),
            ("f", RidDirection.SEND),
        ]
        assert video.simulcast is not None
        assert video.simulcast.send == (
            (SimulcastStream("q"),),
            (SimulcastStream("h"),),
            (SimulcastStream("f"),),
        )
        assert video.extension_id("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id") == 10
        assert video.ssrcs() == {}  # with RIDs Chromium announces no SSRCs

    def test_video_codecs(self) -> None:
        codecs = {c.payload_type: c for c in self.description.media[1].codecs()}
        vp8 = codecs[96]
        assert vp8.mime_subtype == "vp8"
        assert set(vp8.feedback) == {
            ("goog-remb", None),
            ("transport-cc", None),
            ("ccm", "fir"),
            ("nack", None),
            ("nack", "pli"),
        }
        assert codecs[97].apt == 96 and vp8.apt is None
        h264 = [c for c in codecs.values() if c.mime_subtype == "h264"]
        assert {c.fmtp["profile-level-id"] for c in h264} >= {"42001f", "42e01f"}

    def test_data_channel(self) -> None:
        application = self.description.media[2]
        assert application.proto == "UDP/DTLS/SCTP" and application.formats == ["webrtc-datachannel"]
        assert application.codecs() == []
        assert application.payload_types == ()

    def test_unknown_attributes_survive(self) -> None:
        assert UnknownAttribute("rtcp-xr", "rcvr-rtt=all") in self.description.media[0].attributes
        assert any(
            isinstance(a, UnknownAttribute) and a.attribute == "msid-semantic"
            for a in self.description.attributes
        )


class TestChromiumOtherOffers:
    def test_sendrecv_video_has_fid_group(self) -> None:
        video = load("chromium_sendrecv.sdp").media[1]
        (group,) = video.ssrc_groups
        assert group.semantics == "FID" and len(group.ssrcs) == 2
        assert set(video.ssrcs()) == set(group.ssrcs)
        assert video.get(SsrcGroup) == group

    def test_recvonly_offer(self) -> None:
        description = load("chromium_recvonly.sdp")
        assert [description.direction_of(m) for m in description.media] == [Direction.RECVONLY] * 3
        assert all(m.candidates == [] for m in description.media)


class TestAiortcOffer:
    description = load("aiortc_offer.sdp")

    def test_key_fields(self) -> None:
        audio, video, application = self.description.media
        assert self.description.bundle_groups()[0].mids == ("0", "1", "2")
        assert [f.hash_function for f in self.description.fingerprints(audio)] == [
            "sha-256",
            "sha-384",
            "sha-512",
        ]
        assert audio.candidates[-1].address == audio.candidates[-1].address  # parsed
        assert audio.has(type(audio.attributes[0]))
        assert video.ssrc_groups[0].semantics == "FID"
        vp8, rtx = video.codecs()[:2]
        assert (vp8.mime_subtype, rtx.apt) == ("vp8", vp8.payload_type)
        assert application.get(Mid) == Mid("2")


class TestH264Profiles:
    """RFC 6184 §8.1 profile-level-id (https://www.rfc-editor.org/rfc/rfc6184#section-8.1)."""

    @pytest.mark.parametrize(
        ("text", "constrained", "baseline"),
        [
            ("42e01f", True, True),  # Constrained Baseline 3.1
            ("42001f", False, True),  # Baseline 3.1
            ("4d001f", False, False),  # Main
            ("4de01f", True, True),  # Main with constraint_set1: Constrained Baseline
            ("f4001f", False, False),  # High 4:4:4
        ],
    )
    def test_profiles(self, text: str, constrained: bool, baseline: bool) -> None:
        profile = H264Profile.parse(text)
        assert (profile.constrained_baseline, profile.baseline_family) == (constrained, baseline)

    def test_default_and_malformed(self) -> None:
        assert h264_profile(Codec(102, "H264", 90000)) == H264Profile(0x42, 0, 0x0A)
        assert h264_profile(Codec(102, "H264", 90000, parameters="profile-level-id=zz")) is None
        assert h264_profile(Codec(102, "H264", 90000, parameters="profile-level-id=zzzzzz")) is None
        with pytest.raises(ParseError):
            H264Profile.parse("42e0")


class TestCodecView:
    def test_rtx_without_a_numeric_apt(self) -> None:
        assert Codec(97, "rtx", 90000, parameters="apt=x").apt is None
        assert Codec(97, "rtx", 90000).apt is None

    def test_dynamic_payload_type_without_rtpmap_is_skipped(self) -> None:
        text = (
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
            "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:97 VP8/90000\r\na=rtcp-fb:* nack\r\n"
        )
        media = SessionDescription.parse(text).media[0]
        assert media.codecs() == [Codec(97, "VP8", 90000, feedback=(("nack", None),))]
        assert media.extension_id("urn:ietf:params:rtp-hdrext:sdes:mid") is None


class TestMalformed:
    @pytest.mark.parametrize(
        "text",
        [
            "",
            "\r\n",
            "o=- 1 1 IN IP4 0.0.0.0\r\nv=0\r\n",  # v= not first
            "v=1\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",  # version
            "v=0\r\ns=-\r\nt=0 0\r\n",  # no o=
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nt=0 0\r\n",  # no s=
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\n",  # no t=
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nx=1\r\n",  # unknown type letter
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\ns=again\r\nt=0 0\r\n",  # repeated s=
            "v=0\r\no=- 1 1 IN IP4\r\ns=-\r\nt=0 0\r\n",  # short o=
            "v=0\r\no=- x 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",  # session id
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=\r\nt=0 0\r\n",  # empty s=
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0\r\n",  # short t=
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nr=1 2 3\r\nt=0 0\r\n",  # r= before t=
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4\r\nt=0 0\r\n",
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nb=AS\r\nt=0 0\r\n",
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\r\nm=audio 9 RTP/AVP 0\r\n",  # blank line
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9\r\n",  # short m=
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 99999 RTP/AVP 0\r\n",
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\nt=0 0\r\n",
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\ni=a\r\ni=b\r\n",
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\nk=a\r\nk=b\r\n",
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=rtpmap:x\r\n",
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=x\x00y\r\n",
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=x\ry\r\n",
        ],
    )
    def test_rejected(self, text: str) -> None:
        with pytest.raises(ParseError):
            SessionDescription.parse(text)

    def test_not_utf8(self) -> None:
        with pytest.raises(ParseError):
            SessionDescription.parse(b"v=0\r\ns=\xff\r\n")


class TestBuilding:
    def test_a_description_built_in_code_prints_and_parses_back(self) -> None:
        media = MediaDescription("audio", 9, "UDP/TLS/RTP/SAVPF", ["111"], connections=[Connection()])
        media.attributes += [Mid("0"), IceUfrag("abcd"), Fingerprint("sha-256", bytes(32))]
        description = SessionDescription(origin=Origin("-", 7, 1), media=[media])
        text = str(description)
        assert text.startswith("v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 ")
        assert SessionDescription.parse(text) == description

    def test_connection_for_address(self) -> None:
        assert Connection.for_address("2001:db8::1") == Connection("IN", "IP6", "2001:db8::1")
        assert Connection.for_address("192.0.2.1") == Connection("IN", "IP4", "192.0.2.1")


_LINES = [line for path in FIXTURE_FILES for line in path.read_bytes().decode().split("\r\n")[1:] if line]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_LINES), max_size=40), st.lists(st.text(max_size=30), max_size=3))
def test_parser_raises_only_parse_error_and_round_trips(lines: list[str], noise: list[str]) -> None:
    text = "\r\n".join(["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", *lines, *noise]) + "\r\n"
    try:
        description = SessionDescription.parse(text)
    except ParseError:
        return
    assert SessionDescription.parse(str(description)) == description


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        SessionDescription.parse(data)
