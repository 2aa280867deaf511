"""``mdns.Publisher`` and ``mdns.Registrar``: the generic publisher and registrar over their own ``mdns.Backend``."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Unpack

from zeroconf.asyncio import AsyncZeroconf

from .._deprecated import renamed
from .._options import PublisherOptions
from .._typing import E
from .._util import seconds
from ..backend import Lease
from ..backend import Publisher as _GenericPublisher
from ..backend import Registrar as _GenericRegistrar
from ..instance import Instance, parse_instance
from ..publisher import Factory
from ._backend import Backend
from ._records import check_name, check_type, check_types, default_name, properties_of, service_key

__all__ = ["Publisher", "Registrar"]


class Publisher(_GenericPublisher[E]):
    """Publishes the instances of a DNS-SD service type (or several) that answer on the local network.

    Each instance is browsed (PTR), then resolved: its SRV gives port, priority and weight,
    its A (or AAAA) records the host (the first address, IPv4 first), its TXT record the
    metadata (a ``tags`` key, comma-separated, gives the tags). A goodbye packet removes an
    instance at once; one whose responder vanished without goodbye is removed when its SRV
    or address records expire and it does not answer a query again (checked every
    ``interval`` seconds). ``name``: follow only the instance of that name.

    ``service_type``: ``"_http._tcp.local."`` (``"_http._tcp"`` is completed), or several
    (farp's ``ServiceTypes``): instances of all of them, in one set. The first set is
    published once the browse has had ``settle`` seconds to collect answers. Other
    options as for ``mdns.Backend`` and every discovery publisher (``tags``,
    ``invalidate_after``, ``close_delay``).

    >>> publisher = Publisher("_http._tcp.local.", str)  # doctest: +SKIP
    >>> publisher.wait_ready(5)  # doctest: +SKIP
    """

    @renamed(resolve_timeout="timeout", recheck="interval")
    def __init__(
        self,
        service_type: str | Iterable[str] = "_http._tcp.local.",
        factory: Factory[E] | None = None,
        *,
        name: str | None = None,
        interfaces: str | Iterable[str] = "all",
        ip_version: str = "v4",
        settle: float | timedelta = 1.5,
        timeout: float | timedelta = 3.0,
        interval: float | timedelta = 10.0,
        zeroconf: AsyncZeroconf | None = None,
        **options: Unpack[PublisherOptions],
    ) -> None:
        self._types = check_types(service_type)
        backend = Backend(
            interfaces=interfaces,
            ip_version=ip_version,
            settle=settle,
            timeout=timeout,
            interval=interval,
            instance=name,
            zeroconf=zeroconf,
            logger=options.get("logger"),
        )
        super().__init__(
            backend,
            service_key(self._types),
            factory,
            own=True,
            **options,
        )
        backend.log = self._log  # its events carry this publisher's context

    @property
    def service_types(self) -> tuple[str, ...]:
        return self._types

    def __repr__(self) -> str:
        return f"mdns.Publisher({', '.join(self._types)})"


class Registrar(_GenericRegistrar):
    """Announces ``instance`` as a ``service_type`` service on the local network while it lives.

    ``register()`` probes for the instance ``name`` (default: this host's short name and
    the port), announces the PTR, SRV, TXT and A records, and returns once announced; a
    name another responder holds is changed as RFC 6762 section 9 says (``"web-2"``) and
    the change logged (``mdns_name_conflict``), or with ``rename=False`` refused.
    ``deregister()``, ``close()`` and interpreter exit send goodbye packets. The TXT record
    holds the instance's metadata, ``properties``, and its tags under ``tags``; the SRV its
    priority and weight. ``ttl``: the TTL of the SRV and A records in seconds (default
    120, as RFC 6762 advises for records naming a host): how long an ``mdns.Publisher``
    keeps the instance if this process dies without goodbye (the PTR and TXT records live
    RFC 6762's 75 minutes, and browsers that watch only the PTR keep it that long).
    ``server``: the host name in the SRV record (default: this host's short name and the
    port, ``"web-3-8080.local."``). The instance's host must be an IP address (the A record).

    >>> with Registrar("_http._tcp.local.", "192.168.1.5:8080", name="web") as registrar:  # doctest: +SKIP
    ...     registrar.key
    'web._http._tcp.local.'
    """

    def __init__(
        self,
        service_type: str,
        instance: Instance | str,
        *,
        name: str | None = None,
        properties: Mapping[str, str] | None = None,
        server: str | None = None,
        ttl: float | timedelta = 120.0,
        rename: bool = True,
        interfaces: str | Iterable[str] = "all",
        ip_version: str = "v4",
        zeroconf: AsyncZeroconf | None = None,
        logger: Any = None,
    ) -> None:
        parsed = instance if isinstance(instance, Instance) else parse_instance(instance)
        try:
            ipaddress.ip_address(parsed.host)
        except ValueError:
            raise ValueError(
                f"cannot announce {parsed.address!r} over mDNS: give the instance's IP address, not a host name"
            ) from None
        self._type = check_type(service_type)
        self._name = check_name(default_name(parsed.port) if name is None else name)
        self._properties = dict(properties or {})
        properties_of(parsed, self._properties)  # checked now, not at registration
        record_ttl = seconds(ttl, "ttl", allow_zero=False)
        if record_ttl < 1:
            raise ValueError(f"ttl must be at least 1 second (mDNS TTLs are whole seconds), got {record_ttl:g}")
        self._server = server
        self._rename = rename
        backend = Backend(interfaces=interfaces, ip_version=ip_version, zeroconf=zeroconf, logger=logger)
        super().__init__(backend, self._type, parsed, ttl=record_ttl, logger=logger, own=True)
        self._mdns = backend
        self._log = self._log.bind(instance_name=self._name)
        backend.log = self._log

    @property
    def key(self) -> str:
        """The full DNS-SD name announced (after a rename), or the one asked for before registering."""
        lease: Lease | None = self._lease
        return str(lease.handle.name) if lease is not None else f"{self._name}.{self._type}"

    @property
    def name(self) -> str:
        """The instance name announced (after a rename), or the one asked for."""
        return self.key[: -len(self._type) - 1]

    async def _grant(self) -> Lease:
        return await self._mdns.announce(
            self._type,
            self._instance,
            ttl=self._ttl,
            name=self._name,
            server=self._server,
            properties=self._properties,
            rename=self._rename,
        )

    def __repr__(self) -> str:
        return f"mdns.Registrar({self.key!r}, {self._instance.address!r})"
