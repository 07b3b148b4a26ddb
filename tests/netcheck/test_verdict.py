"""The verdict of ``meet443 check`` as a pure function: which path wins, peer to peer, advice, output."""

from __future__ import annotations

import json

import pytest

from meet443.netcheck.results import CHECK_ORDER, CheckResult, Failure, burst_stats
from meet443.netcheck.verdict import decide, render_json, render_report, result_text

HOST, PORT = "meet.example.org", 443
REFLEXIVE = ("198.51.100.7", 40000)


def ok(name: str, **fields: object) -> CheckResult:
    transport = "udp" if name in ("stun", "sfu-udp", "turn-udp", "direct-udp", "p2p-inbound") else "tls"
    if name == "turn-tcp":
        transport = "tcp"
    return CheckResult(name, transport, PORT, True, **fields)  # type: ignore[arg-type]


def blocked(name: str, failure: Failure = Failure.TIMEOUT) -> CheckResult:
    return CheckResult.blocked(name, "udp", PORT, failure, "blocked")


def results(working: set[str], **overrides: CheckResult) -> list[CheckResult]:
    out = []
    for name in CHECK_ORDER:
        if name in overrides:
            out.append(overrides[name])
        elif name in working:
            out.append(ok(name, reflexive=REFLEXIVE, stable_mapping=True if name == "direct-udp" else None))
        else:
            out.append(blocked(name))
    return out


SIGNALING = {"https", "wss"}
ALL = set(CHECK_ORDER)


class TestBestPath:
    @pytest.mark.parametrize(
        ("working", "best", "p2p"),
        [
            (ALL, "direct-udp", True),
            (ALL - {"p2p-inbound"}, "direct-udp", True),  # stable mapping: hole punching works
            (SIGNALING | {"stun", "sfu-udp", "turn-udp", "turn-tcp", "turn-tls"}, "sfu-udp", False),
            (SIGNALING | {"turn-udp", "turn-tcp", "turn-tls"}, "turn-udp", False),
            (SIGNALING | {"turn-tcp", "turn-tls"}, "turn-tcp", False),
            (SIGNALING | {"turn-tls"}, "turn-tls", False),
            (SIGNALING, "none", False),
            (ALL - {"wss"}, "none", False),  # no signaling, no call
            (set(), "none", False),
        ],
    )
    def test_order(self, working: set[str], best: str, p2p: bool) -> None:
        verdict = decide(results(working), host=HOST, port=PORT)
        assert (verdict.best_path, verdict.p2p_direct) == (best, p2p)

    def test_other_port_without_the_main_port(self) -> None:
        """UDP 443 blocked (a firewall against QUIC), other ports open: no UDP path to the server, and
        with the mapping unknown only open inbound UDP makes peer to peer likely."""
        direct = ok("direct-udp", reflexive=REFLEXIVE, stable_mapping=None)
        working = SIGNALING | {"direct-udp", "turn-tls"}
        verdict = decide(results(working, **{"direct-udp": direct}), host=HOST, port=PORT)
        assert (verdict.best_path, verdict.p2p_direct) == ("turn-tls", False)
        verdict = decide(results(working | {"p2p-inbound"}, **{"direct-udp": direct}), host=HOST, port=PORT)
        assert (verdict.best_path, verdict.p2p_direct) == ("turn-tls", True)

    def test_symmetric_nat_without_inbound_is_not_p2p(self) -> None:
        direct = ok("direct-udp", reflexive=("198.51.100.7", 40001), stable_mapping=False)
        verdict = decide(results(ALL - {"p2p-inbound"}, **{"direct-udp": direct}), host=HOST, port=PORT)
        assert verdict.best_path == "direct-udp"
        assert not verdict.p2p_direct
        assert any("mapping" in line for line in verdict.advice)

    def test_symmetric_nat_with_open_inbound_is_p2p(self) -> None:
        direct = ok("direct-udp", reflexive=("198.51.100.7", 40001), stable_mapping=False)
        verdict = decide(results(ALL, **{"direct-udp": direct}), host=HOST, port=PORT)
        assert verdict.p2p_direct

    def test_unknown_mapping_without_inbound_is_not_p2p(self) -> None:
        direct = ok("direct-udp", reflexive=REFLEXIVE, stable_mapping=None)
        verdict = decide(results(ALL - {"p2p-inbound"}, **{"direct-udp": direct}), host=HOST, port=PORT)
        assert not verdict.p2p_direct


