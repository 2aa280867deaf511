"""``etcd.Registrar``: a key under a lease, kept alive: the generic registrar over ``etcd.Backend``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from .._deprecated import renamed
from .._tls import TLS, legacy_tls
from .._util import seconds
from ..backend import Lease
from ..backend import Registrar as _Generic
from ..instance import Instance, parse_instance
from ._backend import Backend
from ._client import Client
from ._connection import DEFAULT_ENDPOINTS, key_prefix
from ._values import encode_value

__all__ = ["Registrar"]


def lease_seconds(ttl: float | timedelta) -> float:
    """``ttl`` checked as an etcd lease's: a whole number of seconds, at least one (else ``ValueError``)."""
    requested = seconds(ttl, "ttl", allow_zero=False)
    # etcd grants leases in whole seconds: say so rather than round a fraction silently
    if requested < 1 or not requested.is_integer():
        bound = "at least 1 second" if requested < 1 else "a whole number of seconds"
        raise ValueError(f"ttl must be {bound} (etcd leases are whole seconds), got {requested:g}")
    return requested


class Registrar(_Generic):
    """Registers ``instance`` under ``prefix`` in etcd for as long as it lives.

    The key is ``{namespace}{prefix}/{instance_id}`` (``instance_id`` defaults to the
    instance's ``host:port``), attached to a lease of ``ttl`` seconds: a whole number, at
    least 1, since etcd grants leases in whole seconds (it may raise the TTL to its minimum).
    The value is ``value`` if given (a ``"host:port"`` string suits readers that expect
    go-kit's plain form), else the JSON document a ``loadbalancer.etcd.Publisher`` reads
    back as the instance with its weight, priority, tags and metadata.

    ``register()`` grants the lease and puts the key; the lease is then kept alive every
    half TTL on the library's shared background loop. If etcd says the lease is gone (it
    expired while the cluster was unreachable, or was revoked), a new lease is granted and
    the key put again. ``deregister()`` revokes the lease, which deletes the key at once;
    ``close()`` deregisters and releases the connections. A registrar still registered
    when the interpreter exits is deregistered then, with a short timeout; a process that
    dies without that leaves its key until the lease expires, ``ttl`` seconds later.

    Every method has an async twin (``aregister()``, ``aderegister()``, ``aclose()``), and
    the registrar is a context manager (``with`` and ``async with``) that registers on entry.
    ``endpoints``, ``namespace``, ``username``/``password``, ``tls`` and ``timeout`` are
    those of ``etcd.Client``.

    >>> registrar = Registrar("/services/api", "10.0.0.7:8080", endpoints="127.0.0.1:2379", ttl=10)
    >>> registrar.key
    '/services/api/10.0.0.7:8080'
    >>> with registrar:  # doctest: +SKIP
    ...     serve_forever()
    """

    @renamed(verify=legacy_tls, cert=legacy_tls)
    def __init__(
        self,
        prefix: str,
        instance: Instance | str,
        *,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS,
        namespace: str | None = None,
        ttl: float | timedelta = 10.0,
        value: str | bytes | None = None,
        instance_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TLS = None,
        timeout: float | timedelta = 5.0,
        logger: Any = None,
    ) -> None:
        client = Client(endpoints, namespace=namespace, username=username, password=password, tls=tls, timeout=timeout)
        backend = Backend(client, logger=logger)
        self._setup(backend, key_prefix(client.namespace, prefix), instance, ttl, value, instance_id, None, logger)
        self._own = True

    @classmethod
    def _attached(
        cls,
        backend: Backend,
        prefix: str,
        instance: Instance | str,
        ttl: float | timedelta,
        name: str,
        logger: Any,
    ) -> Registrar:
        """A registrar on a backend shared with others (a ``Registry``'s), which it does not close."""
        self = cls.__new__(cls)
        self._setup(backend, prefix, instance, ttl, None, None, name, logger)
        return self

    def _setup(
        self,
        backend: Backend,
        prefix: str,
        instance: Instance | str,
        ttl: float | timedelta,
        value: str | bytes | None,
        instance_id: str | None,
        name: str | None,
        logger: Any,
    ) -> None:
        parsed = instance if isinstance(instance, Instance) else parse_instance(instance)
        requested = lease_seconds(ttl)
        if instance_id is None:
            instance_id = parsed.address
        elif not isinstance(instance_id, str) or not instance_id or "/" in instance_id:
            raise ValueError(f"invalid instance_id {instance_id!r}: it must be a non-empty string without '/'")
        if value is None:
            value = encode_value(parsed, name)
        elif not isinstance(value, str | bytes):
            raise TypeError(f"value must be a string or bytes, got {value!r}")
        self._lease_ttl = int(requested)
        super().__init__(backend, prefix, parsed, ttl=float(self._lease_ttl), logger=logger)
        self._etcd = backend
        self._client = backend.client
        self._key = prefix + instance_id
        self._value = value.encode() if isinstance(value, str) else value
        self._log = self._log.bind(key=self._key)

    @property
    def key(self) -> str:
        """The key registered (namespace included)."""
        return self._key

    @property
    def value(self) -> bytes:
        return self._value

    async def _grant(self) -> Lease:
        return await self._etcd.put_with_lease(self._service, self._instance, self._key, self._value, self._lease_ttl)

    def __repr__(self) -> str:
        return f"etcd.Registrar({self._key!r}, ttl={self.ttl:g})"
