"""TURN servers under test: coturn (the reference) and meet443, started the same way.

Both listen for TURN over UDP, TCP and TLS on ONE port (coturn detects TLS on its TCP listener when
``--tls-listening-port`` equals ``--listening-port``; meet443 does it by design) and relay from
`relay_ports` on the same address.

Credentials: meet443 takes the REST shared secret and static users at once. coturn 4.6 cannot —
with ``--use-auth-secret`` it rejects static users — so a `Coturn` gets exactly one of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .netns import Namespace, Proc, context_switches, cpu_seconds, wait_listening
from .pki import LabPki

LOOPBACK_V4 = ipaddress.ip_network("127.0.0.0/8")
LOOPBACK_V6 = ipaddress.ip_network("::1/128")


@dataclass(frozen=True)
class TurnAuth:
    """Long-term credentials a server accepts: a TURN REST shared secret and/or static users."""

    realm: str = "meet443.test"
    secret: str | None = None
    users: tuple[tuple[str, str], ...] = ()  # (name, password)

    def rest_credentials(
        self, name: str = "alice", ttl_s: int = 3600, now: float | None = None
    ) -> tuple[str, str]:
        """draft-uberti-behave-turn-rest-00 §2.2: username ``<expiry>:<name>``,
        password ``base64(HMAC-SHA1(secret, username))`` — what ``turnutils_uclient -W`` computes."""
        if self.secret is None:
            raise ValueError("this server has no REST secret")
        expiry = int(time.time() if now is None else now) + ttl_s
        username = f"{expiry}:{name}"
        digest = hmac.new(self.secret.encode(), username.encode(), hashlib.sha1).digest()
        return username, base64.b64encode(digest).decode()


@dataclass(frozen=True)
class TurnServerConfig:
    host: str  # listen address, also the relay address
    port: int  # UDP + TCP + TLS
    relay_ports: tuple[int, int]
    auth: TurnAuth
    pki: LabPki
    workdir: Path
    allow_peers: tuple[str, ...] = ()  # CIDRs a relay may send to despite the default deny list
    public_ip: str | None = None  # what meet443 advertises; defaults to host
    relay_threads: int | None = None  # coturn's --relay-threads; None: its default (one per CPU)

    @property
    def allows_loopback_peers(self) -> bool:
        nets = [ipaddress.ip_network(c, strict=False) for c in self.allow_peers]
        return any(n.version == 4 and n.overlaps(LOOPBACK_V4) for n in nets) or any(
            n.version == 6 and n.overlaps(LOOPBACK_V6) for n in nets
        )


@dataclass
class TurnServerUnderTest(ABC):
    """One TURN server process inside a lab namespace."""

    config: TurnServerConfig
    kind: ClassVar[str]
    # Whether CPU accounting should include child processes (meet443 may fork workers).
    count_children: ClassVar[bool]
    proc: Proc | None = field(default=None, init=False)
    ns: Namespace | None = field(default=None, init=False)

    def __post_init__(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Subclasses check that they can honour `config` (the generated __init__ calls this)."""

    @abstractmethod
    def argv(self) -> list[str]: ...

    def start(
        self,
        ns: Namespace,
        *,
        cpus: str | None = None,
        timeout: float = 20.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> Proc:
        """Spawn the server in `ns` and wait until it listens on UDP and TCP `host:port`.

        The server gets this process's environment without ``MEET443_*`` (meet443 reads settings
        from those: a developer's shell must not change what the lab runs), plus `extra_env`
        (e.g. a benchmark lifting a limit)."""
        self.config.workdir.mkdir(parents=True, exist_ok=True)
        self.ns = ns
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEET443_")}
        env.update(extra_env or {})
        self.proc = ns.spawn(self.argv(), name=f"{self.kind}-{self.config.port}", cpus=cpus, env=env)
        for proto in ("udp", "tcp"):
            wait_listening(ns, self.config.host, self.config.port, proto, timeout=timeout, proc=self.proc)
        return self.proc

    def cpu_seconds(self) -> float:
        if self.proc is None:
            raise RuntimeError(f"{self.kind} was not started")
        return cpu_seconds(self.proc.pid, children=self.count_children)

    def context_switches(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.kind} was not started")
        return context_switches(self.proc.pid, children=self.count_children)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()


class Coturn(TurnServerUnderTest):
    kind = "coturn"
    count_children = False

    def __post_init__(self) -> None:
        auth = self.config.auth
        if (auth.secret is None) == (not auth.users):
            raise ValueError("coturn 4.6 takes either a REST secret or static users, not both or neither")

    def argv(self) -> list[str]:
        c = self.config
        lo, hi = c.relay_ports
        argv = [
            "turnserver", "-n", "--no-cli", "--no-dtls", "--log-file=stdout", "--simple-log",
            f"--pidfile={c.workdir / f'coturn-{c.port}.pid'}",
            f"--listening-ip={c.host}", f"--relay-ip={c.host}",
            f"--listening-port={c.port}", f"--tls-listening-port={c.port}",
            f"--min-port={lo}", f"--max-port={hi}",
            f"--realm={c.auth.realm}", f"--cert={c.pki.cert}", f"--pkey={c.pki.key}",
        ]  # fmt: skip
        if c.auth.secret is not None:
            argv += ["--use-auth-secret", f"--static-auth-secret={c.auth.secret}"]
        else:
            argv += [*(f"--user={name}:{password}" for name, password in c.auth.users), "--lt-cred-mech"]
        if c.relay_threads is not None:
            argv.append(f"--relay-threads={c.relay_threads}")
        if c.allows_loopback_peers:
            argv.append("--allow-loopback-peers")
        for cidr in c.allow_peers:
            net = ipaddress.ip_network(cidr, strict=False)
            if not (net.overlaps(LOOPBACK_V4) if net.version == 4 else net.overlaps(LOOPBACK_V6)):
                argv.append(f"--allowed-peer-ip={net[0]}-{net[-1]}")
        return argv


class Meet443Server(TurnServerUnderTest):
    kind = "meet443"
    count_children = True

    def argv(self) -> list[str]:
        c = self.config
        data_dir = c.workdir / f"meet443-{c.port}-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "meet443", "serve",
            "--listen", c.host, "--port", str(c.port),
            "--public-ip", c.public_ip or c.host,
            "--relay-ports", f"{c.relay_ports[0]}-{c.relay_ports[1]}",
        ]  # fmt: skip
        if c.auth.secret is not None:
            secret_file = c.workdir / f"meet443-{c.port}.secret"
            secret_file.write_text(c.auth.secret)
            secret_file.chmod(0o600)
            argv += ["--turn-secret-file", str(secret_file)]
        for name, password in c.auth.users:
            argv += ["--turn-user", f"{name}:{password}"]
        argv += [
            "--realm", c.auth.realm,
            "--cert", str(c.pki.cert), "--key", str(c.pki.key),
            "--data-dir", str(data_dir),
        ]  # fmt: skip
        for cidr in c.allow_peers:
            argv += ["--allow-peer", cidr]
        return argv


IMPLEMENTATIONS: dict[str, type[TurnServerUnderTest]] = {"coturn": Coturn, "meet443": Meet443Server}
