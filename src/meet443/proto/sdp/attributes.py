"""Typed SDP attributes (``a=`` lines) used by WebRTC, each with ``parse`` and a canonical text form.

Every attribute is a frozen dataclass with a ``NAME`` and two directions:

* ``parse(name, value)`` turns the text after ``a=`` (split at the first colon; ``value`` is ``None``
  for a flag attribute) into the typed value and raises only :class:`~meet443.exceptions.ParseError`;
* ``value()`` gives the text back; ``str(attribute)`` is the whole line content after ``a=``.

Attributes this module does not know become :class:`UnknownAttribute` and keep their text exactly,
so a description round-trips byte for byte whatever a browser invents next. The known ones print in
the canonical form the RFCs and browsers use; input in that form (Chromium's, aiortc's) also
round-trips byte for byte, other spellings (lower-case fingerprints, ``recv`` before ``send`` in
``a=simulcast``) round-trip to an equal value.

References, by attribute:

* ``group``: RFC 5888 §5 (https://www.rfc-editor.org/rfc/rfc5888#section-5), BUNDLE RFC 9143
* ``mid``: RFC 5888 §4 / RFC 9143 §7; ``bundle-only``: RFC 9143 §6
* ``ice-*``, ``candidate``, ``end-of-candidates``: RFC 8839 §5 (https://www.rfc-editor.org/rfc/rfc8839)
* ``fingerprint``: RFC 8122 §5 (https://www.rfc-editor.org/rfc/rfc8122#section-5)
* ``setup``: RFC 4145 §4 and RFC 8842 §5 (https://www.rfc-editor.org/rfc/rfc8842)
* ``extmap``, ``extmap-allow-mixed``: RFC 8285 §5, §6 (https://www.rfc-editor.org/rfc/rfc8285)
* ``sendrecv`` and friends: RFC 8866 §6.7 (https://www.rfc-editor.org/rfc/rfc8866#section-6.7)
* ``msid``: RFC 8830 §2 (https://www.rfc-editor.org/rfc/rfc8830#section-2)
* ``rtcp-mux``: RFC 5761 §5.1.1; ``rtcp-mux-only``: RFC 8858; ``rtcp-rsize``: RFC 5506 §5;
  ``rtcp``: RFC 3605 §2.1
* ``rtpmap``, ``fmtp``: RFC 8866 §6.6, §6.15; ``rtcp-fb``: RFC 4585 §4.2
* ``ssrc``, ``ssrc-group``: RFC 5576 §4 (https://www.rfc-editor.org/rfc/rfc5576#section-4)
* ``rid``: RFC 8851 §10 (https://www.rfc-editor.org/rfc/rfc8851#section-10)
* ``simulcast``: RFC 8853 §5.1 (https://www.rfc-editor.org/rfc/rfc8853#section-5.1)
* ``sctp-port``, ``max-message-size``: RFC 8841 §5, §6
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import ClassVar, Self

from meet443.exceptions import ParseError

#: RFC 8866 §9 ``token``: the characters an attribute name, a mid or a group semantics may use.
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
#: RFC 8839 §5.4 ``ice-char``.
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
#: RFC 8851 §10 ``rid-id`` (alphanumerics, ``-`` and ``_``).
_RID = re.compile(r"[A-Za-z0-9_-]+")


def parse_int(text: str, what: str, low: int = 0, high: int = 2**64 - 1) -> int:
    """A decimal integer within ``[low, high]``; digits only (no sign, no spaces)."""
    if not text.isascii() or not text.isdigit():
        raise ParseError(f"{what} is not a number: {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise ParseError(f"{what} out of range: {value}")
    return value


def parse_token(text: str, what: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise ParseError(f"{what} is not a token: {text[:40]!r}")
    return text


def _require_value(name: str, value: str | None) -> str:
    if value is None:
        raise ParseError(f"a={name} needs a value")
    return value


def _split(value: str, name: str, minimum: int, maximum: int | None = None) -> list[str]:
    """Split at single spaces; fields must not be empty (RFC 8866 §5: one space between fields)."""
    parts = value.split(" ")
    if "" in parts or len(parts) < minimum or (maximum is not None and len(parts) > maximum):
        raise ParseError(f"a={name} has the wrong number of fields")
    return parts


class Attribute:
    """Base of every attribute: a name and a way to and from its value text."""

    NAME: ClassVar[str]
    __slots__ = ()

    @property
    def name(self) -> str:
        return self.NAME

    def value(self) -> str | None:
        raise NotImplementedError

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        raise NotImplementedError

    def __str__(self) -> str:
        value = self.value()
        return self.name if value is None else f"{self.name}:{value}"


class _Flag(Attribute):
    """A property attribute without a value (``a=rtcp-mux``)."""

    __slots__ = ()

    def value(self) -> str | None:
        return None

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        if value is not None:
            raise ParseError(f"a={name} takes no value")
        return cls()


@dataclass(frozen=True, slots=True)
class UnknownAttribute(Attribute):
    """An attribute this module does not type; its text is kept exactly for the round trip."""

    NAME: ClassVar[str] = ""
    attribute: str
    text: str | None = None

    @property
    def name(self) -> str:
        return self.attribute

    def value(self) -> str | None:
        return self.text

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        return cls(name, value)


# -- grouping and identification ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Group(Attribute):
    """RFC 5888 §5 ``a=group:<semantics> <mid> ...``; BUNDLE is RFC 9143."""

    NAME: ClassVar[str] = "group"
    semantics: str
    mids: tuple[str, ...] = ()

    def value(self) -> str:
        return " ".join((self.semantics, *self.mids))

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        parts = _split(_require_value(name, value), name, 1)
        return cls(
            parse_token(parts[0], "group semantics"),
            tuple(parse_token(mid, "mid") for mid in parts[1:]),
        )


@dataclass(frozen=True, slots=True)
class Mid(Attribute):
    """RFC 5888 §4 ``a=mid:<identification-tag>``."""

    NAME: ClassVar[str] = "mid"
    mid: str

    def value(self) -> str:
        return self.mid

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        return cls(parse_token(_require_value(name, value), "mid"))


@dataclass(frozen=True, slots=True)
class BundleOnly(_Flag):
    """RFC 9143 §6 ``a=bundle-only``."""

    NAME: ClassVar[str] = "bundle-only"


@dataclass(frozen=True, slots=True)
class Msid(Attribute):
    """RFC 8830 §2 ``a=msid:<stream id> [<track id>]``."""

    NAME: ClassVar[str] = "msid"
    stream: str
    track: str | None = None

    def value(self) -> str:
        return self.stream if self.track is None else f"{self.stream} {self.track}"

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        parts = _split(_require_value(name, value), name, 1, 2)
        return cls(parts[0], parts[1] if len(parts) == 2 else None)


# -- ICE (RFC 8839) --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IceLite(_Flag):
    """RFC 8839 §5.3 ``a=ice-lite`` (session level)."""

    NAME: ClassVar[str] = "ice-lite"


def _ice_chars(value: str, what: str) -> str:
    if len(value) > 256 or not _ICE_CHARS.fullmatch(value):
        raise ParseError(f"{what} is not 1 to 256 ice-chars")
    return value


@dataclass(frozen=True, slots=True)
class IceUfrag(Attribute):
    """RFC 8839 §5.4 ``a=ice-ufrag`` (4 to 256 ice-chars; the length is checked by negotiation)."""

    NAME: ClassVar[str] = "ice-ufrag"
    ufrag: str

    def value(self) -> str:
        return self.ufrag

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        return cls(_ice_chars(_require_value(name, value), "ice-ufrag"))


@dataclass(frozen=True, slots=True)
class IcePwd(Attribute):
    """RFC 8839 §5.4 ``a=ice-pwd`` (22 to 256 ice-chars). Never log it."""

    NAME: ClassVar[str] = "ice-pwd"
    pwd: str

    def value(self) -> str:
        return self.pwd

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        return cls(_ice_chars(_require_value(name, value), "ice-pwd"))

    def __repr__(self) -> str:
        return "IcePwd(pwd=<hidden>)"


@dataclass(frozen=True, slots=True)
class IceOptions(Attribute):
    """RFC 8839 §5.6 ``a=ice-options:<option> ...`` (``trickle``, ``renomination``, ...)."""

    NAME: ClassVar[str] = "ice-options"
    options: tuple[str, ...]

    def value(self) -> str:
        return " ".join(self.options)

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        return cls(tuple(_split(_require_value(name, value), name, 1)))


@dataclass(frozen=True, slots=True)
class Candidate(Attribute):
    """RFC 8839 §5.1 ``a=candidate``.

    ``address`` stays text: besides IP addresses browsers send mDNS names (``<uuid>.local``).
    Extensions (``generation 0``, ``network-id 1``, RFC 6544 ``tcptype active``) keep their order.
    """

    NAME: ClassVar[str] = "candidate"
    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None
    extensions: tuple[tuple[str, str], ...] = ()

    def value(self) -> str:
        fields = [
            self.foundation,
            str(self.component),
            self.transport,
            str(self.priority),
            self.address,
            str(self.port),
            "typ",
            self.type,
        ]
        if self.related_address is not None:
            fields += ["raddr", self.related_address]
        if self.related_port is not None:
            fields += ["rport", str(self.related_port)]
        for key, extension in self.extensions:
            fields += [key, extension]
        return " ".join(fields)

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        parts = _split(_require_value(name, value), name, 8)
        if parts[6] != "typ":
            raise ParseError("a=candidate lacks 'typ'")
        if len(parts[0]) > 32 or not _ICE_CHARS.fullmatch(parts[0]):
            raise ParseError("candidate foundation is not 1 to 32 ice-chars")
        rest = parts[8:]
        if len(rest) % 2:
            raise ParseError("a=candidate has an extension without a value")
        pairs = [(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)]
        related_address = related_port = None
        if pairs and pairs[0][0] == "raddr":
            related_address = pairs.pop(0)[1]
        if pairs and pairs[0][0] == "rport":
            related_port = parse_int(pairs.pop(0)[1], "rport", 0, 65535)
        return cls(
            foundation=parts[0],
            component=parse_int(parts[1], "candidate component", 1, 256),
            transport=parts[2],
            priority=parse_int(parts[3], "candidate priority", 0, 2**32 - 1),
            address=parts[4],
            port=parse_int(parts[5], "candidate port", 0, 65535),
            type=parts[7],
            related_address=related_address,
            related_port=related_port,
            extensions=tuple(pairs),
        )

    def extension(self, key: str) -> str | None:
        for name, value in self.extensions:
            if name == key:
                return value
        return None


@dataclass(frozen=True, slots=True)
class EndOfCandidates(_Flag):
    """RFC 8840 §8.2 ``a=end-of-candidates``."""

    NAME: ClassVar[str] = "end-of-candidates"


# -- DTLS (RFC 8122, RFC 5763, RFC 8842) -----------------------------------------------------------

#: RFC 8122 §5 hash function names, lower case, with their digest sizes in bytes.
HASH_FUNCTIONS = {"sha-1": 20, "sha-224": 28, "sha-256": 32, "sha-384": 48, "sha-512": 64, "md5": 16}


@dataclass(frozen=True, slots=True)
class Fingerprint(Attribute):
    """RFC 8122 §5 ``a=fingerprint:<hash-func> <HEX:HEX:...>`` of a DTLS certificate.

    ``algorithm`` is kept as written; compare with :attr:`hash_function` (lower case). The digest
    prints as upper-case hex pairs (RFC 8122 §5 ``UHEX``) which is also what browsers send.
    """

    NAME: ClassVar[str] = "fingerprint"
    algorithm: str
    digest: bytes

    @property
    def hash_function(self) -> str:
        return self.algorithm.lower()

    def value(self) -> str:
        return f"{self.algorithm} {self.digest.hex(':').upper()}"

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        parts = _split(_require_value(name, value), name, 2, 2)
        algorithm = parse_token(parts[0], "fingerprint hash function")
        octets = parts[1].split(":")
        if any(len(octet) != 2 for octet in octets):
            raise ParseError("fingerprint must be colon-separated hex pairs")
        try:
            digest = bytes.fromhex("".join(octets))
        except ValueError as exc:
            raise ParseError("fingerprint is not hexadecimal") from exc
        expected = HASH_FUNCTIONS.get(algorithm.lower())
        if expected is not None and len(digest) != expected:
            raise ParseError(f"{algorithm} fingerprint must be {expected} bytes")
        return cls(algorithm, digest)


class SetupRole(enum.Enum):
    """RFC 4145 §4 / RFC 8842 §5: who starts the DTLS handshake (``active`` is the DTLS client)."""

    ACTIVE = "active"
    PASSIVE = "passive"
    ACTPASS = "actpass"
    HOLDCONN = "holdconn"


@dataclass(frozen=True, slots=True)
class Setup(Attribute):
    """RFC 4145 §4 ``a=setup:<role>`` as used for DTLS by RFC 8842."""

    NAME: ClassVar[str] = "setup"
    role: SetupRole

    def value(self) -> str:
        return self.role.value

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        try:
            return cls(SetupRole(_require_value(name, value)))
        except ValueError as exc:
            raise ParseError("unknown a=setup role") from exc


# -- media direction and RTP -----------------------------------------------------------------------


class Direction(enum.Enum):
    """RFC 8866 §6.7 media direction, from the point of view of the description's author."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def of(cls, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    def reversed(self) -> Direction:
        """The direction the other side writes for the same stream (RFC 3264 §6.1)."""
        return Direction.of(sends=self.receives, receives=self.sends)


