"""The balancing stack of a worker: source -> backends -> health checks -> outlier ejection -> balancer."""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._filtered import Filtered
from ..balancer import Balancer, Random, RoundRobin
from ..health import HealthChecker, HttpCheck
from ..instance import Instance
from ..least_loaded import LeastLoaded, PeakEwma
from ..outlier import OutlierDetector
from ..publisher import EndpointSet, Publisher
from ..weighted import SmoothWeightedRoundRobin
from ._upstream import Backend

__all__ = ["BALANCERS", "Backends", "Stack", "build_stack"]

BALANCERS: dict[str, Callable[[Publisher[Any]], Balancer[Any]]] = {
    "round-robin": RoundRobin,
    "peak-ewma": PeakEwma,
    "least-loaded": LeastLoaded,
    "weighted": SmoothWeightedRoundRobin,
    "random": Random,
}


class Backends(Filtered[Any, Backend]):
    """Publishes a ``Backend`` (pool and limit) for each instance of ``publisher``; closes departed ones."""

    def __init__(self, publisher: Publisher[Any], make: Callable[[Instance], Backend]) -> None:
        self._make = make
        self._made: dict[str, Backend] = {}
        super().__init__(publisher, panic_threshold=0.0, logger=None, own=True)

    def _inner_changed(self, endpoints: EndpointSet[Any]) -> None:
        present = {instance.address for instance in endpoints.instances}
        for address in [address for address in self._made if address not in present]:
            self._made.pop(address).close()

    def _wrap(self, endpoint: Any, instance: Instance) -> Backend:
        backend = self._made.get(instance.address)
        if backend is None:
            backend = self._made[instance.address] = self._make(instance)
        return backend

    def all(self) -> list[Backend]:
        with self._lock:
            return list(self._made.values())


def build_stack(
    source: Publisher[Any],
    *,
    loop: asyncio.AbstractEventLoop,
    schemes: dict[str, str],
    limit: int | None,
    queue_timeout: float,
    connect_timeout: float,
    upstream_ssl: _ssl.SSLContext | None,
    health_ssl: bool,
    health_path: str | None,
    health_interval: float,
    eject_after: int,
    balancer: str,
    unhealthy_interval: float | None = None,
    panic_threshold: float | None = None,
    buffer_size: int = 256 * 1024,
) -> Stack:
    """The balancer over ``source`` and the layers it stands on.

    ``panic_threshold`` (Envoy's ``healthy_panic_threshold``): below this share of healthy
    backends, every backend is passed on; 0: never. ``None``: only when none is healthy.
    """
    panic = 1e-9 if panic_threshold is None else panic_threshold  # 0 healthy is below any positive share

    def make(instance: Instance) -> Backend:
        return Backend(
            instance,
            scheme=schemes.get(instance.address, "http"),
            limit=limit,
            queue_timeout=queue_timeout,
            connect_timeout=connect_timeout,
            ssl=upstream_ssl,
            loop=loop,
            buffer_size=buffer_size,
        )

    backends = Backends(source, make)
    top: Publisher[Any] = backends
    checker: HealthChecker[Any] | None = None
    if health_path is not None:
        top = checker = HealthChecker(
            top,
            HttpCheck(health_path, ssl=upstream_ssl if health_ssl else None),
            interval=health_interval,
            timeout=min(2.0, health_interval),
            unhealthy_interval=min(unhealthy_interval or health_interval, health_interval),
            healthy_threshold=1,
            unhealthy_threshold=1,
            panic_threshold=panic,
        )
    detector: OutlierDetector[Any] | None = None
    if eject_after > 0:
        eject_panic = 50.0 if panic_threshold is None else panic_threshold  # OutlierDetector's default
        detector = OutlierDetector(
            top, consecutive_failures=eject_after, base_ejection_time=10.0, panic_threshold=eject_panic
        )
        top = detector
    return Stack(BALANCERS[balancer](top), backends, top, checker, detector)


@dataclass(frozen=True)
class Stack:
    """A worker's balancing stack, from the balancer down to the backends."""

    balancer: Balancer[Any]
    backends: Backends
    top: Publisher[Any]
    checker: HealthChecker[Any] | None
    detector: OutlierDetector[Any] | None

    def states(self) -> dict[str, dict[str, Any]]:
        """Each backend's state now: healthy (by its checks), why not, ejected."""
        unhealthy = self.checker.unhealthy() if self.checker is not None else {}
        ejected = set(self.detector.ejected()) if self.detector is not None else set()
        return {
            str(backend): {
                "healthy": str(backend) not in unhealthy,
                "error": unhealthy.get(str(backend)) or None,
                "ejected": str(backend) in ejected,
            }
            for backend in self.backends.all()
        }
