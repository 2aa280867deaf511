"""``eureka.Registrar``: register, heartbeat, status changes and cancel, on the generic registrar."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from .._bridge import await_on_runtime, wait_on_runtime
from .._deprecated import renamed
from .._tls import TLS, legacy_tls
from .._util import seconds
from ..backend import Lease
from ..backend import Registrar as _Generic
from ..instance import Instance, parse_instance
from ._backend import Backend, Registration, _app, check_status
from ._client import DEFAULT_URLS, Client

__all__ = ["Registrar"]


class Registrar(_Generic):
    """Keeps ``instance`` registered in Eureka as one of application ``app``'s.

    ``register()`` POSTs the instance (``instance_id`` defaults to ``host:app:port``, as
    Spring Cloud names them) with a lease of ``ttl`` seconds (Eureka's ``durationInSecs``,
    90 by default); a heartbeat goes every third of it (30 s) on the library's shared
    background loop. A heartbeat answered 404 (the server evicted or forgot the instance)
    registers it again. ``set_status("OUT_OF_SERVICE")`` (or ``await aset_status(...)``)
    changes its status at once (before registering: the status it registers with);
    ``deregister()`` / ``close()`` cancel the registration, as does interpreter exit.
    ``secure=True`` registers the port as the secure port. Weight, priority and tags go
    into the metadata as ``weight``, ``priority`` and ``tags`` (comma-separated), which
    ``eureka.Publisher`` reads back. ``endpoints``, ``tls`` and ``timeout`` are those of
    ``eureka.Client``.

    >>> registrar = Registrar("api", "10.0.0.7:8080", endpoints="http://127.0.0.1:8761/eureka/")
    >>> registrar.instance_id, registrar.heartbeat_interval
    ('10.0.0.7:api:8080', 30.0)
    >>> with registrar:  # doctest: +SKIP
    ...     serve_forever()
    """

    @renamed(urls="endpoints", verify=legacy_tls)
    def __init__(
        self,
        app: str,
        instance: Instance | str,
        *,
        endpoints: str | Sequence[str] = DEFAULT_URLS,
        ttl: float | timedelta = 90.0,
        instance_id: str | None = None,
        status: str = "UP",
        secure: bool = False,
        vip: str | None = None,
        timeout: float | timedelta = 5.0,
        tls: TLS = None,
        logger: Any = None,
    ) -> None:
        client = Client(endpoints, tls=tls, timeout=timeout)
        self._setup(Backend(client, logger=logger), app, instance, ttl, instance_id, status, secure, vip, logger)
        self._own = True

    @classmethod
    def _attached(
        cls, backend: Backend, app: str, instance: Instance | str, ttl: float | timedelta, logger: Any
    ) -> Registrar:
        """A registrar on a backend shared with others (a ``Registry``'s), which it does not close."""
        self = cls.__new__(cls)
        self._setup(backend, app, instance, ttl, None, "UP", False, None, logger)
        return self

    def _setup(
        self,
        backend: Backend,
        app: str,
        instance: Instance | str,
        ttl: float | timedelta,
        instance_id: str | None,
        status: str,
        secure: bool,
        vip: str | None,
        logger: Any,
    ) -> None:
        name = _app(app)
        parsed = instance if isinstance(instance, Instance) else parse_instance(instance)
        duration = seconds(ttl, "ttl", allow_zero=False)
        if duration < 3:
            raise ValueError(f"ttl must be at least 3 seconds (heartbeats go every third of it), got {duration:g}")
        if instance_id is None:
            instance_id = f"{parsed.host}:{name.lower()}:{parsed.port}"
        elif not isinstance(instance_id, str) or not instance_id or "/" in instance_id:
            raise ValueError(f"invalid instance_id {instance_id!r}: a non-empty string without '/'")
        super().__init__(backend, name, parsed, ttl=duration, logger=logger)
        self._eureka = backend
        self._registration = Registration(name, instance_id, {}, check_status(status))
        self._secure = bool(secure)
        self._vip = vip
        self._log = self._log.bind(instance_id=instance_id)

    @property
    def instance_id(self) -> str:
        return self._registration.instance_id

    @property
    def status(self) -> str:
        """The status registered (or to register with)."""
        return self._registration.status

    @property
    def lease_duration(self) -> float:
        """Eureka's ``durationInSecs``: the server evicts the instance this long after its last heartbeat."""
        return self._ttl

    @property
    def heartbeat_interval(self) -> float:
        return round(self._ttl) / 3

    async def _grant(self) -> Lease:
        return await self._eureka.register_instance(
            self._registration, self._instance, self._ttl, secure=self._secure, vip=self._vip
        )

    def set_status(self, status: str) -> None:
        """Change the instance's status (``UP``, ``DOWN``, ``OUT_OF_SERVICE``, ``STARTING``, ``UNKNOWN``)."""
        wait_on_runtime(self._set_status(status), f"{self!r}.set_status()", "await registrar.aset_status()")

    async def aset_status(self, status: str) -> None:
        """Async form of ``set_status()``."""
        await await_on_runtime(self._set_status(status))

    async def _set_status(self, status: str) -> None:
        value = check_status(status)
        async with self._lock():
            if self._lease is None:
                self._registration.status = value
            else:
                await self._eureka.set_status(self._lease, value)
        self._log.info(self._event("status_changed"), status=value)

    def __repr__(self) -> str:
        return f"eureka.Registrar({self._service!r}, {self.instance_id!r}, ttl={self._ttl:g})"
