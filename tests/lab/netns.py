"""Network namespaces for end-to-end tests and benchmarks.

A `Lab` owns namespaces (created with ``ip netns add``), the veth links between them and every
process started inside them. Leaving the `with Lab(...)` block stops those processes — SIGTERM,
five seconds' grace, then SIGKILL, each by its own PID — and deletes those namespaces. Nothing
outside the lab is ever signalled or deleted.

Addresses: a namespace starts with only ``lo`` (up), so a process inside it can reach nothing but
itself. `Lab.veth` adds a link between two lab namespaces; its addresses must lie in
10.200.0.0/16, the range reserved for test hosts, so a mistake cannot shadow a real network.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

Proto = Literal["tcp", "udp"]

LAB_NETWORK = ipaddress.ip_network("10.200.0.0/16")
STOP_GRACE_S = 5.0
REQUIRED_TOOLS = ("ip", "ss", "nft", "tc")


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its output."""


def _run(
    args: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float = 30.0,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    argv = [os.fspath(a) for a in args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input_text)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and done.returncode != 0:
        raise LabError(f"exit {done.returncode}: {' '.join(argv)}\n{done.stdout}{done.stderr}")
    return done


# --------------------------------------------------------------------------------------------------
# Can this machine run the lab at all?

_unavailable: list[str | None] = []


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here (not root, a tool missing, netns refused), or None.

    The answer is cached; the probe creates and deletes one namespace of its own.
    """
    if _unavailable:
        return _unavailable[0]
    reason: str | None = None
    if os.geteuid() != 0:
        reason = "network-namespace tests need root (ip netns add)"
    else:
        missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
        if missing:
            reason = (
                f"missing tools for the netns lab: {', '.join(missing)} (apt-get install iproute2 nftables)"
            )
        else:
            probe = f"l{os.getpid() % 100000}-probe"
            made = _run(["ip", "netns", "add", probe], check=False)
            if made.returncode != 0:
                reason = f"ip netns add failed: {made.stderr.strip()}"
            else:
                _run(["ip", "netns", "del", probe], check=False)
    _unavailable.append(reason)
    return reason


# --------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Proc:
    """A process the lab started: its Popen, its combined stdout/stderr log, its name."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"{self.name} (pid {self.pid}, {state}); last log lines:\n{self.tail()}"


class ProcessGroup:
    """The processes one lab started, stopped in reverse start order, by PID only."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        name: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        log = log_path.open("wb")
        try:
            popen = subprocess.Popen(
                [os.fspath(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
            )
        except BaseException:
            log.close()
            raise
        proc = Proc(name=name, popen=popen, log_path=log_path, _log=log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM, wait `grace_s`, then SIGKILL — this one process only."""
        if proc.alive():
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(grace_s)
        proc._log.close()

    def stop_all(self, grace_s: float = STOP_GRACE_S) -> None:
        procs = list(reversed(self.procs))
        for proc in procs:
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            try:
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(grace_s)
            proc._log.close()
        self.procs.clear()


# --------------------------------------------------------------------------------------------------
# Namespaces


class Namespace:
    """One network namespace: ``lo`` up, nothing else until a veth is added."""

    def __init__(self, name: str, procs: ProcessGroup, logdir: Path) -> None:
        self.name = name
        self._procs = procs
        self._logdir = logdir
        self.deleted = False

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    @classmethod
    def create(cls, name: str, procs: ProcessGroup, logdir: Path) -> Namespace:
        """``ip netns add`` + ``lo`` up. Refuses a name that exists: it is not ours to reuse."""
        if name in list_namespaces():
            raise LabError(f"network namespace {name!r} exists already; not touching it")
        _run(["ip", "netns", "add", name])
        ns = cls(name, procs, logdir)
        ns.run(["ip", "link", "set", "lo", "up"])
        return ns

    def exec_argv(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *(os.fspath(a) for a in argv)]

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        check: bool = True,
        timeout: float = 30.0,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a short command inside the namespace and return its output."""
        return _run(self.exec_argv(argv), check=check, timeout=timeout, input_text=input_text)

    def spawn(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        cpus: str | None = None,
    ) -> Proc:
        """Start a long-running process inside the namespace; the lab stops it at teardown.

        `cpus` ("1", "0-1") pins it with taskset. ``ip netns exec`` and ``taskset`` both exec, so
        the returned PID is the program's own — the one whose /proc/PID/stat counts its CPU.
        """
        inner = [*(["taskset", "-c", cpus] if cpus is not None else []), *argv]
        log_path = self._logdir / f"{self.name}.{name}.log"
        return self._procs.start(self.exec_argv(inner), name=name, log_path=log_path, env=env)

    def load_nft(self, ruleset: str) -> None:
        """Load an nftables ruleset (``nft -f -``) into this namespace."""
        self.run(["nft", "-f", "-"], input_text=ruleset)

    def tbf(self, dev: str, rate: str, burst: str = "32kbit", latency: str = "50ms") -> None:
        """Shape `dev`'s egress with a token bucket, e.g. ``tbf("v0", "2mbit")``."""
        shape = ["rate", rate, "burst", burst, "latency", latency]
        self.run(["tc", "qdisc", "replace", "dev", dev, "root", "tbf", *shape])

    def delete(self) -> None:
        if not self.deleted:
            _run(["ip", "netns", "del", self.name], check=False)
            self.deleted = True


def list_namespaces() -> set[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@dataclass(frozen=True)
class VethPair:
    a: Namespace
    a_dev: str
    a_addr: str
    b: Namespace
    b_dev: str
    b_addr: str

    @property
    def a_ip(self) -> str:
        return self.a_addr.split("/")[0]

    @property
    def b_ip(self) -> str:
        return self.b_addr.split("/")[0]


def _check_lab_address(cidr: str) -> None:
    iface = ipaddress.ip_interface(cidr)
    if iface.ip not in LAB_NETWORK:
        raise ValueError(f"{cidr}: lab links use addresses in {LAB_NETWORK} only")


# --------------------------------------------------------------------------------------------------
# The lab


class Lab:
    """Namespaces + links + processes with one teardown.

    >>> with Lab(Path("/tmp/x")) as lab:           # doctest: +SKIP
    ...     srv = lab.namespace("srv")
    ...     peer = srv.spawn(["turnutils_peer", "-L", "127.0.0.1"], name="peer")
    """

    def __init__(self, workdir: Path, prefix: str | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Short: the prefix also names veth devices, which must fit in 15 bytes.
        self.prefix = prefix or f"l{os.getpid() % 100000}-"
        self.procs = ProcessGroup()
        self.namespaces: list[Namespace] = []
        self._links = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def namespace(self, suffix: str) -> Namespace:
        ns = Namespace.create(f"{self.prefix}{suffix}", self.procs, self.workdir)
        self.namespaces.append(ns)
        return ns

    def veth(self, a: Namespace, a_addr: str, b: Namespace, b_addr: str) -> VethPair:
        """A veth link between two lab namespaces, both ends up, with the given CIDR addresses."""
        _check_lab_address(a_addr)
        _check_lab_address(b_addr)
        self._links += 1
        a_dev, b_dev = f"{self.prefix}v{self._links}a", f"{self.prefix}v{self._links}b"
        if len(a_dev) > 15:
            raise ValueError(f"veth name {a_dev!r} is longer than IFNAMSIZ-1; use a shorter prefix")
        # Both ends are created directly in their namespaces: the host's namespace never sees them.
        peer = ["peer", "name", b_dev, "netns", b.name]
        _run(["ip", "link", "add", a_dev, "netns", a.name, "type", "veth", *peer])
        for ns, dev, addr in ((a, a_dev, a_addr), (b, b_dev, b_addr)):
            ns.run(["ip", "addr", "add", addr, "dev", dev])
            ns.run(["ip", "link", "set", dev, "up"])
        return VethPair(a, a_dev, a_addr, b, b_dev, b_addr)

    def close(self) -> None:
        try:
            self.procs.stop_all()
        finally:
            for ns in reversed(self.namespaces):
                ns.delete()
            self.namespaces.clear()


# --------------------------------------------------------------------------------------------------
# Routing and names inside namespaces


def ipv4_only(*namespaces: Namespace) -> None:
    """Turn IPv6 off before links come up. Otherwise each veth gains an IPv6 link-local address a
    second or two later (after duplicate address detection); Chromium sees that as a network
    change and fails whatever it is loading with ERR_NETWORK_CHANGED."""
    for ns in namespaces:
        ns.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])


def enable_forwarding(ns: Namespace) -> None:
    ns.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])


