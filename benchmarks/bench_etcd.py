"""etcd.Publisher against a real etcd on loopback: propagation, a large prefix, sustained change.

Starts its own single-member etcd (it needs the ``etcd`` binary: ``apt-get install
etcd-server``) with a throwaway data directory, and measures:

1. propagation: from just before a put is sent to the moment a subscriber sees the new
   set, over ``--changes`` (200) changes made one after another on a small prefix;
2. a prefix holding ``--instances`` (10,000) instances: the time from creating the
   publisher to the first complete set, and the memory that costs (tracemalloc, all
   threads; and the process's resident set growth);
3. ``--rate`` (100) changes per second for ``--seconds`` (30) on that large prefix: the lag
   from each put to the publisher reflecting it, in the first and the last 5 seconds (it
   should not grow), and the CPU time the process spent.

    .venv/bin/python benchmarks/bench_etcd.py [--changes 200] [--instances 10000] [--rate 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadbalancer import EndpointSet, etcd
from tests.etcd_server import EtcdServer, require_etcd_or_exit


def rss() -> int:
    """The resident set size of this process, in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:7.2f} ms"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def propagation(server: EtcdServer, changes: int) -> None:
    prefix = "/bench/propagation"
    server.put(f"{prefix}/a", "127.0.0.1:1000")
    seen: dict[int, float] = {}
    arrived = threading.Condition()

    def on_update(endpoints: EndpointSet[Any]) -> None:
        now = time.perf_counter()
        with arrived:
            for instance in endpoints.instances:
                seen.setdefault(instance.port, now)
            arrived.notify_all()

    latencies: list[float] = []
    with etcd.Publisher(prefix, str, endpoints=server.url, close_delay=0) as publisher:
        publisher.refresh()
        publisher.subscribe(on_update)
        for change in range(changes):
            port = 1001 + change
            time.sleep(random.uniform(0, 0.005))
            sent = time.perf_counter()
            server.put(f"{prefix}/a", f"127.0.0.1:{port}")
            with arrived:
                if not arrived.wait_for(lambda port=port: port in seen, timeout=10):  # type: ignore[misc]
                    sys.exit(f"change {change} was not seen within 10 s")
            latencies.append(seen[port] - sent)
    print(f"1. propagation, put -> subscriber callback, {changes} changes one after another")
    print(f"   median {ms(statistics.median(latencies))}   p99 {ms(percentile(latencies, 0.99))}")
    print(f"   max    {ms(max(latencies))}   min {ms(min(latencies))}")


def large_prefix(server: EtcdServer, instances: int) -> etcd.Publisher[str]:
    prefix = "/bench/large"
    items = [(f"{prefix}/i{i:06}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:8080") for i in range(instances)]
    server.put_many(items)

    def load() -> tuple[etcd.Publisher[str], float]:
        started = time.perf_counter()
        publisher = etcd.Publisher(prefix, str, endpoints=server.url, close_delay=0)
        complete = threading.Event()
        subscription = publisher.subscribe(lambda endpoints: len(endpoints) == instances and complete.set())
        if not complete.wait(60):
            sys.exit(f"the {instances} instances were not published within 60 s")
        loaded = time.perf_counter() - started
        subscription.unsubscribe()
        return publisher, loaded

    times = []
    for _ in range(3):
        publisher, loaded = load()
        publisher.close()
        times.append(loaded)
    # Memory: a fresh load under tracemalloc (which slows allocation, so it is not timed).
    gc.collect()
    before_rss = rss()
    tracemalloc.start()
    publisher, _ = load()
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grown = rss() - before_rss
    print(f"2. a prefix of {instances:,} instances")
    print(
        f"   initial load: median {statistics.median(times) * 1e3:.0f} ms of 3"
        f" ({', '.join(f'{t * 1e3:.0f}' for t in times)}; publisher created -> complete set to a subscriber)"
    )
    print(
        f"   memory: {current / 2**20:.1f} MiB held after the load ({current / instances:.0f} B per instance),"
        f" peak {peak / 2**20:.1f} MiB while loading (tracemalloc); RSS grew {grown / 2**20:.1f} MiB"
    )
    return publisher


