"""What the SFU's state machines tell their caller: small frozen dataclasses to ``match`` on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from meet443.sfu.tracks import Slot

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class LayerTargetChanged:
    """:class:`~meet443.sfu.layers.SimulcastSelector` wants ``target`` (``None``: pause now).

    The caller points the subscriber's :class:`~meet443.sfu.rewrite.StreamRewriter` at the target
    layer's SSRC; forwarding moves over at the target's next keyframe.
    """

    previous: int | None
    target: int | None


@dataclass(frozen=True, slots=True)
class KeyframeNeeded:
    """A pending switch waits for a keyframe of ``layer``: ask its publisher (``keyframes.py``)."""

    layer: int


@dataclass(frozen=True, slots=True)
class LayerSwitched:
    """The subscriber now receives ``current`` (after the keyframe arrived, or at once to pause)."""

    previous: int | None
    current: int | None


@dataclass(frozen=True, slots=True)
class DominantSpeakerChanged(Generic[K]):
    """:class:`~meet443.sfu.speaker.ActiveSpeakerDetector` picked a new dominant speaker."""

    speaker: K
    previous: K | None


@dataclass(frozen=True, slots=True)
class SpeakingChanged(Generic[K]):
    """A source started or stopped speaking (for "talking" indicators)."""

    source: K
    speaking: bool


@dataclass(frozen=True, slots=True)
class SlotsGrown:
    """The subscriber's pool got new slots: send it a new offer built from
    :meth:`~meet443.sfu.router.Router.slots`."""

    participant: str


@dataclass(frozen=True, slots=True)
class SlotsAssigned:
    """What the subscriber's slots carry changed (no renegotiation: tell the client by signaling)."""

    participant: str
    slots: tuple[Slot, ...]


@dataclass(frozen=True, slots=True)
class DominantSpeaker:
    """The room's dominant speaker (from RFC 6464 audio levels), ``None`` when they left."""

    participant: str | None


#: What :class:`~meet443.sfu.router.Router` tells its caller besides packets to send.
RouterEvent = SlotsGrown | SlotsAssigned | DominantSpeaker
