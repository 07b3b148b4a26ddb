"""The ``meet443`` command: ``serve``, ``turn-credentials``, ``api-key create|list|revoke``, ``db copy``,
``check`` and ``firewall-rules``.

``serve``'s flags come from :data:`meet443.config.SERVE_OPTIONS`, and so do ``api-key``'s ``--config``,
``--data-dir``, ``--database`` and ``--database-password-file`` and all of ``firewall-rules``'s server
options, resolved as ``serve`` resolves them; this
module only wires subcommands. Usage and configuration errors exit with status 2; revoking a key that
does not exist exits with 1; ``check`` exits with 1 when no media path works.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
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
    ServeConfig,
    add_serve_arguments,
    default_public_url,
    discover_public_ip,
    load_cluster_client,
    load_config_from_arguments,
    load_serve_config,
    load_store_settings,
    parse_database_url,
    parse_public_url,
    turn_uris_for,
)
from meet443.exceptions import ConfigError, StateUnavailable
from meet443.firewall import FORMATS, outbound_rules, render
from meet443.meetings import ApiKey, check_api_key_label
from meet443.network import NetworkDescription
from meet443.proto.turn.credentials import rest_credentials
from meet443.state import NodeInfo
from meet443.store import open_store

__all__ = ["main"]

EXIT_FAILURE = 1
EXIT_USAGE = 2
#: The options of ``serve`` that say where its state lives.
_STATE_OPTIONS = ("config", "data-dir", "database", "database-password-file")


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

    api_key = commands.add_parser(
        "api-key",
        help="create, list or revoke keys for the meetings API",
        description="Manage the API keys that may call /v1/meetings. Keys live in "
        "<data-dir>/meetings.sqlite3, or in PostgreSQL with --database, as SHA-256 digests: a new key "
        "is printed once and cannot be shown again. Changes apply to running servers at once.",
        allow_abbrev=False,
    )
    actions = api_key.add_subparsers(dest="api_key_command", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="create a key and print it",
        description="Create an API key and print it.",
        allow_abbrev=False,
    )
    create.add_argument(
        "--label",
        metavar="L",
        default="",
        type=_argument_type(_label, "label"),
        help="a note saying who or what uses the key",
    )
    create.add_argument(
        "--admin",
        action="store_true",
        help="the key sees and deletes every meeting, not only those it created",
    )
    listing = actions.add_parser(
        "list", help="list keys (never their secrets)", description="List API keys.", allow_abbrev=False
    )
    revoke = actions.add_parser(
        "revoke",
        help="revoke a key at once",
        description="Revoke an API key; requests with it fail from now on.",
        allow_abbrev=False,
    )
    revoke.add_argument("key_id", metavar="KEY_ID", help="the id that `api-key list` shows")
    for action in (create, listing, revoke):
        add_serve_arguments(action, only=_STATE_OPTIONS)
    _add_db_parser(commands)
    _add_check_parser(commands)
    _add_firewall_parser(commands)
    _add_drain_parser(commands)
    return parser


def _add_db_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = commands.add_parser(
        "db",
        help="move the meetings store into PostgreSQL",
        description="Manage where meetings and API keys live (docs/cluster.md).",
        allow_abbrev=False,
    )
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    copy = actions.add_parser(
        "copy",
        help="copy a SQLite store into PostgreSQL",
        description="Copy the meetings (ended and deleted ones too) and API keys of a single node's "
        "SQLite store into PostgreSQL, creating its schema if needed. Running it again copies only "
        "what is new, and carries over meetings ended and keys revoked since. Prints counts.",
        allow_abbrev=False,
    )
    copy.add_argument(
        "--from",
        dest="source",
        metavar="PATH",
        type=Path,
        required=True,
        help="the data dir, or its meetings.sqlite3",
    )
    copy.add_argument(
        "--to",
        dest="target",
        metavar="URL",
        type=_argument_type(parse_database_url, "URL"),
        required=True,
        help="postgresql://USER@HOST[:PORT]/DB",
    )
    copy.add_argument(
        "--database-password-file",
        metavar="FILE",
        type=Path,
        help="file holding the PostgreSQL password (rather than in the URL)",
    )


def _add_check_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check",
        help="test from this network which paths to a meet443 server work",
        description="Test every path of the network contract from this network to the server at URL: "
        "HTTPS, WSS signaling, STUN, TURN over UDP, TCP and TLS (allocation and a relayed round trip), "
        "the SFU's UDP port, direct UDP and unsolicited UDP for peer to peer. Prints a table and the "
        "best media path. Exits 0 when some media path works, 1 when none does, 2 for usage errors.",
        allow_abbrev=False,
    )
    check.add_argument("url", metavar="URL", help="the server, https://host[:port]")
    check.add_argument(
        "--json",
        action="store_true",
        help='print {"server", "checks", "best_path", "p2p_direct"} instead of the table',
    )
    check.add_argument(
        "--proxy",
        metavar="URL",
        help="HTTP CONNECT proxy for HTTPS, WSS and TURN over TLS (default: $HTTPS_PROXY, unless $NO_PROXY "
        "names the host)",
    )
    check.add_argument(
        "--ca-file", metavar="PEM", type=Path, help="trust this CA (a server with a private CA)"
    )
    check.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=float,
        default=3.0,
        help="how long one step may take before its path counts as blocked (default 3)",
    )
    check.add_argument("--no-progress", action="store_true", help="no progress display on stderr")


def _add_firewall_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = commands.add_parser(
        "firewall-rules",
        help="print outbound firewall rules for a client network",
        description="Print the OUTBOUND allow rules a client network needs for this server: TCP and UDP "
        "to its main port, optionally UDP to its relay ports and UDP 1024-65535 for peer to peer. The "
        "server's addresses and ports come from the same options as `meet443 serve` (flags, MEET443_* "
        "variables, --config), so run it on the server, or from a running server's /v1/network with "
        "--url and --api-key.",
        allow_abbrev=False,
    )
    rules.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    rules.add_argument(
        "--relay-direct",
        action="store_true",
        help="also allow UDP to the relay port range: media straight to other participants' relayed "
        "addresses, one relay hop less",
    )
    rules.add_argument(
        "--sfu-direct",
        action="store_true",
        help="also allow UDP to the SFU ports (one per media worker): group-room media straight to "
        "the SFU from browsers, which skip candidates on port 443",
    )
    rules.add_argument(
        "--p2p", action="store_true", help="also allow UDP 1024-65535 to anywhere, for peer-to-peer media"
    )
    rules.add_argument(
        "--client-net", metavar="CIDR", help="limit the rules to this source network (default: any)"
    )
    rules.add_argument(
        "--hook",
        choices=("forward", "output"),
        default="forward",
        help="nftables/iptables chain: forward on a firewall, output on the client itself (default forward)",
    )
    rules.add_argument("--url", metavar="URL", help="read the addresses from this server's /v1/network")
    rules.add_argument("--api-key", metavar="KEY", help="admin API key for --url (or $MEET443_API_KEY)")
    rules.add_argument(
        "--ca-file", metavar="PEM", type=Path, help="CA for --url (a server with a private CA)"
    )
    add_serve_arguments(rules)


def _add_drain_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    drain = commands.add_parser(
        "drain",
        help="drain a node of a cluster: no new rooms, existing ones go on up to --drain-timeout",
        description="Ask the node named by --node-url to drain, through the cluster's Redis (the node "
        "reads the request within a second): it places no new rooms, answers new TURN allocations with "
        "300 Try Alternate, and exits when its rooms are empty or its --drain-timeout passed. Takes "
        "--redis, --redis-password-file and --node-url like `meet443 serve` (flags, MEET443_* variables, "
        "--config), so on the node itself `meet443 drain --config FILE` names it. See docs/cluster.md.",
        allow_abbrev=False,
    )
    add_serve_arguments(drain, only=("config", "redis", "redis-password-file", "node-url"))


def _label(text: str) -> str:
    check_api_key_label(text)
    return text


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


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms // 1000, datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _key_line(key: ApiKey) -> str:
    state = "active" if key.revoked_ms is None else f"revoked {_iso(key.revoked_ms)}"
    if key.admin:
        state += " admin"
    return f"{key.key_id}  created {_iso(key.created_ms)}  {state}  {key.label}".rstrip()


async def _api_key(args: argparse.Namespace) -> int:
    settings = load_store_settings(args, os.environ)
    store = await open_store(settings.data_dir, settings.database, settings.database_password)
    try:
        if args.api_key_command == "create":
            key_id, secret_key = await store.api_keys.create(args.label, now_ms=_now_ms(), admin=args.admin)
            # The key alone on stdout, so that `KEY=$(meet443 api-key create)` works.
            print(secret_key)
            print(f"API key {key_id} created; store it now, it cannot be shown again", file=sys.stderr)
            return 0
        if args.api_key_command == "list":
            keys = await store.api_keys.list()
            for key in keys:
                print(_key_line(key))
            if not keys:
                print(f"no API keys in {store.where}", file=sys.stderr)
            return 0
        revoked = await store.api_keys.revoke(args.key_id, now_ms=_now_ms())
        if revoked is None:
            print(f"meet443 api-key: error: no API key {args.key_id!r} in {store.where}", file=sys.stderr)
            return EXIT_FAILURE
        print(_key_line(revoked))
        return 0
    finally:
        await store.close()


async def _db_copy(args: argparse.Namespace) -> int:
    # Imported here: only this command needs both stores.
    from meet443.store.copy import copy_sqlite_to_postgres  # noqa: PLC0415
    from meet443.store.postgres import PostgresStore  # noqa: PLC0415

    url, password = args.target
    if args.database_password_file is not None:
        if password is not None:
            raise ConfigError("the database password is both in --to and in --database-password-file")
        password = _read_secret_file(args.database_password_file)
    target = await PostgresStore.connect(url, password)
    try:
        counts = await copy_sqlite_to_postgres(args.source, target)
    finally:
        await target.close()
    print(f"{counts.summary()} (from {args.source} to {target.where})")
    return 0


def _check(args: argparse.Namespace) -> int:
    from meet443.netcheck.run import CheckOptions  # noqa: PLC0415 -- loads asyncio probes only here
    from meet443.netcheck.run import main as check_main  # noqa: PLC0415

    options = CheckOptions(
        url=args.url,
        json=args.json,
        proxy=args.proxy,
        ca_file=args.ca_file,
        timeout=args.timeout,
        progress=not args.no_progress,
    )
    return check_main(options)


def _firewall_rules(args: argparse.Namespace) -> int:
    if args.url is not None:
        from meet443.netcheck.network_api import FetchError, fetch_network  # noqa: PLC0415

        api_key = args.api_key or os.environ.get("MEET443_API_KEY")
        if not api_key:
            raise ConfigError("--url needs --api-key (or MEET443_API_KEY): /v1/network is for admins")
        try:
            network = fetch_network(args.url, api_key, args.ca_file)
        except FetchError as exc:
            print(f"meet443 firewall-rules: error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    else:
        config = load_config_from_arguments(args, os.environ, read_secrets=False)
        network = (
            _cluster_network(config) if config.redis is not None else NetworkDescription.from_config(config)
        )
    try:
        text = render(
            network,
            outbound_rules(network, relay_direct=args.relay_direct, sfu_direct=args.sfu_direct, p2p=args.p2p),
            args.format,
            client_net=args.client_net,
            hook=args.hook,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    sys.stdout.write(text)
    return 0


def _cluster_network(config: ServeConfig) -> NetworkDescription:
    """docs/cluster.md: a cluster's rules list every live node, read from its registry."""
    from meet443.state.redis_backend import RedisState  # noqa: PLC0415

    assert config.redis is not None
    state = RedisState.from_config(config.redis, config.redis_password_file)

    async def read() -> list[NodeInfo]:
        try:
            return await state.live_nodes()
        finally:
            await state.close()

    try:
        nodes = asyncio.run(read())
    except StateUnavailable as exc:
        raise ConfigError(f"cannot read the cluster's registry: {exc}") from None
    if not nodes:
        raise ConfigError("the cluster's registry lists no live node")
    return NetworkDescription.from_registry(config.public_url, nodes, None)


