"""Metrics: the library's figures for Prometheus and OpenTelemetry.

    from loadbalancer import metrics

    metrics.prometheus()                # a collector in prometheus-client's default registry
    metrics.opentelemetry()             # instruments on OpenTelemetry's global meter provider

Either turns per-call figures on (``metrics.enable()``); make it before the balancers whose
calls should be counted. Everything else costs nothing until scraped: the exporters read the
counters and state every publisher, ``Retry``, ``Hedge``, filter and registrar keeps anyway.
``rows()`` is that reading, for exporters of your own. The names are listed in ``NAMES``
and in the README. Needs ``pip install 'loadbalancer[prometheus]'`` or ``[otel]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._metrics import BUCKETS, disable, enable, enabled
from ._rows import MAX_INSTANCES, NAMES, Row, rows

__all__ = [
    "BUCKETS",
    "NAMES",
    "Row",
    "disable",
    "enable",
    "enabled",
    "opentelemetry",
    "prometheus",
    "prometheus_families",
    "rows",
]


def prometheus(registry: Any = None, *, max_instances: int = MAX_INSTANCES) -> Any:
    """Register a collector of the library's figures in ``registry`` (default: prometheus-client's
    ``REGISTRY``) and turn per-call figures on; returns the collector (``registry.unregister()`` it to stop)."""
    from ._prometheus import collector

    return collector(registry, max_instances)


def opentelemetry(meter_provider: Any = None, *, max_instances: int = MAX_INSTANCES) -> Any:
    """Create the library's instruments on a meter of ``meter_provider`` (default: the global one)
    and turn per-call figures on; returns the meter."""
    from ._otel import instruments

    return instruments(meter_provider, max_instances)


def prometheus_families(found: Iterable[Row]) -> Any:
    """prometheus-client metric families for ``found`` rows: for a collector of your own (rows merged
    from several processes, say); yields ``Metric`` objects."""
    from ._prometheus import families

    return families(found)
