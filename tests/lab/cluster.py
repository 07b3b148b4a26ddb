"""A meet443 cluster in network namespaces (issue 15, docs/cluster.md): three nodes that share one
Redis and one PostgreSQL, and client namespaces for browsers and load generators.

    c1 10.200.130.66 ─┐                    ┌─ n1 10.200.130.2   meet443 serve, node n1.cx.test
    c2 10.200.130.82 ─┤                    ├─ n2 10.200.130.18  meet443 serve, node n2.cx.test
    c3 10.200.130.98 ─┼── rt (router) ─────┼─ n3 10.200.130.34  meet443 serve, node n3.cx.test
    ld 10.200.131.x  ─┘  .1 on each link   └─ db 10.200.130.50  redis-server :6379, postgres :5432

Every link is a /28 of 10.200.130.0/24 (router .1 of it, the other end .2); the optional load
namespace ``ld`` gets 10.200.131.0/24, so a benchmark can spread its sockets over many source
addresses. All addresses lie in 10.200.130.0/23.

Names. Each node's certificate (signed by the lab CA that browsers trust) names the node
(``n1.cx.test``) and the public name every meeting URL uses (``meet.cx.test``). Client namespace
*i* resolves the public name to node *i* mod 3 through its own hosts file, which is what DNS round
robin or a load balancer does to different people: the same URL, different nodes. Nodes resolve
each other's names the same way, for the internal WSS between edge and home, and trust the lab CA
through ``--cluster-ca-file``.

Redis and PostgreSQL are the Debian packages' real servers, started by the lab and stopped by PID
with the rest of it; PostgreSQL is tests/postgres.py's ``PostgresServer`` (the ``postgres`` user,
its data outside the test's temporary directory), run inside the db namespace.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.postgres import PostgresServer

from .netns import (
    Lab,
    Namespace,
    Proc,
    default_route,
    dns_server,
    enable_forwarding,
    hosts_file,
    ipv4_only,
    wait_listening,
)
from .pki import LabPki, issue_leaf

PUBLIC_NAME = "meet.cx.test"
NODE_PORT = 443
REDIS_PORT = 6379
POSTGRES_PORT = 5432
METRICS = "127.0.0.1:9443"  # each node's Prometheus endpoint, reachable only inside its namespace
DB_IP = "10.200.130.50"
LOAD_NET = "10.200.131"  # the load namespace's /24
REGION = "lab"


def node_ip(index: int) -> str:
    """Node ``index`` (0-based) on the /28 at 10.200.130.16*index."""
    return f"10.200.130.{16 * index + 2}"


def client_ip(index: int) -> str:
    """Client ``index`` (0-based) on the /28s from 10.200.130.64 on."""
    return f"10.200.130.{64 + 16 * index + 2}"


def node_name(index: int) -> str:
    return f"n{index + 1}.cx.test"


# --------------------------------------------------------------------------------------------------
# Redis and PostgreSQL


@dataclass
class RedisServer:
    """``redis-server`` on ``ip:port`` in `ns`, with a password (``requirepass``); no persistence
    unless `appendonly`: a restart starts empty, the harshest case for the nodes that share it."""

    ns: Namespace
    ip: str
    workdir: Path
    port: int = REDIS_PORT
    appendonly: bool = False
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: Proc | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://{self.ip}:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        argv: list[str | os.PathLike[str]] = [
            "redis-server", "--bind", self.ip, "--port", str(self.port), "--protected-mode", "no",
            "--dir", self.workdir, "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--daemonize", "no", "--logfile", "", "--requirepass", self.password,
        ]  # fmt: skip
        self.proc = self.ns.spawn(argv, name=f"redis-{self.starts}")
        wait_listening(self.ns, self.ip, self.port, "tcp", proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.ns._procs.stop(self.proc)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop (SIGTERM, by PID), stay down `down_s` seconds, start again on the same address."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def password_file(self) -> Path:
        """The password in a file (mode 0600), for the nodes' ``--redis-password-file``."""
        path = self.workdir / "password"
        path.write_text(self.password + "\n")
        path.chmod(0o600)
        return path

    def raw(self, *args: str) -> str:
        """One ``redis-cli --raw`` command against this server, from inside its namespace; its output."""
        auth = ["env", f"REDISCLI_AUTH={self.password}"]
        return self.ns.run([*auth, "redis-cli", "-h", self.ip, "-p", str(self.port), "--raw", *args]).stdout

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as ``field -> value`` (commandstats' values stay ``calls=..,usec=..``)."""
        values = {}
        for line in self.raw("INFO", section).splitlines():
            name, sep, value = line.strip().partition(":")
            if sep and not name.startswith("#"):
                values[name] = value
        return values

    def keys(self, pattern: str) -> list[str]:
        return sorted(self.raw("--scan", "--pattern", pattern).split())


def lab_postgres(ns: Namespace, ip: str, workdir: Path) -> PostgresServer:
    """tests/postgres.py's server, run inside `ns` on ``ip:5432``, accepting the lab's nodes with
    the password (scram-sha-256); `password_file` beside it for ``--database-password-file``."""
    server = PostgresServer(port=POSTGRES_PORT, listen=ip, command_prefix=["ip", "netns", "exec", ns.name])
    with (server.data / "pg_hba.conf").open("a") as hba:
        hba.write("host all all 10.200.130.0/23 scram-sha-256\n")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "database-password").write_text(server.password + "\n")
    (workdir / "database-password").chmod(0o600)
    return server


