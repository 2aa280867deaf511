"""Kubernetes EndpointSlices: a Service of 5,000 endpoints in 50 slices, against the API test server.

Prints, each against a baseline measured in the same run:
- initial load: ``kubernetes.Publisher`` from construction to the 5,000-endpoint set, against
  one bare httpx GET of the same list plus ``json.loads`` (the floor any client pays);
- memory held by the publisher (tracemalloc, after the load), per endpoint;
- one endpoint changing: changes applied and factory calls per slice event (must be 1), the
  replace-to-subscriber propagation (median, p99) against a full re-list of the Service;
- the runtime client: one list of the 50 slices with httpx on the API directly, lightkube and
  kubernetes_asyncio (those installed), each its median of several lists.

    .venv/bin/python benchmarks/kubernetes_scale.py
"""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import statistics
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadbalancer import kubernetes
from loadbalancer.backend import Publisher as GenericPublisher
from loadbalancer.kubernetes import Config, TokenSource
from tests.k8s_api_server import K8sApiServer, endpoint, endpoint_slice

SLICES, PER_SLICE, CHANGES = 50, 100, 100
TOKEN = "bench"
PATH = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def make_slices() -> list[dict[str, Any]]:
    return [
        endpoint_slice(f"big-{s:02d}", "big", [endpoint(f"10.{s}.{n // 250}.{n % 250}", zone=f"z{s % 3}",
                                                        pod=f"big-{s}-{n}") for n in range(PER_SLICE)])
        for s in range(SLICES)
    ]  # fmt: skip


def raw_list(server: K8sApiServer) -> float:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False) as client:
        start = time.perf_counter()
        reply = client.get(PATH, params={"labelSelector": "kubernetes.io/service-name=big", "limit": "500"})
        items = json.loads(reply.content)["items"]
        took = time.perf_counter() - start
    assert len(items) == SLICES
    return took


def load(server: K8sApiServer) -> tuple[float, kubernetes.Publisher[Any]]:
    start = time.perf_counter()
    publisher = kubernetes.Publisher("big", config=Config(server.url, token=TokenSource(TOKEN)), close_delay=0)
    publisher.wait_ready(60)
    took = time.perf_counter() - start
    assert len(publisher.endpoints()) == SLICES * PER_SLICE
    return took, publisher


def held_memory(server: K8sApiServer) -> int:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    _, publisher = load(server)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    publisher.close()
    return after - before


def one_change(server: K8sApiServer, slices: list[dict[str, Any]]) -> None:
    applied: list[int] = []
    original = GenericPublisher._apply

    def counting(self: Any, batch: Any) -> None:
        applied.append(len(batch.changes))
        original(self, batch)

    made = 0
    lock = threading.Lock()

    def factory(instance: str) -> str:
        nonlocal made
        with lock:
            made += 1
        return instance

    GenericPublisher._apply = counting  # type: ignore[method-assign]
    seen = threading.Event()
    lags: list[float] = []
    sent = 0.0
    try:
        publisher = kubernetes.Publisher(
            "big", factory, config=Config(server.url, token=TokenSource(TOKEN)), close_delay=0
        )
        publisher.wait_ready(60)
        made_at_start = made

        def on_update(endpoints: Any) -> None:
            if sent:
                lags.append(time.perf_counter() - sent)
                seen.set()

        with publisher.subscribe(on_update):
            applied.clear()
            for n in range(CHANGES):
                target = copy.deepcopy(slices[n % SLICES])
                target["endpoints"][n % PER_SLICE] = endpoint(f"10.200.{n // 250}.{n % 250}")
                seen.clear()
                sent = time.perf_counter()
                server.apply(target)
                if not seen.wait(10):
                    raise RuntimeError("a change was not published")
                slices[n % SLICES] = target
        publisher.close()
    finally:
        GenericPublisher._apply = original  # type: ignore[method-assign]
    events = [count for count in applied if count]
    relists = []
    for _ in range(5):
        relists.append(raw_list(server))
    relist = statistics.median(relists)
    lags.sort()
    median, p99 = statistics.median(lags), lags[int(len(lags) * 0.99) - 1]
    print(
        f"one endpoint changing ({CHANGES} changes, each in a {PER_SLICE}-endpoint slice of a {SLICES}-slice Service):"
    )
    print(f"  changes applied per slice event: {sorted(set(events))} (over {len(events)} events;"
          " an endpoint replaced by another: its key removed, the new one's added)")  # fmt: skip
    print(f"  factory calls: {made - made_at_start} for {CHANGES} changes")
    print(f"  propagation replace -> subscriber: median {ms(median)}, p99 {ms(p99)}")
    print(f"  baseline, a bare re-list of the Service: {ms(relist)}; median propagation = {median / relist:.2f}x of it")


