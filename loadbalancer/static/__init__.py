"""A publisher of a fixed list of instances, which the application may replace at runtime."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, TypeVar

from ..instance import Instance
from ..publisher import Factory
from ..publisher import Publisher as _Base

__all__ = ["Publisher"]

E = TypeVar("E")


class Publisher(_Base[E]):
    """Publishes the instances it is given, in the given order.

    The set is there as soon as the publisher is constructed. ``replace(instances)``
    publishes a new list, which is how an application feeds a source of its own (a config
    file, an admin API). Malformed instance strings raise ``InvalidInstanceError`` (a
    ``ValueError``) and change nothing.

    >>> p = Publisher(["127.0.0.1:8080", "[::1]:8080"], lambda hostport: hostport)
    >>> list(p.endpoints())
    ['127.0.0.1:8080', '[::1]:8080']
    >>> p.replace(["127.0.0.1:8081"])
    >>> list(p.endpoints())
    ['127.0.0.1:8081']
    >>> p.close()
    """

    def __init__(
        self,
        instances: Iterable[Instance | str],
        factory: Factory[E],
        *,
        logger: Any = None,
        close_delay: float | timedelta = 1.0,
    ) -> None:
        if isinstance(instances, str):
            raise TypeError(
                f"instances must be a list of 'host:port' strings or Instances, not the string {instances!r}"
            )
        super().__init__(factory, service="static", logger=logger, close_delay=close_delay)
        self._publish(instances, strict=True)

    def replace(self, instances: Iterable[Instance | str]) -> None:
        """Publish ``instances`` as the new set (endpoints of unchanged instances are kept)."""
        if isinstance(instances, str):
            raise TypeError(
                f"instances must be a list of 'host:port' strings or Instances, not the string {instances!r}"
            )
        self._publish(instances, strict=True)

    def __repr__(self) -> str:
        return f"static.Publisher({len(self.endpoints())} instances)"
