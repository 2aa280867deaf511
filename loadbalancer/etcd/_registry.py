"""``etcd.Registry``: join, leave, look up and list services by name, on one connection string."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from .._deprecated import renamed
from .._tls import TLS, legacy_tls
from .._typing import E
from ..backend import Registry as _Generic
from ..instance import Instance
from ..publisher import Factory
from ._backend import Backend
from ._client import Client
from ._connection import DEFAULT_ENDPOINTS, key_prefix
from ._publisher import Publisher
from ._registrar import Registrar, lease_seconds

__all__ = ["Registry"]


class Registry(_Generic):
    """A service registry on etcd, addressed by one connection string, in the manner of etcd-registry.

    ``endpoints`` is ``"[http[s]://]host[:port][,host[:port]...][/namespace]"`` (or a
    sequence of member URLs); it, ``namespace``, ``username``/``password``, ``tls`` and
    ``timeout`` are those of ``etcd.Client``. Service ``name``'s instances live under
    ``{namespace}{prefix}/{name}/``, one key per instance, named by its ``host:port``,
    holding the JSON document that ``etcd.Publisher`` reads.

    - ``join(name, instance, ttl=)`` registers an instance (an ``etcd.Registrar`` kept alive
      in the background) and returns its registrar; ``leave(name)`` removes what this
      registry joined under ``name`` (or only ``instance=``).
    - ``lookup(name)`` reads the instances now and returns one at random (``None`` if there
      is none); ``list(name)`` returns them all, in key order.
    - ``publisher(name, factory)`` follows ``name`` continuously (an ``etcd.Publisher``).
    - Each has an async twin (``ajoin``, ``aleave``, ``alookup``, ``alist``); ``close()``
      (or ``aclose()``, or leaving a ``with`` block) leaves everything.
    - It is the generic ``loadbalancer.backend.Registry`` over an ``etcd.Backend``, so farp's
      names work too: ``register``, ``deregister``, ``discover(name, tags=)``, ``watch``
      (a publisher sharing the registry's connections), ``list_services``, ``health``.

    >>> registry = Registry("http://127.0.0.1:2379/my-namespace")
    >>> registry.join("api", "10.0.0.7:8080", ttl=10)  # doctest: +SKIP
    etcd.Registrar('/my-namespace/services/api/10.0.0.7:8080', ttl=10)
    >>> registry.lookup("api")  # doctest: +SKIP
    Instance(host='10.0.0.7', port=8080)
    >>> registry.close()
    """

    @renamed(connection="endpoints", verify=legacy_tls, cert=legacy_tls)
    def __init__(
        self,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS,
        *,
        namespace: str | None = None,
        prefix: str = "/services",
        ttl: float | timedelta = 10.0,
        username: str | None = None,
        password: str | None = None,
        tls: TLS = None,
        timeout: float | timedelta = 5.0,
        logger: Any = None,
    ) -> None:
        client = Client(endpoints, namespace=namespace, username=username, password=password, tls=tls, timeout=timeout)
        root = key_prefix(client.namespace, prefix)  # "/ns/services/"
        self._options: dict[str, Any] = {
            "endpoints": client.members,
            "username": username,
            "password": password,
            "tls": tls,
            "timeout": client.timeout,
            "logger": logger,
        }
        self._etcd = Backend(client, root=root, logger=logger)
        self._root = root
        super().__init__(self._etcd, ttl=lease_seconds(ttl), logger=logger)

    def prefix(self, name: str) -> str:
        """The key prefix of service ``name``'s instances (``"/ns/services/api/"``)."""
        return self._etcd.prefix_of(name)

    def _registrar(self, name: str, instance: Instance | str, ttl: float | timedelta | None) -> Registrar:
        if self._closed:
            raise RuntimeError("the registry is closed")
        return Registrar._attached(
            self._etcd, self.prefix(name), instance, self._ttl if ttl is None else ttl, name, self._logger
        )

    def publisher(self, name: str, factory: Factory[E] | None = None, **options: Any) -> Publisher[E]:
        """An ``etcd.Publisher`` following service ``name`` on this registry's cluster (its own connections).

        ``options`` go to the publisher (``keepalive=``, ``close_delay=``, ...).
        """
        settings = {**self._options, **options}
        return Publisher(self.prefix(name), factory, **settings)

    def __repr__(self) -> str:
        return f"etcd.Registry({','.join(self._etcd.client.members)!r}, prefix={self._root!r})"
