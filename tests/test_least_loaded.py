from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from loadbalancer import Instance, NoEndpointsError, Retry, RetryError, static
from loadbalancer.least_loaded import LeastLoaded, PeakEwma
from loadbalancer.tracked import TrackedEndpoint
from tests.helpers import AsyncEndpoint, Endpoint, Factory, aeventually

Kind = Callable[..., LeastLoaded[Any] | PeakEwma[Any]]
KINDS = [LeastLoaded, PeakEwma]


def addresses(n: int) -> list[str]:
    return [f"10.0.0.{i}:80" for i in range(1, n + 1)]


class Clock:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Timed:
    """A sync endpoint whose calls take ``latency`` seconds of a fake clock."""

    def __init__(self, clock: Clock, latency: float, fail: bool = False) -> None:
        self.clock = clock
        self.latency = latency
        self.fail = fail
        self.calls = 0

    def __call__(self, request: object) -> object:
        self.calls += 1
        self.clock.now += self.latency
        if self.fail:
            raise ConnectionError("refused")
        return request


class Gate:
    """Async endpoints that wait for ``open`` before they answer."""

    def __init__(self) -> None:
        self.open = asyncio.Event()

    def factory(self, address: str) -> Callable[[object], Any]:
        async def call(request: object) -> str:
            await self.open.wait()
            return f"{address}:{request}"

        return call


@pytest.fixture
def quick_thread_switches() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(previous)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- the wrapper -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_hands_out_wrappers_that_call_through(kind: Kind) -> None:
    factory = Factory()
    lb = kind(static.Publisher(["10.0.0.1:80"], factory))
    tracked = lb.endpoint()
    assert isinstance(tracked, TrackedEndpoint)
    assert tracked.endpoint is factory.made[0]
    assert str(tracked) == "10.0.0.1:80"
    assert repr(tracked) == "TrackedEndpoint(Instance(host='10.0.0.1', port=80), outstanding=0)"
    assert tracked("ping") == "10.0.0.1:80:ping"
    assert tracked.outstanding == 0
    assert lb.tracked() == [tracked]


@pytest.mark.parametrize("kind", KINDS)
def test_sync_calls_are_counted_while_they_run_and_after_errors(kind: Kind) -> None:
    seen: list[int] = []
    holder: list[TrackedEndpoint[Any]] = []

    def endpoint(request: str) -> str:
        seen.append(holder[0].outstanding)
        if request == "fail":
            raise ValueError("boom")
        return request

    lb = kind(static.Publisher(["a:1"], lambda _: endpoint))
    holder.append(lb.endpoint())
    assert holder[0]("ok") == "ok"
    with pytest.raises(ValueError, match="boom"):
        holder[0]("fail")
    with pytest.raises(KeyboardInterrupt):  # BaseExceptions too
        holder[0].endpoint = lambda _: (_ for _ in ()).throw(KeyboardInterrupt)
        holder[0]("x")
    assert seen == [1, 1]
    assert holder[0].outstanding == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_async_calls_are_counted_until_done_failed_or_cancelled(kind: Kind) -> None:
    gate = Gate()
    lb = kind(static.Publisher(["a:1"], gate.factory))
    tracked = lb.endpoint()
    never = tracked("never awaited")  # an async wrapper counts from the first await on
    assert tracked.outstanding == 0
    never.close()

    tasks = [asyncio.create_task(tracked(i)) for i in range(3)]
    await settle()
    assert tracked.outstanding == 3
    tasks[0].cancel()
    await settle()
    assert tracked.outstanding == 2
    gate.open.set()
    assert await asyncio.gather(*tasks[1:]) == ["a:1:1", "a:1:2"]
    assert tracked.outstanding == 0
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]

    async def failing(request: object) -> None:
        await asyncio.sleep(0)
        raise ConnectionError("reset")

    lb = kind(static.Publisher(["b:2"], lambda _: failing))
    tracked = lb.endpoint()
    with pytest.raises(ConnectionError):
        await tracked(1)
    assert tracked.outstanding == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_sync_endpoints_returning_awaitables_are_tracked_until_awaited(kind: Kind) -> None:
    gate = Gate()

    def endpoint(request: object) -> Any:  # not async itself: known only from its result
        return gate.factory("c:3")(request)

    lb = kind(static.Publisher(["c:3"], lambda _: endpoint))
    tracked = lb.endpoint()
    awaitable = tracked("x")
    assert tracked.outstanding == 1
    task = asyncio.create_task(awaitable)
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tracked.outstanding == 0
    gate.open.set()
    assert await tracked("y") == "c:3:y"
    assert tracked.outstanding == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_retry_deadlines_and_failures_leave_nothing_outstanding(kind: Kind) -> None:
    gate = Gate()  # never opened: every call hangs until Retry's deadline cancels it
    lb = kind(static.Publisher(addresses(3), gate.factory))
    call = Retry(3, 0.05, lb)
    with pytest.raises(TimeoutError):
        await call("x")
    assert [t.outstanding for t in lb.tracked()] == [0, 0, 0]

    factory = Factory()
    publisher = static.Publisher(addresses(3), factory)
    lb = kind(publisher)
    for endpoint in factory.made:
        endpoint.fail = ConnectionError("refused")
    with pytest.raises(RetryError) as caught:
        Retry(3, 5.0, lb)("x")
    assert len(caught.value.errors) == 3
    assert [t.outstanding for t in lb.tracked()] == [0, 0, 0]


