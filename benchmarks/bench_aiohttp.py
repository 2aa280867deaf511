"""loadbalancer.aiohttp's middleware against a bare aiohttp session, on one real local HTTP backend.

Backend: nginx serving a 1 KiB file on 127.0.0.1 where nginx is installed (Debian
``nginx-light``; started as ``bench_http.py`` starts it), else an aiohttp.web server in a
child process. Both cases run in the same event loop against that one backend:

- baseline: ``ClientSession()`` getting ``http://127.0.0.1:PORT/echo``, the backend's address;
- subject: ``ClientSession(middlewares=(mw,))`` getting ``http://api/echo``, with
  ``mw = lbaiohttp.middleware({"api": static.Publisher([address])})`` (defaults: RoundRobin,
  2 retries, a retry budget).

- floor (information): ``ClientSession(middlewares=(passthrough,))`` getting the backend's
  address through a middleware that only awaits ``handler(request)``: what aiohttp's own
  middleware chain costs, which no middleware can go below.

Measures: the latency of sequential requests (each body read to its end), in rounds of
``--calls`` requests per case, the order rotating from round to round; per round the median
and the p99 of each case, and their ratio to the baseline's. Printed: the median of the
per-round ratios (and their range); the times shown are the best round's. Goal: median and
p99 ratios <= 1.1x. The middleware's own work per call (pick, URL, judging the answer) is
about 1-2 us, against some 150 us for a request to nginx: the rest of any gap is aiohttp's
middleware chain (the floor line) and the machine's noise.

    .venv/bin/python benchmarks/bench_aiohttp.py [--rounds 16] [--calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, ClientSession

from loadbalancer import aiohttp as lbaiohttp
from loadbalancer import static

_CHILD = """
import sys
from aiohttp import web
body = b"x" * 1024
async def echo(request):
    return web.Response(body=body)
app = web.Application()
app.router.add_get("/echo", echo)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=lambda *_: None)
"""


class AiohttpServer:
    """An aiohttp.web server in a child process on a free 127.0.0.1 port, serving ``/echo`` (1 KiB)."""

    def __init__(self) -> None:
        from tests.daemon import free_tcp_port

        self.port = free_tcp_port()
        self.address = f"127.0.0.1:{self.port}"
        self._process = subprocess.Popen([sys.executable, "-c", _CHILD, str(self.port)])

    def kill(self) -> None:
        self._process.terminate()
        self._process.wait(5)


async def _ready(address: str) -> None:
    deadline = time.monotonic() + 10
    async with ClientSession() as session:
        while True:
            try:
                async with session.get(f"http://{address}/echo") as response:
                    await response.read()
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def latencies(get: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    samples = []
    perf = time.perf_counter
    for _ in range(calls):
        started = perf()
        await get()
        samples.append(perf() - started)
    return samples


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def show(label: str, baseline: list[float], subject: list[float], ratios: list[float], goal: float | None) -> None:
    ratio = statistics.median(ratios)
    verdict = "(information)" if goal is None else f"goal <= {goal:g}x  {'PASS' if ratio <= goal else 'MISS'}"
    print(
        f"    {label:<13} baseline {min(baseline) * 1e6:8.1f} us   subject {min(subject) * 1e6:8.1f} us"
        f"   ratio {ratio:5.3f}x (median of {len(ratios)} rounds, range {min(ratios):.3f}-{max(ratios):.3f})"
        f"   {verdict}"
    )


async def passthrough(request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
    return await handler(request)


async def overhead(address: str, rounds: int, calls: int) -> None:
    await _ready(address)
    mw = lbaiohttp.middleware({"api": static.Publisher([address])})
    async with (
        mw,
        ClientSession() as bare,
        ClientSession(middlewares=(mw,)) as balanced,
        ClientSession(middlewares=(passthrough,)) as chained,
    ):

        async def get_bare() -> None:
            async with bare.get(f"http://{address}/echo") as response:
                await response.read()

        async def get_balanced() -> None:
            async with balanced.get("http://api/echo") as response:
                await response.read()

        async def get_chained() -> None:
            async with chained.get(f"http://{address}/echo") as response:
                await response.read()

        cases = [("bare", get_bare), ("balanced", get_balanced), ("floor", get_chained)]
        for _, get in cases:
            await latencies(get, 300)  # warm up: connections, caches
        medians: dict[str, list[float]] = {name: [] for name, _ in cases}
        tails: dict[str, list[float]] = {name: [] for name, _ in cases}
        gc.disable()  # as timeit: a collection would land on one case or another at random
        try:
            for r in range(rounds):
                for name, get in cases[r % 3 :] + cases[: r % 3]:
                    samples = await latencies(get, calls)
                    medians[name].append(statistics.median(samples))
                    tails[name].append(p99(samples))
                gc.collect()
        finally:
            gc.enable()
    print(f"1. sequential latency, {rounds} rounds x {calls} requests per case, rotating order")
    for label, figures in (("median", medians), ("p99", tails)):
        show(label, figures["bare"], figures["balanced"], ratios(figures["balanced"], figures["bare"]), 1.1)
    for label, figures in (("median", medians), ("p99", tails)):
        show(f"{label}, floor", figures["bare"], figures["floor"], ratios(figures["floor"], figures["bare"]), None)


def ratios(subject: list[float], baseline: list[float]) -> list[float]:
    return [s / b for s, b in zip(subject, baseline, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=16, help="alternating rounds per case")
    parser.add_argument("--calls", type=int, default=500, help="sequential requests per case per round")
    args = parser.parse_args()
    logging.getLogger("loadbalancer").setLevel(logging.CRITICAL)
    started = time.perf_counter()
    print(f"== loadbalancer.aiohttp overhead   (Python {sys.version.split()[0]})")
    if shutil.which("nginx"):
        from bench_http import Nginx  # the same nginx set-up as the httpx benchmark

        print("backend: nginx, a 1 KiB file")
        server: Nginx | AiohttpServer = Nginx()
    else:
        print("backend: aiohttp.web in a child process (install nginx-light for a faster one)")
        server = AiohttpServer()
    try:
        asyncio.run(overhead(server.address, args.rounds, args.calls))
    finally:
        server.kill()
    print(f"== done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
