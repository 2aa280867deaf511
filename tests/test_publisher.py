from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from typing import Any

import pytest

import loadbalancer
from loadbalancer import EndpointSet, Instance, NoEndpointsError, RoundRobin, static
from loadbalancer._discovery import DiscoveryPublisher
from tests.helpers import AsyncEndpoint, Endpoint, Factory, aeventually, eventually


class Source(DiscoveryPublisher[Any]):
    """A publisher a test drives by hand, as a discovery backend would."""

    def __init__(self, factory: Any, **kwargs: Any) -> None:
        super().__init__(factory, service="test-source", close_delay=kwargs.pop("close_delay", 0), **kwargs)

    def found(self, *instances: str | Instance) -> None:
        self._publish(instances)

    def failed(self, error: BaseException) -> None:
        self._publish_error(error)


def addresses(endpoints: EndpointSet[Any]) -> list[str]:
    return [str(i) for i in endpoints.instances]


def test_static_set_is_there_at_once_in_order() -> None:
    factory = Factory()
    with static.Publisher(["b:2", "a:1", "[::1]:3"], factory) as publisher:
        endpoints = publisher.endpoints()
        assert [e.address for e in endpoints] == ["b:2", "a:1", "[::1]:3"]
        assert addresses(endpoints) == ["b:2", "a:1", "[::1]:3"]
        assert isinstance(endpoints, tuple)
        assert not endpoints.stale


def test_subscribe_replays_then_follows_and_skips_unchanged_sets() -> None:
    publisher = static.Publisher(["a:1"], Factory(), close_delay=0)
    seen: list[list[str]] = []
    subscription = publisher.subscribe(lambda endpoints: seen.append(addresses(endpoints)))
    assert seen == [["a:1"]]
    publisher.replace(["a:1", "b:2"])
    publisher.replace(["a:1", "b:2"])  # unchanged: not re-emitted
    publisher.replace([Instance("a", 1), Instance("b", 2)])  # the same set, spelled otherwise
    assert seen == [["a:1"], ["a:1", "b:2"]]
    publisher.replace(["b:2", "a:1"])  # order is part of the set
    assert seen[-1] == ["b:2", "a:1"]
    subscription.unsubscribe()
    subscription.unsubscribe()  # idempotent
    publisher.replace(["c:3"])
    assert len(seen) == 3
    with publisher.subscribe(lambda endpoints: seen.append(addresses(endpoints))):
        assert seen[-1] == ["c:3"]
    publisher.replace(["d:4"])
    assert seen[-1] == ["c:3"]


def test_factory_called_once_per_instance_and_endpoints_reused() -> None:
    factory = Factory()
    publisher = static.Publisher(["a:1", "b:2"], factory, close_delay=0)
    first = {e.address: e for e in publisher.endpoints()}
    publisher.replace(["b:2", "c:3", "a:1"])
    publisher.replace(["c:3", "a:1"])
    publisher.replace([Instance("a", 1, weight=7), "c:3"])  # re-weighted: new instance, same endpoint
    assert factory.calls == {"a:1": 1, "b:2": 1, "c:3": 1}
    endpoints = publisher.endpoints()
    assert endpoints[0] is first["a:1"]
    assert endpoints.instances[0].weight == 7
    assert first["b:2"].closed
    assert not first["a:1"].closed


def test_removed_endpoints_are_closed_after_the_close_delay() -> None:
    factory = Factory()
    publisher = static.Publisher(["a:1", "b:2"], factory, close_delay=0.2)
    a, b = publisher.endpoints()
    publisher.replace(["a:1"])
    assert not b.closed  # calls in flight get their chance
    eventually(lambda: b.closed, what="b closed")
    assert not a.closed
    publisher.close()
    assert a.closed


def test_async_closers_are_awaited() -> None:
    factory = Factory(AsyncEndpoint)
    publisher = static.Publisher(["a:1", "b:2"], factory, close_delay=0)
    a, b = publisher.endpoints()
    publisher.replace(["a:1"])
    eventually(lambda: b.closed, what="aclose() of the removed endpoint")
    publisher.close()  # waits for async closers on the runtime
    assert a.closed


