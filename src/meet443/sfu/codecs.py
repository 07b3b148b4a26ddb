"""Which video codec each publisher of a group room sends, so that every subscriber can decode it.

A publisher offers its video codecs in its order of preference (RFC 3264 §6.1; the web client puts
``?videoCodec=`` first and VP8 after it). The SFU answers them in that order, except that codecs
some subscriber of the room cannot decode go last: a browser sends the first codec of the answer,
so the room falls back to a codec everyone decodes — VP8, which every WebRTC endpoint must decode
(RFC 7742 §5), is always offered by the web client — and returns to the publisher's first choice
once nobody needs the fallback any more.

What a subscriber decodes is what its answer to the SFU's subscribe offer kept (RFC 3264 §6.1: an
answerer lists only formats it can receive); the offer always holds every codec the SFU forwards.
A subscriber whose answer is not in yet constrains nobody. When a subscriber's answer or departure
changes a publisher's first codec, the publisher is asked for a new offer (``republish``), and only
its new answer switches the codec. Until then the router forwards nobody a payload type their
answer did not accept (``Router.set_decodable``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class VideoCodecPlan:
    """The video codecs of one room: what each subscriber decodes and each publisher was answered."""

    def __init__(self) -> None:
        #: participant -> the video codec names (lower case) its latest subscribe answer accepted.
        self._decodes: dict[str, frozenset[str]] = {}
        #: publisher -> the video codec names it offered, in its order of preference.
        self._offered: dict[str, tuple[str, ...]] = {}
        #: publisher -> the codec its latest answer put first (what it sends).
        self._sending: dict[str, str] = {}
        #: Publishers asked for a new offer that has not come yet: asked once, not on every change.
        self._asked: set[str] = set()

    def answer_order(self, publisher: str, offered: Sequence[str]) -> tuple[str, ...]:
        """RFC 3264 §6.1: the codecs to answer ``publisher``'s offer with, first the one it sends."""
        self._offered[publisher] = tuple(offered)
        self._asked.discard(publisher)
        order = self._order(publisher)
        if order:
            self._sending[publisher] = order[0]
        else:
            self._sending.pop(publisher, None)
        return order

    def sending(self, publisher: str) -> str | None:
        """The video codec ``publisher`` was last told to send (None: it publishes no video)."""
        return self._sending.get(publisher)

    def subscriber_decodes(self, participant: str, codecs: Iterable[str]) -> list[str]:
        """``participant``'s subscribe answer accepted ``codecs``: the publishers to ask to offer again."""
        decodes = frozenset(codec.lower() for codec in codecs)
        if self._decodes.get(participant) == decodes:
            return []
        self._decodes[participant] = decodes
        return self._to_republish()

    def remove(self, participant: str) -> list[str]:
        """``participant`` left the room: the publishers to ask to offer again."""
        self._offered.pop(participant, None)
        self._sending.pop(participant, None)
        self._asked.discard(participant)
        if self._decodes.pop(participant, None) is None:
            return []
        return self._to_republish()

    def _order(self, publisher: str) -> tuple[str, ...]:
        others = [codecs for name, codecs in self._decodes.items() if name != publisher]
        offered = self._offered.get(publisher, ())
        everyone = [codec for codec in offered if all(codec in codecs for codecs in others)]
        return (*everyone, *(codec for codec in offered if codec not in everyone))

    def _to_republish(self) -> list[str]:
        due = []
        for publisher, sending in self._sending.items():
            order = self._order(publisher)
            if order and order[0] != sending and publisher not in self._asked:
                self._asked.add(publisher)
                due.append(publisher)
        return sorted(due)
