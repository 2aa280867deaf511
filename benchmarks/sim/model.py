"""What a simulation is made of: service-time distributions, faults, the scenario, a client's context."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Distribution = Callable[[random.Random], float]


@dataclass(frozen=True)
class Constant:
    """Every call takes ``seconds``."""

    seconds: float

    def __call__(self, rng: random.Random) -> float:
        return self.seconds


@dataclass(frozen=True)
class Exponential:
    """Memoryless service times with the given ``mean`` (seconds)."""

    mean: float

    def __call__(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean)


@dataclass(frozen=True)
class LogNormal:
    """Log-normal service times: half the calls take less than ``median``; ``sigma`` is the spread of log(time)."""

    median: float
    sigma: float = 0.5

    def __call__(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)


@dataclass(frozen=True)
class Bimodal:
    """``fast`` seconds, except a fraction ``p_slow`` of calls taking ``slow`` seconds (a GC pause, a cache miss)."""

    fast: float
    slow: float
    p_slow: float = 0.01

    def __call__(self, rng: random.Random) -> float:
        return self.slow if rng.random() < self.p_slow else self.fast


# -- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SlowServer:
    """The ``servers`` (indexes) serve ``factor`` times slower from ``start`` to ``end`` (None: the end)."""

    servers: Sequence[int]
    factor: float = 10.0
    start: float = 0.0
    end: float | None = None


@dataclass(frozen=True)
class DeadServer:
    """The ``servers`` are down from ``start`` to ``end``: ``mode`` "refuse" (fail fast) or "timeout" (no answer)."""

    servers: Sequence[int]
    start: float = 0.0
    end: float | None = None
    mode: str = "refuse"


@dataclass(frozen=True)
class ZoneOutage:
    """Every server of ``zone`` is down from ``start`` to ``end`` (``mode`` as for ``DeadServer``)."""

    zone: str
    start: float = 0.0
    end: float | None = None
    mode: str = "refuse"


@dataclass(frozen=True)
class RollingDeploy:
    """Restart the servers in ``waves`` groups (index % waves), one every ``every`` seconds from ``start``.

    Each wave is down (refusing) for ``downtime`` seconds; with ``deregister`` it leaves
    discovery ``drain`` seconds before it goes down and is published again once up (new
    instances at the same addresses).
    """

    start: float = 0.0
    waves: int = 10
    every: float = 5.0
    downtime: float = 2.0
    deregister: bool = True
    drain: float = 0.5


Fault = SlowServer | DeadServer | ZoneOutage | RollingDeploy


@dataclass
class Scenario:
    """One simulated run's setup; see API.md for every field."""

    clients: int = 100
    servers: int = 100
    seconds: float = 10.0
    warmup: float = 1.0
    rate: float = 20.0
    service_time: Distribution = field(default_factory=lambda: LogNormal(0.010, 0.5))
    server_service_time: Callable[[int], Distribution] | None = None
    concurrency: int | None = 8
    timeout: float = 1.0
    network: float = 0.0
    zones: Sequence[str] = ("a",)
    client_zones: Sequence[str] | None = None
    server_zones: Sequence[str] | None = None
    faults: Sequence[Fault] = ()
    retries: int = 0
    server_addresses: Sequence[str] | None = None
    tick: float = 1.0
    seed: int = 1
    name: str = ""

    def server_zone(self, index: int) -> str:
        if self.server_zones is not None:
            return self.server_zones[index]
        return self.zones[index % len(self.zones)]

    def client_zone(self, index: int) -> str:
        if self.client_zones is not None:
            return self.client_zones[index]
        return self.zones[index % len(self.zones)]


@dataclass
class Client:
    """What the balancer factory gets for each simulated client."""

    index: int
    count: int
    zone: str
    address: str
    peers: Any  # static.Publisher of every client's instance
    clock: Callable[[], float]
    seed: int
    balancer: Any = None


def server_address(index: int) -> str:
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}:8080"


def client_address(index: int) -> str:
    return f"11.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}:9000"
