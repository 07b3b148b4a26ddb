"""Configuration of ``meet443 serve``.

Every option is declared once, in :data:`SERVE_OPTIONS`; the command-line flag, the environment variable
and the TOML key all derive from that table::

    --relay-ports 5000-6000     MEET443_RELAY_PORTS=5000-6000     relay-ports = "5000-6000"
    --turn-user a:x             MEET443_TURN_USER=a:x,b:y         turn-user = ["a:x", "b:y"]
    --require-api-key           MEET443_REQUIRE_API_KEY=1         require-api-key = true

Precedence: flag > environment > TOML file (``--config FILE``) > default. TOML keys may use dashes or
underscores. A repeatable flag given at a higher level replaces, not extends, the lower levels' list.
Relative paths in the TOML file are relative to the file's directory. A switch such as ``--force-relay``
has a ``--no-force-relay`` form to turn it off again over a lower level; in the environment it is
``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``, in TOML a boolean. A repeatable option in the
environment is split at commas, so a password with a comma belongs in a file, not in ``MEET443_TURN_USER``.

Secrets (the TURN shared secret, static users' passwords) never appear in :func:`repr` or
:meth:`ServeConfig.redacted`; prefer ``--turn-secret-file`` / ``--turn-users-file`` so that they stay out
of the process list.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import ipaddress
import logging
import os
import re
import secrets
import socket
import struct
import sys
import tomllib
import types
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

from meet443.exceptions import ConfigError
from meet443.proto.signaling.admission import RoomMode
from meet443.regions import REGION_NAME, Region, RegionMap

__all__ = [
    "DEFAULT_PORT",
    "SERVE_OPTIONS",
    "ClusterClient",
    "Option",
    "ServeConfig",
    "StoreSettings",
    "add_serve_arguments",
    "default_public_url",
    "discover_public_ip",
    "ip_literal_warning",
    "load_cluster_client",
    "load_config_from_arguments",
    "load_serve_config",
    "load_store_settings",
    "parse_database_url",
    "parse_origin",
    "parse_public_url",
    "parse_redis_url",
    "redact_url",
    "turn_uris_for",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORT = 8443
DEFAULT_LISTEN = "0.0.0.0"  # noqa: S104 -- a public server listens on every interface by default
DEFAULT_RELAY_PORTS = (49152, 65535)  # RFC 8656 §7.2 recommends the dynamic range (RFC 6335)
DEFAULT_DATA_DIR = "~/.local/share/meet443"
DEFAULT_CREDENTIAL_TTL = 3600
DEFAULT_MAX_PARTICIPANTS = 1000
#: The region of a node nobody placed: a deployment of one region need not name it.
DEFAULT_REGION = "default"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ENV_PREFIX = "MEET443_"
SECRET_FILE_NAME = "turn-secret"  # noqa: S105 -- a file name, not a secret
RESUME_KEY_FILE_NAME = "resume-key"
#: A resume key shorter than this is guessable; the generated one has 43 (256 bits).
MIN_RESUME_KEY_CHARS = 32

# RFC 8489 §14.3: USERNAME is fewer than 509 bytes of UTF-8.
_MAX_USERNAME_BYTES = 508


# --------------------------------------------------------------------------------------------------
# The option table


@dataclass(frozen=True)
class Option:
    """One ``serve`` option: ``--name`` on the command line, ``MEET443_NAME`` in the environment,
    ``name`` in the TOML file."""

    name: str
    metavar: str
    help: str
    repeatable: bool = False
    #: Options in the same group are mutually exclusive at one level (flag, env, TOML); a higher level
    #: setting any member overrides every member set at lower levels.
    exclusive_group: str | None = None
    in_toml: bool = True
    #: A switch: ``--name`` / ``--no-name``, ``MEET443_NAME=1``, ``name = true``.
    boolean: bool = False

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


SERVE_OPTIONS: tuple[Option, ...] = (
    Option("config", "FILE", "TOML file with values for the options below", in_toml=False),
    Option("listen", "HOST", "IP address to bind, TCP and UDP"),
    Option("port", "N", "port for TCP (HTTPS, WebSocket, TURN/TLS, TURN/TCP) and UDP"),
    Option(
        "public-ip",
        "IP",
        "address clients reach this host at (default: --listen if specific, else the host's first "
        "non-loopback address)",
    ),
    Option(
        "public-ipv6",
        "IP",
        "IPv6 address for IPv6 TURN relays (RFC 8656 REQUESTED-ADDRESS-FAMILY); default: none, "
        "relays are IPv4 only",
    ),
    Option(
        "relay-ports",
        "LO-HI",
        "UDP port range for TURN relayed addresses",
    ),
    Option(
        "turn-secret",
        "S",
        "shared secret for TURN REST API credentials (shows in the process list: prefer the file)",
        exclusive_group="turn-secret",
    ),
    Option(
        "turn-secret-file",
        "FILE",
        f"file holding the shared secret (default: <data-dir>/{SECRET_FILE_NAME}, generated on first run)",
        exclusive_group="turn-secret",
    ),
    Option(
        "resume-key-file",
        "FILE",
        "file holding the key that signs resume tokens, so that participants resume across a restart "
        f"(default: <data-dir>/{RESUME_KEY_FILE_NAME}, generated on first run)",
    ),
    Option(
        "shutdown-timeout",
        "SECONDS",
        "on SIGTERM: tell clients the server restarts, write the rooms' state, and exit within this long",
    ),
    Option("turn-user", "USER:PASS", "static TURN user (repeatable)", repeatable=True),
    Option("turn-users-file", "FILE", "file with one USER:PASS per line, # starts a comment"),
    Option(
        "allow-peer",
        "CIDR",
        "let relays reach this otherwise denied (private, loopback) peer range (repeatable)",
        repeatable=True,
    ),
    Option(
        "public-url",
        "URL",
        "URL browsers open; its host is used in every link and TURN URI (default https://<public-ip>[:port])",
    ),
    Option("realm", "R", "TURN realm (default: the public URL's host)"),
    Option(
        "cert",
        "PEM",
        "TLS certificate chain, with --key (default: a generated self-signed one)",
    ),
    Option("key", "PEM", "TLS private key (with --cert)"),
    Option("data-dir", "DIR", f"state directory (default {DEFAULT_DATA_DIR})"),
    Option(
        "database",
        "URL",
        "postgresql://USER@HOST[:PORT]/DB: meetings and API keys in PostgreSQL, shared by every node "
        "(default: SQLite in the data dir); put the password in --database-password-file, not the URL",
    ),
    Option("database-password-file", "FILE", "file holding the PostgreSQL password of --database"),
    Option("metrics-listen", "HOST:PORT", "serve Prometheus metrics there (default: off)"),
    Option("log-level", "LEVEL", f"one of {', '.join(LOG_LEVELS)}"),
    Option("max-allocations-per-user", "N", "TURN allocations one participant (or static user) may hold"),
    Option("max-allocations", "N", "TURN allocations in total"),
    Option(
        "allocation-bandwidth",
        "BYTES_PER_S",
        "relayed bytes/s per allocation (2000000 is ~16 Mbit/s), bursts of twice that",
    ),
    Option(
        "unauth-rate",
        "PER_S",
        "answers per second to unauthenticated requests per source IP, bursts of twice that",
    ),
    Option(
        "max-pending-connections",
        "N",
        "pending TCP/TLS connections: not yet through the TLS handshake and the first request's "
        "headers (HTTP) or an allocation (TURN)",
    ),
    Option(
        "pending-connections-per-address",
        "N",
        "pending TCP/TLS connections one address (IPv6: one /64) may have (default 10%% of "
        "--max-pending-connections, at least 32)",
    ),
    Option(
        "signaling-sockets-per-address",
        "N",
        "signaling WebSockets one address (IPv6: one /64) may hold (default 10%% of the server's "
        "2 x --max-participants, at least 100)",
    ),
    Option(
        "credential-ttl",
        "SECONDS",
        "lifetime in seconds of the TURN credentials handed to browsers",
    ),
    Option(
        "embed-origin",
        "ORIGIN",
        "https://host[:port] of a site allowed to embed meetings in an iframe (repeatable)",
        repeatable=True,
    ),
    Option(
        "require-api-key",
        "",
        "refuse ad-hoc rooms: only meetings made with POST /v1/meetings can be joined",
        boolean=True,
    ),
    Option("default-room-mode", "MODE", "mode of ad-hoc rooms: normal (peer to peer) or group (SFU)"),
    Option("force-relay", "", "tell browsers to send all media through the TURN relay", boolean=True),
    Option(
        "region-node",
        "NAME=URL",
        "the node https://host[:port] of another region, which browsers measure their round trip to and "
        "whose TURN relay they may be given; it must share --turn-secret (repeatable)",
        repeatable=True,
    ),
    Option("max-participants", "N", "participants in all rooms together"),
    Option(
        "sfu-last-n",
        "N",
        "group rooms: videos each participant receives, chosen by who spoke last (plus screen shares)",
    ),
    Option(
        "sfu-nack",
        "",
        "group rooms: repair lost packets with NACK and RTX (RFC 4585, RFC 4588); turn off only to "
        "measure what it buys",
        boolean=True,
    ),
    Option(
        "joins-per-minute",
        "N",
        "room joins per client address (IPv6: per /64) per minute, bursts of twice that; new ad-hoc "
        "rooms at half the rate (raise it for large offices behind one NAT address)",
    ),
    Option(
        "other-udp-port",
        "N",
        "second UDP port: answers STUN Binding requests, and CHANGE-REQUEST (RFC 5780) for the main "
        "port, so that `meet443 check` can test direct UDP; 0 picks a random free port; if the default "
        "is taken, a random one is used",
    ),
    Option(
        "redis",
        "URL",
        "redis:// or rediss:// URL of the cluster's Redis: turns on cluster mode (docs/cluster.md); "
        "a password in the URL shows in the process list: prefer --redis-password-file",
    ),
    Option("redis-password-file", "FILE", "file holding the Redis password (cluster mode)"),
    Option(
        "node-url",
        "URL",
        "this node's own https:// name in a cluster, for its TURN and SFU and for other nodes' relays "
        "(cluster mode: required)",
    ),
    Option(
        "region",
        "NAME",
        "this node's region (in the cluster registry); browsers are given the TURN relay of the region "
        "closest to them",
    ),
    Option(
        "drain-timeout",
        "SECONDS",
        "cluster mode: after SIGTERM or `meet443 drain`, how long rooms already here may go on before "
        "the node exits",
    ),
    Option(
        "cluster-ca-file",
        "PEM",
        "CA certificates that other nodes' TLS certificates are checked against when this node relays "
        "signaling to them (default: the system's)",
    ),
    Option(
        "check-rate",
        "PER_MIN",
        "network-check TURN credentials (POST /v1/network/check-credentials) one address may get "
        "per minute; raise it when many users share one NAT address",
    ),
)

_OPTIONS_BY_DEST = {option.dest: option for option in SERVE_OPTIONS}


def add_serve_arguments(parser: argparse.ArgumentParser, only: Collection[str] | None = None) -> None:
    """Declare the :data:`SERVE_OPTIONS` flags (those named in ``only``, if given) on ``parser``.

    Values stay strings (booleans: ``True``/``False``), ``None`` if absent.
    """
    defaults = _field_defaults()
    for option in SERVE_OPTIONS:
        if only is not None and option.name not in only:
            continue
        if option.boolean:
            parser.add_argument(
                option.flag,
                dest=option.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_help(option, defaults),
            )
            continue
        parser.add_argument(
            option.flag,
            metavar=option.metavar,
            dest=option.dest,
            action="append" if option.repeatable else "store",
            default=None,
            help=_help(option, defaults),
        )


def _help(option: Option, defaults: Mapping[str, object]) -> str:
    default = defaults.get(option.dest)
    if isinstance(default, tuple):
        default = "-".join(map(str, default))
    elif isinstance(default, enum.Enum):
        default = default.value
    elif default is False:
        default = None
    suffix = "" if default is None else f" (default {default})"
    return f"{option.help}{suffix} [{option.env}]"


class _ServeArgumentParser(argparse.ArgumentParser):
    """Raises :class:`ConfigError` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


