"""``dnssrv.Backend``: DNS SRV as a discover-only backend of ``loadbalancer.backend``.

DNS answers who provides a service; it takes no registrations (dynamic updates are a zone
administrator's business). So the registry facade over it can ``discover``, ``lookup`` and
``watch`` (a polling ``dnssrv.Publisher``), and ``register`` says it cannot.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import dns.name
import dns.resolver

from .._typing import E
from .._util import seconds
from ..backend import Backend as _Backend
from ..backend import Listing
from ..backend import Registry as _Registry
from ..publisher import Factory
from ._publisher import Publisher, SrvLookup, _async_resolver, _check_name

__all__ = ["Backend", "Registry"]


class Backend(_Backend):
    """SRV records as a registry: service ``name`` is ``_name._protocol.domain.`` (or an SRV name as given).

    ``ttl``: how often a ``watch`` polls (``dnssrv.Publisher``'s ``ttl``); ``resolver`` as
    for ``dnssrv.Publisher``.
    """

    name = "dns"

    def __init__(
        self,
        domain: str | None = None,
        *,
        protocol: str = "tcp",
        ttl: float | timedelta = 5.0,
        resolver: dns.resolver.BaseResolver | None = None,
    ) -> None:
        self._domain = None if domain is None else _check_name(domain)
        if protocol not in ("tcp", "udp"):
            raise ValueError(f"protocol must be 'tcp' or 'udp', got {protocol!r}")
        self._protocol = protocol
        self.poll_interval = seconds(ttl, "ttl", allow_zero=False)
        self._given = resolver
        self._resolver = _async_resolver(resolver)

    def name_of(self, service: str) -> dns.name.Name:
        """The SRV name asked for ``service``: ``_api._tcp.<domain>.``, or ``service`` itself if it is one."""
        if service.startswith("_") or self._domain is None:
            return _check_name(service)
        return _check_name(f"_{service}._{self._protocol}.{self._domain.to_text()}")

    async def list(self, service: str) -> Listing:
        result = await SrvLookup(self._resolver, self.name_of(service), False).lookup(self._resolver.lifetime)
        # keys that sort as the publisher orders instances: priority, then the heaviest first
        return Listing({(i.priority, -i.weight, i.host, i.port): i for i in result.instances})

    def publisher(
        self,
        service: str,
        factory: Factory[E] | None = None,
        *,
        tags: Iterable[str] | str | None = None,
        **options: Any,
    ) -> Publisher[E]:
        """A ``dnssrv.Publisher`` polling ``service`` every ``ttl`` seconds."""
        resolver = self._given if self._given is not None else self._resolver
        return Publisher(
            self.name_of(service).to_text(), self.poll_interval, factory, resolver=resolver, tags=tags, **options
        )

    def __repr__(self) -> str:
        return f"dnssrv.Backend({None if self._domain is None else self._domain.to_text()!r})"


class Registry(_Registry):
    """The registry facade (``loadbalancer.backend.Registry``) over DNS SRV: discover, lookup and watch only."""

    def __init__(self, domain: str | None = None, *, logger: Any = None, **options: Any) -> None:
        super().__init__(Backend(domain, **options), logger=logger)