def _drain(args: argparse.Namespace) -> int:
    """docs/cluster.md "Drain": ask a node to drain, through the cluster's Redis."""
    from meet443.state import node_id_of  # noqa: PLC0415
    from meet443.state.redis_backend import RedisState  # noqa: PLC0415

    client = load_cluster_client(args, os.environ)
    state = RedisState.from_config(client.redis, client.redis_password_file)
    node_id = node_id_of(client.node_url)

    async def request() -> bool:
        try:
            await state.request_drain(node_id)
            return any(n.node_id == node_id for n in await state.live_nodes())
        finally:
            await state.close()

    try:
        live = asyncio.run(request())
    except StateUnavailable as exc:
        print(f"meet443 drain: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"asked {node_id} to drain" + ("" if live else " (it is not live now; it drains when it starts)"))
    return 0


def _serve(serve_argv: Sequence[str]) -> int:
    config = load_serve_config(serve_argv, os.environ)
    # Imported here so that `turn-credentials` and `--help` do not load the whole server.
    from meet443.app import serve  # noqa: PLC0415

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
        if args.command == "api-key":
            return asyncio.run(_api_key(args))
        if args.command == "db":
            return asyncio.run(_db_copy(args))
        if args.command == "check":
            return _check(args)
        if args.command == "firewall-rules":
            return _firewall_rules(args)
        if args.command == "drain":
            return _drain(args)
        return _turn_credentials(args)
    except ConfigError as exc:
        print(f"meet443 {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