async def test_aclose_awaits_async_closers_in_the_callers_loop() -> None:
    publisher = static.Publisher(["a:1", "b:2"], Factory(AsyncEndpoint))
    endpoints = list(publisher.endpoints())
    async with publisher:
        pass
    assert all(e.closed for e in endpoints)
    assert publisher.closed
    assert len(publisher.endpoints()) == 0


def test_a_raising_factory_skips_that_instance_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    def factory(address: str) -> Endpoint:
        if address == "bad:1":
            raise ConnectionRefusedError("no route")
        return Endpoint(address)

    caplog.set_level(logging.ERROR, logger="loadbalancer")
    publisher = static.Publisher(["a:1", "bad:1", "c:3"], factory)
    assert addresses(publisher.endpoints()) == ["a:1", "c:3"]
    [record] = [r for r in caplog.records if "factory_failed" in r.getMessage()]
    assert "instance='bad:1'" in record.getMessage()
    assert "ConnectionRefusedError: no route" in record.getMessage()
    assert record.instance == "bad:1"  # type: ignore[attr-defined]  # structured, for structlog users


def test_a_failed_factory_is_tried_again_on_the_next_update() -> None:
    attempts: list[str] = []

    def factory(address: str) -> str:
        attempts.append(address)
        if len(attempts) == 1:
            raise OSError("flaky")
        return address

    source = Source(factory)
    source.found("a:1")
    assert len(source.endpoints()) == 0
    source.found("a:1")
    assert list(source.endpoints()) == ["a:1"]


def test_a_raising_subscriber_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    publisher = static.Publisher(["a:1"], Factory(), close_delay=0)
    seen: list[int] = []

    def broken(endpoints: object) -> None:
        raise RuntimeError("subscriber bug")

    publisher.subscribe(broken)
    publisher.subscribe(lambda endpoints: seen.append(len(endpoints)))
    publisher.replace(["a:1", "b:2"])
    assert seen == [1, 2]
    assert sum("subscriber_failed" in r.getMessage() for r in caplog.records) == 2


def test_library_logging_is_silent_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    def factory(address: str) -> str:
        raise ValueError("boom")

    static.Publisher(["a:1"], factory)
    captured = capsys.readouterr()
    assert "factory_failed" not in captured.out


def test_static_rejects_bad_input_and_changes_nothing() -> None:
    factory = Factory()
    with pytest.raises(ValueError, match=r"invalid instance 'a:b': port is not a number"):
        static.Publisher(["x:1", "a:b"], factory)
    assert factory.calls == {}
    publisher = static.Publisher(["x:1"], factory)
    with pytest.raises(loadbalancer.InvalidInstanceError, match="missing ':port'"):
        publisher.replace(["y:2", "nope"])
    assert addresses(publisher.endpoints()) == ["x:1"]
    assert factory.calls == {"x:1": 1}
    with pytest.raises(TypeError, match="not the string 'a:1'"):
        static.Publisher("a:1", factory)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="factory must be callable"):
        static.Publisher(["a:1"], 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="close_delay must be non-negative"):
        static.Publisher(["a:1"], factory, close_delay=-1)


def test_duplicates_keep_the_first() -> None:
    publisher = static.Publisher(["a:1", "b:2", "A:1"], Factory())
    assert addresses(publisher.endpoints()) == ["a:1", "b:2"]


def test_discovery_backend_skips_malformed_instances(caplog: pytest.LogCaptureFixture) -> None:
    source = Source(Factory())
    source.found("a:1", "oops", "b:2")
    assert addresses(source.endpoints()) == ["a:1", "b:2"]
    assert any("instance_invalid" in r.getMessage() and "oops" in r.getMessage() for r in caplog.records)


