"""Latency under a slow backend: RoundRobin, Random, LeastLoaded (P2C) and PeakEwma side by side.

Goal: the p99 of LeastLoaded and of PeakEwma is at most 1/3 of RoundRobin's.

The model, an in-process asyncio simulation (no sockets):
- 10 backends, each serving at most ``WORKERS`` requests at a time (a FIFO queue in front,
  so queueing appears), with exponential service times of mean 10 ms; one backend is 10x
  slower (mean 100 ms).
- Open-loop Poisson arrivals at a fixed offered load, the same arrival times and
  service-time streams for every balancer. Two loads are run. 300 requests/s (8% of the
  fleet's capacity of 3,640/s) is the most round robin can take and stay stable: its tenth
  keeps the slow backend 75% busy, so round robin's tail is the slow backend's latency,
  not an ever-growing queue. 1,200 requests/s (33% of capacity) overloads the slow backend
  under round robin and random (they send it 120/s; it serves 40/s): their queue grows
  for the whole run, throughput falls to what the slow backend lets through, and their
  p99 is the length of the run, not a steady state; the P2C balancers route around it.
- Each request picks with ``lb.endpoint()`` when it arrives and awaits the endpoint; its
  latency runs from arrival to answer. The balancers are the library's, unmodified; the
  feedback ones learn from these async calls through their tracking wrappers.

By default time is virtual: the event loop's clock jumps to the next timer instead of
sleeping, so the run is deterministic, fast and immune to machine noise (``PeakEwma`` is
given the loop's clock). ``--realtime`` runs the same model on the ordinary event loop,
sleeping for real (fewer requests; about 10 s per balancer).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import selectors
import time
from collections.abc import Awaitable, Callable
from typing import Any

from loadbalancer import Balancer, Random, RoundRobin, static
from loadbalancer.least_loaded import LeastLoaded, PeakEwma

BACKENDS = [f"127.0.0.1:{8080 + i}" for i in range(10)]  # names only: no traffic leaves the process
SLOW = BACKENDS[0]
FAST_MEAN = 0.010
SLOW_MEAN = 0.100
WORKERS = 4
LOADS = (300.0, 1200.0)  # requests/s; see the module docstring
REQUESTS = 30_000
REALTIME_REQUESTS = 3_000
SEED = 2024
GOAL = 1 / 3


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Never waits: when nothing is ready, the clock jumps by the loop's timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)
        if not events and timeout:
            self.now += timeout
        return events


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


class Backend:
    """A server with ``workers`` slots and exponential service times; the factory's endpoint."""

    def __init__(self, address: str, mean: float, workers: int, seed: int) -> None:
        self.address = address
        self.mean = mean
        self.workers = workers
        self.seed = seed
        self.served = 0
        self.slots: asyncio.Semaphore | None = None
        self.rng = random.Random(seed)

    async def __call__(self, request: object) -> object:
        if self.slots is None:
            self.slots = asyncio.Semaphore(self.workers)
        async with self.slots:
            await asyncio.sleep(self.rng.expovariate(1 / self.mean))
        self.served += 1
        return request


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


Make = Callable[[static.Publisher[Backend], Callable[[], float]], Balancer[Any]]


async def run(make: Make, rate: float, requests: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    backends = {
        address: Backend(address, SLOW_MEAN if address == SLOW else FAST_MEAN, WORKERS, SEED + i)
        for i, address in enumerate(BACKENDS)
    }
    publisher = static.Publisher(BACKENDS, backends.__getitem__)
    lb = make(publisher, loop.time)
    arrivals = random.Random(SEED)
    latencies: list[float] = []
    pending: set[asyncio.Task[None]] = set()

    async def request(i: int) -> None:
        start = loop.time()
        call: Callable[[int], Awaitable[object]] = lb.endpoint()
        await call(i)
        latencies.append(loop.time() - start)

    first = loop.time()
    for i in range(requests):
        await asyncio.sleep(arrivals.expovariate(rate))
        task = loop.create_task(request(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    elapsed = loop.time() - first
    publisher.close()
    latencies.sort()
    return {
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "throughput": len(latencies) / elapsed,
        "slow_share": backends[SLOW].served / requests,
    }


BALANCERS: dict[str, Make] = {
    "RoundRobin": lambda p, clock: RoundRobin(p),
    "Random": lambda p, clock: Random(p, seed=SEED),
    "LeastLoaded (P2C)": lambda p, clock: LeastLoaded(p, seed=SEED),
    "PeakEwma (P2C)": lambda p, clock: PeakEwma(p, seed=SEED, clock=clock),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--realtime", action="store_true", help="sleep for real instead of virtual time")
    parser.add_argument("--requests", type=int, default=None, help="requests per balancer")
    args = parser.parse_args()
    requests = args.requests or (REALTIME_REQUESTS if args.realtime else REQUESTS)
    started = time.perf_counter()
    mode = "real time" if args.realtime else "virtual time"
    print(
        f"== latency: 10 backends x {WORKERS} workers, exponential service 10 ms (one backend: 100 ms),"
        f" Poisson arrivals, {requests} requests per balancer and load, {mode}"
    )
    print(f"    {'load':>10}  {'balancer':<19}{'p50':>10}{'p99':>11}{'throughput':>14}{'to slow':>9}{'p99/RR':>10}")
    verdicts = []
    for rate in LOADS:
        results = {}
        for name, make in BALANCERS.items():
            if args.realtime:
                results[name] = asyncio.run(run(make, rate, requests))
            else:
                loop = _VirtualLoop()
                try:
                    results[name] = loop.run_until_complete(run(make, rate, requests))
                finally:
                    loop.close()
        base = results["RoundRobin"]["p99"]
        for name, r in results.items():
            print(
                f"    {rate:>6g}/s  {name:<19}{r['p50'] * 1000:>7.1f} ms{r['p99'] * 1000:>8.1f} ms"
                f"{r['throughput']:>8.1f} req/s{r['slow_share'] * 100:>8.1f}%{r['p99'] / base:>9.3g}x"
            )
            if "P2C" in name:
                ratio = r["p99"] / base
                verdict = "PASS" if ratio <= GOAL else "MISS"
                verdicts.append(f"{rate:g}/s {name}: p99 {ratio:.3g}x RoundRobin's  {verdict}")
    print("    goal: P2C balancers' p99 <= 1/3 of RoundRobin's")
    for verdict in verdicts:
        print(f"      {verdict}")
    print(f"== done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
