"""The progress display, the proxy from the environment, and the serve options the check relies on."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from meet443.config import load_serve_config
from meet443.exceptions import ConfigError
from meet443.netcheck.progress import Progress
from meet443.netcheck.results import CheckResult, Failure
from meet443.netcheck.run import CheckOptions, build_context, proxy_from_environment


class TestProgress:
    def test_plain_lines_when_not_a_terminal(self) -> None:
        out = io.StringIO()
        progress = Progress(out, ["https", "stun"], live=False)
        progress.start("https")
        assert out.getvalue() == ""
        progress.done(CheckResult("https", "tls", 443, True, rtt_ms=3.0))
        progress.done(CheckResult.blocked("stun", "udp", 443, Failure.TIMEOUT, "x"))
        lines = out.getvalue().splitlines()
        assert lines[0].split()[0] == "https" and lines[0].endswith("ok, 3 ms")
        assert lines[1].endswith("blocked (timed out)")

    def test_live_redraws_in_place(self) -> None:
        out = io.StringIO()
        progress = Progress(out, ["https", "stun"], live=True)
        progress.start("https")
        progress.done(CheckResult("https", "tls", 443, True))
        text = out.getvalue()
        assert "\x1b[2F" in text  # back up over the two lines to redraw them
        assert text.count("\x1b[2K") == 4

    def test_disabled(self) -> None:
        out = io.StringIO()
        progress = Progress(out, ["https"], live=True, enabled=False)
        progress.start("https")
        progress.done(CheckResult("https", "tls", 443, True))
        assert out.getvalue() == ""


class TestProxyFromEnvironment:
    def test_https_proxy_and_no_proxy(self) -> None:
        env = {"HTTPS_PROXY": "http://10.0.0.1:3128"}
        assert proxy_from_environment("meet.example.org", env) == "http://10.0.0.1:3128"
        assert proxy_from_environment("meet.example.org", {"https_proxy": "p:1"}) == "p:1"
        assert proxy_from_environment("meet.example.org", {**env, "NO_PROXY": ".example.org"}) is None
        assert proxy_from_environment("meet.example.org", {**env, "NO_PROXY": "other.org,*"}) is None
        assert proxy_from_environment("meet.example.org", {**env, "no_proxy": "example.com"}) is not None
        assert proxy_from_environment("h", {}) is None

    def test_flag_beats_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        ctx = build_context(CheckOptions("https://h", proxy="http://flag:1"), {"HTTPS_PROXY": "http://env:2"})
        assert ctx.proxy is not None and ctx.proxy.host == "flag"
        ctx = build_context(CheckOptions("https://h"), {"HTTPS_PROXY": "http://env:2"})
        assert ctx.proxy is not None and ctx.proxy.host == "env"
        with pytest.raises(ConfigError):
            build_context(CheckOptions("https://h"), {"HTTPS_PROXY": "socks5://x:1"})


class TestServeOptions:
    def test_defaults(self, tmp_path: Path) -> None:
        config = load_serve_config(["--public-ip", "198.51.100.1", "--data-dir", str(tmp_path)], {})
        assert (config.check_rate, config.other_udp_port, config.other_udp_port_fixed) == (6, 3478, False)

    def test_flags_and_environment(self, tmp_path: Path) -> None:
        env = {"MEET443_CHECK_RATE": "120", "MEET443_OTHER_UDP_PORT": "0"}
        config = load_serve_config(["--public-ip", "198.51.100.1", "--data-dir", str(tmp_path)], env)
        assert (config.check_rate, config.other_udp_port, config.other_udp_port_fixed) == (120, 0, True)
        with pytest.raises(ConfigError, match="--other-udp-port"):
            load_serve_config(["--public-ip", "198.51.100.1", "--other-udp-port", "70000"], {})
        with pytest.raises(ConfigError, match="--check-rate"):
            load_serve_config(["--public-ip", "198.51.100.1", "--check-rate", "0"], {})
