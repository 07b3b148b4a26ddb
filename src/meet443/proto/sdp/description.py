"""SDP session descriptions (RFC 8866, https://www.rfc-editor.org/rfc/rfc8866) as typed values.

``SessionDescription.parse(text)`` decodes a description and raises only
:class:`~meet443.exceptions.ParseError`; ``str(description)`` (or ``bytes``) writes it back with
CRLF line ends. Attributes stay a list in their original order, typed where
:mod:`~meet443.proto.sdp.attributes` knows them and verbatim otherwise, so a browser's offer comes back
byte for byte. Accessors (``mid``, ``codecs()``, ``ice_credentials()``...) read that list; the
builders in :mod:`~meet443.proto.sdp.negotiation` write it.

RFC 8866 §5 fixes the order of the lines: ``v o s i u e p c b (t r*)+ z k a*`` for the session,
``m i c* b* k a*`` for each media description. The parser takes the session-level lines in any order
(they print in the RFC's order) but refuses unknown type letters (RFC 8866 §5: "MUST completely
ignore or reject"), repeated single lines, lines before ``v=``, and a description without ``o=``,
``s=`` or ``t=``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Self, TypeVar

from meet443.exceptions import ParseError
from meet443.proto.sdp.attributes import (
    Attribute,
    BundleOnly,
    Candidate,
    Direction,
    DirectionAttribute,
    ExtMap,
    Fingerprint,
    Fmtp,
    Group,
    IceLite,
    IceOptions,
    IcePwd,
    IceUfrag,
    Mid,
    Msid,
    Rid,
    RtcpFb,
    RtcpMux,
    RtpMap,
    Setup,
    SetupRole,
    Simulcast,
    Ssrc,
    SsrcGroup,
    parse_attribute,
    parse_int,
)
from meet443.proto.sdp.codecs import STATIC_PAYLOAD_TYPES, Codec

A = TypeVar("A", bound=Attribute)

_SESSION_LETTERS = frozenset("vosiuepcbtrzka")
_MEDIA_LETTERS = frozenset("icbka")
_SINGLE_SESSION_LETTERS = frozenset("vosiuczk")


@dataclass(frozen=True, slots=True)
class Origin:
    """RFC 8866 §5.2 ``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>``."""

    username: str = "-"
    session_id: int = 0
    session_version: int = 0
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )

    @classmethod
    def parse(cls, text: str) -> Self:
        parts = text.split(" ")
        if len(parts) != 6 or "" in parts:
            raise ParseError("o= must have six fields")
        return cls(
            parts[0],
            parse_int(parts[1], "session id"),
            parse_int(parts[2], "session version"),
            parts[3],
            parts[4],
            parts[5],
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """RFC 8866 §5.7 ``c=<nettype> <addrtype> <connection-address>``."""

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "0.0.0.0"  # noqa: S104 - RFC 8829 §5.2.1's placeholder address, not a bind

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"

    @classmethod
    def parse(cls, text: str) -> Self:
        parts = text.split(" ")
        if len(parts) != 3 or "" in parts:
            raise ParseError("c= must have three fields")
        return cls(parts[0], parts[1], parts[2])

    @classmethod
    def for_address(cls, ip: str) -> Self:
        """``IN IP4 <ip>`` or ``IN IP6 <ip>``."""
        return cls("IN", "IP6" if ":" in ip else "IP4", ip)


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """RFC 8866 §5.8 ``b=<bwtype>:<bandwidth>`` (``AS`` in kbit/s, ``TIAS`` in bit/s)."""

    type: str
    value: int

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"

    @classmethod
    def parse(cls, text: str) -> Self:
        kind, sep, value = text.partition(":")
        if not sep or not kind:
            raise ParseError("b= must be <type>:<bandwidth>")
        return cls(kind, parse_int(value, "bandwidth"))


@dataclass(frozen=True, slots=True)
class Timing:
    """RFC 8866 §5.9 ``t=<start> <stop>`` with its ``r=`` repeat lines (kept as text)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Self:
        parts = text.split(" ")
        if len(parts) != 2:
            raise ParseError("t= must have two fields")
        return cls(parse_int(parts[0], "start time"), parse_int(parts[1], "stop time"))


