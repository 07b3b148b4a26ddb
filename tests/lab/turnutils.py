"""coturn's load tools as an independent TURN client: ``turnutils_uclient`` and ``turnutils_peer``.

``turnutils_peer`` echoes every UDP datagram back to its sender. ``turnutils_uclient`` allocates a
relay per client session, binds a channel (or, with ``-s``, uses Send/Data indications) to the peer,
sends ``-n`` messages of ``-l`` bytes every ``-z`` ms and counts the echoes: one echo is one round
trip through the relay, i.e. two datagrams into the server and two out.

Behaviour that matters for the numbers (coturn 4.6.1, src/apps/uclient/uclient.c):

* Each session starts sending at a random moment 1-6 s after the allocations are done.
* A 1 ms timer sends up to 50 overdue messages per session per tick; ``-z 0`` therefore floods.
* Once a session has sent all its messages it waits until every message is back, or 10 s.
* Without ``-c`` every client also makes an "RTCP" allocation that sends too; we always pass ``-c``.
* ``-W secret`` derives REST credentials (username ``<now+1d>:<-u name>``, HMAC-SHA1 password).
* ``-S`` with ``-t`` is TLS. uclient picks TLS 1.0/1.1/1.2 contexts at random and retries after a
  ``tlsv1 alert internal error``: those lines are noise, not failures.

Output, one line a second and a summary (the leading number is uclient's own seconds counter)::

    3: : start_mclient: msz=4, tot_send_msgs=12500, tot_recv_msgs=12450, tot_send_bytes ~ ..., ...
    7: : start_mclient: tot_send_msgs=80000, tot_recv_msgs=80000
    7: : Total transmit time is 7
    7: : Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
    7: : Average round trip delay 0.010325 ms; min = 0 ms, max = 4 ms
    7: : Average jitter 0.080000 ms; min = 0 ms, max = 8 ms
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .netns import Namespace, Proc, wait_listening

Transport = Literal["udp", "tcp", "tls"]
TRANSPORTS: tuple[Transport, ...] = ("udp", "tcp", "tls")

_PROGRESS = re.compile(r"^(\d+): : start_mclient: msz=(\d+), tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
_FINAL = re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
_TRANSMIT = re.compile(r"Total transmit time is (\d+)")
_NUM = r"(-?nan|-?[\d.]+)"
_LOST = re.compile(rf"Total lost packets (\d+) \({_NUM}%\), total send dropped (\d+) \({_NUM}%\)")
_RTT = re.compile(rf"Average round trip delay {_NUM} ms; min = (\d+) ms, max = (\d+) ms")
_JITTER = re.compile(rf"Average jitter {_NUM} ms")


@dataclass(frozen=True)
class UclientCredentials:
    """``-u user -w password``, or ``-W secret`` (REST API; `user` becomes the name after the colon)."""

    user: str
    password: str | None = None
    secret: str | None = None

    def argv(self) -> list[str]:
        if self.secret is not None:
            return ["-W", self.secret, "-u", self.user]
        if self.password is None:
            raise ValueError("need a password or a REST secret")
        return ["-u", self.user, "-w", self.password]


@dataclass(frozen=True)
class UclientLoad:
    transport: Transport
    clients: int = 4  # -m; with -c each is one allocation
    messages: int = 50  # -n, per client
    size: int = 120  # -l, payload bytes
    interval_ms: int = 20  # -z; 0 floods (up to 50 messages per client per 1 ms tick)
    send_indications: bool = False  # -s: Send/Data indications instead of ChannelData

    @property
    def total_messages(self) -> int:
        return self.clients * self.messages

    def argv(
        self,
        server: tuple[str, int],
        peer: tuple[str, int],
        creds: UclientCredentials,
        ca: Path | None = None,
    ) -> list[str]:
        argv = ["turnutils_uclient", "-c", "-p", str(server[1]), "-e", peer[0], "-r", str(peer[1])]
        if self.transport == "tcp":
            argv.append("-t")
        elif self.transport == "tls":
            argv += ["-t", "-S", *(["-E", str(ca)] if ca is not None else [])]
        if self.send_indications:
            argv.append("-s")
        argv += ["-m", str(self.clients), "-n", str(self.messages), "-l", str(self.size)]
        argv += ["-z", str(self.interval_ms), *creds.argv(), server[0]]
        return argv


@dataclass(frozen=True)
class UclientProgress:
    second: int  # uclient's own seconds counter
    sessions: int  # "msz": sessions still running
    sent: int
    received: int


def _float(text: str) -> float:
    return float("nan") if "nan" in text else float(text)


@dataclass(frozen=True)
class UclientReport:
    sent: int
    received: int
    lost: int
    lost_pct: float
    send_dropped: int
    transmit_time_s: int
    avg_rtt_ms: float
    max_rtt_ms: int
    avg_jitter_ms: float
    progress: tuple[UclientProgress, ...] = ()
    errors: tuple[str, ...] = ()  # lines with "ERROR" (a failed allocation, a wrong-length echo, ...)

    @classmethod
    def parse(cls, text: str) -> UclientReport:
        """Parse uclient's output; ValueError if the summary is missing (it was killed, or failed)."""
        progress = tuple(
            UclientProgress(*(int(g) for g in m.groups()))
            for m in (_PROGRESS.search(line) for line in text.splitlines())
            if m
        )
        errors = tuple(line for line in text.splitlines() if "ERROR" in line)
        final, transmit, lost = _FINAL.search(text), _TRANSMIT.search(text), _LOST.search(text)
        rtt, jitter = _RTT.search(text), _JITTER.search(text)
        if not (final and transmit and lost and rtt and jitter):
            raise ValueError("no summary in turnutils_uclient output:\n" + "\n".join(text.splitlines()[-15:]))
        return cls(
            sent=int(final[1]),
            received=int(final[2]),
            lost=int(lost[1]),
            lost_pct=_float(lost[2]),
            send_dropped=int(lost[3]),
            transmit_time_s=int(transmit[1]),
            avg_rtt_ms=_float(rtt[1]),
            max_rtt_ms=int(rtt[3]),
            avg_jitter_ms=_float(jitter[1]),
            progress=progress,
            errors=errors,
        )


