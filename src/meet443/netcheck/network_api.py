"""``GET /v1/network`` from a running server, for ``meet443 firewall-rules --url``."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

from meet443.exceptions import ConfigError, ParseError
from meet443.netcheck.streams import (
    Proxy,
    StreamFailure,
    Target,
    exchange_failure,
    http_exchange,
    open_stream,
)
from meet443.netcheck.wire import http_request
from meet443.network import NetworkDescription

__all__ = ["FetchError", "fetch_network"]

TIMEOUT = 10.0


class FetchError(Exception):
    """The server could not be asked (network failure or an unexpected answer)."""


async def _fetch(
    target: Target, api_key: str, tls: ssl.SSLContext, proxy: Proxy | None
) -> NetworkDescription:
    try:
        stream = await open_stream(target, tls=tls, proxy=proxy, timeout=TIMEOUT)
    except StreamFailure as exc:
        raise FetchError(exc.detail) from None
    try:
        async with asyncio.timeout(TIMEOUT):
            request = http_request(
                "GET", "/v1/network", target.authority, [("Authorization", f"Bearer {api_key}")]
            )
            head, body = await http_exchange(stream, request)
    except (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError, ParseError) as exc:
        raise FetchError(exchange_failure(exc, target.url).detail) from None
    finally:
        stream[1].close()
    if head.status in (401, 403):
        raise ConfigError(f"{target.url}/v1/network refused the API key ({head.status} {head.reason})")
    if head.status != 200:
        raise FetchError(f"{target.url}/v1/network answered {head.status} {head.reason}")
    try:
        return NetworkDescription.from_json(json.loads(body))
    except ValueError as exc:
        raise FetchError(f"{target.url}/v1/network: {exc}") from None


def fetch_network(
    url: str, api_key: str, ca_file: Path | None = None, proxy: str | None = None
) -> NetworkDescription:
    """Raises :class:`ConfigError` for a bad URL, CA file or key, :class:`FetchError` otherwise."""
    try:
        target = Target.parse(url)
        parsed_proxy = Proxy.parse(proxy) if proxy else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load --ca-file {ca_file}: {exc}") from None
    return asyncio.run(_fetch(target, api_key, tls, parsed_proxy))
