"""loadbalancer.grpc against grpcio's own channels, on real grpc servers in child processes.

Servers: ``benchmarks/_grpc_server.py`` child processes on 127.0.0.1 serving
``/bench.Echo/Unary`` (bytes echo, no serializers). Every figure is a ratio of runs made in
the same process against the same servers.

1. overhead, one server: sequential unary calls through ``loadbalancer.grpc.Channel`` over
   ``static.Publisher([addr])`` against a bare ``grpc.insecure_channel(addr)``: median and
   p99 latency, in alternating rounds (warm-up first; the ratio is the median of the
   per-round ratios, the times shown the best round's). The same for ``grpc.aio``:
   ``loadbalancer.grpc.aio.Channel`` against ``grpc.aio.insecure_channel`` with sequential
   awaits in one task, and the time per call with 32 concurrent tasks. Goal: <= 1.1x each.
   The garbage collector stays on (a p99 includes its pauses).
2. Linkerd's "beyond round robin" experiment: 11 servers (one process each), one of them
   stuck (answers after ``--stuck`` seconds, default 1; the others after ``--service``
   seconds, default 1 ms); ``--stuck-calls`` calls from 8 threads, each with a 2 s timeout,
   through ``loadbalancer.grpc.Channel`` with ``PeakEwma``, with ``RoundRobin``, and through
   grpcio's own ``round_robin`` policy over the same addresses. Connections are made before
   the calls; the balancers start with no latency history. Reported: success rate and
   p50/p99/p99.9 latency (all calls, failed ones at the time they took), the calls the stuck
   server answered (or that timed out on it: those that took over half its delay), and the
   p99 ratio PeakEwma / grpcio round_robin (information: no goal). The round-robin runs spend
   most of their time waiting on the stuck server, so the machine is nearly idle for their
   other calls: their p50 is not comparable with PeakEwma's, made at ~10x the call rate.

    .venv/bin/python benchmarks/bench_grpc.py [--calls 3000] [--stuck-calls 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import select
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import grpc
import grpc.aio
from _harness import fmt, report

from loadbalancer import PeakEwma, RoundRobin, static
from loadbalancer import grpc as lbgrpc
from tests.daemon import free_tcp_port

HERE = os.path.dirname(os.path.abspath(__file__))
METHOD = "/bench.Echo/Unary"
PAYLOAD = b"x" * 64
TIMEOUT = 2.0  # each call's deadline in the stuck-server experiment
THREADS = 8


# -- servers ----------------------------------------------------------------------------------------


class Servers:
    """``_grpc_server.py`` child processes; ``stop()`` ends them all (call it in ``finally``)."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[bytes]] = []

    def start(self, ports: Sequence[int], slow: dict[int, float] | None = None, delay: float = 0.0) -> None:
        command = [sys.executable, os.path.join(HERE, "_grpc_server.py"), *map(str, ports), "--delay", str(delay)]
        for port, seconds in (slow or {}).items():
            command += ["--slow", f"{port}:{seconds}"]
        self._processes.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE))

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for process in self._processes:
            assert process.stdout is not None
            left = deadline - time.monotonic()
            if not select.select([process.stdout], [], [], max(0.0, left))[0]:
                raise RuntimeError("a grpc server did not start in time")
            line = process.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"a grpc server failed to start (exit code {process.poll()}, said {line!r})")

    def stop(self) -> None:
        for process in self._processes:
            if process.stdin is not None:
                try:
                    process.stdin.close()  # the server's signal to stop
                except OSError:
                    pass
        for process in self._processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
        self._processes.clear()


# -- measurements ---------------------------------------------------------------------------------


def quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted samples."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def sequential(call: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


async def async_sequential(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def async_concurrent(call: Callable[[], Awaitable[Any]], n: int, tasks: int = 32) -> float:
    """Seconds per call with ``tasks`` tasks making ``n`` calls in all."""
    left = n

    async def work() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(work() for _ in range(tasks)))
    return (time.perf_counter() - started) / n


