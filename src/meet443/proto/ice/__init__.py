"""ICE-lite (RFC 8445 §2.5) for the SFU: many sessions on one UDP port; see :mod:`.lite`."""

from meet443.proto.ice.events import (
    ConsentExpired,
    IceEvent,
    IceState,
    IceStateChanged,
    PairNominated,
    PairValidated,
)
from meet443.proto.ice.lite import IceCredentials, IceLiteMux, IceLiteSession, Reply, Routed

__all__ = [
    "ConsentExpired",
    "IceCredentials",
    "IceEvent",
    "IceLiteMux",
    "IceLiteSession",
    "IceState",
    "IceStateChanged",
    "PairNominated",
    "PairValidated",
    "Reply",
    "Routed",
]