@dataclass
class UclientRun:
    argv: list[str]
    pid: int = 0
    returncode: int | None = None  # None: stopped (killed) before it exited by itself
    output: str = ""
    elapsed_s: float = 0.0
    started_at: float = 0.0  # time.monotonic() at launch
    connected_at: float | None = None  # when "Total connect time" was read: allocations done
    # (monotonic time the line was read, the progress line): for rates and CPU sampling
    samples: list[tuple[float, UclientProgress]] = field(default_factory=list)

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def report(self) -> UclientReport:
        return UclientReport.parse(self.output)

    def describe(self) -> str:
        noise = ("tlsv1 alert", "tls_connect: cannot connect", "unexpected eof while reading")
        lines = [line for line in self.output.splitlines() if not any(n in line for n in noise)]
        tail = "\n".join(lines[-25:])
        misreads = self.output.count("Wrong integrity in a message received from server")
        note = f"  ({misreads} x 'Wrong integrity in a message received from server')\n" if misreads else ""
        return f"{' '.join(self.argv)}\n  -> rc={self.returncode} after {self.elapsed_s:.1f}s\n{note}{tail}"


# Called for each progress line as it is read; returning True stops (kills) uclient there.
ProgressHook = Callable[[UclientRun, float, UclientProgress], bool]


def run_uclient(
    ns: Namespace,
    argv: list[str],
    *,
    timeout: float,
    cpus: str | None = None,
    on_progress: ProgressHook | None = None,
    started: Callable[[UclientRun], None] | None = None,
) -> UclientRun:
    """Run uclient in `ns`, reading its output as it comes; kill it at `timeout` seconds or when
    `on_progress` asks to stop. `started` is told of the run once uclient has its PID."""
    inner = [*(["taskset", "-c", cpus] if cpus is not None else []), *argv]
    run = UclientRun(argv=argv, started_at=time.monotonic())
    deadline = run.started_at + timeout
    # ip netns exec and taskset exec: the PID is uclient's own.
    proc = subprocess.Popen(
        ns.exec_argv(inner), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    run.pid = proc.pid
    if started is not None:
        started(run)
    assert proc.stdout is not None
    chunks: list[bytes] = []
    pending = b""
    try:
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            done = False
            while not done and (left := deadline - time.monotonic()) > 0:
                if not sel.select(min(left, 0.5)):
                    continue
                data = os.read(fd, 65536)  # readable: does not block
                if not data:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        run.returncode = proc.wait(max(0.1, deadline - time.monotonic()))
                    break
                now = time.monotonic()
                chunks.append(data)
                *lines, pending = (pending + data).split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    if run.connected_at is None and "Total connect time" in line:
                        run.connected_at = now
                    m = _PROGRESS.search(line)
                    if m:
                        sample = UclientProgress(*(int(g) for g in m.groups()))
                        run.samples.append((now, sample))
                        if on_progress is not None and on_progress(run, now, sample):
                            done = True
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()
    run.output = b"".join(chunks).decode(errors="replace")
    run.elapsed_s = time.monotonic() - run.started_at
    return run


def start_peer(ns: Namespace, host: str, port: int, *, cpus: str | None = None) -> Proc:
    """``turnutils_peer``: a UDP echo server, the far end of every relayed round trip."""
    proc = ns.spawn(["turnutils_peer", "-L", host, "-p", str(port)], name=f"peer-{port}", cpus=cpus)
    wait_listening(ns, host, port, "udp", timeout=10, proc=proc)
    return proc