# --------------------------------------------------------------------------------------------------
# Nodes


@dataclass
class ClusterNode:
    """One ``meet443 serve`` of the cluster, in its own namespace, with the flags of docs/cluster.md.

    `shared` holds the cluster flags (``--redis``, ``--database``, the shared secret files); without
    them the node runs alone, which is the single-node anchor of the benchmark."""

    index: int
    ns: Namespace
    pki: LabPki
    workdir: Path
    shared: Sequence[str] = ()
    extra: Sequence[str] = ()
    proc: Proc | None = None

    @property
    def ip(self) -> str:
        return node_ip(self.index)

    @property
    def name(self) -> str:
        return node_name(self.index)

    @property
    def node_url(self) -> str:
        return f"https://{self.name}"

    @property
    def node_id(self) -> str:
        """docs/cluster.md: a node's id is the host[:port] of its --node-url."""
        return self.name

    def argv(self) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        cluster = [*self.shared, "--node-url", self.node_url, "--region", REGION] if self.shared else []
        return [
            sys.executable, "-m", "meet443", "serve",
            "--listen", self.ip, "--port", str(NODE_PORT), "--public-ip", self.ip,
            "--public-url", f"https://{PUBLIC_NAME}",
            "--relay-ports", "50000-50999",
            "--cert", str(self.pki.cert), "--key", str(self.pki.key),
            "--data-dir", str(data), "--log-level", "info",
            "--metrics-listen", METRICS,
            # The tests' clients come from few addresses; the default 10 joins a minute each
            # would refuse the later trials of a module.
            "--joins-per-minute", "600",
            # One media worker: the lab's nodes share CI's two cores (issue #15).
            "--workers", "1",
            *cluster, *self.extra,
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> ClusterNode:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = self.ns.spawn(self.argv(), name=f"meet443-{self.name}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        for proto in ("tcp", "udp"):
            wait_listening(self.ns, self.ip, NODE_PORT, proto, timeout=timeout, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.ns._procs.stop(self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def log(self) -> str:
        return self.proc.log_text() if self.proc is not None else ""


# --------------------------------------------------------------------------------------------------
# The whole cluster


@dataclass
class Cluster:
    lab: Lab
    rt: Namespace
    db: Namespace
    nodes: list[ClusterNode]
    clients: list[Namespace]
    redis: RedisServer
    postgres: PostgresServer | None
    pki: LabPki
    workdir: Path
    load: Namespace | None = None
    #: The nodes' ``--database`` flags (meetings and API keys shared); empty when each node keeps
    #: its own in its data directory.
    database_flags: tuple[str, ...] = ()

    @property
    def public_url(self) -> str:
        return f"https://{PUBLIC_NAME}"

    def node_for(self, client: Namespace) -> ClusterNode:
        """The node `client` reaches under the public name."""
        return self.nodes[self.clients.index(client) % len(self.nodes)]

    def dead_nodes(self) -> list[str]:
        return [
            f"{n.name}: {n.proc.describe() if n.proc else 'never started'}"
            for n in self.nodes
            if not n.alive()
        ]

    def logs(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {n.name} ---\n{n.log()[-chars:]}" for n in self.nodes)


def shared_secret_files(directory: Path) -> tuple[Path, Path]:
    """The cluster's one TURN secret and one resume-token key (mode 0600), for every node's
    ``--turn-secret-file`` and ``--resume-key-file``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "turn-secret", directory / "resume-key"
    for path in paths:
        path.write_text(secrets.token_hex(32) + "\n")
        path.chmod(0o600)
    return paths


@contextlib.contextmanager
def cluster_lab(
    workdir: Path,
    pki: LabPki,
    *,
    prefix: str,
    nodes: int = 3,
    clients: int = 2,
    load: bool = False,
    postgres: bool = True,
    cluster: bool = True,
    node_extra: Sequence[str] = (),
) -> Iterator[Cluster]:
    """Build and start the cluster; tear everything down (processes by PID, namespaces, hosts
    files, PostgreSQL's directory) on leaving.

    `pki` is the lab CA (its key beside it) that the clients trust; each node gets a leaf from it.
    `cluster=False` starts the same nodes without any cluster flag (each one alone); only then may
    `postgres` be False (cluster mode needs the shared ``--database``).
    `prefix` must start with ``cx`` (``fo``: the failover tests) and be short (veth names are
    ``<prefix>v<n>a``).
    """
    assert prefix.startswith(("cx", "fo")), prefix
    # The stack outlives the lab: hosts files and PostgreSQL's directory go after the processes.
    with contextlib.ExitStack() as stack, Lab(workdir, prefix=prefix) as lab:
        rt, db = lab.namespace("rt"), lab.namespace("db")
        node_ns = [lab.namespace(f"n{i + 1}") for i in range(nodes)]
        client_ns = [lab.namespace(f"c{i + 1}") for i in range(clients)]
        load_ns = lab.namespace("ld") if load else None
        ends = [*node_ns, *client_ns, *([load_ns] if load_ns else [])]
        ipv4_only(rt, db, *ends)
        enable_forwarding(rt)
        for i, ns in enumerate(node_ns):
            lab.veth(rt, f"10.200.130.{16 * i + 1}/28", ns, f"{node_ip(i)}/28")
            default_route(ns, f"10.200.130.{16 * i + 1}")
        lab.veth(rt, "10.200.130.49/28", db, f"{DB_IP}/28")
        default_route(db, "10.200.130.49")
        for i, ns in enumerate(client_ns):
            lab.veth(rt, f"10.200.130.{64 + 16 * i + 1}/28", ns, f"{client_ip(i)}/28")
            default_route(ns, f"10.200.130.{64 + 16 * i + 1}")
        if load_ns is not None:
            pair = lab.veth(rt, f"{LOAD_NET}.1/24", load_ns, f"{LOAD_NET}.2/24")
            for host in range(3, 255):
                load_ns.run(["ip", "addr", "add", f"{LOAD_NET}.{host}/24", "dev", pair.b_dev])
            default_route(load_ns, f"{LOAD_NET}.1")

        names = {node_name(i): node_ip(i) for i in range(nodes)}
        for i, ns in enumerate(node_ns):
            stack.enter_context(hosts_file(ns, {**names, PUBLIC_NAME: node_ip(i)}))
        for i, ns in enumerate(client_ns):
            stack.enter_context(hosts_file(ns, {**names, PUBLIC_NAME: node_ip(i % nodes)}))
            dns_server(ns, {**names, PUBLIC_NAME: node_ip(i % nodes)})
        if load_ns is not None:
            stack.enter_context(hosts_file(load_ns, {**names, PUBLIC_NAME: node_ip(0)}))

        redis = RedisServer(db, DB_IP, workdir / "redis").start()
        pg = lab_postgres(db, DB_IP, workdir / "postgres") if postgres else None
        if pg is not None:
            stack.enter_context(pg)  # stopped (by its postmaster's PID) after the nodes
        shared: list[str] = []
        database_flags: tuple[str, ...] = ()
        if pg is not None and cluster:
            password_file = workdir / "postgres" / "database-password"
            database_flags = ("--database", pg.url, "--database-password-file", str(password_file))
        if cluster:
            turn_secret, resume_key = shared_secret_files(workdir / "secrets")
            shared = ["--redis", redis.url, "--redis-password-file", str(redis.password_file()),
                      "--turn-secret-file", str(turn_secret), "--resume-key-file", str(resume_key),
                      "--cluster-ca-file", str(pki.ca),
                      # The lab stops nodes with SIGTERM: rooms still open then need not outlive
                      # it by the default ten minutes (the lab's SIGKILL comes after 5 s).
                      "--drain-timeout", "1"]  # fmt: skip
            shared += database_flags
        members = []
        for i, ns in enumerate(node_ns):
            leaf = issue_leaf(
                pki, workdir / "pki", f"n{i + 1}", ips=(node_ip(i),), dns=(node_name(i), PUBLIC_NAME)
            )
            members.append(ClusterNode(i, ns, leaf, workdir / f"n{i + 1}", shared, node_extra))
        for member in members:
            member.spawn()
        for member in members:
            member.wait_ready()
        yield Cluster(lab, rt, db, members, client_ns, redis, pg, pki, workdir, load_ns, database_flags)
