"""loadbalancer.metrics: figures scraped from a real Prometheus exposition endpoint and read by an
OpenTelemetry SDK reader match what the test did."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from loadbalancer import LeastLoaded, OutlierDetector, Retry, RetryError, static
from loadbalancer import metrics as lbmetrics
from tests.daemon import free_tcp_port


def endpoints(failing: str) -> Any:
    def factory(address: str) -> Any:
        def call(request: object) -> str:
            if address == failing:
                raise ConnectionRefusedError(address)
            return address

        return call

    return factory


@pytest.fixture
def scrape() -> Iterator[Any]:
    registry = CollectorRegistry()
    collector = lbmetrics.prometheus(registry)
    port = free_tcp_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)

    def read() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    try:
        yield read
    finally:
        registry.unregister(collector)
        server.shutdown()
        thread.join(5)
        lbmetrics.disable()


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_prometheus_figures_match_what_happened(scrape: Any) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    instances = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
    publisher = static.Publisher(instances, endpoints("10.0.0.3:80"), service=service)
    detector = OutlierDetector(publisher, consecutive_failures=2, base_ejection_time=60)
    call = Retry(3, 5.0, LeastLoaded(detector), budget=None, wait=None)
    for n in range(30):
        assert call(n) in ("10.0.0.1:80", "10.0.0.2:80")
    samples = scrape()
    ok = {
        i: value(samples, "loadbalancer_requests_total", service=service, instance=i, outcome="success")
        for i in instances
    }
    failed = {
        i: value(samples, "loadbalancer_requests_total", service=service, instance=i, outcome="failure")
        for i in instances
    }
    assert sum(ok.values()) == 30 and ok["10.0.0.3:80"] == 0
    assert failed == {"10.0.0.1:80": 0, "10.0.0.2:80": 0, "10.0.0.3:80": 2}  # ejected after its second failure
    count = value(samples, "loadbalancer_request_duration_seconds_count", service=service, instance="10.0.0.1:80")
    assert count == ok["10.0.0.1:80"]
    assert value(samples, "loadbalancer_ejections_total", service=service) == 1
    assert value(samples, "loadbalancer_ejected", service=service) == 1
    assert value(samples, "loadbalancer_retry_calls_total", service=service) == 30
    assert value(samples, "loadbalancer_retries_total", service=service) == 2
    assert value(samples, "loadbalancer_publisher_instances", service=service, publisher="static.Publisher") == 3
    assert value(samples, "loadbalancer_publisher_instances", service=service, publisher="outlier.OutlierDetector") == 2
    assert value(samples, "loadbalancer_publisher_stale", service=service, publisher="static.Publisher") == 0

    publisher.replace(instances[:2])  # an instance that left stops being reported
    samples = scrape()
    assert all(key[1] != (("instance", "10.0.0.3:80"), ("outcome", "failure"), ("service", service)) for key in samples)
    assert (
        "loadbalancer_requests_total",
        (("instance", "10.0.0.1:80"), ("outcome", "success"), ("service", service)),
    ) in samples
    detector.close()


def test_give_ups_and_the_instance_cap(scrape: Any) -> None:
    service = f"svc-{uuid.uuid4().hex[:8]}"
    addresses = [f"10.0.1.{n}:80" for n in range(1, 6)]
    publisher = static.Publisher(addresses, endpoints("none"), service=service)
    lb = LeastLoaded(publisher)
    for _ in range(10):
        lb.endpoint()("x")
    down = static.Publisher(["10.0.2.1:80"], endpoints("10.0.2.1:80"), service=service + "-down")
    call = Retry(2, 5.0, LeastLoaded(down), budget=None, wait=None)
    with pytest.raises(RetryError):
        call("x")
    registry = CollectorRegistry()
    capped = lbmetrics.prometheus(registry, max_instances=2)
    families = {f.name: f for f in text_string_to_metric_families(_exposition(registry))}
    reported = {
        s.labels["instance"] for s in families["loadbalancer_requests"].samples if s.labels["service"] == service
    }
    assert len(reported) == 2
    unreported = [s for s in families["loadbalancer_instances_unreported"].samples if s.labels["service"] == service]
    assert [s.value for s in unreported] == [3]
    samples = scrape()
    assert value(samples, "loadbalancer_retry_give_ups_total", service=service + "-down") == 1
    registry.unregister(capped)


def _exposition(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


def test_opentelemetry_reader_sees_the_same_figures() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    lbmetrics.opentelemetry(provider)
    try:
        service = f"svc-{uuid.uuid4().hex[:8]}"
        publisher = static.Publisher(["10.0.3.1:80", "10.0.3.2:80"], endpoints("10.0.3.2:80"), service=service)
        call = Retry(3, 5.0, LeastLoaded(publisher), budget=None, wait=None)
        for n in range(10):
            call(n)
        data = reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(
                        p for p in metric.data.data_points if p.attributes.get("service") == service
                    )
        successes = sum(p.value for p in found["loadbalancer.requests"] if p.attributes["outcome"] == "success")
        failures = sum(p.value for p in found["loadbalancer.requests"] if p.attributes["outcome"] == "failure")
        assert successes == 10 and failures >= 1
        assert sum(p.count for p in found["loadbalancer.request.duration"]) == successes + failures
        assert [p.value for p in found["loadbalancer.retry.calls"]] == [10]
    finally:
        lbmetrics.disable()
        provider.shutdown()
