"""Typed SDP attributes both ways: RFC examples, browser lines, malformed input, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meet443.exceptions import ParseError
from meet443.proto.sdp.attributes import (
    Attribute,
    BundleOnly,
    Candidate,
    Direction,
    DirectionAttribute,
    EndOfCandidates,
    ExtMap,
    ExtmapAllowMixed,
    Fingerprint,
    Fmtp,
    Group,
    IceLite,
    IceOptions,
    IcePwd,
    IceUfrag,
    MaxMessageSize,
    Mid,
    Msid,
    Rid,
    RidDirection,
    Rtcp,
    RtcpFb,
    RtcpMux,
    RtcpMuxOnly,
    RtcpRsize,
    RtpMap,
    SctpPort,
    Setup,
    SetupRole,
    Simulcast,
    SimulcastStream,
    Ssrc,
    SsrcGroup,
    UnknownAttribute,
    fmtp_parameters,
    parse_attribute,
)


def roundtrip(line: str) -> Attribute:
    """Parse the text after ``a=`` and check it prints back identically."""
    attribute = parse_attribute(line)
    assert str(attribute) == line
    assert parse_attribute(str(attribute)) == attribute
    return attribute


class TestRfc5245Section15Examples:
    """Candidate and credential lines of the example in RFC 5245 §15.1, still valid under RFC 8839
    (https://www.rfc-editor.org/rfc/rfc5245#section-15.1, https://www.rfc-editor.org/rfc/rfc8839#section-5.1)."""

    def test_host_candidate(self) -> None:
        candidate = roundtrip("candidate:1 1 UDP 2130706431 10.0.1.1 8998 typ host")
        assert candidate == Candidate("1", 1, "UDP", 2130706431, "10.0.1.1", 8998, "host")

    def test_srflx_candidate_with_related_address(self) -> None:
        candidate = roundtrip(
            "candidate:2 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 10.0.1.1 rport 8998"
        )
        assert isinstance(candidate, Candidate)
        assert (candidate.type, candidate.related_address, candidate.related_port) == (
            "srflx",
            "10.0.1.1",
            8998,
        )

    def test_credentials(self) -> None:
        assert roundtrip("ice-pwd:asd88fgpdd777uzjYhagZg") == IcePwd("asd88fgpdd777uzjYhagZg")
        assert roundtrip("ice-ufrag:8hhY") == IceUfrag("8hhY")


class TestRfc8839Ice:
    """RFC 8839 §5 (https://www.rfc-editor.org/rfc/rfc8839#section-5)."""

    def test_chromium_candidate_extensions_keep_their_order(self) -> None:
        line = (
            "candidate:3397835197 1 tcp 1518214911 192.0.2.2 9 typ host"
            " tcptype active generation 0 network-id 1"
        )
        candidate = roundtrip(line)
        assert isinstance(candidate, Candidate)
        assert candidate.extensions == (("tcptype", "active"), ("generation", "0"), ("network-id", "1"))
        assert candidate.extension("tcptype") == "active"
        assert candidate.extension("ufrag") is None

    def test_mdns_candidate_address_stays_text(self) -> None:
        candidate = roundtrip(
            "candidate:1 1 udp 2122262783 3f8a1c8e-6c2b-4b6e-9a4f-1c2d3e4f5a6b.local 54321 typ host"
        )
        assert isinstance(candidate, Candidate)
        assert candidate.address.endswith(".local")

    def test_flags_and_options(self) -> None:
        assert roundtrip("ice-lite") == IceLite()
        assert roundtrip("end-of-candidates") == EndOfCandidates()
        assert roundtrip("ice-options:trickle renomination") == IceOptions(("trickle", "renomination"))

    def test_pwd_is_not_in_repr(self) -> None:
        assert "asd88" not in repr(IcePwd("asd88fgpdd777uzjYhagZg"))

    @pytest.mark.parametrize(
        "line",
        [
            "candidate:1 1 UDP 2130706431 10.0.1.1 8998 host",  # no "typ"
            "candidate:1 1 UDP 2130706431 10.0.1.1 8998 type host",  # "typ" misspelt
            "candidate:1 1 UDP 2130706431 10.0.1.1 8998 typ",  # too short
            "candidate:1 0 UDP 2130706431 10.0.1.1 8998 typ host",  # component 0
            "candidate:1 1 UDP 2130706431 10.0.1.1 70000 typ host",  # port
            "candidate:1 1 UDP -5 10.0.1.1 8998 typ host",  # priority
            "candidate:1 1 UDP 2130706431 10.0.1.1 8998 typ host generation",  # dangling extension
            "candidate:a-b 1 UDP 2130706431 10.0.1.1 8998 typ host",  # foundation not ice-chars
            "candidate:1  1 UDP 2130706431 10.0.1.1 8998 typ host",  # double space
            "ice-ufrag:has space",
            "ice-ufrag:bad!chars",
            "ice-pwd",
            "ice-lite:yes",
        ],
    )
    def test_malformed(self, line: str) -> None:
        with pytest.raises(ParseError):
            parse_attribute(line)


class TestRfc8122Fingerprint:
    """RFC 8122 §5 (https://www.rfc-editor.org/rfc/rfc8122#section-5)."""

    def test_rfc_example(self) -> None:
        # The example of RFC 8122 §5 (and RFC 4572 §5), joined onto one line.
        fingerprint = roundtrip(
            "fingerprint:SHA-1 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB"
        )
        assert isinstance(fingerprint, Fingerprint)
        assert fingerprint.hash_function == "sha-1"
        assert fingerprint.digest == bytes.fromhex("4AADB9B13F82183B540212DF3E5D496B19E57CAB")

    def test_lower_case_hex_parses_to_the_same_digest(self) -> None:
        upper = parse_attribute("fingerprint:sha-256 " + ":".join(["AB"] * 32))
        lower = parse_attribute("fingerprint:sha-256 " + ":".join(["ab"] * 32))
        assert upper == lower
        assert str(lower) == str(upper)  # canonical UHEX on the way out

    @pytest.mark.parametrize(
        "line",
        [
            "fingerprint:sha-256 AB:CD",  # wrong length for sha-256
            "fingerprint:sha-256 ABCD",  # not colon separated
            "fingerprint:sha-256 ZZ:" + ":".join(["00"] * 31),
            "fingerprint:sha-256",
            "fingerprint:sha-256 AB AB",
        ],
    )
    def test_malformed(self, line: str) -> None:
        with pytest.raises(ParseError):
            parse_attribute(line)

    def test_unknown_hash_function_keeps_any_length(self) -> None:
        assert isinstance(roundtrip("fingerprint:sha-3000 AB:CD"), Fingerprint)


class TestRfc8842Setup:
    """RFC 4145 §4 / RFC 8842 §5 (https://www.rfc-editor.org/rfc/rfc8842#section-5)."""

    @pytest.mark.parametrize("role", list(SetupRole))
    def test_roles(self, role: SetupRole) -> None:
        assert roundtrip(f"setup:{role.value}") == Setup(role)

    def test_unknown_role(self) -> None:
        with pytest.raises(ParseError):
            parse_attribute("setup:sometimes")


class TestRfc8285Extmap:
    """RFC 8285 §5, §6 (https://www.rfc-editor.org/rfc/rfc8285#section-5)."""

    def test_rfc_examples(self) -> None:
        # RFC 8285 §7 example lines.
        assert roundtrip("extmap:1 http://example.com/082005/ext.htm#ttime") == ExtMap(
            1, "http://example.com/082005/ext.htm#ttime"
        )
        assert roundtrip("extmap:2/sendrecv http://example.com/082005/ext.htm#xmeta short") == ExtMap(
            2, "http://example.com/082005/ext.htm#xmeta", Direction.SENDRECV, "short"
        )

    def test_allow_mixed(self) -> None:
        assert roundtrip("extmap-allow-mixed") == ExtmapAllowMixed()

    @pytest.mark.parametrize(
        "line",
        ["extmap:0 urn:x", "extmap:4352 urn:x", "extmap:1", "extmap:1/sideways urn:x", "extmap:x urn:y"],
    )
    def test_malformed(self, line: str) -> None:
        with pytest.raises(ParseError):
            parse_attribute(line)


class TestRtpAttributes:
    """RFC 8866 §6.6 rtpmap, §6.15 fmtp; RFC 4585 §4.2 rtcp-fb; RFC 3605 rtcp."""

    def test_rtpmap(self) -> None:
        assert roundtrip("rtpmap:111 opus/48000/2") == RtpMap(111, "opus", 48000, 2)
        assert roundtrip("rtpmap:96 VP8/90000") == RtpMap(96, "VP8", 90000)

    def test_fmtp(self) -> None:
        fmtp = roundtrip("fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f")
        assert isinstance(fmtp, Fmtp)
        assert fmtp.parameters == {
            "level-asymmetry-allowed": "1",
            "packetization-mode": "1",
            "profile-level-id": "42001f",
        }
        red = roundtrip("fmtp:63 111/111")
        assert isinstance(red, Fmtp)
        assert red.parameters == {"111/111": ""}

    def test_fmtp_parameters_are_case_insensitive_keys(self) -> None:
        assert fmtp_parameters(" Apt=96 ; ;x") == {"apt": "96", "x": ""}

    def test_rtcp_fb(self) -> None:
        assert roundtrip("rtcp-fb:96 nack pli") == RtcpFb(96, "nack", "pli")
        assert roundtrip("rtcp-fb:96 goog-remb") == RtcpFb(96, "goog-remb")
        wildcard = roundtrip("rtcp-fb:* nack")
        assert wildcard == RtcpFb(None, "nack")
        assert isinstance(wildcard, RtcpFb)
        assert wildcard.feedback == ("nack", None)
        assert roundtrip("rtcp-fb:98 ccm tmmbr smaxpr=120") == RtcpFb(98, "ccm", "tmmbr smaxpr=120")

    def test_rtcp(self) -> None:
        assert roundtrip("rtcp:9 IN IP4 0.0.0.0") == Rtcp(9, "IN", "IP4", "0.0.0.0")
        assert roundtrip("rtcp:53020") == Rtcp(53020)

    def test_flags(self) -> None:
        assert roundtrip("rtcp-mux") == RtcpMux()
        assert roundtrip("rtcp-mux-only") == RtcpMuxOnly()
        assert roundtrip("rtcp-rsize") == RtcpRsize()
        assert roundtrip("bundle-only") == BundleOnly()

    @pytest.mark.parametrize("direction", list(Direction))
    def test_direction(self, direction: Direction) -> None:
        assert roundtrip(direction.value) == DirectionAttribute(direction)
        with pytest.raises(ParseError):
            parse_attribute(f"{direction.value}:now")

    def test_direction_algebra(self) -> None:
        assert Direction.SENDONLY.reversed() is Direction.RECVONLY
        assert Direction.SENDRECV.reversed() is Direction.SENDRECV
        assert Direction.INACTIVE.reversed() is Direction.INACTIVE
        assert Direction.of(sends=False, receives=True) is Direction.RECVONLY

    @pytest.mark.parametrize(
        "line",
        [
            "rtpmap:128 VP8/90000",
            "rtpmap:96 VP8",
            "rtpmap:96 /90000",
            "rtpmap:96 VP8/0",
            "fmtp:96",
            "fmtp:abc x=1",
            "rtcp-fb:96",
            "rtcp-fb:x nack",
            "rtcp-fb:96 nack ",
            "rtcp:9 IN IP4",
        ],
    )
    def test_malformed(self, line: str) -> None:
        with pytest.raises(ParseError):
            parse_attribute(line)


class TestRfc5576Ssrc:
    """RFC 5576 §4.1, §4.2 (https://www.rfc-editor.org/rfc/rfc5576#section-4)."""

    def test_ssrc(self) -> None:
        assert roundtrip("ssrc:3494677738 cname:lhpz1Zr12PkUPrE2") == Ssrc(
            3494677738, "cname", "lhpz1Zr12PkUPrE2"
        )
        msid = roundtrip("ssrc:1 msid:stream track")
        assert msid == Ssrc(1, "msid", "stream track")
        assert roundtrip("ssrc:7 foo") == Ssrc(7, "foo")

    def test_fid_group(self) -> None:
        assert roundtrip("ssrc-group:FID 3723165085 2839483243") == SsrcGroup("FID", (3723165085, 2839483243))

    @pytest.mark.parametrize(
        "line", ["ssrc:1", "ssrc:4294967296 cname:x", "ssrc-group:FID", "ssrc-group:FID x"]
    )
    def test_malformed(self, line: str) -> None:
        with pytest.raises(ParseError):
            parse_attribute(line)


class TestRfc8851Rid:
    """RFC 8851 §10 (https://www.rfc-editor.org/rfc/rfc8851#section-10)."""

    def test_plain(self) -> None:
        assert roundtrip("rid:q send") == Rid("q", RidDirection.SEND)

    def test_restrictions(self) -> None:
        rid = roundtrip("rid:1 send pt=97,98;max-width=1280;max-height=720")
        assert isinstance(rid, Rid)
        assert rid.payload_types == (97, 98)
        assert Rid("f", RidDirection.RECV).payload_types == ()

    @pytest.mark.parametrize("line", ["rid:q", "rid:q sideways", "rid:q! send", "rid:q send "])
    def test_malformed(self, line: str) -> None:
        with pytest.raises(ParseError):
            parse_attribute(line)


class TestRfc8853Simulcast:
    """RFC 8853 §5.1 (https://www.rfc-editor.org/rfc/rfc8853#section-5.1)."""

    def test_chromium_send(self) -> None:
        simulcast = roundtrip("simulcast:send q;h;f")
        assert simulcast == Simulcast(
            send=((SimulcastStream("q"),), (SimulcastStream("h"),), (SimulcastStream("f"),))
        )
        assert isinstance(simulcast, Simulcast)
        assert Simulcast.rids_of(simulcast.send) == ("q", "h", "f")

    def test_alternatives_paused_and_both_directions(self) -> None:
        simulcast = roundtrip("simulcast:send 1;2,~4;3 recv c")
        assert isinstance(simulcast, Simulcast)
        assert simulcast.send[1] == (SimulcastStream("2"), SimulcastStream("4", paused=True))
        assert simulcast.recv == ((SimulcastStream("c"),),)

    def test_recv_first_round_trips_to_an_equal_value(self) -> None:
        simulcast = parse_attribute("simulcast:recv a;b send c")
        assert str(simulcast) == "simulcast:send c recv a;b"
        assert parse_attribute(str(simulcast)) == simulcast

    @pytest.mark.parametrize(
        "line",
        [
            "simulcast:send",
            "simulcast:both a",
            "simulcast:send a send b",
            "simulcast:send a recv",
            "simulcast:send a;;b",
            "simulcast:send ~",
        ],
    )
    def test_malformed(self, line: str) -> None:
        with pytest.raises(ParseError):
            parse_attribute(line)


class TestGroupingAndIdentity:
    """RFC 5888 §4-§5, RFC 9143, RFC 8830 §2, RFC 8841."""

    def test_group(self) -> None:
        assert roundtrip("group:BUNDLE 0 1 2") == Group("BUNDLE", ("0", "1", "2"))
        assert roundtrip("group:BUNDLE") == Group("BUNDLE")
        assert roundtrip("group:LS 1 2") == Group("LS", ("1", "2"))

    def test_mid_and_msid(self) -> None:
        assert roundtrip("mid:audio") == Mid("audio")
        assert roundtrip("msid:stream track") == Msid("stream", "track")
        assert roundtrip("msid:- track") == Msid("-", "track")
        assert roundtrip("msid:stream") == Msid("stream")

    def test_data_channel_attributes(self) -> None:
        assert roundtrip("sctp-port:5000") == SctpPort(5000)
        assert roundtrip("max-message-size:262144") == MaxMessageSize(262144)

    @pytest.mark.parametrize(
        "line", ["group:", "mid:", "mid:a b", "msid:a b c", "sctp-port:x", "max-message-size:"]
    )
    def test_malformed(self, line: str) -> None:
        with pytest.raises(ParseError):
            parse_attribute(line)


class TestUnknownAttributes:
    def test_kept_verbatim(self) -> None:
        # Chromium's space after the colon must survive.
        assert roundtrip("msid-semantic: WMS c759d371") == UnknownAttribute("msid-semantic", " WMS c759d371")
        assert roundtrip("rtcp-xr:rcvr-rtt=all") == UnknownAttribute("rtcp-xr", "rcvr-rtt=all")
        assert roundtrip("x-flag") == UnknownAttribute("x-flag", None)
        assert roundtrip("x-empty:") == UnknownAttribute("x-empty", "")

    def test_name_must_be_a_token(self) -> None:
        with pytest.raises(ParseError):
            parse_attribute("bad name:1")


# -- fuzzing --------------------------------------------------------------------------------------

_rid = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)
_ice = st.from_regex(r"[A-Za-z0-9+/]{1,12}", fullmatch=True)
_token = st.from_regex(r"[A-Za-z0-9\-.]{1,10}", fullmatch=True)
_streams = st.lists(
    st.lists(st.builds(SimulcastStream, _rid, st.booleans()), min_size=1, max_size=3).map(tuple),
    min_size=1,
    max_size=4,
).map(tuple)

