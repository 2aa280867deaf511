"""The Prometheus exporter: a prometheus-client collector over ``loadbalancer.metrics.rows()``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

try:
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "loadbalancer.metrics.prometheus() needs prometheus-client: pip install 'loadbalancer[prometheus]'"
    ) from error

from .. import _metrics
from ._rows import NAMES, Row, rows


class LoadBalancerCollector(Collector):
    """Reads the library's figures at each scrape (nothing is kept in prometheus-client's own objects)."""

    def __init__(self, max_instances: int) -> None:
        self._max_instances = max_instances

    def describe(self) -> Iterator[Metric]:
        return iter(())  # figures come and go with publishers: no fixed description

    def collect(self) -> Iterator[Metric]:
        yield from families(rows(self._max_instances))


def families(found: Iterable[Row]) -> Iterator[Metric]:
    """Prometheus metric families of ``found`` rows (a histogram row's value: its ``CallStats``)."""
    made: dict[str, Any] = {}  # name -> a family (their add_metric signatures differ by kind)
    for row in found:
        kind, help_text = NAMES[row.name]
        family: Any = made.get(row.name)
        names = [key for key, _ in row.labels]
        values = [value for _, value in row.labels]
        if family is None:
            if kind == "counter":
                family = CounterMetricFamily(row.name, help_text, labels=names)
            elif kind == "gauge":
                family = GaugeMetricFamily(row.name, help_text, labels=names)
            else:
                family = HistogramMetricFamily(row.name, help_text, labels=names, unit="")
            made[row.name] = family
        if kind == "histogram":
            stats: _metrics.CallStats = row.value
            cumulative, buckets = 0, []
            for bound, count in zip((*_metrics.BUCKETS, float("inf")), stats.buckets, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(values, buckets=buckets, sum_value=stats.total)
        else:
            family.add_metric(values, float(row.value))
    yield from made.values()


def collector(registry: Any, max_instances: int) -> LoadBalancerCollector:
    found = LoadBalancerCollector(max_instances)
    (REGISTRY if registry is None else registry).register(found)
    _metrics.enable()
    return found