def write(url: str, prefix: str, instances: int, rate: float, seconds: float, queue: Any) -> None:
    """In a process of its own: ``rate`` puts per second; sends back ``(sent, revision)`` for each."""
    import httpx

    from tests.etcd_server import b64

    rng = random.Random(7)
    sent_log: list[tuple[float, int]] = []
    with httpx.Client(base_url=url, timeout=5) as client:
        start = time.perf_counter()
        for n in range(int(rate * seconds)):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            key = f"{prefix}/i{rng.randrange(instances):06}"
            value = f"10.200.{n // 256 % 256}.{n % 256}:{1024 + n % 60000}"
            sent = time.perf_counter()
            reply = client.post("/v3/kv/put", json={"key": b64(key), "value": b64(value)}).json()
            sent_log.append((sent, int(reply["header"]["revision"])))
    queue.put((start, sent_log))


def sustained(server: EtcdServer, publisher: etcd.Publisher[str], instances: int, rate: float, seconds: float) -> None:
    prefix = "/bench/large"
    reflected: list[tuple[int, float]] = []  # (revision, when the publisher published it)
    lock = threading.Lock()

    def on_update(endpoints: EndpointSet[Any]) -> None:
        now = time.perf_counter()
        with lock:
            reflected.append((publisher.revision, now))

    # The writer runs in a process of its own, as the services changing the registry would.
    # (time.perf_counter is the system's monotonic clock on Linux: the same in both processes.)
    subscription = publisher.subscribe(on_update)
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    writer = context.Process(target=write, args=(server.url, prefix, instances, rate, seconds, queue))
    cpu_before = time.process_time()
    writer.start()
    start, changes = queue.get(timeout=seconds * 3 + 60)
    writer.join()
    total = len(changes)
    elapsed = changes[-1][0] - start
    last = changes[-1][1]
    deadline = time.perf_counter() + 30
    while publisher.revision < last:
        if time.perf_counter() > deadline:
            sys.exit("the publisher did not catch up within 30 s of the last change")
        time.sleep(0.01)
    cpu = time.process_time() - cpu_before
    subscription.unsubscribe()

    with lock:
        published = list(reflected)
    lags: list[tuple[float, float]] = []  # (sent relative to start, lag)
    k = 0
    for sent, revision in changes:
        while k < len(published) and published[k][0] < revision:
            k += 1
        if k == len(published):
            sys.exit(f"revision {revision} was never published")
        lags.append((sent - start, published[k][1] - sent))
    first = [lag for at, lag in lags if at < 5.0]
    final = [lag for at, lag in lags if at >= elapsed - 5.0]
    print(f"3. {rate:g} changes/s for {seconds:g} s on the {instances:,}-instance prefix ({total} changes)")
    print(f"   achieved {(total - 1) / elapsed:.1f} changes/s; {len(published)} sets published")
    print(f"   lag, first 5 s: median {ms(statistics.median(first))}   p99 {ms(percentile(first, 0.99))}")
    print(f"   lag, last 5 s:  median {ms(statistics.median(final))}   p99 {ms(percentile(final, 0.99))}")
    growth = statistics.median(final) / statistics.median(first)
    print(f"   lag growth (median last / first): {growth:.2f}x")
    print(
        f"   CPU of this process (the publisher): {cpu:.1f} s in {elapsed:.1f} s ({100 * cpu / elapsed:.0f}% of a core)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    require_etcd_or_exit()
    with EtcdServer() as server:
        print(f"etcd {server.url} (one member, data in a temporary directory)")
        propagation(server, args.changes)
        publisher = large_prefix(server, args.instances)
        try:
            sustained(server, publisher, args.instances, args.rate, args.seconds)
        finally:
            publisher.close()


if __name__ == "__main__":
    main()
