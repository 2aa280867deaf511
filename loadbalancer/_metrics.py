"""The one recording layer: what every piece of the library counts, read by the exporters.

Most figures cost nothing to keep: they are counters the pieces keep anyway (a publisher's
updates and refresh failures, ``Retry``'s retries and give-ups, ``Hedge``'s hedges, an
``OutlierDetector``'s ejections, a ``HealthChecker``'s checks, a registrar's renewals) and
state they hold (the set, its staleness, the instances ejected now). Each such piece
registers itself here when made (a weak reference: it goes when it is collected), and an
exporter reads them when it is scraped or observed.

Per-call figures (requests, failures and latency per service and instance) cost a little
on each call, so they are kept only once metrics are on (``enable()``, which the
exporters call): trackers made after that (those of ``LeastLoaded``, ``PeakEwma``,
``OutlierDetector``) and the HTTP transports record each call's outcome in ``CallStats``.
Only instances in a current set are reported, and at most ``max_instances`` per service.

Like the shared runtime, this is process-wide state: metrics, as logs, belong to the
process (prometheus-client's default registry and OpenTelemetry's meter provider are too).
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["BUCKETS", "CallStats", "calls", "components", "enable", "enabled", "observer", "register"]

# Latency buckets, seconds: 0.5 ms to 10 s, about three per decade (Prometheus' own defaults start at 5 ms).
BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

_components: dict[str, weakref.WeakSet[Any]] = {}
_lock = threading.Lock()
_on = False
_calls: dict[tuple[str, str], CallStats] = {}
_listeners: list[Callable[[str, str, float, bool], None]] = []  # exporters that record calls themselves


def register(kind: str, component: object) -> None:
    """Remember ``component`` (weakly) under ``kind``: ``publisher``, ``retry``, ``hedge``, ``registrar``."""
    with _lock:
        found = _components.get(kind)
        if found is None:
            found = _components[kind] = weakref.WeakSet()
        found.add(component)


def components(kind: str) -> list[Any]:
    """The live components of ``kind``."""
    with _lock:
        found = _components.get(kind)
        return [] if found is None else list(found)


def enable(listener: Callable[[str, str, float, bool], None] | None = None) -> None:
    """Keep per-call figures from now on; ``listener(service, instance, seconds, ok)`` hears each call too."""
    global _on
    with _lock:
        _on = True
        if listener is not None and listener not in _listeners:
            _listeners.append(listener)


def disable() -> None:
    """Stop keeping per-call figures (trackers made before keep recording; the kept figures stay)."""
    global _on
    with _lock:
        _on = False
        _listeners.clear()


def enabled() -> bool:
    return _on


class CallStats:
    """Requests, failures and a latency histogram for one instance of one service."""

    __slots__ = ("buckets", "failures", "instance", "requests", "service", "total")

    def __init__(self, service: str, instance: str) -> None:
        self.service = service
        self.instance = instance
        self.requests = 0
        self.failures = 0
        self.total = 0.0  # seconds, summed
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one: above every bound

    def record(self, seconds: float, ok: bool) -> None:
        # Plain increments under the GIL: a rare lost update under contention is a metric's
        # accepted error, a lock per call is not (this runs on every tracked call).
        self.requests += 1
        if not ok:
            self.failures += 1
        self.total += seconds
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        for listener in _listeners:
            listener(self.service, self.instance, seconds, ok)


def stats(service: str, instance: str) -> CallStats:
    """The figures of ``instance`` of ``service`` (made on first use)."""
    key = (service, instance)
    found = _calls.get(key)
    if found is None:
        with _lock:
            found = _calls.setdefault(key, CallStats(service, instance))
    return found


def calls() -> Iterator[CallStats]:
    """Every instance's figures kept so far."""
    with _lock:
        found = list(_calls.values())
    yield from found


def forget(keep: Callable[[CallStats], bool]) -> None:
    """Drop the figures of instances ``keep`` says no to (instances that left every set)."""
    with _lock:
        for key in [key for key, value in _calls.items() if not keep(value)]:
            del _calls[key]


class _CallObserver:
    """A tracker's observer that records each call in the instance's ``CallStats``."""

    __slots__ = ("_service",)

    def __init__(self, service: str) -> None:
        self._service = service

    def attach(self, tracked: Any) -> None:
        tracked._stats = stats(self._service, tracked.instance.address)

    def started(self, tracked: Any) -> None:
        pass

    def finished(self, tracked: Any, latency: float, error: BaseException | None) -> None:
        tracked._stats.record(latency, error is None or not isinstance(error, Exception))


def observer(service: str) -> _CallObserver | None:
    """The observer a tracker made now for ``service`` adds, or ``None`` while metrics are off."""
    return _CallObserver(service) if _on else None
