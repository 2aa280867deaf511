"""OutlierDetector: passive ejection, against real HTTP backends on loopback."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest

import loadbalancer
from loadbalancer import OutlierDetector, Retry, RoundRobin, static

from .backends import Backend, HttpStatusError, async_factory, sync_factory
from .helpers import Endpoint, Factory, aeventually, events, eventually


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    started = [Backend() for _ in range(4)]
    yield started
    for backend in started:
        backend.stop()


def fail(call: object, times: int, path: str = "/") -> None:
    for _ in range(times):
        with pytest.raises((HttpStatusError, OSError)):
            call(path)  # type: ignore[operator]


def addresses(publisher: loadbalancer.Publisher[object]) -> list[str]:
    return [instance.address for instance in publisher.endpoints().instances]


class FakeClock:
    """A clock that moves only when told: the detector's notion of time, under the test's control."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_ejected_after_n_consecutive_failures_and_back_after_the_ejection_time(
    backends: list[Backend], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loadbalancer")
    bad = backends[0]
    bad.mode = "fail"
    clock = FakeClock()
    detector = OutlierDetector(
        static.Publisher([b.address for b in backends], sync_factory),
        consecutive_failures=3,
        base_ejection_time=30,
        clock=clock,
    )
    with detector:
        endpoint, good = detector.endpoints()[0], detector.endpoints()[1]
        fail(endpoint, 2)
        assert bad.address in addresses(detector), "two failures are not three"
        assert endpoint("/health") == "ok"  # a success resets the count
        fail(endpoint, 2)
        assert bad.address in addresses(detector)
        fail(endpoint, 1)
        assert addresses(detector) == [b.address for b in backends[1:]]
        assert detector.ejected() == [bad.address] and detector.ejections == 1
        (ejected,) = events(caplog, "instance_ejected")
        assert ejected.levelno == logging.WARNING and ejected.instance == bad.address and "500" in ejected.error
        bad.mode = "ok"
        clock.advance(29.9)
        assert good("/health") == "ok"  # a call outcome: the detector looks at the clock
        assert detector.ejected() == [bad.address], "back before its ejection time"
        clock.advance(0.1)
        assert good("/health") == "ok"
        assert detector.ejected() == [] and addresses(detector) == [b.address for b in backends]
        assert detector.returns == 1
        (returned,) = events(caplog, "instance_returned")
        assert returned.instance == bad.address and returned.after == 30.0


def test_the_return_timer_brings_an_instance_back_by_itself(backends: list[Backend]) -> None:
    backends[0].mode = "fail"
    seen: list[list[str]] = []
    detector = OutlierDetector(
        static.Publisher([b.address for b in backends], sync_factory), consecutive_failures=1, base_ejection_time=0.05
    )
    with detector:
        detector.subscribe(lambda endpoints: seen.append([i.address for i in endpoints.instances]))
        fail(detector.endpoints()[0], 1)
        assert backends[0].address not in addresses(detector)
        # no call comes: only the timer on the background loop can bring it back
        eventually(lambda: seen[-1] == [b.address for b in backends], timeout=30, what="the return")
        assert detector.returns == 1


