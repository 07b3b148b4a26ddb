"""The ``meet443`` command: ``serve`` and ``turn-credentials``.

``serve``'s flags come from :data:`meet443.config.SERVE_OPTIONS`; this module only wires subcommands.
Usage and configuration errors exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from meet443 import __version__
from meet443.config import (
    DEFAULT_CREDENTIAL_TTL,
    DEFAULT_PORT,
    add_serve_arguments,
    default_public_url,
    discover_public_ip,
    load_serve_config,
    parse_public_url,
    turn_uris_for,
)
from meet443.exceptions import ConfigError
from meet443.proto.turn.credentials import rest_credentials

__all__ = ["main"]

EXIT_USAGE = 2


def _argument_type(parse: Callable[[str], object], name: str) -> Callable[[str], object]:
    """Let argparse print our message instead of "invalid <function> value"."""

    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def _bounded_int(minimum: int, maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}, got {value}")
        return value

    return parse


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meet443",
        description="Browser video meetings and a TURN relay on one TCP and one UDP port.",
    )
    parser.add_argument("--version", action="version", version=f"meet443 {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the meetings server and TURN relay. Every flag can also be set as the "
        "environment variable shown in brackets or as a key in the --config TOML file; "
        "flags win over the environment, which wins over the file.",
        allow_abbrev=False,
    )
    add_serve_arguments(serve)

    credentials = commands.add_parser(
        "turn-credentials",
        help="print ephemeral TURN credentials as JSON",
        description="Print TURN REST API credentials (draft-uberti-behave-turn-rest-00) for the shared "
        "secret of a running server. Prefer --secret-file: a --secret shows in the process list. "
        "The secret `meet443 serve` generates lives in <data-dir>/turn-secret.",
        allow_abbrev=False,
    )
    secret = credentials.add_mutually_exclusive_group(required=True)
    secret.add_argument("--secret", metavar="S", help="the shared secret")
    secret.add_argument("--secret-file", metavar="FILE", type=Path, help="file holding the shared secret")
    credentials.add_argument("--user", metavar="NAME", help="label to put in the username")
    credentials.add_argument(
        "--ttl",
        metavar="SECONDS",
        type=_argument_type(_bounded_int(1, 10 * 365 * 86400), "ttl"),
        default=DEFAULT_CREDENTIAL_TTL,
        help=f"lifetime of the credentials (default {DEFAULT_CREDENTIAL_TTL})",
    )
    credentials.add_argument(
        "--public-url",
        metavar="URL",
        type=_argument_type(parse_public_url, "URL"),
        help="the server's public URL; its host goes into the URIs (default https://<this host's IP>[:port])",
    )
    credentials.add_argument(
        "--port",
        metavar="N",
        type=_argument_type(_bounded_int(1, 65535), "port"),
        default=DEFAULT_PORT,
        help=f"the server's port (default {DEFAULT_PORT})",
    )
    return parser


def _read_secret_file(path: Path) -> str:
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read secret file {path}: {reason}") from None
    if not secret:
        raise ConfigError(f"secret file {path} is empty")
    return secret


def _turn_credentials(args: argparse.Namespace) -> int:
    secret: str = args.secret if args.secret is not None else _read_secret_file(args.secret_file)
    if not secret:
        raise ConfigError("the secret must not be empty")
    public_url: str = args.public_url or default_public_url(discover_public_ip(), args.port)
    username, password = rest_credentials(secret, args.user, args.ttl, time.time())
    answer = {
        "username": username,
        "password": password,
        "ttl": args.ttl,
        "uris": turn_uris_for(public_url, args.port),
    }
    print(json.dumps(answer, indent=2))
    return 0


def _serve(serve_argv: Sequence[str]) -> int:
    config = load_serve_config(serve_argv, os.environ)
    # Imported here so that `turn-credentials` and `--help` do not load the whole server.
    from meet443.app import serve  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    try:
        result = serve(config)
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``meet443`` command; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = _build_parser()
    args = parser.parse_args(arguments)
    try:
        if args.command == "serve":
            # Only --help and --version may come before the subcommand, and both exit, so the
            # subcommand is the first word; load_serve_config reads the words after it.
            return _serve(arguments[arguments.index("serve") + 1 :])
        return _turn_credentials(args)
    except ConfigError as exc:
        print(f"meet443 {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
