"""Measured bitrate of an incoming stream (each simulcast layer), for the layer selector.

A ring of ``buckets`` time buckets covering ``window`` seconds: adding a packet is an index and an
addition, reading sums the buckets still inside the window. Time is passed in.
"""

from __future__ import annotations


class BitrateMeter:
    """Bits per second received over the last ``window`` seconds."""

    __slots__ = ("_ids", "_inverse", "_sizes", "buckets", "window")

    def __init__(self, *, window: float = 1.0, buckets: int = 10) -> None:
        if window <= 0 or buckets <= 0:
            raise ValueError("window and buckets must be positive")
        self.window = window
        self.buckets = buckets
        self._inverse = buckets / window
        self._ids = [-1] * buckets
        self._sizes = [0] * buckets

    def add(self, size: int, now: float) -> None:
        """A packet of ``size`` bytes arrived."""
        bucket = int(now * self._inverse)
        slot = bucket % self.buckets
        if self._ids[slot] != bucket:
            self._ids[slot] = bucket
            self._sizes[slot] = 0
        self._sizes[slot] += size

    def bitrate(self, now: float) -> float:
        """Bits per second over the window ending now (the current bucket counts in full)."""
        current = int(now * self._inverse)
        total = sum(
            size
            for bucket, size in zip(self._ids, self._sizes, strict=True)
            if 0 <= current - bucket < self.buckets
        )
        return total * 8 / self.window