class _AttributeList:
    """Shared access to an ordered attribute list (as :class:`~meet443.proto.stun.message.Message`)."""

    attributes: list[Attribute]

    def get(self, kind: type[A]) -> A | None:
        """The first attribute of exactly this class, or None."""
        for attribute in self.attributes:
            if type(attribute) is kind:
                return attribute
        return None

    def get_all(self, kind: type[A]) -> list[A]:
        return [a for a in self.attributes if type(a) is kind]

    def has(self, kind: type[Attribute]) -> bool:
        return any(type(a) is kind for a in self.attributes)


@dataclass(slots=True)
class MediaDescription(_AttributeList):
    """RFC 8866 §5.14 ``m=<media> <port>[/<count>] <proto> <fmt> ...`` and its lines."""

    kind: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    information: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)

    # -- accessors --------------------------------------------------------------------------------

    @property
    def mid(self) -> str | None:
        attribute = self.get(Mid)
        return attribute.mid if attribute else None

    @property
    def direction(self) -> Direction | None:
        """The media-level direction attribute, if any (see SessionDescription.direction_of)."""
        attribute = self.get(DirectionAttribute)
        return attribute.direction if attribute else None

    @property
    def rtcp_mux(self) -> bool:
        return self.has(RtcpMux)

    @property
    def rejected(self) -> bool:
        """RFC 3264 §6: port zero rejects a section, unless it is bundle-only (RFC 9143 §6)."""
        return self.port == 0 and not self.has(BundleOnly)

    @property
    def payload_types(self) -> tuple[int, ...]:
        """The numeric formats of an RTP section, in preference order."""
        return tuple(int(f) for f in self.formats if f.isascii() and f.isdigit() and int(f) < 128)

    @property
    def extmaps(self) -> list[ExtMap]:
        return self.get_all(ExtMap)

    @property
    def rids(self) -> list[Rid]:
        return self.get_all(Rid)

    @property
    def simulcast(self) -> Simulcast | None:
        return self.get(Simulcast)

    @property
    def candidates(self) -> list[Candidate]:
        return self.get_all(Candidate)

    @property
    def msid(self) -> Msid | None:
        return self.get(Msid)

    @property
    def ssrc_groups(self) -> list[SsrcGroup]:
        return self.get_all(SsrcGroup)

    def ssrcs(self) -> dict[int, dict[str, str | None]]:
        """RFC 5576: each SSRC with its source attributes (``cname``, ``msid``), in order."""
        result: dict[int, dict[str, str | None]] = {}
        for line in self.get_all(Ssrc):
            result.setdefault(line.ssrc, {})[line.attribute] = line.text
        return result

    def extension_id(self, uri: str) -> int | None:
        for extmap in self.get_all(ExtMap):
            if extmap.uri == uri:
                return extmap.id
        return None

    def codecs(self) -> list[Codec]:
        """Every payload type in ``m=`` order with its rtpmap, fmtp and rtcp-fb (``*`` included)."""
        rtpmaps = {a.payload_type: a for a in self.get_all(RtpMap)}
        fmtps = {a.payload_type: a.text for a in reversed(self.get_all(Fmtp))}
        wildcard = [a.feedback for a in self.get_all(RtcpFb) if a.payload_type is None]
        codecs = []
        for pt in self.payload_types:
            rtpmap = rtpmaps.get(pt)
            if rtpmap is not None:
                name, rate, channels = rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels
            elif pt in STATIC_PAYLOAD_TYPES:
                name, rate, channels = STATIC_PAYLOAD_TYPES[pt]
            else:
                continue  # a dynamic payload type without rtpmap cannot be used (RFC 8866 §6.6)
            feedback = [a.feedback for a in self.get_all(RtcpFb) if a.payload_type == pt]
            codecs.append(
                Codec(pt, name, rate, channels, fmtps.get(pt), tuple(feedback + wildcard)),
            )
        return codecs

    # -- text -------------------------------------------------------------------------------------

    def lines(self) -> Iterator[str]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        yield f"m={' '.join((self.kind, port, self.proto, *self.formats))}"
        if self.information is not None:
            yield f"i={self.information}"
        for connection in self.connections:
            yield f"c={connection}"
        for bandwidth in self.bandwidths:
            yield f"b={bandwidth}"
        if self.key is not None:
            yield f"k={self.key}"
        for attribute in self.attributes:
            yield f"a={attribute}"

    @classmethod
    def parse_media_line(cls, text: str) -> Self:
        parts = text.split(" ")
        if len(parts) < 3 or "" in parts:
            raise ParseError("m= needs media, port, proto and formats")
        port_text, slash, count_text = parts[1].partition("/")
        return cls(
            kind=parts[0],
            port=parse_int(port_text, "media port", 0, 65535),
            port_count=parse_int(count_text, "port count", 1, 65535) if slash else None,
            proto=parts[2],
            formats=parts[3:],
        )