@pytest.mark.parametrize("kind", KINDS)
def test_endpoints_must_be_callable(kind: Kind) -> None:
    with pytest.raises(TypeError, match=r"endpoints must be callable; got 'a:1' for a:1"):
        kind(static.Publisher(["a:1"], str))


@pytest.mark.parametrize("kind", KINDS)
def test_empty_sets_raise_no_endpoints(kind: Kind) -> None:
    publisher = static.Publisher([], Endpoint)
    lb = kind(publisher)
    pick = lb.endpoint
    for _ in range(3):
        with pytest.raises(NoEndpointsError, match=r"no endpoints available from static.Publisher\(0 instances\)"):
            pick()
    publisher.replace(["a:1"])
    assert str(pick()) == "a:1"
    publisher.replace([])
    with pytest.raises(NoEndpointsError):
        pick()


@pytest.mark.parametrize("kind", KINDS)
async def test_wrappers_and_their_counts_survive_set_changes(kind: Kind) -> None:
    gate = Gate()
    publisher = static.Publisher(["a:1"], gate.factory)
    lb = kind(publisher)
    first = lb.endpoint()
    task = asyncio.create_task(first("x"))
    await settle()
    publisher.replace(["a:1", "b:2"])
    assert lb.tracked()[0] is first
    assert first.outstanding == 1
    assert {str(lb.endpoint()) for _ in range(200)} == {"b:2"}  # a:1 is still busy
    publisher.replace(["b:2"])
    publisher.replace(["a:1", "b:2"])  # a:1 came back: a new endpoint, so a new wrapper
    assert lb.tracked()[0] is not first
    gate.open.set()
    assert await task == "a:1:x"
    assert first.outstanding == 0


# -- least loaded ------------------------------------------------------------------------


async def test_least_loaded_prefers_the_less_loaded_exactly_as_p2c_does() -> None:
    gate = Gate()
    lb = LeastLoaded(static.Publisher(addresses(5), gate.factory), seed=1)
    trackers = lb.tracked()
    tasks = [asyncio.create_task(t(i)) for n, t in enumerate(trackers) for i in range(n)]  # loads 0..4
    await settle()
    assert [t.outstanding for t in trackers] == [0, 1, 2, 3, 4]
    # The deck holds every ordered pair of distinct endpoints (4 times for 5 endpoints),
    # and the less loaded of a pair wins: endpoint k wins against the 4 - k more loaded.
    counts = Counter(str(lb.endpoint()) for _ in range(80 * 10))
    assert counts == {"10.0.0.1:80": 320, "10.0.0.2:80": 240, "10.0.0.3:80": 160, "10.0.0.4:80": 80}
    gate.open.set()
    await asyncio.gather(*tasks)
    assert [t.outstanding for t in trackers] == [0] * 5


async def test_least_loaded_sends_less_to_a_slow_endpoint() -> None:
    calls: Counter[str] = Counter()

    def factory(address: str) -> Callable[[object], Any]:
        delay = 0.02 if address == "10.0.0.1:80" else 0.001

        async def call(request: object) -> None:
            calls[address] += 1
            await asyncio.sleep(delay)

        return call

    lb = LeastLoaded(static.Publisher(addresses(4), factory), seed=2)

    async def client() -> None:
        for _ in range(25):
            await lb.endpoint()(None)

    await asyncio.gather(*(client() for _ in range(8)))
    assert sum(calls.values()) == 200
    assert calls["10.0.0.1:80"] < 200 / 4 / 2  # less than half its round-robin share


def test_ties_go_either_way() -> None:
    lb = LeastLoaded(static.Publisher(addresses(2), Endpoint), seed=3)
    assert Counter(str(lb.endpoint()) for _ in range(64)) == {"10.0.0.1:80": 32, "10.0.0.2:80": 32}


# -- peak EWMA ---------------------------------------------------------------------------