async def clients(server: K8sApiServer) -> None:
    print("the runtime client: one list of the 50 slices (median of 7), from the first byte asked to Python objects")
    results: dict[str, float] = {}

    async def timed(name: str, run: Any) -> None:
        times = []
        for _ in range(7):
            start = time.perf_counter()
            count = await run()
            times.append(time.perf_counter() - start)
            assert count == SLICES, (name, count)
        results[name] = statistics.median(times)

    headers = {"Authorization": f"Bearer {TOKEN}"}
    params = {"labelSelector": "kubernetes.io/service-name=big"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, trust_env=False) as http:

        async def with_httpx() -> int:
            return len((await http.get(PATH, params=params)).json()["items"])

        await timed("httpx (the API directly)", with_httpx)
    try:
        from lightkube import AsyncClient, KubeConfig
        from lightkube.resources.discovery_v1 import EndpointSlice

        config = KubeConfig.from_dict({
            "current-context": "bench",
            "contexts": [{"name": "bench", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [{"name": "c", "cluster": {"server": server.url}}],
            "users": [{"name": "u", "user": {"token": TOKEN}}],
        })  # fmt: skip
        light = AsyncClient(config, namespace="default")

        async def with_lightkube() -> int:
            return len([s async for s in light.list(EndpointSlice, labels={"kubernetes.io/service-name": "big"})])

        await timed("lightkube", with_lightkube)
        await light.close()
    except ImportError:
        print("  lightkube: not installed (pip install lightkube)")
    try:
        from kubernetes_asyncio import client as kac

        configuration = kac.Configuration(host=server.url)
        configuration.api_key = {"authorization": TOKEN, "BearerToken": TOKEN}
        configuration.api_key_prefix = {"authorization": "Bearer", "BearerToken": "Bearer"}
        api_client = kac.ApiClient(configuration)
        discovery = kac.DiscoveryV1Api(api_client)

        async def with_kubernetes_asyncio() -> int:
            reply = await discovery.list_namespaced_endpoint_slice(
                "default", label_selector="kubernetes.io/service-name=big"
            )
            return len(reply.items)

        await timed("kubernetes_asyncio", with_kubernetes_asyncio)
        await api_client.close()
    except ImportError:
        print("  kubernetes_asyncio: not installed (pip install kubernetes_asyncio)")
    base = results["httpx (the API directly)"]
    for name, took in results.items():
        print(f"  {name:28s} {ms(took):>10s}  {took / base:5.2f}x")


def main() -> None:
    slices = make_slices()
    with K8sApiServer(token=TOKEN) as server:
        for item in slices:
            server.apply(item)
        raw = statistics.median(raw_list(server) for _ in range(5))
        loads = []
        for _ in range(3):
            took, publisher = load(server)
            publisher.close()
            loads.append(took)
        loaded = statistics.median(loads)
        print(f"initial load of {SLICES * PER_SLICE} endpoints in {SLICES} slices:")
        print(f"  baseline, one bare GET of the list + json.loads: {ms(raw)}")
        print(f"  kubernetes.Publisher to the full set: {ms(loaded)} (median of 3; {loaded / raw:.2f}x)")
        held = held_memory(server)
        print(
            f"  memory held by the publisher: {held / 2**20:.1f} MiB ({held / (SLICES * PER_SLICE):.0f} B per endpoint)"
        )
        one_change(server, slices)
        asyncio.run(clients(server))


if __name__ == "__main__":
    main()
