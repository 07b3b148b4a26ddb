"""From check results to a verdict: the best media path, peer to peer or not, and what to allow.

Pure functions of :class:`~meet443.netcheck.results.CheckResult` values, so every rule below is a
unit test away.

Best media path, best first (the first that worked wins):

``direct-udp``  UDP reaches the server's main port *and* an arbitrary other port of it: media can go
                straight to the SFU, and to other participants' relayed addresses or to them directly.
``sfu-udp``     UDP reaches the main port: media over UDP to the SFU and to TURN over UDP.
``turn-udp``    a TURN allocation over UDP relayed a burst (UDP 443, when the SFU check was lost).
``turn-tcp``    TURN over plain TCP on the main port: works, but TCP's retransmissions add delay.
``turn-tls``    TURN over TLS: the one path an HTTPS-only network or a proxy leaves open.
``none``        nothing works, or signaling (WSS) does not: without signaling no call starts.

Peer to peer (``p2p_direct``): UDP reaches arbitrary ports (``direct-udp``) and either unsolicited UDP
gets in (``p2p-inbound``: RFC 5780 "change port") or this network's NAT keeps one mapping for all
destinations (the reflexive address seen on the main port and on the other port agree), so ICE can
open a hole from both sides. One server IP cannot tell an address-dependent NAT from an independent
one (RFC 5780 §4.3 needs a second IP), so a ``true`` here is a strong hint, not a proof.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from meet443.netcheck.results import CHECK_ORDER, CheckResult, Failure

__all__ = ["MEDIA_PATHS", "BestPath", "Verdict", "decide", "render_json", "render_report"]

BestPath = Literal["direct-udp", "sfu-udp", "turn-udp", "turn-tcp", "turn-tls", "none"]
MEDIA_PATHS: tuple[BestPath, ...] = ("direct-udp", "sfu-udp", "turn-udp", "turn-tcp", "turn-tls")

PATH_NAMES: Mapping[str, str] = {
    "direct-udp": "direct UDP (any port)",
    "sfu-udp": "UDP to the SFU port",
    "turn-udp": "TURN relay over UDP",
    "turn-tcp": "TURN relay over TCP",
    "turn-tls": "TURN relay over TLS",
    "none": "none",
}

#: What each check is, in the words of the network contract (service, protocol).
SERVICES: Mapping[str, tuple[str, str]] = {
    "https": ("web app, REST API (HTTPS)", "TCP (TLS)"),
    "wss": ("signaling (secure WebSocket)", "TCP (TLS)"),
    "stun": ("STUN (reflexive address)", "UDP"),
    "sfu-udp": ("SFU media", "UDP"),
    "turn-udp": ("TURN relay (UDP)", "UDP"),
    "turn-tcp": ("TURN relay (TCP)", "TCP"),
    "turn-tls": ("TURN relay (TLS)", "TCP (TLS)"),
    "direct-udp": ("direct UDP, peer to peer", "UDP"),
    "p2p-inbound": ("unsolicited UDP back in", "UDP"),
}


@dataclass(frozen=True, slots=True)
class Verdict:
    best_path: BestPath
    p2p_direct: bool
    signaling: bool
    summary: str
    advice: tuple[str, ...]


def decide(checks: Sequence[CheckResult], *, host: str, port: int) -> Verdict:
    """The verdict for these results against the server ``host`` (its main ``port``)."""
    by_name = {check.name: check for check in checks}

    def ok(name: str) -> bool:
        check = by_name.get(name)
        return check is not None and check.ok

    signaling = ok("wss")
    main_udp = ok("sfu-udp") or ok("stun") or ok("turn-udp")
    works = {
        "direct-udp": ok("direct-udp") and main_udp,
        "sfu-udp": ok("sfu-udp"),
        "turn-udp": ok("turn-udp"),
        "turn-tcp": ok("turn-tcp"),
        "turn-tls": ok("turn-tls"),
    }
    media: BestPath = next((path for path in MEDIA_PATHS if works[path]), "none")
    best: BestPath = media if signaling else "none"
    direct = by_name.get("direct-udp")
    stable_mapping = direct is not None and direct.stable_mapping is True
    p2p = signaling and ok("direct-udp") and (ok("p2p-inbound") or stable_mapping)
    return Verdict(
        best_path=best,
        p2p_direct=p2p,
        signaling=signaling,
        summary=_summary(best, media, p2p, signaling),
        advice=tuple(_advice(by_name, best, media, p2p, signaling, host, port)),
    )


def _summary(best: BestPath, media: BestPath, p2p: bool, signaling: bool) -> str:
    if not signaling:
        if media != "none":
            return (
                f"Media could flow ({PATH_NAMES[media]}), but signaling (WSS) is blocked: "
                "no call can start from this network."
            )
        return "No call is possible from this network: neither signaling nor media reach the server."
    text = f"Calls work. Best media path: {PATH_NAMES[best]}."
    if best == "none":
        text = "Signaling works, but no media path does: calls would connect without sound or video."
    if p2p:
        text += " Peer-to-peer calls can skip the relay."
    elif best != "none":
        text += " Peer-to-peer calls go through the relay."
    return text


def _advice(
    by_name: Mapping[str, CheckResult],
    best: BestPath,
    media: BestPath,
    p2p: bool,
    signaling: bool,
    host: str,
    port: int,
) -> list[str]:
    advice: list[str] = []
    intercepted = [c for c in by_name.values() if c.failure is Failure.TLS_INTERCEPTED]
    if intercepted:
        advice.append(
            f"A proxy or firewall presents its own certificate for {host}: exempt {host} from TLS "
            "inspection (it breaks TURN over TLS), or, if the server uses a private CA, run with --ca-file."
        )
    https = by_name.get("https")
    if not signaling:
        if https is not None and https.ok:
            advice.append(
                f"HTTPS works but the secure WebSocket to {host} does not: allow WebSocket upgrades "
                f"(wss://{host}/v1/ws) in the proxy or firewall."
            )
        elif not intercepted:
            advice.append(f"Allow outbound TCP {port} to {host} (HTTPS and secure WebSocket).")
    if best in ("turn-tls", "turn-tcp", "none") and signaling:
        advice.append(
            f"Allow outbound UDP {port} to {host}: media over UDP avoids the delay of TCP retransmissions."
        )
    turn_tcp = by_name.get("turn-tcp")
    if best == "turn-tls" and turn_tcp is not None and turn_tcp.failure is Failure.STALLED:
        advice.append(
            f"Something lets only TLS through on TCP {port}: TURN over TLS works, plain TURN over TCP "
            "is cut off after connecting (TURN over TLS costs a little more CPU and delay)."
        )
    if best in ("sfu-udp", "turn-udp", "turn-tcp", "turn-tls") and signaling and not p2p:
        advice.append(
            "For peer-to-peer media (rooms of up to four, no relay), allow outbound UDP 1024-65535 "
            "(`meet443 firewall-rules --p2p`)."
        )
    if best == "direct-udp" and not p2p:
        advice.append(
            "UDP to any port works, but unsolicited UDP does not get back in and this network's NAT "
            "changes the mapping per destination: peer-to-peer calls will often need the relay."
        )
    for name in ("turn-udp", "sfu-udp", "turn-tcp", "turn-tls"):
        check = by_name.get(name)
        if check is not None and check.ok and name == best and (check.loss or 0.0) > 0.05:
            advice.append(
                f"{PATH_NAMES[name]} lost {check.loss:.0%} of a short burst: "
                "expect choppy media on this network."
            )
    if signaling and best == "direct-udp" and p2p:
        advice.append("Nothing to change: media can take the direct path.")
    return advice


# --------------------------------------------------------------------------------------------------
# Output


def render_json(server: str, checks: Sequence[CheckResult], verdict: Verdict) -> str:
    """Exactly ``{"server", "checks", "best_path", "p2p_direct"}``."""
    document: dict[str, Any] = {
        "server": server,
        "checks": [check.to_json() for check in _ordered(checks)],
        "best_path": verdict.best_path,
        "p2p_direct": verdict.p2p_direct,
    }
    return json.dumps(document, indent=2) + "\n"


def _ordered(checks: Sequence[CheckResult]) -> list[CheckResult]:
    rank = {name: index for index, name in enumerate(CHECK_ORDER)}
    return sorted(checks, key=lambda c: rank.get(c.name, len(rank)))


def result_text(check: CheckResult) -> str:
    """``ok, 12 ms`` or ``blocked (timed out)``; the short form for the table and the progress lines."""
    if not check.ok:
        return f"blocked ({check.failure.value if check.failure else 'failed'})"
    parts = ["ok"]
    if check.rtt_ms is not None:
        parts.append(f"{check.rtt_ms:.0f} ms")
    if check.jitter_ms is not None:
        parts.append(f"jitter {check.jitter_ms:.1f} ms")
    if check.loss is not None:
        parts.append(f"loss {check.loss:.0%}")
    if check.throughput_kbps is not None:
        parts.append(f"{check.throughput_kbps / 1000:.1f} Mbit/s")
    return ", ".join(parts)


def render_report(
    server: str,
    checks: Sequence[CheckResult],
    verdict: Verdict,
    *,
    port_ranges: Mapping[str, str] | None = None,
) -> str:
    """The table in the shape of the network contract, each check's detail, then the verdict."""
    ranges = port_ranges or {}
    rows = [("service", "destination port", "protocol", "result")]
    for check in _ordered(checks):
        service, protocol = SERVICES.get(check.name, (check.name, check.transport.upper()))
        if check.via_proxy:
            protocol += " via proxy"
        rows.append((service, ranges.get(check.name, str(check.port)), protocol, result_text(check)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"Network check against {server}", ""]
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.append("")
    for check in _ordered(checks):
        if check.detail:
            lines.append(f"  {check.name}: {check.detail}")
    lines += ["", verdict.summary]
    p2p = "yes" if verdict.p2p_direct else "no"
    lines.append(f"best media path: {verdict.best_path}; peer to peer without relay: {p2p}")
    if verdict.advice:
        best_possible = verdict.best_path == "direct-udp" and verdict.p2p_direct
        lines += ["", "Notes:" if best_possible else "To improve:"]
        lines += [f"  - {line}" for line in verdict.advice]
    return "\n".join(lines) + "\n"
