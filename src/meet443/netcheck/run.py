"""``meet443 check URL``: run every probe against the server, then print the table and the verdict.

Exit status: 0 when some media path works (with signaling), 1 when none does, 2 for usage errors.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from meet443.exceptions import ConfigError
from meet443.netcheck.probes import (
    CheckContext,
    CheckCredentials,
    UdpFacts,
    probe_direct_udp,
    probe_https,
    probe_inbound,
    probe_sfu,
    probe_stun,
    probe_turn,
    probe_wss,
    resolve_udp,
)
from meet443.netcheck.progress import Progress
from meet443.netcheck.results import CHECK_ORDER, CheckResult
from meet443.netcheck.streams import Proxy, Target
from meet443.netcheck.verdict import Verdict, decide, render_json, render_report

__all__ = ["CheckOptions", "main", "run_checks"]

EXIT_OK, EXIT_NO_MEDIA = 0, 1
DEFAULT_TIMEOUT = 3.0


@dataclass(frozen=True)
class CheckOptions:
    url: str
    json: bool = False
    proxy: str | None = None
    ca_file: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    progress: bool = True


def proxy_from_environment(host: str, environ: Mapping[str, str]) -> str | None:
    """``HTTPS_PROXY`` (or ``https_proxy``), unless ``NO_PROXY`` names ``host``."""
    proxy = environ.get("HTTPS_PROXY") or environ.get("https_proxy")
    if not proxy:
        return None
    no_proxy = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
    if no_proxy and _bypassed(host, no_proxy):
        return None
    return proxy


def _bypassed(host: str, no_proxy: str) -> bool:
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*" or (entry and (host == entry.lstrip(".") or host.endswith("." + entry.lstrip(".")))):
            return True
    return False


def build_context(options: CheckOptions, environ: Mapping[str, str]) -> CheckContext:
    """Validate the options; raises :class:`ConfigError` (exit 2)."""
    try:
        target = Target.parse(options.url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    proxy_url = options.proxy if options.proxy is not None else proxy_from_environment(target.host, environ)
    try:
        proxy = Proxy.parse(proxy_url) if proxy_url else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        tls = ssl.create_default_context(cafile=str(options.ca_file) if options.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --ca-file {options.ca_file}: {exc}") from None
    if not 0.1 <= options.timeout <= 60:
        raise ConfigError("--timeout must be between 0.1 and 60 seconds")
    return CheckContext(target, tls, proxy, options.timeout, ca_file_given=options.ca_file is not None)


async def run_checks(
    ctx: CheckContext, progress: Progress
) -> tuple[list[CheckResult], CheckCredentials | None]:
    """Run every probe, concurrently where they do not depend on each other."""
    results: dict[str, CheckResult] = {}

    async def track(name: str, probe: Awaitable[CheckResult]) -> CheckResult:
        progress.start(name)
        result = await probe
        results[name] = result
        progress.done(result)
        return result

    server, unresolved = await resolve_udp(ctx.target)
    facts = UdpFacts()
    progress.start("https")
    https_task = asyncio.ensure_future(probe_https(ctx))

    async def after_https() -> tuple[CheckCredentials | None, str]:
        result, credentials, why = await https_task
        results["https"] = result
        progress.done(result)
        return credentials, why

    credentials_task = asyncio.ensure_future(after_https())

    async def udp() -> None:
        await track("stun", probe_stun(ctx, server, unresolved, facts))
        credentials, why = await credentials_task
        await asyncio.gather(
            track("sfu-udp", probe_sfu(ctx, server, unresolved)),
            track("direct-udp", probe_direct_udp(ctx, server, credentials, unresolved or why)),
            track("p2p-inbound", probe_inbound(ctx, server, facts, credentials)),
        )

    async def turn() -> None:
        credentials, why = await credentials_task
        await asyncio.gather(
            *(
                track(f"turn-{transport}", probe_turn(ctx, transport, server, credentials, why or unresolved))
                for transport in ("udp", "tcp", "tls")
            )
        )

    await asyncio.gather(track("wss", probe_wss(ctx)), udp(), turn())
    credentials, _ = credentials_task.result()
    return [results[name] for name in CHECK_ORDER if name in results], credentials


def _port_ranges(results: list[CheckResult], credentials: CheckCredentials | None) -> dict[str, str]:
    ranges = {}
    for result in results:
        if result.name == "direct-udp":
            ranges["direct-udp"] = f"1024-65535 (tried {result.port})" if result.port else "1024-65535"
        elif result.name == "p2p-inbound":
            ranges["p2p-inbound"] = f"inbound from {result.port}"
    return ranges


async def check(options: CheckOptions, ctx: CheckContext, stderr: TextIO) -> tuple[str, Verdict]:
    live = options.progress and stderr.isatty()
    with Progress(stderr, CHECK_ORDER, live=live, enabled=options.progress) as progress:
        results, credentials = await run_checks(ctx, progress)
    verdict = decide(results, host=ctx.target.host, port=ctx.target.port)
    if options.json:
        return render_json(ctx.target.url, results, verdict), verdict
    text = render_report(ctx.target.url, results, verdict, port_ranges=_port_ranges(results, credentials))
    if ctx.proxy is not None:
        text += f"\nHTTPS, WSS and TURN over TLS went through the proxy {ctx.proxy}; the rest went direct.\n"
    return text, verdict


def main(options: CheckOptions, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Run the check; raises :class:`ConfigError` for bad options (the CLI exits 2)."""
    ctx = build_context(options, os.environ)
    text, verdict = asyncio.run(check(options, ctx, stderr))
    stdout.write(text)
    stdout.flush()
    return EXIT_OK if verdict.best_path != "none" else EXIT_NO_MEDIA
