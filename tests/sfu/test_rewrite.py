"""StreamRewriter: one outgoing stream out of switching simulcast layers (RFC 3550 §5.1, RFC 7667 §3.7)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meet443.proto.rtp.codecs import Vp8PayloadDescriptor
from meet443.proto.rtp.serial import seq_delta, ts_delta
from meet443.sfu.rewrite import StreamRewriter, Vp8PictureRewriter

A, B, C = 0xA, 0xB, 0xC


def rewriter(**kwargs: object) -> StreamRewriter:
    options: dict[str, object] = {"clock_rate": 90000, "first_sequence": 1000, "first_timestamp": 5000}
    options.update(kwargs)
    return StreamRewriter(0x5555, **options)  # type: ignore[arg-type]


class TestSingleSource:
    def test_waits_for_a_keyframe_then_maps(self) -> None:
        r = rewriter()
        r.select(A)
        assert r.rewrite(A, 10, 100, False, 0.0) is None
        assert r.waiting == 1
        assert r.rewrite(A, 11, 3100, True, 0.0) == (1000, 5000)
        assert r.rewrite(A, 12, 3100, False, 0.0) == (1001, 5000)
        assert r.rewrite(A, 13, 6100, False, 0.03) == (1002, 8000)
        assert (r.current, r.forwarded, r.switches) == (A, 3, 1)

    def test_nothing_selected_forwards_nothing(self) -> None:
        r = rewriter()
        assert r.rewrite(A, 1, 1, True, 0.0) is None
        assert not r.awaits_keyframe(A)

    def test_loss_is_preserved(self) -> None:
        r = rewriter()
        r.select(A)
        r.rewrite(A, 100, 0, True, 0.0)
        assert r.rewrite(A, 104, 0, False, 0.0) == (1004, 5000)  # 101-103 lost: the subscriber NACKs

    def test_reordering_is_preserved(self) -> None:
        r = rewriter()
        r.select(A)
        r.rewrite(A, 100, 0, True, 0.0)
        assert r.rewrite(A, 103, 3000, False, 0.0) == (1003, 8000)
        assert r.rewrite(A, 101, 0, False, 0.0) == (1001, 5000)  # late, fills the hole
        assert r.rewrite(A, 102, 0, False, 0.0) == (1002, 5000)
        assert r.last_sequence == 1003

    def test_packets_before_the_segment_are_dropped(self) -> None:
        r = rewriter()
        r.select(A)
        r.rewrite(A, 100, 0, True, 0.0)
        assert r.rewrite(A, 99, 0, False, 0.0) is None
        assert r.stale == 1

    def test_duplicates_keep_their_number(self) -> None:
        r = rewriter()
        r.select(A)
        r.rewrite(A, 100, 0, True, 0.0)
        assert r.rewrite(A, 100, 0, True, 0.0) == (1000, 5000)

    def test_source_sequence_wraps(self) -> None:
        r = rewriter()
        r.select(A)
        outs = [r.rewrite(A, seq & 0xFFFF, 0, seq == 65530, 0.0) for seq in range(65530, 65545)]
        assert [o[0] for o in outs if o] == list(range(1000, 1015))

    def test_outgoing_sequence_wraps(self) -> None:
        r = rewriter(first_sequence=65534)
        r.select(A)
        assert [r.rewrite(A, s, 0, s == 7, 0.0) for s in range(7, 11)] == [
            (65534, 5000),
            (65535, 5000),
            (0, 5000),
            (1, 5000),
        ]

    def test_timestamps_wrap_at_32_bits(self) -> None:
        r = rewriter(first_timestamp=0xFFFFFF00)
        r.select(A)
        r.rewrite(A, 1, 0xFFFFFFFF, True, 0.0)
        assert r.rewrite(A, 2, 2999, False, 0.0) == (1001, (0xFFFFFF00 + 3000) & 0xFFFFFFFF)

    def test_map_timestamp_and_extrapolation(self) -> None:
        r = rewriter()
        r.select(A)
        assert r.timestamp_at(1.0) == 5000
        r.rewrite(A, 1, 100_000, True, 10.0)
        assert r.map_timestamp(A, 190_000) == 95000
        assert r.map_timestamp(B, 190_000) is None
        assert r.timestamp_at(11.0) == 95000


class TestKeyframeGatedSwitch:
    def start(self) -> StreamRewriter:
        r = rewriter()
        r.select(A)
        r.rewrite(A, 500, 70_000, True, 0.0)
        r.rewrite(A, 501, 73_000, False, 0.0333)
        return r

    def test_old_layer_flows_until_the_new_keyframe(self) -> None:
        r = self.start()
        r.select(B)
        assert r.awaits_keyframe(B)
        assert not r.awaits_keyframe(A)
        assert r.rewrite(B, 9000, 1_000_000, False, 0.04) is None  # not a keyframe: keep waiting
        assert r.rewrite(A, 502, 76_000, False, 0.0666) == (1002, 11000)  # A still forwarded
        out = r.rewrite(B, 9001, 1_003_000, True, 0.07)
        assert out is not None
        seq, ts = out
        # Contiguous: no gap for the subscriber to NACK. Timestamp: 11000 + 3.4 ms of wall time.
        assert seq == 1003
        assert ts == 11000 + round(0.0034 * 90000)
        assert (r.current, r.target, r.switches) == (B, B, 2)
        assert r.rewrite(A, 503, 79_000, False, 0.1) is None  # the old layer is now dropped
        assert r.rewrite(B, 9002, 1_006_000, False, 0.1) == (1004, ts + 3000)
        assert r.rewrite(B, 9000, 1_000_000, False, 0.1) is None  # B before its keyframe: stale

    def test_switch_right_after_a_packet_still_advances_the_timestamp(self) -> None:
        r = self.start()
        r.select(B)
        out = r.rewrite(B, 1, 42, True, 0.0333)
        assert out == (1002, 8001)

    def test_select_back_cancels(self) -> None:
        r = self.start()
        r.select(B)
        r.select(A)
        assert not r.awaits_keyframe(B)
        assert r.rewrite(B, 1, 1, True, 0.05) is None
        assert r.rewrite(A, 502, 76_000, False, 0.0666) == (1002, 11000)

    def test_pause_and_resume(self) -> None:
        r = self.start()
        r.select(None)
        assert r.current is None
        assert r.rewrite(A, 502, 76_000, True, 0.0666) is None
        r.select(A)
        assert r.rewrite(A, 600, 400_000, False, 5.0) is None
        # After 5 s of pause the timestamp moved 5 s on; the sequence number did not skip.
        assert r.rewrite(A, 601, 403_000, True, 5.0333) == (1002, 8000 + round(5.0 * 90000))

    def test_audio_switches_without_keyframes(self) -> None:
        r = rewriter(keyframe_gated=False, clock_rate=48000)
        r.select(A)
        assert r.rewrite(A, 1, 960, False, 0.0) == (1000, 5000)
        r.select(B)
        assert not r.awaits_keyframe(B)
        assert r.rewrite(B, 77, 123, False, 0.02) == (1001, 5960)


# --- property tests ---------------------------------------------------------------------------
# Hypothesis draws the seed and the rates; the seeded RNG then writes streams of hundreds of packets
# (hypothesis' own lists stay short, too short to hit a switch next to a reordered packet).

rates = st.fixed_dictionaries(
    {
        "packets": st.integers(50, 400),
        "keyframe": st.floats(0.0, 0.5),
        "switch": st.floats(0.0, 0.2),
        "loss": st.floats(0.0, 0.3),
        "swap": st.floats(0.0, 0.5),
    }
)


class TestProperties:
    @settings(max_examples=300, deadline=None)
    @given(rates, st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 2**32 - 1))
    def test_in_order_streams(self, rate: dict[str, float], first_seq: int, first_ts: int, seed: int) -> None:
        """In-order sources with loss and random switches (and pauses): every forwarded packet's
        sequence number is strictly after the previous one (mod 2^16), gaps only mirror losses
        within one source, a switch continues at exactly +1, and timestamps never go back (and move
        on at a switch)."""
        rng = random.Random(seed)
        r = rewriter(first_sequence=first_seq, first_timestamp=first_ts)
        seqs = {s: rng.randrange(0x10000) for s in (A, B, C)}
        stamps = {s: rng.randrange(1 << 32) for s in (A, B, C)}
        now = 0.0
        previous: tuple[int, int, int, int] | None = None  # (source, src seq, out seq, out ts)
        forwarded = 0
        for _ in range(int(rate["packets"])):
            now += rng.choice((0.0, 0.0, 0.001, 0.02, 0.5))  # bursts arrive at the same instant
            if rng.random() < rate["switch"]:
                r.select(rng.choice([A, B, C, None]))
            source = rng.choice([A, B, C])
            while rng.random() < rate["loss"]:
                seqs[source] = (seqs[source] + 1) & 0xFFFF  # lost on the way in: never arrives
            seqs[source] = (seqs[source] + 1) & 0xFFFF
            stamps[source] = (stamps[source] + 3000) & 0xFFFFFFFF
            keyframe = rng.random() < rate["keyframe"]
            switching = r.awaits_keyframe(source) and keyframe
            out = r.rewrite(source, seqs[source], stamps[source], keyframe, now)
            if out is None:
                continue
            forwarded += 1
            seq, ts = out
            if previous is None:
                assert (seq, ts) == (first_seq, first_ts)
            elif switching or previous[0] != source:
                assert seq_delta(seq, previous[2]) == 1
                assert ts_delta(ts, previous[3]) >= 1
            else:
                assert seq_delta(seq, previous[2]) == seq_delta(seqs[source], previous[1]) >= 1
                assert ts_delta(ts, previous[3]) > 0
            previous = (source, seqs[source], seq, ts)
        assert r.forwarded == forwarded

    @settings(max_examples=300, deadline=None)
    @given(rates, st.integers(0, 2**32 - 1))
    def test_reordered_streams_never_reuse_a_number(self, rate: dict[str, float], seed: int) -> None:
        """Sources delivered with reordering, switching at random keyframes: forwarded packets never
        share an outgoing sequence number (unless duplicates), and inside a segment the distance
        between two outgoing numbers equals the distance between their source numbers."""
        rng = random.Random(seed)
        r = rewriter()
        r.select(A)
        wire: list[tuple[int, int, bool]] = []
        seqs = {A: rng.randrange(0x10000), B: rng.randrange(0x10000)}
        for _ in range(int(rate["packets"])):
            source = rng.choice([A, B])
            seqs[source] = (seqs[source] + 1) & 0xFFFF
            if rng.random() >= rate["loss"]:
                wire.append((source, seqs[source], rng.random() < rate["keyframe"]))
        for i in range(len(wire) - 1):  # swap neighbours now and then
            if rng.random() < rate["swap"]:
                wire[i], wire[i + 1] = wire[i + 1], wire[i]
        used: set[int] = set()
        segment: dict[int, int] = {}  # src seq -> extended out seq, for the current segment
        highest: int | None = None
        now = 0.0
        for source, seq, keyframe in wire:
            now += 0.005
            if rng.random() < rate["switch"]:
                r.select(B if r.target == A else A)
            switching = r.awaits_keyframe(source) and keyframe
            out = r.rewrite(source, seq, 0, keyframe, now)
            if out is None:
                continue
            if switching:
                segment = {}
            extended = out[0] if highest is None else highest + seq_delta(out[0], highest & 0xFFFF)
            highest = extended if highest is None else max(highest, extended)
            assert extended not in used
            used.add(extended)
            for other_seq, other_out in segment.items():
                assert extended - other_out == seq_delta(seq, other_seq)
            segment[seq] = extended


@pytest.mark.parametrize("first", [0, 65535])
def test_last_sequence_before_anything(first: int) -> None:
    assert rewriter(first_sequence=first).last_sequence == (first - 1) & 0xFFFF


class TestRfc7741Vp8PictureContinuity:
    """RFC 7741 §4.2 picture IDs and TL0PICIDX continue across switches, like sequence numbers."""

    @staticmethod
    def packet(picture_id: int, tl0: int, *, long_id: bool = True) -> bytearray:
        descriptor = Vp8PayloadDescriptor(
            True, picture_id=picture_id, long_picture_id=long_id, tl0_pic_idx=tl0
        )
        return bytearray(bytes(descriptor) + b"\x00")

    def fields(self, data: bytearray) -> tuple[int | None, int | None]:
        descriptor, _ = Vp8PayloadDescriptor.parse(data)
        return descriptor.picture_id, descriptor.tl0_pic_idx

    def test_continuous_across_segments_and_wraps(self) -> None:
        pictures = Vp8PictureRewriter(first_picture_id=0x7FFE, first_tl0_pic_idx=255)
        out = []
        for segment, (start, tl0) in enumerate([(100, 7), (20000, 200), (5, 250)]):
            for i in range(3):
                data = self.packet((start + i) & 0x7FFF, (tl0 + i) & 0xFF)
                pictures.rewrite(data, 0, len(data), segment)
                out.append(self.fields(data))
        assert out == [
            (0x7FFE, 255),
            (0x7FFF, 0),
            (0, 1),
            (1, 2),
            (2, 3),
            (3, 4),
            (4, 5),
            (5, 6),
            (6, 7),
        ]

    def test_reordered_packet_does_not_move_the_continuation(self) -> None:
        pictures = Vp8PictureRewriter(first_picture_id=10)
        for picture in (500, 502, 501):
            data = self.packet(picture, 0)
            pictures.rewrite(data, 0, len(data), 1)
        data = self.packet(900, 0)
        pictures.rewrite(data, 0, len(data), 2)
        assert self.fields(data)[0] == 13

    def test_seven_bit_ids_and_missing_fields(self) -> None:
        pictures = Vp8PictureRewriter(first_picture_id=126)
        data = self.packet(3, 0, long_id=False)
        pictures.rewrite(data, 0, len(data), 1)
        assert self.fields(data)[0] == 126
        bare = bytearray(bytes(Vp8PayloadDescriptor(True)) + b"\x00")
        pictures.rewrite(bare, 0, len(bare), 2)
        assert bare == bytes(Vp8PayloadDescriptor(True)) + b"\x00"
