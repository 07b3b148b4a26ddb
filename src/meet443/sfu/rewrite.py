"""Per-subscriber RTP rewriting: one outgoing stream out of whichever simulcast layer is selected.

An SFU that switches layers (RFC 7667 §3.7, "Selective Forwarding Middlebox") must not let the
subscriber see three streams: it forwards the selected source under one outgoing SSRC with a
sequence number that continues across switches (no gap, so no spurious NACK, RFC 4585 §6.2.1) and a
timestamp that keeps increasing (RFC 3550 §5.1: the timestamp is the sampling instant, and the
receiver's jitter buffer orders frames by it).

A switch happens only at a keyframe of the new source: the old layer keeps flowing until then.
Within one source ("segment") gaps and reordering are preserved (the receiver NACKs real losses,
and late packets still fill holes); packets from before the segment's first packet are dropped, as
their numbers belong to the previous segment.

:class:`Vp8PictureRewriter` does the same for VP8's own frame numbering (RFC 7741 §4.2 picture ID
and TL0PICIDX), which each simulcast encoding also counts on its own.
"""

from __future__ import annotations

from meet443.proto.rtp.codecs import vp8_picture_fields

_TS_MASK = 0xFFFFFFFF


class StreamRewriter:
    """Maps ``(source ssrc, seq, timestamp)`` of the selected layer to one outgoing stream.

    - :meth:`select` names the source to forward (``None`` pauses at once).
    - :meth:`rewrite` returns the outgoing ``(seq, timestamp)`` or ``None`` to drop the packet.
      A packet of the selected source that is not the current one switches over when the caller
      says it starts a keyframe (``proto/rtp/codecs.py``); ask :meth:`awaits_keyframe` first to parse
      the payload only when it matters.
    - The first outgoing sequence number and timestamp come from the caller (RFC 3550 §5.1 wants
      them random; ``sfu/`` draws no random numbers).

    At a switch the outgoing timestamp advances by the wall time since the last forwarded packet
    (at least one tick), so it stays monotonic and close to real time even though each simulcast
    layer has its own random timestamp base.
    """

    __slots__ = (
        "_first_timestamp",
        "_out_high",
        "_out_time",
        "_out_ts",
        "_seq_offset",
        "_src_high",
        "_src_start",
        "_ts_offset",
        "clock_rate",
        "current",
        "forwarded",
        "keyframe_gated",
        "ssrc",
        "stale",
        "switches",
        "target",
        "waiting",
    )

    def __init__(
        self,
        ssrc: int,
        *,
        clock_rate: int,
        first_sequence: int = 0,
        first_timestamp: int = 0,
        keyframe_gated: bool = True,
    ) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        #: Video waits for keyframes; audio (and anything without them) switches at once.
        self.keyframe_gated = keyframe_gated
        #: The source SSRC being forwarded, and the one asked for (they differ while switching).
        self.current: int | None = None
        self.target: int | None = None
        self._first_timestamp = first_timestamp & _TS_MASK
        # Extended (unwrapped) sequence numbers: source side per segment, outgoing side overall.
        self._src_high = 0
        self._src_start = 0
        self._seq_offset = 0
        self._ts_offset = 0
        self._out_high = (first_sequence & 0xFFFF) - 1
        self._out_ts = self._first_timestamp
        self._out_time: float | None = None
        #: Counters: packets forwarded, dropped as older than their segment, dropped while the
        #: target had no keyframe yet, and completed switches.
        self.forwarded = 0
        self.stale = 0
        self.waiting = 0
        self.switches = 0

    def select(self, source_ssrc: int | None) -> None:
        """Forward ``source_ssrc`` from its next keyframe on; ``None`` stops forwarding now."""
        self.target = source_ssrc
        if source_ssrc is None:
            self.current = None

    def awaits_keyframe(self, source_ssrc: int) -> bool:
        """Is this source's next keyframe the one :meth:`rewrite` switches on?"""
        return self.keyframe_gated and source_ssrc == self.target and source_ssrc != self.current

    def rewrite(
        self, source_ssrc: int, seq: int, timestamp: int, keyframe: bool, now: float
    ) -> tuple[int, int] | None:
        """The outgoing ``(sequence number, timestamp)`` for this packet, or ``None`` to drop it."""
        if source_ssrc == self.current:
            high = self._src_high
            extended = high + (((seq - high + 0x8000) & 0xFFFF) - 0x8000)
            if extended > high:
                self._src_high = extended
                out = extended + self._seq_offset
                out_ts = (timestamp + self._ts_offset) & _TS_MASK
                self._out_high = out
                self._out_ts = out_ts
                self._out_time = now
                self.forwarded += 1
                return out & 0xFFFF, out_ts
            if extended < self._src_start:
                self.stale += 1
                return None
            self.forwarded += 1
            return (extended + self._seq_offset) & 0xFFFF, (timestamp + self._ts_offset) & _TS_MASK
        if source_ssrc == self.target:
            if keyframe or not self.keyframe_gated:
                return self._start_segment(source_ssrc, seq, timestamp, now)
            self.waiting += 1
        return None

    def _start_segment(self, source_ssrc: int, seq: int, timestamp: int, now: float) -> tuple[int, int]:
        if self._out_time is None:
            out_ts = self._first_timestamp
        else:
            elapsed = max(1, round((now - self._out_time) * self.clock_rate))
            out_ts = (self._out_ts + elapsed) & _TS_MASK
        out = self._out_high + 1
        self.current = source_ssrc
        self._src_high = self._src_start = seq
        self._seq_offset = out - seq
        self._ts_offset = (out_ts - timestamp) & _TS_MASK
        self._out_high = out
        self._out_ts = out_ts
        self._out_time = now
        self.switches += 1
        self.forwarded += 1
        return out & 0xFFFF, out_ts

    def map_timestamp(self, source_ssrc: int, timestamp: int) -> int | None:
        """The outgoing timestamp for a source timestamp, e.g. to translate the publisher's SR.

        Translating the publisher's NTP/RTP pair (RFC 3550 §6.4.1) keeps the subscriber's audio and
        video in sync; ``None`` when the source is not the one being forwarded.
        """
        if source_ssrc != self.current:
            return None
        return (timestamp + self._ts_offset) & _TS_MASK

    def timestamp_at(self, now: float) -> int:
        """The outgoing timestamp extrapolated to ``now`` from the last forwarded packet."""
        if self._out_time is None:
            return self._out_ts
        return (self._out_ts + round((now - self._out_time) * self.clock_rate)) & _TS_MASK

    @property
    def last_sequence(self) -> int:
        """The highest outgoing sequence number so far (``first_sequence - 1`` before any)."""
        return self._out_high & 0xFFFF


