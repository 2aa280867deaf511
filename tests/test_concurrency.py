"""Picks and calls from many threads and tasks while the set is replaced underneath."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections.abc import Iterator

import pytest

from loadbalancer import NoEndpointsError, Random, Retry, RetryError, RoundRobin, static
from tests.helpers import AsyncEndpoint, Endpoint, Factory, aeventually, eventually

POOL = [f"10.1.0.{i}:8080" for i in range(1, 21)]
REPLACEMENTS = 1_000


@pytest.fixture(autouse=True)
def quick_thread_switches() -> Iterator[None]:
    # Busy pickers hold the GIL for the default 5 ms between switches, and the replacing
    # thread gives it up at every system call: switch sooner so the test stays short.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(previous)


def random_sets(seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [rng.sample(POOL, rng.randint(1, len(POOL))) for _ in range(REPLACEMENTS)]


def entries(sets: list[list[str]], initial: list[str]) -> int:
    """How many times an address entered the set: the factory calls there should be."""
    count, present = len(initial), set(initial)
    for members in sets:
        count += len(set(members) - present)
        present = set(members)
    return count


def check_endpoints(factory: Factory, publisher: static.Publisher[Endpoint], expected_calls: int) -> None:
    assert len(factory.made) == expected_calls
    assert not any(e.called_after_close for e in factory.made)
    current = {id(e) for e in publisher.endpoints()}
    assert not any(factory.made[i].closed for i in range(len(factory.made)) if id(factory.made[i]) in current)
    eventually(
        lambda: all(e.closed for e in factory.made if id(e) not in current),
        timeout=10,
        what="every removed endpoint closed",
    )


def test_picks_and_calls_from_threads_while_the_set_changes() -> None:
    factory = Factory()
    initial = POOL[:5]
    publisher = static.Publisher(initial, factory)
    round_robin, rand = RoundRobin(publisher), Random(publisher)
    call = Retry(3, 5.0, round_robin)
    stop = threading.Event()
    problems: list[BaseException] = []
    picks = [0] * 8

    def worker(index: int) -> None:
        try:
            while not stop.is_set():
                if index % 3 == 0:
                    call(index)
                elif index % 3 == 1:
                    round_robin.endpoint()(index)
                else:
                    rand.endpoint()(index)
                picks[index] += 1
        except BaseException as error:  # any exception is a failure of the test
            problems.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    sets = random_sets(1)
    for members in sets:
        publisher.replace(members)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert problems == []
    assert all(picks), picks
    check_endpoints(factory, publisher, entries(sets, initial))
    publisher.close()


async def test_picks_and_calls_from_tasks_while_the_set_changes() -> None:
    factory = Factory(AsyncEndpoint)
    initial = POOL[:5]
    publisher = static.Publisher(initial, factory)
    call = Retry(3, 5.0, RoundRobin(publisher))
    stop = asyncio.Event()
    calls = [0] * 100

    async def task(index: int) -> None:
        while not stop.is_set():
            assert (await call(index)).endswith(f":{index}")
            calls[index] += 1

    tasks = [asyncio.create_task(task(i)) for i in range(100)]
    sets = random_sets(2)

    def replace_all() -> None:
        for members in sets:
            publisher.replace(members)

    await asyncio.to_thread(replace_all)
    await aeventually(lambda: all(calls), 10, "a call from every task")  # not a guess at how long that takes
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)  # re-raises any task's failure
    assert all(calls), calls
    await asyncio.to_thread(check_endpoints, factory, publisher, entries(sets, initial))
    await publisher.aclose()


def test_empty_sets_under_concurrency_raise_only_no_endpoints() -> None:
    publisher = static.Publisher(["a:1"], Endpoint)
    lb = RoundRobin(publisher)
    call = Retry(2, 5.0, lb)
    stop = threading.Event()
    unexpected: list[BaseException] = []
    outcomes = {"ok": 0, "empty": 0}

    def worker() -> None:
        while not stop.is_set():
            try:
                call("x")
                outcomes["ok"] += 1
            except RetryError as error:
                if not all(isinstance(e, NoEndpointsError) for e in error.errors):
                    unexpected.append(error)
                outcomes["empty"] += 1
            except BaseException as error:
                unexpected.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i in range(REPLACEMENTS):
        publisher.replace(["a:1", "b:2"] if i % 2 else [])
    stop.set()
    for thread in threads:
        thread.join(10)
    assert unexpected == []
    assert outcomes["ok"] > 0