def test_peak_ewma_estimate_is_peak_sensitive_and_decays_with_the_half_life() -> None:
    clock = Clock()
    backend = Timed(clock, 0.1)
    lb = PeakEwma(static.Publisher(["a:1"], lambda _: backend), half_life=1.0, clock=clock)
    tracked = lb.endpoint()
    assert lb.latency(tracked) is None  # no answer yet
    tracked(1)
    assert lb.latency("a:1") == pytest.approx(0.1)  # the first answer is the estimate
    clock.now += 1.0  # one half-life later, an instant answer halves the estimate
    backend.latency = 0.0
    tracked(1)
    assert lb.latency(tracked) == pytest.approx(0.05)
    backend.latency = 0.3  # a slower answer replaces the estimate at once
    tracked(1)
    assert lb.latency(tracked) == pytest.approx(0.3)
    backend.latency, backend.fail = 0.01, True  # a fast failure does not make it look fast
    with pytest.raises(ConnectionError):
        tracked(1)
    assert lb.latency(tracked) == pytest.approx(0.3)
    backend.latency = 0.5  # a slow one counts
    with pytest.raises(ConnectionError):
        tracked(1)
    assert lb.latency(tracked) == pytest.approx(0.5)
    with pytest.raises(KeyError, match="'b:2' is not in the current set"):
        lb.latency("b:2")


def test_peak_ewma_moves_traffic_away_from_a_slow_endpoint_and_back() -> None:
    clock = Clock()
    backends = {address: Timed(clock, 0.001) for address in addresses(4)}
    slow = backends["10.0.0.1:80"]
    slow.latency = 0.010
    lb = PeakEwma(static.Publisher(addresses(4), backends.__getitem__), half_life=1.0, seed=4, clock=clock)

    def run(calls: int) -> int:
        before = slow.calls
        for _ in range(calls):
            lb.endpoint()(None)
        return slow.calls - before

    run(500)  # learn
    assert run(2000) < 20  # 10x slower: next to nothing, only rare probes (fair share: 500)
    slow.latency = 0.001  # it recovers; probes find out, and its share comes back
    run(8000)
    assert run(4000) > 4000 / 4 * 0.6


def test_peak_ewma_tries_a_new_endpoint_at_once_and_probes_it_one_call_at_a_time() -> None:
    clock = Clock()
    backends = {address: Timed(clock, 0.001) for address in addresses(2)}
    publisher = static.Publisher(addresses(1), backends.__getitem__)
    lb = PeakEwma(publisher, clock=clock, seed=5)
    for _ in range(10):
        lb.endpoint()(None)
    publisher.replace(addresses(2))
    new = lb.tracked()[1]
    assert lb.endpoint() is new  # never called: it costs nothing
    new._inflight.append(None)  # a call in flight, no answer yet (as if it hung)
    lb._observer.started(new)  # type: ignore[union-attr]  # (a real call start does this)
    assert {str(lb.endpoint()) for _ in range(50)} == {"10.0.0.1:80"}


def test_peak_ewma_weighs_load_with_latency() -> None:
    clock = Clock()
    backends = {address: Timed(clock, 0.001) for address in addresses(2)}
    backends["10.0.0.2:80"].latency = 0.003
    lb = PeakEwma(static.Publisher(addresses(2), backends.__getitem__), clock=clock, seed=6)
    for tracked in lb.tracked():
        tracked(None)
    fast, slow = lb.tracked()
    assert all(lb.endpoint() is fast for _ in range(20))  # 1 ms x 1 < 3 ms x 1
    fast._inflight.extend([None] * 3)  # 1 ms x 4 > 3 ms x 1: the slow one is cheaper now
    lb._observer.started(fast)  # type: ignore[union-attr]  # (a real call start does this)
    assert all(lb.endpoint() is slow for _ in range(20))
    del fast._inflight[:]


def test_peak_ewma_needs_a_positive_half_life() -> None:
    with pytest.raises(ValueError, match="half_life must be positive, got 0.0"):
        PeakEwma(static.Publisher(["a:1"], Endpoint), half_life=0)


# -- concurrency -------------------------------------------------------------------------

POOL = [f"10.1.0.{i}:8080" for i in range(1, 13)]


@pytest.mark.usefixtures("quick_thread_switches")
@pytest.mark.parametrize("kind", KINDS)
def test_counts_stay_exact_under_threads_while_the_set_changes(kind: Kind) -> None:
    factory = Factory()
    publisher = static.Publisher(POOL[:4], factory)
    lb = kind(publisher)
    seen: dict[int, TrackedEndpoint[Any]] = {}
    stop = threading.Event()
    problems: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            while not stop.is_set():
                try:
                    tracked = lb.endpoint()
                except NoEndpointsError:
                    continue
                seen[id(tracked)] = tracked
                assert tracked(index) == f"{tracked}:{index}"
        except BaseException as error:
            problems.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    rng = random.Random(7)
    for _ in range(500):
        publisher.replace(rng.sample(POOL, rng.randint(0, len(POOL))))
    stop.set()
    for thread in threads:
        thread.join(10)
    assert problems == []
    assert len(seen) > 12
    assert all(t.outstanding == 0 for t in seen.values())
    if kind is PeakEwma:  # and each cost reflects the final state: no call in flight
        for tracked in seen.values():
            state = tracked._state
            assert state.cell == [0, 0.0] if state.base is None else state.cell == [1, state.base]


