"""What a client network must reach: the deployment's host names, nodes, addresses and ports.

One value, :class:`NetworkDescription`, serves three readers: ``GET /v1/network`` (its JSON form),
``meet443 firewall-rules`` (which turns it into allow rules) and the docs. It is built either from the
server's own configuration (:meth:`NetworkDescription.from_config`) or from the JSON that a running
server returns (:meth:`NetworkDescription.from_json`); both give the same value, so rules made on the
server and rules made from ``--url`` agree.

The JSON shape (``version`` 1)::

    {"version": 1,
     "publicUrl": "https://meet.example.org",
     "hostnames": ["meet.example.org"],
     "services": [{"name", "purpose", "protocol": "tcp"|"udp", "ports": [lo, hi],
                   "destination": "servers"|"any", "required": bool}, ...],
     "nodes": [{"name", "self": bool, "hostnames": [...], "addresses": [...],
                "tcpPort", "udpPort", "relayPorts": [lo, hi]}]}

``nodes`` lists every live node of a cluster (docs/cluster.md), or this node alone. A cluster's
document also has ``"domainPatterns"``: the names to allow on a proxy or firewall that filters by
name, ``*.<parent>`` for node names under a common parent domain (``n1.example.com`` →
``*.example.com``) and the public URL's host. ``services`` is the network contract of the README,
with this deployment's port numbers.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from meet443.config import ServeConfig
    from meet443.state import NodeInfo

__all__ = ["P2P_PORTS", "NetworkDescription", "Node", "Service", "domain_patterns"]

Protocol = Literal["tcp", "udp"]
#: RFC 6335 user and dynamic ports: where browsers put their host and reflexive candidates.
P2P_PORTS = (1024, 65535)
VERSION = 1


@dataclass(frozen=True, slots=True)
class Service:
    """One row of the network contract."""

    name: str
    purpose: str
    protocol: Protocol
    ports: tuple[int, int]
    #: ``servers``: the addresses of :attr:`NetworkDescription.nodes`; ``any``: other participants.
    destination: Literal["servers", "any"]
    #: Without it meetings still work (through the relay); with it media takes a shorter path.
    required: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "purpose": self.purpose,
            "protocol": self.protocol,
            "ports": list(self.ports),
            "destination": self.destination,
            "required": self.required,
        }


@dataclass(frozen=True, slots=True)
class Node:
    """One server of the deployment and where clients reach it."""

    name: str
    addresses: tuple[str, ...]
    tcp_port: int
    udp_port: int
    relay_ports: tuple[int, int]
    hostnames: tuple[str, ...] = ()
    is_self: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "self": self.is_self,
            "hostnames": list(self.hostnames),
            "addresses": list(self.addresses),
            "tcpPort": self.tcp_port,
            "udpPort": self.udp_port,
            "relayPorts": list(self.relay_ports),
        }


@dataclass(frozen=True, slots=True)
class NetworkDescription:
    public_url: str
    hostnames: tuple[str, ...]
    nodes: tuple[Node, ...]
    domain_patterns: tuple[str, ...] = ()

    @classmethod
    def cluster(cls, public_url: str, nodes: Sequence[Node]) -> NetworkDescription:
        """Every live node of a cluster; host names are the public URL's and the nodes'."""
        host = urlsplit(public_url).hostname or ""
        names = [host] if host and not _is_ip(host) else []
        for node in nodes:
            names.extend(node.hostnames)
        hostnames = tuple(dict.fromkeys(names))
        return cls(public_url, hostnames, tuple(nodes), domain_patterns(hostnames))

    @classmethod
    def single_node(
        cls,
        public_url: str,
        addresses: Sequence[str],
        port: int,
        relay_ports: tuple[int, int],
    ) -> NetworkDescription:
        """This node alone: ``addresses`` are its public IPs (the URL's host is added if it is one)."""
        host = urlsplit(public_url).hostname or ""
        hostnames: tuple[str, ...] = ()
        found = list(dict.fromkeys(_normalise_ip(a) for a in addresses))
        if _is_ip(host):
            if _normalise_ip(host) not in found:
                found.append(_normalise_ip(host))
        elif host:
            hostnames = (host,)
        node = Node(
            name=host or found[0],
            addresses=tuple(found),
            tcp_port=port,
            udp_port=port,
            relay_ports=relay_ports,
            hostnames=hostnames,
            is_self=True,
        )
        return cls(public_url=public_url, hostnames=hostnames, nodes=(node,))

    @classmethod
    def from_config(cls, config: ServeConfig) -> NetworkDescription:
        """What ``meet443 serve`` with this configuration advertises."""
        addresses = [config.public_ip]
        if config.public_ipv6 is not None:
            addresses.append(config.public_ipv6)
        description = cls.single_node(config.public_url, addresses, config.port, config.relay_ports)
        # Browsers also reach each --region-node (its /v1/rtt and TURN): published by name, since
        # only that node knows its addresses.
        regions = (urlsplit(url).hostname or "" for _, url in config.region_nodes)
        extra = tuple(host for host in regions if host and not _is_ip(host))
        if not extra:
            return description
        return dataclasses.replace(description, hostnames=tuple(dict.fromkeys(description.hostnames + extra)))

    @classmethod
    def from_registry(
        cls, public_url: str, nodes: Sequence[NodeInfo], self_id: str | None
    ) -> NetworkDescription:
        """A cluster's live nodes as the registry describes them (docs/cluster.md)."""
        listed = []
        for info in sorted(nodes, key=lambda n: n.node_id):
            host = urlsplit(info.node_url).hostname or info.node_id
            listed.append(
                Node(
                    name=host,
                    addresses=tuple(_normalise_ip(a) for a in info.addresses),
                    tcp_port=info.port,
                    udp_port=info.port,
                    relay_ports=info.relay_ports,
                    hostnames=() if _is_ip(host) else (host,),
                    is_self=info.node_id == self_id,
                )
            )
        return cls.cluster(public_url, listed)

    def services(self) -> list[Service]:
        """The network contract with this deployment's ports (ports of the first node)."""
        node = self.nodes[0]
        tcp, udp = (node.tcp_port, node.tcp_port), (node.udp_port, node.udp_port)
        return [
            Service("https", "web app, REST API and WSS signaling (HTTPS)", "tcp", tcp, "servers", True),
            Service("turn-tls", "TURN relay over TLS", "tcp", tcp, "servers", True),
            Service("turn-tcp", "TURN relay over TCP", "tcp", tcp, "servers", False),
            Service("turn-udp", "TURN relay over UDP", "udp", udp, "servers", False),
            Service("sfu-udp", "SFU media (ICE-lite, one port for all)", "udp", udp, "servers", False),
            Service(
                "relay-direct",
                "media sent directly to relayed addresses of other participants",
                "udp",
                node.relay_ports,
                "servers",
                False,
            ),
            Service("p2p", "peer-to-peer media between participants", "udp", P2P_PORTS, "any", False),
        ]

    def to_json(self) -> dict[str, Any]:
        document = {
            "version": VERSION,
            "publicUrl": self.public_url,
            "hostnames": list(self.hostnames),
            "services": [service.to_json() for service in self.services()],
            "nodes": [node.to_json() for node in self.nodes],
        }
        if self.domain_patterns:
            document["domainPatterns"] = list(self.domain_patterns)
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> NetworkDescription:
        """Parse what ``GET /v1/network`` returns; raises ``ValueError`` for anything unexpected."""
        try:
            if document.get("version") != VERSION:
                raise ValueError(f"unsupported version {document.get('version')!r}")
            public_url = _string(document["publicUrl"])
            hostnames = tuple(_string(h) for h in document["hostnames"])
            nodes = tuple(_node(raw) for raw in document["nodes"])
            patterns = tuple(_string(p) for p in document.get("domainPatterns", ()))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a /v1/network document: {exc!r}") from None
        if not nodes:
            raise ValueError("not a /v1/network document: no nodes")
        return cls(public_url=public_url, hostnames=hostnames, nodes=nodes, domain_patterns=patterns)


def domain_patterns(hostnames: Sequence[str]) -> tuple[str, ...]:
    """Names to allow by pattern: ``*.<parent>`` for a name of three labels or more (the nodes of
    a service share a parent, as ``*.turn.example.com`` does), else the name itself."""
    patterns = []
    for name in hostnames:
        labels = name.split(".")
        patterns.append("*." + ".".join(labels[1:]) if len(labels) >= 3 else name)
    return tuple(dict.fromkeys(patterns))


def _node(raw: Mapping[str, Any]) -> Node:
    return Node(
        name=_string(raw["name"]),
        addresses=tuple(_normalise_ip(_string(a)) for a in raw["addresses"]),
        tcp_port=_port(raw["tcpPort"]),
        udp_port=_port(raw["udpPort"]),
        relay_ports=_range(raw["relayPorts"]),
        hostnames=tuple(_string(h) for h in raw.get("hostnames", ())),
        is_self=bool(raw.get("self", False)),
    )


def _string(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    # Names end up in firewall rule comments: no quotes, newlines or other control characters.
    if any(c in value for c in "\"'\\`$") or not value.isprintable():
        raise ValueError(f"unexpected characters in {value!r}")
    return value


def _port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"expected a port number, got {value!r}")
    return value


def _range(value: object) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"expected [low, high], got {value!r}")
    low, high = _port(value[0]), _port(value[1])
    if low > high:
        raise ValueError(f"empty port range {low}-{high}")
    return low, high


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _normalise_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"expected an IP address, got {text!r}") from None
