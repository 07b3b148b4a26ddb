"""Which peer addresses a TURN allocation may relay to (RFC 8656 §21.1.4 and §12.2).

A TURN server sends datagrams to whatever XOR-PEER-ADDRESS an authenticated client names, from
inside the server's own network. Without a policy that is a server-side request forgery tool:
a client could reach the operator's private networks, the host's loopback services or a cloud
metadata endpoint (169.254.169.254). RFC 8656 §21.1.4 lets the administrator "restrict the range
of IP addresses and ports to which it will relay data" and §12.2 lets the server "impose
restrictions on the IP address and port values" of XOR-PEER-ADDRESS; :class:`PeerPolicy` refuses
those destinations unless the operator lifts a range with ``--allow-peer``. (RFC 5766 numbered
its security considerations §17; RFC 8656 moved them to §21.)

IPv6 forms that carry an IPv4 address are judged by that IPv4 address, because a dual-stack
socket, a NAT64 translator, a 6to4 relay or a Teredo relay may deliver them there:

=========================  ===================================================================
``::ffff:0:0/96``          IPv4-mapped (RFC 4291 §2.5.5.2), IPv4 in bits 96-127
``::/96``                  IPv4-compatible, deprecated (RFC 4291 §2.5.5.1), bits 96-127
``::ffff:0:0:0/96``        IPv4-translated (RFC 2765 §2.1), bits 96-127
``64:ff9b::/96``           NAT64 well-known prefix (RFC 6052 §2.1), bits 96-127
``64:ff9b:1::/48``         NAT64 local-use prefix (RFC 8215), see below
``2002::/16``              6to4 (RFC 3056 §2), IPv4 in bits 16-47
``2001::/32``              Teredo (RFC 4380 §4), server IPv4 in bits 32-63, client IPv4 is
                           bits 96-127 XOR ``0xffffffff``; both are checked
=========================  ===================================================================

If any embedded IPv4 address is denied, the IPv6 address is denied; a public embedded address
is allowed. An ``--allow-peer`` range that contains the embedded address lifts the denial,
since it names the same destination. (RFC 8656 §21.4, the tunnel amplification attack,
RECOMMENDS not forwarding to addresses known to be tunnelled; refusing 6to4 and Teredo outright
would take two more entries in :data:`DEFAULT_DENIED_NETWORKS`, ``2002::/16`` and ``2001::/32``.)

The local-use NAT64 prefix ``64:ff9b:1::/48`` (RFC 8215) may be deployed as the /48 itself or
as any more specific RFC 6052 prefix inside it, and the server cannot see which, so the bits
holding the IPv4 address are not known. We decide:

* The address must be well formed for the /48 layout of RFC 6052 §2.2 (IPv4 in bits 48-63 and
  72-87, around the u-octet): the u-octet (bits 64-71) and the suffix (bits 88-127) are zero.
  Anything else does not parse and is denied. That denies every address of a /96 local
  deployment (the IPv4 address sits in the suffix); an operator who runs one lifts it with
  ``--allow-peer 64:ff9b:1::/48`` or a narrower range.
* A well-formed address is also read with the /56 and /64 layouts, which fit inside the /48
  and are well formed for the same bits; if any reading is denied, the address is denied. This
  closes ``a.b.0.0``-style targets reached through a /56 or /64 deployment. The /96 reading of
  such an address is always 0.0.0.0, which is not a destination (RFC 1122 §3.2.1.3), so it is
  not considered.

The server's own addresses are special: two clients of the same server relay to each other
through it and the SFU on the main UDP port is reached this way, so permissions to them are
granted even when they are private; but datagrams to them may only go to the relay port range
and the main port, never to another service listening on the host.

Other nodes of a cluster (docs/cluster.md "TURN across nodes") are like the server's own
addresses for the ports they serve media on: a relay here may reach another live node's SFU ports
and relay range (a participant whose TURN is here and whose room is homed there), and nothing else
of that node, even when its address is private. :meth:`PeerPolicy.set_cluster_nodes` replaces that
list whenever the registry changes; an ``--allow-peer`` range still wins.

Decisions are cached per IP string: :meth:`PeerPolicy.relay_allowed` runs for every relayed
datagram and must cost a dict lookup, not an ``ipaddress`` parse.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

from meet443.exceptions import ConfigError

__all__ = ["DEFAULT_DENIED_NETWORKS", "PeerPolicy"]

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Destinations refused unless inside an ``--allow-peer`` range (RFC 8656 §21.1.4). Keep to
#: special-purpose ranges that reach this host or private networks; the documentation
#: TEST-NETs are public-looking and deliberately absent.
DEFAULT_DENIED_NETWORKS: Final[tuple[str, ...]] = (
    "0.0.0.0/8",  # "this network"; Linux delivers 0.0.0.0 to the local host
    "127.0.0.0/8",  # loopback
    "10.0.0.0/8",  # RFC 1918
    "172.16.0.0/12",  # RFC 1918
    "192.168.0.0/16",  # RFC 1918
    "100.64.0.0/10",  # RFC 6598 shared address space (carrier-grade NAT)
    "169.254.0.0/16",  # link-local, home of cloud metadata services
    "192.0.0.0/24",  # IETF protocol assignments (RFC 6890)
    "198.18.0.0/15",  # benchmarking (RFC 2544), often used for internal lab networks
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, includes the limited broadcast 255.255.255.255
    "::/128",  # unspecified
    "::1/128",  # loopback
    "fc00::/7",  # unique local (RFC 4193)
    "fec0::/10",  # site-local (RFC 3879 deprecated it, but old hosts and routers still honour it)
    "fe80::/10",  # link-local
    "ff00::/8",  # multicast
)

#: Upper bound on cached decisions; peers of all allocations share it.
_CACHE_SIZE: Final = 4096

# Prefixes of the IPv6 forms that embed IPv4 addresses, as the value of the top bits.
_MAPPED_TOP96: Final = 0xFFFF  # ::ffff:0:0/96
_TRANSLATED_TOP96: Final = 0xFFFF_0000  # ::ffff:0:0:0/96
_COMPATIBLE_TOP96: Final = 0  # ::/96
_NAT64_WKP_TOP96: Final = 0x0064_FF9B_0000_0000_0000_0000  # 64:ff9b::/96
_NAT64_LOCAL_TOP48: Final = 0x0064_FF9B_0001  # 64:ff9b:1::/48
_SIX_TO_FOUR_TOP16: Final = 0x2002  # 2002::/16
_TEREDO_TOP32: Final = 0x2001_0000  # 2001::/32

_U32: Final = 0xFFFF_FFFF


class _Verdict(enum.Enum):
    DENIED = "denied"
    ALLOWED = "allowed"
    #: One of the server's own addresses: permitted, but only some ports (see module docstring).
    SERVER = "server"
    #: Another node of the cluster: only its SFU ports and relay range.
    CLUSTER = "cluster"


def _parse_networks(
    cidrs: Iterable[str], what: str
) -> tuple[tuple[ipaddress.IPv4Network, ...], tuple[ipaddress.IPv6Network, ...]]:
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for cidr in cidrs:
        try:
            # strict: "10.1.2.3/8" is more likely a typo than a wish to open all of 10/8.
            network = ipaddress.ip_network(cidr, strict=True)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{what}: {cidr!r} is not a CIDR network ({exc})") from None
        if isinstance(network, ipaddress.IPv4Network):
            v4.append(network)
        else:
            v6.append(network)
    return tuple(v4), tuple(v6)


_DENIED_V4, _DENIED_V6 = _parse_networks(DEFAULT_DENIED_NETWORKS, "default deny list")


def _embedded_ipv4(ip: int) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses an IPv6 address (as an integer) carries; ``None`` if it cannot be parsed.

    See the module docstring for the forms and their RFCs.
    """
    top96 = ip >> 32
    if top96 in (_MAPPED_TOP96, _TRANSLATED_TOP96, _COMPATIBLE_TOP96, _NAT64_WKP_TOP96):
        return (ipaddress.IPv4Address(ip & _U32),)
    if ip >> 80 == _NAT64_LOCAL_TOP48:
        return _nat64_local_readings(ip)
    if ip >> 112 == _SIX_TO_FOUR_TOP16:
        return (ipaddress.IPv4Address((ip >> 80) & _U32),)
    if ip >> 96 == _TEREDO_TOP32:
        # RFC 4380 §4: the client's mapped address is stored inverted so NATs do not rewrite it.
        return (ipaddress.IPv4Address((ip >> 64) & _U32), ipaddress.IPv4Address(~ip & _U32))
    return ()