ATTRIBUTES = st.one_of(
    st.builds(
        Candidate,
        _ice,
        st.integers(1, 256),
        st.sampled_from(["udp", "UDP", "tcp"]),
        st.integers(0, 2**32 - 1),
        st.sampled_from(["192.0.2.1", "2001:db8::1", "x.local"]),
        st.integers(0, 65535),
        st.sampled_from(["host", "srflx", "relay", "prflx"]),
        st.none() | st.just("10.0.0.1"),
        st.none() | st.integers(0, 65535),
        st.lists(st.tuples(st.sampled_from(["generation", "network-id", "ufrag"]), _ice), max_size=3).map(
            tuple
        ),
    ),
    st.builds(
        ExtMap, st.integers(1, 4351), _token, st.none() | st.sampled_from(list(Direction)), st.none() | _token
    ),
    st.builds(
        RtpMap, st.integers(0, 127), _token, st.integers(1, 2**32 - 1), st.none() | st.integers(1, 255)
    ),
    st.builds(RtcpFb, st.none() | st.integers(0, 127), _token, st.none() | _token),
    st.builds(Rid, _rid, st.sampled_from(list(RidDirection)), st.none() | st.just("pt=96;max-fps=30")),
    st.builds(Simulcast, _streams, st.just(())),
    st.builds(Simulcast, _streams, _streams),
    st.builds(Fingerprint, st.sampled_from(["sha-256", "SHA-256"]), st.binary(min_size=32, max_size=32)),
    st.builds(SsrcGroup, _token, st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4).map(tuple)),
    st.builds(Ssrc, st.integers(0, 2**32 - 1), _token, st.none() | _token),
    st.builds(Group, _token, st.lists(_token, max_size=4).map(tuple)),
)


@settings(deadline=None)
@given(ATTRIBUTES)
def test_typed_attributes_round_trip(attribute: Attribute) -> None:
    assert parse_attribute(str(attribute)) == attribute


@settings(deadline=None)
@given(st.text(max_size=120))
def test_parser_raises_only_parse_error(text: str) -> None:
    try:
        attribute = parse_attribute(text)
    except ParseError:
        return
    assert parse_attribute(str(attribute)) == attribute
