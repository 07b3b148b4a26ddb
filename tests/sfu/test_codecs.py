"""Which video codec each publisher sends so that every subscriber decodes it (sfu/codecs.py)."""

from __future__ import annotations

from meet443.sfu.codecs import VideoCodecPlan

CHROMIUM = frozenset({"vp8", "h264"})
FIREFOX = frozenset({"vp8"})  # Debian's Firefox: no H.264 decoder, so its answers keep VP8 only


class TestRfc3264Section61AnswerOrder:
    def test_the_publishers_order_while_everyone_decodes_its_first_choice(self) -> None:
        plan = VideoCodecPlan()
        assert plan.subscriber_decodes("bob", CHROMIUM) == []
        assert plan.answer_order("ann", ("h264", "vp8")) == ("h264", "vp8")
        assert plan.sending("ann") == "h264"

    def test_a_subscriber_that_cannot_decode_it_puts_the_common_codec_first(self) -> None:
        plan = VideoCodecPlan()
        plan.subscriber_decodes("fox", FIREFOX)
        assert plan.answer_order("ann", ("h264", "vp8")) == ("vp8", "h264")
        assert plan.sending("ann") == "vp8"

    def test_a_publisher_is_not_its_own_subscriber(self) -> None:
        plan = VideoCodecPlan()
        plan.subscriber_decodes("ann", FIREFOX)
        assert plan.answer_order("ann", ("h264", "vp8"))[0] == "h264"

    def test_no_common_codec_keeps_the_publishers_order(self) -> None:
        """An H.264-only publisher (no VP8 to fall back to) still publishes; the router then
        forwards it to nobody who cannot decode it."""
        plan = VideoCodecPlan()
        plan.subscriber_decodes("fox", FIREFOX)
        assert plan.answer_order("ann", ("h264",)) == ("h264",)

    def test_no_video_offered(self) -> None:
        plan = VideoCodecPlan()
        assert plan.answer_order("ann", ()) == ()
        assert plan.sending("ann") is None


class TestRepublish:
    def test_a_joining_subscriber_that_cannot_decode_asks_the_publisher_once(self) -> None:
        plan = VideoCodecPlan()
        plan.subscriber_decodes("bob", CHROMIUM)
        plan.answer_order("ann", ("h264", "vp8"))
        plan.answer_order("cy", ("vp8", "h264"))
        assert plan.subscriber_decodes("fox", FIREFOX) == ["ann"], "cy sends VP8 already"
        # Every later subscribe answer (the pool grows, ICE restarts) asks no more until ann offers.
        assert plan.subscriber_decodes("dee", FIREFOX) == []
        assert plan.subscriber_decodes("fox", frozenset({"vp8", "av1"})) == []
        assert plan.answer_order("ann", ("h264", "vp8"))[0] == "vp8"

    def test_the_room_returns_to_the_first_choice_when_the_last_one_needing_the_fallback_leaves(
        self,
    ) -> None:
        plan = VideoCodecPlan()
        plan.subscriber_decodes("fox", FIREFOX)
        plan.subscriber_decodes("bob", CHROMIUM)
        assert plan.answer_order("ann", ("h264", "vp8"))[0] == "vp8"
        assert plan.remove("bob") == [], "fox still needs VP8"
        assert plan.remove("fox") == ["ann"]
        assert plan.answer_order("ann", ("h264", "vp8"))[0] == "h264"

    def test_the_same_answer_again_changes_nothing(self) -> None:
        plan = VideoCodecPlan()
        plan.answer_order("ann", ("h264", "vp8"))
        assert plan.subscriber_decodes("fox", FIREFOX) == ["ann"]
        plan.answer_order("ann", ("h264", "vp8"))
        assert plan.subscriber_decodes("fox", FIREFOX) == []

    def test_a_leaving_publisher_is_forgotten(self) -> None:
        plan = VideoCodecPlan()
        plan.answer_order("ann", ("h264", "vp8"))
        assert plan.remove("ann") == [], "ann never answered a subscribe offer"
        assert plan.subscriber_decodes("fox", FIREFOX) == []
        assert plan.sending("ann") is None