def test_stale_beats_empty_and_is_visible(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="loadbalancer")
    source = Source(Factory())
    seen: list[EndpointSet[Any]] = []
    source.subscribe(seen.append)
    source.found("a:1", "b:2")
    endpoints = source.endpoints()
    error = TimeoutError("lookup timed out")
    source.failed(error)
    stale = source.endpoints()
    assert list(stale) == list(endpoints)
    assert stale.stale and stale.error is error
    assert source.last_error is error
    source.failed(OSError("again"))  # already stale: subscribers are not told twice
    assert len(seen) == 2
    # a warning when the set turns stale, then quieter while it stays so
    assert [r.levelno for r in caplog.records if "refresh_failed" in r.getMessage()] == [logging.WARNING, logging.INFO]
    assert not any(e.closed for e in endpoints)
    source.found("a:1", "b:2")  # a good refresh: fresh again, same endpoints
    assert not source.endpoints().stale
    assert list(source.endpoints()) == list(endpoints)
    assert source.last_error is None
    assert len(seen) == 3


def test_authoritative_empty_empties_the_set() -> None:
    source = Source(Factory())
    lb = RoundRobin(source)
    source.found("a:1")
    [endpoint] = source.endpoints()
    source.found()
    assert len(source.endpoints()) == 0
    assert endpoint.closed
    with pytest.raises(
        NoEndpointsError, match=r"no endpoints available from tests.test_publisher.Source\('test-source'\)$"
    ):
        lb.endpoint()


def test_first_refresh_failing_gives_an_empty_stale_set() -> None:
    source = Source(Factory())
    lb = RoundRobin(source)
    source.failed(ConnectionRefusedError("refused"))
    assert len(source.endpoints()) == 0
    assert source.endpoints().stale
    with pytest.raises(NoEndpointsError, match="last refresh failed: ConnectionRefusedError: refused") as caught:
        lb.endpoint()
    assert isinstance(caught.value.error, ConnectionRefusedError)


def test_invalidate_after_drops_a_stale_set() -> None:
    source = Source(Factory(), invalidate_after=0.1)
    lb = RoundRobin(source)
    source.found("a:1")
    [endpoint] = source.endpoints()
    source.failed(TimeoutError("dns down"))
    assert lb.endpoint() is endpoint  # still served while stale
    eventually(lambda: len(source.endpoints()) == 0, what="stale set dropped")
    assert endpoint.closed
    with pytest.raises(NoEndpointsError, match="TimeoutError: dns down"):
        lb.endpoint()
    source.found("a:1")
    assert lb.endpoint().address == "a:1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_invalidation_is_cancelled_by_a_good_refresh() -> None:
    clock = FakeClock()
    source = Source(Factory(), invalidate_after=10, clock=clock)
    source.found("a:1")
    source.failed(TimeoutError("blip"))  # a stale period starts at 1000
    clock.now += 9
    source.failed(TimeoutError("still"))
    assert len(source.endpoints()) == 1  # 9 s stale: kept
    source.found("a:1")
    source.failed(TimeoutError("blip again"))  # a new stale period starts at 1009
    clock.now += 5  # 14 s after the first period began, 5 s into the second
    source.failed(TimeoutError("still"))
    assert len(source.endpoints()) == 1  # the first period's due time is gone with it
    clock.now += 6  # 11 s into the second
    source.failed(TimeoutError("still"))
    assert len(source.endpoints()) == 0 and source.endpoints().stale


def test_a_stale_set_is_dropped_by_the_timer_too() -> None:
    source = Source(Factory(), invalidate_after=0.05)
    source.found("a:1")
    source.failed(TimeoutError("blip"))
    eventually(lambda: len(source.endpoints()) == 0, what="the stale period expires")


def test_invalidate_after_zero_drops_at_once() -> None:
    source = Source(Factory(), invalidate_after=0)
    source.found("a:1")
    source.failed(TimeoutError("x"))
    assert len(source.endpoints()) == 0


