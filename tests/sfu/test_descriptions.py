"""What the SFU reads from a publish offer and writes into a subscribe offer (sfu/descriptions.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from meet443.proto.sdp.attributes import Direction, Fingerprint, SetupRole
from meet443.proto.sdp.description import SessionDescription
from meet443.proto.sdp.negotiation import URI_MID, URI_RID, URI_TRANSPORT_CC, LocalTransport, build_answer
from meet443.sfu.descriptions import (
    PUBLISH_POLICY,
    SUBSCRIBER_PROFILE,
    accepted_codecs,
    published_tracks,
    publisher_video_codecs,
    subscriber_offer,
)
from meet443.sfu.tracks import Slot, TrackCodec

FIXTURES = Path(__file__).parents[1] / "proto" / "sdp" / "fixtures"
LOCAL = LocalTransport("sfuU", "s" * 24, Fingerprint("sha-256", bytes(range(32))), (("203.0.113.5", 443),))


def negotiate(name: str, sources: dict[str, str]) -> list:
    offer = SessionDescription.parse((FIXTURES / name).read_bytes())
    answer = build_answer(offer, LOCAL, session_id=1, policy=PUBLISH_POLICY)
    return published_tracks(offer, answer, sources)


def test_chromium_simulcast_publish() -> None:
    """Chromium's offer: Opus, VP8 with RIDs q;h;f (RFC 8853), and a data channel left out."""
    audio, video = negotiate("chromium_publish_simulcast.sdp", {"0": "microphone", "1": "camera"})
    assert (audio.track_id, audio.kind, audio.source) == ("0", "audio", "microphone")
    assert audio.codecs[0] == TrackCodec("opus", 111, 48000, None)
    assert (video.track_id, video.kind, video.source) == ("1", "video", "camera")
    assert video.rids == ("q", "h", "f"), "lowest first, as the browser orders its encodings"
    assert video.codecs[0].name == "vp8" and video.codecs[0].rtx_payload_type == 97
    uris = dict(video.extensions)
    assert URI_MID in uris and URI_RID in uris
    assert URI_TRANSPORT_CC not in uris, "publishers fall back to REMB, which the router sends"
    assert video.ssrcs == ()  # RID simulcast announces no SSRCs: the router learns them


def test_aiortc_publish_with_rtx_ssrcs() -> None:
    """aiortc announces one SSRC and its RTX partner (RFC 5576 FID, RFC 4588 §8.2)."""
    audio, video = negotiate("aiortc_offer.sdp", {"1": "screen"})
    assert audio.source == "microphone", "a section not in sources gets its kind's default"
    assert video.source == "screen"
    assert video.ssrcs == (2448158011,)
    assert video.rtx_ssrcs == ((2448158011, 4206014739),)


def test_ssrc_simulcast_publish_lists_the_sim_group_low_to_high() -> None:
    """SSRC simulcast (an RFC 5576 SIM group, the pre-RID way, which Chromium still honours when
    an application writes it into the SDP): the group's order is the layer order; FID pairs name
    each layer's RTX (RFC 4588 §8.2)."""
    offer = (FIXTURES / "aiortc_offer.sdp").read_text()
    cname = "cname:c4bc9adb-318a-4c3d-80f6-ba1bd40e2739"
    extra = "".join(f"a=ssrc:{ssrc} {cname}\n" for ssrc in (11, 12, 21, 22))
    offer = offer.replace(
        "a=ssrc-group:FID 2448158011 4206014739\n",
        "a=ssrc-group:SIM 11 21 2448158011\na=ssrc-group:FID 2448158011 4206014739\n"
        "a=ssrc-group:FID 11 12\na=ssrc-group:FID 21 22\n" + extra,
    )
    description = SessionDescription.parse(offer)
    answer = build_answer(description, LOCAL, session_id=1, policy=PUBLISH_POLICY)
    _, video = published_tracks(description, answer, {})
    assert video.ssrcs == (11, 21, 2448158011)
    assert set(video.rtx_ssrcs) == {(11, 12), (21, 22), (2448158011, 4206014739)}


