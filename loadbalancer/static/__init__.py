"""A publisher of a fixed list of instances, which the application may replace at runtime."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from .._discovery import DiscoveryPublisher
from .._typing import E
from ..instance import Instance

__all__ = ["Publisher"]


def _check(instances: object) -> None:
    if isinstance(instances, str):
        raise TypeError(f"instances must be a list of 'host:port' strings or Instances, not the string {instances!r}")
    if not isinstance(instances, Iterable):
        raise TypeError(
            f"instances must be a list of 'host:port' strings or Instances (such as ['10.0.0.1:80']),"
            f" got {type(instances).__name__} {instances!r}"
        )


class Publisher(DiscoveryPublisher[E]):
    """Publishes the instances it is given, in the given order.

    The set is there as soon as the publisher is constructed. ``replace(instances)``
    publishes a new list, which is how an application feeds a source of its own (a config
    file, an admin API). Malformed instance strings raise ``InvalidInstanceError`` (a
    ``ValueError``) and change nothing. Without a factory it publishes the ``Instance``
    objects themselves; ``tags=`` keeps only instances carrying all of them.

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
        factory: Callable[[str], E] | Callable[[Instance], E] | None = None,
        *,
        logger: Any = None,
        close_delay: float | timedelta = 1.0,
        tags: Iterable[str] | str | None = None,
        service: str = "static",
    ) -> None:
        _check(instances)
        super().__init__(factory, service=service, logger=logger, close_delay=close_delay, tags=tags)
        self._publish(instances, strict=True)

    def replace(self, instances: Iterable[Instance | str]) -> None:
        """Publish ``instances`` as the new set (endpoints of unchanged instances are kept).

        Raises ``RuntimeError`` once the publisher is closed (nothing would use the set).
        """
        _check(instances)
        if self._closed:
            raise RuntimeError(f"{self!r} is closed: replace() would publish to nobody")
        self._publish(instances, strict=True)

    def __repr__(self) -> str:
        name = "" if self._service == "static" else f"{self._service!r}, "
        return f"static.Publisher({name}{len(self.endpoints())} instances)"