def test_ejection_time_grows_with_repeated_ejections_and_is_capped(
    backends: list[Backend], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loadbalancer")
    backends[0].mode = "fail"
    clock = FakeClock()
    detector = OutlierDetector(
        static.Publisher([b.address for b in backends], sync_factory),
        consecutive_failures=1,
        base_ejection_time=20,
        max_ejection_time=50,
        clock=clock,
    )
    with detector:
        bad, good = detector.endpoints()[0], detector.endpoints()[1]
        for expected in (20, 40, 50, 50):  # base x times ejected, capped
            fail(bad, 1)
            assert backends[0].address not in addresses(detector)
            clock.advance(expected - 0.5)
            good("/")
            assert backends[0].address not in addresses(detector), f"back before {expected}s"
            clock.advance(0.5)
            good("/")
            assert backends[0].address in addresses(detector), f"not back after {expected}s"
            # failing again at once: no time in good standing, nothing forgiven
        durations = [record.seconds for record in events(caplog, "instance_ejected")]
        assert durations == [20, 40, 50, 50]
        assert [record.after for record in events(caplog, "instance_returned")] == [20, 40, 50, 50]


def test_time_in_good_standing_forgives_earlier_ejections(backends: list[Backend]) -> None:
    backends[0].mode = "fail"
    clock = FakeClock()
    detector = OutlierDetector(
        static.Publisher([b.address for b in backends], sync_factory),
        consecutive_failures=1,
        base_ejection_time=10,
        max_ejection_time=1000,
        clock=clock,
    )
    with detector:
        bad, good = detector.endpoints()[0], detector.endpoints()[1]
        for _ in range(3):  # three ejections in a row, each returning after base x times
            fail(bad, 1)
            clock.advance(detector._records[backends[0].address].return_at - clock.now)
            good("/")
        record = detector._records[backends[0].address]
        assert record.ejections == 3 and backends[0].address in addresses(detector)
        clock.advance(35)  # 3.5 base times back in: 3 ejections forgiven, then this one counts
        fail(bad, 1)
        assert record.ejections == 1
        assert record.return_at == clock.now + 10


def test_never_more_than_the_maximum_percentage_is_ejected(
    backends: list[Backend], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loadbalancer")
    for backend in backends[:3]:
        backend.mode = "fail"
    detector = OutlierDetector(
        static.Publisher([b.address for b in backends], sync_factory),
        consecutive_failures=2,
        base_ejection_time=30,
        max_ejection_percent=50,  # 2 of 4
    )
    with detector:
        for endpoint in list(detector.endpoints()[:3]):
            fail(endpoint, 4)
        assert sorted(detector.ejected()) == sorted(b.address for b in backends[:2])
        assert len(detector.endpoints()) == 2
        refused = events(caplog, "ejection_refused")
        assert len(refused) == 1 and refused[0].instance == backends[2].address  # logged once, not per failure


def test_panic_threshold_passes_on_every_instance_when_too_few_are_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="loadbalancer")
    factory = Factory()
    source = static.Publisher(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"], factory)
    detector = OutlierDetector(
        source, consecutive_failures=1, max_ejection_percent=100, panic_threshold=50, base_ejection_time=30
    )

    with detector:
        wrappers = list(detector.endpoints())
        for wrapper, expected in zip(wrappers[:2], [3, 2], strict=True):
            wrapper.endpoint.fail = ConnectionRefusedError("refused")
            with pytest.raises(ConnectionError):
                wrapper("x")
            assert len(detector.endpoints()) == expected and not detector.panicking
        wrappers[2].endpoint.fail = ConnectionRefusedError("refused")
        with pytest.raises(ConnectionError):
            wrappers[2]("x")
        # 1 of 4 left in is below 50%: all four are passed on rather than one
        assert detector.panicking and len(detector.endpoints()) == 4
        assert len(detector.excluded()) == 3
        assert [r.levelname for r in events(caplog, "panic_mode_entered")] == ["WARNING"]
        source.replace(["127.0.0.1:1", "127.0.0.1:4", "127.0.0.1:5"])  # two ejected ones left the source
        assert not detector.panicking and addresses(detector) == ["127.0.0.1:4", "127.0.0.1:5"]
        assert events(caplog, "panic_mode_left")


def test_which_errors_count_is_configurable_and_cancellation_never_counts() -> None:
    factory = Factory()
    detector = OutlierDetector(
        static.Publisher(["127.0.0.1:1", "127.0.0.1:2"], factory), consecutive_failures=1, failure=TimeoutError
    )
    with detector:
        wrapper = detector.endpoints()[0]
        wrapper.endpoint.fail = ConnectionRefusedError("refused")  # not a TimeoutError
        with pytest.raises(ConnectionError):
            wrapper("x")
        assert len(detector.endpoints()) == 2
        default = OutlierDetector(static.Publisher(["127.0.0.1:1", "127.0.0.1:2"], factory), consecutive_failures=1)
        with default:

            def bad_request(request: object) -> str:
                raise ValueError("a bad request fails everywhere: not the instance's fault")

            tracked = default.endpoints()[0]
            tracked.endpoint = bad_request
            with pytest.raises(ValueError, match="bad request"):
                tracked("x")
            assert len(default.endpoints()) == 2


async def test_async_endpoints_hanging_calls_cancelled_by_retry_do_not_count(backends: list[Backend]) -> None:
    backends[0].mode = "hang"
    detector = OutlierDetector(
        static.Publisher([backends[0].address], async_factory),
        consecutive_failures=1,
        max_ejection_percent=100,
        panic_threshold=0,
    )
    async with detector:
        call = Retry(1, 0.2, RoundRobin(detector))
        with pytest.raises(loadbalancer.RetryTimeoutError):
            await call("/")
        assert detector.ejections == 0 and detector.failures == 0
        backends[0].mode = "fail"
        with pytest.raises(loadbalancer.RetryError):
            await call("/")
        await aeventually(lambda: detector.ejections == 1)


def test_inner_endpoints_are_not_closed_by_ejection_and_are_closed_with_the_source() -> None:
    factory = Factory()
    source = static.Publisher(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], factory)
    detector = OutlierDetector(source, consecutive_failures=1, base_ejection_time=30)
    wrapper = detector.endpoints()[0]
    wrapper.endpoint.fail = ConnectionRefusedError("refused")
    with pytest.raises(ConnectionError):
        wrapper("x")
    assert len(detector.endpoints()) == 2 and not wrapper.endpoint.closed
    detector.close()
    assert source.closed and all(endpoint.closed for endpoint in factory.made)


def test_own_false_leaves_the_source_open() -> None:
    source = static.Publisher(["127.0.0.1:1"], Factory())
    OutlierDetector(source, own=False).close()
    assert not source.closed
    source.close()


def test_bad_arguments_are_refused_with_the_value() -> None:
    source = static.Publisher(["127.0.0.1:1"], Factory())
    with pytest.raises(ValueError, match="consecutive_failures .* got 0"):
        OutlierDetector(source, consecutive_failures=0)
    with pytest.raises(ValueError, match="max_ejection_percent .* got 120"):
        OutlierDetector(source, max_ejection_percent=120)
    with pytest.raises(ValueError, match="base_ejection_time"):
        OutlierDetector(source, base_ejection_time=-1)
    with pytest.raises(ValueError, match="max_ejection_time"):
        OutlierDetector(source, base_ejection_time=10, max_ejection_time=5)
    with pytest.raises(TypeError, match="failure"):
        OutlierDetector(source, failure=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Publisher"):
        OutlierDetector(["127.0.0.1:1"])  # type: ignore[arg-type]


def test_calls_from_threads_while_the_set_changes_and_an_instance_fails(backends: list[Backend]) -> None:
    backends[0].mode = "fail"
    source = static.Publisher([b.address for b in backends], sync_factory)
    detector = OutlierDetector(source, consecutive_failures=3, base_ejection_time=0.05)
    lb = RoundRobin(detector)
    call = Retry(4, 5.0, lb, wait=None, budget=None)
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                call("/")
            except loadbalancer.RetryError as error:  # every attempt failed: a bug here
                errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        everyone = [b.address for b in backends]
        for i in range(60):  # the failing instance comes and goes, and is ejected again and again
            source.replace(everyone[: 2 + i % 3] if i % 2 else everyone)
            time.sleep(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == [] and detector.ejections >= 3 and detector.returns >= 1
    detector.close()


async def test_async_calls_from_tasks(backends: list[Backend]) -> None:
    backends[1].mode = "fail"
    detector = OutlierDetector(
        static.Publisher([b.address for b in backends], async_factory), consecutive_failures=2, base_ejection_time=30
    )
    async with detector:
        call = Retry(3, 30.0, RoundRobin(detector), budget=None)  # a hang guard: 200 calls share a few threads
        results = await asyncio.gather(*(call("/") for _ in range(200)))
        assert set(results) <= {str(b.port) for b in backends if b is not backends[1]}
        assert detector.ejected() == [backends[1].address]


def test_a_distinct_endpoint_class_is_wrapped_once_per_address() -> None:
    factory = Factory(Endpoint)
    source = static.Publisher(["127.0.0.1:1", "127.0.0.1:2"], factory)
    with OutlierDetector(source) as detector:
        first = list(detector.endpoints())
        source.replace(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
        assert list(detector.endpoints())[:2] == first and all(
            a is b for a, b in zip(first, detector.endpoints(), strict=False)
        )
