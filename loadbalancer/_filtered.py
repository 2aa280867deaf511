"""The base of publishers that pass on another publisher's set, less the instances they rule out.

``OutlierDetector`` and ``HealthChecker`` are such filters: a balancer over one sees only the
instances that are fit to call, and since a filter is itself a ``Publisher``, filters stack
and compose with every balancer. A filter never calls the factory and never closes an
endpoint: the endpoints belong to the publisher underneath, which closes them when their
instances leave the source. The panic threshold lives here: when too few instances are
left in, the filter passes on all of them, since calling a doubtful instance beats having
none to call (Envoy's healthy panic threshold).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from .instance import Instance
from .publisher import EndpointSet, Publisher

E = TypeVar("E")  # the inner publisher's endpoints
W = TypeVar("W")  # what this filter publishes for each (the same object, or a wrapper)


def percent(value: float, name: str) -> float:
    """``value`` checked to be a percentage (0 to 100), or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) or not 0 <= value <= 100:
        raise ValueError(f"{name} must be a percentage from 0 to 100, got {value!r}")
    return float(value)


def count(value: int, name: str) -> int:
    """``value`` checked to be a positive whole number, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    return value


class Filtered(Publisher[W], Generic[E, W]):
    """Publishes ``publisher``'s set less the addresses in ``self._excluded``, unless in panic.

    A subclass sets up its state, then calls ``__init__``, which subscribes to the inner
    publisher (``_inner_changed`` then runs at once with its current set). It changes
    ``self._excluded`` under ``self._lock`` and calls ``_refilter()``.
    """

    def __init__(
        self,
        publisher: Publisher[E],
        *,
        panic_threshold: float,
        logger: Any,
        own: bool,
    ) -> None:
        if not isinstance(publisher, Publisher):
            raise TypeError(f"{type(self).__name__} filters a loadbalancer.Publisher, got {publisher!r}")
        super().__init__(service=publisher.service, logger=logger)
        self._inner = publisher
        self._own = own
        self._panic_threshold = percent(panic_threshold, "panic_threshold")
        self._excluded: dict[str, str] = {}  # address -> why it is out ("ejected", "unhealthy")
        self._in_panic = False
        self._inner_set: EndpointSet[E] = EndpointSet()
        self._subscription = publisher.subscribe(self._on_inner)

    @property
    def publisher(self) -> Publisher[E]:
        """The publisher whose set this one filters."""
        return self._inner

    @property
    def last_error(self) -> BaseException | None:
        """The inner publisher's most recent refresh failure."""
        return self._inner.last_error

    @property
    def panicking(self) -> bool:
        """Whether too few instances are in, so that all of them are passed on."""
        return self._in_panic

    def excluded(self) -> dict[str, str]:
        """The addresses ruled out now, each with the reason (whether or not in panic)."""
        with self._lock:
            return dict(self._excluded)

    def refresh(self) -> EndpointSet[W]:
        """Refresh the inner publisher; return this one's set."""
        self._inner.refresh()
        return self.endpoints()

    async def arefresh(self) -> EndpointSet[W]:
        """Async form of ``refresh()``."""
        await self._inner.arefresh()
        return self.endpoints()

    # -- what subclasses provide -------------------------------------------------------------

    def _inner_changed(self, endpoints: EndpointSet[E]) -> None:
        """The inner set changed (called under the lock, before refiltering): forget departed
        instances, start watching new ones."""

    def _wrap(self, endpoint: E, instance: Instance) -> W:
        """What to publish for ``endpoint``: by default the endpoint itself."""
        return endpoint  # type: ignore[return-value]

    def _stop(self) -> None:
        """Stop the filter's own background work (called once, on close)."""

    # -- the filtering -----------------------------------------------------------------------

    def _on_inner(self, endpoints: EndpointSet[E]) -> None:
        with self._lock:
            if self._closed:
                return
            self._inner_set = endpoints
            self._inner_changed(endpoints)
            self._refilter()

    def _refilter(self) -> None:
        """Publish the inner set less the excluded addresses (all of it in panic), if that changed."""
        with self._lock:
            if self._closed:
                return
            inner = self._inner_set
            instances = inner.instances
            excluded = self._excluded
            keep = [i for i, instance in enumerate(instances) if instance.address not in excluded]
            panic = len(keep) < len(inner) and len(keep) * 100 < self._panic_threshold * len(inner)
            if panic != self._in_panic:
                self._in_panic = panic
                log: Callable[..., Any] = self._log.warning if panic else self._log.info
                log("panic_mode_entered" if panic else "panic_mode_left", fit=len(keep), total=len(inner))
            if panic:
                keep = list(range(len(inner)))
            endpoints = [self._wrap(inner[i], instances[i]) for i in keep]
            new: EndpointSet[W] = EndpointSet(endpoints, [instances[i] for i in keep], inner.error)
            current = self._current
            if (
                current is None
                or current.error is not new.error
                or current.instances != new.instances
                or any(a is not b for a, b in zip(current, new, strict=True))
            ):
                self._set(new)

    # -- closing -----------------------------------------------------------------------------

    def _shutdown(self) -> bool:
        with self._lock:
            already = self._closed
        if not already:
            self._subscription.unsubscribe()
            self._stop()
        return super()._shutdown()

    def close(self) -> None:
        """Stop filtering; close the inner publisher too unless made with ``own=False``."""
        super().close()
        if self._own:
            self._inner.close()

    async def aclose(self) -> None:
        """Async form of ``close()``."""
        await super().aclose()
        if self._own:
            await self._inner.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r})"
