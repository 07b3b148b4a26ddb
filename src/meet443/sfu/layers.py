"""Which simulcast layer a subscriber gets (RFC 8853 simulcast, forwarded per RFC 7667 §3.7).

Inputs: the bandwidth available for this track (from the subscriber's REMB or transport-wide CC
feedback), each layer's measured bitrate (0 when the publisher is not sending it), and what the
subscriber wants (paused, or a maximum height for a small tile). The policy:

- Fit: the best layer whose bitrate fits the estimate, among the active layers no taller than the
  wish (the lowest active layer if none is small enough, or if none fits: a frozen picture is
  worse than a blurry one, unless ``pause_below_lowest``).
- Down fast: when the targeted layer no longer fits, retarget at once.
- Up slowly: only after a higher layer has fitted with ``up_margin`` headroom for ``up_hold``
  seconds in a row (a probe or a noisy estimate must not cause a switch and a keyframe).
- Pending: a new target takes effect at its next keyframe (the rewriter gates on it); the
  selector asks for one (:class:`~meet443.sfu.events.KeyframeNeeded`) and asks again every
  ``keyframe_retry`` seconds until :meth:`SimulcastSelector.switched` reports the switch.

Every transition happens in :meth:`SimulcastSelector._retarget` or :meth:`switched`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meet443.sfu.events import KeyframeNeeded, LayerSwitched, LayerTargetChanged

Event = LayerTargetChanged | KeyframeNeeded | LayerSwitched


@dataclass(frozen=True, slots=True)
class SubscriberWish:
    """What the subscriber asked for: nothing at all, or at most ``max_height`` pixels tall."""

    paused: bool = False
    max_height: int | None = None


class SimulcastSelector:
    """Per subscriber and simulcast track: target layer, current layer and the switch between.

    Layers are indices into ``heights``, lowest first (RFC 8853 ``a=simulcast`` order as the
    publisher's encodings run from low to high). The caller maps them to source SSRCs.
    """

    __slots__ = (
        "_bitrates",
        "_estimate",
        "_headroom_since",
        "_last_request",
        "current",
        "heights",
        "keyframe_retry",
        "pause_below_lowest",
        "target",
        "up_hold",
        "up_margin",
        "wish",
    )

    def __init__(
        self,
        heights: Sequence[int],
        *,
        up_margin: float = 1.2,
        up_hold: float = 2.0,
        keyframe_retry: float = 1.0,
        pause_below_lowest: bool = False,
    ) -> None:
        if not heights:
            raise ValueError("a simulcast track has at least one layer")
        self.heights = tuple(heights)
        self.up_margin = up_margin
        self.up_hold = up_hold
        self.keyframe_retry = keyframe_retry
        self.pause_below_lowest = pause_below_lowest
        self.wish = SubscriberWish()
        #: The layer the subscriber receives, and the one it should receive (differ while pending).
        self.current: int | None = None
        self.target: int | None = None
        self._estimate: float | None = None
        self._bitrates: tuple[float, ...] = (0.0,) * len(self.heights)
        self._headroom_since: float | None = None
        self._last_request: float | None = None

    @property
    def pending(self) -> bool:
        """Waiting for a keyframe of the target layer."""
        return self.target is not None and self.target != self.current

    def update(self, now: float, estimate_bps: float | None, bitrates: Sequence[float]) -> list[Event]:
        """A new bandwidth estimate (``None``: none yet) or new layer bitrates (bps, 0 = inactive)."""
        if len(bitrates) != len(self.heights):
            raise ValueError("one bitrate per layer")
        self._estimate = estimate_bps
        self._bitrates = tuple(bitrates)
        events: list[Event] = []
        self._retarget(self._choose(now), now, events)
        return events

    def set_wish(self, wish: SubscriberWish, now: float) -> list[Event]:
        """The subscriber paused, resumed or resized its tile."""
        self.wish = wish
        events: list[Event] = []
        self._retarget(self._choose(now), now, events)
        return events

    def switched(self, layer: int | None, now: float) -> list[Event]:
        """The rewriter now forwards ``layer`` (the target's keyframe arrived)."""
        if layer == self.current:
            return []
        previous, self.current = self.current, layer
        if layer == self.target:
            self._last_request = None
        return [LayerSwitched(previous, layer)]

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` will ask again for the keyframe a pending switch waits for."""
        if not self.pending or self._last_request is None:
            return None
        return self._last_request + self.keyframe_retry

    def handle_timer(self, now: float) -> list[Event]:
        """Ask again for the keyframe if a switch has waited ``keyframe_retry`` seconds."""
        if self.target is None or not self.pending or self._last_request is None:
            return []
        if now < self._last_request + self.keyframe_retry:
            return []
        self._last_request = now
        if self._bitrates[self.target] <= 0:
            # The publisher stopped sending that layer (camera off, layer disabled): a keyframe
            # request cannot be met, and the publisher's encoder starts the layer with one anyway.
            return []
        return [KeyframeNeeded(self.target)]

    def _choose(self, now: float) -> int | None:
        if self.wish.paused:
            return None
        bitrates = self._bitrates
        active = [i for i, bitrate in enumerate(bitrates) if bitrate > 0]
        if not active:
            return self.target  # nothing is flowing (yet): no reason to move
        limit = self.wish.max_height
        allowed = [i for i in active if limit is None or self.heights[i] <= limit] or active[:1]
        estimate = self._estimate
        if estimate is None:
            fit: int | None = allowed[0]
        else:
            fitting = [i for i in allowed if bitrates[i] <= estimate]
            fit = fitting[-1] if fitting else None if self.pause_below_lowest else allowed[0]
        reference = self.target
        if reference is None or reference not in allowed or fit is None or fit < reference:
            return fit
        if estimate is None:
            return reference
        higher = [i for i in allowed if i > reference and bitrates[i] * self.up_margin <= estimate]
        if not higher:
            self._headroom_since = None
            return reference
        if self._headroom_since is None:
            self._headroom_since = now
        if now >= self._headroom_since + self.up_hold:
            return higher[-1]
        return reference

    def _retarget(self, target: int | None, now: float, events: list[Event]) -> None:
        if target == self.target:
            return
        events.append(LayerTargetChanged(self.target, target))
        self.target = target
        self._headroom_since = None
        if target is None:
            self._last_request = None
            if self.current is not None:
                events.append(LayerSwitched(self.current, None))
                self.current = None
        elif target == self.current:
            self._last_request = None  # back to what is flowing: the pending switch is off
        else:
            self._last_request = now
            events.append(KeyframeNeeded(target))
