"""Slow start and zone-aware routing in the simulator, each against full-mesh P2C in the same run.

1. A restarted server: it leaves discovery, is down 1 s, and comes back with its service
   time 5x slower, warming linearly to normal over 30 s. Subject: ``LeastLoaded`` with
   ``SlowStart(window=30)``; baseline: ``LeastLoaded`` (P2C) without. Figure: the p99 of the
   calls the restarted server receives during its warm-up; goal: baseline / subject >= 2.
   ``PeakEwma`` with and without slow start is shown for information.
2. Balanced zones (3 zones, clients and servers even): ``ZoneAware`` (P2C within the zone)
   against full-mesh P2C. Goal: cross-zone share <= 10%.
3. Zone outage (every server of zone "a" refuses calls from t=5 s on; each client has an
   ``OutlierDetector`` under its balancer). Goal: ``ZoneAware``'s success rate no lower
   than full-mesh P2C's.

Run: ``.venv/bin/python benchmarks/simulate_fleet.py`` (about a minute; ``--quick`` for a
shorter run, ``--seeds N`` to repeat the restart scenario over N seeds).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.sim import LogNormal, Scenario, ZoneOutage, run
from benchmarks.sim.slow_start import Restart, RestartResult, run_restart
from benchmarks.sim.zones import full_mesh, zone_aware
from loadbalancer import LeastLoaded, PeakEwma, SlowStart

SERVICE = LogNormal(median=0.010, sigma=0.5)
MEAN = 0.010 * math.exp(0.5**2 / 2)  # the mean service time


def rate_for(utilisation: float, concurrency: int, servers: int, clients: int) -> float:
    """Calls per second per client that load the servers to ``utilisation`` of their capacity."""
    return utilisation * concurrency / MEAN * servers / clients


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def restart_scenario(seed: int, quick: bool) -> Scenario:
    servers, clients, concurrency = 10, 20, 4
    return Scenario(
        clients=clients,
        servers=servers,
        seconds=20.0 if quick else 40.0,
        warmup=2.0,
        rate=rate_for(0.7, concurrency, servers, clients),
        service_time=SERVICE,
        concurrency=concurrency,
        timeout=2.0,
        seed=seed,
        name="restart",
    )


def slow_start_figures(seeds: int, quick: bool) -> bool:
    restart = Restart(server=0, at=2.0, downtime=1.0, factor=5.0, warm=30.0)
    print(
        "1. restarted server: 5x slower, warming over 30 s; 10 servers x 4 slots at 70% load, 20 clients\n"
        "   figure: p99 of the calls it gets while it warms (its share of all calls in brackets)"
    )
    stacks = {
        "P2C (LeastLoaded), baseline": lambda p, c: LeastLoaded(p, seed=c.seed),
        "P2C + SlowStart(window=30)": lambda p, c: LeastLoaded(
            p, seed=c.seed, slow_start=SlowStart(window=30.0, clock=c.clock)
        ),
        "PeakEwma (info)": lambda p, c: PeakEwma(p, seed=c.seed, clock=c.clock),
        "PeakEwma + SlowStart (info)": lambda p, c: PeakEwma(
            p, seed=c.seed, clock=c.clock, slow_start=SlowStart(window=30.0, clock=c.clock)
        ),
    }
    ratios, ewma_ratios = [], []
    for seed in range(1, seeds + 1):
        scenario = restart_scenario(seed, quick)
        results: dict[str, RestartResult] = {
            name: run_restart(scenario, f, restart, name) for name, f in stacks.items()
        }
        for name, r in results.items():
            print(
                f"   seed {seed}  {name:30s} p99 {1000 * r.p99:7.1f} ms  p50 {1000 * r.p50:6.1f} ms"
                f"  ({r.calls:,} calls, {100 * r.share:4.1f}%)  fleet p99 {1000 * r.result.p99:6.1f} ms"
                f"  ok {100 * r.result.success_rate:.3f}%"
            )
        names = list(results)
        ratios.append(results[names[0]].p99 / results[names[1]].p99)
        ewma_ratios.append(results[names[2]].p99 / results[names[3]].p99)
    ratio = statistics.median(ratios)
    print(
        f"   ratio  baseline p99 / slow start p99 = {ratio:.2f}x (median of {seeds} seeds,"
        f" range {min(ratios):.2f}-{max(ratios):.2f})   goal >= 2x   {verdict(ratio >= 2.0)}"
    )
    print(f"   info   PeakEwma without / with slow start = {statistics.median(ewma_ratios):.2f}x")
    return ratio >= 2.0


def zone_scenario(quick: bool, faults: list[ZoneOutage] | None = None) -> Scenario:
    servers = clients = 30
    return Scenario(
        clients=clients,
        servers=servers,
        seconds=10.0 if quick else 20.0,
        warmup=2.0,
        rate=rate_for(0.5, 8, servers, clients),
        service_time=SERVICE,
        concurrency=8,
        timeout=1.0,
        zones=("a", "b", "c"),
        faults=faults or [],
        seed=5,
        name="zones",
    )


def zone_figures(quick: bool) -> bool:
    scenario = zone_scenario(quick)
    print("2. balanced zones: 3 zones x 10 servers (8 slots, 50% load), 30 clients spread alike")
    base = run(scenario, full_mesh(), "full-mesh P2C")
    subject = run(scenario, zone_aware(scenario), "ZoneAware + P2C")
    for r in (base, subject):
        print(f"   {r.summary()}\n      cross-zone {100 * r.cross_zone:5.1f}%")
    balanced = subject.cross_zone <= 0.10
    print(
        f"   ratio  cross-zone share {100 * subject.cross_zone:.1f}% (baseline {100 * base.cross_zone:.1f}%)"
        f"   goal <= 10%   {verdict(balanced)}"
    )
    outage = zone_scenario(quick, [ZoneOutage("a", start=5.0)])
    print(
        "3. zone outage: zone a's servers refuse calls from t=5 s; OutlierDetector(consecutive_failures=3) per client"
    )
    base = run(outage, full_mesh(detector=True), "full-mesh P2C")
    subject = run(outage, zone_aware(outage, detector=True), "ZoneAware + P2C")
    for r in (base, subject):
        print(f"   {r.summary()}\n      failed {r.failed:,}  cross-zone {100 * r.cross_zone:5.1f}%")
    kept = subject.success_rate >= base.success_rate
    print(
        f"   ratio  success {100 * subject.success_rate:.3f}% vs baseline {100 * base.success_rate:.3f}%"
        f"   goal: no loss   {verdict(kept)}"
    )
    return balanced and kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the restart scenario (default 3)")
    args = parser.parse_args()
    logging.getLogger("loadbalancer").setLevel(logging.ERROR)  # the detectors' ejections would flood
    ok = slow_start_figures(args.seeds, args.quick)
    ok = zone_figures(args.quick) and ok
    print("== all goals met" if ok else "== some goal missed")


if __name__ == "__main__":
    main()
