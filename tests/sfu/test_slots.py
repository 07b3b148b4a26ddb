"""Last-N: which tracks a subscriber receives (LastN) and which slot carries each (fill)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from meet443.sfu.slots import LastN, SlotPlan, fill
from meet443.sfu.tracks import PublishedTrack, TrackCodec

from .harness import FakeClock

VP8 = TrackCodec("vp8", 96, 90000)
OPUS = TrackCodec("opus", 111, 48000)


@dataclass(frozen=True)
class Track:
    """A published track as the router's bookkeeping exposes it to last-N."""

    key: tuple[str, str]
    video: bool
    order: int
    info: PublishedTrack


def track(publisher: str, source: str, order: int) -> Track:
    kind = "audio" if source == "microphone" else "video"
    info = PublishedTrack(source, kind, source, (OPUS if kind == "audio" else VP8,))
    return Track((publisher, source), kind == "video", order, info)


def names(tracks: list[Track]) -> list[str]:
    return [t.key[0] for t in tracks]


def room(*publishers: str, screens: tuple[str, ...] = ()) -> list[Track]:
    tracks: list[Track] = []
    for publisher in publishers:
        tracks += [track(publisher, "microphone", len(tracks)), track(publisher, "camera", len(tracks) + 1)]
    tracks += [track(publisher, "screen", 100 + i) for i, publisher in enumerate(screens)]
    return tracks


class TestChoice:
    def test_in_publishing_order_while_nobody_spoke(self) -> None:
        last_n = LastN(last_n=2, max_audio_slots=3, max_screen_slots=1)
        audio, video = last_n.choose(room("p1", "p2", "p3", "p4"), None)
        assert (names(audio), names(video)) == (["p1", "p2", "p3"], ["p1", "p2"])

    def test_the_dominant_speaker_first_then_recent_speakers(self) -> None:
        clock = FakeClock()
        last_n = LastN(last_n=2, max_audio_slots=2, max_screen_slots=1)
        last_n.spoke("p3", clock.now)
        last_n.spoke("p4", clock.advance(1.0))
        audio, video = last_n.choose(room("p1", "p2", "p3", "p4"), "p3")
        assert names(video) == ["p3", "p4"]  # p4 spoke later, but p3 is the dominant speaker
        assert names(audio) == ["p4", "p3"]  # microphones by recency alone

    def test_screens_before_cameras_and_limited_apart(self) -> None:
        last_n = LastN(last_n=2, max_audio_slots=16, max_screen_slots=1)
        _, video = last_n.choose(room("p1", "p2", "p3", screens=("p3", "p2")), "p1")
        assert [t.key for t in video] == [("p3", "screen"), ("p1", "camera"), ("p2", "camera")]

    def test_who_left_is_forgotten(self) -> None:
        clock = FakeClock()
        last_n = LastN(last_n=1, max_audio_slots=16, max_screen_slots=2)
        last_n.spoke("p2", clock.now)
        assert names(last_n.choose(room("p1", "p2"), None)[1]) == ["p2"]
        last_n.forget("p2")
        last_n.forget("p2")  # twice: a second leave is no error
        assert names(last_n.choose(room("p1", "p2"), None)[1]) == ["p1"]


class TestFill:
    def test_kept_tracks_stay_in_their_slot_the_rest_fill_idle_ones_in_order(self) -> None:
        a, b, c, d = "abcd"
        plan = fill([a, None, b, c], [d, c, a])
        assert plan == SlotPlan(freed=(2,), bound=((1, d),))
        assert not plan.grows(4)

    def test_the_pool_grows_only_when_every_slot_is_busy(self) -> None:
        plan = fill(["a", "b"], ["c", "a", "d", "e"])
        assert plan == SlotPlan(freed=(1,), bound=((1, "c"), (2, "d"), (3, "e")))
        assert plan.grows(2)

    def test_nothing_to_do_when_the_slots_already_carry_the_choice(self) -> None:
        assert fill(["a", None, "b"], ["b", "a"]) == SlotPlan((), ())
        assert fill([], []) == SlotPlan((), ())

    @given(
        # Pools: tracks at most once each, any number of idle slots.
        st.tuples(st.permutations([*"abcdefgh", None, None, None, None]), st.integers(0, 12)).map(
            lambda drawn: list(drawn[0][: drawn[1]])
        ),
        st.lists(st.sampled_from("abcdefgh"), max_size=8, unique=True),
    )
    def test_applied_the_pool_carries_exactly_the_wanted_tracks(
        self, carried: list[str | None], wanted: list[str]
    ) -> None:
        plan = fill(carried, wanted)
        pool = list(carried)
        for position in plan.freed:
            assert pool[position] is not None and pool[position] not in wanted
            pool[position] = None
        for position, chosen in plan.bound:
            if position == len(pool):
                pool.append(None)
            assert pool[position] is None
            pool[position] = chosen
        assert {t for t in pool if t is not None} == set(wanted)
        assert len(pool) == max(len(carried), len(wanted))
        assert all(pool[i] == t for i, t in enumerate(carried) if t in wanted)
