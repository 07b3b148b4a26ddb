"""What the SFU may send one subscriber (bps), from three signals, without I/O.

- Its REMB (draft-alvestrand-rmcat-remb §2.2): the browser's receive-side estimate.
- A rate that padding probes showed its path carries (:meth:`SubscriberBudget.probe`), since a
  browser's REMB grows slowly and stalls (draft-ietf-rmcat-gcc-02 §5.5).
- A loss-based cap from its receiver reports (:meth:`SubscriberBudget.receiver_report`,
  draft-ietf-rmcat-gcc-02 §6), since the REMB falls only over seconds when a path shrinks.

:meth:`SubscriberBudget.ceiling` combines them; the router splits the ceiling among the
subscriber's videos (:func:`share_out`) and lets retransmissions take at most a share of it
(:func:`repair_rate`). Time comes in as ``now``; what the subscriber's slots need and get is the
router's to measure, handed in as numbers.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence

#: Probing (:meth:`SubscriberBudget.probe`): a probe pads up to what the next layers need for
#: PROBE_DURATION; it fails on a loss fraction above PROBE_LOSS in a receiver report or on an
#: estimate below PROBE_RETREAT of where it started, and the next one then waits a pause that
#: doubles from MIN to MAX. A loss fraction above VERIFIED_LOSS withdraws what a probe showed.
PROBE_DURATION = 2.0
PROBE_HEADROOM = 1.3
PROBE_LOSS = 0.02
PROBE_RETREAT = 0.75
VERIFIED_LOSS = 0.05
PROBE_MIN_BACKOFF = 1.0
PROBE_MAX_BACKOFF = 16.0
#: Loss-based control (draft-ietf-rmcat-gcc-02 §6): a receiver report that lost more than
#: CONGESTION_LOSS caps the subscriber's budget at what it was being sent times (1 - loss / 2), at
#: once, where a browser's REMB would take seconds to come down; each report under PROBE_LOSS
#: raises the cap by CAP_GROWTH until the REMB is the lower bound again (or a probe lifts it).
#: After such a report no probe starts for CONGESTION_PAUSE: padding into a full path only adds loss.
CONGESTION_LOSS = 0.10
CAP_GROWTH = 1.05
CONGESTION_PAUSE = 2.0
#: Below this the cap goes no lower (bps): the lowest layer stays anyway (a frozen picture is worse
#: than a blurry one), and a cap far below it would take minutes of clean reports to grow back.
LOSS_CAP_FLOOR = 100_000.0
#: Retransmissions (NACK answers, RFC 4588) to a subscriber take at most this share of what it may
#: be sent, but no less than RETRANSMIT_MIN_BPS (a keyframe that lost a few packets in a shallow
#: queue must still be repaired soon), in bursts of at most RETRANSMIT_BURST seconds of that: on a
#: congested path, resending everything a receiver misses only adds to the loss.
RETRANSMIT_SHARE = 0.25
RETRANSMIT_MIN_BPS = 200_000.0
RETRANSMIT_BURST = 0.25
#: Padding per probe packet (RFC 3550 §5.1 allows 255) and per poll, and the highest probe rate.
PROBE_PADDING_BYTES = 240
PROBE_MAX_PACKETS_PER_POLL = 40
PROBE_MAX_BPS = 3_000_000.0


class Probing(enum.Enum):
    """What :meth:`SubscriberBudget.probe` asks of the router at this poll (``None``: nothing)."""

    #: A probe runs: send the padding due (:meth:`SubscriberBudget.padding_due`).
    PADDING = enum.auto()
    #: A probe just succeeded: the ceiling rose, share it out again.
    VERIFIED = enum.auto()
    #: No probe and no pause: tell :meth:`SubscriberBudget.start_probe` what the slots need.
    MAY_START = enum.auto()


class _Probe:
    """One padding probe towards the subscriber, and the back-off between probes."""

    __slots__ = (
        "active",
        "backoff",
        "last_sent",
        "lossy",
        "rate",
        "resume_at",
        "start_estimate",
        "target",
        "until",
    )

    def __init__(self) -> None:
        self.active = False
        self.until = -math.inf
        self.resume_at = -math.inf
        self.backoff = PROBE_MIN_BACKOFF
        self.target = 0.0
        self.start_estimate = 0.0
        self.lossy = False
        self.rate = 0.0
        self.last_sent = -math.inf


class SubscriberBudget:
    """The bandwidth budget of one subscriber; see the module docstring."""

    __slots__ = ("_probe", "estimate", "loss_cap", "verified")

    def __init__(self) -> None:
        #: The subscriber's latest REMB (bits per second), None before the first.
        self.estimate: float | None = None
        #: What a padding probe showed the path carries without loss (bps; 0: nothing shown),
        #: used where the REMB is lower (see :meth:`probe`).
        self.verified = 0.0
        #: The loss-based ceiling on that (bps; None: no loss seen lately), see :meth:`receiver_report`.
        self.loss_cap: float | None = None
        self._probe = _Probe()

    def remb(self, bitrate: int) -> None:
        """draft-alvestrand-rmcat-remb §2.2: the subscriber's receive-side estimate (bps)."""
        self.estimate = float(bitrate)

    def ceiling(self) -> float | None:
        """What the subscriber may be sent (bps): its REMB or, above it, what a probe verified,
        under the loss-based cap; None before its first REMB."""
        if self.estimate is None:
            return None
        ceiling = max(self.estimate, self.verified)
        return ceiling if self.loss_cap is None else min(ceiling, self.loss_cap)

    def probe(self, now: float) -> Probing | None:
        """Padding on an RTX stream finds out whether the subscriber's path carries the next
        simulcast layers, which its REMB alone does not tell.

        A browser's REMB grows at most about 8% a second and never beyond about 1.5 times what it
        receives (draft-ietf-rmcat-gcc-02 §5.5, Chromium's AIMD rate control); under CPU load it
        stalls below what already flows. So while some unpaused video slot has a higher active
        layer whose need the estimate does not cover (:meth:`start_probe`), a probe sends padding
        up to that need for ``PROBE_DURATION``. If meanwhile no receiver report shows loss above
        ``PROBE_LOSS`` and the REMB did not fall back (the browser's delay-based detector saw no
        queue), the path carries it: the need becomes the verified rate, which :meth:`ceiling`
        uses where it is above the REMB, and the layers go up. A failed probe means the path is
        full; the next one waits a pause that doubles each time. Loss above ``VERIFIED_LOSS``
        later withdraws the verified rate (see :meth:`receiver_report`).

        ``None`` (nothing to do) when there is no estimate yet, during a pause after a failed
        probe or congestion, and when the probe just failed.
        """
        probe = self._probe
        estimate = self.estimate
        if estimate is None:
            return None
        if probe.active:
            if probe.lossy or estimate < probe.start_estimate * PROBE_RETREAT:
                probe.active = False
                probe.resume_at = now + probe.backoff
                probe.backoff = min(probe.backoff * 2, PROBE_MAX_BACKOFF)
                return None
            if now < probe.until:
                return Probing.PADDING
            probe.active = False
            probe.backoff = PROBE_MIN_BACKOFF
            probe.resume_at = now + PROBE_MIN_BACKOFF  # let the new layers settle first
            # Headroom: layer bitrates wander, and a switch must not undo itself on the next sample.
            self.verified = max(self.verified, probe.target * PROBE_HEADROOM)
            self.loss_cap = None  # the path carried more than the cap without loss
            return Probing.VERIFIED
        if now < probe.resume_at:
            return None
        return Probing.MAY_START

    def start_probe(self, now: float, wanted: float, forwarded: float) -> bool:
        """Start a probe if the slots would need ``wanted`` bps with each video one layer up,
        more than the ceiling and than the ``forwarded`` bps they get now; True if it started."""
        estimate, ceiling = self.estimate, self.ceiling()
        if estimate is None or ceiling is None or wanted <= ceiling or wanted <= forwarded:
            return False
        probe = self._probe
        probe.active, probe.lossy = True, False
        probe.until = now + PROBE_DURATION
        probe.target, probe.start_estimate = wanted, estimate
        probe.rate = min(wanted - forwarded, PROBE_MAX_BPS)
        probe.last_sent = now
        return True

    def padding_due(self, now: float, packet_size: int) -> int:
        """How many padding packets of ``packet_size`` bytes keep the running probe at its rate
        (at most ``PROBE_MAX_PACKETS_PER_POLL``); counted as sent."""
        probe = self._probe
        count = min(int(probe.rate / 8 * (now - probe.last_sent) / packet_size), PROBE_MAX_PACKETS_PER_POLL)
        if count <= 0:
            return 0
        probe.last_sent = now
        return count

    def receiver_report(self, lost: float, sent: Callable[[], float], now: float) -> bool:
        """RFC 3550 §6.4.2 loss fraction ``lost`` (0-1) of a receiver report on what the SFU sends
        the subscriber, and the loss-based control of draft-ietf-rmcat-gcc-02 §6 (see
        ``CONGESTION_LOSS``); ``sent`` measures what the subscriber is being sent (bps), asked
        only when needed. True if the ceiling changed."""
        probe = self._probe
        if lost > PROBE_LOSS:
            probe.lossy = True
        if lost > CONGESTION_LOSS:
            rate = sent()
            if self.loss_cap is not None:
                rate = min(rate, self.loss_cap)
            self.loss_cap = max(rate * (1 - lost / 2), LOSS_CAP_FLOOR)
            self.verified = 0.0
            probe.resume_at = max(probe.resume_at, now + CONGESTION_PAUSE)
            return True
        if lost <= PROBE_LOSS and self.loss_cap is not None:
            self.loss_cap *= CAP_GROWTH
            if self.loss_cap >= max(self.estimate or 0.0, self.verified):
                self.loss_cap = None
            return True
        if lost > VERIFIED_LOSS and self.verified:
            self.verified = 0.0  # the path no longer carries it: back to what the REMB says
            return True
        if lost <= PROBE_LOSS and self.verified:
            # What arrives without loss is carried: the verified rate follows the layers' own growth.
            self.verified = max(self.verified, sent())
        return False


def repair_rate(ceiling: float) -> float:
    """What retransmissions to the subscriber may use (bytes per second), see ``RETRANSMIT_SHARE``."""
    return max(ceiling * RETRANSMIT_SHARE, RETRANSMIT_MIN_BPS) / 8


def share_out(budget: float, groups: Sequence[Sequence[float]]) -> list[list[float]]:
    """Each group's needs water-filled in turn from what the groups before it left."""
    shares = []
    for needs in groups:
        given = water_fill(budget, needs)
        shares.append(given)
        budget -= sum(given)
    return shares


def water_fill(budget: float, needs: Sequence[float]) -> list[float]:
    """Max-min fair shares of ``budget``: nobody gets more than it needs, the rest split evenly."""
    shares = [0.0] * len(needs)
    left = len(needs)
    for i in sorted(range(len(needs)), key=needs.__getitem__):
        shares[i] = min(needs[i], max(0.0, budget) / left)
        budget -= shares[i]
        left -= 1
    return shares
