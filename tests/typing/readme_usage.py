"""The README's compositions, as users write them: checked with ``mypy --strict`` by tests/test_typing.py.

Nothing here runs (no server is reached); it only has to type-check without casts.
"""

from __future__ import annotations

from typing import Any

import httpx

import loadbalancer
from loadbalancer import (
    ConsistentHash,
    EndpointSet,
    HealthChecker,
    Hedge,
    Instance,
    LeastLoaded,
    OutlierDetector,
    PeakEwma,
    Random,
    Retry,
    RoundRobin,
    Weighted,
    dnssrv,
    memory,
    static,
)
from loadbalancer.health import HttpCheck


class Backend:
    """A class-based endpoint: the class itself is the factory."""

    def __init__(self, instance: str) -> None:
        self.client = httpx.Client(base_url=f"http://{instance}")

    def __call__(self, request: dict[str, Any]) -> Any:
        response = self.client.post("/rpc", json=request, timeout=loadbalancer.remaining())
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self.client.close()


def plain_factory(instance: str) -> Backend:
    return Backend(instance)


def weighted_factory(instance: Instance) -> Backend:
    return Backend(f"{instance.address}?weight={instance.weight}")


async def async_endpoint(request: str) -> str:
    return request


def compositions() -> None:
    publisher = static.Publisher(["10.0.0.1:8080", "10.0.0.2:8080"], Backend)
    call = Retry(3, 2.0, RoundRobin(publisher), retry_on=(httpx.TransportError, httpx.HTTPStatusError))
    result: Any = call({"op": "ping"})
    publisher.replace(["10.0.0.2:8080", "10.0.0.3:8080"])

    filtered = OutlierDetector(HealthChecker(static.Publisher(["10.0.0.1:80"], plain_factory), HttpCheck("/health")))
    guarded = Retry(3, 2.0, RoundRobin(filtered))
    guarded({"op": "ping"})
    Retry(3, 2.0, LeastLoaded(filtered))({"op": "ping"})
    Retry(3, 2.0, PeakEwma(OutlierDetector(static.Publisher(["10.0.0.1:80"], Backend))))({"op": "ping"})
    Retry(3, 2.0, Weighted(static.Publisher(["10.0.0.1:80"], weighted_factory)))({"op": "ping"})
    Retry(3, 2.0, Random(dnssrv.Publisher("_api._tcp.svc.example.", 5.0, Backend)))({"op": "ping"})

    instances = static.Publisher(["10.0.0.1:80"])  # no factory: the instances themselves
    picked: Instance = RoundRobin(instances).endpoint()
    owner: Instance = ConsistentHash(instances).endpoint(key="user-42")
    print(result, picked, owner)

    hedged = Retry(3, 2.0, Hedge(RoundRobin(static.Publisher(["a:1"], lambda a: async_endpoint)), after=0.05))
    print(hedged)

    def on_update(endpoints: EndpointSet[Backend]) -> None:
        print(len(endpoints), endpoints.stale)

    publisher.subscribe(on_update).unsubscribe()
    ready: bool = publisher.wait_ready(1.0)
    print(ready)

    with memory.Registry() as registry:
        registry.register("api", "10.0.0.1:80", ttl=10)
        lb = RoundRobin(registry.watch("api", Backend, tags=["blue"]))
        Retry(3, 2.0, lb)({"op": "ping"})


async def async_compositions() -> None:
    call = Retry(3, 2.0, RoundRobin(static.Publisher(["a:1"], lambda address: async_endpoint)))
    answer: str = await call("ping")
    also: str = await call.acall("ping")
    print(answer, also)


def without_a_factory() -> None:
    # a publisher without a factory publishes Instances: no annotation needed
    srv: Instance = RoundRobin(dnssrv.Publisher("_api._tcp.svc.example.", 5.0)).endpoint()
    listed: Instance = Random(static.Publisher(["10.0.0.1:80"])).endpoint()
    with memory.Registry() as registry:
        watched: Instance = RoundRobin(registry.watch("api")).endpoint()
    print(srv, listed, watched)


def http_clients() -> None:
    import requests

    from loadbalancer import http

    client = httpx.Client(transport=http.Transport({"api": static.Publisher(["127.0.0.1:8001"])}))
    response: httpx.Response = client.get("http://api/users/1")
    session = requests.Session()
    session.mount("http://api", http.RequestsAdapter(static.Publisher(["127.0.0.1:8001"])))
    call = Retry(3, 2.0, RoundRobin(static.Publisher(["127.0.0.1:8001"], http.factory())))
    answer: httpx.Response = call("/users/1")
    print(response, answer)


async def async_http_client() -> None:
    from loadbalancer import http

    transport = http.AsyncTransport({"api": static.Publisher(["127.0.0.1:8001"])}, balancer=PeakEwma, retries=3)
    async with httpx.AsyncClient(transport=transport) as c:
        await c.post("http://api/orders", json={"item": 1})
    call = Retry(3, 2.0, RoundRobin(static.Publisher(["127.0.0.1:8001"], http.async_factory())))
    answer: httpx.Response = await call("/users/1")
    print(answer)
