#!/usr/bin/env python3
"""Idle memory of ``meet443 serve`` by process: the control process and each media worker.

    .venv/bin/python bench/worker_memory.py              # --workers 1 and 2
    .venv/bin/python bench/worker_memory.py --workers 1,4

Starts the server on 127.0.0.1 (random ports, a temporary data dir), waits ``--settle`` seconds
after the workers are ready, and prints each process's VmRSS and PSS (/proc/PID/smaps_rollup: the
shared pages of the interpreter and libraries divided among the processes that map them, so the
PSS of all processes adds up to what they cost together). Nothing connects: this is the floor.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def kib(pid: int, path: str, field: str) -> int:
    for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port: int = udp.getsockname()[1]
        return port


def measure(workers: int, settle: float, workdir: Path) -> None:
    log = workdir / f"w{workers}.log"
    argv = [
        sys.executable, "-m", "meet443", "serve", "--listen", "127.0.0.1", "--port", str(free_port()),
        "--public-ip", "127.0.0.1", "--relay-ports", "42000-42999", "--other-udp-port", "0",
        "--data-dir", str(workdir / f"data{workers}"), "--turn-secret", "bench", "--workers", str(workers),
    ]  # fmt: skip
    with log.open("wb") as out:
        server = subprocess.Popen(argv, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while "listening on tcp" not in log.read_text():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.1)
        time.sleep(settle)
        pids = [("control" if workers > 1 else "single process", server.pid)]
        pids += [
            (f"worker {k}", int(p))
            for k, p in re.findall(r"worker (\d+) ready \(pid (\d+)\)", log.read_text())
        ]
        total = 0
        for name, pid in pids:
            rss, pss = kib(pid, "status", "VmRSS:"), kib(pid, "smaps_rollup", "Pss:")
            total += pss
            print(f"--workers {workers}  {name:15}  RSS {rss / 1024:6.1f} MiB  PSS {pss / 1024:6.1f} MiB")
        print(f"--workers {workers}  {'all':15}  {'':16}  PSS {total / 1024:6.1f} MiB")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(15)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to wait after start (default 3)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(n) for n in args.workers.split(",")):
            measure(count, args.settle, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
