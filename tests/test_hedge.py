from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from loadbalancer import Balancer, Hedge, Retry, RetryBudget, RoundRobin, static
from tests.helpers import aeventually


class Backends:
    """Async endpoints by address: how long each takes, whether it fails; records cancellations."""

    def __init__(self, delays: dict[str, float], failing: tuple[str, ...] = ()) -> None:
        self.delays = delays
        self.failing = failing
        self.started: list[str] = []
        self.cancelled: list[str] = []

    def factory(self, address: str):  # type: ignore[no-untyped-def]
        async def call(request: object) -> str:
            self.started.append(address)
            try:
                await asyncio.sleep(self.delays[address])
            except asyncio.CancelledError:
                self.cancelled.append(address)
                raise
            if address in self.failing:
                raise ConnectionError(f"{address} failed")
            return address

        return call

    def balancer(self) -> RoundRobin[object]:
        return RoundRobin(static.Publisher(list(self.delays), self.factory))

    def scripted(self) -> Balancer[object]:
        """Picks in the order the addresses were given, over and over: the test knows who is first."""
        return Scripted(static.Publisher(list(self.delays), self.factory))


class Scripted(Balancer[object]):
    def __init__(self, publisher: static.Publisher[object]) -> None:
        self._order = itertools.cycle(publisher.endpoints())
        super().__init__(publisher)

    def _update(self, endpoints: object) -> None:
        pass

    def endpoint(self) -> object:
        return next(self._order)


async def test_a_slow_attempt_is_hedged_and_the_fast_one_wins() -> None:
    backends = Backends({"slow:1": 30.0, "fast:2": 0.0})
    hedged = Hedge(backends.scripted(), after=0.02)  # every call: slow first, then fast
    started = time.monotonic()
    results = [await hedged.endpoint()(i) for i in range(6)]
    assert time.monotonic() - started < 10  # no call waited for the 30 s endpoint
    assert results == ["fast:2"] * 6
    # each slow primary is cancelled when the hedge wins (delivered at the loop's next turns)
    await aeventually(lambda: len(backends.cancelled) == 6, what="the slow attempts cancelled")
    assert backends.cancelled == ["slow:1"] * 6
    assert hedged.hedges == 6
    assert hedged.hedge_wins == 6


async def test_no_hedge_when_the_answer_comes_in_time() -> None:
    backends = Backends({"a:1": 0.0, "b:2": 0.0})
    hedged = Hedge(backends.balancer(), after=30.0)  # answers come at once: no hedge, however slow the machine
    for i in range(10):
        await hedged.endpoint()(i)
    assert hedged.hedges == 0
    assert len(backends.started) == 10


async def test_percentile_delay_follows_observed_latency() -> None:
    backends = Backends({"a:1": 0.001, "b:2": 0.001})
    hedged = Hedge(backends.balancer(), percentile=0.9, initial=5.0)
    assert hedged.hedge_delay() == 5.0
    for i in range(120):
        await hedged.endpoint()(i)
    assert hedged.hedge_delay() < 1.0  # learned from ~1 ms calls, no longer the initial 5 s


async def test_both_failing_raises_the_error_and_retry_goes_on() -> None:
    backends = Backends({"a:1": 0.05, "b:2": 0.05, "c:3": 0.0}, failing=("a:1", "b:2"))
    hedged = Hedge(backends.balancer(), after=0.01)
    call = Retry(3, 5.0, hedged)
    assert await call("x") == "c:3"  # whatever order, c:3 is the only one that answers
    lone = Backends({"a:1": 0.05, "b:2": 0.05}, failing=("a:1", "b:2"))
    with pytest.raises(ConnectionError, match="failed"):
        await Hedge(lone.balancer(), after=0.01).endpoint()("x")


async def test_a_spent_budget_sends_no_hedge() -> None:
    backends = Backends({"slow:1": 0.1, "fast:2": 0.1})
    hedged = Hedge(backends.balancer(), after=0.01, budget=RetryBudget(ratio=0, min_per_second=0))
    assert await hedged.endpoint()("x") in ("slow:1", "fast:2")
    assert hedged.hedges == 0


async def test_retry_deadline_cancels_both_attempts() -> None:
    backends = Backends({"a:1": 30.0, "b:2": 30.0})
    call = Retry(1, 0.5, Hedge(backends.balancer(), after=0.02))  # the hedge goes out long before the deadline
    with pytest.raises(TimeoutError):
        await call("x")
    assert sorted(backends.started) == ["a:1", "b:2"]  # the hedge went out before the deadline
    await aeventually(lambda: len(backends.cancelled) == 2, what="both attempts cancelled")
    assert sorted(backends.cancelled) == ["a:1", "b:2"]


async def test_sync_endpoints_are_refused() -> None:
    hedged = Hedge(RoundRobin(static.Publisher(["a:1"], lambda a: lambda request: "sync")), after=0.01)
    with pytest.raises(TypeError, match="Hedge needs async endpoints"):
        await hedged.endpoint()("x")


def test_bad_arguments() -> None:
    lb = RoundRobin(static.Publisher(["a:1"], str))
    with pytest.raises(ValueError, match="exactly one of after="):
        Hedge(lb)  # type: ignore[var-annotated]
    with pytest.raises(ValueError, match="exactly one of after="):
        Hedge(lb, after=0.1, percentile=0.9)  # type: ignore[var-annotated]
    with pytest.raises(ValueError, match="percentile must be between 0 and 1, got 95"):
        Hedge(lb, percentile=95)  # type: ignore[var-annotated]
    with pytest.raises(TypeError, match="lb must be a loadbalancer.Balancer"):
        Hedge("lb", after=0.1)  # type: ignore[arg-type, var-annotated]


async def test_a_call_before_the_first_answer_waits_for_it() -> None:
    from loadbalancer import NotReadyError
    from loadbalancer._discovery import DiscoveryPublisher

    async def echo(request: str) -> str:
        return request

    class Late(DiscoveryPublisher[Any]):
        def found(self) -> None:
            self._publish(["10.0.0.1:80"])

    publisher = Late(lambda address: echo, service="late")
    hedged = Hedge(RoundRobin(publisher), after=1.0)
    with pytest.raises(NotReadyError):
        RoundRobin(publisher).endpoint()
    asyncio.get_running_loop().call_later(0.05, publisher.found)
    assert await hedged.endpoint()("ping") == "ping"
    never = Late(lambda address: echo, service="never")
    with pytest.raises(NotReadyError):  # outside a Retry: ready_timeout bounds the wait
        await Hedge(RoundRobin(never), after=1.0, ready_timeout=0.05).endpoint()("ping")
