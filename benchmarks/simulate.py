"""Aperture against full-mesh P2C, in the discrete-event simulator (benchmarks/sim), at fleet scale.

Every client runs the library's real balancer over a real ``static.Publisher`` of the
servers; time is virtual (see benchmarks/sim/API.md). Three balancers per scenario, in the
same run and on the same arrivals: full-mesh P2C (``LeastLoaded``: the baseline),
deterministic aperture (``Aperture`` with a ``PeerSet`` following a publisher of the
clients' own instances) and random aperture (``Aperture`` without peers).

1. steady load, N clients x M servers (default 1,000 x 1,000; log-normal service times,
   median 10 ms, 8 concurrent calls per server, 100 calls/s per client):
   connections per server, deterministic aperture / full mesh: goal <= 0.1;
   load CoV across servers (calls served per server), deterministic aperture: goal <= 5%
   (Finagle's motivation for deterministic over random aperture; random aperture's is
   printed beside it). Also success rate and p99 against full mesh (information). The CoV
   of counting calls has a floor (1/sqrt(calls per server), printed as ``noise``).
2. faults, at a smaller scale by default (``--fault-clients``/``--fault-servers``, 300 x 300),
   each balancer in turn: a slow server (1% of them, 10x), dead servers that never
   answer (1%, the client times out after 1 s), a zone outage (one of three zones down for
   a third of the run) and a rolling deploy (10 waves, each leaving discovery, down 2 s,
   back). A refused call is tried again on another pick up to twice (a connect that failed
   never reached the server). Success rate, p99 and load CoV (information: no goal).

    .venv/bin/python benchmarks/simulate.py                 # about 4 minutes on 2 cores
    .venv/bin/python benchmarks/simulate.py --quick         # 100 x 100, seconds
    .venv/bin/python benchmarks/simulate.py --clients 500 --servers 2000 --seconds 10 --no-faults
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.sim import (
    Client,
    DeadServer,
    LogNormal,
    Result,
    RollingDeploy,
    Scenario,
    SlowServer,
    ZoneOutage,
    run,
)
from loadbalancer.aperture import Aperture, PeerSet
from loadbalancer.least_loaded import LeastLoaded

Factory = Callable[[Any, Client], Any]


def full_mesh(publisher: Any, client: Client) -> Any:
    return LeastLoaded(publisher, seed=client.seed)


def deterministic(publisher: Any, client: Client) -> Any:
    return Aperture(publisher, peers=PeerSet(client.peers, client.address), seed=client.seed, clock=client.clock)


def random_aperture(publisher: Any, client: Client) -> Any:
    return Aperture(publisher, seed=client.seed, clock=client.clock)


BALANCERS: list[tuple[str, Factory]] = [
    ("full-mesh P2C", full_mesh),
    ("deterministic aperture", deterministic),
    ("random aperture", random_aperture),
]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def steady(args: argparse.Namespace) -> dict[str, Result]:
    scenario = Scenario(
        clients=args.clients,
        servers=args.servers,
        seconds=args.seconds,
        rate=args.rate,
        service_time=LogNormal(0.010, 0.5),
        concurrency=8,
        seed=args.seed,
    )
    print(
        f"1. steady load: {args.clients:,} clients x {args.servers:,} servers, {args.seconds:g} s at"
        f" {args.rate:g} calls/s per client (log-normal, median 10 ms; 8 concurrent per server)"
    )
    results = {}
    for name, factory in BALANCERS:
        results[name] = result = run(scenario, factory, name)
        print("  ", result.summary(), flush=True)
    mesh, det, rnd = (results[name] for name, _ in BALANCERS)
    ratio = det.mean_connections_per_server / mesh.mean_connections_per_server
    print(
        f"   connections per server, deterministic / full mesh: {det.mean_connections_per_server:.1f}"
        f" / {mesh.mean_connections_per_server:.1f} = {ratio:.3f} (max {det.max_connections_per_server})"
        + (
            f"   goal <= 0.1  {verdict(ratio <= 0.1)}"
            if args.clients >= 1000 and args.servers >= 1000
            else "   (the goal, <= 0.1, is at 1,000 x 1,000)"
        )
    )
    ratio_rnd = rnd.mean_connections_per_server / mesh.mean_connections_per_server
    print(f"   connections per server, random / full mesh: {ratio_rnd:.3f} (max {rnd.max_connections_per_server})")
    print(
        f"   load CoV: deterministic {100 * det.load_cov:.2f}%   goal <= 5%  {verdict(det.load_cov <= 0.05)}"
        f"   (random aperture {100 * rnd.load_cov:.2f}%, full mesh {100 * mesh.load_cov:.2f}%,"
        f" counting noise {100 * det.noise_cov:.2f}%)"
    )
    for result in (det, rnd):
        print(
            f"   {result.name}: success {100 * result.success_rate:.3f}% (full mesh {100 * mesh.success_rate:.3f}%),"
            f" p99 {1000 * result.p99:.2f} ms = {result.p99 / mesh.p99:.2f}x full mesh's (information)"
        )
    return results


def fault_scenarios(args: argparse.Namespace) -> list[Scenario]:
    n, m, seconds = args.fault_clients, args.fault_servers, args.fault_seconds
    one_percent = list(range(0, m, 100)) if m >= 100 else [0]
    base: dict[str, Any] = {
        "clients": n,
        "servers": m,
        "seconds": seconds,
        "rate": args.fault_rate,
        "service_time": LogNormal(0.010, 0.5),
        "concurrency": 8,
        "retries": 2,
        "seed": args.seed,
    }
    return [
        Scenario(name="slow server (1%, 10x)", faults=[SlowServer(one_percent, factor=10.0)], **base),
        Scenario(name="dead server (1%, no answer)", faults=[DeadServer(one_percent, mode="timeout")], **base),
        Scenario(
            name="zone outage (1 of 3)",
            zones=("a", "b", "c"),
            faults=[ZoneOutage("c", start=seconds / 3, end=2 * seconds / 3)],
            **base,
        ),
        Scenario(
            name="rolling deploy (10 waves)",
            faults=[RollingDeploy(start=1.0, waves=10, every=(seconds - 4) / 10, downtime=2.0)],
            **base,
        ),
    ]


def faults(args: argparse.Namespace) -> None:
    print(
        f"\n2. faults: {args.fault_clients:,} clients x {args.fault_servers:,} servers, {args.fault_seconds:g} s at"
        f" {args.fault_rate:g} calls/s per client"
    )
    for scenario in fault_scenarios(args):
        print(f"   {scenario.name}")
        for name, factory in BALANCERS:
            print("     ", run(scenario, factory, name).summary(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0, help="virtual seconds measured (default 20)")
    parser.add_argument("--rate", type=float, default=100.0, help="calls per second per client (default 100)")
    parser.add_argument("--fault-clients", type=int, default=300)
    parser.add_argument("--fault-servers", type=int, default=300)
    parser.add_argument("--fault-seconds", type=float, default=24.0)
    parser.add_argument("--fault-rate", type=float, default=50.0)
    parser.add_argument("--no-faults", action="store_true", help="the steady scenario only")
    parser.add_argument("--quick", action="store_true", help="100 x 100 (faults 60 x 60), short runs")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.clients = args.servers = 100
        args.seconds, args.rate = 10.0, 100.0
        args.fault_clients = args.fault_servers = 60
        args.fault_seconds, args.fault_rate = 12.0, 50.0
    steady(args)
    if not args.no_faults:
        faults(args)


if __name__ == "__main__":
    main()
