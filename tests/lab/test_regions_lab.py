"""The lab with distance (issue #16 item 1): three regions at about 10, 60 and 120 ms from a client,
measured with TCP connects and STUN Binding requests to a ``meet443 serve`` in each region, through
the user-space delay line. The matrix this prints is the one in docs/cluster.md."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.delayline import DelaySpec
from lab.netns import Lab, Proc, unavailable_reason, wait_listening
from lab.regions import RegionsLab

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

PROBE = Path(__file__).with_name("rtt_probe.py")
PORT = 443
REGIONS = ("r1", "r2", "r3")
#: From where the matrix is measured: both clients and the first two regions (the rest is symmetric).
ORIGINS = ("c1", "c2", "r1", "r2")
#: p99 of 200 lets two outliers in a row of a shared two-core machine through, not three.
SAMPLES = 200
#: Issue #16: p99 - p50 under 3 ms. The kernel's own round trip through the router adds well under 1 ms.
MAX_SPREAD_MS = 3.0
MAX_EXTRA_MS = 2.5


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), so one outlier in a hundred
    samples moves p99 only part of the way towards it."""
    return statistics.quantiles(values, n=100, method="inclusive")[round(p) - 1]


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegionsLab, dict[str, Proc]]]:
    workdir = tmp_path_factory.mktemp("regions-lab")
    with Lab(workdir, prefix="rgl") as lab:
        world = RegionsLab(lab)
        nodes: dict[str, Proc] = {}
        for name in REGIONS:
            site = world.sites[name]
            data = workdir / name
            data.mkdir()
            # At real-time priority like the probes: a STUN answer waits on the node's event loop,
            # and the matrix measures the lab's distance, not how busy the shared cores are.
            nodes[name] = site.ns.spawn(
                [
                    "chrt", "--fifo", "10",
                    sys.executable, "-m", "meet443", "serve", "--listen", site.address, "--port", str(PORT),
                    "--public-ip", site.address, "--relay-ports", "50000-50099", "--data-dir", data,
                    # STUN Bindings are unauthenticated answers, limited per address by default.
                    "--unauth-rate", "1000",
                ],
                name="meet443",
            )  # fmt: skip
        for name, proc in nodes.items():
            wait_listening(world.sites[name].ns, world.sites[name].address, PORT, "udp", proc=proc)
            wait_listening(world.sites[name].ns, world.sites[name].address, PORT, "tcp", proc=proc)
        yield world, nodes


def test_the_spec_round_trips_and_finds_each_pair() -> None:
    spec = DelaySpec.parse(json.dumps({"tun": "t", "delays": [["10.200.150.0/28", "10.200.150.16/28", 5.0]]}))
    assert DelaySpec.parse(spec.to_json()) == spec
    assert spec.delay_of(bytes([10, 200, 150, 2, 10, 200, 150, 18])) == pytest.approx(0.005)
    assert spec.delay_of(bytes([10, 200, 150, 18, 10, 200, 150, 2])) == 0.0


def test_rtt_matrix(regions: tuple[RegionsLab, dict[str, Proc]]) -> None:
    world, nodes = regions
    # Every origin at once (the delay line carries a few hundred packets a second), each probe at
    # real-time priority too, so that what is measured is the lab's distance, not the scheduler.
    running = {
        origin: subprocess.Popen(
            world.sites[origin].ns.exec_argv(
                ["chrt", "--fifo", "10", sys.executable, PROBE, str(SAMPLES), *targets(world, origin)]
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        for origin in ORIGINS
    }
    measured = {origin: json.loads(proc.communicate(timeout=120)[0]) for origin, proc in running.items()}
    rows: list[str] = []
    failures: list[str] = []
    for origin in ORIGINS:
        for region, target in zip([r for r in REGIONS if r != origin], targets(world, origin), strict=True):
            want = world.rtt_ms(origin, region)
            for kind in ("tcp", "stun"):
                samples = measured[origin][target][kind]
                p50, p99 = statistics.median(samples), percentile(samples, 99)
                rows.append(
                    f"| {origin} → {region} | {kind} | {want:.0f} | {p50:.1f} | {p99:.1f} | "
                    f"{p99 - p50:.1f} | {len(samples)}/{SAMPLES} |"
                )
                if len(samples) < SAMPLES:
                    failures.append(f"{origin}→{region} {kind}: {SAMPLES - len(samples)} lost")
                if not want <= p50 <= want + MAX_EXTRA_MS:
                    failures.append(f"{origin}→{region} {kind}: p50 {p50:.1f} ms, want {want:.0f} ms")
                if p99 - p50 >= MAX_SPREAD_MS:
                    failures.append(f"{origin}→{region} {kind}: p99 - p50 = {p99 - p50:.1f} ms")
    print("\n| path | probe | lab RTT ms | p50 ms | p99 ms | p99 - p50 | answered |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"delay line: {world.delay_line.describe()}")
    assert all(proc.alive() for proc in nodes.values())
    assert not failures, "\n".join(failures)


def targets(world: RegionsLab, origin: str) -> list[str]:
    return [f"{world.sites[r].address}:{PORT}" for r in REGIONS if r != origin]