def _nat64_local_readings(ip: int) -> tuple[ipaddress.IPv4Address, ...] | None:
    """RFC 6052 §2.2 readings of an address in the local-use prefix 64:ff9b:1::/48 (RFC 8215).

    Returns ``None`` when the address is not well formed for the /48 layout; see the module
    docstring for why only the /48, /56 and /64 readings are taken.
    """
    u_octet = (ip >> 56) & 0xFF  # bits 64-71
    suffix_48 = ip & ((1 << 40) - 1)  # bits 88-127
    if u_octet or suffix_48:
        return None
    as_48 = (((ip >> 64) & 0xFFFF) << 16) | ((ip >> 40) & 0xFFFF)  # bits 48-63 and 72-87
    as_56 = (((ip >> 64) & 0xFF) << 24) | ((ip >> 32) & 0xFF_FFFF)  # bits 56-63 and 72-95
    as_64 = (ip >> 24) & _U32  # bits 72-103
    return tuple(ipaddress.IPv4Address(v) for v in (as_48, as_56, as_64))


class PeerPolicy:
    """RFC 8656 §21.1.4: the peer addresses an allocation may reach.

    ``allowed_networks`` are the operator's ``--allow-peer`` CIDRs: a destination inside one is
    allowed even if the default deny list (:data:`DEFAULT_DENIED_NETWORKS`) covers it.
    ``server_addresses`` are the addresses this server relays from and listens on;
    ``main_port`` (0 for none), the ports given to :meth:`allow_server_port` (the second UDP port,
    where browsers reach the SFU) and ``relay_ports`` (inclusive) are the only ports of them that
    relayed datagrams may reach. Raises :class:`~meet443.exceptions.ConfigError` for an invalid
    CIDR, server address or port.

    Both queries take the IP as the string the codec produced and never raise: an invalid
    string is simply refused.
    """

    __slots__ = (
        "_allowed_v4",
        "_allowed_v6",
        "_cache",
        "_cluster",
        "_main_port",
        "_relay_high",
        "_relay_low",
        "_server_addresses",
        "_server_ports",
    )

    def __init__(
        self,
        allowed_networks: Sequence[str] = (),
        server_addresses: Iterable[str] = (),
        main_port: int = 0,
        relay_ports: tuple[int, int] = (49152, 65535),
    ) -> None:
        if isinstance(allowed_networks, str):
            # A lone string would be iterated character by character.
            raise ConfigError("allowed_networks must be a sequence of CIDR strings, not one string")
        self._allowed_v4, self._allowed_v6 = _parse_networks(allowed_networks, "--allow-peer")
        self._server_addresses = frozenset(_parse_server_address(a) for a in server_addresses)
        if not 0 <= main_port <= 65535:
            raise ConfigError(f"main port {main_port} is out of range")
        low, high = relay_ports
        if not 1 <= low <= high <= 65535:
            raise ConfigError(f"relay port range {low}-{high} is invalid")
        # Port 0 never names a real destination, so "no main port" must not match it.
        self._main_port = main_port if main_port else -1
        self._server_ports: frozenset[int] = frozenset()
        self._relay_low = low
        self._relay_high = high
        self._cache: dict[str, _Verdict] = {}
        #: Other nodes' addresses (as the codec writes them) → their SFU ports and relay ranges.
        self._cluster: dict[str, tuple[frozenset[int], tuple[tuple[int, int], ...]]] = {}

    def set_cluster_nodes(
        self, nodes: Iterable[tuple[Iterable[str], Iterable[int], tuple[int, int]]]
    ) -> None:
        """The other live nodes of the cluster as ``(addresses, sfu_ports, relay_ports)``; replaces
        the previous list. Invalid addresses are skipped (the registry is not trusted to be tidy)."""
        cluster: dict[str, tuple[frozenset[int], tuple[tuple[int, int], ...]]] = {}
        for addresses, ports, relay in nodes:
            for text in addresses:
                try:
                    ip = str(_parse_server_address(text))
                except ConfigError:
                    continue
                known_ports, ranges = cluster.get(ip, (frozenset(), ()))
                cluster[ip] = (known_ports | frozenset(ports), (*ranges, relay))
        if cluster != self._cluster:
            self._cluster = cluster
            self._cache.clear()

    def allow_server_port(self, port: int) -> None:
        """Let relayed datagrams reach this port of the server's own addresses too (known only
        once the port is bound)."""
        if not 1 <= port <= 65535:
            raise ConfigError(f"server port {port} is out of range")
        self._server_ports |= {port}

    def permission_allowed(self, ip: str) -> bool:
        """RFC 8656 §9: may a permission for ``ip`` be installed (CreatePermission §10, ChannelBind §12.2)?

        Permissions are per IP address, not per port, so the server's own addresses pass here;
        their ports are checked per datagram by :meth:`relay_allowed`.
        """
        verdict = self._cache.get(ip)
        if verdict is None:
            verdict = self._decide_and_cache(ip)
        return verdict is not _Verdict.DENIED

    def relay_allowed(self, ip: str, port: int) -> bool:
        """RFC 8656 §11.2 and §12.6: may a Send indication or ChannelData go to ``(ip, port)``?

        Called for every relayed datagram; a cached IP costs one dict lookup.
        """
        verdict = self._cache.get(ip)
        if verdict is None:
            verdict = self._decide_and_cache(ip)
        if verdict is _Verdict.ALLOWED:
            return True
        if verdict is _Verdict.SERVER:
            return (
                self._relay_low <= port <= self._relay_high
                or port == self._main_port
                or port in self._server_ports
            )
        if verdict is _Verdict.CLUSTER:
            node = self._cluster.get(ip)
            return node is not None and (port in node[0] or any(lo <= port <= hi for lo, hi in node[1]))
        return False

    def _decide_and_cache(self, ip: str) -> _Verdict:
        verdict = self._decide(ip)
        cache = self._cache
        if len(cache) >= _CACHE_SIZE:
            # Drop the oldest insertion: cheap, and a re-decision costs only one parse.
            del cache[next(iter(cache))]
        cache[ip] = verdict
        return verdict

    def _decide(self, ip: str) -> _Verdict:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return _Verdict.DENIED
        if isinstance(address, ipaddress.IPv4Address):
            # The operator's explicit --allow-peer wins over the server-address port rule too:
            # a lab that allows 127.0.0.0/8 means every port of it.
            if any(address in network for network in self._allowed_v4):
                return _Verdict.ALLOWED
            if address in self._server_addresses:
                return _Verdict.SERVER
            if self._ipv4_denied(address):
                return _Verdict.CLUSTER if ip in self._cluster else _Verdict.DENIED
            return _Verdict.ALLOWED
        if address.scope_id is not None:
            # A zone only has meaning for link-local and multicast scopes, both denied, and the
            # codecs never produce one; refuse rather than guess which interface it names.
            return _Verdict.DENIED
        if any(address in network for network in self._allowed_v6):
            return _Verdict.ALLOWED
        if address in self._server_addresses:
            return _Verdict.SERVER
        if any(address in network for network in _DENIED_V6):
            return _Verdict.CLUSTER if ip in self._cluster else _Verdict.DENIED
        embedded = _embedded_ipv4(int(address))
        if embedded is None:
            return _Verdict.DENIED
        reaches_server = False
        for v4 in embedded:
            if v4 in self._server_addresses:
                # ::ffff:<server ip> or 64:ff9b::<server ip> reaches the host itself, so the
                # port restriction must follow it.
                reaches_server = True
            elif self._ipv4_denied(v4):
                return _Verdict.DENIED
        return _Verdict.SERVER if reaches_server else _Verdict.ALLOWED

    def _ipv4_denied(self, address: ipaddress.IPv4Address) -> bool:
        if any(address in network for network in self._allowed_v4):
            return False
        return any(address in network for network in _DENIED_V4)


def _parse_server_address(text: str) -> _IPAddress:
    try:
        address = ipaddress.ip_address(text)
    except (ValueError, TypeError):
        raise ConfigError(f"server address {text!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            raise ConfigError(f"server address {text!r}: give it without a zone")
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
    if address.is_unspecified:
        # A wildcard is how the server binds, not where it is; listing it would exempt 0.0.0.0,
        # which reaches every local service, from the deny list.
        raise ConfigError(f"server address {text!r}: list the concrete addresses, not a wildcard")
    return address
