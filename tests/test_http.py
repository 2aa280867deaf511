"""loadbalancer.http: httpx transports against real HTTP backends (child processes on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from loadbalancer import Instance, LeastLoaded, NoEndpointsError, PeakEwma, RetryTimeoutError, static
from loadbalancer import http as lbhttp
from tests.helpers import aeventually, connections_to, eventually
from tests.http_fixtures import HttpBackend, answer, running, under_load

pytestmark = pytest.mark.server


@pytest.fixture
def backends() -> Iterator[list[HttpBackend]]:
    """Three HTTP backends (child processes), stopped after the test."""
    with running(3) as started:
        yield started


def client(backends: list[HttpBackend], **options: Any) -> httpx.Client:
    options.setdefault("wait", None)
    publisher = static.Publisher([b.address for b in backends])
    return httpx.Client(transport=lbhttp.Transport({"api": publisher}, **options))


def test_requests_spread_over_the_instances_and_keep_the_host_header(backends: list[HttpBackend]) -> None:
    with client(backends) as c:
        seen = collections.Counter(answer(c.get("http://api/echo"))["port"] for _ in range(30))
        assert set(seen) == {b.port for b in backends} and set(seen.values()) == {10}
        reply = answer(c.post("http://api/echo?x=1", json={"a": 1}))
        assert reply["method"] == "POST" and reply["path"] == "/echo?x=1" and reply["body"] == '{"a":1}'
        assert reply["host"] == "api"  # the service's name, as the caller wrote it


def test_a_target_string_names_a_service_and_is_closed_with_the_transport(backends: list[HttpBackend]) -> None:
    target = "static:///" + ",".join(b.address for b in backends)
    transport = lbhttp.Transport({"api": target}, wait=None)
    with httpx.Client(transport=transport) as c:
        ports = {answer(c.get("http://api/echo"))["port"] for _ in range(6)}
        assert ports == {b.port for b in backends}
        (route,) = transport._routes.values()
    assert route.publisher.closed  # the transport made it, so the transport closed it
    session = requests.Session()
    session.mount("http://api", lbhttp.RequestsAdapter(target))
    with session:
        assert session.get("http://api/echo", timeout=5).json()["port"] in {b.port for b in backends}


def test_hosts_not_in_the_mapping_go_to_the_inner_transport_or_are_refused(backends: list[HttpBackend]) -> None:
    with client(backends[:1]) as c:
        assert answer(c.get(f"http://{backends[1].address}/echo"))["port"] == backends[1].port
    with client(backends[:1], unknown="error") as c, pytest.raises(lbhttp.UnknownServiceError, match="'other'"):
        c.get("http://other/echo")


def test_a_dead_instance_is_retried_away_for_any_method(backends: list[HttpBackend]) -> None:
    backends[0].kill()  # refused connections: the request never left, so even POST goes elsewhere
    with client(backends) as c:
        for _ in range(12):
            assert c.post("http://api/echo", content=b"x").status_code == 200
            assert c.get("http://api/echo").status_code == 200


def test_a_post_that_was_sent_is_not_retried(backends: list[HttpBackend]) -> None:
    with client(backends) as c:
        for _ in range(3):
            assert c.post("http://api/status/503").status_code == 503  # sent, not idempotent: the answer stands
        assert sum(b.counts().get("POST /status/503", 0) for b in backends) == 3
    with client(backends[:1]) as c:
        assert c.get("http://api/flaky/1").status_code == 200  # GET: retried (here, on the one instance)
        assert backends[0].counts()["GET /flaky/1"] == 2


def test_retries_stop_after_the_attempts_and_return_the_last_answer(backends: list[HttpBackend]) -> None:
    with client(backends, retries=1) as c:  # one retry: two attempts
        assert c.get("http://api/status/503").status_code == 503
        assert sum(b.counts().get("GET /status/503", 0) for b in backends) == 2
    with client(backends, retries=0) as c:  # none: one attempt
        assert c.get("http://api/status/503/none").status_code == 503
        assert sum(b.counts().get("GET /status/503/none", 0) for b in backends) == 1
    with client(backends, policy=lbhttp.RetryPolicy(attempts=3)) as c:  # a policy built once, in attempts
        assert c.get("http://api/status/503/policy").status_code == 503
        assert sum(b.counts().get("GET /status/503/policy", 0) for b in backends) == 3
    with client(backends, retries=2) as c:
        assert c.get("http://api/status/404").status_code == 404  # not a retried status
        assert sum(b.counts().get("GET /status/404", 0) for b in backends) == 1


def test_retry_after_is_honoured_within_the_deadline(backends: list[HttpBackend]) -> None:
    with client(backends[:1], retries=2, timeout=10.0) as c:
        started = time.monotonic()
        assert c.get("http://api/retry-after/1").status_code == 503
        assert time.monotonic() - started >= 2.0  # waited the 1 s asked for, twice
        assert backends[0].counts()["GET /retry-after/1"] == 3
    with client(backends[:1], retries=2, timeout=0.5) as c:
        assert c.get("http://api/retry-after/5").status_code == 503  # past the deadline: the answer as it is
        assert backends[0].counts()["GET /retry-after/5"] == 1


def test_a_streamed_body_is_not_sent_twice(backends: list[HttpBackend]) -> None:
    with client(backends) as c:

        def body() -> Any:
            yield b"chunk"

        assert c.put("http://api/status/503", content=body()).status_code == 503
        assert sum(b.counts().get("PUT /status/503", 0) for b in backends) == 1
        assert c.put("http://api/status/503", content=b"bytes").status_code == 503  # replayable: retried
        assert sum(b.counts().get("PUT /status/503", 0) for b in backends) == 4


def test_the_attempt_timeout_moves_a_slow_call_to_a_fast_instance(backends: list[HttpBackend]) -> None:
    slow, fast = backends[0], backends[1]
    slow.mode("hang")
    with client([slow, fast], attempt_timeout=0.3, timeout=5.0, balancer=_always_first) as c:
        assert answer(c.get("http://api/echo"))["port"] == fast.port


def test_the_deadline_is_an_httpx_timeout_and_a_retry_timeout(backends: list[HttpBackend]) -> None:
    backends[0].mode("hang")
    with client(backends[:1], timeout=0.3) as c, pytest.raises(lbhttp.DeadlineExceeded) as caught:
        c.get("http://api/echo")
    assert isinstance(caught.value, httpx.TimeoutException) and isinstance(caught.value, RetryTimeoutError)


def test_no_instances_is_an_httpx_connect_error_and_a_no_endpoints_error() -> None:
    transport = lbhttp.Transport({"api": static.Publisher([])})
    with httpx.Client(transport=transport) as c, pytest.raises(lbhttp.NoInstancesError) as caught:
        c.get("http://api/echo")
    assert isinstance(caught.value, httpx.ConnectError) and isinstance(caught.value, NoEndpointsError)
    assert "'api'" in str(caught.value)


def test_streaming_responses_count_as_busy_until_closed(backends: list[HttpBackend]) -> None:
    balancer: list[LeastLoaded[Any]] = []

    def least_loaded(publisher: Any) -> LeastLoaded[Any]:
        balancer.append(LeastLoaded(publisher))
        return balancer[0]

    with client(backends[:2], balancer=least_loaded) as c:
        with c.stream("GET", "http://api/stream/3/0.05") as response:
            busy = [t for t in balancer[0].tracked() if t.outstanding]
            assert len(busy) == 1  # headers in, body not read: still in flight
            assert list(response.iter_lines()) == ["chunk 0", "chunk 1", "chunk 2"]
        assert all(t.outstanding == 0 for t in balancer[0].tracked())


def test_5xx_answers_feed_outlier_ejection(backends: list[HttpBackend]) -> None:
    backends[0].mode("down")
    with client(backends, eject={"consecutive_failures": 2, "base_ejection_time": 60}) as c:
        for _ in range(12):
            assert c.get("http://api/echo").status_code == 200  # 503s retried away, then not picked
        transport = c._transport
        assert isinstance(transport, lbhttp.Transport)
        detector = transport._routes["api"].detector
        assert detector is not None and detector.ejected() == [backends[0].address]
    assert backends[0].counts()["GET /echo"] == 2  # ejected after its second 503


def test_5xx_answers_feed_peak_ewma(backends: list[HttpBackend]) -> None:
    backends[0].mode("down")
    with client(backends, balancer=PeakEwma) as c:
        for _ in range(30):
            assert c.get("http://api/echo").status_code == 200
    assert backends[0].counts().get("GET /echo", 0) <= 2  # its failures made it look slow


def test_pools_are_closed_when_instances_leave(backends: list[HttpBackend]) -> None:
    publisher = static.Publisher([b.address for b in backends], close_delay=0)
    ports = {b.port for b in backends}
    with httpx.Client(transport=lbhttp.Transport({"api": publisher})) as c:
        for _ in range(30):
            c.get("http://api/echo")
        assert connections_to(ports) == 3  # a kept-alive connection to each instance
        publisher.replace([backends[0].address])
        eventually(lambda: connections_to(ports) == 1, what="two pools closed")
        assert c.get("http://api/echo").status_code == 200
        assert connections_to({backends[0].port}) == 1


def test_instances_added_and_removed_under_load_fail_no_request(backends: list[HttpBackend]) -> None:
    publisher = static.Publisher([backends[0].address])
    c = httpx.Client(transport=lbhttp.Transport({"api": publisher}))
    with c, under_load(lambda: c.get("http://api/echo").raise_for_status()) as load:
        for members in ([0, 1], [0, 1, 2], [1, 2], [2], [0, 2], [0, 1, 2]):
            publisher.replace([backends[i].address for i in members])
            done = load.done
            eventually(lambda done=done: load.done > done + 20, what="requests on this set")  # type: ignore[misc]
    assert load.failures == []


def test_a_backend_killed_mid_run_fails_no_idempotent_request(backends: list[HttpBackend]) -> None:
    with client(backends, eject=True) as c, under_load(lambda: c.get("http://api/echo").raise_for_status()) as load:
        eventually(lambda: load.done > 50)
        backends[1].kill()
        start = load.done
        eventually(lambda: load.done > start + 100)
        backends[1].start()
    assert load.failures == []


async def test_async_transport_spreads_retries_and_streams(backends: list[HttpBackend]) -> None:
    backends[0].kill()
    publisher = static.Publisher([b.address for b in backends])
    transport = lbhttp.AsyncTransport({"api": publisher}, balancer=PeakEwma, retries=3, timeout=5.0, wait=None)
    async with httpx.AsyncClient(transport=transport) as c:
        replies = await asyncio.gather(*(c.get("http://api/echo") for _ in range(20)))
        assert {answer(r)["port"] for r in replies} == {backends[1].port, backends[2].port}
        assert (await c.post("http://api/status/503")).status_code == 503
        async with c.stream("GET", "http://api/stream/2/0.01") as response:
            assert [line async for line in response.aiter_lines()] == ["chunk 0", "chunk 1"]


async def test_closing_an_async_transport_closes_its_connections_before_it_returns(
    backends: list[HttpBackend],
) -> None:
    publisher = static.Publisher([b.address for b in backends])
    ports = {b.port for b in backends}
    async with httpx.AsyncClient(transport=lbhttp.AsyncTransport({"api": publisher}, wait=None)) as c:
        for _ in range(6):
            await c.get("http://api/echo")
        assert connections_to(ports) == 3  # a kept-alive connection to each instance
    # closed when aclose() returned, not in a task that a loop closing next would never run
    assert connections_to(ports) == 0


async def test_async_hedging_wins_with_the_fast_instance(backends: list[HttpBackend]) -> None:
    backends[0].mode("hang")
    publisher = static.Publisher([backends[0].address, backends[1].address])
    transport = lbhttp.AsyncTransport(
        {"api": publisher}, balancer=_always_first, hedge_after=0.1, timeout=5.0, budget=None
    )
    async with httpx.AsyncClient(transport=transport) as c:
        assert answer(await c.get("http://api/echo"))["port"] == backends[1].port


async def test_concurrent_hedges_go_to_the_instance_not_tried_and_a_cancelled_call_cancels_both(
    backends: list[HttpBackend],
) -> None:
    backends[0].mode("hang")
    publisher = static.Publisher([backends[0].address, backends[1].address])
    transport = lbhttp.AsyncTransport({"api": publisher}, hedge_after=0.05, timeout=10.0, budget=None)
    async with httpx.AsyncClient(transport=transport) as c:
        started = time.monotonic()
        answers = await asyncio.gather(*(c.get(f"http://api/echo/{n}") for n in range(50)))
        assert {answer(a)["port"] for a in answers} == {backends[1].port}  # a hedge never went to the hung one
        assert time.monotonic() - started < 5  # none waited for the hung instance (10 s deadline)
        pools = transport._routes["api"].pools.endpoints()

        def in_flight() -> int:
            return sum(pool._inflight for pool in pools)

        backends[1].mode("hang")
        request = asyncio.ensure_future(c.get("http://api/echo/cancelled"))
        await aeventually(lambda: in_flight() >= 2, 10, "the attempt and its hedge")
        request.cancel()
        await aeventually(lambda: in_flight() == 0, 10, "both attempts cancelled with the call")


async def test_async_deadline(backends: list[HttpBackend]) -> None:
    backends[0].mode("hang")
    transport = lbhttp.AsyncTransport({"api": static.Publisher([backends[0].address])}, timeout=0.3)
    async with httpx.AsyncClient(transport=transport) as c:
        with pytest.raises(lbhttp.DeadlineExceeded):
            await c.get("http://api/echo")


def test_bad_options_are_clear_errors() -> None:
    lbhttp.Transport({"api": static.Publisher([])}, retries=0).close()  # no retry: one attempt
    with pytest.raises(ValueError, match=r"retries must be a whole number of retries \(0: none\).*got -1"):
        lbhttp.Transport({"api": static.Publisher([])}, retries=-1)
    with pytest.raises(ValueError, match="attempts must be a positive integer .*got 0"):
        lbhttp.RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="either in policy= or as keyword arguments, not both"):
        lbhttp.Transport({"api": static.Publisher([])}, policy=lbhttp.RetryPolicy(), timeout=1.0)
    with pytest.raises(ValueError, match="HTTP status codes .* got 700"):
        lbhttp.Transport({"api": static.Publisher([])}, retry_statuses=[700])
    with pytest.raises(TypeError, match="map host names to publishers"):
        lbhttp.Transport({})
    with pytest.raises(TypeError, match="expected a loadbalancer.Publisher"):
        lbhttp.Transport({"api": ["127.0.0.1:80"]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="unknown must be"):
        lbhttp.Transport({"api": static.Publisher([])}, unknown="drop")


class _First:
    """A balancer that always offers the first instance (then the next, when asked again by a retry)."""


def _always_first(publisher: Any) -> Any:
    from loadbalancer.balancer import Balancer

    class First(Balancer[Any]):
        def __init__(self, publisher: Any) -> None:
            self._n = 0
            self._set: Any = ()
            super().__init__(publisher)

        def _update(self, endpoints: Any) -> None:
            self._set = endpoints

        def endpoint(self) -> Any:
            endpoints = self._set
            if not endpoints:
                raise NoEndpointsError("none")
            picked = endpoints[self._n % len(endpoints)] if self._n else endpoints[0]
            self._n = (self._n + 1) % 2
            return picked

    return First(publisher)


def test_instance_attributes_reach_the_outgoing_url() -> None:
    transport = lbhttp.Transport({"api": static.Publisher([Instance("::1", 8080)])})
    request = httpx.Request("GET", "http://api/x?y=1")
    sent = transport.outgoing(request, Instance("::1", 8080), float("inf"))
    assert str(sent.url) == "http://[::1]:8080/x?y=1" and sent.headers["host"] == "api"
    transport.close()


def test_the_transport_records_each_attempt_for_metrics(backends: list[HttpBackend]) -> None:
    from loadbalancer import metrics as lbmetrics

    lbmetrics.enable()
    try:
        backends[0].mode("down")
        service = "api"
        with client(backends[:2], retries=1) as c:
            for _ in range(10):
                assert c.get("http://api/echo").status_code == 200
            figures = {
                (row.labels, row.name): row.value
                for row in lbmetrics.rows()
                if dict(row.labels).get("service") == service and row.name == "loadbalancer_requests"
            }
        down = backends[0].address
        failures = figures[
            ((("service", service), ("instance", down), ("outcome", "failure")), "loadbalancer_requests")
        ]
        successes = figures[
            ((("service", service), ("instance", backends[1].address), ("outcome", "success")), "loadbalancer_requests")
        ]
        assert successes == 10 and failures == backends[0].counts()["GET /echo"]  # every attempt, once
    finally:
        lbmetrics.disable()


async def _settled() -> None:
    """Return once every other task of this loop has ended: what a close scheduled has run (and failed, if it does)."""
    me = asyncio.current_task()
    async with asyncio.timeout(20):
        while others := asyncio.all_tasks() - {me}:  # those may start more
            await asyncio.wait(others)


def test_async_pools_close_on_their_own_loop(backends: list[HttpBackend]) -> None:
    errors: list[dict[str, Any]] = []

    def watched(coroutine: Any) -> Any:
        async def run() -> Any:
            asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
            result = await coroutine
            await _settled()
            return result

        return asyncio.run(run())

    async def use(transport: lbhttp.AsyncTransport) -> int:
        client = httpx.AsyncClient(transport=transport)
        return (await client.get("http://api/echo")).status_code

    # a pool whose loop has ended is not closed from another loop (its connections were that loop's)
    ended = lbhttp.AsyncTransport({"api": static.Publisher([backends[0].address])})
    assert watched(use(ended)) == 200
    watched(ended.aclose())
    # a pool whose loop runs on in another thread is closed there
    running = lbhttp.AsyncTransport({"api": static.Publisher([backends[0].address])})
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: errors.append(context))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        assert asyncio.run_coroutine_threadsafe(use(running), loop).result(10) == 200
        watched(running.aclose())  # schedules the close on the pool's loop, before what follows
        asyncio.run_coroutine_threadsafe(_settled(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert errors == []