@dataclass(frozen=True, slots=True)
class DirectionAttribute(Attribute):
    """``a=sendrecv`` / ``a=sendonly`` / ``a=recvonly`` / ``a=inactive`` (RFC 8866 §6.7)."""

    NAME: ClassVar[str] = "sendrecv"
    direction: Direction

    @property
    def name(self) -> str:
        return self.direction.value

    def value(self) -> str | None:
        return None

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        if value is not None:
            raise ParseError(f"a={name} takes no value")
        return cls(Direction(name))


@dataclass(frozen=True, slots=True)
class ExtMap(Attribute):
    """RFC 8285 §5 ``a=extmap:<id>[/<direction>] <URI> [<extension attributes>]``."""

    NAME: ClassVar[str] = "extmap"
    id: int
    uri: str
    direction: Direction | None = None
    attributes: str | None = None

    def value(self) -> str:
        head = str(self.id) if self.direction is None else f"{self.id}/{self.direction.value}"
        text = f"{head} {self.uri}"
        return text if self.attributes is None else f"{text} {self.attributes}"

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        text = _require_value(name, value)
        parts = text.split(" ", 2)
        if len(parts) < 2 or not parts[1]:
            raise ParseError("a=extmap needs an id and a URI")
        number, _, direction_text = parts[0].partition("/")
        direction = None
        if direction_text:
            try:
                direction = Direction(direction_text)
            except ValueError as exc:
                raise ParseError("unknown a=extmap direction") from exc
        # RFC 8285 §5: 1-14 one-byte, 1-255 two-byte, 4096-4351 only in offers for negotiation.
        ext_id = parse_int(number, "extmap id", 1, 4351)
        return cls(ext_id, parts[1], direction, parts[2] if len(parts) == 3 else None)


