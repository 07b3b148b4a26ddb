"""What the ICE-lite agent tells its caller; read them with ``IceLiteMux.next_event()`` and ``match``."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from meet443.proto.addresses import Address


class IceState(enum.Enum):
    """State of one ICE-lite session (see the transition table in ``lite.py``)."""

    NEW = "new"  # no valid check yet
    CHECKING = "checking"  # valid checks, nothing nominated
    CONNECTED = "connected"  # a nominated pair with consent (RFC 8445 §8.2, RFC 7675)
    DISCONNECTED = "disconnected"  # the selected pair's consent expired; a new nomination revives it
    FAILED = "failed"  # no nomination in time (from creation or from disconnection)
    CLOSED = "closed"  # removed by the caller


@dataclass(frozen=True, slots=True)
class PairValidated:
    """A Binding request from a new 5-tuple passed every check (RFC 8445 §7.3): it may now carry
    this session's DTLS and media, but nothing is sent to it before it is nominated."""

    session_id: str
    remote: Address


@dataclass(frozen=True, slots=True)
class PairNominated:
    """RFC 8445 §7.3.1.5 / §8.2: a check with USE-CANDIDATE made ``remote`` the selected pair:
    send DTLS and media there. ``previous`` is the pair it replaces (network change), if any."""

    session_id: str
    remote: Address
    previous: Address | None = None


@dataclass(frozen=True, slots=True)
class ConsentExpired:
    """RFC 7675 §5.1: no valid check from ``remote`` for the consent timeout (30 s), or the
    5-tuple now authenticates as another session. When ``selected``, stop sending to it."""

    session_id: str
    remote: Address
    selected: bool


@dataclass(frozen=True, slots=True)
class IceStateChanged:
    """The session moved from ``previous`` to ``state``."""

    session_id: str
    state: IceState
    previous: IceState


IceEvent = PairValidated | PairNominated | ConsentExpired | IceStateChanged
