"""Rooms across a node restart (docs/signaling.md "Node restarts"): the snapshot codec, the HMAC
resume tokens, and a second server restoring what the first one wrote, on a fake clock."""

from __future__ import annotations

import contextlib
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meet443.exceptions import ParseError
from meet443.proto.signaling.admission import RoomAdmission, RoomMode
from meet443.proto.signaling.messages import ChatMessage
from meet443.proto.signaling.room import LeftSfu, RevokeTurn, ToSfu
from meet443.proto.signaling.snapshot import ParticipantSnapshot, RoomSnapshot, resume_token

from .test_room import Client, Harness

KEY = b"resume-key-do-not-log"


def restarted(
    before: Harness, *, resume_key: bytes = KEY, server_epoch: int = 2, new_chat_epoch: bool = False
) -> Harness:
    """A new server (a new epoch) restoring every room ``before`` would have written, later by 2 s."""
    after = Harness(server_epoch=server_epoch, resume_key=resume_key)
    after.meetings = before.meetings
    after.clock.now = before.clock.now + 2
    saved = [before.server.snapshot(name) for name in dict.fromkeys(before.changed)]
    # Through bytes, as the store holds them.
    after.server.restore(
        [RoomSnapshot.parse(bytes(s)) for s in saved if s is not None],
        after.clock.now,
        new_chat_epoch=new_chat_epoch,
    )
    return after


def back(after: Harness, client: Client, **fields: object) -> Client:
    """``client``'s browser reconnecting to ``after`` with its resume token."""
    again = after.connect()
    again.join("standup", "ignored", resumeToken=client.resume_token, **fields)
    joined = again.inbox[0]
    again.self_id, again.resume_token = joined["selfId"], joined["resumeToken"]
    return again


class TestCodec:
    def test_round_trip(self) -> None:
        snapshot = RoomSnapshot(
            name="standup",
            mode="group",
            api_created=True,
            end_ms=1_800_000_600_000,
            locked=True,
            chat_epoch=1 << 32,
            chat_seq=2,
            history=[ChatMessage(2, "p1", "Ada", "hi ü", 1, "c2", 1 << 32)],
            participants=[ParticipantSnapshot(id="p1", display_name="Ada", host=True, resume_nonce="n")],
        )
        data = bytes(snapshot)
        assert RoomSnapshot.parse(data) == snapshot
        assert bytes(RoomSnapshot.parse(data)) == data

    def test_unknown_fields_are_tolerated_and_a_newer_version_refused(self) -> None:
        data = b'{"v":1,"name":"r","mode":"normal","apiCreated":false,"endMs":null,"locked":false,'
        data = data.replace(b"apiCreated", b"api_created").replace(b"endMs", b"end_ms")
        data += b'"chat_epoch":0,"chat_seq":0,"history":[],"participants":[],"later":1}'
        assert RoomSnapshot.parse(data).name == "r"
        with pytest.raises(ParseError, match="version 2"):
            RoomSnapshot.parse(data.replace(b'"v":1', b'"v":2'))

    @pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"name": 1}', b"\xff\xfe"])
    def test_garbage_is_a_parse_error(self, data: bytes) -> None:
        with pytest.raises(ParseError):
            RoomSnapshot.parse(data)

    @given(st.binary(max_size=200))
    def test_any_bytes_parse_or_raise_parse_error(self, data: bytes) -> None:
        with contextlib.suppress(ParseError):
            RoomSnapshot.parse(data)


class TestResumeTokens:
    """The token is HMAC-SHA256 (RFC 2104) under the resume key; the snapshot holds none."""

    def test_token_is_the_hmac_and_not_in_the_snapshot(self) -> None:
        h = Harness(resume_key=KEY)
        ada = h.joined()
        snapshot = h.server.snapshot("standup")
        assert snapshot is not None
        (p,) = snapshot.participants
        digest = hmac.new(KEY, f"standup\n{ada.self_id}\n{p.resume_nonce}".encode(), hashlib.sha256).digest()
        assert resume_token(KEY, "standup", ada.self_id, p.resume_nonce) == ada.resume_token
        assert len(digest) == 32 and len(ada.resume_token) == 43
        assert ada.resume_token.encode() not in bytes(snapshot)
        assert KEY not in bytes(snapshot)

    def test_another_key_cannot_resume(self) -> None:
        h = Harness(resume_key=KEY)
        ada = h.joined()
        after = restarted(h, resume_key=b"another key")
        again = back(after, ada)
        assert again.inbox[-1]["resumed"] is False
        assert again.self_id != ada.self_id


