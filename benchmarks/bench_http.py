"""loadbalancer.http against a bare httpx client and against ballast, on real local HTTP backends.

Backends: nginx serving a 1 KiB file on 127.0.0.1 where nginx is installed (Debian
``nginx-light``), else ``tests/http_server.py`` child processes (Python's HTTP server, which
then sets the pace); the crash run always uses the latter (they can be killed and started
again). The figures are ratios of runs made in turn against the same backends.

1. overhead, one backend: a request through ``http.Transport`` (``http://api/...``) against
   a bare ``httpx.Client`` to the backend's own address: median latency of sequential
   requests, and throughput with 4 threads; the same for ``AsyncTransport`` and
   ``httpx.AsyncClient`` (32 concurrent tasks). Goals: latency <= 1.1x, throughput >= 0.9x.
2. against ballast 0.4.0 (``pip install ballast future``; skipped without it) on two
   backends, 4 threads: throughput ratio. Goal: >= 5x.
3. a backend crash and restart under 200 req/s through ``AsyncTransport`` with ejection
   (one of three killed a third of the way in, restarted two thirds in): failed requests,
   and p99 against the same run with no fault. Goal: none failed, p99 <= 2x.

    .venv/bin/python benchmarks/bench_http.py [--seconds 3] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import httpx

from loadbalancer import http as lbhttp
from loadbalancer import static
from tests.http_fixtures import HttpBackend, running


def sequential(get: Callable[[], Any], n: int) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        get()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def threaded(get: Callable[[], Any], seconds: float, threads: int = 4) -> float:
    done = [0] * threads
    stop = time.perf_counter() + seconds

    def work(k: int) -> None:
        while time.perf_counter() < stop:
            get()
            done[k] += 1

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / seconds


async def async_sequential(get: Callable[[], Any], n: int) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await get()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def async_throughput(get: Callable[[], Any], seconds: float, tasks: int = 32) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def work() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await get()
            done += 1

    await asyncio.gather(*(work() for _ in range(tasks)))
    return done / seconds


def show(label: str, baseline: float, subject: float, unit: str, goal: str, ok: bool) -> None:
    ratio = subject / baseline
    print(f"    {label:<44} baseline {baseline:>10.1f} {unit}  subject {subject:>10.1f} {unit}  ratio {ratio:5.2f}x"
          f"  goal {goal}  {'PASS' if ok else 'MISS'}")  # fmt: skip


class Nginx:
    """nginx on a free 127.0.0.1 port, serving ``/echo`` (1 KiB) from a temporary directory."""

    def __init__(self) -> None:
        import shutil
        import subprocess
        import tempfile

        from tests.daemon import free_tcp_port

        self.port = free_tcp_port()
        self.address = f"127.0.0.1:{self.port}"
        self._dir = tempfile.mkdtemp()
        os.chmod(self._dir, 0o755)
        with open(os.path.join(self._dir, "echo"), "wb") as body:
            body.write(b"x" * 1024)
        conf = os.path.join(self._dir, "nginx.conf")
        with open(conf, "w") as config:
            config.write(
                f"daemon off; worker_processes 1; pid {self._dir}/nginx.pid; error_log {self._dir}/error.log;\n"
                f"events {{ worker_connections 1024; }}\n"
                f"http {{ access_log off; keepalive_requests 100000; server {{ listen 127.0.0.1:{self.port};"
                f" root {self._dir}; location / {{ }} }} }}\n"
            )
        self._process = subprocess.Popen([shutil.which("nginx") or "nginx", "-c", conf, "-p", self._dir])
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"http://{self.address}/echo", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        import shutil

        self._process.terminate()
        self._process.wait(5)
        shutil.rmtree(self._dir, ignore_errors=True)


def overhead(backend: HttpBackend | Nginx, seconds: float) -> None:
    print("1. overhead over one backend (interleaved: bare, loadbalancer, bare, loadbalancer)")
    bare = httpx.Client(base_url=f"http://{backend.address}")
    balanced = httpx.Client(transport=lbhttp.Transport({"api": static.Publisher([backend.address])}))
    for client in (bare, balanced):
        for _ in range(200):
            client.get("http://api/echo" if client is balanced else "/echo")  # warm up the connections
    lat_bare, lat_lb, tp_bare, tp_lb = [], [], [], []
    for _ in range(2):
        lat_bare.append(sequential(lambda: bare.get("/echo"), 1500))
        lat_lb.append(sequential(lambda: balanced.get("http://api/echo"), 1500))
        tp_bare.append(threaded(lambda: bare.get("/echo"), seconds))
        tp_lb.append(threaded(lambda: balanced.get("http://api/echo"), seconds))
    base, subj = min(lat_bare) * 1e6, min(lat_lb) * 1e6
    show("sync latency (median, us)", base, subj, "us", "<= 1.1x", subj / base <= 1.1)
    base, subj = max(tp_bare), max(tp_lb)
    show("sync throughput, 4 threads (req/s)", base, subj, "/s", ">= 0.9x", subj / base >= 0.9)
    bare.close()
    balanced.close()

    async def in_async() -> None:
        bare = httpx.AsyncClient(base_url=f"http://{backend.address}")
        transport = lbhttp.AsyncTransport({"api": static.Publisher([backend.address])})
        balanced = httpx.AsyncClient(transport=transport)
        for _ in range(200):
            await bare.get("/echo")
            await balanced.get("http://api/echo")
        lat_bare, lat_lb, tp_bare, tp_lb = [], [], [], []
        for _ in range(2):
            lat_bare.append(await async_sequential(lambda: bare.get("/echo"), 1500))
            lat_lb.append(await async_sequential(lambda: balanced.get("http://api/echo"), 1500))
            tp_bare.append(await async_throughput(lambda: bare.get("/echo"), seconds))
            tp_lb.append(await async_throughput(lambda: balanced.get("http://api/echo"), seconds))
        base, subj = min(lat_bare) * 1e6, min(lat_lb) * 1e6
        show("async latency (median, us)", base, subj, "us", "<= 1.1x", subj / base <= 1.1)
        base, subj = max(tp_bare), max(tp_lb)
        show("async throughput, 32 tasks (req/s)", base, subj, "/s", ">= 0.9x", subj / base >= 0.9)
        await bare.aclose()
        await balanced.aclose()

    asyncio.run(in_async())


def versus_ballast(pair: list[HttpBackend] | list[Nginx], seconds: float) -> None:
    print("2. against ballast 0.4.0, two backends, 4 threads")
    try:
        import ballast
    except ImportError:
        print("    skipped: ballast is not installed (pip install ballast future)")
        return
    service = ballast.Service([b.address for b in pair])
    balanced = httpx.Client(transport=lbhttp.Transport({"api": static.Publisher([b.address for b in pair])}))
    theirs = threaded(lambda: service.get("/echo"), seconds)
    ours = threaded(lambda: balanced.get("http://api/echo"), seconds)
    show("throughput (req/s)", theirs, ours, "/s", ">= 5x", ours / theirs >= 5)
    balanced.close()


async def fault_run(fleet: list[HttpBackend], fault: bool, rate: float, seconds: float) -> dict[str, Any]:
    publisher = static.Publisher([b.address for b in fleet])
    transport = lbhttp.AsyncTransport(
        {"api": publisher},
        retries=3,
        timeout=2.0,
        attempt_timeout=0.5,
        eject={"consecutive_failures": 2, "base_ejection_time": 1.0},
    )
    client = httpx.AsyncClient(transport=transport)
    loop = asyncio.get_running_loop()
    rng = random.Random(7)
    latencies: list[float] = []
    failures: list[str] = []
    victim = fleet[1]

    async def one(scheduled: float) -> None:
        try:
            (await client.get("http://api/echo")).raise_for_status()
        except Exception as error:
            failures.append(type(error).__name__)
        else:
            latencies.append(loop.time() - scheduled)

    async def chaos() -> None:
        await asyncio.sleep(seconds / 3)
        await asyncio.to_thread(victim.kill)
        await asyncio.sleep(seconds / 3)
        await asyncio.to_thread(victim.start)

    for _ in range(30):
        await client.get("http://api/echo")
    tasks: list[asyncio.Task[None]] = []
    chaos_task = asyncio.create_task(chaos()) if fault else None
    start = arrival = loop.time()
    while arrival < start + seconds:
        arrival += rng.expovariate(rate)
        delay = arrival - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(arrival)))
    await asyncio.gather(*tasks)
    if chaos_task is not None:
        await chaos_task
    await client.aclose()
    latencies.sort()
    return {
        "requests": len(tasks),
        "failed": len(failures),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "kinds": sorted(set(failures)),
    }


def faults(fleet: list[HttpBackend], rate: float, seconds: float) -> None:
    print(f"3. backend crash and restart: 3 backends, {rate:g} req/s for {seconds:g} s through AsyncTransport")
    asyncio.run(fault_run(fleet, False, rate, 2.0))  # warm-up, not reported
    reference = asyncio.run(fault_run(fleet, False, rate, seconds))
    result = asyncio.run(fault_run(fleet, True, rate, seconds))
    ratio = result["p99"] / reference["p99"]
    ok = result["failed"] == 0 and ratio <= 2
    for name, run in (("no fault", reference), ("fault", result)):
        line = f"    {name + ':':<10}{run['requests']} requests, {run['failed']} failed, p99 {run['p99'] * 1000:.1f} ms"
        if run is result:
            line += f" ({ratio:.2f}x)  {run['kinds'] or ''}  goal 0 failed, p99 <= 2x  {'PASS' if ok else 'MISS'}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each throughput run")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second of the fault run")
    args = parser.parse_args()
    logging.getLogger("loadbalancer").setLevel(logging.CRITICAL)
    started = time.perf_counter()
    import shutil

    with running(3) as fleet:
        if shutil.which("nginx"):
            print("backends: nginx, a 1 KiB file")
            servers = [Nginx(), Nginx()]
            try:
                overhead(servers[0], args.seconds)
                versus_ballast(servers, args.seconds)
            finally:
                for server in servers:
                    server.kill()
        else:
            print("backends: Python's HTTP server (install nginx-light for a faster one)")
            overhead(fleet[0], args.seconds)
            versus_ballast(fleet[:2], args.seconds)
        faults(fleet, args.rate, 6.0)
    print(f"== done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
