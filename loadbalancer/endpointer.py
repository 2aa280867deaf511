"""``Endpointer``: endpoints made by a factory for the instances another publisher publishes (go-kit's Endpointer).

A discovery publisher built without a factory publishes ``Instance`` objects (go-kit's
Instancer). An ``Endpointer`` over it calls a factory once per new instance, reuses the
endpoints of instances that stay and closes those of instances that go: what a publisher
given a factory does, for when the factory belongs to a later layer (an HTTP transport
that keeps one connection pool per instance, over a publisher the application made).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ._discovery import DiscoveryPublisher
from ._typing import E
from .instance import Instance
from .publisher import EndpointSet, Publisher

__all__ = ["Endpointer"]


class Endpointer(DiscoveryPublisher[E]):
    """Publishes ``factory``'s endpoint for each instance ``publisher`` publishes, in its order.

    Staleness passes through: when ``publisher``'s set turns stale, so does this one (with
    the same error), keeping its endpoints. Closing it closes its endpoints, and
    ``publisher`` too unless ``own=False``. ``service`` names it (default: ``publisher``'s).

    >>> from loadbalancer import static
    >>> instances = static.Publisher(["10.0.0.1:80", "10.0.0.2:80"])
    >>> endpoints = Endpointer(instances, lambda address: f"client for {address}")
    >>> list(endpoints.endpoints())
    ['client for 10.0.0.1:80', 'client for 10.0.0.2:80']
    >>> endpoints.close()
    """

    def __init__(
        self,
        publisher: Publisher[Any],
        factory: Callable[[str], E] | Callable[[Instance], E],
        *,
        close_delay: float | timedelta = 1.0,
        logger: Any = None,
        own: bool = True,
        service: str | None = None,
    ) -> None:
        if not isinstance(publisher, Publisher):
            raise TypeError(f"Endpointer needs a loadbalancer.Publisher, got {publisher!r}")
        name = publisher.service if service is None else service
        super().__init__(factory, service=name, logger=logger, close_delay=close_delay)
        self._inner = publisher
        self._own = own
        self._subscription = publisher.subscribe(self._on_inner)

    @property
    def publisher(self) -> Publisher[Any]:
        """The publisher of the instances."""
        return self._inner

    def _on_inner(self, endpoints: EndpointSet[Any]) -> None:
        current = self._current
        if endpoints.error is None or current is None or current.instances != endpoints.instances:
            self._publish(endpoints.instances)
        if endpoints.error is not None:
            self._publish_error(endpoints.error)

    def refresh(self) -> EndpointSet[E]:
        """Refresh the inner publisher; return this one's set."""
        self._inner.refresh()
        return self.endpoints()

    async def arefresh(self) -> EndpointSet[E]:
        """Async form of ``refresh()``."""
        await self._inner.arefresh()
        return self.endpoints()

    def _shutdown(self) -> bool:
        self._subscription.unsubscribe()
        return super()._shutdown()

    def close(self) -> None:
        """Close every endpoint; and the inner publisher unless made with ``own=False``."""
        super().close()
        if self._own:
            self._inner.close()

    async def aclose(self) -> None:
        """Async form of ``close()``."""
        await super().aclose()
        if self._own:
            await self._inner.aclose()

    def __repr__(self) -> str:
        return f"Endpointer({self._inner!r})"
