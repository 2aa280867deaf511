"""``consul.Publisher``, ``consul.Registrar`` and ``consul.Registry``: the generic ones over ``consul.Backend``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any, Unpack

from .._deprecated import renamed
from .._options import SourceOptions
from .._tls import TLS
from .._typing import E
from .._util import seconds
from ..backend import Lease
from ..backend import Publisher as _Publisher
from ..backend import Registrar as _Registrar
from ..backend import Registry as _Registry
from ..instance import Instance, parse_instance
from ..publisher import Factory
from ._backend import Backend
from ._client import Client, go_duration
from ._connection import old_tls

__all__ = ["Publisher", "Registrar", "Registry"]


def _tags(tags: Iterable[str] | str | None) -> tuple[str, ...]:
    if tags is None:
        return ()
    found = (tags,) if isinstance(tags, str) else tuple(tags)
    for tag in found:
        if not isinstance(tag, str) or not tag:
            raise ValueError(f"invalid tag {tag!r}: tags are non-empty strings")
    return found


def _optional_seconds(value: float | timedelta | None, name: str) -> float | None:
    return None if value is None else seconds(value, name, allow_zero=False)


class Publisher(_Publisher[E]):
    """Follows Consul service ``service`` with blocking queries: go-kit's ``sd/consul`` instancer.

    Reads ``/v1/health/service/<service>`` (only instances whose checks all pass, unless
    ``passing_only=False``; only those carrying every tag in ``tags``; in ``datacenter``),
    then waits on it with blocking queries (``index`` and ``wait``): a change reaches the
    subscribers as soon as Consul answers, not at a poll interval. Each entry becomes an
    ``Instance``: ``Service.Address`` (the node's address when empty), ``Service.Port``,
    ``Weights.Passing`` as the weight (``Weights.Warning`` while a check warns),
    ``Service.Tags`` and ``Service.Meta``. A failed query keeps the last good set (stale)
    and backs off; an index gone backwards lists the service afresh.

    ``endpoints``: the agent, ``"host:port"`` or ``"http[s]://host:port"``; ``token``: the
    ACL token; ``tls``: a ``loadbalancer.TLSConfig`` (or ``ssl.SSLContext``, or ``True``);
    each read from Consul's environment variables when not given, as ``consul.Client``
    does (``CONSUL_HTTP_ADDR``, else ``http://127.0.0.1:8500``). ``wait``: the longest a
    blocking query waits.

    >>> publisher = Publisher("api", endpoints="http://127.0.0.1:8500", tags=["v2"])  # doctest: +SKIP
    >>> publisher.endpoints()  # doctest: +SKIP
    EndpointSet([10.0.0.1:8080, 10.0.0.2:8080])
    """

    @renamed(address="endpoints", verify=old_tls, cert=old_tls)
    def __init__(
        self,
        service: str,
        factory: Factory[E] | None = None,
        *,
        endpoints: str | Sequence[str] | None = None,
        tags: Iterable[str] | str | None = None,
        passing_only: bool = True,
        datacenter: str | None = None,
        token: str | None = None,
        tls: TLS = None,
        timeout: float | timedelta = 5.0,
        wait: float | timedelta = 60.0,
        **options: Unpack[SourceOptions],
    ) -> None:
        client = Client(
            endpoints,
            token=token,
            datacenter=datacenter,
            tls=tls,
            timeout=seconds(timeout, "timeout", allow_zero=False),
        )
        backend = Backend(
            client,
            passing_only=passing_only,
            tags=_tags(tags),
            wait=seconds(wait, "wait", allow_zero=False),
            logger=options.get("logger"),
        )
        super().__init__(
            backend,
            service,
            factory,
            own=True,
            **options,
        )
        backend.log = self._log

    @property
    def index(self) -> int:
        """The Consul index the published set reflects (0 before the first answer)."""
        return int(self.cursor or 0)

    def __repr__(self) -> str:
        return f"consul.Publisher({self.service!r}, endpoints={self.backend.client.address!r})"  # type: ignore[attr-defined]


class Registrar(_Registrar):
    """Registers ``instance`` as service ``service`` with the Consul agent while it lives: go-kit's consul registrar.

    The agent service gets a TTL check of ``ttl`` seconds, passed at once and then every
    half TTL in the background (it turns critical, so that readers asking for passing
    instances drop it, if this process stops passing it); with ``http_check=URL`` the agent
    checks that URL every ``check_interval`` seconds instead. ``deregister_after``: Consul's
    ``DeregisterCriticalServiceAfter`` (the agent removes a service critical that long).
    ``service_id`` defaults to ``"{service}-{host}-{port}"``; the instance's tags, metadata
    and weight go with it. ``close()`` (and interpreter exit) deregisters; if the agent
    forgets the service (restarted), it is registered again. Sync and async twins and
    context managers as every registrar. ``endpoints``, ``token`` and ``tls`` as for
    ``consul.Publisher``.

    >>> registrar = Registrar("api", "10.0.0.7:8080", endpoints="127.0.0.1:8500", ttl=10)
    >>> registrar.service_id
    'api-10.0.0.7-8080'
    >>> with registrar:  # doctest: +SKIP
    ...     serve_forever()
    """

    @renamed(address="endpoints", verify=old_tls, cert=old_tls)
    def __init__(
        self,
        service: str,
        instance: Instance | str,
        *,
        endpoints: str | Sequence[str] | None = None,
        ttl: float | timedelta = 10.0,
        service_id: str | None = None,
        http_check: str | None = None,
        check_interval: float | timedelta = 10.0,
        deregister_after: float | timedelta | None = None,
        token: str | None = None,
        datacenter: str | None = None,
        tls: TLS = None,
        timeout: float | timedelta = 5.0,
        logger: Any = None,
        backend: Backend | None = None,
    ) -> None:
        own = backend is None
        if backend is None:
            client = Client(
                endpoints,
                token=token,
                datacenter=datacenter,
                tls=tls,
                timeout=seconds(timeout, "timeout", allow_zero=False),
            )
            backend = Backend(client, logger=logger)
        if not isinstance(service, str) or not service:
            raise ValueError(f"invalid Consul service name {service!r}")
        parsed = instance if isinstance(instance, Instance) else parse_instance(instance)
        if service_id is not None and (not isinstance(service_id, str) or not service_id):
            raise ValueError(f"invalid service_id {service_id!r}: give a non-empty string")
        if http_check is not None and not (
            isinstance(http_check, str) and http_check.startswith(("http://", "https://"))
        ):
            raise ValueError(f"invalid http_check {http_check!r}: give an http:// or https:// URL")
        super().__init__(backend, service, parsed, ttl=ttl, logger=logger, own=own)
        self._consul = backend
        self._service_id = service_id or backend.service_id(service, parsed)
        self._http_check = http_check
        self._check_interval = seconds(check_interval, "check_interval", allow_zero=False)
        self._deregister_after = _optional_seconds(deregister_after, "deregister_after")
        self._log = self._log.bind(service_id=self._service_id)

    @property
    def service_id(self) -> str:
        return self._service_id

    async def _grant(self) -> Lease:
        definition = self._consul.definition(
            self._service,
            self._instance,
            self._ttl,
            service_id=self._service_id,
            http_check=self._http_check,
            check_interval=self._check_interval,
        )
        if self._deregister_after is not None:
            definition["Check"]["DeregisterCriticalServiceAfter"] = go_duration(self._deregister_after)
        return await self._consul.register_definition(self._service, self._instance, self._ttl, definition)

    def __repr__(self) -> str:
        return f"consul.Registrar({self._service!r}, {self._service_id!r}, ttl={self.ttl:g})"


class Registry(_Registry):
    """Consul by service name: register, discover, watch, list_services, health (farp's and etcd-registry's names).

    ``register(name, instance, ttl=)`` keeps an instance registered with a TTL check (a
    ``consul.Registrar``); ``discover(name, tags=)`` reads the passing instances;
    ``watch(name, factory)`` follows them with blocking queries; ``list_services()`` is
    ``/v1/catalog/services``; ``health()`` asks for the Raft leader. ``endpoints``, ``token``
    and ``tls`` as for ``consul.Publisher``.

    >>> registry = Registry("http://127.0.0.1:8500")
    >>> registry.register("api", "10.0.0.7:8080", ttl=10)  # doctest: +SKIP
    consul.Registrar('api', 'api-10.0.0.7-8080', ttl=10)
    >>> registry.close()
    """

    @renamed(address="endpoints", verify=old_tls, cert=old_tls)
    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        ttl: float | timedelta = 10.0,
        passing_only: bool = True,
        deregister_after: float | timedelta | None = None,
        token: str | None = None,
        datacenter: str | None = None,
        tls: TLS = None,
        timeout: float | timedelta = 5.0,
        wait: float | timedelta = 60.0,
        logger: Any = None,
    ) -> None:
        client = Client(
            endpoints,
            token=token,
            datacenter=datacenter,
            tls=tls,
            timeout=seconds(timeout, "timeout", allow_zero=False),
        )
        self._consul = Backend(
            client,
            passing_only=passing_only,
            wait=seconds(wait, "wait", allow_zero=False),
            deregister_after=_optional_seconds(deregister_after, "deregister_after"),
            logger=logger,
        )
        super().__init__(self._consul, ttl=ttl, logger=logger)

    def _registrar(self, name: str, instance: Instance | str, ttl: float | timedelta | None) -> Registrar:
        if self._closed:
            raise RuntimeError("the registry is closed")
        return Registrar(
            name,
            instance,
            ttl=self._ttl if ttl is None else ttl,
            deregister_after=self._consul.deregister_after,
            logger=self._logger,
            backend=self._consul,
        )

    def __repr__(self) -> str:
        return f"consul.Registry({self._consul.client.address!r})"
