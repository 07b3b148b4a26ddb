"""The one exception hierarchy of meet443.

::

    Meet443Error
    ├── ConfigError                 bad flags, environment or config file; the CLI exits 2
    ├── StartupError                a part of the server did not come up (a media worker)
    ├── StoreUnavailable            the meetings database (PostgreSQL) cannot be reached now;
    │                               the API answers 503, a join is closed with 1013 (try again)
    ├── StateUnavailable            the cluster's shared state (Redis) cannot be reached; new
    │                               rooms cannot be placed, calls in progress go on
    └── ProtocolError               a peer sent something we cannot accept
        ├── ParseError              bytes that do not decode (STUN, ChannelData, ...);
        │                           the datagram or frame is dropped and counted
        ├── StunErrorResponse       a well-formed request to answer with a STUN ERROR-CODE
        │                           (RFC 8489 §14.8); carries the code, reason and any
        │                           UNKNOWN-ATTRIBUTES to put on the wire
        ├── SignalingError          a signaling message to answer with an ``error`` message
        │                           (docs/signaling.md "Error codes"); carries the code and
        │                           the WebSocket close code when the socket must close
        └── UnacceptableDescription a well-formed SDP offer or answer the SFU cannot negotiate

Parsers raise only ``ParseError``; servers turn every ``ProtocolError`` into a counter, a log line
and, where the RFC says so, an error response, never a crash.
"""

from __future__ import annotations


class Meet443Error(Exception):
    """Base class of every error meet443 raises on purpose."""


class ConfigError(Meet443Error):
    """The configuration (flags, environment, TOML file) is invalid."""


class StartupError(Meet443Error):
    """The server could not start: a media worker (``--workers``) did not come up in time."""


class StoreUnavailable(Meet443Error):
    """The meetings database cannot be reached now (down, restarting, unreachable); retrying later
    may work. The message names the database without its password."""


class StateUnavailable(Meet443Error):
    """The shared state of a cluster (:mod:`meet443.state`) did not answer."""


class ProtocolError(Meet443Error):
    """A remote party sent something that violates a protocol."""


class ParseError(ProtocolError):
    """Bytes that do not decode as the format they claim to be."""


class StunErrorResponse(ProtocolError):
    """A request that must be answered with an ERROR-CODE (RFC 8489 §14.8)."""

    def __init__(self, code: int, reason: str, unknown_attributes: tuple[int, ...] = ()) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.unknown_attributes = unknown_attributes


class SignalingError(ProtocolError):
    """A signaling message to answer with ``{"type": "error", "code": ...}`` (docs/signaling.md).

    ``code`` is the contract's error code (``bad-message``, ``room-full``, ...); ``close_code`` is the
    WebSocket close code that follows the error (1000, 1002, 1008, 1013), or ``None`` when the socket
    stays open; ``ref`` is the offending message's ``type`` when it is known.
    """

    def __init__(
        self, code: str, message: str, *, close_code: int | None = None, ref: str | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.close_code = close_code
        self.ref = ref


class UnacceptableDescription(ProtocolError):
    """A well-formed SDP offer or answer the SFU cannot negotiate (the signaling layer answers it)."""