class Rounds:
    """Per-round medians and p99s of the cases of one comparison."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.median: dict[str, list[float]] = {name: [] for name in names}
        self.p99: dict[str, list[float]] = {name: [] for name in names}

    def order(self, r: int) -> list[str]:
        shift = r % len(self.names)
        return self.names[shift:] + self.names[:shift]

    def add(self, name: str, samples: list[float]) -> None:
        samples.sort()
        self.median[name].append(statistics.median(samples))
        self.p99[name].append(quantile(samples, 0.99))


Summary = list[tuple[str, str, str]]  # what, ratio or figures, goal and verdict


def compare(summary: Summary, title: str, baseline: list[float], subject: list[float], what: str) -> None:
    c = report(title, "bare grpc", baseline, "loadbalancer.grpc", subject, goal=1.1)
    summary.append(
        (what, f"{c.ratio:.3f}x ({c.low:.2f}-{c.high:.2f})", f"<= 1.1x {'PASS' if c.ratio <= 1.1 else 'MISS'}")
    )


def overhead_sync(address: str, calls: int, rounds: int, summary: Summary) -> None:
    per_round = max(1, calls // rounds)
    print(f"1a. overhead, sync, one server: {rounds} rounds x {per_round} sequential calls each way")
    bare = grpc.insecure_channel(address)
    balanced = lbgrpc.Channel(static.Publisher([address]))
    try:
        methods = {"bare": bare.unary_unary(METHOD), "lb": balanced.unary_unary(METHOD)}
        for method in methods.values():
            sequential(lambda m=method: m(PAYLOAD), 300)  # connect, warm up
        rounds_ = Rounds(list(methods))
        for r in range(rounds):
            for name in rounds_.order(r):
                method = methods[name]
                rounds_.add(name, sequential(lambda m=method: m(PAYLOAD), per_round))
        compare(summary, "    median latency", rounds_.median["bare"], rounds_.median["lb"], "sync median")
        compare(summary, "    p99 latency", rounds_.p99["bare"], rounds_.p99["lb"], "sync p99")
    finally:
        balanced.close()
        bare.close()


async def overhead_async(address: str, calls: int, rounds: int, summary: Summary) -> None:
    per_round = max(1, calls // rounds)
    print(f"1b. overhead, grpc.aio, one server: {rounds} rounds x {per_round} sequential awaits each way,")
    print(f"    and {rounds} rounds x {2 * per_round} calls from 32 tasks each way")
    bare = grpc.aio.insecure_channel(address)
    balanced = lbgrpc.aio.Channel(static.Publisher([address]))
    try:
        methods = {"bare": bare.unary_unary(METHOD), "lb": balanced.unary_unary(METHOD)}
        for method in methods.values():
            await async_sequential(lambda m=method: m(PAYLOAD), 300)
            await async_concurrent(lambda m=method: m(PAYLOAD), 300)
        rounds_ = Rounds(list(methods))
        per_call: dict[str, list[float]] = {name: [] for name in methods}
        for r in range(rounds):
            for name in rounds_.order(r):
                method = methods[name]
                rounds_.add(name, await async_sequential(lambda m=method: m(PAYLOAD), per_round))
            for name in rounds_.order(r):
                method = methods[name]
                per_call[name].append(await async_concurrent(lambda m=method: m(PAYLOAD), 2 * per_round))
        compare(summary, "    median latency", rounds_.median["bare"], rounds_.median["lb"], "aio median")
        compare(summary, "    p99 latency", rounds_.p99["bare"], rounds_.p99["lb"], "aio p99")
        compare(summary, "    time per call, 32 tasks", per_call["bare"], per_call["lb"], "aio 32 tasks")
    finally:
        await balanced.close()
        await bare.close()


# -- the stuck server ---------------------------------------------------------------------------


def hammer(method: Callable[..., Any], calls: int, slow: float) -> dict[str, Any]:
    """``calls`` calls from ``THREADS`` threads, each with the ``TIMEOUT`` deadline
    (``slow``: the latency above which a call counts as one the stuck server answered)."""
    latencies: list[float] = []
    failures: dict[str, int] = {}
    lock = threading.Lock()
    left = [calls]

    def work() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            started = time.perf_counter()
            try:
                method(PAYLOAD, timeout=TIMEOUT)
                failed = None
            except grpc.RpcError as error:
                code = error.code() if callable(getattr(error, "code", None)) else None
                failed = code.name if code is not None else type(error).__name__
            spent = time.perf_counter() - started
            with lock:
                latencies.append(spent)
                if failed is not None:
                    failures[failed] = failures.get(failed, 0) + 1

    started = time.perf_counter()
    workers = [threading.Thread(target=work) for _ in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "calls": len(latencies),
        "ok": len(latencies) - sum(failures.values()),
        "failures": failures,
        "p50": quantile(latencies, 0.5),
        "p99": quantile(latencies, 0.99),
        "p999": quantile(latencies, 0.999),
        "rate": len(latencies) / wall,
        "slow": sum(1 for latency in latencies if latency >= slow),
    }


def connected(channel: grpc.Channel) -> None:
    """Wait until the channel (its first sub-channel) is READY, then let the others connect."""
    grpc.channel_ready_future(channel).result(timeout=10)
    time.sleep(0.3)


def stuck_server(calls: int, stuck: float, service: float, summary: Summary) -> None:
    print(
        f"2. one stuck server of 11 (answers after {stuck:g} s, the others after {service * 1000:g} ms):"
        f" {calls} calls from {THREADS} threads, {TIMEOUT:g} s timeout each"
    )
    ports = [free_tcp_port() for _ in range(11)]
    addresses = [f"127.0.0.1:{port}" for port in ports]
    servers = Servers()
    results: dict[str, dict[str, Any]] = {}
    try:
        for port in ports:  # one process each: their threads share no GIL
            servers.start([port], slow={ports[5]: stuck} if port == ports[5] else None, delay=service)
        servers.wait_ready()

        def through_lb(balancer: Any) -> grpc.Channel:
            return lbgrpc.Channel(static.Publisher(addresses), balancer=balancer)

        def grpcio_round_robin() -> grpc.Channel:
            target = "ipv4:" + ",".join(addresses)
            return grpc.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")])

        cases: dict[str, Callable[[], grpc.Channel]] = {
            "lbgrpc PeakEwma": lambda: through_lb(PeakEwma),
            "grpcio round_robin": grpcio_round_robin,
            "lbgrpc RoundRobin": lambda: through_lb(RoundRobin),
        }
        for name, make in cases.items():
            channel = make()
            try:
                connected(channel)
                results[name] = hammer(channel.unary_unary(METHOD), calls, min(stuck, TIMEOUT) / 2)
            finally:
                channel.close()
    finally:
        servers.stop()
    print(f"    {'':<20}{'success':>9}{'p50':>11}{'p99':>11}{'p99.9':>11}{'calls/s':>9}{'stuck':>7}  failures")
    for name, result in results.items():
        rate = 100.0 * result["ok"] / result["calls"]
        print(
            f"    {name:<20}{rate:>8.2f}%{fmt(result['p50']):>11}{fmt(result['p99']):>11}{fmt(result['p999']):>11}"
            f"{result['rate']:>9.0f}{result['slow']:>7}  {result['failures'] or ''}"
        )
        summary.append((f"stuck: {name}", f"{rate:.2f}% ok, p50 {fmt(result['p50']).strip()}, "
                        f"p99 {fmt(result['p99']).strip()}, p99.9 {fmt(result['p999']).strip()}", ""))  # fmt: skip
    ratio = results["lbgrpc PeakEwma"]["p99"] / results["grpcio round_robin"]["p99"]
    print(f"    p99 ratio, PeakEwma / grpcio round_robin: {ratio:.4f}x   (information)")
    summary.append(("stuck: p99 PeakEwma / grpcio rr", f"{ratio:.4f}x", "(information)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="sequential calls each way, all rounds together")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the overhead comparisons")
    parser.add_argument("--stuck-calls", type=int, default=1500, help="calls per case of the stuck-server run")
    parser.add_argument("--stuck", type=float, default=1.0, help="the stuck server's answer time (seconds)")
    parser.add_argument("--service", type=float, default=0.001, help="the other servers' answer time (seconds)")
    parser.add_argument("--skip-overhead", action="store_true", help="run only the stuck-server experiment")
    parser.add_argument("--skip-stuck", action="store_true", help="run only the overhead comparisons")
    args = parser.parse_args()
    logging.getLogger("loadbalancer").setLevel(logging.CRITICAL)
    print(f"== gRPC: loadbalancer.grpc against grpcio {grpc.__version__} (Python {sys.version.split()[0]})")
    started = time.perf_counter()
    summary: Summary = []
    if not args.skip_overhead:
        port = free_tcp_port()
        servers = Servers()
        try:
            servers.start([port])
            servers.wait_ready()
            address = f"127.0.0.1:{port}"
            overhead_sync(address, args.calls, args.rounds, summary)
            asyncio.run(overhead_async(address, args.calls, args.rounds, summary))
        finally:
            servers.stop()
    if not args.skip_stuck:
        stuck_server(args.stuck_calls, args.stuck, args.service, summary)
    print("summary")
    width = max(len(what) for what, _, _ in summary)
    for what, figures, goal in summary:
        print(f"    {what:<{width}}  {figures:<70} {goal}".rstrip())
    print(f"== done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