@dataclass(slots=True)
class SessionDescription(_AttributeList):
    """RFC 8866 §5: one session description: session-level lines, attributes, media sections."""

    origin: Origin = field(default_factory=Origin)
    name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    times: list[Timing] = field(default_factory=lambda: [Timing()])
    zone: str | None = None
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    # -- decoding ---------------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: str | bytes) -> SessionDescription:
        """RFC 8866 §5: decode a description; CRLF or LF line ends; raise ParseError if malformed."""
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ParseError("SDP is not UTF-8") from exc
        lines = data.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines:
            raise ParseError("empty SDP")
        description = cls(times=[])
        seen: set[str] = set()
        media: MediaDescription | None = None
        for number, raw in enumerate(lines, 1):
            line = raw[:-1] if raw.endswith("\r") else raw
            if len(line) < 2 or line[1] != "=" or "\r" in line or "\x00" in line:
                raise ParseError(f"SDP line {number} is not <type>=<value>")
            letter, value = line[0], line[2:]
            if number == 1:
                if letter != "v":
                    raise ParseError("SDP must start with v=")
                if value != "0":
                    raise ParseError("only SDP version 0 exists")
                seen.add("v")
                continue
            if letter == "m":
                media = MediaDescription.parse_media_line(value)
                description.media.append(media)
            elif media is not None:
                _parse_media_line(media, letter, value)
            else:
                description._parse_session_line(letter, value, seen)
        for required in "ost":
            if required not in seen:
                raise ParseError(f"SDP lacks its {required}= line")
        return description

    def _parse_session_line(self, letter: str, value: str, seen: set[str]) -> None:
        if letter not in _SESSION_LETTERS:
            raise ParseError(f"unknown or misplaced SDP line type {letter!r}")
        if letter in _SINGLE_SESSION_LETTERS and letter in seen:
            raise ParseError(f"SDP has more than one {letter}= line")
        seen.add(letter)
        match letter:
            case "o":
                self.origin = Origin.parse(value)
            case "s":
                if not value:
                    raise ParseError("s= must not be empty (use s=-)")
                self.name = value
            case "i":
                self.information = value
            case "u":
                self.uri = value
            case "e":
                self.emails.append(value)
            case "p":
                self.phones.append(value)
            case "c":
                self.connection = Connection.parse(value)
            case "b":
                self.bandwidths.append(Bandwidth.parse(value))
            case "t":
                self.times.append(Timing.parse(value))
            case "r":
                if not self.times:
                    raise ParseError("r= before any t=")
                last = self.times[-1]
                self.times[-1] = Timing(last.start, last.stop, (*last.repeats, value))
            case "z":
                self.zone = value
            case "k":
                self.key = value
            case "a":
                self.attributes.append(parse_attribute(value))
            case _:  # pragma: no cover - "v" is handled by the caller, the rest are not in the set
                raise ParseError(f"SDP has a second {letter}= line")

    # -- encoding ---------------------------------------------------------------------------------

    def lines(self) -> Iterator[str]:
        yield f"v={self.version}"
        yield f"o={self.origin}"
        yield f"s={self.name}"
        if self.information is not None:
            yield f"i={self.information}"
        if self.uri is not None:
            yield f"u={self.uri}"
        for email in self.emails:
            yield f"e={email}"
        for phone in self.phones:
            yield f"p={phone}"
        if self.connection is not None:
            yield f"c={self.connection}"
        for bandwidth in self.bandwidths:
            yield f"b={bandwidth}"
        for timing in self.times:
            yield f"t={timing.start} {timing.stop}"
            for repeat in timing.repeats:
                yield f"r={repeat}"
        if self.zone is not None:
            yield f"z={self.zone}"
        if self.key is not None:
            yield f"k={self.key}"
        for attribute in self.attributes:
            yield f"a={attribute}"
        for media in self.media:
            yield from media.lines()

    def __str__(self) -> str:
        return "".join(f"{line}\r\n" for line in self.lines())

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")

    # -- accessors --------------------------------------------------------------------------------

    @property
    def ice_lite(self) -> bool:
        return self.has(IceLite)

    def bundle_groups(self) -> list[Group]:
        """RFC 9143: the ``a=group:BUNDLE`` lines."""
        return [g for g in self.get_all(Group) if g.semantics == "BUNDLE"]

    def media_by_mid(self, mid: str) -> MediaDescription | None:
        for media in self.media:
            if media.mid == mid:
                return media
        return None

    def _media_or_session(self, media: MediaDescription, kind: type[A]) -> list[A]:
        return media.get_all(kind) or self.get_all(kind)

    def ice_credentials(self, media: MediaDescription) -> tuple[str, str] | None:
        """RFC 8839 §5.4: ``(ufrag, pwd)`` of a section, media level first, then session level."""
        ufrag = self._media_or_session(media, IceUfrag)
        pwd = self._media_or_session(media, IcePwd)
        if not ufrag or not pwd:
            return None
        return ufrag[0].ufrag, pwd[0].pwd

    def ice_options(self, media: MediaDescription) -> tuple[str, ...]:
        options = self._media_or_session(media, IceOptions)
        return options[0].options if options else ()

    def fingerprints(self, media: MediaDescription) -> list[Fingerprint]:
        """RFC 8122 §5: the certificate fingerprints that apply to a section."""
        return self._media_or_session(media, Fingerprint)

    def setup_of(self, media: MediaDescription) -> SetupRole | None:
        setup = self._media_or_session(media, Setup)
        return setup[0].role if setup else None

    def direction_of(self, media: MediaDescription) -> Direction:
        """RFC 8866 §6.7: media level, else session level, else ``sendrecv``."""
        if media.direction is not None:
            return media.direction
        session = self.get(DirectionAttribute)
        return session.direction if session else Direction.SENDRECV

    def connection_of(self, media: MediaDescription) -> Connection | None:
        return media.connections[0] if media.connections else self.connection


def _parse_media_line(media: MediaDescription, letter: str, value: str) -> None:
    if letter not in _MEDIA_LETTERS:
        raise ParseError(f"unknown or misplaced SDP line type {letter!r} in a media section")
    match letter:
        case "i":
            if media.information is not None:
                raise ParseError("media section has more than one i= line")
            media.information = value
        case "c":
            media.connections.append(Connection.parse(value))
        case "b":
            media.bandwidths.append(Bandwidth.parse(value))
        case "k":
            if media.key is not None:
                raise ParseError("media section has more than one k= line")
            media.key = value
        case _:
            media.attributes.append(parse_attribute(value))


__all__ = [
    "Bandwidth",
    "Connection",
    "MediaDescription",
    "Origin",
    "SessionDescription",
    "Timing",
]
