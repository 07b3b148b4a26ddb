"""Outbound allow rules for a client network, from a :class:`~meet443.network.NetworkDescription`.

Everything meet443 needs is outbound from the client (the network contract in the README); nothing
has to be opened inbound, since a stateful firewall lets the answers of allowed flows back in.

* Always: TCP to the main port of every server address (HTTPS, WSS signaling, TURN over TCP/TLS) and
  UDP to the main port (TURN over UDP, SFU media). With these, every call works, through the relay.
* ``relay_direct``: UDP to the servers' relay port range. When the *other* participant talks through a
  TURN relay, this client's media can go straight to that relayed address instead of through its own
  allocation: one relay hop less. It is also what ``meet443 check`` calls ``direct-udp``.
* ``sfu_direct``: UDP to the servers' SFU ports, one per media worker (docs/workers.md). Browsers
  skip ICE candidates on ports below 1024, so with the server on 443 this is how group-room media
  reaches the SFU without the relay.
* ``p2p``: UDP 1024-65535 to any destination, for peer-to-peer media between participants (rooms of
  up to four). It is the one rule that does not name the servers, so it is opt-in.

Pure: takes values, returns text. ``nftables`` output is a complete table whose chain drops everything
else (load it as the whole forward policy, or copy its accept rules into your own chain);
``iptables`` output is a list of ``iptables``/``ip6tables`` commands that only append ACCEPT rules.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from meet443.network import P2P_PORTS, NetworkDescription

__all__ = ["FORMATS", "Rule", "outbound_rules", "render"]

FORMATS = ("table", "json", "nftables", "iptables")
Format = Literal["table", "json", "nftables", "iptables"]


@dataclass(frozen=True, slots=True)
class Rule:
    """Allow new flows from the client network to ``destination`` (None: anywhere) on ``ports``."""

    protocol: Literal["tcp", "udp"]
    destination: str | None
    ports: tuple[int, int]
    purpose: str
    required: bool

    @property
    def family(self) -> int | None:
        if self.destination is None:
            return None
        return ipaddress.ip_address(self.destination).version

    def port_text(self, separator: str = "-") -> str:
        low, high = self.ports
        return str(low) if low == high else f"{low}{separator}{high}"


def outbound_rules(
    network: NetworkDescription, *, relay_direct: bool = False, sfu_direct: bool = False, p2p: bool = False
) -> list[Rule]:
    """The rules, most important first; duplicates (two nodes on one address) are merged."""
    rules: list[Rule] = []
    for node in network.nodes:
        for address in node.addresses:
            rules.append(
                Rule(
                    "tcp", address, (node.tcp_port,) * 2, "HTTPS, WSS signaling, TURN over TCP and TLS", True
                )
            )
            rules.append(Rule("udp", address, (node.udp_port,) * 2, "TURN over UDP, SFU media", False))
            if sfu_direct and node.sfu_ports is not None:
                rules.append(Rule("udp", address, node.sfu_ports, "SFU media on its own ports", False))
            if relay_direct:
                rules.append(
                    Rule("udp", address, node.relay_ports, "media directly to relayed addresses", False)
                )
    if p2p:
        rules.append(Rule("udp", None, P2P_PORTS, "peer-to-peer media between participants", False))
    return list(dict.fromkeys(rules))


def render(
    network: NetworkDescription,
    rules: Sequence[Rule],
    fmt: Format,
    *,
    client_net: str | None = None,
    table: str = "meet443_out",
    hook: Literal["forward", "output"] = "forward",
) -> str:
    if client_net is not None:
        client_net = str(ipaddress.ip_network(client_net, strict=False))
    if fmt == "json":
        return _json(network, rules, client_net)
    if fmt == "nftables":
        return _nftables(network, rules, client_net, table, hook)
    if fmt == "iptables":
        return _iptables(network, rules, client_net, hook)
    return _table(network, rules, client_net)


def _header(network: NetworkDescription, comment: str) -> list[str]:
    lines = [f"{comment} meet443: outbound allow rules for clients of {network.public_url}"]
    if network.hostnames:
        lines.append(
            f"{comment} host names (for proxies and firewalls that filter by name): "
            + ", ".join(network.hostnames)
        )
    if network.domain_patterns:
        lines.append(f"{comment} domain patterns to allow: " + ", ".join(network.domain_patterns))
    lines.append(f"{comment} not included: DNS, and anything else your clients need")
    return lines


def _json(network: NetworkDescription, rules: Sequence[Rule], client_net: str | None) -> str:
    document = {
        "server": network.public_url,
        "hostnames": list(network.hostnames),
        "domainPatterns": list(network.domain_patterns),
        "source": client_net,
        "rules": [
            {
                "protocol": rule.protocol,
                "destination": rule.destination,
                "ports": list(rule.ports),
                "purpose": rule.purpose,
                "required": rule.required,
            }
            for rule in rules
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def _table(network: NetworkDescription, rules: Sequence[Rule], client_net: str | None) -> str:
    rows = [("service", "source", "destination", "port", "protocol")]
    for rule in rules:
        rows.append(
            (
                rule.purpose if rule.required else f"{rule.purpose} (optional, better media)",
                client_net or "clients",
                rule.destination or "any",
                rule.port_text(),
                rule.protocol.upper(),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [f"Outbound rules for clients of {network.public_url}", ""]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.append("")
    if network.hostnames:
        lines.append(
            "Host names (for proxies and firewalls that filter by name): " + ", ".join(network.hostnames)
        )
    if network.domain_patterns:
        lines.append("Domain patterns to allow: " + ", ".join(network.domain_patterns))
    lines.append("Nothing inbound: a stateful firewall lets the answers of these flows back in.")
    return "\n".join(lines) + "\n"


def _nftables(
    network: NetworkDescription,
    rules: Sequence[Rule],
    client_net: str | None,
    table: str,
    hook: str,
) -> str:
    lines = [
        *_header(network, "#"),
        f"# this table's {hook} chain drops every other packet: load it as the whole {hook} policy,",
        "# or copy its accept rules into a chain of your own",
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        f"  chain {hook} {{",
        f"    type filter hook {hook} priority 0; policy drop;",
        "    ct state established,related accept",
    ]
    source = ""
    if client_net is not None:
        source = ("ip" if ipaddress.ip_network(client_net).version == 4 else "ip6") + f" saddr {client_net} "
    for rule in rules:
        destination = ""
        if rule.destination is not None:
            destination = ("ip" if rule.family == 4 else "ip6") + f" daddr {rule.destination} "
        ports = rule.port_text("-")
        lines.append(
            f"    {source}{destination}{rule.protocol} dport {ports} ct state new accept "
            f'comment "{rule.purpose}"'
        )
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _iptables(network: NetworkDescription, rules: Sequence[Rule], client_net: str | None, hook: str) -> str:
    chain = hook.upper()
    net_version = ipaddress.ip_network(client_net).version if client_net is not None else None
    lines = [*_header(network, "#"), "# appends ACCEPT rules; your chain's policy decides the rest"]
    for command in ("iptables", "ip6tables"):
        version = 4 if command == "iptables" else 6
        if net_version not in (None, version):
            continue
        mine = [r for r in rules if r.family in (None, version)]
        if not mine:
            continue
        lines.append(f"{command} -A {chain} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
        for rule in mine:
            parts = [command, "-A", chain]
            if client_net is not None:
                parts += ["-s", client_net]
            if rule.destination is not None:
                parts += ["-d", rule.destination]
            parts += ["-p", rule.protocol, "--dport", rule.port_text(":")]
            parts += [
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-m",
                "comment",
                "--comment",
                f'"{rule.purpose}"',
            ]
            parts += ["-j", "ACCEPT"]
            lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"
