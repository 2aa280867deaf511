"""The proxy's per-request counts: tallied in the worker, written to prometheus at each sweep."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from loadbalancer.proxy._metrics import Metrics

from .proxy_fixtures import fresh_metrics


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    with fresh_metrics() as made:
        yield made


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_answers_and_latencies_are_written_at_each_flush(metrics: Metrics) -> None:
    for _ in range(3):
        metrics.answered("10.0.0.1:80", b"GET", 200)
    metrics.answered("none", b"", 503)
    for n in range(3):
        metrics.answered("10.0.0.1:80", b"X-%d" % n, 200)  # any token an HTTP/2 client sends: one series
    for seconds in (0.0007, 0.003, 0.003, 20.0):
        metrics.observe("10.0.0.1:80", seconds)
    ok = {"backend": "10.0.0.1:80", "method": "GET", "status": "2xx"}
    assert sample("loadbalancer_proxy_requests_total", **ok) is None  # not until the flush
    metrics.flush()
    metrics.flush()  # nothing new: nothing added twice
    assert sample("loadbalancer_proxy_requests_total", **ok) == 3
    assert sample("loadbalancer_proxy_requests_total", backend="none", method="-", status="5xx") == 1
    assert sample("loadbalancer_proxy_requests_total", backend="10.0.0.1:80", method="other", status="2xx") == 3
    bucket = "loadbalancer_proxy_upstream_latency_seconds_bucket"
    assert sample(bucket, backend="10.0.0.1:80", le="0.0005") == 0
    assert sample(bucket, backend="10.0.0.1:80", le="0.001") == 1  # cumulative, as observe() would count
    assert sample(bucket, backend="10.0.0.1:80", le="0.005") == 3
    assert sample(bucket, backend="10.0.0.1:80", le="10.0") == 3
    assert sample(bucket, backend="10.0.0.1:80", le="+Inf") == 4
    assert sample("loadbalancer_proxy_upstream_latency_seconds_count", backend="10.0.0.1:80") == 4
    total = sample("loadbalancer_proxy_upstream_latency_seconds_sum", backend="10.0.0.1:80")
    assert total == pytest.approx(20.0067)
    metrics.observe("10.0.0.1:80", 0.001)  # on a bound: counted in that bucket, as prometheus does
    metrics.flush()
    assert sample(bucket, backend="10.0.0.1:80", le="0.001") == 2


def test_a_relayed_answer_is_counted_and_timed_once_and_the_proxys_own_answers_make_no_latency_series(
    metrics: Metrics,
) -> None:
    metrics.completed("10.0.0.2:80", b"GET", 204, 0.002)
    metrics.completed("10.0.0.2:80", b"GET", 999, 0.002)  # a status llhttp lets through: its class is "other"
    metrics.answered("none", b"GET", 503)
    metrics.answered("cache", b"HEAD", 200)
    metrics.flush()
    requests = "loadbalancer_proxy_requests_total"
    assert sample(requests, backend="10.0.0.2:80", method="GET", status="2xx") == 1
    assert sample(requests, backend="10.0.0.2:80", method="GET", status="other") == 1
    assert sample(requests, backend="none", method="GET", status="5xx") == 1
    assert sample(requests, backend="cache", method="HEAD", status="2xx") == 1
    count = "loadbalancer_proxy_upstream_latency_seconds_count"
    assert sample(count, backend="10.0.0.2:80") == 2
    assert sample(count, backend="none") is None  # no backend answered: no time to count
    assert sample(count, backend="cache") is None


def test_a_flood_of_made_up_methods_is_held_as_one_entry_between_flushes(metrics: Metrics) -> None:
    for n in range(1000):  # an HTTP/2 client may send any token as its method
        metrics.answered("10.0.0.3:80", b"M-%d" % n, 200)
    metrics.answered("10.0.0.3:80", b"GET", 200)
    assert len(metrics._tallies["10.0.0.3:80"].answers) == 2  # the memory a second of them takes stays bounded
    metrics.flush()
    requests = "loadbalancer_proxy_requests_total"
    assert sample(requests, backend="10.0.0.3:80", method="other", status="2xx") == 1000
    assert sample(requests, backend="10.0.0.3:80", method="GET", status="2xx") == 1
