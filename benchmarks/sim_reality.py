"""The simulator against reality, once: the same small scenario simulated and run for real on loopback.

Reality: 10 real servers (asyncio TCP servers on 127.0.0.1 in one process, each serving at
most 8 calls at once and sleeping a log-normal service time, median 10 ms) and 10 client
processes, each sending Poisson arrivals (100 calls/s) through the library's balancer over
a ``static.Publisher`` of the servers, each call a request line over a pooled connection,
with a 1 s deadline. The simulation: the same scenario in benchmarks/sim, with the same
addresses and the same per-client seeds, so that a random aperture draws the same slices.

Two balancers, in turn: random aperture (``Aperture`` without peers, ``min_aperture=3``:
a structural spread of load to reproduce) and full-mesh P2C (``LeastLoaded``: its spread
is little more than the noise of counting, so only its p99 is held to the goal). Goal: the
real spread (CoV of calls per server) and p99 within 20% of the simulated ones.

    .venv/bin/python benchmarks/sim_reality.py [--seconds 20] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import random
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.sim import Client, LogNormal, Scenario, cov, percentile, run
from loadbalancer import static
from loadbalancer.aperture import Aperture
from loadbalancer.least_loaded import LeastLoaded

CLIENTS = SERVERS = 10
MEDIAN, SIGMA, CONCURRENCY, TIMEOUT, WARMUP = 0.010, 0.5, 8, 1.0, 2.0
SEED = 1


def client_seed(index: int) -> int:
    return SEED * 7919 + index  # as benchmarks/sim gives its clients


def make_balancer(kind: str, publisher: Any, seed: int, clock: Any = time.monotonic) -> Any:
    if kind == "random aperture":
        return Aperture(publisher, min_aperture=3, seed=seed, clock=clock)
    return LeastLoaded(publisher, seed=seed)


# -- the real servers ------------------------------------------------------------------------------


async def serve(ready: Any, stop: Any) -> None:
    rng = random.Random(SEED)
    mu = math.log(MEDIAN)

    def handler_for() -> Any:
        slots = asyncio.Semaphore(CONCURRENCY)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while await reader.readline():
                    async with slots:
                        await asyncio.sleep(rng.lognormvariate(mu, SIGMA))
                    writer.write(b"ok\n")
            except ConnectionError:
                pass
            finally:
                writer.close()

        return handle

    servers = [await asyncio.start_server(handler_for(), "127.0.0.1", 0) for _ in range(SERVERS)]
    ready.send([s.sockets[0].getsockname()[1] for s in servers])
    await asyncio.get_running_loop().run_in_executor(None, stop.recv)  # until the parent says stop
    for server in servers:
        server.close()


def server_process(ready: Any, stop: Any) -> None:
    asyncio.run(serve(ready, stop))


# -- the real clients ------------------------------------------------------------------------------


class Connection:
    """An endpoint: one request line per call over a pooled connection to one server."""

    def __init__(self, address: str) -> None:
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def __call__(self) -> None:
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        conn[1].write(b"x\n")
        if not await conn[0].readline():
            raise ConnectionError("closed")
        self.idle.append(conn)


async def drive(kind: str, index: int, addresses: list[str], start: float, seconds: float, rate: float) -> Any:
    publisher = static.Publisher(addresses, Connection)
    lb = make_balancer(kind, publisher, client_seed(index))
    rng = random.Random(client_seed(index) + 1)
    loop = asyncio.get_running_loop()
    counts: dict[str, int] = {}
    latencies: list[float] = []
    failed = 0

    async def call(at: float) -> None:
        nonlocal failed
        tracked = lb.endpoint()
        try:
            await asyncio.wait_for(tracked(), TIMEOUT)
        except (TimeoutError, ConnectionError):
            ok = False
        else:
            ok = True
        if at >= start + WARMUP:
            latencies.append(loop.time() - at)
            failed += not ok
            counts[str(tracked)] = counts.get(str(tracked), 0) + ok

    tasks = set()
    at = start
    while True:
        at += rng.expovariate(rate)
        if at >= start + WARMUP + seconds:
            break
        await asyncio.sleep(max(0.0, at - loop.time()))
        task = asyncio.ensure_future(call(at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return counts, latencies, failed


def client_process(kind: str, index: int, addresses: list[str], start: float, args: Any, out: Any) -> None:
    out.put(asyncio.run(drive(kind, index, addresses, start, args[0], args[1])))


def reality(kind: str, addresses: list[str], seconds: float, rate: float) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    start = time.monotonic() + 3.0  # time for the interpreters to start (CLOCK_MONOTONIC is system-wide)
    procs = [
        context.Process(target=client_process, args=(kind, j, addresses, start, (seconds, rate), out))
        for j in range(CLIENTS)
    ]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    load = dict.fromkeys(addresses, 0)
    latencies: list[float] = []
    failed = 0
    for counts, lat, fail in results:
        for address, n in counts.items():
            load[address] += n
        latencies.extend(lat)
        failed += fail
    latencies.sort()
    return {
        "cov": cov(list(load.values())),
        "p99": percentile(latencies, 0.99),
        "calls": len(latencies),
        "failed": failed,
    }


def simulated(kind: str, addresses: list[str], seconds: float, rate: float) -> dict[str, Any]:
    scenario = Scenario(
        clients=CLIENTS,
        servers=SERVERS,
        seconds=seconds,
        warmup=WARMUP,
        rate=rate,
        service_time=LogNormal(MEDIAN, SIGMA),
        concurrency=CONCURRENCY,
        timeout=TIMEOUT,
        server_addresses=addresses,
        seed=SEED,
    )

    def factory(publisher: Any, client: Client) -> Any:
        return make_balancer(kind, publisher, client.seed, client.clock)

    result = run(scenario, factory, kind)
    return {"cov": result.load_cov, "p99": result.p99, "calls": result.calls, "failed": result.failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=100.0, help="calls per second per client")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    ready, ready_child = context.Pipe()
    stop, stop_child = context.Pipe()
    server = context.Process(target=server_process, args=(ready_child, stop_child))
    server.start()
    try:
        addresses = [f"127.0.0.1:{port}" for port in ready.recv()]
        print(
            f"{CLIENTS} client processes x {SERVERS} servers on 127.0.0.1, {args.seconds:g} s at {args.rate:g} calls/s"
            f" per client; log-normal service (median {1000 * MEDIAN:g} ms, sigma {SIGMA}), {CONCURRENCY} at once"
        )
        for kind in ("random aperture", "full-mesh P2C"):
            sim = simulated(kind, addresses, args.seconds, args.rate)
            real = reality(kind, addresses, args.seconds, args.rate)
            report(kind, sim, real)
    finally:
        stop.send(True)
        server.join(5)


def report(kind: str, sim: dict[str, Any], real: dict[str, Any]) -> None:
    print(f"  {kind}")
    for name, data in (("simulated", sim), ("real", real)):
        print(
            f"    {name:<10} calls {data['calls']:>7,}  failed {data['failed']:>4}"
            f"  spread (CoV) {100 * data['cov']:6.2f}%  p99 {1000 * data['p99']:7.2f} ms"
        )
    for what in ("cov", "p99"):
        off = real[what] / sim[what] - 1 if sim[what] else math.inf
        held = what == "p99" or kind == "random aperture"
        goal = (
            f"goal within 20%  {'PASS' if abs(off) <= 0.2 else 'MISS'}" if held else "(information: noise-level spread)"
        )
        label = "spread" if what == "cov" else "p99"
        print(f"    {label:<6} real / simulated - 1 = {100 * off:+6.1f}%   {goal}")


if __name__ == "__main__":
    main()
