"""HealthChecker and HttpCheck, against real HTTP backends on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

import loadbalancer
from loadbalancer import HealthChecker, HttpCheck, Instance, OutlierDetector, RoundRobin, static

from .backends import Backend, sync_factory
from .daemon import free_tcp_port
from .helpers import Factory, aeventually, eventually


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
    with checker(backends) as health:
        health.subscribe(lambda endpoints: seen.append([i.address for i in endpoints.instances]))
        eventually(lambda: health.checks >= 6, what="first checks")
        assert addresses(health) == [b.address for b in backends]
        backends[1].health = "down"
        eventually(lambda: backends[1].address not in addresses(health), what="ejection of the 503 instance")
        assert health.unhealthy() == {
            backends[1].address: f"UnhealthyError: GET http://{backends[1].address}/health: status 503"
        }
        unhealthy = [r for r in caplog.records if getattr(r, "event", None) == "instance_unhealthy"]
        assert unhealthy[0].levelno == logging.WARNING and unhealthy[0].instance == backends[1].address
        backends[1].health = "json-healthy"
        eventually(lambda: backends[1].address in addresses(health), what="return")
        assert addresses(health) == [b.address for b in backends]  # back in its place, in the source's order
        assert [b.address for b in backends] in seen and [backends[0].address, backends[2].address] in seen
        assert any(getattr(r, "event", None) == "instance_healthy" for r in caplog.records)


def test_one_failed_check_is_not_enough_for_a_proven_instance(backends: list[Backend]) -> None:
    outcomes = {backends[0].address: [True, False, True, True, True]}

    def check(instance: Instance) -> bool:
        queue = outcomes.get(instance.address)
        return queue.pop(0) if queue else True

    with checker(backends, check=check, unhealthy_threshold=2) as health:
        seen: list[int] = []
        health.subscribe(lambda endpoints: seen.append(len(endpoints)))
        eventually(lambda: not outcomes[backends[0].address], what="all scripted checks")
        assert set(seen) == {3}, "a single failure between successes took it out"


def test_a_hanging_health_endpoint_times_out_and_a_dead_one_refuses(backends: list[Backend]) -> None:
    with checker(backends, timeout=0.1, panic_threshold=0) as health:
        eventually(lambda: health.checks >= 3)
        backends[0].health = "hang"
        backends[2].stop()
        eventually(lambda: addresses(health) == [backends[1].address], what="both out")
        errors = health.unhealthy()
        assert errors[backends[0].address] == "no answer within 0.1s"
        assert "ConnectionRefusedError" in errors[backends[2].address]
        backends[2] = Backend(backends[2].port)  # started again on the same port (the fixture stops it)
        backends[0].health = "ok"
        eventually(lambda: len(addresses(health)) == 3, what="both back")


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
    with pytest.raises(ValueError, match="healthy_threshold .* got 0"):
        HealthChecker(source, healthy_threshold=0)
    with pytest.raises(ValueError, match="panic_threshold .* got -1"):
        HealthChecker(source, panic_threshold=-1)
    with pytest.raises(ValueError, match="jitter"):
        HealthChecker(source, jitter=1.5)
    with pytest.raises(TypeError, match="check must be"):
        HealthChecker(source, check="GET /health")  # type: ignore[arg-type]
    source.close()
