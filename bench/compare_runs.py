#!/usr/bin/env python3
"""Median and spread of repeated bench runs, by label: CPU per packet of turn_bench and sfu_bench.

    .venv/bin/python bench/compare_runs.py w1=bench/out/mw-turn-w1-r*.json w2=bench/out/mw-turn-w2-r*.json

Each argument is ``LABEL=GLOB``; the files are the ``--json`` outputs of one bench, one run each.
For turn_bench it reports CPU-seconds per 100k round trips (and context switches per round trip)
of meet443 by load, and of coturn where the runs measured it; for sfu_bench the
server's CPU-microseconds per forwarded packet by step: the median over the files, the spread
(lowest and highest) and the median's change against the first label's.
"""

from __future__ import annotations

import glob
import json
import math
import statistics
import sys
from collections import defaultdict


def figures(path: str) -> dict[str, float]:
    """metric name -> value of one run."""
    document = json.load(open(path))  # noqa: SIM115 - read whole, closed by the GC at once
    out: dict[str, float] = {}
    if "summary" in document and "runs" in document and "loads" in document:  # turn_bench
        measured: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        for run in document["runs"]:
            # coturn, where the run measured it too: the anchor, run beside meet443.
            name = "" if run["server"] == "meet443" else f" ({run['server']})"
            measured[(run["load"], name, "CPU-s per 100k round trips")].append(run["cpu_s_per_100k_rt"])
            if "switches_per_rt" in run:
                measured[(run["load"], name, "context switches per round trip")].append(
                    run["switches_per_rt"]
                )
        for (load, name, what), values in measured.items():
            out[f"TURN {load}{name}: {what}"] = statistics.median(values)
    else:  # sfu_bench
        for step in document["steps"]:
            if step.get("pkts_per_cpu_s") and step["server"] == "meet443":
                name = f"SFU {step['scenario']} {step['n']}: server CPU-µs per forwarded packet"
                out[name] = 1e6 / step["pkts_per_cpu_s"]
                out[f"SFU {step['scenario']} {step['n']}: server RSS after start, MiB"] = (
                    step["rss_base_kib"] / 1024
                )
    return out


def main(argv: list[str]) -> int:
    series: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    labels: list[str] = []
    for arg in argv:
        label, _, pattern = arg.partition("=")
        labels.append(label)
        for path in sorted(glob.glob(pattern)):
            for metric, value in figures(path).items():
                if not math.isnan(value):  # a failed run (its JSON names the error)
                    series[metric][label].append(value)
    for metric, by_label in series.items():
        print(metric)
        base = statistics.median(by_label[labels[0]]) if by_label.get(labels[0]) else None
        for label in labels:
            values = by_label.get(label, [])
            if not values:
                continue
            median = statistics.median(values)
            change = f"  {100 * (median / base - 1):+.1f}% vs {labels[0]}" if base else ""
            print(
                f"  {label}: median {median:.3f} over {len(values)} runs, "
                f"spread {min(values):.3f}-{max(values):.3f}{change}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
