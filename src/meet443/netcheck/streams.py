"""TCP and TLS connections to the server, direct or through an HTTP CONNECT proxy, with every failure
named: refused, timed out, reset, unreachable, proxy refused, TLS intercepted, TLS failed, stalled.

TLS interception is told apart by what fails: a TLS-inspecting proxy completes the handshake with a
certificate of its own, which does not verify against the system's trust store (or ``--ca-file``);
a firewall that merely blocks resets or stalls the handshake. :func:`presented_issuer` then fetches
the foreign certificate without verifying it, only to name its issuer in the report.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import socket
import ssl
import urllib.parse
from dataclasses import dataclass

from cryptography import x509

from meet443.exceptions import ParseError
from meet443.netcheck.results import Failure
from meet443.netcheck.wire import ResponseHead, connect_request, head_end, parse_response_head

__all__ = [
    "Proxy",
    "StreamFailure",
    "Target",
    "http_exchange",
    "open_stream",
    "presented_issuer",
    "read_head",
]

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@dataclass(frozen=True, slots=True)
class Target:
    """The server under test: ``https://host[:port]``."""

    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Target:
        """Raises ``ValueError`` for anything but ``https://host[:port][/]``."""
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"expected https://host[:port], got {url!r}")
        if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
            raise ValueError(f"expected https://host[:port] without path, query or user, got {url!r}")
        try:
            port = parts.port or 443
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r}: {exc}") from None
        return cls(parts.hostname, port)

    @property
    def authority(self) -> str:
        """``host[:port]`` as a Host header writes it (no port for 443, IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 443 else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"https://{self.authority}"


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy that tunnels with CONNECT: ``http://[user:password@]host:port``."""

    host: str
    port: int
    authorization: str | None = None

    @classmethod
    def parse(cls, url: str) -> Proxy:
        parts = urllib.parse.urlsplit(url.strip() if "://" in url else f"http://{url.strip()}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an HTTP proxy as http://host:port, got {url!r}")
        try:
            port = parts.port or 8080
        except ValueError as exc:
            raise ValueError(f"bad port in {url!r}: {exc}") from None
        authorization = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            authorization = f"Basic {token}"
        return cls(parts.hostname, port, authorization)

    def __str__(self) -> str:
        return f"http://{self.host}:{self.port}"


class StreamFailure(Exception):
    """A connection or exchange failed; ``failure`` says how, ``detail`` in words."""

    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


def _connect_failure(exc: BaseException, what: str) -> StreamFailure:
    if isinstance(exc, TimeoutError):
        return StreamFailure(Failure.TIMEOUT, f"no answer from {what} (TCP connect timed out)")
    if isinstance(exc, ConnectionRefusedError):
        return StreamFailure(Failure.REFUSED, f"{what} refused the TCP connection")
    if isinstance(exc, socket.gaierror):
        return StreamFailure(Failure.UNREACHABLE, f"cannot resolve {what}: {exc.strerror}")
    if isinstance(exc, OSError) and exc.errno in (
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.EACCES,
        errno.EPERM,
    ):
        return StreamFailure(Failure.UNREACHABLE, f"{what}: {exc.strerror}")
    if isinstance(exc, ConnectionResetError):
        return StreamFailure(Failure.RESET, f"{what} reset the connection")
    return StreamFailure(Failure.UNREACHABLE, f"{what}: {exc}")


def exchange_failure(exc: BaseException, what: str) -> StreamFailure:
    """A failure after the connection was up: the peer (or something between) stopped talking."""
    if isinstance(exc, StreamFailure):
        return exc
    if isinstance(exc, TimeoutError):
        return StreamFailure(
            Failure.STALLED, f"connected, then no answer from {what}: something between inspects or blocks it"
        )
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return StreamFailure(Failure.RESET, f"{what}: connection reset after connecting")
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return StreamFailure(Failure.RESET, f"{what}: connection closed after connecting")
    if isinstance(exc, ParseError):
        return StreamFailure(Failure.UNEXPECTED, f"{what}: {exc}")
    return StreamFailure(Failure.RESET, f"{what}: {exc}")