def default_route(ns: Namespace, via: str) -> None:
    ns.run(["ip", "route", "replace", "default", "via", via])


@contextlib.contextmanager
def hosts_file(ns: Namespace, names: Mapping[str, str]) -> Iterator[None]:
    """``/etc/netns/<ns>/hosts`` (name -> address), which ``ip netns exec`` mounts over /etc/hosts
    for every process started in `ns` afterwards, and a resolv.conf naming 127.0.0.1, where nothing
    answers unless `dns_server` runs: a refused query fails at once, while Chromium waits 13 s on
    each lookup sent to an unreachable server. Removed again afterwards."""
    directory = Path("/etc/netns") / ns.name
    directory.mkdir(parents=True, exist_ok=False)
    try:
        lines = ["127.0.0.1 localhost", *(f"{address} {name}" for name, address in names.items())]
        (directory / "hosts").write_text("\n".join(lines) + "\n")
        (directory / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        yield
    finally:
        shutil.rmtree(directory)


def dns_server(ns: Namespace, names: Mapping[str, str]) -> Proc:
    """tests/lab/dns_server.py on the address of `hosts_file`'s resolv.conf, answering for `names`
    (name -> IPv4 address): Chromium resolves the host of a ``turn:`` URI over UDP through DNS
    only, never through the hosts file. Stopped with the lab's other processes."""
    script = Path(__file__).with_name("dns_server.py")
    argv: list[str | os.PathLike[str]] = [sys.executable, script]
    argv += [f"{name}={address}" for name, address in names.items()]
    proc = ns.spawn(argv, name="dns")
    wait_listening(ns, "127.0.0.1", 53, "udp", proc=proc)
    return proc


# --------------------------------------------------------------------------------------------------
# Waiting for servers


def _local_endpoints(ss_output: str) -> Iterator[tuple[str, int]]:
    for line in ss_output.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        local = cols[3]  # State Recv-Q Send-Q Local:Port Peer:Port ...
        host, _, port = local.rpartition(":")
        host = host.strip("[]").split("%")[0]
        with contextlib.suppress(ValueError):
            yield host, int(port)


def is_listening(ns: Namespace, host: str, port: int, proto: Proto) -> bool:
    out = ns.run(["ss", "-Hln", "-t" if proto == "tcp" else "-u"], check=False).stdout
    wildcard = {"0.0.0.0", "*"} if ":" not in host else {"::", "*"}
    return any(p == port and (h == host or h in wildcard) for h, p in _local_endpoints(out))


def wait_listening(
    ns: Namespace,
    host: str,
    port: int,
    proto: Proto,
    timeout: float = 15.0,
    proc: Proc | None = None,
) -> None:
    """Poll ``ss`` inside `ns` until something listens on host:port/proto.

    Fails early, with the log tail, if `proc` exits meanwhile.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(ns, host, port, proto):
            return
        if proc is not None and not proc.alive():
            raise LabError(f"{host}:{port}/{proto} never listened: {proc.describe()}")
        time.sleep(0.1)
    detail = f"\n{proc.describe()}" if proc is not None else ""
    raise LabError(f"{ns.name}: nothing listening on {host}:{port}/{proto} after {timeout}s{detail}")


# --------------------------------------------------------------------------------------------------
# CPU accounting


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _process_tree(pid: int, children: bool) -> Iterator[int]:
    """`pid`, then (if asked) its live descendants, each once."""
    todo, seen = [pid], set[int]()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        yield p
        if children:
            todo += _children(p)


def context_switches(pid: int, *, children: bool = True) -> int:
    """Voluntary and involuntary context switches of every thread of `pid` (and, if asked, of its
    live descendants): how often the process went to sleep or was switched out. An event loop
    that sleeps between datagrams switches once per wake-up."""
    total = 0
    for p in _process_tree(pid, children):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    for line in (task / "status").read_text().splitlines():
                        if "ctxt_switches:" in line:
                            total += int(line.split()[1])
    return total


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """utime+stime of `pid` (all its threads), plus, if asked, of its live descendants and of the
    descendants it has already reaped (cutime+cstime)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in _process_tree(pid, children):
        try:
            f = _stat_fields(p)
        except (FileNotFoundError, ProcessLookupError):
            continue
        # After the comm field: state=0, ..., utime=11, stime=12, cutime=13, cstime=14.
        total += (int(f[11]) + int(f[12])) / tick
        if children:
            total += (int(f[13]) + int(f[14])) / tick
    return total
