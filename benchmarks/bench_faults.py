"""A backend crash and restart under steady load: failed requests and p99, layer by layer.

Three HTTP backends run as child processes on 127.0.0.1 (the server of tests/backends.py).
An open-loop client sends requests at a fixed rate (Poisson arrivals) through one of:

  (a) RoundRobin
  (b) Retry(3) over RoundRobin
  (c) Retry(3) over RoundRobin over OutlierDetector over HealthChecker (GET /health)
  (d) as (c), with Hedge(percentile=0.95) between Retry and the balancer

Each run lasts ``--seconds``; a third of the way in, one backend is killed (SIGKILL), and
it is started again on the same port two thirds of the way in. A request's latency runs
from its scheduled arrival to its answer; the p99 is over the successful ones. The
reference is (c) on the same fleet with no fault, measured in the same run after a
warm-up run that is not reported.
Goal: (c) fails no request and its p99 is at most 2x the no-fault p99.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from loadbalancer import (
    HealthChecker,
    Hedge,
    OutlierDetector,
    Publisher,
    Retry,
    RoundRobin,
    static,
)
from loadbalancer.health import HttpCheck
from tests.backends import BackendProcess, async_factory

Layers = Callable[[Publisher[Any]], Callable[[str], Any]]


def plain(publisher: Publisher[Any]) -> Callable[[str], Any]:
    lb = RoundRobin(publisher)
    return lambda path: lb.endpoint()(path)


def retry(publisher: Publisher[Any]) -> Callable[[str], Any]:
    return Retry(3, 2.0, RoundRobin(publisher))


def guarded(publisher: Publisher[Any]) -> Publisher[Any]:
    checked = HealthChecker(publisher, HttpCheck(), interval=0.2, timeout=0.5, healthy_threshold=2)
    return OutlierDetector(checked, consecutive_failures=2, base_ejection_time=1.0)


def ejection(publisher: Publisher[Any]) -> Callable[[str], Any]:
    return Retry(3, 2.0, RoundRobin(guarded(publisher)))


def hedging(publisher: Publisher[Any]) -> Callable[[str], Any]:
    return Retry(3, 2.0, Hedge(RoundRobin(guarded(publisher)), percentile=0.95))


CONFIGS: list[tuple[str, Layers, bool]] = [
    ("(c) no fault (reference)", ejection, False),
    ("(a) round robin", plain, True),
    ("(b) + Retry(3)", retry, True),
    ("(c) + ejection + health checks", ejection, True),
    ("(d) + hedging", hedging, True),
]


async def run(fleet: list[BackendProcess], layers: Layers, fault: bool, rate: float, seconds: float) -> dict[str, Any]:
    publisher = static.Publisher([b.address for b in fleet], async_factory)
    call = layers(publisher)
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    latencies: list[float] = []
    failures: list[str] = []
    victim = fleet[1]

    async def one(scheduled: float) -> None:
        try:
            await call("/")
        except Exception as error:
            failures.append(type(error).__name__)
        else:
            latencies.append(loop.time() - scheduled)

    async def chaos() -> None:
        await asyncio.sleep(seconds / 3)
        await asyncio.to_thread(victim.kill)
        await asyncio.sleep(seconds / 3)
        await asyncio.to_thread(victim.start)

    await asyncio.sleep(0.5)  # health checks and connections settle before the clock starts
    tasks: list[asyncio.Task[None]] = []
    chaos_task = asyncio.create_task(chaos()) if fault else None
    start = loop.time()
    arrival = start
    while arrival < start + seconds:
        arrival += rng.expovariate(rate)
        delay = arrival - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(arrival)))
    await asyncio.gather(*tasks)
    if chaos_task is not None:
        await chaos_task
    await publisher.aclose()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else float("nan")
    return {
        "requests": len(tasks),
        "failed": len(failures),
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": p99,
        "kinds": sorted(set(failures)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second (default 200)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each run (default 6)")
    args = parser.parse_args()
    logging.getLogger("loadbalancer").setLevel(logging.CRITICAL)  # the failures are counted, not logged
    fleet = [BackendProcess().start() for _ in range(3)]
    started = time.perf_counter()
    try:
        print(
            f"== backend crash and restart: 3 backends (child processes), {args.rate:g} req/s for {args.seconds:g} s,"
            f" one killed at {args.seconds / 3:.1f} s and restarted at {2 * args.seconds / 3:.1f} s"
        )
        print(f"    {'configuration':<32}{'requests':>9}{'failed':>9}{'p50':>10}{'p99':>10}{'p99/ref':>9}")
        asyncio.run(run(fleet, retry, False, args.rate, 2.0))  # warm-up, not reported
        results = []
        reference = None
        for name, layers, fault in CONFIGS:
            result = asyncio.run(run(fleet, layers, fault, args.rate, args.seconds))
            if reference is None:
                reference = result["p99"]
            if not fault:
                fleet[1].kill()  # every faulty run starts from a fresh victim, as the others
                fleet[1].start()
            results.append((name, result))
            share = result["failed"] / result["requests"]
            print(
                f"    {name:<32}{result['requests']:>9}{share:>8.1%} {result['p50'] * 1000:>7.1f} ms"
                f"{result['p99'] * 1000:>7.1f} ms{result['p99'] / reference:>8.2f}x"
                + (f"  ({', '.join(result['kinds'])})" if result["kinds"] else "")
            )
        (_, c) = results[3]
        ratio = c["p99"] / reference
        verdict = "PASS" if c["failed"] == 0 and ratio <= 2 else "MISS"
        print(f"    goal: (c) fails nothing ({c['failed']} failed) and p99 <= 2x no fault ({ratio:.2f}x)  {verdict}")
    finally:
        for backend in fleet:
            backend.kill()
    print(f"== done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
