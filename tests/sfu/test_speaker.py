"""ActiveSpeakerDetector: RFC 6464 levels to speaking flags and a steady dominant speaker."""

from __future__ import annotations

import itertools

from meet443.sfu.events import DominantSpeakerChanged, SpeakingChanged
from meet443.sfu.speaker import ActiveSpeakerDetector

from .harness import FakeClock


def talk(
    detector: ActiveSpeakerDetector[str], clock: FakeClock, seconds: float, levels: dict[str, int]
) -> list[object]:
    """Every 20 ms an audio packet per source (RFC 6464 level in -dBov); evaluate on poll."""
    events: list[object] = []
    for _ in range(round(seconds / 0.02)):
        clock.advance(0.02)
        for source, level in levels.items():
            detector.observe(source, level, clock.now)
        events += detector.handle_timer(clock.now)
    return events


class TestSpeaking:
    def test_one_speaker(self) -> None:
        clock = FakeClock()
        detector: ActiveSpeakerDetector[str] = ActiveSpeakerDetector()
        events = talk(detector, clock, 1.0, {"alice": 25, "bob": 90})
        assert events[:2] == [SpeakingChanged("alice", True), DominantSpeakerChanged("alice", None)]
        assert detector.dominant == "alice"
        assert detector.loudness("alice", clock.now) > 95
        assert detector.loudness("bob", clock.now) < 40

    def test_hysteresis_on_speaking(self) -> None:
        """Speaking starts at -50 dBov and stops only below -56 dBov."""
        clock = FakeClock()
        detector: ActiveSpeakerDetector[str] = ActiveSpeakerDetector()
        talk(detector, clock, 2.0, {"alice": 45})
        assert talk(detector, clock, 2.0, {"alice": 54}) == []
        assert talk(detector, clock, 2.0, {"alice": 60}) == [SpeakingChanged("alice", False)]

    def test_no_voice_flag_counts_as_silence(self) -> None:
        clock = FakeClock()
        detector: ActiveSpeakerDetector[str] = ActiveSpeakerDetector()
        for _ in range(50):
            detector.observe("fan", 20, clock.advance(0.02), voice=False)
        assert detector.evaluate(clock.now) == []

    def test_silence_timeout_covers_dtx_and_mute(self) -> None:
        clock = FakeClock()
        detector: ActiveSpeakerDetector[str] = ActiveSpeakerDetector()
        talk(detector, clock, 1.0, {"alice": 25})
        assert detector.evaluate(clock.advance(0.6)) == [SpeakingChanged("alice", False)]
        assert detector.dominant == "alice"  # the last speaker stays on the big tile


class TestDominantSpeaker:
    def test_louder_challenger_takes_over(self) -> None:
        clock = FakeClock()
        detector: ActiveSpeakerDetector[str] = ActiveSpeakerDetector()
        talk(detector, clock, 2.0, {"alice": 30, "bob": 40})
        assert detector.dominant == "alice"
        events = talk(detector, clock, 2.0, {"alice": 30, "bob": 20})
        assert DominantSpeakerChanged("bob", "alice") in events

    def test_margin(self) -> None:
        """Two people talking about equally loud: the dominant one keeps the floor."""
        clock = FakeClock()
        detector: ActiveSpeakerDetector[str] = ActiveSpeakerDetector()
        talk(detector, clock, 2.0, {"alice": 30, "bob": 32})
        events = talk(detector, clock, 3.0, {"alice": 30, "bob": 28})
        assert not [e for e in events if isinstance(e, DominantSpeakerChanged)]

    def test_at_most_one_change_per_second(self) -> None:
        clock = FakeClock()
        detector: ActiveSpeakerDetector[str] = ActiveSpeakerDetector(time_constant=0.05)
        changes: list[float] = []
        for turn in range(20):  # alice and bob alternate every 300 ms
            loud, quiet = ("alice", "bob") if turn % 2 else ("bob", "alice")
            for _ in range(15):
                events = talk(detector, clock, 0.02, {loud: 20, quiet: 48})
                changes += [clock.now for e in events if isinstance(e, DominantSpeakerChanged)]
        assert len(changes) >= 3
        assert all(b - a >= 1.0 - 1e-6 for a, b in itertools.pairwise(changes))

    def test_silent_dominant_yields_at_once(self) -> None:
        clock = FakeClock()
        detector: ActiveSpeakerDetector[str] = ActiveSpeakerDetector()
        talk(detector, clock, 2.0, {"alice": 20, "bob": 80})
        events = talk(detector, clock, 1.5, {"alice": 100, "bob": 40})
        assert DominantSpeakerChanged("bob", "alice") in events

    def test_leaving_dominant(self) -> None:
        clock = FakeClock()
        detector: ActiveSpeakerDetector[str] = ActiveSpeakerDetector()
        talk(detector, clock, 2.0, {"alice": 20, "bob": 40})
        assert detector.remove("alice") == [SpeakingChanged("alice", False)]
        assert detector.remove("carol") == []
        assert DominantSpeakerChanged("bob", None) in detector.evaluate(clock.advance(0.02))

    def test_poll_interval(self) -> None:
        clock = FakeClock()
        detector: ActiveSpeakerDetector[int] = ActiveSpeakerDetector(interval=0.25)
        assert detector.get_timer() is None
        detector.observe(0xA, 20, clock.now)
        assert detector.handle_timer(clock.now) == [
            SpeakingChanged(0xA, True),
            DominantSpeakerChanged(0xA, None),
        ]
        assert detector.get_timer() == clock.now + 0.25
        detector.observe(0xB, 10, clock.now)
        assert detector.handle_timer(clock.advance(0.125)) == []
        assert detector.handle_timer(clock.advance(0.125)) == [SpeakingChanged(0xB, True)]
