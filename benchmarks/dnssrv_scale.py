"""Scale: 1,000 dnssrv publishers on 1,000 names, each polling every second, in one process.

Starts its own BIND on loopback and gives each name three SRV records whose targets have
A/AAAA records (so answers carry glue, in a shuffled order). Once every publisher has its
set and the polls have settled, it measures over ``--seconds`` this process's CPU time as a
fraction of one core, named's CPU (another process, from /proc), the threads, and the polls.
Goal: under 15% of one core, at most 4 threads.

Two baselines run in the same process afterwards, each on a plain asyncio loop:
- "bare UDP": one query per name per second over a fresh socket, the reply not even read:
  the least any asyncio client can spend on these lookups;
- "dnspython resolve()": what a poller that calls ``resolver.resolve()`` each time spends,
  per lookup (on fewer names, so that it keeps up).

    .venv/bin/python benchmarks/dnssrv_scale.py [--publishers 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dns.asyncresolver
import dns.message

from loadbalancer import dnssrv
from loadbalancer.dnssrv import _probe
from loadbalancer.dnssrv._wire import UdpQuery
from tests.servers import BindServer, require_named_or_exit

polls = {"probes": 0, "resolver": 0}


class CountedQuery(UdpQuery):
    def __init__(self, *args: Any) -> None:
        polls["probes"] += 1
        super().__init__(*args)


def count_lookups(lookup: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def counted(*args: Any) -> Any:
        polls["resolver"] += 1
        return await lookup(*args)

    return counted


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(seconds: float, pid: int) -> tuple[float, float, float]:
    """(wall seconds, this process's CPU seconds, named's CPU seconds) over ``seconds``."""
    wall, cpu, named = time.monotonic(), time.process_time(), cpu_seconds(pid)
    time.sleep(seconds)
    return time.monotonic() - wall, time.process_time() - cpu, cpu_seconds(pid) - named


async def measure_async(seconds: float) -> tuple[float, float]:
    wall, cpu = time.monotonic(), time.process_time()
    await asyncio.sleep(seconds)
    return time.monotonic() - wall, time.process_time() - cpu


async def bare_udp(port: int, names: list[str], warmup: float, seconds: float) -> tuple[float, int]:
    """CPU seconds per query of the floor: a fresh socket per query, the reply only received."""
    loop = asyncio.get_running_loop()
    sent = 0

    class Poller:
        def __init__(self, name: str) -> None:
            self.query = dns.message.make_query(name, "SRV").to_wire()
            loop.call_later(random.random(), self.send)

        def send(self) -> None:
            nonlocal sent
            sent += 1
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.setblocking(False)
            self.sock.connect(("127.0.0.1", port))
            self.sock.send(os.urandom(2) + self.query[2:])
            loop.add_reader(self.sock.fileno(), self.received)
            self.timer = loop.call_later(2.0, self.received)

        def received(self) -> None:
            try:
                self.sock.recv(65535)
            except BlockingIOError:
                return
            except OSError:
                pass
            self.timer.cancel()
            loop.remove_reader(self.sock.fileno())
            self.sock.close()
            loop.call_later(1.0 - 0.1 * random.random(), self.send)

    pollers = [Poller(name) for name in names]
    await asyncio.sleep(warmup)
    before = sent
    _, cpu = await measure_async(seconds)
    del pollers
    return cpu / max(1, sent - before), sent - before


async def naive(port: int, names: list[str], warmup: float, seconds: float) -> tuple[float, int]:
    """CPU seconds per lookup of a poller calling dnspython's ``resolve()`` every second."""
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], port
    done = 0

    async def poll(name: str) -> None:
        nonlocal done
        await asyncio.sleep(random.random())
        while True:
            await resolver.resolve(name, "SRV")
            done += 1
            await asyncio.sleep(1.0 - 0.1 * random.random())

    tasks = [asyncio.create_task(poll(name)) for name in names]
    await asyncio.sleep(warmup)
    before = done
    _, cpu = await measure_async(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=5.0)  # dnspython's resolve() may not end on cancellation
    return cpu / max(1, done - before), done - before


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--publishers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of polling before measuring")
    args = parser.parse_args()
    require_named_or_exit()
    vars(_probe)["UdpQuery"] = CountedQuery  # count the probes
    dnssrv.Backend.list = count_lookups(dnssrv.Backend.list)  # type: ignore[method-assign]

    with BindServer() as bind:
        hosts = [f"host{i}" for i in range(30)]
        for index, host in enumerate(hosts):
            bind.set_address(host, [f"127.0.1.{index + 1}", f"fd00::{index + 1:x}"])
        names = [f"_svc{i}._tcp" for i in range(args.publishers)]
        bind.set_many(
            {
                name: [(10, 10 + (i % 3), 8000 + j, hosts[(i + j) % len(hosts)]) for j in range(3)]
                for i, name in enumerate(names)
            }
        )
        resolver = bind.resolver(timeout=2.0, lifetime=4.0)
        started = time.monotonic()
        publishers = [dnssrv.Publisher(bind.name(name), args.interval, str, resolver=resolver) for name in names]
        while sum(1 for p in publishers if len(p.endpoints()) == 3) < len(publishers):
            if time.monotonic() - started > 60:
                sys.exit("publishers did not all see their records within 60 s")
            time.sleep(0.05)
        settled = time.monotonic() - started
        time.sleep(args.warmup)

        assert bind.pid is not None
        counts = dict(polls)
        wall, cpu, named = measure(args.seconds, bind.pid)
        threads = threading.active_count()
        probes, lookups = polls["probes"] - counts["probes"], polls["resolver"] - counts["resolver"]
        stale = sum(1 for p in publishers if p.endpoints().stale)
        for publisher in publishers:
            publisher.close()

        full_names = [bind.name(name) for name in names]
        floor, floor_count = asyncio.run(bare_udp(bind.port, full_names, 3.0, args.seconds))
        naive_names = full_names[: max(1, len(full_names) // 5)]
        resolve, resolve_count = asyncio.run(naive(bind.port, naive_names, 3.0, args.seconds))

    per_poll = cpu / max(1, probes + lookups)
    print(f"dnssrv scale: {len(publishers)} publishers on {len(names)} names, each polling every {args.interval:g} s")
    print(f"  all sets published after {settled:.2f} s; then {args.warmup:g} s of polling before measuring")
    print(f"  measured over {wall:.1f} s:")
    print(f"    this process CPU      {cpu / wall:6.1%} of one core   (goal < 15%)")
    print(f"    named's CPU           {named / wall:6.1%} of one core   (the server, another process)")
    print(f"    threads               {threads:6d}                 (goal <= 4)")
    print(f"    polls                 {(probes + lookups) / wall:6.0f} /s: {probes} probes, {lookups} resolver lookups")
    print(f"    CPU per poll          {per_poll * 1e6:6.0f} us")
    print(f"    stale sets            {stale:6d}")
    print("  baselines, same run, CPU per lookup:")
    print(f"    bare UDP query, reply unread     {floor * 1e6:6.0f} us  ({floor_count} queries)")
    print(f"    dnspython resolve() per poll     {resolve * 1e6:6.0f} us  ({resolve_count} lookups)")
    print(f"  ratios: a publisher poll costs {per_poll / floor:.2f}x the bare UDP floor;")
    print(f"          resolve() per poll would cost {resolve / per_poll:.1f}x a publisher poll")
    print(
        f"          ({len(names)} names with resolve(): about {resolve * len(names) / args.interval:.0%} of one core)"
    )


if __name__ == "__main__":
    main()
