"""What the router is told about tracks and slots, and what it hands back: small value types.

A publisher's m-sections become :class:`PublishedTrack` values (SSRCs per RFC 5576, or RIDs per
RFC 8852), a subscribe connection's negotiation a :class:`SubscriberProfile`; each receiving
m-section of a subscriber is a :class:`Slot`. The router returns :class:`Outgoing` packets for the
caller to SRTP(C)-protect (RFC 3711) and send on the participant's :class:`PcRole` connection.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PcRole(enum.Enum):
    """Which of a participant's two peer connections a packet came in on or goes out on."""

    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One plaintext packet for the caller to SRTP(C)-protect and send on ``participant``'s ``role`` PC."""

    participant: str
    role: PcRole
    data: bytes
    rtcp: bool


@dataclass(frozen=True, slots=True)
class TrackCodec:
    """One codec a publisher negotiated for a track (lower-case name, its PT and RTX PT)."""

    name: str
    payload_type: int
    clock_rate: int
    rtx_payload_type: int | None = None


@dataclass(frozen=True, slots=True)
class PublishedTrack:
    """One m-section a publisher sends: SSRCs from SDP (RFC 5576), or RIDs learnt from packets."""

    track_id: str
    kind: str
    source: str
    codecs: tuple[TrackCodec, ...]
    ssrcs: tuple[int, ...] = ()
    rtx_ssrcs: tuple[tuple[int, int], ...] = ()
    rids: tuple[str, ...] = ()
    extensions: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class SubscriberProfile:
    """What a subscribe PC negotiated: ``(codec, PT, RTX PT)`` and ``(extension URI, id)``."""

    payload_types: tuple[tuple[str, int, int | None], ...]
    extensions: tuple[tuple[str, int], ...]
    rtx: bool = True


@dataclass(frozen=True, slots=True)
class Slot:
    """One receiving m-section of a subscriber and what it carries now (``participant`` None: idle)."""

    mid: str
    kind: str
    ssrc: int
    rtx_ssrc: int | None
    participant: str | None
    track_id: str | None
    source: str | None
