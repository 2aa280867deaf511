"""``zookeeper.Registry``: services by name under one root path, the generic facade over ``zookeeper.Backend``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from kazoo.client import KazooClient

from .._deprecated import renamed
from .._tls import TLS
from .._typing import E
from ..backend import Registry as _Generic
from ..instance import Instance
from ..publisher import Factory
from ._backend import Backend
from ._publisher import Publisher
from ._registrar import Registrar

__all__ = ["Registry"]


class Registry(_Generic):
    """The registry facade (``loadbalancer.backend.Registry``) on ZooKeeper: services under ``root``.

    Service ``name``'s instances are the children of ``{root}/{name}``, one ephemeral
    sequential node each (a ``zookeeper.Registrar`` on the registry's client, checked every
    ``ttl / 2`` and at once on a reconnection, created again after a session expiry);
    ``watch(name)`` is a ``zookeeper.Publisher`` (children and data watches) on the same
    client. ``endpoints``, ``client``, ``tls``, ``session_timeout``, ``timeout`` and
    ``max_backoff`` as for ``zookeeper.Backend``.

    >>> registry = Registry("127.0.0.1:2181", root="/services")
    >>> registry.register("api", "10.0.0.7:8080")  # doctest: +SKIP
    >>> registry.discover("api")  # doctest: +SKIP
    [Instance(host='10.0.0.7', port=8080)]
    >>> registry.close()
    """

    @renamed(hosts="endpoints")
    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        client: KazooClient | None = None,
        root: str = "/services",
        ttl: float | timedelta = 10.0,
        tls: TLS = None,
        session_timeout: float | timedelta = 10.0,
        timeout: float | timedelta = 10.0,
        max_backoff: float | timedelta = 5.0,
        logger: Any = None,
    ) -> None:
        self._zk = Backend(
            endpoints,
            client=client,
            root=root,
            tls=tls,
            session_timeout=session_timeout,
            timeout=timeout,
            max_backoff=max_backoff,
            logger=logger,
        )
        super().__init__(self._zk, ttl=ttl, logger=logger)

    def _registrar(self, name: str, instance: Instance | str, ttl: float | timedelta | None) -> Registrar:
        if self._closed:
            raise RuntimeError("the registry is closed")
        return Registrar._on(self._zk, name, instance, self._ttl if ttl is None else ttl, self._logger)

    def _follow(
        self, name: str, factory: Factory[E] | None, tags: Iterable[str] | str | None, options: dict[str, Any]
    ) -> Publisher[E]:
        options.setdefault("logger", self._logger)
        return Publisher._on(self._zk, name, factory, tags=tags, **options)

    def __repr__(self) -> str:
        return f"zookeeper.Registry({self._zk.endpoints!r})"
