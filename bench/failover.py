"""Failover time (issue #16 item 5): kill -9 of a room's home → every page decodes video again.

Runs tests/browser/test_failover.py (the cluster lab, Chromium, a group room and a peer-to-peer
room homed on n1) for ``--trials`` trials, n1 started again between trials, and prints the
per-trial worst time and the median, 95th percentile and maximum over the trials as JSON.
Needs root (namespaces) and the shared lab lock, like the netns tests:

    flock /tmp/meet443-lab.lock .venv/bin/python bench/failover.py --trials 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "trials.jsonl"
        env = {**os.environ, "MEET443_FAILOVER_TRIALS": str(args.trials), "MEET443_FAILOVER_OUT": str(out)}
        test = [sys.executable, "-m", "pytest", "-q", "-m", "netns", "-p", "no:cacheprovider",
                "tests/browser/test_failover.py"]  # fmt: skip
        done = subprocess.run(test, cwd=REPO, env=env, check=False)
        trials = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    worst = sorted(t["worst_s"] for t in trials)
    if not worst:
        print("no trial finished", file=sys.stderr)
        return 1
    summary = {
        "trials": len(worst),
        "median_s": round(statistics.median(worst), 3),
        "p95_s": round(worst[min(len(worst) - 1, int(0.95 * len(worst)))], 3),
        "max_s": worst[-1],
        "per_trial_worst_s": [t["worst_s"] for t in trials],
    }
    print(json.dumps(summary, indent=2))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
