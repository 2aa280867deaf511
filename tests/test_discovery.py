"""The publisher split: readiness, optional factory, factories of Instances, tags, changes by key."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from loadbalancer import Instance, NoEndpointsError, RoundRobin, static
from loadbalancer._discovery import DiscoveryPublisher
from loadbalancer.errors import NotReadyError, PublisherClosedError
from tests.helpers import Factory


class Keyed(DiscoveryPublisher[Any]):
    """A publisher a test drives by key, as a watching backend does."""

    def __init__(self, factory: Any = None, **options: Any) -> None:
        super().__init__(factory, service="keyed", close_delay=0, **options)

    def put(self, key: Any, instance: str | Instance) -> None:
        with self._lock:
            self._put(key, instance if isinstance(instance, Instance) else Instance.parse(instance))

    def delete(self, key: Any) -> None:
        with self._lock:
            self._delete(key)

    def commit(self) -> None:
        self._commit()

    def failed(self, error: BaseException) -> None:
        self._publish_error(error)


def addresses(publisher: Any) -> list[str]:
    return [str(i) for i in publisher.endpoints().instances]


def test_without_a_factory_the_instances_are_the_endpoints() -> None:
    publisher = static.Publisher(["10.0.0.1:80", Instance("10.0.0.2", 80, weight=5)])
    lb = RoundRobin(publisher)
    picked = {lb.endpoint() for _ in range(4)}
    assert picked == {Instance("10.0.0.1", 80), Instance("10.0.0.2", 80, weight=5)}
    assert all(isinstance(e, Instance) for e in picked)
    publisher.replace([Instance("10.0.0.2", 80, weight=9)])  # re-weighted: the new instance is published
    assert publisher.endpoints()[0].weight == 9


def test_a_factory_annotated_with_instance_receives_the_instance() -> None:
    def factory(instance: Instance) -> tuple[str, int]:
        return (instance.address, instance.weight)

    publisher = static.Publisher([Instance("10.0.0.1", 80, weight=3)], factory)
    assert list(publisher.endpoints()) == [("10.0.0.1:80", 3)]
    strings = static.Publisher(["10.0.0.1:80"], lambda hostport: hostport)
    assert list(strings.endpoints()) == ["10.0.0.1:80"]  # go-kit's factory("host:port") as before


def test_a_factory_returning_none_skips_the_instance(caplog: pytest.LogCaptureFixture) -> None:
    publisher = static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], lambda a: None if a.startswith("10.0.0.1") else a)
    assert list(publisher.endpoints()) == ["10.0.0.2:80"]
    assert "the factory returned None" in caplog.text


def test_tags_keep_instances_carrying_all_of_them() -> None:
    instances = [
        Instance("10.0.0.1", 80, tags=("blue", "v2")),
        Instance("10.0.0.2", 80, tags=("blue",)),
        Instance("10.0.0.3", 80, tags=("v2", "blue", "canary")),
    ]
    assert addresses(static.Publisher(instances, tags=["blue", "v2"])) == ["10.0.0.1:80", "10.0.0.3:80"]
    assert addresses(static.Publisher(instances, tags="canary")) == ["10.0.0.3:80"]
    keyed = Keyed(tags=["v2"])
    keyed.put("a", instances[0])
    keyed.put("b", instances[1])
    keyed.commit()
    assert addresses(keyed) == ["10.0.0.1:80"]
    keyed.put("a", Instance("10.0.0.1", 80, tags=("blue",)))  # lost the tag: out
    keyed.commit()
    assert addresses(keyed) == []
    with pytest.raises(TypeError, match="tags must be strings"):
        static.Publisher(instances, tags=[1])  # type: ignore[list-item]


def test_not_ready_is_told_apart_from_empty_and_can_be_waited_for() -> None:
    keyed = Keyed()
    assert not keyed.ready
    lb = RoundRobin(keyed)
    with pytest.raises(NotReadyError, match="has not answered yet"):
        lb.endpoint()
    assert not keyed.wait_ready(0.01)
    threading.Timer(0.05, lambda: (keyed.put("a", "10.0.0.1:80"), keyed.commit())).start()
    assert keyed.wait_ready(10)
    assert lb.endpoint() == Instance("10.0.0.1", 80)
    empty = Keyed()
    empty.commit()  # read, and empty: an answer all the same
    assert empty.ready
    with pytest.raises(NoEndpointsError) as caught:
        RoundRobin(empty).endpoint()
    assert not isinstance(caught.value, NotReadyError)
    failed = Keyed()
    failed.failed(ConnectionRefusedError("down"))
    assert failed.ready  # a failure is an answer too: waiting longer would not help
    keyed.close()
    with pytest.raises(PublisherClosedError):
        lb.endpoint()


@pytest.mark.asyncio
async def test_await_ready_in_async_code() -> None:
    keyed = Keyed()
    assert not await keyed.await_ready(0.01)
    threading.Timer(0.05, keyed.commit).start()
    assert await keyed.await_ready(10)


def test_changes_by_key_touch_only_what_changed() -> None:
    factory = Factory()
    keyed = Keyed(factory)
    for n in range(100):
        keyed.put(f"k{n:03}", f"10.0.{n // 250}.{n % 250 + 1}:80")
    keyed.commit()
    first = keyed.endpoints()
    assert len(first) == 100 and sum(factory.calls.values()) == 100
    keyed.put("k050", "10.9.9.9:80")  # replaced in place
    keyed.delete("k010")
    keyed.put("k999", "10.8.8.8:80")
    keyed.commit()
    second = keyed.endpoints()
    assert len(second) == 100
    assert sum(factory.calls.values()) == 102
    assert [str(i) for i in second.instances][48:50] == ["10.0.0.50:80", "10.9.9.9:80"]  # k010 went before it
    assert str(second.instances[-1]) == "10.8.8.8:80"
    kept = {id(e) for e in first} & {id(e) for e in second}
    assert len(kept) == 98  # every other endpoint object stayed
    removed = [e for e in first if id(e) not in {id(x) for x in second}]
    assert all(e.closed for e in removed)


def test_stale_then_fresh_by_key_and_invalidation_keeps_the_keys() -> None:
    factory = Factory()
    keyed = Keyed(factory, invalidate_after=0)
    keyed.put("a", "10.0.0.1:80")
    keyed.commit()
    keyed.failed(ConnectionRefusedError("down"))
    assert keyed.endpoints().stale and len(keyed.endpoints()) == 0  # invalidated at once
    assert factory.made[0].closed
    keyed.put("b", "10.0.0.2:80")  # the watch resumes with one change; "a" is still known
    keyed.commit()
    assert addresses(keyed) == ["10.0.0.1:80", "10.0.0.2:80"]
    assert not keyed.endpoints().stale
    assert factory.calls["10.0.0.1:80"] == 2  # its endpoint was closed: made anew


def test_concurrent_refreshes_share_one_read() -> None:
    reads: list[int] = []
    started = threading.Event()
    release = threading.Event()

    class Slow(DiscoveryPublisher[Any]):
        def __init__(self) -> None:
            super().__init__(service="slow")

        async def _refresh(self) -> None:
            import asyncio

            reads.append(1)
            started.set()
            await asyncio.to_thread(release.wait, 10)
            self._publish(["10.0.0.1:80"])

    publisher = Slow()
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(publisher.refresh())) for _ in range(3)]
    threads[0].start()
    assert started.wait(10)
    for thread in threads[1:]:
        thread.start()
    threading.Timer(0.5, release.set).start()  # time for the other two to ask (no bound on anything)
    for thread in threads:
        thread.join(10)
    assert [addresses_of(r) for r in results] == [["10.0.0.1:80"]] * 3
    assert len(reads) == 1  # the later refreshes joined the read in progress
    publisher.close()


def addresses_of(endpoints: Any) -> list[str]:
    return [str(i) for i in endpoints.instances]
