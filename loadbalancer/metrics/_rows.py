"""The library's figures as rows: the names, and the reading every exporter shares."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import _metrics
from .._log import logger_name

__all__ = ["MAX_INSTANCES", "NAMES", "Row", "rows"]

MAX_INSTANCES = 100  # instances reported per service (the rest: loadbalancer_instances_unreported)

# name -> (kind, unit-free description); Prometheus adds nothing, OpenTelemetry swaps "_" for "."
NAMES: dict[str, tuple[str, str]] = {
    "loadbalancer_publisher_instances": ("gauge", "Instances in the publisher's current set"),
    "loadbalancer_publisher_stale": ("gauge", "1 while the last refresh failed and the set is the last good one"),
    "loadbalancer_publisher_updates": ("counter", "Sets the publisher has published"),
    "loadbalancer_publisher_refresh_failures": ("counter", "Failed refreshes, by the error's type"),
    "loadbalancer_publisher_seconds_since_good_refresh": ("gauge", "Seconds since the last good read of the source"),
    "loadbalancer_requests": ("counter", "Calls through trackers and HTTP transports, by outcome"),
    "loadbalancer_request_duration_seconds": ("histogram", "Latency of those calls, to the end of the body"),
    "loadbalancer_instances_unreported": ("gauge", "Instances of a service beyond the per-service cap"),
    "loadbalancer_retry_calls": ("counter", "Calls made through Retry"),
    "loadbalancer_retries": ("counter", "Attempts Retry made again after a failure"),
    "loadbalancer_retry_give_ups": ("counter", "Calls Retry gave up after its attempts"),
    "loadbalancer_retry_deadlines": ("counter", "Calls that ran out of Retry's deadline"),
    "loadbalancer_retry_budget_refusals": ("counter", "Retries the retry budget refused"),
    "loadbalancer_hedges": ("counter", "Hedged attempts sent"),
    "loadbalancer_hedge_wins": ("counter", "Hedged attempts that answered first"),
    "loadbalancer_ejections": ("counter", "Instances ejected by outlier detection"),
    "loadbalancer_ejection_returns": ("counter", "Ejected instances let back in"),
    "loadbalancer_ejected": ("gauge", "Instances ejected now"),
    "loadbalancer_panic": ("gauge", "1 while a filter passes every instance on (too few left)"),
    "loadbalancer_health_checks": ("counter", "Health checks run"),
    "loadbalancer_health_check_failures": ("counter", "Health checks failed"),
    "loadbalancer_unhealthy": ("gauge", "Instances out for failed health checks now"),
    "loadbalancer_registrations": ("counter", "Registrations made (re-registrations included)"),
    "loadbalancer_lease_renewals": ("counter", "Leases kept alive"),
    "loadbalancer_leases_lost": ("counter", "Leases found lost (registered again)"),
}


@dataclass(frozen=True)
class Row:
    """One figure: ``name`` (from ``NAMES``), its labels and value; a histogram's value is its ``CallStats``."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: Any


def _kind(component: object) -> str:
    """``etcd.Publisher``, ``outlier.OutlierDetector``: which kind of publisher it is."""
    kind = type(component)
    return f"{logger_name(kind.__module__).removeprefix('loadbalancer.')}.{kind.__name__}"


Sums = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def rows(max_instances: int = MAX_INSTANCES) -> Iterator[Row]:
    """Every figure now. Figures of the same name and labels (two publishers of one service
    and kind) are summed; per-instance figures cover instances in a current set only."""
    sums: Sums = defaultdict(float)
    current: dict[str, set[str]] = defaultdict(set)
    _publishers(sums, current)
    _callers(sums)
    for (name, labels), value in sums.items():
        yield Row(name, labels, value)
    yield from _per_instance(current, max_instances)


