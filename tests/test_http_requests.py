"""loadbalancer.http: the requests adapter and the go-kit style factories, against real HTTP backends."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from loadbalancer import NoEndpointsError, Retry, RetryError, RoundRobin, static
from loadbalancer import http as lbhttp
from tests.helpers import eventually
from tests.http_fixtures import HttpBackend, running, under_load

pytestmark = pytest.mark.server


@pytest.fixture
def backends() -> Iterator[list[HttpBackend]]:
    with running(3) as started:
        yield started


def session(backends: list[HttpBackend], **options: Any) -> requests.Session:
    options.setdefault("wait", None)
    s = requests.Session()
    s.mount("http://api", lbhttp.RequestsAdapter(static.Publisher([b.address for b in backends]), **options))
    return s


def test_requests_adapter_spreads_retries_and_keeps_the_host(backends: list[HttpBackend]) -> None:
    with session(backends) as s:
        ports = collections.Counter(s.get("http://api/echo").json()["port"] for _ in range(30))
        assert set(ports.values()) == {10}
        reply = s.post("http://api/echo", json={"a": 1}).json()
        assert reply["method"] == "POST" and reply["host"] == "api" and reply["body"] == '{"a": 1}'
        assert s.get("http://api/status/503").status_code == 503  # idempotent: tried on each instance
        assert sum(b.counts().get("GET /status/503", 0) for b in backends) == 3
        backends[0].kill()
        for _ in range(9):  # refused: never sent, so retried for any method
            assert s.post("http://api/echo", data=b"x").status_code == 200
        assert s.post("http://api/status/503").status_code == 503  # sent and not idempotent: as answered
        assert sum(b.counts().get("POST /status/503", 0) for b in backends[1:]) == 1


def test_requests_adapter_streams_and_counts_busy_until_closed(backends: list[HttpBackend]) -> None:
    from loadbalancer import LeastLoaded

    made: list[Any] = []

    def least_loaded(publisher: Any) -> Any:
        made.append(LeastLoaded(publisher))
        return made[0]

    with session(backends[:1], balancer=least_loaded) as s:
        response = s.get("http://api/stream/2/0.01", stream=True)
        assert [t.outstanding for t in made[0].tracked()] == [1]
        assert list(response.iter_lines()) == [b"chunk 0", b"chunk 1"]
        response.close()
        assert [t.outstanding for t in made[0].tracked()] == [0]


def test_requests_adapter_errors(backends: list[HttpBackend]) -> None:
    s = requests.Session()
    s.mount("http://api", lbhttp.RequestsAdapter(static.Publisher([])))
    with pytest.raises(lbhttp.RequestsNoInstancesError) as caught:
        s.get("http://api/echo")
    assert isinstance(caught.value, requests.ConnectionError) and isinstance(caught.value, NoEndpointsError)
    backends[0].mode("hang")
    with session(backends[:1], timeout=0.3) as hanging, pytest.raises(lbhttp.RequestsDeadlineExceeded):
        hanging.get("http://api/echo")
    with pytest.raises(TypeError, match="needs a loadbalancer.Publisher"):
        lbhttp.RequestsAdapter(["127.0.0.1:80"])  # type: ignore[arg-type]


def test_requests_adapter_under_load_with_a_backend_killed(backends: list[HttpBackend]) -> None:
    with session(backends, eject=True) as s, under_load(lambda: s.get("http://api/echo").raise_for_status()) as load:
        eventually(lambda: load.done > 50)
        backends[2].kill()
        start = load.done
        eventually(lambda: load.done > start + 100)
    assert load.failures == []


def test_go_kit_style_factory_with_retry(backends: list[HttpBackend]) -> None:
    backends[0].kill()
    publisher = static.Publisher([b.address for b in backends], lbhttp.factory())
    call = Retry(3, 5.0, RoundRobin(publisher))
    for _ in range(6):
        response = call("/echo")
        assert isinstance(response, httpx.Response) and response.json()["port"] != backends[0].port
    assert call(httpx.Request("POST", "http://anything/echo", content=b"hi")).json()["body"] == "hi"
    with pytest.raises(RetryError) as caught:
        call("/status/503")  # a retried status raises HTTPStatusError for Retry, on each instance
    assert isinstance(caught.value.final, httpx.HTTPStatusError | httpx.ConnectError)
    publisher.close()


async def test_async_factory_with_retry(backends: list[HttpBackend]) -> None:
    publisher = static.Publisher([b.address for b in backends], lbhttp.async_factory())
    call = Retry(3, 5.0, RoundRobin(publisher))
    ports = {(await call("/echo")).json()["port"] for _ in range(6)}
    assert ports == {b.port for b in backends}
    await publisher.aclose()
