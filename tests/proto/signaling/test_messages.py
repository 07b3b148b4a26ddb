"""docs/signaling.md "Client → server" and "Server → client": shapes, names and limits."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meet443.exceptions import ProtocolError, SignalingError
from meet443.proto.signaling.messages import (
    CLIENT_TYPES,
    MAX_FRAME_BYTES,
    Admit,
    Answer,
    Candidate,
    Chat,
    ChatMessage,
    End,
    ErrorMessage,
    IceCandidate,
    IceRefresh,
    Join,
    Joined,
    Kick,
    Leave,
    Lock,
    Media,
    Mute,
    Offer,
    ParticipantInfo,
    ParticipantLeft,
    Pause,
    Ping,
    Publish,
    RaiseHand,
    Reaction,
    Reject,
    RelayedCandidate,
    RelayedOffer,
    Republish,
    Resubscribe,
    RoomInfo,
    SubscribeAnswer,
    clean_display_name,
    decode_client_message,
    encode,
)


def decode(obj: Any) -> Any:
    return decode_client_message(json.dumps(obj, ensure_ascii=False).encode())


def error_of(data: bytes | str | dict[str, Any]) -> SignalingError:
    raw = json.dumps(data, ensure_ascii=False).encode() if isinstance(data, dict) else data
    with pytest.raises(SignalingError) as info:
        decode_client_message(raw)
    return info.value


JOIN = {"type": "join", "v": 1, "room": "standup", "displayName": "Ada"}

VALID: list[tuple[dict[str, Any], object]] = [
    (JOIN, Join(v=1, room="standup", display_name="Ada")),
    (
        {**JOIN, "roomKey": "k", "resumeToken": "r", "lastChatSeq": 7},
        Join(v=1, room="standup", display_name="Ada", room_key="k", resume_token="r", last_chat_seq=7),
    ),
    ({"type": "offer", "to": "p1", "sdp": "v=0\r\n"}, Offer(to="p1", sdp="v=0\r\n")),
    ({"type": "answer", "to": "p1", "sdp": "v=0\r\n"}, Answer(to="p1", sdp="v=0\r\n")),
    (
        {
            "type": "candidate",
            "to": "p1",
            "candidate": {
                "candidate": "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host",
                "sdpMid": "0",
                "sdpMLineIndex": 0,
                "usernameFragment": "abcd",
            },
        },
        Candidate(
            to="p1",
            candidate=IceCandidate(
                candidate="candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host",
                sdp_mid="0",
                sdp_m_line_index=0,
                username_fragment="abcd",
            ),
        ),
    ),
    ({"type": "candidate", "to": "p1", "candidate": None}, Candidate(to="p1", candidate=None)),
    ({"type": "candidate", "to": "p1", "candidate": {"candidate": ""}}, Candidate("p1", IceCandidate(""))),
    ({"type": "chat", "text": "hi", "clientMessageId": "m1"}, Chat(text="hi", client_message_id="m1")),
    ({"type": "media", "audio": True, "video": False, "screen": False}, Media(True, False, False)),
    ({"type": "hand", "raised": True}, RaiseHand(raised=True)),
    ({"type": "reaction", "emoji": "❤️"}, Reaction("❤️")),
    ({"type": "lock", "locked": True}, Lock(locked=True)),
    ({"type": "admit", "participantId": "p2"}, Admit(participant_id="p2")),
    ({"type": "reject", "participantId": "p2"}, Reject(participant_id="p2")),
    ({"type": "kick", "participantId": "p2"}, Kick(participant_id="p2")),
    ({"type": "mute", "participantId": "p2", "kind": "video"}, Mute(participant_id="p2", kind="video")),
    ({"type": "end"}, End()),
    ({"type": "ice-refresh"}, IceRefresh()),
    ({"type": "ping"}, Ping()),
    ({"type": "leave"}, Leave()),
    (
        {"type": "publish", "sdp": "v=0\r\n", "sources": {"0": "microphone", "1": "camera"}},
        Publish(sdp="v=0\r\n", sources={"0": "microphone", "1": "camera"}),
    ),
    ({"type": "subscribe-answer", "sdp": "v=0\r\n"}, SubscribeAnswer(sdp="v=0\r\n")),
    ({"type": "resubscribe"}, Resubscribe()),
    ({"type": "pause", "mid": "v0", "paused": True}, Pause(mid="v0", paused=True)),
]


class TestClientMessages:
    """docs/signaling.md "Client → server": every type, camelCase names."""

    def test_every_type_is_covered(self) -> None:
        assert {obj["type"] for obj, _ in VALID} == CLIENT_TYPES

    @pytest.mark.parametrize(
        ("obj", "expected"), VALID, ids=[f"{o['type']}-{i}" for i, (o, _) in enumerate(VALID)]
    )
    def test_decodes(self, obj: dict[str, Any], expected: object) -> None:
        assert decode(obj) == expected

    @pytest.mark.parametrize(
        ("obj", "expected"), VALID, ids=[f"{o['type']}-{i}" for i, (o, _) in enumerate(VALID)]
    )
    def test_round_trip(self, obj: dict[str, Any], expected: object) -> None:
        assert json.loads(msgspec.json.encode(decode(obj))) == obj

    def test_publish_sources_are_known_kinds(self) -> None:
        with pytest.raises(SignalingError) as caught:
            decode({"type": "publish", "sdp": "v=0", "sources": {"0": "projector"}})
        assert caught.value.code == "bad-message"

    def test_str_and_bytes_alike(self) -> None:
        assert decode_client_message(json.dumps(JOIN)) == decode(JOIN)

    def test_join_version_is_left_to_the_room(self) -> None:
        # unsupported-version closes the socket; the room decides that, not the parser.
        assert decode({**JOIN, "v": 2}).v == 2

    def test_snake_case_is_unknown(self) -> None:
        exc = error_of({"type": "chat", "text": "hi", "client_message_id": "m"})
        assert exc.code == "bad-message"
        assert exc.ref == "chat"


class TestErrors:
    """docs/signaling.md "Error codes": bad-message, unknown-type, too-large; all keep the socket."""

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"not json",
            b"\xff\xfe",
            b"[]",
            b"null",
            b"42",
            b'"join"',
            b'{"type": "join"',
            b"{}",
            b'{"type": 1}',
            b'{"type": null}',
            b"[" * 5000 + b"]" * 5000,
            b'{"type":"ping","x":' + b"[" * 5000 + b"]" * 5000 + b"}",
            '"\ud800"',
        ],
    )
    def test_bad_message(self, data: bytes | str) -> None:
        exc = error_of(data)
        assert exc.code == "bad-message"
        assert exc.close_code is None
        assert isinstance(exc, ProtocolError)

    def test_unknown_type(self) -> None:
        exc = error_of({"type": "teleport", "to": "mars"})
        assert (exc.code, exc.ref, exc.close_code) == ("unknown-type", "teleport", None)

    def test_unknown_type_ref_is_bounded(self) -> None:
        assert len(error_of({"type": "x" * 1000}).ref or "") <= 64

    @pytest.mark.parametrize(
        "obj",
        [
            {"type": "ping", "extra": 1},
            {"type": "join", "v": "1", "room": "r", "displayName": "A"},
            {"type": "join", "v": 1, "room": "r"},
            {"type": "join", "v": 1, "room": 5, "displayName": "A"},
            {**JOIN, "lastChatSeq": -1},
            {**JOIN, "lastChatSeq": 1.5},
            {**JOIN, "lastChatSeq": True},
            {**JOIN, "lastChatSeq": 2**64},
            {**JOIN, "resumeToken": "r" * 129},
            {**JOIN, "roomKey": "k" * 257},
            {"type": "offer", "to": "p"},
            {"type": "offer", "to": "", "sdp": "v=0"},
            {"type": "offer", "to": "p" * 65, "sdp": "v=0"},
            {"type": "candidate", "to": "p"},
            {"type": "candidate", "to": "p", "candidate": "candidate:1"},
            {"type": "candidate", "to": "p", "candidate": {"candidate": "c", "sdpMLineIndex": -1}},
            {"type": "candidate", "to": "p", "candidate": {"candidate": "c", "foo": 1}},
            {"type": "chat", "text": "", "clientMessageId": "m"},
            {"type": "chat", "text": "hi", "clientMessageId": ""},
            {"type": "chat", "text": "hi"},
            {"type": "media", "audio": 1, "video": False, "screen": False},
            {"type": "media", "audio": True, "video": False},
            {"type": "lock", "locked": "yes"},
            {"type": "mute", "participantId": "p", "kind": "screen"},
            {"type": "kick"},
            {"type": "end", "participantId": "p"},
        ],
    )
    def test_wrong_shape(self, obj: dict[str, Any]) -> None:
        exc = error_of(obj)
        assert exc.code == "bad-message"
        assert exc.ref == obj["type"]
        assert len(exc.message) <= 200

    def test_too_large_bytes(self) -> None:
        ok = json.dumps({"type": "chat", "text": "a", "clientMessageId": "m"}).encode()
        padded = ok[:-1] + b" " * (MAX_FRAME_BYTES - len(ok)) + b"}"
        assert len(padded) == MAX_FRAME_BYTES
        assert isinstance(decode_client_message(padded), Chat)
        exc = error_of(padded[:-1] + b" }")
        assert (exc.code, exc.close_code) == ("too-large", None)

    def test_too_large_counts_utf8_bytes_of_str(self) -> None:
        # 21,846 euro signs are fewer than 65,536 characters but 65,538 bytes of UTF-8.
        assert error_of("\u20ac" * 21846).code == "too-large"
        assert error_of("\u20ac" * 16000).code == "bad-message"
        assert error_of("a" * (MAX_FRAME_BYTES + 1)).code == "too-large"


class TestLimits:
    """docs/signaling.md "Limits"."""

    def test_chat_text_4000_characters(self) -> None:
        assert (
            decode({"type": "chat", "text": "\u00e9" * 4000, "clientMessageId": "m"}).text == "\u00e9" * 4000
        )
        assert error_of({"type": "chat", "text": "a" * 4001, "clientMessageId": "m"}).code == "bad-message"

    def test_client_message_id_64(self) -> None:
        decode({"type": "chat", "text": "a", "clientMessageId": "m" * 64})
        assert error_of({"type": "chat", "text": "a", "clientMessageId": "m" * 65}).code == "bad-message"

    def test_sdp_60000_bytes(self) -> None:
        decode({"type": "offer", "to": "p", "sdp": "a" * 60000})
        assert error_of({"type": "offer", "to": "p", "sdp": "a" * 60001}).code == "bad-message"
        # Fewer than 60,000 characters, more than 60,000 bytes.
        assert error_of({"type": "answer", "to": "p", "sdp": "\u20ac" * 20001}).code == "bad-message"
        decode({"type": "answer", "to": "p", "sdp": "\u20ac" * 20000})

    @pytest.mark.parametrize(
        ("raw", "clean"),
        [
            ("Ada", "Ada"),
            ("  Ada Lovelace \t", "Ada Lovelace"),
            ("A\u0000d\u0007a\n", "Ada"),
            ("\u202eadA", "adA"),
            ("\u2068Ada\u2069", "Ada"),
            ("Ada\u2028Byron", "AdaByron"),
            ("\u00c9milie \U0001f469\u200d\U0001f4bb", "\u00c9milie \U0001f469\u200d\U0001f4bb"),
            ("\u0085Ada\u009f", "Ada"),
        ],
    )
    def test_display_name_cleaned(self, raw: str, clean: str) -> None:
        assert clean_display_name(raw) == clean
        assert decode({**JOIN, "displayName": raw}).display_name == clean

    @pytest.mark.parametrize("raw", ["", "   ", "\u0000\u0001", "\u202e \u202c", "a" * 65, " " + "a" * 65])
    def test_display_name_1_to_64(self, raw: str) -> None:
        assert error_of({**JOIN, "displayName": raw}).code == "bad-message"

    def test_display_name_64_after_trimming(self) -> None:
        assert decode({**JOIN, "displayName": "  " + "a" * 64 + "  "}).display_name == "a" * 64


class TestServerMessages:
    """docs/signaling.md "Server → client": field names on the wire."""

    def test_joined(self) -> None:
        me = ParticipantInfo("p1", "Ada", True, True, False, False, True)
        wire = json.loads(
            encode(
                Joined(
                    self_id="p2",
                    resume_token="t",
                    resumed=False,
                    room=RoomInfo("r", "normal", False, 4),
                    host=False,
                    participants=[me],
                    ice_servers=[
                        {"urls": ["turn:h:443?transport=udp"], "username": "1:p2", "credential": "c"}
                    ],
                    ice_transport_policy="all",
                    chat=[ChatMessage(1, "p1", "Ada", "hi", 5, "m1", 7)],
                )
            )
        )
        assert wire == {
            "type": "joined",
            "selfId": "p2",
            "resumeToken": "t",
            "resumed": False,
            "room": {"name": "r", "mode": "normal", "locked": False, "maxParticipants": 4},
            "host": False,
            "participants": [
                {
                    "id": "p1",
                    "displayName": "Ada",
                    "host": True,
                    "audio": True,
                    "video": False,
                    "screen": False,
                    "connected": True,
                    "hand": False,
                }
            ],
            "iceServers": [{"urls": ["turn:h:443?transport=udp"], "username": "1:p2", "credential": "c"}],
            "iceTransportPolicy": "all",
            "chat": [
                {
                    "type": "chat",
                    "seq": 1,
                    "from": "p1",
                    "displayName": "Ada",
                    "text": "hi",
                    "ts": 5,
                    "clientMessageId": "m1",
                    "epoch": 7,
                }
            ],
            "speaker": None,
        }

    def test_relayed_keep_what_was_sent(self) -> None:
        assert json.loads(encode(RelayedOffer("a", "b", "v=0"))) == {
            "type": "offer",
            "from": "a",
            "to": "b",
            "sdp": "v=0",
        }
        sent = decode({"type": "candidate", "to": "b", "candidate": {"candidate": "c", "sdpMid": None}})
        assert json.loads(encode(RelayedCandidate("a", "b", sent.candidate))) == {
            "type": "candidate",
            "from": "a",
            "to": "b",
            "candidate": {"candidate": "c", "sdpMid": None},
        }
        assert json.loads(encode(RelayedCandidate("a", "b", None)))["candidate"] is None

    def test_error_ref_optional(self) -> None:
        assert json.loads(encode(ErrorMessage("not-host", "no"))) == {
            "type": "error",
            "code": "not-host",
            "message": "no",
        }
        assert json.loads(encode(ErrorMessage("not-host", "no", "kick")))["ref"] == "kick"

    def test_republish_has_no_fields(self) -> None:
        assert json.loads(encode(Republish())) == {"type": "republish"}

    def test_participant_left(self) -> None:
        assert json.loads(encode(ParticipantLeft("p", "timeout"))) == {
            "type": "participant-left",
            "id": "p",
            "reason": "timeout",
        }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
typed_objects = st.builds(
    lambda t, rest: {**rest, "type": t},
    st.sampled_from(sorted(CLIENT_TYPES)) | st.text(max_size=12),
    st.dictionaries(
        st.sampled_from(
            [
                "v",
                "room",
                "displayName",
                "to",
                "sdp",
                "candidate",
                "text",
                "clientMessageId",
                "audio",
                "locked",
                "participantId",
                "kind",
                "lastChatSeq",
            ]
        ),
        json_values,
        max_size=5,
    ),
)


class TestFuzz:
    """The parser raises only SignalingError, whatever arrives (STYLE.md §4)."""

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def test_random_bytes(self, data: bytes) -> None:
        try:
            decode_client_message(data)
        except SignalingError as exc:
            assert exc.code in {"bad-message", "unknown-type"}

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=300))
    def test_random_text(self, data: str) -> None:
        try:
            decode_client_message(data)
        except SignalingError as exc:
            assert exc.code in {"bad-message", "unknown-type"}

    @settings(max_examples=200, deadline=None)
    @given(json_values | typed_objects)
    def test_random_json(self, value: object) -> None:
        try:
            message = decode_client_message(json.dumps(value))
        except SignalingError as exc:
            assert exc.code in {"bad-message", "unknown-type"}
            if exc.code == "unknown-type":
                assert isinstance(value, dict)
                assert value["type"] not in CLIENT_TYPES
        else:
            assert isinstance(value, dict)
            assert value["type"] == type(message).__struct_config__.tag
