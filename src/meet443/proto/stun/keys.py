"""Keys for STUN message integrity (RFC 8489 §9.1.1, §9.2.2) and the string preparation they need.

RFC 8489 prepares passwords and realms with the OpaqueString profile (RFC 8265 §4.2); its predecessor
RFC 5389 used SASLprep (RFC 4013), which RFC 5769's long-term test vector depends on. Both are here.
"""

from __future__ import annotations

import hashlib
import stringprep
import unicodedata
from collections.abc import Callable

from meet443.exceptions import ParseError

_SASLPREP_PROHIBITED: tuple[Callable[[str], bool], ...] = (
    stringprep.in_table_c12,
    stringprep.in_table_c21,
    stringprep.in_table_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(value: str) -> str:
    """RFC 4013: map, NFKC-normalise, refuse prohibited and badly mixed bidirectional text."""
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in value if not stringprep.in_table_b1(ch)
    )
    prepared = unicodedata.normalize("NFKC", mapped)
    for ch in prepared:
        if any(test(ch) for test in _SASLPREP_PROHIBITED) or stringprep.in_table_a1(ch):
            raise ParseError("string contains a character SASLprep prohibits")
    # RFC 3454 §6: right-to-left text must start and end with RandALCat and hold no LCat.
    if any(stringprep.in_table_d1(ch) for ch in prepared):
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            raise ParseError("string mixes left-to-right and right-to-left text")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise ParseError("right-to-left string must start and end with a right-to-left character")
    return prepared


def opaque_string(value: str) -> str:
    """RFC 8265 §4.2 OpaqueString: non-ASCII spaces become U+0020, NFC, no control characters."""
    mapped = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in value)
    prepared = unicodedata.normalize("NFC", mapped)
    if not prepared or any(unicodedata.category(ch) in ("Cc", "Cn") for ch in prepared):
        raise ParseError("string is not a valid OpaqueString")
    return prepared


def long_term_key(
    username: str,
    realm: str,
    password: str,
    *,
    sha256: bool = False,
    prepare: Callable[[str], str] = opaque_string,
) -> bytes:
    """RFC 8489 §9.2.2: MD5 (or, with PASSWORD-ALGORITHM SHA-256, SHA-256) of user:realm:password."""
    material = f"{username}:{prepare(realm)}:{prepare(password)}".encode()
    return hashlib.sha256(material).digest() if sha256 else hashlib.md5(material).digest()  # noqa: S324


def short_term_key(password: str) -> bytes:
    """RFC 8489 §9.1.1: the OpaqueString-prepared password itself (ICE uses this)."""
    return opaque_string(password).encode()