# --------------------------------------------------------------------------------------------------
# The configuration


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Everything ``meet443 serve`` needs, validated. Build it with :func:`load_serve_config`."""

    listen: str = DEFAULT_LISTEN
    port: int = DEFAULT_PORT
    public_ip: str
    public_ipv6: str | None = None
    relay_ports: tuple[int, int] = DEFAULT_RELAY_PORTS
    turn_secret: str = field(repr=False, metadata={"redact": "value"})
    #: Where the secret came from (a flag, a variable or a file path), safe to log.
    turn_secret_origin: str = ""
    #: Signs resume tokens (docs/signaling.md "Node restarts"); empty when not read.
    resume_key: bytes = field(default=b"", repr=False, metadata={"redact": "value"})
    resume_key_origin: str = ""
    #: SIGTERM to exit, at most.
    shutdown_timeout: float = 10.0
    #: Static long-term users, username → password.
    turn_users: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType({}),
        repr=False,
        hash=False,
        metadata={"redact": "keys"},
    )
    allow_peers: tuple[IPNetwork, ...] = ()
    public_url: str
    realm: str
    cert: Path | None = None
    key: Path | None = None
    data_dir: Path
    #: PostgreSQL URL without its password (:func:`parse_database_url`); None: SQLite in the data dir.
    database: str | None = None
    database_password: str | None = field(default=None, repr=False, metadata={"redact": "value"})
    metrics_listen: tuple[str, int] | None = None
    log_level: str = "info"
    max_allocations_per_user: int = 10
    max_allocations: int = 10_000
    allocation_bandwidth: int = 2_000_000
    unauth_rate: float = 20.0
    max_pending_connections: int = 1024
    #: ``None``: :func:`meet443.proto.shares.default_share` of the cap, at least 32.
    pending_connections_per_address: int | None = None
    #: ``None``: :func:`meet443.proto.shares.default_share` of twice the participants, at least 100.
    signaling_sockets_per_address: int | None = None
    credential_ttl: int = DEFAULT_CREDENTIAL_TTL
    #: Origins (``https://host[:port]``) allowed to frame the web client; empty: none may.
    embed_origins: tuple[str, ...] = ()
    #: Only meetings made through ``POST /v1/meetings`` exist; unknown room names are refused.
    require_api_key: bool = False
    default_room_mode: RoomMode = RoomMode.NORMAL
    #: Browsers get ``iceTransportPolicy: "relay"``: media only through TURN.
    force_relay: bool = False
    #: Participants in all rooms together.
    max_participants: int = DEFAULT_MAX_PARTICIPANTS
    #: Other regions' nodes, ``(region, https origin)``, given statically (``--region-node``).
    region_nodes: tuple[tuple[str, str], ...] = ()
    #: Group rooms: videos forwarded to each participant (last-N by active speaker).
    sfu_last_n: int = 9
    #: Group rooms: NACK/RTX loss repair.
    sfu_nack: bool = True
    joins_per_minute: int = 10
    #: Network-check credentials per address and minute (``meet443 check``, ``/check``).
    check_rate: int = 6
    #: The second UDP port (RFC 5780 "change port"); 0: random. 3478 is STUN's IANA port.
    other_udp_port: int = 3478
    #: ``other_udp_port`` was set explicitly: failing to bind it is fatal.
    other_udp_port_fixed: bool = False
    #: Cluster mode (docs/cluster.md): the Redis URL (its password is never logged).
    redis: str | None = field(default=None, repr=False, metadata={"redact": "url"})
    redis_password_file: Path | None = None
    #: This node's own URL in a cluster; ``None`` on a single node.
    node_url: str | None = None
    #: This node's region (docs/cluster.md "Closest relay"); empty: :data:`DEFAULT_REGION`.
    region: str = ""
    drain_timeout: float = 600.0
    cluster_ca_file: Path | None = None
    config_file: Path | None = None

    @property
    def cluster(self) -> bool:
        """Is this node one of a cluster (``--redis``)?"""
        return self.redis is not None

    @property
    def public_host(self) -> str:
        """The public URL's host, without IPv6 brackets."""
        return _url_host(self.public_url)

    @property
    def unauth_burst(self) -> float:
        """Token bucket depth for :attr:`unauth_rate`, in answers."""
        return 2 * self.unauth_rate

    def turn_uris(self) -> list[str]:
        """TURN URIs (RFC 7065) to hand to browsers, built from the public URL's host and :attr:`port`."""
        return turn_uris_for(self.public_url, self.port)

    def region_map(self) -> RegionMap:
        """The regions browsers measure: this node's, and each ``--region-node``."""
        # In a cluster a node is measured and relays at its own name, not the shared public one.
        own = self.node_url or self.public_url
        parts = urllib.parse.urlsplit(own)
        local = self.region or DEFAULT_REGION
        regions = [Region(local, f"{parts.scheme}://{parts.netloc}", tuple(turn_uris_for(own, self.port)))]
        for name, origin in self.region_nodes:
            port = urllib.parse.urlsplit(origin).port or 443
            regions.append(Region(name, origin, tuple(turn_uris_for(origin, port))))
        try:
            return RegionMap(local, tuple(regions))
        except ValueError as exc:
            raise ConfigError(f"--region-node: {exc}") from None

    def redacted(self) -> dict[str, object]:
        """A JSON-friendly view for logs: the secret is masked and only usernames of static users show."""
        view: dict[str, object] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            redact = f.metadata.get("redact")
            if redact == "value":
                view[f.name] = "<redacted>" if value else None
            elif redact == "url":
                view[f.name] = None if value is None else redact_url(value)
            elif redact == "keys":
                view[f.name] = sorted(value)
            else:
                view[f.name] = _jsonable(value)
        return view


