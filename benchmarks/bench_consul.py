"""consul.Publisher against the Consul API test server: propagation, 1,000 instances, sustained change.

Starts the Consul API test server (``tests/consul_api_server.py``, a separate process on
loopback) and measures, each against a baseline taken in the same run:

1. propagation: from just before a registration is sent to the moment a subscriber sees
   the new set, over ``--changes`` (200) changes made one after another. Baseline: a bare
   blocking query (``http.client``, no library) waiting on the same index, for the same
   changes: the ratio is what the library adds to what the protocol allows. The publisher
   waits up to 10 minutes per query, so every change comes from the blocking query, never
   from a poll interval;
2. a service of ``--instances`` (1,000) instances: the time from creating the publisher to
   the first complete set, and the memory it holds (tracemalloc); baseline: one bare GET of
   the same list and its decoded JSON;
3. ``--rate`` (100) check changes per second for ``--seconds`` (30) on that service: the
   lag from each change to the publisher reflecting it, in the first and the last 5
   seconds (the ratio last/first shows whether the lag grows).

    .venv/bin/python benchmarks/bench_consul.py [--changes 200] [--instances 1000] [--rate 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadbalancer import EndpointSet, consul
from tests.consul_fixtures import ConsulServer


class Agent:
    """A persistent HTTP connection to the test server, for the benchmark's own writes and reads."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=700)

    def call(self, method: str, path: str, body: Any = None) -> tuple[Any, int]:
        data = None if body is None else json.dumps(body)
        self.connection.request(method, path, body=data)
        reply = self.connection.getresponse()
        text = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{method} {path}: {reply.status} {text!r}")
        return (json.loads(text) if text else None), int(reply.getheader("X-Consul-Index") or 0)

    def register(self, service: str, n: int, status: str = "passing") -> None:
        body = {"Name": service, "ID": f"{service}-{n}", "Address": "127.0.0.1", "Port": 10000 + n,
                "Check": {"TTL": "1h", "Status": status}}  # fmt: skip
        self.call("PUT", "/v1/agent/service/register", body)

    def deregister(self, service: str, n: int) -> None:
        self.call("PUT", f"/v1/agent/service/deregister/{service}-{n}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f} ms"


def propagation(server: ConsulServer, changes: int) -> None:
    writer = Agent(server.port)
    service = "prop"
    writer.register(service, 0)
    seen = threading.Condition()
    state: dict[str, Any] = {"count": None, "at": 0.0}

    def on_change(endpoints: EndpointSet[Any]) -> None:
        with seen:
            state["count"], state["at"] = len(endpoints), time.perf_counter()
            seen.notify_all()

    library: list[float] = []
    bare: list[float] = []
    with consul.Publisher(service, endpoints=server.url, wait=600.0, close_delay=0) as publisher:
        publisher.subscribe(on_change)
        with seen:
            seen.wait_for(lambda: state["count"] == 1, timeout=30)
        reader = Agent(server.port)
        for k in range(changes):
            # the library: a change, then the subscriber's call
            start = time.perf_counter()
            if k % 2 == 0:
                writer.register(service, 1)
            else:
                writer.deregister(service, 1)
            want = 2  # {0} -> {0, 1}, or {0, 1, 2} -> {0, 2}
            with seen:
                if not seen.wait_for(lambda: state["count"] == want, timeout=30):  # noqa: B023
                    raise RuntimeError(f"change {k} not seen")
                library.append(state["at"] - start)
            # the baseline: a bare blocking query on the current index, for the same kind of change
            _, index = reader.call("GET", f"/v1/health/service/{service}?passing=1")
            answer: list[float] = []
            waiter = threading.Thread(target=lambda: (reader.call("GET", f"/v1/health/service/{service}?passing=1&index={index}&wait=600s"), answer.append(time.perf_counter())))  # noqa: B023,E501  # fmt: skip
            waiter.start()
            time.sleep(0.002)  # let the bare query reach the server and block (the library's is always blocked)
            start = time.perf_counter()
            writer.register(service, 2) if k % 2 == 0 else writer.deregister(service, 2)
            waiter.join()
            bare.append(answer[0] - start)
            with seen:  # the publisher sees that change too: wait for it before the next round
                seen.wait_for(lambda: state["count"] == (3 if k % 2 == 0 else 1), timeout=30)  # noqa: B023
    print(f"1. propagation over {changes} changes (registration -> subscriber call):")
    for name, values in (("consul.Publisher", library), ("bare blocking query", bare)):
        print(f"   {name:22} median {ms(statistics.median(values))}  p99 {ms(percentile(values, 99))}")
    print(f"   ratio (library / bare): median {statistics.median(library) / statistics.median(bare):.2f}x, "
          f"p99 {percentile(library, 99) / percentile(bare, 99):.2f}x")  # fmt: skip


def large(server: ConsulServer, instances: int, rate: float, seconds: float) -> None:
    agent = Agent(server.port)
    service = "big"
    for n in range(instances):
        agent.register(service, n)
    # baseline: one bare read of the list, decoded
    tracemalloc.start()
    start = time.perf_counter()
    agent.connection.request("GET", f"/v1/health/service/{service}?passing=1")
    raw = agent.connection.getresponse().read()
    decoded = json.loads(raw)
    bare_time = time.perf_counter() - start
    bare_memory = tracemalloc.get_traced_memory()[0]
    del decoded, raw
    tracemalloc.stop()

    tracemalloc.start()
    start = time.perf_counter()
    loaded = threading.Event()
    publisher = consul.Publisher(service, endpoints=server.url, wait=600.0, close_delay=0)
    publisher.subscribe(lambda endpoints: len(endpoints) == instances and loaded.set())
    loaded.wait(60)
    load_time = time.perf_counter() - start
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"2. {instances} instances: initial load {ms(load_time)} (bare GET + json {ms(bare_time)}, "
          f"{load_time / bare_time:.1f}x); memory {memory / 1e6:.2f} MB "
          f"(the decoded JSON alone {bare_memory / 1e6:.2f} MB, {memory / bare_memory:.1f}x)")  # fmt: skip

    # 3. sustained change: flip checks at `rate` a second; each write moves the Raft index by one
    _, base = agent.call("GET", f"/v1/health/service/{service}")
    published: list[tuple[float, int]] = []
    lock = threading.Lock()

    def on_change(_: EndpointSet[Any]) -> None:
        with lock:
            published.append((time.perf_counter(), publisher.index))

    publisher.subscribe(on_change)
    writes: list[tuple[float, int]] = []
    total = int(rate * seconds)
    begin = time.perf_counter()
    for k in range(total):
        due = begin + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        n = k % instances
        verb = "fail" if (k // instances) % 2 == 0 else "pass"
        at = time.perf_counter()
        agent.call("PUT", f"/v1/agent/check/{verb}/service:{service}-{n}")
        writes.append((at, base + k + 1))
    end_index = base + total
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and publisher.index < end_index:
        time.sleep(0.01)
    publisher.close()
    with lock:
        seen = list(published)

    def lag(at: float, index: int) -> float:
        for when, reached in seen:
            if reached >= index and when >= at:
                return when - at
        return float("inf")

    window = 5.0
    first = [lag(at, i) for at, i in writes if at - begin < window]
    last = [lag(at, i) for at, i in writes if at - begin > seconds - window]
    achieved = total / (writes[-1][0] - begin)
    print(f"3. {rate:g} changes/s for {seconds:g} s ({achieved:.0f}/s achieved, {len(seen)} publications): lag")
    print(f"   first {window:g} s: median {ms(statistics.median(first))}  p99 {ms(percentile(first, 99))}")
    print(f"   last  {window:g} s: median {ms(statistics.median(last))}  p99 {ms(percentile(last, 99))}")
    print(f"   growth (last / first): median {statistics.median(last) / statistics.median(first):.2f}x, "
          f"p99 {percentile(last, 99) / percentile(first, 99):.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with ConsulServer() as server:
        propagation(server, args.changes)
        large(server, args.instances, args.rate, args.seconds)


if __name__ == "__main__":
    main()
