"""A service as the clients see it: its instances' connections, optional ejection, a balancer over them.

The httpx transports, the aiohttp middleware and the gRPC channels each keep one connection
(a pool, a session's target, a sub-channel) per instance; ``Route`` makes it when the
instance appears, closes it when the instance leaves, and picks among them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _metrics
from .balancer import Balancer, RoundRobin
from .endpointer import Endpointer
from .errors import NoEndpointsError
from .instance import Instance
from .outlier import OutlierDetector
from .publisher import Publisher

__all__ = ["Balancing", "Connection", "Route", "instance_of"]

Balancing = type[Balancer[Any]] | Callable[[Publisher[Any]], Balancer[Any]] | Balancer[Any]
"""A balancer class, a function of a publisher making one, or a balancer over the application's instances."""


class Connection:
    """One instance's connection (a pool, a sub-channel): counts its calls in flight, records each for
    the metrics, and is shut (``_shut``) once its instance has left and its last call has ended."""

    records_calls = True  # its calls are counted here (metrics): trackers need not count them again

    def __init__(self, instance: Instance, service: str) -> None:
        self.instance = instance
        self._stats = _metrics.stats(service, instance.address) if _metrics.enabled() else None
        self._lock = threading.Lock()
        self._inflight = 0
        self._leaving = False

    def acquire(self) -> float:
        """A call starts: counted in flight; its start time."""
        with self._lock:
            self._inflight += 1
        return time.monotonic()

    def release(self, start: float, ok: bool) -> None:
        """A call that started at ``start`` ended: recorded, and the connection shut after the last one if leaving."""
        if self._stats is not None:
            self._stats.record(time.monotonic() - start, ok)
        with self._lock:
            self._inflight -= 1
            last = self._leaving and self._inflight == 0
        if last:
            self._shut()

    def close(self) -> None:
        """The instance left: shut now, or when its last call ends."""
        if self._leave():
            self._shut()

    def _leave(self) -> bool:
        """Mark it leaving; whether it is idle (to be shut now)."""
        with self._lock:
            self._leaving = True
            return self._inflight == 0

    def _shut(self) -> None:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.instance.address


class Route:
    """A service: its instances' connections (made by ``connect(instance)``), the optional
    ejection, and the balancer over them. ``close_delay``: how long a departed instance's
    connection stays open for calls still on it (the Endpointer's). ``screen``: a filter put
    between the connections and the ejection (the gRPC channels' health watch)."""

    def __init__(
        self,
        name: str,
        publisher: Publisher[Any],
        connect: Callable[[Instance], Any],
        balancer: Balancing,
        eject: bool | Mapping[str, Any],
        own: bool,
        log: Any,
        close_delay: float = 0,
        screen: Callable[[Publisher[Any]], Publisher[Any]] | None = None,
    ) -> None:
        if not isinstance(publisher, Publisher):
            raise TypeError(f"service {name!r}: expected a loadbalancer.Publisher (of instances), got {publisher!r}")
        self.name = name
        self.publisher = publisher
        self.log = log
        self.pools: Endpointer[Any] = Endpointer(
            publisher, connect, close_delay=close_delay, own=own, logger=log, service=name
        )
        top: Publisher[Any] = self.pools
        self.screen = None if screen is None else screen(self.pools)
        if self.screen is not None:
            top = self.screen
        self.detector: OutlierDetector[Any] | None = None
        if eject:
            options = dict(eject) if isinstance(eject, Mapping) else {}
            self.detector = OutlierDetector(self.pools, own=False, logger=log, **options)
            top = self.detector
        self.by_instance: Balancer[Any] | None = None
        if isinstance(balancer, Balancer):
            self.by_instance = balancer  # picks instances of the application's publisher: mapped to connections
            self.balancer: Balancer[Any] = RoundRobin(top)
        elif callable(balancer):
            self.balancer = balancer(top)
            if not isinstance(self.balancer, Balancer):
                raise TypeError(f"balancer must make a loadbalancer.Balancer, got {self.balancer!r}")
        else:
            raise TypeError(
                f"balancer must be a Balancer class, a function of a publisher or a Balancer, got {balancer!r}"
            )
        self._pick = self.balancer.endpoint
        self._index: tuple[object, dict[str, Any]] = ((), {})

    def candidates(self) -> Sequence[Any]:
        """The endpoints a pick chooses from now (a retry looks through them for one not tried)."""
        return self.balancer.candidates()

    def choose(self) -> Any:
        """The balancer's pick: an instance's connection, or the tracker of one."""
        if self.by_instance is None:
            return self._pick()
        instance = self.by_instance.endpoint()
        current = self.pools.endpoints()
        if self._index[0] is not current:
            self._index = (current, {str(i): e for i, e in zip(current.instances, current, strict=True)})
        pool = self._index[1].get(str(instance))
        if pool is None:
            raise NoEndpointsError(f"no connection for {instance} of service {self.name!r} yet")
        return pool

    def close(self) -> None:
        for layer in (self.detector, self.screen):
            if layer is not None:
                layer.close()
        self.pools.close()

    async def aclose(self) -> None:
        for layer in (self.detector, self.screen):
            if layer is not None:
                await layer.aclose()
        await self.pools.aclose()


def instance_of(endpoint: Any) -> Instance:
    """The instance an endpoint (a connection, or a tracker of one) sends to."""
    instance: Instance = endpoint.instance
    return instance