def _jsonable(value: object) -> object:
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path | ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


# --------------------------------------------------------------------------------------------------
# URLs and TURN URIs, shared with ``meet443 turn-credentials``


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def parse_redis_url(text: str) -> str:
    """A ``redis://`` or ``rediss://`` URL; raises ``ValueError`` (without echoing a password)."""
    try:
        parts = urllib.parse.urlsplit(text.strip())
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        raise ValueError("not a valid redis:// or rediss:// URL") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"expected redis://host[:port][/db] or rediss://..., got {redact_url(text)!r}")
    return text.strip()


def _host_for_uri(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _url_host(url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        raise ValueError(f"no host in URL {url!r}")
    return host


def default_public_url(public_ip: str, port: int) -> str:
    """``https://<public-ip>[:port]``: ``:port`` left out for 443, IPv6 in brackets."""
    host = _host_for_uri(public_ip)
    return f"https://{host}" if port == 443 else f"https://{host}:{port}"


def parse_public_url(text: str) -> str:
    """Validate a public URL and return it without a trailing slash; raises ``ValueError``."""
    try:
        parts = urllib.parse.urlsplit(text.strip())
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise ValueError(f"{text!r} must start with https:// (or http:// behind a TLS proxy)")
    if not parts.hostname:
        raise ValueError(f"{text!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r} must not contain user information")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r} must not have a query or fragment")
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/")))


def parse_database_url(text: str) -> tuple[str, str | None]:
    """A ``postgresql://`` (or ``postgres://``) URL as ``(url without the password, password)``;
    raises ``ValueError``, never echoing the text (it may hold a password)."""
    parts = urllib.parse.urlsplit(text.strip())
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("expected postgresql://USER@HOST[:PORT]/DB")
    if parts.fragment:
        raise ValueError("a database URL has no #fragment")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not hosts and "host=" not in parts.query:
        raise ValueError("no host in the database URL (postgresql://USER@HOST[:PORT]/DB)")
    url = urllib.parse.urlunsplit(parts._replace(netloc=f"{user}{at}{hosts}"))
    return url, urllib.parse.unquote(password) if colon else None


# A DNS name (ASCII; internationalized names in their xn-- form) or an IPv4 address.
_DNS_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")


def parse_origin(text: str) -> str:
    """An ``https://host[:port]`` origin, serialized as browsers do (RFC 6454 §6.2); raises ``ValueError``.

    The host is checked character by character: origins end up inside the Content-Security-Policy and
    Permissions-Policy headers, where a quote, semicolon or space would change their meaning.
    """
    try:
        parts = urllib.parse.urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid origin: {exc}") from None
    if parts.scheme != "https":
        raise ValueError(f"expected https://host[:port], got {text!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r} must not contain user information")
    if parts.path not in ("", "/") or parts.query or parts.fragment or text.strip().endswith(("?", "#")):
        raise ValueError(
            f"an origin has no path, query or fragment: expected https://host[:port], got {text!r}"
        )
    host = parts.hostname or ""
    if ":" in host:
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise ValueError(f"{text!r} has an invalid IPv6 address") from None
        if "%" in host:
            raise ValueError(f"{text!r} must not have an IPv6 zone")
    elif not _DNS_NAME.fullmatch(host):
        raise ValueError(f"{text!r} has no valid host name")
    if port == 0:
        raise ValueError(f"{text!r} has port 0")
    return f"https://{host}" if port in (None, 443) else f"https://{host}:{port}"


def turn_uris_for(public_url: str, port: int) -> list[str]:
    """RFC 7065 URIs for UDP, TCP and TLS on ``port`` at the host of ``public_url``.

    All three share one port: meet443 tells TURN from TLS and HTTP by the first bytes on a connection.
    """
    host = _host_for_uri(_url_host(public_url))
    return [
        f"turn:{host}:{port}?transport=udp",
        f"turn:{host}:{port}?transport=tcp",
        f"turns:{host}:{port}?transport=tcp",
    ]


def ip_literal_warning(public_url: str) -> str | None:
    """What to tell the operator when the public URL's host is an IP address, else None.

    TURN URIs take their host from the public URL, and Firefox silently ignores ``turns:`` URIs
    whose host is an IP literal (measured with Firefox ESR 153: no candidate, no error). Behind a
    firewall that passes only TLS on 443, TURN over TLS is the one media path, so Firefox users
    there cannot connect.
    """
    host = _url_host(public_url)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return (
        f"the public URL {public_url} is an IP address: Firefox does not use TURN over TLS "
        f"(turns:{_host_for_uri(host)}) at an IP address, so Firefox users behind firewalls that pass only "
        "TLS on 443 cannot connect. Give the server a host name: --public-url https://<name> "
        "(and a certificate for it)"
    )


# --------------------------------------------------------------------------------------------------
# Public address discovery (never sends a packet)


def _interface_ipv4_addresses() -> Iterator[ipaddress.IPv4Address]:
    """IPv4 addresses of the host's interfaces, in interface index order (Linux ``SIOCGIFADDR``)."""
    try:
        import fcntl  # noqa: PLC0415 -- POSIX only
    except ImportError:  # pragma: no cover - Windows
        return
    siocgifaddr = 0x8915
    try:
        interfaces = socket.if_nameindex()
    except OSError:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _index, name in interfaces:
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), siocgifaddr, request)
            except OSError:  # no IPv4 address on this interface, or not Linux
                continue
            yield ipaddress.IPv4Address(answer[20:24])


