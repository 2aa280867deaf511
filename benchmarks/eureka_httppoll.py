"""Eureka and HTTP polling discovery: propagation to a subscriber, and what a poll costs.

    .venv/bin/python benchmarks/eureka_httppoll.py      # about 40 s

Propagation (a change made on the server -> the subscriber's callback), median and p99 over
``N`` changes, against a baseline measured in the same run: a bare httpx loop polling the
same server at the same interval and noticing the same change (what a hand-written poller
gets). The ratio is subject / baseline medians.

Poll cost, 5,000 instances: for HTTP polling, a poll answered ``304`` (ETag matched) against
one answered ``200`` (the list read, parsed and compared); for Eureka, a delta fetch with one
change applied against a full fetch of the registry. Both are time per call on the client.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadbalancer import eureka, httppoll
from tests.eureka_daemon import EurekaServer
from tests.seed_daemon import SeedServer

N = 60
INTERVAL = 0.05


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def bare_poller(url: str, headers: dict[str, str], seen: Any, stop: threading.Event) -> None:
    """The baseline: GET ``url`` every INTERVAL; ``seen(body)`` is told every answer."""
    with httpx.Client(headers=headers) as client:
        while not stop.is_set():
            seen(client.get(url).text)
            time.sleep(INTERVAL)


def measure(change: Any, wait_until: Any) -> list[float]:
    lags = []
    for n in range(N):
        started = time.perf_counter()
        change(n)
        if not wait_until(n).wait(10):
            raise RuntimeError(f"change {n} not seen")
        lags.append(time.perf_counter() - started)
        time.sleep(INTERVAL * 0.37)  # land the next change at another phase of the poll
    return lags


class Watcher:
    """Events set when a marker (``:{port}``) shows up in what is seen."""

    def __init__(self) -> None:
        self.events: dict[int, threading.Event] = {}
        self.lock = threading.Lock()

    def event(self, n: int) -> threading.Event:
        with self.lock:
            return self.events.setdefault(n, threading.Event())

    def saw_ports(self, ports: set[int]) -> None:
        for port in ports:
            self.event(port - 20000).set()


def eureka_propagation() -> None:
    with EurekaServer() as server:
        # subject
        watcher = Watcher()
        publisher = eureka.Publisher("bench", endpoints=server.url, interval=INTERVAL)
        publisher.subscribe(lambda eps: watcher.saw_ports({i.port for i in eps}))
        publisher.wait_ready(10)
        subject = measure(lambda n: server.register("bench", f"s{n}", "127.0.0.1", 20000 + n), watcher.event)
        publisher.close()
        # baseline: poll the delta by hand
        base = Watcher()
        stop = threading.Event()

        def seen(body: str) -> None:
            base.saw_ports({int(p) for p in range(20000 + N, 20000 + 2 * N) if f'"$": {p},' in body})

        thread = threading.Thread(
            target=bare_poller, args=(server.url + "apps/delta", {"Accept": "application/json"}, seen, stop)
        )
        thread.start()
        baseline = measure(lambda n: server.register("bench", f"b{n}", "127.0.0.1", 20000 + N + n),
                           lambda n: base.event(N + n))  # fmt: skip
        stop.set()
        thread.join()
    report("eureka propagation", subject, baseline)


def httppoll_propagation() -> None:
    with SeedServer() as seed:
        seed.publish([])
        watcher = Watcher()
        current: list[str] = []

        def change(n: int, offset: int = 0) -> None:
            current.append(f"127.0.0.1:{20000 + offset + n}")
            seed.publish(current)

        publisher = httppoll.Publisher(seed.url(), interval=INTERVAL)
        publisher.subscribe(lambda eps: watcher.saw_ports({i.port for i in eps}))
        publisher.wait_ready(10)
        subject = measure(change, watcher.event)
        publisher.close()
        base = Watcher()
        stop = threading.Event()

        def seen(body: str) -> None:
            base.saw_ports({int(p) for p in range(20000 + N, 20000 + 2 * N) if f":{p}" in body})

        thread = threading.Thread(target=bare_poller, args=(seed.url(), {}, seen, stop))
        thread.start()
        baseline = measure(lambda n: change(n, N), lambda n: base.event(N + n))
        stop.set()
        thread.join()
    report("http polling propagation", subject, baseline)


def report(what: str, subject: list[float], baseline: list[float]) -> None:
    (sm, sp), (bm, bp) = percentiles(subject), percentiles(baseline)
    print(f"{what} (interval {INTERVAL * 1000:.0f} ms, {N} changes):")
    print(f"  bare httpx poller   median {bm * 1000:6.1f} ms  p99 {bp * 1000:6.1f} ms")
    print(f"  publisher           median {sm * 1000:6.1f} ms  p99 {sp * 1000:6.1f} ms   ratio {sm / bm:.2f}x")


async def poll_cost() -> None:
    with SeedServer() as seed:
        seed.publish([{"id": f"i{n}", "address": "127.0.0.1", "port": 1024 + n, "tags": ["a"]} for n in range(5000)])
        cached = httppoll.Backend(seed.url())
        await cached.list("default")
        fresh = httppoll.Backend(seed.url())
        times: dict[str, list[float]] = {"304": [], "200": []}
        for _ in range(30):
            started = time.perf_counter()
            await cached._poll("default")
            times["304"].append(time.perf_counter() - started)
            fresh._state.clear()  # no validators: the whole list again
            started = time.perf_counter()
            await fresh._poll("default")
            fresh._merged("default")
            times["200"].append(time.perf_counter() - started)
        await cached.aclose()
        await fresh.aclose()
    a, b = statistics.median(times["304"]), statistics.median(times["200"])
    print("http polling, 5,000 instances, one poll:")
    print(f"  answered 200 (read, parse, compare)  {b * 1000:7.2f} ms")
    print(f"  answered 304 (ETag matched)          {a * 1000:7.2f} ms   ratio {a / b:.3f}x")

    with EurekaServer() as server:

        async def register(numbers: range) -> None:
            async with httpx.AsyncClient() as client:
                for n in numbers:
                    record = {"instanceId": f"i{n}", "hostName": "127.0.0.1", "app": "BIG", "ipAddr": "127.0.0.1",
                              "status": "UP", "port": {"$": 1024 + n, "@enabled": "true"}}  # fmt: skip
                    (await client.post(server.url + "apps/BIG", json={"instance": record})).raise_for_status()

        await asyncio.gather(*(register(range(k, 5000, 8)) for k in range(8)))
        server.forget_deltas()
        backend = eureka.Backend(eureka.Client(server.url))
        started = time.perf_counter()
        await backend.sync()
        full_first = time.perf_counter() - started
        full, delta = [], []
        for n in range(15):
            server.set_status("BIG", f"i{n}", "DOWN")
            started = time.perf_counter()
            await backend.sync()
            delta.append(time.perf_counter() - started)
            server.forget_deltas()
            backend._fetched = -float("inf")  # the next sync is a full fetch
            started = time.perf_counter()
            await backend.sync()
            full.append(time.perf_counter() - started)
        assert backend.fetches["mismatch"] == 0
        await backend.aclose()
    a, b = statistics.median(delta), statistics.median(full)
    print("eureka, 5,000 instances:")
    print(f"  first full fetch                     {full_first * 1000:7.2f} ms")
    print(f"  full fetch                           {b * 1000:7.2f} ms")
    print(f"  delta fetch, one change              {a * 1000:7.2f} ms   ratio {a / b:.3f}x")


def main() -> None:
    eureka_propagation()
    httppoll_propagation()
    asyncio.run(poll_cost())


if __name__ == "__main__":
    main()
