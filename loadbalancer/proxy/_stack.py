"""The balancing stack of a worker: source -> backends -> health checks -> outlier ejection -> balancer."""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Callable
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

__all__ = ["BALANCERS", "Backends", "build_stack"]

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
) -> tuple[Balancer[Any], Backends, Publisher[Any], OutlierDetector[Any] | None]:
    """The balancer over ``source`` and the layers it stands on."""

    def make(instance: Instance) -> Backend:
        return Backend(
            instance,
            scheme=schemes.get(instance.address, "http"),
            limit=limit,
            queue_timeout=queue_timeout,
            connect_timeout=connect_timeout,
            ssl=upstream_ssl,
            loop=loop,
        )

    backends = Backends(source, make)
    top: Publisher[Any] = backends
    if health_path is not None:
        top = HealthChecker(
            top,
            HttpCheck(health_path, ssl=upstream_ssl if health_ssl else None),
            interval=health_interval,
            timeout=min(2.0, health_interval),
            healthy_threshold=1,
            unhealthy_threshold=1,
            panic_threshold=0.0,
        )
    detector: OutlierDetector[Any] | None = None
    if eject_after > 0:
        detector = OutlierDetector(top, consecutive_failures=eject_after, base_ejection_time=10.0)
        top = detector
    return BALANCERS[balancer](top), backends, top, detector
