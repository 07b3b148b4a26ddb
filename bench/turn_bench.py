#!/usr/bin/env python3
"""TURN relay benchmark: coturn and meet443 under identical turnutils_uclient loads.

    .venv/bin/python bench/turn_bench.py                 # both servers, 10 s per load (as root)
    .venv/bin/python bench/turn_bench.py --only coturn --duration 30 --repeat 3
    .venv/bin/python bench/turn_bench.py --meet443-env MEET443_ALLOCATION_BANDWIDTH=100000000
    .venv/bin/python bench/turn_bench.py --smoke         # ~10 s: does the bench work? (CI)

Setup. One network namespace with only ``lo`` (nothing can leave the machine). coturn listens on
127.0.0.1:443, meet443 on 127.0.0.3:443, each relaying from its own address; one turnutils_peer
echoes on 127.0.0.2:3480. Both servers use the same test certificate and the same TURN REST secret;
every uclient run gets its own REST username, so per-user allocation quotas never carry over.

Fairness. With 2+ CPUs both servers are pinned (taskset, inherited by threads and children) to
the same core, ``--server-cpu`` (default 1), and the load generator (uclient + peer) to another,
``--load-cpu`` (default 0): each server gets exactly one core and the generator never competes
with it. coturn's relay threads therefore share one core, like meet443's workers. Loads run one
at a time, alternating which server goes first.

Loads (identical for both servers):
  udp-flood-120   UDP, 4 sessions, 120-byte payloads, ``-z 0`` (as fast as uclient can send)
  udp-paced-1000  UDP, 4 sessions x 200/s x 1000 bytes (800 round trips/s offered: ~ 4 video senders)
  tcp-paced-1000  the same over TCP
  tls-paced-1000  the same over TLS (same port)
  udp-senders-1000, tls-senders-1000
                  as udp/tls-paced-1000, but 4 uclient processes of 1 session each: one uclient
                  paces all its sessions from one timer, so their datagrams arrive together and one
                  wake-up of an event loop serves several; separate processes send independently
  udp-senders-8k  8 independent senders x 1000/s x 1000 bytes (8,000 round trips/s offered): a
                  server busy enough that its loops seldom sleep between datagrams
Per-session rates stay under meet443's default 2 MB/s allocation bandwidth and 4 sessions stay
under its 10-allocations-per-user quota (uclient makes a probe allocation per session as well).
The paced rate is that low because uclient's TLS reader assumes one TURN frame per SSL_read (per
TLS record): when a server puts several frames into one record, uclient drops or misreads them and
reports loss that is not there. Against coturn that is 4-46% at 500-1000 messages/s per session,
rare at 200/s. The bench counts the peer's echoes with nftables, independently of uclient, and
marks a TLS loss that comes with a complete echo count with a dagger.
The flood clips at meet443's default per-allocation bandwidth (2 MB/s, bursts of 4 MB); pass
``--meet443-env MEET443_ALLOCATION_BANDWIDTH=100000000`` to measure the relay rather than the limit.

Measurement. uclient prints cumulative sent/received counters once a second. Sessions start at
random 1-6 s after allocating, so the window opens at the first counter line >= 6 s after
"Total connect time" and closes ``--duration`` seconds later, when uclient is stopped. At each
counter line the server's utime+stime is read from /proc/PID/stat (coturn: its process, all
threads; meet443: its process and all descendants), and so is the generator's. Over the window:
  round trips/s     = received echoes / seconds
  loss              = 1 - received / sent (in-flight datagrams at the window edges cancel out)
  CPU-s per 100k rt = server CPU seconds / round trips x 100,000
  core %            = server CPU seconds / wall seconds (100% = its whole core: saturated)
  switches/rt       = the server's context switches (all threads and processes) per round trip:
                      an event loop that sleeps between datagrams switches once per wake-up
With several uclient processes the round trips are the peer's echoes (nftables, read at the same
instant as the CPU), since each process prints its counters on its own second.
A round trip is 2 datagrams into the server and 2 out. If the generator's core % nears 100, the
load was generator-bound: compare CPU per 100k round trips, not round trips/s.

Smoke mode runs every load against every server at once for a ~1 s window: it checks that the
bench works end to end; its figures are not comparable.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lab.netns import Lab, LabError, Namespace, cpu_seconds, unavailable_reason  # noqa: E402
from lab.pki import LabPki, make_test_pki  # noqa: E402
from lab.turnserver import IMPLEMENTATIONS, TurnAuth, TurnServerConfig, TurnServerUnderTest  # noqa: E402
from lab.turnutils import (  # noqa: E402
    UclientCredentials,
    UclientLoad,
    UclientProgress,
    UclientRun,
    run_uclient,
    start_peer,
)

SERVERS = ("coturn", "meet443")
ADDRESSES = {"coturn": "127.0.0.1", "meet443": "127.0.0.3"}
RELAY_PORTS = {"coturn": (49152, 50151), "meet443": (50152, 51151)}
PORT = 443
PEER = ("127.0.0.2", 3480)
SECRET = "bench-rest-secret-4d2b"
REALM = "meet443.bench"
STAGGER_S = 6.05  # uclient starts each session 1-6 s after "Total connect time"
EXTRA_RUN_S = 25.0  # allocation, TLS retries, slack: bounds each uclient run

# Counts the peer's echoes per relay address, independently of what uclient manages to parse.
ECHO_COUNTERS = f"""
table inet turnbench {{
  counter coturn_echo {{ }}
  counter meet443_echo {{ }}
  chain out {{
    type filter hook output priority 0; policy accept;
    ip saddr {PEER[0]} udp sport {PEER[1]} ip daddr {ADDRESSES["coturn"]} counter name coturn_echo
    ip saddr {PEER[0]} udp sport {PEER[1]} ip daddr {ADDRESSES["meet443"]} counter name meet443_echo
  }}
}}
"""


@dataclass(frozen=True)
class BenchLoad:
    key: str
    title: str
    load: UclientLoad
    #: uclient processes, each running ``load``: one process paces all its sessions from one
    #: timer, so their datagrams reach the server together; separate processes send independently.
    processes: int = 1

    @property
    def sessions(self) -> int:
        per_process: int = self.load.clients
        return per_process * self.processes

    @property
    def offered_rt_per_s(self) -> float | None:
        if self.load.interval_ms == 0:
            return None
        return float(self.sessions * 1000 / self.load.interval_ms)


LOADS = (
    BenchLoad("udp-flood-120", "UDP flood, 120 B", UclientLoad("udp", clients=4, size=120, interval_ms=0)),
    BenchLoad("udp-paced-1000", "UDP paced, 1000 B", UclientLoad("udp", clients=4, size=1000, interval_ms=5)),
    BenchLoad("tcp-paced-1000", "TCP paced, 1000 B", UclientLoad("tcp", clients=4, size=1000, interval_ms=5)),
    BenchLoad("tls-paced-1000", "TLS paced, 1000 B", UclientLoad("tls", clients=4, size=1000, interval_ms=5)),
    BenchLoad(
        "udp-senders-1000",
        "UDP, 4 independent senders, 1000 B",
        UclientLoad("udp", clients=1, size=1000, interval_ms=5),
        processes=4,
    ),
    BenchLoad(
        "udp-senders-8k",
        "UDP, 8 independent senders x 1000/s, 1000 B",
        UclientLoad("udp", clients=1, size=1000, interval_ms=1),
        processes=8,
    ),
    BenchLoad(
        "tls-senders-1000",
        "TLS, 4 independent senders, 1000 B",
        UclientLoad("tls", clients=1, size=1000, interval_ms=5),
        processes=4,
    ),
)


@dataclass
class Sample:
    t: float
    sent: int
    received: int
    sessions: int
    server_cpu: float
    generator_cpu: float
    peer_echoes: int  # nftables: datagrams the peer sent back to this server's relay address
    server_switches: int  # context switches of the server's threads and processes


@dataclass
class Measurement:
    server: str
    load: str
    window_s: float = 0.0
    sent: int = 0
    round_trips: int = 0
    rt_per_s: float = math.nan
    loss_pct: float = math.nan
    server_cpu_s: float = math.nan
    cpu_s_per_100k_rt: float = math.nan
    server_core_pct: float = math.nan
    #: Server context switches per round trip: an event loop's wake-ups, which a fixed low load
    #: pays per batch of datagrams rather than per datagram.
    switches_per_rt: float = math.nan
    generator_core_pct: float = math.nan
    peer_echoes: int = 0  # echoes that reached the server's relay in the window (independent of uclient)
    peer_echo_pct: float = math.nan  # peer_echoes / sent: how much got through the client->peer leg
    misframed_reads: int = 0  # uclient's "Wrong integrity in a message received from server" (TLS)
    error: str | None = None
    uclient_tail: str = field(default="", repr=False)


# --------------------------------------------------------------------------------------------------
# One run


class Runner:
    def __init__(
        self, ns: Namespace, servers: dict[str, TurnServerUnderTest], pki: LabPki, args: argparse.Namespace
    ):
        self.ns, self.servers, self.pki, self.args = ns, servers, pki, args
        self.peer_pid = 0
        self._names = itertools.count()

    def run(self, server: str, bench: BenchLoad, window_s: float) -> Measurement:
        srv = self.servers[server]
        m = Measurement(server=server, load=bench.key)
        if not srv.alive():
            m.error = "server not running"
            return m
        load = bench.load
        if load.interval_ms > 0:
            per_session = math.ceil((STAGGER_S + window_s + 3) * 1000 / load.interval_ms)
        else:
            per_session = 10**8  # flood: stopped at the end of the window
        load = UclientLoad(load.transport, load.clients, per_session, load.size, load.interval_ms)
        runs: list[UclientRun] = []
        latest: dict[int, UclientProgress] = {}
        samples: list[Sample] = []
        lock = threading.Lock()
        stop = threading.Event()

        def connected() -> float | None:
            if len(runs) < bench.processes or any(r.connected_at is None for r in runs):
                return None
            last: float = max(r.connected_at for r in runs if r.connected_at is not None)
            return last

        def on_progress(run: UclientRun, now: float, p: UclientProgress) -> bool:
            with lock:
                latest[run.pid] = p
                if len(latest) == bench.processes and not stop.is_set():
                    gen = sum(cpu_seconds(r.pid, children=False) for r in runs if r.pid)
                    gen += cpu_seconds(self.peer_pid, children=False)
                    totals = latest.values()
                    samples.append(
                        Sample(
                            now,
                            sum(q.sent for q in totals),
                            sum(q.received for q in totals),
                            sum(q.sessions for q in totals),
                            srv.cpu_seconds(),
                            gen,
                            self.peer_echoes(server),
                            srv.context_switches(),
                        )
                    )
                    start = window_start(connected(), samples, bench.sessions)
                    if start is not None and now - start.t >= window_s - 0.05:
                        stop.set()
                return stop.is_set()

        def one_process(_: int) -> UclientRun:
            creds = UclientCredentials(user=f"bench{os.getpid()}x{next(self._names)}", secret=SECRET)
            argv = load.argv((srv.config.host, PORT), PEER, creds, ca=self.pki.ca)
            return run_uclient(
                self.ns,
                argv,
                timeout=STAGGER_S + window_s + EXTRA_RUN_S,
                cpus=self.args.load_cpu,
                on_progress=on_progress,
                started=runs.append,
            )

        with ThreadPoolExecutor(max_workers=bench.processes) as pool:
            done = list(pool.map(one_process, range(bench.processes)))
        m.uclient_tail = "\n".join(run.describe() for run in done)
        m.misframed_reads = sum(
            run.output.count("Wrong integrity in a message received from server") for run in done
        )
        start = window_start(connected(), samples, bench.sessions)
        end = samples[-1] if samples else None
        if start is None or end is None or end.t - start.t < 0.5:
            m.error = f"no measurement window (rc={[run.returncode for run in done]}); see uclient_tail"
            return m
        if end.sessions != bench.sessions:
            m.error = f"only {end.sessions}/{bench.sessions} sessions left at the end of the window"
        m.window_s = end.t - start.t
        m.sent = end.sent - start.sent
        m.round_trips = received = end.received - start.received
        m.peer_echoes = end.peer_echoes - start.peer_echoes
        if bench.processes > 1:
            # Each process prints its counters on its own second, so the sum is up to 1 s stale in
            # parts; the peer's echoes are counted (nftables) at the very instant of the CPU reading.
            m.round_trips = m.peer_echoes
        m.rt_per_s = m.round_trips / m.window_s
        m.loss_pct = 100 * max(0, m.sent - received) / m.sent if m.sent else math.nan
        m.server_cpu_s = end.server_cpu - start.server_cpu
        m.cpu_s_per_100k_rt = m.server_cpu_s / m.round_trips * 1e5 if m.round_trips else math.nan
        m.server_core_pct = 100 * m.server_cpu_s / m.window_s
        if m.round_trips:
            m.switches_per_rt = (end.server_switches - start.server_switches) / m.round_trips
        m.generator_core_pct = 100 * (end.generator_cpu - start.generator_cpu) / m.window_s
        if m.sent and not self.args.smoke:  # smoke: concurrent loads share the per-server counter
            m.peer_echo_pct = 100 * m.peer_echoes / m.sent
        return m

    def peer_echoes(self, server: str) -> int:
        out = self.ns.run(["nft", "-j", "list", "counter", "inet", "turnbench", f"{server}_echo"]).stdout
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise LabError(f"no nft counter for {server}: {out}")


def window_start(connected_at: float | None, samples: Sequence[Sample], sessions: int) -> Sample | None:
    """The first counter line after every session has started sending."""
    if connected_at is None:
        return None
    return next((s for s in samples if s.t >= connected_at + STAGGER_S and s.sessions == sessions), None)


# --------------------------------------------------------------------------------------------------
# The lab


@contextlib.contextmanager
def bench_lab(args: argparse.Namespace, workdir: Path) -> Iterator[Runner]:
    with Lab(workdir) as lab:
        ns = lab.namespace("bench")
        pki = make_test_pki(workdir / "pki", ips=tuple(ADDRESSES.values()))
        servers: dict[str, TurnServerUnderTest] = {}
        for name in args.only or SERVERS:
            config = TurnServerConfig(
                host=ADDRESSES[name],
                port=PORT,
                relay_ports=RELAY_PORTS[name],
                # coturn 4.6 cannot take both; meet443 gets the same single secret.
                auth=TurnAuth(realm=REALM, secret=SECRET),
                pki=pki,
                workdir=workdir / name,
                allow_peers=("127.0.0.0/8",),
                relay_threads=args.coturn_relay_threads,
            )
            server = IMPLEMENTATIONS[name](config)
            extra_env = None
            if name == "meet443":
                extra_env = {"MEET443_WORKERS": str(args.workers)}
                extra_env.update(kv.split("=", 1) for kv in args.meet443_env)
            try:
                server.start(ns, cpus=args.server_cpu, extra_env=extra_env)
            except LabError as exc:
                print(f"!! {name} did not start: {exc}", file=sys.stderr)
            servers[name] = server
        ns.load_nft(ECHO_COUNTERS)
        runner = Runner(ns, servers, pki, args)
        runner.peer_pid = start_peer(ns, *PEER, cpus=args.load_cpu).pid
        yield runner


def run_all(runner: Runner, args: argparse.Namespace) -> list[Measurement]:
    names = list(runner.servers)
    results: list[Measurement] = []
    if args.smoke:
        jobs = [(s, b) for b in LOADS for s in names]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            results = list(pool.map(lambda job: runner.run(job[0], job[1], args.duration), jobs))
        return results
    loads = [load for load in LOADS if not args.load or load.key in args.load]
    for rep in range(args.repeat):
        for i, bench in enumerate(loads):
            order = names if (rep + i) % 2 == 0 else names[::-1]
            for server in order:
                m = runner.run(server, bench, args.duration)
                print(
                    f"  [{rep + 1}/{args.repeat}] {bench.key:15} {server:8} {fmt_measurement(m)}", flush=True
                )
                results.append(m)
    return results


# --------------------------------------------------------------------------------------------------
# Reporting


def fmt_measurement(m: Measurement) -> str:
    if m.error and math.isnan(m.rt_per_s):
        return f"ERROR {m.error}"
    text = (
        f"{m.rt_per_s:9.0f} rt/s  loss {m.loss_pct:5.2f}%  {m.cpu_s_per_100k_rt:6.2f} CPU-s/100k rt"
        f"  server core {m.server_core_pct:3.0f}%  generator core {m.generator_core_pct:3.0f}%"
        f"  {m.switches_per_rt:4.2f} switches/rt"
    )
    return text + (f"  ({m.error})" if m.error else "")


def median(values: Sequence[float]) -> float:
    good = [v for v in values if not math.isnan(v)]
    return statistics.median(good) if good else math.nan


def summarize(results: Sequence[Measurement]) -> dict[str, dict[str, dict[str, float]]]:
    """Per load, per server: the median of each figure over the repeats."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for bench in LOADS:
        for server in SERVERS:
            ms = [m for m in results if m.load == bench.key and m.server == server]
            if ms:
                table.setdefault(bench.key, {})[server] = {
                    k: median([getattr(m, k) for m in ms])
                    for k in (
                        "rt_per_s",
                        "loss_pct",
                        "cpu_s_per_100k_rt",
                        "server_core_pct",
                        "switches_per_rt",
                        "generator_core_pct",
                        "peer_echo_pct",
                        "misframed_reads",
                    )
                }
    return table


