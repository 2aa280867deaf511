"""Fault runs: backends in child processes killed (SIGKILL) and restarted under steady load."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import loadbalancer
from loadbalancer import HealthChecker, Hedge, OutlierDetector, Retry, RoundRobin, static
from loadbalancer.health import HttpCheck

from .backends import BackendProcess, async_factory, sync_factory
from .helpers import aeventually, eventually


@pytest.fixture
def fleet() -> Iterator[list[BackendProcess]]:
    started = [BackendProcess().start() for _ in range(3)]
    yield started
    for backend in started:
        backend.kill()


def outlier_only(publisher: loadbalancer.Publisher[Any]) -> loadbalancer.Publisher[Any]:
    return OutlierDetector(publisher, consecutive_failures=2, base_ejection_time=0.3)


def outlier_and_health(publisher: loadbalancer.Publisher[Any]) -> loadbalancer.Publisher[Any]:
    checked = HealthChecker(publisher, HttpCheck(), interval=0.1, timeout=0.5, healthy_threshold=1)
    return OutlierDetector(checked, consecutive_failures=2, base_ejection_time=0.3)


@pytest.mark.parametrize("protect", [outlier_only, outlier_and_health], ids=["ejection", "ejection+health"])
def test_a_backend_killed_and_restarted_under_load_fails_no_request(
    fleet: list[BackendProcess], protect: Callable[[loadbalancer.Publisher[Any]], loadbalancer.Publisher[Any]]
) -> None:
    publisher = protect(static.Publisher([b.address for b in fleet], sync_factory))
    call = Retry(3, 5.0, RoundRobin(publisher))
    answers: Counter[str] = Counter()
    failures: list[BaseException] = []
    phase = ["before"]
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                answers[phase[0] + ":" + call("/")] += 1
            except Exception as error:
                failures.append(error)

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    victim = fleet[1]
    try:
        eventually(lambda: sum(answers.values()) >= 200, timeout=30, what="load before the kill")
        victim.kill()
        phase[0] = "down"
        time.sleep(0.5)
        victim.start()
        phase[0] = "after"
        eventually(lambda: answers[f"after:{victim.port}"] >= 20, timeout=30, what="the restarted backend's return")
    finally:
        stop.set()
        for thread in clients:
            thread.join()
        publisher.close()
    assert failures == []
    assert sum(count for key, count in answers.items() if key.startswith("down:")) > 0, "no load while it was down"


async def test_hedging_over_real_http_wins_with_the_fast_backend_and_cancels_the_slow(
    fleet: list[BackendProcess],
) -> None:
    slow, fast = fleet[0], fleet[1]
    slow.set(mode="slow:5")
    cancelled: list[str] = []

    def factory(address: str) -> Any:
        call = async_factory(address)

        async def tracked(path: str) -> str:
            try:
                return str(await call(path))
            except asyncio.CancelledError:
                cancelled.append(address)
                raise

        return tracked

    class SlowFirst(loadbalancer.Balancer[Any]):
        """Offers the slow backend first, then the fast one, so that the hedge is what saves the call."""

        def __init__(self, publisher: loadbalancer.Publisher[Any]) -> None:
            self._order: list[Any] = []
            self._turn = 0
            super().__init__(publisher)

        def _update(self, endpoints: loadbalancer.EndpointSet[Any]) -> None:
            self._order = list(endpoints)

        def endpoint(self) -> Any:
            self._turn += 1
            return self._order[(self._turn - 1) % 2]

    async with static.Publisher([slow.address, fast.address], factory) as publisher:
        hedge = Hedge(SlowFirst(publisher), after=0.05)
        answer = await Retry(1, 4.0, hedge)("/")  # the slow backend answers after 5 s: past the deadline
        await aeventually(lambda: cancelled, what="the slow attempt's cancellation")  # delivered after the win
    assert answer == str(fast.port)
    assert cancelled == [slow.address] and hedge.hedges == 1 and hedge.hedge_wins == 1
