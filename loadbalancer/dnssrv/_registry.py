"""``dnssrv.Registry``: the registry facade over DNS SRV: discover, lookup and watch, no registering."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dns.resolver

from .._deprecated import renamed
from ..backend import Registry as _Registry
from ._backend import Backend

__all__ = ["Registry"]


class Registry(_Registry):
    """DNS SRV by service name (``loadbalancer.backend.Registry`` over a ``dnssrv.Backend``).

    ``discover("api")`` looks ``_api._tcp.<domain>.`` up; ``watch("api", factory)`` is the
    generic publisher polling it every ``interval`` seconds (re-checked with one UDP query,
    as ``dnssrv.Publisher`` does); ``register`` raises ``NotImplementedError``: DNS takes no
    registrations. ``protocol``, ``interval``, ``timeout``, ``resolver`` and
    ``resolve_targets`` as for ``dnssrv.Backend``.

    >>> registry = Registry("svc.example.", resolver=dns.resolver.Resolver(configure=False))
    >>> registry.discover("api")  # doctest: +SKIP
    [Instance('10.0.0.7', 8080, weight=5, priority=10, ttl=30)]
    >>> registry.close()
    """

    @renamed(ttl="interval")
    def __init__(
        self,
        domain: str | None = None,
        *,
        protocol: str = "tcp",
        interval: float | timedelta = 5.0,
        timeout: float | timedelta | None = None,
        resolver: dns.resolver.BaseResolver | None = None,
        resolve_targets: bool = False,
        logger: Any = None,
    ) -> None:
        backend = Backend(
            domain,
            protocol=protocol,
            interval=interval,
            timeout=timeout,
            resolver=resolver,
            resolve_targets=resolve_targets,
            logger=logger,
        )
        super().__init__(backend, logger=logger)

    def __repr__(self) -> str:
        return f"dnssrv.Registry({self.backend!r})"
