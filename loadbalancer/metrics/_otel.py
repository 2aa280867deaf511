"""The OpenTelemetry exporter: instruments from ``opentelemetry-api`` over the library's figures.

A library depends on the API only; the application installs the SDK and its readers.
Counters and gauges are observed when the reader collects (from ``rows()``); calls are
recorded as they end, in ``loadbalancer.requests`` and ``loadbalancer.request.duration``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

try:
    from opentelemetry import metrics as otel
    from opentelemetry.metrics import CallbackOptions, Observation
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "loadbalancer.metrics.opentelemetry() needs opentelemetry-api: pip install 'loadbalancer[otel]'"
    ) from error

from .. import _metrics
from ._rows import NAMES, rows

_PER_CALL = ("loadbalancer_requests", "loadbalancer_request_duration_seconds")


def _otel_name(name: str) -> str:
    """``loadbalancer_retry_give_ups`` -> ``loadbalancer.retry.give_ups``; seconds become the unit."""
    head, _, rest = name.partition("_")
    return f"{head}.{rest.removesuffix('_seconds').replace('_', '.', 1)}"


def instruments(meter_provider: Any, max_instances: int) -> Any:
    provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
    meter = provider.get_meter("loadbalancer")

    def observe(name: str) -> Any:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(row.value, dict(row.labels)) for row in rows(max_instances) if row.name == name]

        return callback

    for name, (kind, description) in NAMES.items():
        if name in _PER_CALL:
            continue
        if kind == "counter":
            meter.create_observable_counter(_otel_name(name), [observe(name)], description=description)
        else:
            meter.create_observable_gauge(_otel_name(name), [observe(name)], description=description)
    requests = meter.create_counter("loadbalancer.requests", description=NAMES["loadbalancer_requests"][1])
    duration = meter.create_histogram(
        "loadbalancer.request.duration", unit="s", description=NAMES["loadbalancer_request_duration_seconds"][1]
    )

    def on_call(service: str, instance: str, seconds: float, ok: bool) -> None:
        attributes = {"service": service, "instance": instance}
        requests.add(1, {**attributes, "outcome": "success" if ok else "failure"})
        duration.record(seconds, attributes)

    _metrics.enable(on_call)
    return meter