def _routed_ipv4_address() -> ipaddress.IPv4Address | None:
    """The source address the kernel would use towards the Internet; ``connect`` on UDP sends nothing."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737), discard port
            return ipaddress.IPv4Address(probe.getsockname()[0])
    except OSError:
        return None


def discover_public_ip() -> str:
    """The host's first non-loopback, non-link-local IPv4 address; ``127.0.0.1`` if there is none."""
    candidates = [*_interface_ipv4_addresses(), _routed_ipv4_address()]
    for address in candidates:
        if address is not None and not (
            address.is_loopback or address.is_link_local or address.is_unspecified
        ):
            return str(address)
    return "127.0.0.1"


# --------------------------------------------------------------------------------------------------
# Collecting raw values from the three sources


@dataclass(frozen=True)
class _Setting:
    """Raw string value(s) of one option and where they came from, for error messages."""

    source: str
    values: tuple[str, ...]
    base_dir: Path | None = None


_Layer = dict[str, _Setting]


def _flag_layer(namespace: argparse.Namespace) -> _Layer:
    layer: _Layer = {}
    for option in SERVE_OPTIONS:
        value = getattr(namespace, option.dest, None)
        if value is None:
            continue
        if option.boolean:
            value = "true" if value else "false"
        values = tuple(value) if option.repeatable else (value,)
        layer[option.dest] = _Setting(option.flag, values)
    return layer


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for option in SERVE_OPTIONS:
        raw = environ.get(option.env, "")
        # An empty variable counts as unset, as docker-compose's "VAR=" lines expect.
        if not raw.strip():
            continue
        if option.repeatable:
            values = tuple(item.strip() for item in raw.split(",") if item.strip())
        else:
            values = (raw,)
        layer[option.dest] = _Setting(option.env, values)
    return layer