@dataclass(frozen=True, slots=True)
class ExtmapAllowMixed(_Flag):
    """RFC 8285 §6 ``a=extmap-allow-mixed``: one- and two-byte header extensions may mix."""

    NAME: ClassVar[str] = "extmap-allow-mixed"


@dataclass(frozen=True, slots=True)
class RtcpMux(_Flag):
    """RFC 5761 §5.1.1 ``a=rtcp-mux``."""

    NAME: ClassVar[str] = "rtcp-mux"


@dataclass(frozen=True, slots=True)
class RtcpMuxOnly(_Flag):
    """RFC 8858 §3 ``a=rtcp-mux-only``."""

    NAME: ClassVar[str] = "rtcp-mux-only"


@dataclass(frozen=True, slots=True)
class RtcpRsize(_Flag):
    """RFC 5506 §5 ``a=rtcp-rsize``: reduced-size RTCP."""

    NAME: ClassVar[str] = "rtcp-rsize"


@dataclass(frozen=True, slots=True)
class Rtcp(Attribute):
    """RFC 3605 §2.1 ``a=rtcp:<port> [IN IP4 <address>]``."""

    NAME: ClassVar[str] = "rtcp"
    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None

    def value(self) -> str:
        if self.address is None:
            return str(self.port)
        return f"{self.port} {self.nettype} {self.addrtype} {self.address}"

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        parts = _split(_require_value(name, value), name, 1, 4)
        port = parse_int(parts[0], "rtcp port", 0, 65535)
        if len(parts) == 1:
            return cls(port)
        if len(parts) != 4:
            raise ParseError("a=rtcp needs a port and optionally nettype, addrtype and address")
        return cls(port, parts[1], parts[2], parts[3])