class TestAdvice:
    def text(self, working: set[str], **overrides: CheckResult) -> str:
        verdict = decide(results(working, **overrides), host=HOST, port=PORT)
        return " ".join([verdict.summary, *verdict.advice])

    def test_tcp_only_asks_for_udp_443_and_p2p(self) -> None:
        text = self.text(SIGNALING | {"turn-tcp", "turn-tls"})
        assert "Allow outbound UDP 443 to meet.example.org" in text
        assert "1024-65535" in text

    def test_tls_only_names_the_inspection(self) -> None:
        stalled = CheckResult.blocked("turn-tcp", "tcp", PORT, Failure.STALLED, "stalled")
        assert "only TLS" in self.text(SIGNALING | {"turn-tls"}, **{"turn-tcp": stalled})

    def test_interception_is_named(self) -> None:
        intercepted = CheckResult.blocked(
            "https", "tls", PORT, Failure.TLS_INTERCEPTED, "foreign certificate"
        )
        wss = CheckResult.blocked("wss", "tls", PORT, Failure.TLS_INTERCEPTED, "foreign certificate")
        text = self.text({"stun", "sfu-udp"}, https=intercepted, wss=wss)
        assert "exempt meet.example.org from TLS inspection" in text
        assert "signaling (WSS) is blocked" in text

    def test_websocket_blocked_behind_working_https(self) -> None:
        text = self.text(ALL - {"wss"})
        assert "allow WebSocket upgrades" in text

    def test_nothing_reaches(self) -> None:
        text = self.text(set())
        assert "No call is possible" in text and "Allow outbound TCP 443" in text

    def test_lossy_best_path(self) -> None:
        lossy = ok("turn-udp", loss=0.2)
        assert "lost 20%" in self.text(SIGNALING | {"turn-udp", "turn-tcp"}, **{"turn-udp": lossy})

    def test_all_good(self) -> None:
        assert "Nothing to change" in self.text(ALL)


class TestOutput:
    def test_json_has_exactly_the_documented_keys(self) -> None:
        checks = results(ALL - {"p2p-inbound"})
        verdict = decide(checks, host=HOST, port=PORT)
        document = json.loads(render_json("https://meet.example.org", list(reversed(checks)), verdict))
        assert set(document) == {"server", "checks", "best_path", "p2p_direct"}
        assert [c["name"] for c in document["checks"]] == list(CHECK_ORDER)
        for check in document["checks"]:
            assert set(check) == {"name", "transport", "port", "ok", "rtt_ms", "jitter_ms", "loss", "detail"}
        assert document["best_path"] == "direct-udp" and document["p2p_direct"] is True

    def test_report_has_the_contract_columns_and_the_verdict(self) -> None:
        checks = results(SIGNALING | {"turn-tls"})
        verdict = decide(checks, host=HOST, port=PORT)
        text = render_report(
            "https://meet.example.org", checks, verdict, port_ranges={"direct-udp": "1024-65535"}
        )
        header = text.splitlines()[2]
        assert header.split() == ["service", "destination", "port", "protocol", "result"]
        assert "best media path: turn-tls" in text
        assert "To improve:" in text
        assert "1024-65535" in text

    def test_result_text(self) -> None:
        check = ok("turn-udp", rtt_ms=12.3, jitter_ms=1.25, loss=0.02, throughput_kbps=3500.0)
        assert result_text(check) == "ok, 12 ms, jitter 1.2 ms, loss 2%, 3.5 Mbit/s"
        assert result_text(blocked("stun", Failure.REFUSED)) == "blocked (refused)"


class TestBurstStats:
    def test_all_back(self) -> None:
        sent = {0: 0.0, 1: 0.01, 2: 0.02, 3: 0.03}
        received = {0: 0.010, 1: 0.022, 2: 0.030, 3: 0.044}
        stats = burst_stats(sent, received, 1000)
        assert stats.received == 4 and stats.loss == 0.0
        assert stats.rtt_ms == pytest.approx(11.0)  # median of 10, 12, 10, 14
        assert stats.jitter_ms == pytest.approx((2 + 2 + 4) / 3)
        assert stats.throughput_kbps == pytest.approx(4 * 1000 * 8 / 0.044 / 1000)

    def test_loss_and_strangers(self) -> None:
        stats = burst_stats({0: 0.0, 1: 0.1}, {1: 0.15, 7: 0.2}, 100)
        assert (stats.sent, stats.received, stats.loss) == (2, 1, 0.5)
        assert stats.rtt_ms == pytest.approx(50.0) and stats.jitter_ms is None

    def test_nothing(self) -> None:
        assert burst_stats({}, {}, 10).loss == 1.0
        stats = burst_stats({0: 0.0}, {}, 10)
        assert (stats.rtt_ms, stats.throughput_kbps, stats.loss) == (None, None, 1.0)
