"""Active speaker detection from RFC 6464 audio levels, without decoding audio.

Every audio packet carries its level in -dBov (0 loudest, 127 silence) and, when the sender runs
a VAD, a voice flag (RFC 6464 §3). Per source the detector keeps a time-weighted moving average
of the loudness ``127 - level`` (a packet flagged "no voice" counts as silence; a source that sent
nothing for ``silence_timeout`` is silent, which covers DTX and muting). Then, every ``interval``:

- speaking starts at ``speaking_level`` dBov and stops ``hysteresis_db`` below it;
- the dominant speaker is the loudest speaking source, changed at most once per
  ``min_switch_interval`` and only if the challenger is ``switch_margin_db`` louder than a dominant
  speaker who is still speaking, so two people talking at once do not make the layout flicker.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from meet443.sfu.events import DominantSpeakerChanged, SpeakingChanged

K = TypeVar("K", bound=Hashable)

#: Audio packets normally carry 20 ms; the moving average weighs each by at least that much.
_MIN_STEP = 0.02


@dataclass(slots=True)
class _Source:
    loudness: float
    last: float
    speaking: bool = False


class ActiveSpeakerDetector(Generic[K]):
    """Speaking flags and the dominant speaker for a room, keyed by any source identifier."""

    __slots__ = (
        "_last_evaluation",
        "_last_switch",
        "_sources",
        "dominant",
        "hysteresis_db",
        "interval",
        "min_switch_interval",
        "silence_timeout",
        "speaking_level",
        "switch_margin_db",
        "time_constant",
    )

    def __init__(
        self,
        *,
        speaking_level: int = 50,
        hysteresis_db: float = 6.0,
        time_constant: float = 0.3,
        silence_timeout: float = 0.5,
        min_switch_interval: float = 1.0,
        switch_margin_db: float = 3.0,
        interval: float = 0.2,
    ) -> None:
        self.speaking_level = speaking_level
        self.hysteresis_db = hysteresis_db
        self.time_constant = time_constant
        self.silence_timeout = silence_timeout
        self.min_switch_interval = min_switch_interval
        self.switch_margin_db = switch_margin_db
        self.interval = interval
        self.dominant: K | None = None
        self._sources: dict[K, _Source] = {}
        self._last_switch = -math.inf
        self._last_evaluation: float | None = None

    def observe(self, source: K, level: int, now: float, voice: bool | None = None) -> None:
        """One audio packet's RFC 6464 level (-dBov) and voice flag (``None``: no VAD)."""
        loudness = 0.0 if voice is False else float(127 - level)
        state = self._sources.get(source)
        if state is None:
            self._sources[source] = _Source(loudness, now)
            return
        step = max(now - state.last, _MIN_STEP)
        state.loudness += (loudness - state.loudness) * (1.0 - math.exp(-step / self.time_constant))
        state.last = max(state.last, now)

    def loudness(self, source: K, now: float) -> float:
        """The smoothed loudness in dB above -127 dBov (0 when silent or gone quiet)."""
        state = self._sources.get(source)
        return 0.0 if state is None else self._effective(state, now)

    def _effective(self, state: _Source, now: float) -> float:
        return 0.0 if now - state.last > self.silence_timeout else state.loudness

    def remove(self, source: K) -> list[SpeakingChanged[K]]:
        """A source left: it stops speaking, and if it was dominant the next one may follow at once."""
        state = self._sources.pop(source, None)
        if source == self.dominant:
            self.dominant = None
            self._last_switch = -math.inf
        if state is not None and state.speaking:
            return [SpeakingChanged(source, False)]
        return []

    def get_timer(self) -> float | None:
        if self._last_evaluation is None:
            return None
        return self._last_evaluation + self.interval

    def handle_timer(self, now: float) -> list[SpeakingChanged[K] | DominantSpeakerChanged[K]]:
        """Re-evaluate if ``interval`` has passed since the last evaluation."""
        if self._last_evaluation is not None and now < self._last_evaluation + self.interval:
            return []
        return self.evaluate(now)

    def evaluate(self, now: float) -> list[SpeakingChanged[K] | DominantSpeakerChanged[K]]:
        self._last_evaluation = now
        events: list[SpeakingChanged[K] | DominantSpeakerChanged[K]] = []
        start = 127 - self.speaking_level
        stop = start - self.hysteresis_db
        best: K | None = None
        best_loudness = -1.0
        for source, state in self._sources.items():
            loudness = self._effective(state, now)
            if not state.speaking and loudness >= start:
                state.speaking = True
                events.append(SpeakingChanged(source, True))
            elif state.speaking and loudness < stop:
                state.speaking = False
                events.append(SpeakingChanged(source, False))
            if state.speaking and loudness > best_loudness:
                best, best_loudness = source, loudness
        if best is None or best == self.dominant or now < self._last_switch + self.min_switch_interval:
            return events
        current = self._sources.get(self.dominant) if self.dominant is not None else None
        if (
            current is not None
            and current.speaking
            and best_loudness < self._effective(current, now) + self.switch_margin_db
        ):
            return events
        events.append(DominantSpeakerChanged(best, self.dominant))
        self.dominant = best
        self._last_switch = now
        return events