@dataclass(frozen=True, slots=True)
class RtpMap(Attribute):
    """RFC 8866 §6.6 ``a=rtpmap:<pt> <encoding>/<clock rate>[/<channels>]``."""

    NAME: ClassVar[str] = "rtpmap"
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def value(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return text if self.channels is None else f"{text}/{self.channels}"

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        parts = _split(_require_value(name, value), name, 2, 2)
        encoding = parts[1].split("/")
        if len(encoding) not in (2, 3) or not encoding[0]:
            raise ParseError("a=rtpmap encoding must be name/rate[/channels]")
        return cls(
            parse_int(parts[0], "payload type", 0, 127),
            encoding[0],
            parse_int(encoding[1], "clock rate", 1, 2**32 - 1),
            parse_int(encoding[2], "channels", 1, 255) if len(encoding) == 3 else None,
        )


@dataclass(frozen=True, slots=True)
class Fmtp(Attribute):
    """RFC 8866 §6.15 ``a=fmtp:<pt> <parameters>``; the parameters stay text (see ``parameters``)."""

    NAME: ClassVar[str] = "fmtp"
    payload_type: int
    text: str

    def value(self) -> str:
        return f"{self.payload_type} {self.text}"

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        number, sep, text = _require_value(name, value).partition(" ")
        if not sep or not text:
            raise ParseError("a=fmtp needs a format and parameters")
        return cls(parse_int(number, "payload type", 0, 127), text)

    @property
    def parameters(self) -> dict[str, str]:
        return fmtp_parameters(self.text)


def fmtp_parameters(text: str) -> dict[str, str]:
    """``key=value;key=value`` as used by most codecs (RFC 7587 Opus, RFC 6184 H.264, RFC 4588 rtx).

    Keys are lower-cased (media type parameters are case-insensitive, RFC 6838 §4.3); a parameter
    without ``=`` (RED's ``111/111``) maps to the empty string.
    """
    parameters: dict[str, str] = {}
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        parameters[key.strip().lower()] = value.strip() if sep else ""
    return parameters


@dataclass(frozen=True, slots=True)
class RtcpFb(Attribute):
    """RFC 4585 §4.2 ``a=rtcp-fb:<pt or *> <type> [<parameter>]`` (``nack pli``, ``ccm fir``).

    ``payload_type`` is ``None`` for the wildcard ``*``.
    """

    NAME: ClassVar[str] = "rtcp-fb"
    payload_type: int | None
    type: str
    parameter: str | None = None

    def value(self) -> str:
        pt = "*" if self.payload_type is None else str(self.payload_type)
        text = f"{pt} {self.type}"
        return text if self.parameter is None else f"{text} {self.parameter}"

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        parts = _require_value(name, value).split(" ", 2)
        if len(parts) < 2 or not parts[1] or (len(parts) == 3 and not parts[2]):
            raise ParseError("a=rtcp-fb needs a payload type and a feedback type")
        pt = None if parts[0] == "*" else parse_int(parts[0], "payload type", 0, 127)
        return cls(pt, parts[1], parts[2] if len(parts) == 3 else None)

    @property
    def feedback(self) -> tuple[str, str | None]:
        """``(type, parameter)`` without the payload type, e.g. ``("nack", "pli")``."""
        return (self.type, self.parameter)


@dataclass(frozen=True, slots=True)
class Ssrc(Attribute):
    """RFC 5576 §4.1 ``a=ssrc:<ssrc> <attribute>[:<value>]`` (``cname``, ``msid``)."""

    NAME: ClassVar[str] = "ssrc"
    ssrc: int
    attribute: str
    text: str | None = None

    def value(self) -> str:
        head = f"{self.ssrc} {self.attribute}"
        return head if self.text is None else f"{head}:{self.text}"

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        number, sep, rest = _require_value(name, value).partition(" ")
        if not sep or not rest:
            raise ParseError("a=ssrc needs an SSRC and an attribute")
        attribute, colon, text = rest.partition(":")
        return cls(
            parse_int(number, "ssrc", 0, 2**32 - 1),
            parse_token(attribute, "ssrc attribute"),
            text if colon else None,
        )


@dataclass(frozen=True, slots=True)
class SsrcGroup(Attribute):
    """RFC 5576 §4.2 ``a=ssrc-group:<semantics> <ssrc> ...`` (``FID`` pairs media with RTX)."""

    NAME: ClassVar[str] = "ssrc-group"
    semantics: str
    ssrcs: tuple[int, ...]

    def value(self) -> str:
        return " ".join((self.semantics, *map(str, self.ssrcs)))

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        parts = _split(_require_value(name, value), name, 2)
        return cls(
            parse_token(parts[0], "ssrc-group semantics"),
            tuple(parse_int(p, "ssrc", 0, 2**32 - 1) for p in parts[1:]),
        )


class RidDirection(enum.Enum):
    SEND = "send"
    RECV = "recv"


@dataclass(frozen=True, slots=True)
class Rid(Attribute):
    """RFC 8851 §10 ``a=rid:<rid-id> <send|recv> [<restrictions>]`` (``pt=96,97;max-width=640``)."""

    NAME: ClassVar[str] = "rid"
    rid: str
    direction: RidDirection
    restrictions: str | None = None

    def value(self) -> str:
        text = f"{self.rid} {self.direction.value}"
        return text if self.restrictions is None else f"{text} {self.restrictions}"

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        parts = _require_value(name, value).split(" ", 2)
        if len(parts) < 2 or (len(parts) == 3 and not parts[2]):
            raise ParseError("a=rid needs an id and a direction")
        if not _RID.fullmatch(parts[0]):
            raise ParseError("rid-id must be alphanumeric, '-' or '_'")
        try:
            direction = RidDirection(parts[1])
        except ValueError as exc:
            raise ParseError("a=rid direction must be send or recv") from exc
        return cls(parts[0], direction, parts[2] if len(parts) == 3 else None)

    @property
    def payload_types(self) -> tuple[int, ...]:
        """RFC 8851 §4 ``pt=`` restriction, or ``()`` when every payload type is allowed."""
        for item in (self.restrictions or "").split(";"):
            key, _, value = item.partition("=")
            if key == "pt":
                return tuple(parse_int(p, "rid pt", 0, 127) for p in value.split(","))
        return ()


@dataclass(frozen=True, slots=True)
class SimulcastStream:
    """One RID in ``a=simulcast``; ``paused`` is RFC 8853's ``~`` prefix."""

    rid: str
    paused: bool = False

    def __str__(self) -> str:
        return f"~{self.rid}" if self.paused else self.rid


#: ``a=simulcast`` streams: a list of simulcast streams, each a list of alternative RIDs.
SimulcastList = tuple[tuple[SimulcastStream, ...], ...]


def _format_simulcast_list(streams: SimulcastList) -> str:
    return ";".join(",".join(str(alternative) for alternative in stream) for stream in streams)


def _parse_simulcast_list(text: str) -> SimulcastList:
    streams = []
    for stream in text.split(";"):
        alternatives = []
        for alternative in stream.split(","):
            paused = alternative.startswith("~")
            rid = alternative[1:] if paused else alternative
            if not _RID.fullmatch(rid):
                raise ParseError("a=simulcast names a malformed rid")
            alternatives.append(SimulcastStream(rid, paused))
        streams.append(tuple(alternatives))
    return tuple(streams)


@dataclass(frozen=True, slots=True)
class Simulcast(Attribute):
    """RFC 8853 §5.1 ``a=simulcast:send q;h;f`` / ``recv ...`` / both (``send`` printed first)."""

    NAME: ClassVar[str] = "simulcast"
    send: SimulcastList = ()
    recv: SimulcastList = ()

    def value(self) -> str:
        parts = []
        if self.send:
            parts.append(f"send {_format_simulcast_list(self.send)}")
        if self.recv:
            parts.append(f"recv {_format_simulcast_list(self.recv)}")
        return " ".join(parts)

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        parts = _split(_require_value(name, value), name, 2, 4)
        if len(parts) % 2:
            raise ParseError("a=simulcast must be '<send|recv> <streams>' once or twice")
        lists: dict[str, SimulcastList] = {}
        for direction, streams in zip(parts[::2], parts[1::2], strict=True):
            if direction not in ("send", "recv") or direction in lists:
                raise ParseError("a=simulcast direction must be send or recv, each at most once")
            lists[direction] = _parse_simulcast_list(streams)
        return cls(lists.get("send", ()), lists.get("recv", ()))

    @staticmethod
    def rids_of(streams: SimulcastList) -> tuple[str, ...]:
        """Every RID named in a list, in order (alternatives included)."""
        return tuple(alternative.rid for stream in streams for alternative in stream)


# -- data channels (RFC 8841) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SctpPort(Attribute):
    """RFC 8841 §5 ``a=sctp-port``."""

    NAME: ClassVar[str] = "sctp-port"
    port: int

    def value(self) -> str:
        return str(self.port)

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        return cls(parse_int(_require_value(name, value), "sctp-port", 0, 65535))


@dataclass(frozen=True, slots=True)
class MaxMessageSize(Attribute):
    """RFC 8841 §6 ``a=max-message-size`` (0 means no limit)."""

    NAME: ClassVar[str] = "max-message-size"
    size: int

    def value(self) -> str:
        return str(self.size)

    @classmethod
    def parse(cls, name: str, value: str | None) -> Self:
        return cls(parse_int(_require_value(name, value), "max-message-size"))


KNOWN_ATTRIBUTES: dict[str, type[Attribute]] = {
    cls.NAME: cls
    for cls in (
        Group,
        Mid,
        BundleOnly,
        Msid,
        IceLite,
        IceUfrag,
        IcePwd,
        IceOptions,
        Candidate,
        EndOfCandidates,
        Fingerprint,
        Setup,
        ExtMap,
        ExtmapAllowMixed,
        RtcpMux,
        RtcpMuxOnly,
        RtcpRsize,
        Rtcp,
        RtpMap,
        Fmtp,
        RtcpFb,
        Ssrc,
        SsrcGroup,
        Rid,
        Simulcast,
        SctpPort,
        MaxMessageSize,
    )
}
KNOWN_ATTRIBUTES.update({direction.value: DirectionAttribute for direction in Direction})


def parse_attribute(text: str) -> Attribute:
    """The content of one ``a=`` line (after ``a=``): a typed attribute or an UnknownAttribute."""
    name, colon, value = text.partition(":")
    if not _TOKEN.fullmatch(name):
        raise ParseError(f"attribute name is not a token: {name[:40]!r}")
    kind = KNOWN_ATTRIBUTES.get(name, UnknownAttribute)
    return kind.parse(name, value if colon else None)
