"""``eureka.Registry``: register, discover, watch and list applications by name on Eureka."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from .._deprecated import renamed
from .._tls import TLS, legacy_tls
from .._util import seconds
from ..backend import Registry as _Generic
from ..instance import Instance
from ._backend import Backend
from ._client import DEFAULT_URLS, Client
from ._registrar import Registrar

__all__ = ["Registry"]


class Registry(_Generic):
    """The registry facade (``loadbalancer.backend.Registry``) over Eureka: application names as service names.

    ``register(name, instance, ttl=90)`` keeps an ``eureka.Registrar`` alive;
    ``discover(name, tags=)`` fetches (a delta once the registry is known) and returns the
    UP instances; ``watch(name)`` is the generic publisher sharing this registry's local
    copy of Eureka (one fetch every ``interval`` serves every watch); ``list_services()``
    the applications with published instances; ``health()`` whether a server answers.
    ``endpoints``, ``tls`` and ``timeout`` are those of ``eureka.Client``; the other options
    (``statuses``, ``secure``, ``address``) those of ``eureka.Backend``.

    >>> registry = Registry("http://127.0.0.1:8761/eureka/")
    >>> registry.discover("api")  # doctest: +SKIP
    [Instance(host='10.0.0.7', port=8080)]
    >>> registry.close()
    """

    @renamed(urls="endpoints", verify=legacy_tls)
    def __init__(
        self,
        endpoints: str | Sequence[str] = DEFAULT_URLS,
        *,
        ttl: float | timedelta = 90.0,
        interval: float | timedelta = 30.0,
        timeout: float | timedelta = 5.0,
        tls: TLS = None,
        logger: Any = None,
        **options: Any,
    ) -> None:
        client = Client(endpoints, tls=tls, timeout=timeout)
        self._eureka = Backend(
            client, interval=seconds(interval, "interval", allow_zero=False), logger=logger, **options
        )
        super().__init__(self._eureka, ttl=ttl, logger=logger)

    def _registrar(self, name: str, instance: Instance | str, ttl: float | timedelta | None) -> Registrar:
        if self._closed:
            raise RuntimeError("the registry is closed")
        return Registrar._attached(self._eureka, name, instance, self._ttl if ttl is None else ttl, self._logger)

    def __repr__(self) -> str:
        return f"eureka.Registry({','.join(self._eureka.client.servers)!r})"