class TestRestore:
    def test_same_ids_chat_continues_lock_and_host_kept(self) -> None:
        h = Harness(resume_key=KEY)
        ada = h.joined(name="Ada")
        bob = h.joined(name="Bob")
        ada.send("chat", text="one", clientMessageId="a1")
        bob.send("chat", text="two", clientMessageId="b1")
        ada.send("lock", locked=True)
        epoch = ada.inbox[-2]["epoch"]
        after = restarted(h)
        ada2 = back(after, ada, lastChatSeq=2, lastChatEpoch=epoch)
        joined = ada2.inbox[0]
        assert joined["resumed"] is True and joined["selfId"] == ada.self_id and joined["host"] is True
        assert joined["room"]["locked"] is True
        assert joined["chat"] == []  # nothing missed: the cursor is the same epoch and seq
        assert [(p["id"], p["connected"]) for p in joined["participants"]] == [(bob.self_id, False)]
        # A resend of a message the old run stored is not stored again; new ones follow it.
        ada2.take()
        ada2.send("chat", text="one", clientMessageId="a1")
        assert [(m["epoch"], m["seq"]) for m in ada2.take()] == [(epoch, 1)]
        ada2.send("chat", text="three", clientMessageId="a2")
        assert [(m["epoch"], m["seq"], m["text"]) for m in ada2.take()] == [(epoch, 3, "three")]
        bob2 = back(after, bob, lastChatSeq=1, lastChatEpoch=epoch)
        joined = bob2.inbox[0]
        assert joined["selfId"] == bob.self_id and joined["host"] is False
        assert [m["seq"] for m in joined["chat"]] == [2, 3]
        # The lock holds: a newcomer knocks, and the restored host is asked.
        ada2.take()
        cy = after.connect()
        assert cy.join("standup", "Cy")["type"] == "knocking"
        assert [m["type"] for m in ada2.take()] == ["knock"]

    def test_a_room_taken_over_chats_on_in_a_higher_epoch(self) -> None:
        """docs/cluster.md "Failover": the dead home may have sent messages its snapshot lacks, so
        the new home's messages take ids in a higher epoch, even when its own epochs are lower."""
        h = Harness(server_epoch=5, resume_key=KEY)
        ada = h.joined(name="Ada")
        ada.send("chat", text="one", clientMessageId="a1")
        epoch = ada.inbox[-1]["epoch"]
        after = restarted(h, server_epoch=3, new_chat_epoch=True)
        ada2 = back(after, ada, lastChatSeq=1, lastChatEpoch=epoch)
        # Another epoch than the cursor's: the recent history, which the client has already.
        assert [(m["epoch"], m["seq"]) for m in ada2.inbox[0]["chat"]] == [(epoch, 1)]
        ada2.take()
        ada2.send("chat", text="two", clientMessageId="a2")
        assert [(m["epoch"], m["seq"]) for m in ada2.take()] == [(epoch + 1, 2)]
        # A resend of a stored message is still recognised, with its old id.
        ada2.send("chat", text="one", clientMessageId="a1")
        assert [(m["epoch"], m["seq"]) for m in ada2.take()] == [(epoch, 1)]
        # The next room this server makes is above it too.
        cy = after.connect()
        cy.join("other", "Cy")
        cy.take()
        cy.send("chat", text="hi", clientMessageId="c1")
        assert cy.take()[0]["epoch"] > epoch + 1

    def test_who_does_not_come_back_within_the_window_is_dropped(self) -> None:
        h = Harness(resume_key=KEY)
        ada = h.joined(name="Ada")
        h.joined(name="Bob")
        after = restarted(h)
        assert after.server.get_timer() == after.clock.now + 30
        again = back(after, ada)
        after.tick(29.9)
        again.send("ping")
        assert after.server.participant_count == 2
        after.tick(0.1)
        assert after.server.participant_count == 1
        assert isinstance(after.revoked[-1], RevokeTurn)  # its TURN credentials are refused at once
        assert again.inbox[-1]["type"] == "participant-left"

    def test_a_room_nobody_comes_back_to_is_forgotten_and_deleted(self) -> None:
        h = Harness(resume_key=KEY)
        h.joined()
        after = restarted(h)
        after.tick(30)
        assert after.server.room_count == 0
        assert set(after.changed) == {"standup"} and after.server.snapshot("standup") is None

    def test_a_group_participant_is_told_to_start_its_sfu_session_over(self) -> None:
        h = Harness(resume_key=KEY)
        h.meetings["standup"] = RoomAdmission("standup", RoomMode.GROUP, False, None, False)
        ada = h.joined()
        after = restarted(h)
        again = back(after, ada)
        assert [m["type"] for m in again.inbox] == ["joined", "sfu-restart"]
        assert after.sfu == [ToSfu("standup", ada.self_id, None)]
        # Once only: resuming again later (a network change) keeps the new SFU session.
        after.drop(again)
        third = back(after, again)
        assert [m["type"] for m in third.inbox] == ["joined"]
        assert after.sfu == [ToSfu("standup", ada.self_id, None)]

    def test_durable_changes_are_announced(self) -> None:
        h = Harness(resume_key=KEY)
        ada = h.joined()
        h.changed.clear()
        ada.send("chat", text="x", clientMessageId="c")
        ada.send("media", audio=True, video=False, screen=False)
        ada.send("hand", raised=True)
        ada.send("lock", locked=True)
        assert h.changed == ["standup"] * 4
        h.changed.clear()
        ada.send("ping")
        h.drop(ada)  # awaiting resume is not durable: a restored participant awaits resume anyway
        assert h.changed == []
        h.tick(30)
        assert set(h.changed) == {"standup"} and h.server.snapshot("standup") is None
        assert not [o for o in h.sfu if isinstance(o, LeftSfu)]
