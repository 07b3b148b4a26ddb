"""Last-N: which published tracks each subscriber's slots carry, without I/O.

A subscriber receives on a pool of slots per kind (one m-section each, RFC 8843 bundled). When the
conversation moves (someone joins, publishes, starts speaking), :class:`LastN` ranks the other
participants' tracks, with the dominant speaker and the most recent speakers first (their audio
levels per RFC 6464, see :mod:`.speaker`), and :func:`fill` works out which slot takes which
track: a slot keeps a track it still carries, idle slots are reused in order, and only when every
slot of a kind is busy does the pool grow (which takes a new offer, RFC 8829 §5.2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from meet443.sfu.tracks import PublishedTrack


class Candidate(Protocol):
    """A published track as last-N sees it."""

    @property
    def key(self) -> tuple[str, str]:
        """``(publisher, track id)``."""

    @property
    def video(self) -> bool: ...

    @property
    def order(self) -> int:
        """When it was published, across the room: earlier tracks win ties."""

    @property
    def info(self) -> PublishedTrack: ...


C = TypeVar("C", bound=Candidate)


class LastN:
    """Which of the other participants' tracks a subscriber receives, in order of preference.

    Audio: every other microphone up to ``max_audio_slots``, recent speakers first. Video: screen
    shares first (up to ``max_screen_slots``), then cameras up to ``last_n`` with the dominant
    speaker and the most recent speakers first.
    """

    __slots__ = ("_last_spoke", "last_n", "max_audio_slots", "max_screen_slots")

    def __init__(self, *, last_n: int, max_audio_slots: int, max_screen_slots: int) -> None:
        self.last_n = last_n
        self.max_audio_slots = max_audio_slots
        self.max_screen_slots = max_screen_slots
        #: When each participant last started or stopped speaking.
        self._last_spoke: dict[str, float] = {}

    def spoke(self, participant: str, now: float) -> None:
        """``participant`` started or stopped speaking, or became the dominant speaker."""
        self._last_spoke[participant] = now

    def forget(self, participant: str) -> None:
        """``participant`` left the room."""
        self._last_spoke.pop(participant, None)

    def choose(self, others: Iterable[C], dominant: str | None) -> tuple[list[C], list[C]]:
        """The audio and the video tracks to receive out of ``others``, most wanted first."""
        tracks = list(others)

        def recency(track: C) -> float:
            return -self._last_spoke.get(track.key[0], -math.inf)

        audio = sorted((t for t in tracks if not t.video), key=lambda t: (recency(t), t.order))
        screens = sorted((t for t in tracks if t.video and t.info.source == "screen"), key=lambda t: t.order)
        cameras = sorted(
            (t for t in tracks if t.video and t.info.source != "screen"),
            key=lambda t: (t.key[0] != dominant, recency(t), t.order),
        )
        return audio[: self.max_audio_slots], screens[: self.max_screen_slots] + cameras[: self.last_n]


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SlotPlan(Generic[T]):
    """What :func:`fill` decided for one pool, to apply in this order."""

    #: Positions in the pool whose track is no longer wanted: unbind them.
    freed: tuple[int, ...]
    #: ``(position, track)`` to bind; a position past the end of the pool is a new slot, appended.
    bound: tuple[tuple[int, T], ...]

    def grows(self, size: int) -> bool:
        """True if a pool of ``size`` slots must grow."""
        return any(position >= size for position, _ in self.bound)


def fill(carried: Sequence[T | None], wanted: Sequence[T]) -> SlotPlan[T]:
    """Which slot of a pool (what each carries now, in creation order) takes which ``wanted`` track.

    A slot that carries a wanted track keeps it, so its subscriber sees no switch; the others are
    freed; wanted tracks without a slot take idle ones in order, then new ones.
    """
    keep = set(wanted)
    after = [track if track is None or track in keep else None for track in carried]
    freed = tuple(i for i, (old, new) in enumerate(zip(carried, after, strict=True)) if old is not new)
    bound_now = set(after)
    idle = [i for i, track in enumerate(after) if track is None]
    bound: list[tuple[int, T]] = []
    new = len(carried)
    for track in wanted:
        if track in bound_now:
            continue
        if idle:
            bound.append((idle.pop(0), track))
        else:
            bound.append((new, track))
            new += 1
    return SlotPlan(freed, tuple(bound))
