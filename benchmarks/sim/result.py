"""What a run measured, and the arithmetic over it (coefficient of variation, percentiles)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def cov(values: list[float] | list[int]) -> float:
    """Coefficient of variation: standard deviation / mean (population), 0 for no values or a zero mean."""
    if not values:
        return 0.0
    mean = sum(values) / len(values)
    if mean == 0:
        return 0.0
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) / mean


def percentile(ordered: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of already sorted values (nearest rank); nan when empty."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Result:
    name: str = ""
    calls: int = 0
    ok: int = 0
    failed: int = 0
    success_rate: float = math.nan
    p50: float = math.nan
    p99: float = math.nan
    p999: float = math.nan
    load: list[int] = field(default_factory=list)
    load_cov: float = math.nan
    noise_cov: float = math.nan
    connections_per_server: list[int] = field(default_factory=list)
    connections_per_client: list[int] = field(default_factory=list)
    mean_connections_per_server: float = math.nan
    max_connections_per_server: int = 0
    mean_connections_per_client: float = math.nan
    cross_zone: float = math.nan
    zone_load: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[float, int, int, float]] = field(default_factory=list)
    events: int = 0
    wall: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.name:<22} calls {self.calls:>9,}  ok {100 * self.success_rate:7.3f}%"
            f"  p50 {1000 * self.p50:7.2f} ms  p99 {1000 * self.p99:8.2f} ms  p999 {1000 * self.p999:8.2f} ms"
            f"  load CoV {100 * self.load_cov:6.2f}% (noise {100 * self.noise_cov:4.2f}%)"
            f"  conns/server {self.mean_connections_per_server:7.1f} (max {self.max_connections_per_server})"
            f"  conns/client {self.mean_connections_per_client:7.1f}  [{self.wall:.1f} s wall]"
        )


def summarise(sim: Any) -> Result:
    """Fold a finished ``Sim`` into a ``Result``."""
    first = int(sim.measure_from / sim.tick)
    latencies: list[float] = []
    failed = 0
    timeline = []
    for bucket in sorted(sim.buckets):
        values = sim.buckets[bucket]
        if bucket >= first:
            latencies.extend(values)
            failed += sim.failures.get(bucket, 0)
        values.sort()
        timeline.append((bucket * sim.tick, len(values), sim.failures.get(bucket, 0), percentile(values, 0.99)))
    latencies.sort()
    # measured calls whose bucket straddles the warmup edge: count by start time, close enough for a tick of 1 s
    hit = sim.faulted()
    steady = [s.served for s in sim.servers if s.index not in hit] or [s.served for s in sim.servers]
    per_server = [len(s.peers) for s in sim.servers]
    per_client = [0] * len(sim.clients)
    for server in sim.servers:
        for j in server.peers:
            per_client[j] += 1
    zone_load: dict[str, int] = {}
    for server in sim.servers:
        zone_load[server.zone] = zone_load.get(server.zone, 0) + server.served
    calls = len(latencies)
    mean_load = sum(steady) / len(steady) if steady else 0.0
    return Result(
        name=sim.name,
        calls=calls,
        ok=calls - failed,
        failed=failed,
        success_rate=(calls - failed) / calls if calls else math.nan,
        p50=percentile(latencies, 0.5),
        p99=percentile(latencies, 0.99),
        p999=percentile(latencies, 0.999),
        load=[s.served for s in sim.servers],
        load_cov=cov(steady),
        noise_cov=1 / math.sqrt(mean_load) if mean_load else math.nan,
        connections_per_server=per_server,
        connections_per_client=per_client,
        mean_connections_per_server=sum(per_server) / len(per_server) if per_server else math.nan,
        max_connections_per_server=max(per_server, default=0),
        mean_connections_per_client=sum(per_client) / len(per_client) if per_client else math.nan,
        cross_zone=sim.cross / max(1, sum(len(v) for v in sim.buckets.values())),
        zone_load=zone_load,
        timeline=timeline,
        events=sim.events,
    )