def _toml_scalar(value: object, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where}: expected a string or a number, got {type(value).__name__}")
    return str(value)


def _toml_layer(path: Path) -> _Layer:
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    layer: _Layer = {}
    for key, value in document.items():
        dest = key.replace("-", "_")
        option = _OPTIONS_BY_DEST.get(dest)
        if option is None or not option.in_toml:
            known = ", ".join(o.name for o in SERVE_OPTIONS if o.in_toml)
            raise ConfigError(f"{path}: unknown key {key!r} (known keys: {known})")
        where = f"{path}: {key}"
        if dest in layer:
            raise ConfigError(f"{where}: given twice (once with dashes, once with underscores)")
        if option.repeatable:
            items = value if isinstance(value, list) else [value]
            values = tuple(_toml_scalar(item, where) for item in items)
        elif option.boolean and isinstance(value, bool):
            values = ("true" if value else "false",)
        else:
            values = (_toml_scalar(value, where),)
        layer[dest] = _Setting(where, values, base_dir=path.parent)
    return layer


def _merge(layers: Sequence[_Layer]) -> _Layer:
    """Pick each option from the first layer that sets it; exclusive groups move as one."""
    merged: _Layer = {}
    decided_groups: set[str] = set()
    for layer in layers:
        groups_here: dict[str, list[_Setting]] = {}
        for dest, setting in layer.items():
            group = _OPTIONS_BY_DEST[dest].exclusive_group
            if group is not None:
                if group in decided_groups:
                    continue
                groups_here.setdefault(group, []).append(setting)
            merged.setdefault(dest, setting)
        for group, settings in groups_here.items():
            if len(settings) > 1:
                names = " and ".join(s.source for s in settings)
                raise ConfigError(f"{names} are mutually exclusive")
            decided_groups.add(group)
    return merged


# --------------------------------------------------------------------------------------------------
# Typed conversion


class _Values:
    """Typed access to merged settings.

    A parser's ``ValueError`` becomes a ``ConfigError`` that names the flag, variable or file key."""

    def __init__(self, settings: _Layer, environ: Mapping[str, str]) -> None:
        self._settings = settings
        self._environ = environ

    def source(self, dest: str) -> str | None:
        setting = self._settings.get(dest)
        return setting.source if setting else None

    def one(self, dest: str, parse: Callable[[str], _T]) -> _T | None:
        setting = self._settings.get(dest)
        if setting is None:
            return None
        return self._parse(setting, setting.values[0], parse)

    def many(self, dest: str, parse: Callable[[str], _T]) -> list[_T]:
        setting = self._settings.get(dest)
        if setting is None:
            return []
        return [self._parse(setting, value, parse) for value in setting.values]

    def path(self, dest: str) -> Path | None:
        setting = self._settings.get(dest)
        if setting is None:
            return None
        path = self._parse(setting, setting.values[0], self.expand_user)
        if setting.base_dir is not None and not path.is_absolute():
            path = setting.base_dir / path
        return path

    def expand_user(self, text: str) -> Path:
        """``~`` and ``~/...`` against ``$HOME`` of the given environment, not the process's."""
        if not text.strip():
            raise ValueError("expected a path, got an empty string")
        if text == "~" or text.startswith("~/"):
            home = self._environ.get("HOME") or str(Path.home())
            return Path(home) / text[2:]
        return Path(text)

    @staticmethod
    def _parse(setting: _Setting, text: str, parse: Callable[[str], _T]) -> _T:
        try:
            return parse(text)
        except ValueError as exc:
            raise ConfigError(f"{setting.source}: {exc}") from None