def test_close_empties_the_set_closes_endpoints_and_tells_subscribers() -> None:
    factory = Factory()
    publisher = static.Publisher(["a:1", "b:2"], factory)
    lb = RoundRobin(publisher)
    seen: list[int] = []
    publisher.subscribe(lambda endpoints: seen.append(len(endpoints)))
    publisher.close()
    publisher.close()
    assert seen == [2, 0]
    assert all(e.closed for e in factory.made)
    with pytest.raises(NoEndpointsError, match="the publisher is closed"):
        lb.endpoint()
    with pytest.raises(RuntimeError, match="is closed"):  # a closed publisher says so, rather than drop it
        publisher.replace(["c:3"])
    assert len(publisher.endpoints()) == 0


def test_a_closer_that_raises_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Bad(Endpoint):
        def close(self) -> None:
            raise OSError("close failed")

    publisher = static.Publisher(["a:1"], Bad, close_delay=0)
    publisher.replace([])
    assert any("endpoint_close_failed" in r.getMessage() for r in caplog.records)


async def test_updates_iterates_current_then_changes_until_close() -> None:
    publisher = static.Publisher(["a:1"], Factory(), close_delay=0)
    received: list[list[str]] = []

    async def consume() -> None:
        async for endpoints in publisher.updates():
            received.append(addresses(endpoints))

    task = asyncio.create_task(consume())
    await aeventually(lambda: received == [["a:1"]])
    await asyncio.to_thread(publisher.replace, ["b:2"])
    await aeventually(lambda: received[-1] == ["b:2"])
    publisher.close()
    await asyncio.wait_for(task, 5)
    assert received[-1] == []


def test_balancers_do_not_keep_themselves_subscribed() -> None:
    publisher = static.Publisher(["a:1"], Factory())
    before = len(publisher._subscribers)
    lb = RoundRobin(publisher)
    assert len(publisher._subscribers) == before + 1
    del lb
    gc.collect()
    assert len(publisher._subscribers) == before


def test_invalid_publisher_arguments() -> None:
    with pytest.raises(ValueError, match="invalidate_after must be non-negative, got -1.0"):
        Source(Factory(), invalidate_after=-1)
    with pytest.raises(TypeError, match="invalidate_after must be a number of seconds or a timedelta"):
        Source(Factory(), invalidate_after="soon")
    with pytest.raises(TypeError, match="callback must be callable"):
        static.Publisher([], Factory()).subscribe(None)  # type: ignore[arg-type]


def test_a_structlog_logger_can_be_passed_in() -> None:
    import structlog

    def factory(address: str) -> str:
        raise OSError("cannot connect")

    with structlog.testing.capture_logs() as events:
        static.Publisher(["a:1"], factory, logger=structlog.get_logger("app"))
    [event] = [e for e in events if e["event"] == "factory_failed"]
    assert event["service"] == "static"
    assert event["instance"] == "a:1"
    assert event["error"] == "OSError: cannot connect"
    assert event["log_level"] == "error"


def test_close_also_closes_endpoints_still_waiting_for_their_delayed_close() -> None:
    factory = Factory()
    publisher = static.Publisher(["a:1", "b:2"], factory, close_delay=60)
    publisher.replace(["b:2"])
    departed = next(e for e in factory.made if e.address == "a:1")
    assert not departed.closed  # calls in flight get close_delay to finish
    publisher.close()
    assert departed.closed  # but closing the publisher leaves nothing open


def test_close_returns_once_an_endpoint_departing_on_another_thread_is_closed() -> None:
    closed: list[str] = []

    class Client:
        def __init__(self, address: str) -> None:
            self.address = address

        def close(self) -> None:
            if self.address.endswith(":2"):
                time.sleep(0.5)  # a slow close, on the thread that published the set without it
            closed.append(self.address)

    publisher = static.Publisher(["127.0.0.1:1", "127.0.0.1:2"], Client, close_delay=0)
    changer = threading.Thread(target=publisher.replace, args=(["127.0.0.1:1"],))
    changer.start()
    while len(publisher.endpoints()) != 1:
        time.sleep(0.001)
    publisher.close()  # nothing may be left open (or half closed) once this returns
    assert sorted(closed) == ["127.0.0.1:1", "127.0.0.1:2"]
    changer.join(5)