async def read_head(reader: asyncio.StreamReader) -> tuple[ResponseHead, bytes]:
    """Read up to the end of a response head; returns the head and the bytes after it."""
    buffer = b""
    while True:
        chunk = await reader.read(4096)
        if not chunk:
            raise asyncio.IncompleteReadError(buffer, None)
        buffer += chunk
        end = head_end(buffer)
        if end is not None:
            return parse_response_head(buffer[:end]), buffer[end:]


async def http_exchange(stream: Stream, request: bytes) -> tuple[ResponseHead, bytes]:
    """Send one request, read its response (the body by Content-Length)."""
    reader, writer = stream
    writer.write(request)
    await writer.drain()
    head, body = await read_head(reader)
    length = head.content_length
    if length is not None and length > 1 << 20:
        raise ParseError("response body too large")
    if length is not None and len(body) < length:
        body += await reader.readexactly(length - len(body))
    return head, body[:length] if length is not None else body


async def open_stream(
    target: Target, *, tls: ssl.SSLContext | None, proxy: Proxy | None, timeout: float
) -> Stream:
    """A TCP connection to ``target`` (through ``proxy``'s CONNECT tunnel if given), then TLS if asked.

    Raises :class:`StreamFailure`.
    """
    where = f"proxy {proxy}" if proxy else f"{target.host} port {target.port}"
    try:
        async with asyncio.timeout(timeout):
            host, port = (proxy.host, proxy.port) if proxy else (target.host, target.port)
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        raise _connect_failure(exc, where) from None
    try:
        if proxy is not None:
            await _tunnel(reader, writer, target, proxy, timeout)
        if tls is not None:
            await _start_tls(writer, tls, target, timeout)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _tunnel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target, proxy: Proxy, timeout: float
) -> None:
    """RFC 9110 §9.3.6: CONNECT, then a 2xx answer turns the connection into a tunnel."""
    try:
        async with asyncio.timeout(timeout):
            writer.write(connect_request(target.host, target.port, proxy.authorization))
            await writer.drain()
            head, rest = await read_head(reader)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ParseError) as exc:
        raise StreamFailure(Failure.PROXY_REFUSED, f"proxy {proxy} did not open a tunnel: {exc!r}") from None
    if not 200 <= head.status < 300:
        raise StreamFailure(
            Failure.PROXY_REFUSED,
            f"proxy {proxy} refused CONNECT to {target.host}:{target.port}: {head.status} {head.reason}",
        )
    if rest:
        raise StreamFailure(Failure.UNEXPECTED, f"proxy {proxy} sent data before the tunnel was up")


async def _start_tls(
    writer: asyncio.StreamWriter, context: ssl.SSLContext, target: Target, timeout: float
) -> None:
    try:
        async with asyncio.timeout(timeout):
            await writer.start_tls(context, server_hostname=target.host)
    except ssl.SSLCertVerificationError as exc:
        raise StreamFailure(
            Failure.TLS_INTERCEPTED,
            f"the certificate presented for {target.host} does not verify ({exc.verify_message})",
        ) from None
    except TimeoutError:
        raise StreamFailure(
            Failure.TLS_FAILED, f"TLS handshake with {target.host} stalled after the TCP connection"
        ) from None
    except (ssl.SSLError, OSError, EOFError, asyncio.IncompleteReadError) as exc:
        raise StreamFailure(Failure.TLS_FAILED, f"TLS handshake with {target.host} failed: {exc!r}") from None


async def presented_issuer(target: Target, proxy: Proxy | None, timeout: float) -> str | None:
    """The issuer of the certificate this network presents for ``target``, without verifying it.

    Only called after verification failed, to tell the user whose certificate it was.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await open_stream(target, tls=context, proxy=proxy, timeout=timeout)
    except StreamFailure:
        return None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return None
        return str(x509.load_der_x509_certificate(der).issuer.rfc4514_string())
    except ValueError:
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