def num(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def markdown(summary: dict[str, dict[str, dict[str, float]]], servers: Sequence[str]) -> str:
    head = ["load", "offered rt/s"]
    for s in servers:
        head += [f"{s} rt/s", f"{s} loss %", f"{s} CPU-s/100k rt", f"{s} core %"]
    both = all(s in servers for s in SERVERS)
    if both:
        head += ["rt/s meet443/coturn", "CPU/100k rt meet443/coturn"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: list[str] = []
    for bench in LOADS:
        per = summary.get(bench.key, {})
        offered = bench.offered_rt_per_s
        cells = [bench.title, "flood" if offered is None else f"{offered:.0f}"]
        for s in servers:
            f = per.get(s, {})
            mark = ""
            tls_client_loss = f.get("loss_pct", 0) > 0.1 and f.get("peer_echo_pct", 0) > 99.9
            if bench.load.transport == "tls" and tls_client_loss:
                mark = " †"
                notes.append(
                    f"† {s}, {bench.title}: the peer echoed {num(f['peer_echo_pct'], '.1f')}% of the sent"
                    " messages to the relay, so this loss is on the TLS leg to uclient, whose reader assumes"
                    " one TURN frame per TLS record and drops or misreads the rest of a coalesced record"
                    f" ({f.get('misframed_reads', 0):.0f} 'Wrong integrity' misreads)."
                )
            cells += [
                num(f.get("rt_per_s", math.nan), ".0f"),
                num(f.get("loss_pct", math.nan), ".2f") + mark,
                num(f.get("cpu_s_per_100k_rt", math.nan), ".2f"),
                num(f.get("server_core_pct", math.nan), ".0f"),
            ]
        if both:
            c, m = per.get("coturn", {}), per.get("meet443", {})
            cells += [
                num(m.get("rt_per_s", math.nan) / c.get("rt_per_s", math.nan), ".2f"),
                num(m.get("cpu_s_per_100k_rt", math.nan) / c.get("cpu_s_per_100k_rt", math.nan), ".2f"),
            ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([*rows, *(["", *notes] if notes else [])])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    def out(*argv: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        return "?"

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "coturn": out("turnserver", "--version"),
        "meet443_commit": out("git", "-C", str(REPO), "rev-parse", "--short", "HEAD"),
        "server_cpu": args.server_cpu,
        "load_cpu": args.load_cpu,
        "duration_s": args.duration,
        "repeat": args.repeat,
        "smoke": args.smoke,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "meet443_env": args.meet443_env,
    }


# --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per load (default 10)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per load and server; medians are reported")
    ap.add_argument(
        "--smoke", action="store_true", help="~10-20 s plumbing check for CI (1 s windows, concurrent)"
    )
    ap.add_argument(
        "--only", choices=SERVERS, action="append", help="benchmark only this server (repeatable)"
    )
    ap.add_argument("--server-cpu", default=None, help="core(s) for both servers (default 1 if 2+ CPUs)")
    ap.add_argument(
        "--load-cpu", default=None, help="core(s) for uclient and the peer (default 0 if 2+ CPUs)"
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin anything")
    ap.add_argument(
        "--meet443-env",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="extra environment for meet443, e.g. MEET443_ALLOCATION_BANDWIDTH=100000000 (repeatable)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="meet443's media worker processes (default 1: one process, the one-core comparison)",
    )
    ap.add_argument(
        "--coturn-relay-threads",
        type=int,
        help="coturn's relay threads (default: its own, one per CPU): to compare 1 and 2 workers "
        "with coturn split the same way",
    )
    ap.add_argument(
        "--load", choices=[b.key for b in LOADS], action="append", help="only this load (repeatable)"
    )
    ap.add_argument("--json", type=Path, help="write results here (default bench/out/turn_bench-<time>.json)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.duration, args.repeat = 1.0, 1
    if not (0.5 <= args.duration <= 600) or not (1 <= args.repeat <= 20):
        ap.error("--duration must be 0.5-600 s and --repeat 1-20")
    if args.no_pin:
        args.server_cpu = args.load_cpu = None
    elif (os.cpu_count() or 1) >= 2:
        args.server_cpu = args.server_cpu or "1"
        args.load_cpu = args.load_cpu or "0"
    return args


def cpu_list(spec: str) -> set[int]:
    """taskset's list syntax: "0", "0-2", "0,3"."""
    cpus: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (say, a CI timeout) unwinds like Ctrl-C: the lab stops its processes and namespaces."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    if args.load_cpu is not None:
        # This process samples /proc and nft once a second: keep it off the servers' core too.
        os.sched_setaffinity(0, cpu_list(args.load_cpu))
    t0 = time.monotonic()
    meta = environment(args)
    with tempfile.TemporaryDirectory(prefix="turn-bench-") as tmp, bench_lab(args, Path(tmp)) as runner:
        servers = [s for s in runner.servers if runner.servers[s].alive()]
        started = ", ".join(servers) or "no server started"
        pins = f"server cpu {args.server_cpu}, load cpu {args.load_cpu}"
        print(f"# TURN benchmark: {started}; {pins}; {args.duration:g} s per load", flush=True)
        results = run_all(runner, args)
        failed = {
            name: srv.proc.tail(15) if srv.proc else "(never spawned)"
            for name, srv in runner.servers.items()
            if not srv.alive()
        }
    summary = summarize(results)
    shown = [s for s in SERVERS if s in (args.only or SERVERS)]
    table = markdown(summary, shown)
    print()
    print(table)
    if args.smoke:
        print("\n(smoke: all loads ran concurrently; the figures are not comparable)")
    for m in results:
        if m.error:
            print(f"\n!! {m.server} {m.load}: {m.error}\n{m.uclient_tail}", file=sys.stderr)
    for name, tail in failed.items():
        print(f"\n!! {name} is not running; its log ends:\n{tail}", file=sys.stderr)
    out = args.json or REPO / "bench" / "out" / f"turn_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": {**meta, "elapsed_s": round(time.monotonic() - t0, 1)},
        "loads": [
            {
                "key": b.key,
                "title": b.title,
                "transport": b.load.transport,
                "sessions": b.sessions,
                "payload_bytes": b.load.size,
                "interval_ms": b.load.interval_ms,
                "offered_rt_per_s": b.offered_rt_per_s,
            }
            for b in LOADS
        ],
        "summary": summary,
        "runs": [{k: v for k, v in asdict(m).items() if k != "uclient_tail"} for m in results],
        "markdown": table,
    }
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nJSON: {out}  ({time.monotonic() - t0:.0f} s)")
    ok = all(m.error is None for m in results) and not failed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
