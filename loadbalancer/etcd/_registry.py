"""``etcd.Registry``: join, leave, look up and list services by name, on one connection string."""

from __future__ import annotations

import base64
import random
import ssl
import threading
from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from .._bridge import await_on_runtime, wait_on_runtime
from .._log import get_logger
from .._util import seconds
from ..errors import InvalidInstanceError
from ..instance import Instance, parse_instance
from ..publisher import Factory
from ._client import Client, b64, key_prefix, parse_endpoints, range_end
from ._publisher import Publisher
from ._registrar import Registrar
from ._values import parse_value

__all__ = ["Registry"]

E = TypeVar("E")
# Inside the class, the method ``list`` shadows the builtin.
_Instances = list[Instance]
_Registrars = list[Registrar]


class Registry:
    """A service registry on etcd, addressed by one connection string, in the manner of etcd-registry.

    ``connection`` is ``"[http[s]://]host[:port][,host[:port]...][/namespace]"`` (or a
    sequence of member URLs). Service ``name``'s instances live under
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

    >>> registry = Registry("http://127.0.0.1:2379/my-namespace")
    >>> registry.join("api", "10.0.0.7:8080", ttl=10)  # doctest: +SKIP
    etcd.Registrar('/my-namespace/services/api/10.0.0.7:8080', ttl=10)
    >>> registry.lookup("api")  # doctest: +SKIP
    Instance(host='10.0.0.7', port=8080)
    >>> registry.close()
    """

    def __init__(
        self,
        connection: str | Sequence[str] = "127.0.0.1:2379",
        *,
        prefix: str = "/services",
        ttl: float | timedelta = 10.0,
        username: str | None = None,
        password: str | None = None,
        verify: bool | str | ssl.SSLContext = True,
        cert: str | tuple[str, str] | None = None,
        timeout: float | timedelta = 5.0,
        logger: Any = None,
    ) -> None:
        parsed = parse_endpoints(connection)
        self._root = key_prefix(parsed.namespace, prefix)  # "/ns/services/"
        self._ttl = seconds(ttl, "ttl", allow_zero=False)
        timeout_ = seconds(timeout, "timeout", allow_zero=False)
        self._options: dict[str, Any] = {
            "endpoints": parsed.members,
            "username": username,
            "password": password,
            "verify": verify,
            "cert": cert,
            "timeout": timeout_,
            "logger": logger,
        }
        self._client = Client(parsed, username=username, password=password, verify=verify, cert=cert, timeout=timeout_)
        self._logger = logger
        self._log = get_logger(logger, registry=self._root)
        self._joined: dict[str, list[Registrar]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def prefix(self, name: str) -> str:
        """The key prefix of service ``name``'s instances (``"/ns/services/api/"``)."""
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"invalid service name {name!r}: it must be a non-empty string without '/'")
        return f"{self._root}{name}/"

    # -- join and leave --------------------------------------------------------------------

    def join(self, name: str, instance: Instance | str, *, ttl: float | timedelta | None = None) -> Registrar:
        """Register ``instance`` as one of service ``name``'s and keep it registered; returns its registrar."""
        registrar = self._registrar(name, instance, ttl)
        registrar.register()
        self._add(name, registrar)
        return registrar

    async def ajoin(self, name: str, instance: Instance | str, *, ttl: float | timedelta | None = None) -> Registrar:
        """Async form of ``join()``."""
        registrar = self._registrar(name, instance, ttl)
        await registrar.aregister()
        self._add(name, registrar)
        return registrar

    def leave(self, name: str, instance: Instance | str | None = None) -> None:
        """Deregister what this registry joined under ``name`` (only ``instance``, if given)."""
        for registrar in self._take(name, instance):
            registrar.close()

    async def aleave(self, name: str, instance: Instance | str | None = None) -> None:
        """Async form of ``leave()``."""
        for registrar in self._take(name, instance):
            await registrar.aclose()

    def _registrar(self, name: str, instance: Instance | str, ttl: float | timedelta | None) -> Registrar:
        if self._closed:
            raise RuntimeError("the registry is closed")
        return Registrar._attached(
            self._client, self.prefix(name), instance, self._ttl if ttl is None else ttl, name, self._logger
        )

    def _add(self, name: str, registrar: Registrar) -> None:
        with self._lock:
            self._joined.setdefault(name, []).append(registrar)

    def _take(self, name: str, instance: Instance | str | None) -> _Registrars:
        wanted = None
        if instance is not None:
            wanted = (instance if isinstance(instance, Instance) else parse_instance(instance)).address
        with self._lock:
            joined = self._joined.get(name, [])
            taken = [r for r in joined if wanted is None or r.instance.address == wanted]
            kept = [r for r in joined if r not in taken]
            if kept:
                self._joined[name] = kept
            else:
                self._joined.pop(name, None)
        return taken

    # -- reading ---------------------------------------------------------------------------

    def list(self, name: str) -> _Instances:
        """Every instance of service ``name`` now, in key order (malformed values are skipped and logged)."""
        return wait_on_runtime(self._list(name), "Registry.list()")

    async def alist(self, name: str) -> _Instances:
        """Async form of ``list()``."""
        return await await_on_runtime(self._list(name))

    def lookup(self, name: str) -> Instance | None:
        """One instance of service ``name``, chosen at random; ``None`` when it has none."""
        found = self.list(name)
        return random.choice(found) if found else None

    async def alookup(self, name: str) -> Instance | None:
        """Async form of ``lookup()``."""
        found = await self.alist(name)
        return random.choice(found) if found else None

    async def _list(self, name: str) -> _Instances:
        prefix = self.prefix(name)
        raw = prefix.encode()
        reply = await self._client.call(
            "/v3/kv/range", {"key": b64(raw), "range_end": b64(range_end(raw))}, what="range", key=prefix
        )
        found: _Instances = []
        for kv in reply.get("kvs", ()):
            value = base64.b64decode(kv.get("value", ""))
            try:
                found.append(parse_value(value))
            except InvalidInstanceError as error:
                self._log.error(
                    "etcd_value_invalid",
                    key=base64.b64decode(kv["key"]).decode(errors="backslashreplace"),
                    value=value.decode(errors="backslashreplace")[:500],
                    error=error.reason,
                )
        return found

    def publisher(self, name: str, factory: Factory[E], **options: Any) -> Publisher[E]:
        """An ``etcd.Publisher`` following service ``name`` on this registry's cluster (its own connections).

        ``options`` go to the publisher (``keepalive=``, ``close_delay=``, ...).
        """
        settings = {**self._options, **options}
        return Publisher(self.prefix(name), factory, **settings)

    # -- closing ---------------------------------------------------------------------------

    def _leave_all(self) -> _Registrars:
        with self._lock:
            self._closed = True
            joined, self._joined = self._joined, {}
        return [registrar for registrars in joined.values() for registrar in registrars]

    def close(self) -> None:
        """Leave every service joined and release the connections; idempotent."""
        for registrar in self._leave_all():
            registrar.close()
        wait_on_runtime(self._client.aclose(), "Registry.close()")

    async def aclose(self) -> None:
        """Async form of ``close()``."""
        for registrar in self._leave_all():
            await registrar.aclose()
        await await_on_runtime(self._client.aclose())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"etcd.Registry({','.join(self._client.members)!r}, prefix={self._root!r})"
