"""RTP payload formats of a media section, assembled from ``rtpmap``, ``fmtp`` and ``rtcp-fb`` lines.

A :class:`Codec` is a read view: :meth:`MediaDescription.codecs` builds it from the attribute lines,
and :meth:`Codec.attributes` writes it back as lines for the builders in ``negotiation``.
"""

from __future__ import annotations

from dataclasses import dataclass

from meet443.exceptions import ParseError
from meet443.proto.sdp.attributes import Attribute, Fmtp, RtcpFb, RtpMap, fmtp_parameters

#: RFC 3551 §6 static payload types a section may use without ``a=rtpmap``.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, None),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, None),
    26: ("JPEG", 90000, None),
    28: ("nv", 90000, None),
    31: ("H261", 90000, None),
    32: ("MPV", 90000, None),
    33: ("MP2T", 90000, None),
    34: ("H263", 90000, None),
}


@dataclass(frozen=True, slots=True)
class Codec:
    """One payload type of a media section with its format parameters and feedback types."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int | None = None
    parameters: str | None = None
    feedback: tuple[tuple[str, str | None], ...] = ()

    @property
    def mime_subtype(self) -> str:
        """The encoding name in lower case (``vp8``, ``h264``, ``opus``, ``rtx``)."""
        return self.name.lower()

    @property
    def fmtp(self) -> dict[str, str]:
        return fmtp_parameters(self.parameters or "")

    @property
    def apt(self) -> int | None:
        """RFC 4588 §8.1: the payload type an RTX format repairs (``apt=``), else None."""
        if self.mime_subtype != "rtx":
            return None
        value = self.fmtp.get("apt")
        if value is None or not value.isdigit():
            return None
        return int(value)

    def attributes(self) -> list[Attribute]:
        """The ``rtpmap``, ``rtcp-fb`` and ``fmtp`` lines for this payload type, in Chromium's order."""
        lines: list[Attribute] = [RtpMap(self.payload_type, self.name, self.clock_rate, self.channels)]
        lines += [RtcpFb(self.payload_type, kind, parameter) for kind, parameter in self.feedback]
        if self.parameters is not None:
            lines.append(Fmtp(self.payload_type, self.parameters))
        return lines


@dataclass(frozen=True, slots=True)
class H264Profile:
    """RFC 6184 §8.1 ``profile-level-id``: profile_idc, profile-iop, level_idc."""

    profile_idc: int
    profile_iop: int
    level_idc: int

    @classmethod
    def parse(cls, text: str) -> H264Profile:
        if len(text) != 6:
            raise ParseError("profile-level-id must be 6 hex digits")
        try:
            raw = bytes.fromhex(text)
        except ValueError as exc:
            raise ParseError("profile-level-id is not hexadecimal") from exc
        return cls(raw[0], raw[1], raw[2])

    @property
    def constrained_baseline(self) -> bool:
        """RFC 6184 Table 5: Baseline with constraint_set1 (0x42 xx4x) or Main with set1 (0x4d x8..)."""
        if self.profile_idc == 0x42:
            return bool(self.profile_iop & 0x40)
        if self.profile_idc == 0x4D:
            return bool(self.profile_iop & 0x80)
        return False

    @property
    def baseline_family(self) -> bool:
        """Baseline or Constrained Baseline: every WebRTC H.264 decoder must take it (RFC 7742 §6.2)."""
        return self.profile_idc == 0x42 or self.constrained_baseline


def h264_profile(codec: Codec) -> H264Profile | None:
    """The H.264 profile of a codec, or None when absent or malformed (RFC 6184 default is 42000A)."""
    text = codec.fmtp.get("profile-level-id")
    if text is None:
        return H264Profile(0x42, 0x00, 0x0A)
    try:
        return H264Profile.parse(text)
    except ParseError:
        return None