def _int_parser(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise ValueError(f"must be at least {minimum}{upper}, got {value}")
        return value

    return parse


def _parse_positive_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a positive number, got {text!r}")
    return value


_parse_port = _int_parser(1, 65535)


def _parse_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"expected an IP address, got {text!r}") from None


def _parse_ipv6(text: str) -> str:
    address = _parse_ip(text)
    if ":" not in address:
        raise ValueError(f"expected an IPv6 address, got {text!r}")
    return address


def _parse_relay_ports(text: str) -> tuple[int, int]:
    low_text, dash, high_text = text.strip().partition("-")
    if not dash:
        raise ValueError(f"expected LO-HI, for example 49152-65535, got {text!r}")
    low, high = _parse_port(low_text), _parse_port(high_text)
    if low > high:
        raise ValueError(f"the low port {low} is above the high port {high}")
    return low, high


def _parse_turn_user(text: str) -> tuple[str, str]:
    user, colon, password = text.strip().partition(":")
    if not colon or not user or not password:
        # Never echo the text: it holds a password.
        raise ValueError("expected USER:PASS with a non-empty user and password")
    if len(user.encode("utf-8")) > _MAX_USERNAME_BYTES:
        raise ValueError(f"user name longer than {_MAX_USERNAME_BYTES} bytes (RFC 8489 §14.3)")
    return user, password


def _parse_cidr(text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"expected a CIDR such as 10.0.0.0/8 or fd00::/8, got {text!r} ({exc})") from None


def _parse_host_port(text: str) -> tuple[str, int]:
    host, colon, port_text = text.strip().rpartition(":")
    if not colon or not host:
        raise ValueError(f"expected HOST:PORT, for example 127.0.0.1:9100, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"put an IPv6 address in brackets, for example [::1]:9100, not {text!r}")
    return host, _parse_port(port_text)


def _parse_log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return level


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"expected 1, true, yes, on or 0, false, no, off, got {text!r}")


def _parse_room_mode(text: str) -> RoomMode:
    try:
        return RoomMode(text.strip().lower())
    except ValueError:
        modes = " or ".join(mode.value for mode in RoomMode)
        raise ValueError(f"expected {modes}, got {text!r}") from None


def _parse_region(text: str) -> str:
    name = text.strip()
    if not re.fullmatch(REGION_NAME, name):
        raise ValueError(f"a region name is 1 to 32 letters, digits, '.', '_' or '-', got {text!r}")
    return name