def _publishers(sums: Sums, current: dict[str, set[str]]) -> None:
    from ..health import HealthChecker
    from ..outlier import OutlierDetector

    now = time.monotonic()
    for publisher in _metrics.components("publisher"):
        labels = (("service", publisher.service), ("publisher", _kind(publisher)))
        endpoints = publisher.endpoints()
        current[publisher.service].update(i.address for i in endpoints.instances)
        if publisher.closed:
            continue
        sums[("loadbalancer_publisher_instances", labels)] += len(endpoints)
        sums[("loadbalancer_publisher_stale", labels)] = max(
            sums[("loadbalancer_publisher_stale", labels)], float(endpoints.stale)
        )
        sums[("loadbalancer_publisher_updates", labels)] += publisher.sets_published
        for kind, count in getattr(publisher, "refresh_failures", {}).items():
            sums[("loadbalancer_publisher_refresh_failures", (*labels, ("kind", kind)))] += count
        last_good = getattr(publisher, "last_good", None)
        if last_good is not None:
            sums[("loadbalancer_publisher_seconds_since_good_refresh", labels)] = now - last_good
        service = (("service", publisher.service),)
        if isinstance(publisher, OutlierDetector):
            sums[("loadbalancer_ejections", service)] += publisher.ejections
            sums[("loadbalancer_ejection_returns", service)] += publisher.returns
            sums[("loadbalancer_ejected", service)] += len(publisher.ejected())
            sums[("loadbalancer_panic", service)] += float(publisher.panicking)
        if isinstance(publisher, HealthChecker):
            sums[("loadbalancer_health_checks", service)] += publisher.checks
            sums[("loadbalancer_health_check_failures", service)] += publisher.checks_failed
            sums[("loadbalancer_unhealthy", service)] += len(publisher.unhealthy())
            sums[("loadbalancer_panic", service)] += float(publisher.panicking)


def _callers(sums: Sums) -> None:
    for retry in _metrics.components("retry"):
        service = (("service", retry.balancer.publisher.service),)
        sums[("loadbalancer_retry_calls", service)] += retry.calls
        sums[("loadbalancer_retries", service)] += retry.retries
        sums[("loadbalancer_retry_give_ups", service)] += retry.give_ups
        sums[("loadbalancer_retry_deadlines", service)] += retry.deadlines
        sums[("loadbalancer_retry_budget_refusals", service)] += retry.budget_refusals
    for hedge in _metrics.components("hedge"):
        service = (("service", hedge.publisher.service),)
        sums[("loadbalancer_hedges", service)] += hedge.hedges
        sums[("loadbalancer_hedge_wins", service)] += hedge.hedge_wins
    for registrar in _metrics.components("registrar"):
        labels = (("service", registrar.service), ("backend", registrar.backend.name))
        sums[("loadbalancer_registrations", labels)] += registrar.registrations
        sums[("loadbalancer_lease_renewals", labels)] += registrar.renewals
        sums[("loadbalancer_leases_lost", labels)] += registrar.leases_lost


def _per_instance(current: dict[str, set[str]], max_instances: int) -> Iterator[Row]:
    # only the instances some publisher has now (an instance that left is forgotten)
    _metrics.forget(lambda stats: stats.instance in current.get(stats.service, ()))
    shown: dict[str, int] = defaultdict(int)
    hidden: dict[str, int] = defaultdict(int)
    for stats in sorted(_metrics.calls(), key=lambda s: (s.service, s.instance)):
        if shown[stats.service] >= max_instances:
            hidden[stats.service] += 1
            continue
        shown[stats.service] += 1
        labels = (("service", stats.service), ("instance", stats.instance))
        yield Row("loadbalancer_requests", (*labels, ("outcome", "success")), stats.requests - stats.failures)
        yield Row("loadbalancer_requests", (*labels, ("outcome", "failure")), stats.failures)
        yield Row("loadbalancer_request_duration_seconds", labels, stats)
    for name, count in hidden.items():
        yield Row("loadbalancer_instances_unreported", (("service", name),), count)
