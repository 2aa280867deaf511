"""The proxy's own work per request, without sockets: microseconds of Python per keep-alive GET.

A worker's client protocol and upstream connection run on uvloop against in-memory
transports: each request is fed to the client side as bytes, the backend's answer is fed to
the upstream side, and the client's answer is checked. What remains is what the proxy does
per request (parsing, checks, balancing, the attempt, framing, metrics), the part a change to
its code can make dearer or cheaper; the sockets cost the same whatever the code. Run it for
this checkout and, with ``--baseline TREE``, for another one (an older commit, say) in the
same run, alternating; it prints each one's median and their ratio. Timings on a shared
machine wander by 10% and more: ``--callgrind`` counts instructions instead (valgrind), which
repeat exactly, as the difference between a run of 2,500 requests and one of 500.

    .venv/bin/python benchmarks/bench_proxy_path.py [--baseline TREE] [--requests 20000] [--rounds 5]
    .venv/bin/python benchmarks/bench_proxy_path.py --callgrind [--baseline TREE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

_CHILD = r"""
import asyncio, importlib, sys, time
import uvloop
tree, count, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if tree:
    sys.path.insert(0, tree)
from loadbalancer import RoundRobin, static
from loadbalancer.instance import Instance
from loadbalancer.proxy._metrics import Metrics
from loadbalancer.proxy._upstream import Backend, UpstreamConnection
try:
    from loadbalancer.proxy._http1 import ClientConnection
    from loadbalancer.proxy._proxy import Proxy
except ImportError:  # before the proxy's client side was split
    from loadbalancer.proxy._server import ClientConnection, Proxy

class Transport:
    def __init__(self):
        self.out = []
        self.closing = False
    def write(self, data): self.out.append(data)
    def get_extra_info(self, name, default=None): return ("127.0.0.1", 5555) if name == "peername" else default
    def is_closing(self): return self.closing
    def pause_reading(self): pass
    def resume_reading(self): pass
    def set_write_buffer_limits(self, high=None, low=None): pass
    def get_write_buffer_size(self): return 0
    def close(self): self.closing = True
    def abort(self): self.closing = True

REQUEST = b"GET /1k HTTP/1.1\r\nHost: bench\r\n\r\n"  # as wrk asks
ANSWER = (  # as nginx answers
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 21:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
    b"Last-Modified: Sun, 06 Dec 2026 20:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6765-400"\r\nAccept-Ranges: bytes\r\n\r\n' + b"x" * 1024
)

async def main():
    loop = asyncio.get_running_loop()
    backend = Backend(Instance("127.0.0.1", 9), loop=loop)
    upstream = UpstreamConnection(backend)
    upstream_transport = Transport()
    upstream.connection_made(upstream_transport)
    backend.idle.append(upstream)
    balancer = RoundRobin(static.Publisher([Instance("127.0.0.1", 9)], lambda instance: backend, close_delay=0))
    proxy = Proxy(balancer, metrics=Metrics())
    client = ClientConnection(proxy)
    client_transport = Transport()
    client.connection_made(client_transport)

    async def one():
        client.data_received(REQUEST)
        while not upstream_transport.out:
            await asyncio.sleep(0)
        upstream_transport.out.clear()
        upstream.data_received(ANSWER)
        while getattr(client, "task", None) is not None or getattr(client, "current", None) is not None:
            await asyncio.sleep(0)  # (older trees serve a request in a task, newer ones on callbacks)
        assert client_transport.out and client_transport.out[0].startswith(b"HTTP/1.1 200 "), client_transport.out
        client_transport.out.clear()

    for _ in range(warmup):
        await one()
    started = time.perf_counter()
    for _ in range(count):
        await one()
    print((time.perf_counter() - started) / count * 1e6)

uvloop.run(main())
"""


def _child(tree: str, count: int, warmup: int, prefix: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-c", _CHILD, tree, str(count), str(warmup)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tree or None,
        env={**os.environ, "PYTHONHASHSEED": "0", **({"PYTHONPATH": tree} if tree else {})},
    )


def run(tree: str, count: int) -> float:
    """Microseconds per request."""
    return float(_child(tree, count, 2000, []).stdout.strip())


def instructions(tree: str) -> float:
    """Instructions per request, by valgrind: 2,500 requests less 500 (what starting costs cancels out)."""
    totals = []
    for count in (500, 2500):
        out = _child(tree, count, 200, ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]).stderr
        found = re.search(r"Collected : (\d+)", out)
        if found is None:
            raise RuntimeError(f"no count from valgrind: {out[-500:]}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / 2000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", metavar="TREE", help="another checkout of the project to compare with")
    parser.add_argument("--requests", type=int, default=20000, help="requests timed in a round (default: 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each checkout, alternating (default: 5)")
    parser.add_argument("--callgrind", action="store_true", help="count instructions (valgrind) instead of timing")
    args = parser.parse_args()
    trees = {"this checkout": ""}
    if args.baseline:
        trees["baseline"] = os.path.abspath(args.baseline)
    if args.callgrind:
        if shutil.which("valgrind") is None:
            print("needs valgrind (Debian: apt-get install valgrind)")
            return 1
        counted = {name: instructions(tree) for name, tree in trees.items()}
        for name, value in counted.items():
            print(f"{name}: {value:,.0f} instructions per request")
        if args.baseline:
            print(f"this checkout / baseline: {counted['this checkout'] / counted['baseline']:.3f}x the instructions")
        return 0
    results: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            results[name].append(run(tree, args.requests))
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        print(f"{name}: {medians[name]:.1f} us per request (range {min(values):.1f}-{max(values):.1f})")
    if args.baseline:
        print(f"this checkout / baseline: {medians['this checkout'] / medians['baseline']:.2f}x the time")
    print(json.dumps({name: round(value, 2) for name, value in medians.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
