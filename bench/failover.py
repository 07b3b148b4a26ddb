"""Failover time (issue #16 item 5): kill -9 of a room's home → every page decodes video again.

Runs tests/browser/test_failover.py (the cluster lab, Chromium, a group room and a peer-to-peer
room homed on n1, its media through n1's TURN) for ``--trials`` trials, n1 started again between
trials, and prints as JSON, per room kind and for the worst page of each trial, the median, 90th
percentile and maximum over the trials, and the trials themselves.
Needs root (namespaces) and the shared lab lock, like the netns tests:

    flock /tmp/meet443-lab.lock .venv/bin/python bench/failover.py --trials 20
"""

from __future__ import annotations

import argparse
import json
import math
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
    if not trials:
        print("no trial finished", file=sys.stderr)
        return 1
    summary: dict[str, object] = {"trials": len(trials), "finished": done.returncode == 0}
    for kind in ("group_s", "p2p_s", "worst_s"):
        times = sorted(t[kind] for t in trials)
        summary[kind] = {
            "median": round(statistics.median(times), 3),
            # Nearest rank (the 18th of 20).
            "p90": times[max(0, math.ceil(0.9 * len(times)) - 1)],
            "max": times[-1],
        }
    summary["per_trial"] = [{k: t[k] for k in ("group_s", "p2p_s")} for t in trials]
    print(json.dumps(summary, indent=2))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