class Vp8PictureRewriter:
    """RFC 7741 §4.2: keeps VP8 picture IDs and TL0PICIDX continuous across simulcast switches.

    Each simulcast encoding numbers its pictures on its own, so after a switch the subscriber would
    see the picture ID jump, and its decoder's reference tracking counts the jump as missing frames.
    Like the sequence number, each segment gets an offset that continues from the last picture
    forwarded. Call :meth:`rewrite` on each forwarded copy with the rewriter's ``switches`` counter,
    which tells a new segment apart.
    """

    __slots__ = ("_last_picture", "_last_tl0", "_picture_offset", "_segment", "_tl0_offset")

    def __init__(self, *, first_picture_id: int = 0, first_tl0_pic_idx: int = 0) -> None:
        self._segment: int | None = None
        self._picture_offset = 0
        self._tl0_offset = 0
        self._last_picture = (first_picture_id - 1) & 0x7FFF
        self._last_tl0 = (first_tl0_pic_idx - 1) & 0xFF

    def rewrite(
        self,
        buffer: bytearray,
        offset: int,
        end: int,
        segment: int,
        fields: tuple[int, int, int] | None = None,
    ) -> None:
        """Renumber the descriptor at ``buffer[offset:end]`` in place (ParseError if it is cut).

        ``fields`` is :func:`vp8_picture_fields` of the packet when the caller already has it (one
        incoming packet, many copies).
        """
        picture_at, bits, tl0_at = fields or vp8_picture_fields(buffer, offset, end)
        if segment != self._segment:
            self._segment = segment
            if picture_at >= 0:
                self._picture_offset = self._last_picture + 1 - _picture_id(buffer, picture_at, bits)
            if tl0_at >= 0:
                self._tl0_offset = self._last_tl0 + 1 - buffer[tl0_at]
        if picture_at >= 0:
            picture = (_picture_id(buffer, picture_at, bits) + self._picture_offset) & 0x7FFF
            if bits == 15:
                buffer[picture_at] = 0x80 | picture >> 8
                buffer[picture_at + 1] = picture & 0xFF
            else:
                picture &= 0x7F
                buffer[picture_at] = picture
            # RFC 1982 over the field's width: only a newer picture moves the continuation point.
            if ((picture - self._last_picture) & ((1 << bits) - 1)) < 1 << (bits - 1):
                self._last_picture = picture
        if tl0_at >= 0:
            tl0 = (buffer[tl0_at] + self._tl0_offset) & 0xFF
            buffer[tl0_at] = tl0
            if ((tl0 - self._last_tl0) & 0xFF) < 0x80:
                self._last_tl0 = tl0


def _picture_id(data: bytearray, at: int, bits: int) -> int:
    return (data[at] & 0x7F) << 8 | data[at + 1] if bits == 15 else data[at] & 0x7F