@pytest.mark.usefixtures("quick_thread_switches")
@pytest.mark.parametrize("kind", KINDS)
def test_one_endpoint_hammered_from_threads_counts_back_to_zero(kind: Kind) -> None:
    lb = kind(static.Publisher(["a:1"], lambda _: lambda request: sum(range(50))))
    tracked = lb.endpoint()
    peaks: list[int] = []

    def worker() -> None:
        for _ in range(3000):
            tracked(None)
            peaks.append(tracked.outstanding)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert tracked.outstanding == 0
    assert max(peaks) <= 8


@pytest.mark.usefixtures("quick_thread_switches")
@pytest.mark.parametrize("kind", KINDS)
async def test_counts_stay_exact_under_tasks_while_the_set_changes(kind: Kind) -> None:
    factory = Factory(AsyncEndpoint)
    publisher = static.Publisher(POOL[:4], factory)
    lb = kind(publisher)
    call = Retry(3, 5.0, lb)
    seen: dict[int, TrackedEndpoint[Any]] = {}
    stop = asyncio.Event()
    done = [0] * 50

    async def task(index: int) -> None:
        while not stop.is_set():
            try:
                tracked = lb.endpoint()
            except NoEndpointsError:
                await asyncio.sleep(0)
                continue
            seen[id(tracked)] = tracked
            if index % 2:
                assert await tracked(index) == f"{tracked}:{index}"
            else:
                try:
                    await asyncio.wait_for(call(index), 0.001)  # cancelled now and then
                except (TimeoutError, RetryError):
                    pass
            done[index] += 1

    tasks = [asyncio.create_task(task(i)) for i in range(50)]
    rng = random.Random(8)
    sets = [rng.sample(POOL, rng.randint(1, len(POOL))) for _ in range(300)]

    def replace_all() -> None:
        for members in sets:
            publisher.replace(members)

    await asyncio.to_thread(replace_all)
    await aeventually(lambda: all(done), 10, "a call from every task")  # not a guess at how long that takes
    stop.set()
    await asyncio.gather(*tasks)
    assert all(done)
    assert all(t.outstanding == 0 for t in seen.values())


def test_instances_with_weights_keep_their_wrapper() -> None:
    publisher = static.Publisher([Instance("10.0.0.1", 80, weight=1)], Endpoint)
    lb = LeastLoaded(publisher)
    first = lb.endpoint()
    publisher.replace([Instance("10.0.0.1", 80, weight=5)])
    assert lb.endpoint() is first
    assert first.instance.weight == 5


@pytest.mark.parametrize("kind", [LeastLoaded, PeakEwma])
def test_one_tracker_per_endpoint_under_an_outlier_detector(kind: Any) -> None:
    from loadbalancer import OutlierDetector

    factory = Factory()
    detector = OutlierDetector(static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], factory), consecutive_failures=2)
    lb = kind(detector)
    picked = lb.endpoint()
    assert picked in list(detector.endpoints())  # the detector's own tracker, not a wrapper of it
    assert not isinstance(picked.endpoint, TrackedEndpoint)  # which wraps the endpoint itself
    picked("ping")
    assert picked.endpoint.calls == 1
    if kind is PeakEwma:
        assert lb.latency(picked) is not None  # the balancer learned from that one call
    picked.endpoint.fail = ConnectionRefusedError("down")
    for _ in range(2):
        with pytest.raises(ConnectionRefusedError):
            picked("ping")
    assert detector.ejected() == [str(picked)]  # and so did the detector
    detector.close()


def test_peak_ewma_sends_little_to_a_new_endpoint_that_fails_fast() -> None:
    clock = Clock()
    backends = {"dead:1": Timed(clock, 0.001, fail=True), "a:1": Timed(clock, 0.01), "b:1": Timed(clock, 0.01)}
    lb = PeakEwma(static.Publisher(list(backends), lambda address: backends[address]), seed=3, clock=clock)
    for _ in range(300):
        try:
            lb.endpoint()("ping")
        except ConnectionError:
            pass
    # refused in 1 ms against answers in 10 ms: without the penalty it would look fastest
    assert backends["dead:1"].calls <= 3