def _parse_region_node(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep:
        raise ValueError(f"expected NAME=https://host[:port], got {text!r}")
    return _parse_region(name), parse_origin(url)


def _parse_nonempty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


# --------------------------------------------------------------------------------------------------
# Files the options name


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read {what} {path}: {reason}") from None


def _read_users_file(path: Path) -> list[tuple[str, str, str]]:
    """``(user, password, where)`` for each ``USER:PASS`` line."""
    users = []
    for number, line in enumerate(_read_text(path, "TURN users file").splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            user, password = _parse_turn_user(entry)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        users.append((user, password, where))
    return users


def _publish_new_secret(path: Path) -> None:
    """Write a fresh secret next to ``path``, then hard-link it into place.

    ``link`` fails if ``path`` exists, so of two processes starting at once exactly one secret wins and no
    reader ever sees a half-written file.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
        os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    logger.info("generated a secret in %s", path)


def _load_or_create_secret(data_dir: Path, name: str = SECRET_FILE_NAME) -> tuple[str, Path]:
    """Read ``<data-dir>/<name>`` (the TURN secret, the resume key), creating it (mode 0600) on first use."""
    path = data_dir / name
    if not path.exists():
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            _publish_new_secret(path)
        except FileExistsError:
            pass  # another process starting at the same moment won; use its secret
        except OSError as exc:
            raise ConfigError(f"cannot create {path}: {exc.strerror or exc}") from None
    if sys.platform != "win32" and path.stat().st_mode & 0o077:
        logger.warning("%s is readable by other users; run: chmod 600 %s", path, path)
    secret = _read_text(path, "secret file").strip()
    if not secret:
        raise ConfigError(f"{path} is empty; delete it to generate a new secret")
    return secret, path


# --------------------------------------------------------------------------------------------------
# Building the configuration


def _serve_parser() -> argparse.ArgumentParser:
    parser = _ServeArgumentParser(prog="meet443 serve", allow_abbrev=False)
    add_serve_arguments(parser)
    return parser


def load_serve_config(argv: Sequence[str], environ: Mapping[str, str]) -> ServeConfig:
    """Build a :class:`ServeConfig` from ``serve``'s arguments, the environment and the TOML file.

    Reads the files the options name and ``<data-dir>/turn-secret`` (created on first use); raises
    :class:`ConfigError` for anything invalid.
    """
    return load_config_from_arguments(_serve_parser().parse_args(list(argv)), environ)


def load_config_from_arguments(
    namespace: argparse.Namespace, environ: Mapping[str, str], *, read_secrets: bool = True
) -> ServeConfig:
    """Like :func:`load_serve_config`, for a parser that declared the options with
    :func:`add_serve_arguments` (``meet443 firewall-rules``).

    With ``read_secrets=False`` the TURN secret and static users are neither read nor generated
    (``turn_secret`` is empty): for commands that only need addresses and ports.
    """
    flags = _flag_layer(namespace)
    env = _env_layer(environ)
    config_values = _Values(_merge([flags, env]), environ)
    config_file = config_values.path("config")
    layers = [flags, env] if config_file is None else [flags, env, _toml_layer(config_file)]
    return _build(_Values(_merge(layers), environ), config_file, read_secrets=read_secrets)


@dataclass(frozen=True)
class StoreSettings:
    """Where meetings and API keys live, as ``serve`` resolves it (``meet443 api-key``)."""

    data_dir: Path
    database: str | None = None
    database_password: str | None = field(default=None, repr=False)


def load_store_settings(namespace: argparse.Namespace, environ: Mapping[str, str]) -> StoreSettings:
    """``--data-dir``, ``--database`` and its password as ``serve`` resolves them (flag > environment >
    ``--config`` file > default).

    For commands that declare only those options and ``--config`` with
    ``add_serve_arguments(parser, only=...)``; reads no other file.
    """
    flags = _flag_layer(namespace)
    env = _env_layer(environ)
    config_file = _Values(_merge([flags, env]), environ).path("config")
    layers = [flags, env] if config_file is None else [flags, env, _toml_layer(config_file)]
    values = _Values(_merge(layers), environ)
    return StoreSettings(values.path("data_dir") or values.expand_user(DEFAULT_DATA_DIR), *_database(values))


def _database(values: _Values, *, read_secrets: bool = True) -> tuple[str | None, str | None]:
    """``--database`` without its password, and the password from the URL or the password file
    (neither with ``read_secrets=False``)."""
    parsed = values.one("database", parse_database_url)
    password_file = values.path("database_password_file")
    if parsed is None:
        if password_file is not None:
            raise ConfigError(f"{values.source('database_password_file')} needs --database")
        return None, None
    url, password = parsed
    if not read_secrets:
        return url, None
    if password_file is not None:
        if password is not None:
            raise ConfigError("the database password is both in --database and in --database-password-file")
        password = _read_text(password_file, "database password file").strip()
        if not password:
            raise ConfigError(f"{values.source('database_password_file')}: {password_file} is empty")
    return url, password


@dataclass(frozen=True)
class ClusterClient:
    """What ``meet443 drain`` needs to reach a cluster: its Redis and a node's URL."""

    redis: str = field(repr=False, metadata={"redact": "url"})
    redis_password_file: Path | None
    node_url: str


def load_cluster_client(namespace: argparse.Namespace, environ: Mapping[str, str]) -> ClusterClient:
    """``--redis``, ``--redis-password-file`` and ``--node-url`` as ``serve`` resolves them (flag >
    environment > ``--config`` file), for commands declared with
    ``add_serve_arguments(parser, only=("config", "redis", "redis-password-file", "node-url"))``."""
    flags = _flag_layer(namespace)
    env = _env_layer(environ)
    config_file = _Values(_merge([flags, env]), environ).path("config")
    layers = [flags, env] if config_file is None else [flags, env, _toml_layer(config_file)]
    values = _Values(_merge(layers), environ)
    redis = values.one("redis", parse_redis_url)
    node_url = values.one("node_url", parse_public_url)
    if redis is None or node_url is None:
        raise ConfigError("needs --redis and --node-url (flags, MEET443_* variables or --config)")
    return ClusterClient(redis, values.path("redis_password_file"), node_url)


def _field_defaults() -> dict[str, object]:
    return {
        f.name: f.default
        for f in dataclasses.fields(ServeConfig)
        if f.default is not dataclasses.MISSING and f.default is not None
    }


def _build(values: _Values, config_file: Path | None, *, read_secrets: bool = True) -> ServeConfig:
    defaults = _field_defaults()

    def pick(dest: str, parse: Callable[[str], _T]) -> _T:
        value = values.one(dest, parse)
        # The dataclass holds the one copy of each default; its type matches the parser's by construction.
        return value if value is not None else defaults[dest]  # type: ignore[return-value]

    listen = pick("listen", _parse_ip)
    port = pick("port", _parse_port)
    public_ip = values.one("public_ip", _parse_ip)
    if public_ip is None:
        public_ip = discover_public_ip() if ipaddress.ip_address(listen).is_unspecified else listen
    public_url = values.one("public_url", parse_public_url) or default_public_url(public_ip, port)
    realm = values.one("realm", _parse_nonempty) or _url_host(public_url)
    data_dir = values.path("data_dir") or values.expand_user(DEFAULT_DATA_DIR)

    secret = values.one("turn_secret", _parse_nonempty)
    secret_file = values.path("turn_secret_file")
    if not read_secrets:
        secret, secret_origin = "", "not read"
    elif secret is not None:
        secret_origin = values.source("turn_secret") or ""
    elif secret_file is not None:
        secret = _read_text(secret_file, "TURN secret file").strip()
        if not secret:
            raise ConfigError(f"{values.source('turn_secret_file')}: {secret_file} is empty")
        secret_origin = str(secret_file)
    else:
        if values.one("redis", parse_redis_url) is not None:
            # Every node checks every node's TURN credentials and relay headers: one secret.
            raise ConfigError(
                "--redis needs the cluster's shared TURN secret (--turn-secret-file); a secret generated "
                "per node would make other nodes' TURN credentials fail here"
            )
        secret, generated = _load_or_create_secret(data_dir)
        secret_origin = str(generated)

    redis = values.one("redis", parse_redis_url)
    node_url = values.one("node_url", parse_public_url)
    _check_cluster(values, redis, node_url, serving=read_secrets)

    resume_key_file = values.path("resume_key_file")
    if not read_secrets:
        resume_key, resume_origin = "", "not read"
    elif resume_key_file is not None:
        resume_key = _read_text(resume_key_file, "resume key file").strip()
        if len(resume_key) < MIN_RESUME_KEY_CHARS:
            raise ConfigError(
                f"{values.source('resume_key_file')}: {resume_key_file} holds less than "
                f"{MIN_RESUME_KEY_CHARS} characters"
            )
        resume_origin = str(resume_key_file)
    else:
        if redis is not None:
            # A resume token made on one node must open the participant's seat on any other.
            raise ConfigError(
                "--redis needs the cluster's shared resume-token key (--resume-key-file); a key "
                "generated per node would make resume tokens fail on every other node"
            )
        resume_key, generated = _load_or_create_secret(data_dir, RESUME_KEY_FILE_NAME)
        resume_origin = str(generated)

    database, database_password = _database(values, read_secrets=read_secrets)
    cert, key = values.path("cert"), values.path("key")
    if (cert is None) != (key is None):
        raise ConfigError("--cert and --key go together: give both or neither")
    for dest, path in (("cert", cert), ("key", key)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{values.source(dest)}: {path} is not a readable file")

    config = ServeConfig(
        listen=listen,
        port=port,
        public_ip=public_ip,
        public_ipv6=values.one("public_ipv6", _parse_ipv6),
        relay_ports=pick("relay_ports", _parse_relay_ports),
        turn_secret=secret,
        turn_secret_origin=secret_origin,
        resume_key=resume_key.encode(),
        resume_key_origin=resume_origin,
        shutdown_timeout=pick("shutdown_timeout", _parse_positive_float),
        turn_users=types.MappingProxyType(_static_users(values) if read_secrets else {}),
        allow_peers=tuple(values.many("allow_peer", _parse_cidr)),
        public_url=public_url,
        realm=realm,
        cert=cert,
        key=key,
        data_dir=data_dir,
        database=database,
        database_password=database_password,
        metrics_listen=values.one("metrics_listen", _parse_host_port),
        log_level=pick("log_level", _parse_log_level),
        max_allocations_per_user=pick("max_allocations_per_user", _int_parser(1)),
        max_allocations=pick("max_allocations", _int_parser(1)),
        allocation_bandwidth=pick("allocation_bandwidth", _int_parser(1)),
        unauth_rate=pick("unauth_rate", _parse_positive_float),
        max_pending_connections=pick("max_pending_connections", _int_parser(1)),
        pending_connections_per_address=values.one("pending_connections_per_address", _int_parser(1)),
        signaling_sockets_per_address=values.one("signaling_sockets_per_address", _int_parser(1)),
        credential_ttl=pick("credential_ttl", _int_parser(1)),
        # dict.fromkeys: an origin given twice is listed once in the headers.
        embed_origins=tuple(dict.fromkeys(values.many("embed_origin", parse_origin))),
        require_api_key=pick("require_api_key", _parse_bool),
        default_room_mode=pick("default_room_mode", _parse_room_mode),
        force_relay=pick("force_relay", _parse_bool),
        region_nodes=tuple(values.many("region_node", _parse_region_node)),
        max_participants=pick("max_participants", _int_parser(1)),
        sfu_last_n=pick("sfu_last_n", _int_parser(1, 49)),
        sfu_nack=pick("sfu_nack", _parse_bool),
        joins_per_minute=pick("joins_per_minute", _int_parser(1)),
        check_rate=pick("check_rate", _int_parser(1, 100_000)),
        other_udp_port=pick("other_udp_port", _int_parser(0, 65535)),
        other_udp_port_fixed=values.source("other_udp_port") is not None,
        config_file=config_file,
        redis=redis,
        redis_password_file=values.path("redis_password_file"),
        node_url=node_url,
        region=values.one("region", _parse_region) or "",
        drain_timeout=pick("drain_timeout", _parse_positive_float),
        cluster_ca_file=values.path("cluster_ca_file"),
    )
    config.region_map()  # a region named twice fails at start, not at the first join
    return config


def _check_cluster(values: _Values, redis: str | None, node_url: str | None, *, serving: bool) -> None:
    """docs/cluster.md "How to run a node in a cluster": what ``--redis`` requires of a node
    (``serving``; ``firewall-rules`` only reads the registry), and what only it allows."""
    files = ("redis_password_file", "cluster_ca_file")
    if redis is None:
        for dest in (*files, "node_url"):
            if values.source(dest) is not None:
                raise ConfigError(f"{values.source(dest)}: only for cluster mode, which --redis turns on")
        return
    if node_url is None and serving:
        raise ConfigError("--redis needs --node-url: this node's own https:// name in the cluster")
    if values.source("database") is None and serving:
        # Meetings, API keys and chat epochs must be the same whichever node a request reaches.
        raise ConfigError(
            "--redis needs --database postgresql://...: every node must see the same meetings and API "
            "keys (a SQLite file in each node's data dir would not)"
        )
    for dest in files:
        path = values.path(dest)
        if path is not None and not path.is_file():
            raise ConfigError(f"{values.source(dest)}: {path} is not a readable file")


def _static_users(values: _Values) -> dict[str, str]:
    """``--turn-user`` entries and ``--turn-users-file`` lines together; a name given twice is an error."""
    entries = [
        (user, password, values.source("turn_user") or "")
        for user, password in values.many("turn_user", _parse_turn_user)
    ]
    users_file = values.path("turn_users_file")
    if users_file is not None:
        entries += _read_users_file(users_file)
    users: dict[str, str] = {}
    seen_at: dict[str, str] = {}
    for user, password, where in entries:
        if user in users:
            raise ConfigError(f"TURN user {user!r} is defined twice ({seen_at[user]} and {where})")
        users[user] = password
        seen_at[user] = where
    return users
