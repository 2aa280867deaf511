"""HealthChecker and HttpCheck, against real HTTP backends on loopback."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

import loadbalancer
from loadbalancer import HealthChecker, Instance, OutlierDetector, RoundRobin, static
from loadbalancer._runtime import RUNTIME
from loadbalancer.health import HttpCheck

from .backends import Backend, sync_factory
from .daemon import free_tcp_port
from .helpers import Factory, aeventually, events, eventually

HANG_GUARD = 60.0  # only a hung test waits this long: the waits below end on an event


class Checks:
    """A check that wraps another and wakes waiters after every verdict is recorded.

    Waiting with ``until(condition)`` re-tests ``condition`` after each check and each set
    the checker publishes, instead of sleeping for a guessed number of intervals.
    """

    def __init__(self, inner: Callable[[Instance], object]) -> None:
        self.inner = inner
        self.changed = threading.Condition()

    async def __call__(self, instance: Instance) -> object:
        try:
            result = self.inner(instance)
            return await result if asyncio.iscoroutine(result) else result
        finally:
            # the verdict is recorded right after this returns, on the same loop: wake after it
            asyncio.get_running_loop().call_soon(self.wake)

    def wake(self, *_: object) -> None:
        with self.changed:
            self.changed.notify_all()

    def until(self, condition: Callable[[], object], what: str) -> None:
        with self.changed:
            if not self.changed.wait_for(condition, HANG_GUARD):
                raise AssertionError(f"{what}: not met (the test hung for {HANG_GUARD}s)")


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    started = [Backend() for _ in range(3)]
    yield started
    for backend in started:
        backend.stop()


def addresses(publisher: loadbalancer.Publisher[object]) -> list[str]:
    return [instance.address for instance in publisher.endpoints().instances]


def checker(backends: list[Backend], **options: object) -> HealthChecker[object]:
    settings: dict[str, object] = {"interval": 0.05, "timeout": 0.5, "healthy_threshold": 2, "unhealthy_threshold": 2}
    settings.update(options)
    return HealthChecker(static.Publisher([b.address for b in backends], sync_factory), **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("health", "healthy"),
    [("ok", True), ("down", False), ("json-healthy", True), ("json-draining", False)],
)
async def test_http_check_reads_status_and_json_state(backends: list[Backend], health: str, healthy: bool) -> None:
    backends[0].health = health
    check = HttpCheck()
    instance = Instance("127.0.0.1", backends[0].port)
    if healthy:
        assert await check(instance) is True
    else:
        with pytest.raises(
            loadbalancer.UnhealthyError, match=f"GET http://{backends[0].address}/health: (status|state)"
        ):
            await check(instance)


async def test_http_check_of_a_closed_port_raises_connection_refused() -> None:
    with pytest.raises(ConnectionRefusedError):
        await HttpCheck()(Instance("127.0.0.1", free_tcp_port()))


def test_an_instance_flips_out_after_failed_checks_and_back_after_passed_ones(
    backends: list[Backend], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loadbalancer")
    seen: list[list[str]] = []
    checks, clock = Checks(HttpCheck()), FakeClock()
    with checker(backends, check=checks, clock=clock) as health:
        health.subscribe(lambda endpoints: seen.append([i.address for i in endpoints.instances]))
        health.subscribe(checks.wake)
        checks.until(lambda: health.checks >= 6, what="first checks")
        assert addresses(health) == [b.address for b in backends]
        clock.now += 100  # healthy for 100 s by the checker's clock
        backends[1].health = "down"
        checks.until(lambda: backends[1].address not in addresses(health), what="ejection of the 503 instance")
        assert health.unhealthy() == {
            backends[1].address: f"UnhealthyError: GET http://{backends[1].address}/health: status 503"
        }
        (unhealthy,) = events(caplog, "instance_unhealthy")
        assert unhealthy.levelno == logging.WARNING and unhealthy.instance == backends[1].address
        assert unhealthy.after == 100  # time in its previous state, by the injected clock
        clock.now += 7.5
        backends[1].health = "json-healthy"
        checks.until(lambda: backends[1].address in addresses(health), what="return")
        assert addresses(health) == [b.address for b in backends]  # back in its place, in the source's order
        assert [b.address for b in backends] in seen and [backends[0].address, backends[2].address] in seen
        (healthy,) = events(caplog, "instance_healthy")
        assert healthy.instance == backends[1].address and healthy.after == 7.5


def test_one_failed_check_is_not_enough_for_a_proven_instance(backends: list[Backend]) -> None:
    outcomes = {backends[0].address: [True, False, True, True, True]}

    def check(instance: Instance) -> bool:
        queue = outcomes.get(instance.address)
        return queue.pop(0) if queue else True

    checks = Checks(check)
    with checker(backends, check=checks, unhealthy_threshold=2) as health:
        seen: list[int] = []
        health.subscribe(lambda endpoints: seen.append(len(endpoints)))
        checks.until(lambda: not outcomes[backends[0].address], what="all scripted checks")
        assert set(seen) == {3}, "a single failure between successes took it out"


def test_a_hanging_health_endpoint_times_out_and_a_dead_one_refuses(backends: list[Backend]) -> None:
    with checker(backends, timeout=0.1, panic_threshold=0) as health:
        eventually(lambda: health.checks >= 3, timeout=HANG_GUARD, what="first checks")
        backends[0].health = "hang"
        backends[2].stop()
        eventually(lambda: addresses(health) == [backends[1].address], timeout=HANG_GUARD, what="both out")
        errors = health.unhealthy()
        assert errors[backends[0].address] == "no answer within 0.1s"
        assert "ConnectionRefusedError" in errors[backends[2].address]
        backends[2] = Backend(backends[2].port)  # started again on the same port (the fixture stops it)
        backends[0].health = "ok"
        eventually(lambda: len(addresses(health)) == 3, timeout=HANG_GUARD, what="both back")


def test_a_new_instance_is_checked_at_once_and_one_failure_keeps_it_out(backends: list[Backend]) -> None:
    calls: list[str] = []

    def check(instance: Instance) -> bool:
        calls.append(instance.address)
        return instance.port != 9

    source = static.Publisher([backends[0].address], sync_factory)
    with HealthChecker(source, check=check, interval=60, unhealthy_threshold=3) as health:
        eventually(lambda: calls == [backends[0].address], what="the first instance's check")
        source.replace([backends[0].address, "127.0.0.1:9", backends[1].address])
        eventually(lambda: len(calls) == 3, what="the newcomers' checks, long before the interval")
        eventually(lambda: addresses(health) == [backends[0].address, backends[1].address])


def test_an_instance_that_is_out_is_checked_every_unhealthy_interval(backends: list[Backend]) -> None:
    calls: dict[str, int] = {backends[0].address: 0, backends[1].address: 0}
    down = {backends[1].address}

    def check(instance: Instance) -> bool:
        calls[instance.address] += 1
        return instance.address not in down

    checks = Checks(check)
    source = static.Publisher([b.address for b in backends[:2]], sync_factory)
    with HealthChecker(source, check=checks, interval=60, unhealthy_interval=0.05, panic_threshold=0) as health:
        checks.until(lambda: addresses(health) == [backends[0].address], what="the failing one out")
        checks.until(lambda: calls[backends[1].address] >= 4, what="rechecks within the 60 s interval")
        assert calls[backends[0].address] == 1  # a healthy one waits for the interval
        down.clear()
        checks.until(lambda: len(addresses(health)) == 2, what="back after its next quick check")


async def test_async_check_functions_and_sync_ones_on_threads() -> None:
    down = {"127.0.0.1:2"}

    async def async_check(instance: Instance) -> bool:
        await asyncio.sleep(0)
        return instance.address not in down

    def raising_check(instance: Instance) -> None:
        if instance.address in down:
            raise RuntimeError("disk full")

    for check in (async_check, raising_check):
        source = static.Publisher(["127.0.0.1:1", "127.0.0.1:2"], Factory())
        async with HealthChecker(source, check=check, interval=0.05) as health:
            assert [i.address for i in (await health.acheck_now()).instances] == ["127.0.0.1:1"]
            down.clear()
            await aeventually(lambda: len(health.endpoints()) == 2)
            down.add("127.0.0.1:2")


def test_panic_threshold_passes_on_all_when_too_few_are_healthy() -> None:
    down = {"127.0.0.1:1", "127.0.0.1:2"}
    source = static.Publisher(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], Factory())
    with HealthChecker(source, check=lambda i: i.address not in down, interval=60, panic_threshold=50) as health:
        health.check_now()
        assert health.panicking and len(health.endpoints()) == 3  # 1 of 3 healthy: use all of them
        assert sorted(health.unhealthy()) == sorted(down)
        down.discard("127.0.0.1:1")
        health.check_now()
        health.check_now()
        assert not health.panicking and addresses(health) == ["127.0.0.1:1", "127.0.0.1:3"]


def test_filtering_never_closes_endpoints_and_stacks_with_outlier_detection(backends: list[Backend]) -> None:
    factory = Factory()
    source = static.Publisher(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], factory)
    down = {"127.0.0.1:1"}
    health = HealthChecker(source, check=lambda i: i.address not in down, interval=60)
    detector = OutlierDetector(health, consecutive_failures=1)
    lb = RoundRobin(detector)
    health.check_now()
    assert sorted(str(lb.endpoint()) for _ in range(4)) == ["127.0.0.1:2"] * 2 + ["127.0.0.1:3"] * 2
    assert not any(endpoint.closed for endpoint in factory.made)
    detector.close()  # closes the stack down to the source, which closes its endpoints
    assert health.closed and source.closed and all(endpoint.closed for endpoint in factory.made)


def test_stale_inner_sets_stay_visible_through_the_filter() -> None:
    source = static.Publisher(["127.0.0.1:1"], Factory())
    with HealthChecker(source, check=lambda i: True, interval=60) as health:
        error = ConnectionRefusedError("registry down")
        source._publish_error(error)
        assert health.endpoints().stale and health.endpoints().error is error and health.last_error is error


def test_bad_arguments_are_refused_with_the_value() -> None:
    source = static.Publisher(["127.0.0.1:1"], Factory())
    with pytest.raises(ValueError, match="path must be an absolute HTTP path .* got 'health'"):
        HttpCheck("health")
    with pytest.raises(ValueError, match="interval must be positive, got 0.0"):
        HealthChecker(source, interval=0)
    with pytest.raises(ValueError, match="unhealthy_interval must be positive, got -1"):
        HealthChecker(source, unhealthy_interval=-1)
    with pytest.raises(ValueError, match="healthy_threshold .* got 0"):
        HealthChecker(source, healthy_threshold=0)
    with pytest.raises(ValueError, match="panic_threshold .* got -1"):
        HealthChecker(source, panic_threshold=-1)
    with pytest.raises(ValueError, match="jitter"):
        HealthChecker(source, jitter=1.5)
    with pytest.raises(TypeError, match="check must be"):
        HealthChecker(source, check="GET /health")  # type: ignore[arg-type]
    source.close()


def test_check_now_on_the_runtime_thread_says_to_use_the_async_form() -> None:
    source = static.Publisher(["127.0.0.1:1", "127.0.0.1:2"], Factory())
    with HealthChecker(source, check=lambda i: i.port != 1, interval=60) as health:

        async def on_runtime() -> tuple[str, list[str]]:
            try:
                health.check_now()  # waiting here would block the loop that runs the checks
            except RuntimeError as error:
                said = str(error)
            else:
                said = "no error"
            return said, [i.address for i in (await health.acheck_now()).instances]

        said, healthy = RUNTIME.submit(on_runtime()).result(timeout=HANG_GUARD)  # a deadlock would hang here
        assert "acheck_now" in said and "runtime thread" in said
        assert healthy == ["127.0.0.1:2"]  # the async form works there


def test_check_now_from_a_subscriber_callback_raises_instead_of_deadlocking() -> None:
    source = static.Publisher(["127.0.0.1:1"], Factory())
    errors: list[BaseException] = []
    called_on_runtime = threading.Event()
    with HealthChecker(source, check=lambda i: i.port != 2, interval=60) as health:

        def callback(endpoints: object) -> None:
            if not RUNTIME.in_loop_thread():
                return  # the calls at subscribe() and replace() run on this test's thread
            try:
                health.check_now()
            except RuntimeError as error:
                errors.append(error)
            finally:
                called_on_runtime.set()

        health.subscribe(callback)
        # the newcomer's first check fails on the runtime thread, which publishes the set without it
        source.replace(["127.0.0.1:1", "127.0.0.1:2"])
        assert called_on_runtime.wait(HANG_GUARD), "the callback never ran on the runtime thread"
        assert len(errors) == 1 and "acheck_now" in str(errors[0])
        assert addresses(health) == ["127.0.0.1:1"]


async def test_hung_sync_checks_neither_starve_the_others_nor_the_applications_threads() -> None:
    release = threading.Event()
    checked: dict[str, int] = {}

    def check(instance: Instance) -> bool:
        checked[instance.address] = checked.get(instance.address, 0) + 1
        if instance.port != 1:
            release.wait(30)  # hangs, past its timeout
        return True

    hung = [f"127.0.0.1:{port}" for port in range(2, 22)]  # more than the default executor's threads
    source = static.Publisher(["127.0.0.1:1", *hung], sync_factory)
    try:
        with HealthChecker(source, check=check, interval=0.05, timeout=0.1, jitter=0, panic_threshold=0) as health:
            await aeventually(lambda: checked.get("127.0.0.1:1", 0) >= 10, HANG_GUARD, "the good one, checked on")
            assert addresses(health) == ["127.0.0.1:1"]
            assert max(checked.get(address, 0) for address in hung) == 1  # no new thread while one hangs
            assert all("still running" in error for error in health.unhealthy().values())
            # the application's own default executor is not taken by hung checks
            assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 5) == "free"
            threads = [t for t in threading.enumerate() if t.name.startswith("loadbalancer-blocking")]
            assert len(threads) <= len(hung) + 16  # one a hung instance at most, and the running ones
    finally:
        release.set()
