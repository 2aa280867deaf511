"""Scenario: a server restarts cold (5x slower service, warming linearly over 30 s); slow start or not.

Built on the simulator core without changing it: ``RestartSim`` is a ``Sim`` that takes one
server out of discovery, kills it, brings it back as a new instance (same address) whose
service time starts ``factor`` times slower and warms linearly to normal over ``warm``
seconds, and records the latency of every call sent to it while it warms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .engine import Call, Server, Sim
from .model import Scenario
from .result import Result, percentile, summarise


@dataclass(frozen=True)
class Restart:
    """Server ``server`` leaves discovery at ``at`` (virtual seconds after warmup), is down
    ``downtime`` seconds, and comes back ``factor`` times slower, warming over ``warm`` s."""

    server: int = 0
    at: float = 2.0
    downtime: float = 1.0
    factor: float = 5.0
    warm: float = 30.0


class _Warming:
    """A service-time distribution scaled by the warm-up: ``factor`` at ``since``, 1 after ``warm`` s."""

    def __init__(self, base: Callable[[Any], float], clock: Callable[[], float], restart: Restart) -> None:
        self.base = base
        self.clock = clock
        self.restart = restart
        self.since = float("inf")

    def __call__(self, rng: Any) -> float:
        elapsed = self.clock() - self.since
        r = self.restart
        scale = 1.0 if elapsed >= r.warm or elapsed < 0 else 1.0 + (r.factor - 1.0) * (1.0 - elapsed / r.warm)
        return self.base(rng) * scale


class RestartSim(Sim):
    """A ``Sim`` with one cold restart (see ``Restart``); ``warm_latencies`` holds its calls' latencies."""

    def __init__(self, scenario: Scenario, factory: Any, name: str, restart: Restart) -> None:
        super().__init__(scenario, factory, name)
        self.restart = restart
        self.target: Server = self.servers[restart.server]
        self.warming = _Warming(self.target.dist, self.clock, restart)
        self.target.dist = self.warming
        self.back_at = float("inf")
        self.warm_latencies: list[float] = []
        self.warm_failures = 0
        t0 = self.measure_from + restart.at
        self.push(t0, self._deregister, [self.target])
        self.push(t0 + 0.1, lambda _: self.target.kill("refuse"), None)
        self.push(t0 + 0.1 + restart.downtime, self._back, None)

    def _back(self, _: object) -> None:
        self.back_at = self.warming.since = self.cell[0]
        self._come_back(([self.target], True))

    def settle(self, call: Call, error: BaseException | None) -> None:
        if call.server is self.target and self.back_at <= call.start < self.back_at + self.restart.warm:
            self.warm_latencies.append(self.cell[0] - call.start)
            if error is not None:
                self.warm_failures += 1
        super().settle(call, error)


@dataclass
class RestartResult:
    """The fleet's ``Result``, and the restarted server's calls during its warm-up."""

    result: Result
    calls: int  # calls the restarted server received while it warmed
    share: float  # of all calls issued meanwhile (about)
    p50: float
    p99: float
    failed: int


def run_restart(scenario: Scenario, factory: Any, restart: Restart, name: str = "") -> RestartResult:
    """Simulate ``scenario`` with one cold restart; see ``RestartSim``."""
    import time

    started = time.perf_counter()
    sim = RestartSim(scenario, factory, name or scenario.name, restart)
    sim.loop()
    result = summarise(sim)
    result.wall = time.perf_counter() - started
    sim.publisher.close()
    latencies = sorted(sim.warm_latencies)
    offered = scenario.rate * scenario.clients * restart.warm
    return RestartResult(
        result=result,
        calls=len(latencies),
        share=len(latencies) / offered if offered else float("nan"),
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        failed=sim.warm_failures,
    )