def test_subscriber_offer_uses_the_sfu_numbers() -> None:
    slots = [
        Slot("a0", "audio", 1111, None, "p2", "0", "microphone"),
        Slot("v0", "video", 2222, 3333, None, None, None),
    ]
    offer = subscriber_offer(
        LOCAL, slots, cname="sfu", session_id=7, session_version=2, setup=SetupRole.ACTPASS
    )
    text = str(offer)
    again = SessionDescription.parse(text)
    audio, video = again.media
    assert [audio.mid, video.mid] == ["a0", "v0"]
    assert again.direction_of(audio) is Direction.SENDONLY
    assert {c.payload_type for c in audio.codecs()} == {111}
    assert {(c.mime_subtype, c.payload_type) for c in video.codecs()} == {
        ("vp8", 96),
        ("rtx", 97),
        ("h264", 102),
        ("rtx", 103),
    }
    assert set(video.ssrcs()) == {2222, 3333}
    assert "a=ssrc-group:FID 2222 3333" in text
    assert "a=setup:actpass" in text and "a=ice-lite" in text
    profile = {name: (pt, rtx) for name, pt, rtx in SUBSCRIBER_PROFILE.payload_types}
    assert profile == {"opus": (111, None), "vp8": (96, 97), "h264": (102, 103)}


def test_subscriber_offer_without_nack() -> None:
    """``--no-sfu-nack``: browsers are not asked for NACKs and get no RTX format to repair with."""
    slots = [Slot("v0", "video", 2222, 3333, None, None, None)]
    offer = subscriber_offer(
        LOCAL, slots, cname="sfu", session_id=7, session_version=1, setup=SetupRole.ACTPASS, nack=False
    )
    (video,) = SessionDescription.parse(str(offer)).media
    assert {c.mime_subtype for c in video.codecs()} == {"vp8", "h264"}
    for codec in video.codecs():
        assert ("nack", None) not in codec.feedback and ("nack", "pli") in codec.feedback


def test_publisher_video_codecs_in_the_offerers_order() -> None:
    """RFC 3264 §6.1: the offer's order is the publisher's preference; only codecs the SFU takes."""
    text = (FIXTURES / "aiortc_offer.sdp").read_text()
    assert publisher_video_codecs(SessionDescription.parse(text)) == ("vp8", "h264")
    h264_first = text.replace(
        "m=video 49795 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102",
        "m=video 49795 UDP/TLS/RTP/SAVPF 99 100 101 102 97 98",
    )
    offer = SessionDescription.parse(h264_first)
    assert publisher_video_codecs(offer) == ("h264", "vp8")
    # The SFU answers in the order its plan gives: a browser sends the answer's first codec.
    answer = build_answer(
        offer, LOCAL, session_id=1, policy=replace(PUBLISH_POLICY, video_codecs=("vp8", "h264"))
    )
    video = next(m for m in answer.media if m.kind == "video")
    assert [c.mime_subtype for c in video.codecs()][:3] == ["vp8", "rtx", "h264"]


def test_accepted_codecs_read_by_the_sfus_payload_types() -> None:
    """Firefox without H.264 answers the subscribe offer's video sections with VP8 (and RTX) only."""
    slots = [
        Slot("a0", "audio", 1111, None, "p2", "0", "microphone"),
        Slot("v0", "video", 2222, 3333, "p2", "1", "camera"),
        Slot("v1", "video", 4444, 5555, None, None, None),
    ]
    offer = str(
        subscriber_offer(LOCAL, slots, cname="sfu", session_id=7, session_version=2, setup=SetupRole.ACTPASS)
    )
    chromium = SessionDescription.parse(offer)
    assert accepted_codecs(chromium) == {"audio": {"opus"}, "video": {"vp8", "h264"}}
    firefox = SessionDescription.parse(
        offer.replace("UDP/TLS/RTP/SAVPF 96 97 102 103", "UDP/TLS/RTP/SAVPF 96 97")
    )
    assert accepted_codecs(firefox) == {"audio": {"opus"}, "video": {"vp8"}}
    one_section = SessionDescription.parse(
        offer.replace("UDP/TLS/RTP/SAVPF 96 97 102 103", "UDP/TLS/RTP/SAVPF 96 97", 1)
    )
    assert accepted_codecs(one_section)["video"] == {"vp8"}, "what every video section kept"
    audio_only = SessionDescription.parse(offer.split("m=video", maxsplit=1)[0])
    assert accepted_codecs(audio_only) == {"audio": {"opus"}}
