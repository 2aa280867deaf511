"""The registry facade by service name, written once on the backend protocol."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from .._bridge import await_on_runtime, wait_on_runtime
from .._discovery import DiscoveryPublisher, check_tags
from .._runtime import RUNTIME
from .._typing import E
from .._util import seconds
from ..instance import Instance, parse_instance
from ..publisher import Factory
from ._protocol import Backend, Health
from ._publisher import Publisher
from ._registrar import Registrar

__all__ = ["Registry"]

# Inside the class below, the method ``list`` shadows the builtin.
_Instances = list[Instance]
_Names = list[str]
_Registrars = list[Registrar]


def _order(key: Any) -> Any:
    return key  # the keys' own order (a backend's keys sort, but Hashable does not say so)


class Registry:
    """A registry by service name over ``backend`` (etcd-registry's and farp's vocabulary in one).

    - ``register(name, instance, ttl=)`` / ``join`` keep ``instance`` registered (a
      ``Registrar``, returned); ``deregister(name, instance=None)`` / ``leave`` remove what
      this registry registered under ``name``;
    - ``discover(name, tags=())`` / ``list`` return the instances now (those carrying every
      tag); ``lookup(name)`` one at random (``None`` when there is none);
    - ``watch(name, factory=None, tags=())`` a publisher following ``name``;
    - ``list_services()``, ``health()``; async twins ``a...`` for each that does I/O;
    - ``close()`` deregisters everything and closes the backend.
    """

    def __init__(self, backend: Backend, *, ttl: float | timedelta = 10.0, logger: Any = None) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a loadbalancer.backend.Backend, got {backend!r}")
        self._backend = backend
        self._ttl = seconds(ttl, "ttl", allow_zero=False)
        self._logger = logger
        self._registered: dict[str, _Registrars] = {}
        self._closed = False

    @property
    def backend(self) -> Backend:
        return self._backend

    # registering
    def register(self, name: str, instance: Instance | str, *, ttl: float | timedelta | None = None) -> Registrar:
        """Register ``instance`` as one of ``name``'s and keep it registered; returns its registrar."""
        registrar = self._registrar(name, instance, ttl)
        registrar.register()
        self._registered.setdefault(name, []).append(registrar)
        return registrar

    async def aregister(
        self, name: str, instance: Instance | str, *, ttl: float | timedelta | None = None
    ) -> Registrar:
        """Async form of ``register()``."""
        registrar = self._registrar(name, instance, ttl)
        await registrar.aregister()
        self._registered.setdefault(name, []).append(registrar)
        return registrar

    join, ajoin = register, aregister

    def deregister(self, name: str, instance: Instance | str | None = None) -> None:
        """Remove what this registry registered under ``name`` (only ``instance``, if given)."""
        for registrar in self._take(name, instance):
            registrar.close()

    async def aderegister(self, name: str, instance: Instance | str | None = None) -> None:
        """Async form of ``deregister()``."""
        for registrar in self._take(name, instance):
            await registrar.aclose()

    leave, aleave = deregister, aderegister

    def _registrar(self, name: str, instance: Instance | str, ttl: float | timedelta | None) -> Registrar:
        if self._closed:
            raise RuntimeError("the registry is closed")
        return Registrar(self._backend, name, instance, ttl=self._ttl if ttl is None else ttl, logger=self._logger)

    def _take(self, name: str, instance: Instance | str | None) -> list[Registrar]:
        wanted = (
            None if instance is None else (instance if isinstance(instance, Instance) else parse_instance(instance))
        )
        mine = self._registered.get(name, [])
        taken = [r for r in mine if wanted is None or r.instance.address == wanted.address]
        self._registered[name] = [r for r in mine if r not in taken]
        return taken

    # reading
    def discover(self, name: str, tags: Iterable[str] | str | None = None) -> _Instances:
        """The instances of ``name`` now (those carrying every tag in ``tags``), in key order."""
        return wait_on_runtime(self._discover(name, tags), "Registry.discover()", "await registry.adiscover()")

    async def adiscover(self, name: str, tags: Iterable[str] | str | None = None) -> _Instances:
        """Async form of ``discover()``."""
        return await await_on_runtime(self._discover(name, tags))

    list, alist = discover, adiscover

    async def _discover(self, name: str, tags: Iterable[str] | str | None) -> _Instances:
        wanted = check_tags(tags)
        listing = await self._backend.list(name)
        found = listing.instances
        return [found[k] for k in sorted(found, key=_order) if wanted.issubset(found[k].tags)]

    def lookup(self, name: str) -> Instance | None:
        """One instance of ``name`` at random; ``None`` when it has none."""
        found = self.discover(name)
        return random.choice(found) if found else None

    async def alookup(self, name: str) -> Instance | None:
        """Async form of ``lookup()``."""
        found = await self.adiscover(name)
        return random.choice(found) if found else None

    def watch(
        self,
        name: str,
        factory: Factory[E] | None = None,
        *,
        tags: Iterable[str] | str | None = None,
        ready_timeout: float | None = 5.0,
        **options: Any,
    ) -> DiscoveryPublisher[E]:
        """A publisher following ``name``: the backend's own, or ``backend.Publisher`` (options as for it).

        It returns once the registry's first answer is in, so that a pick can follow at
        once (or after ``ready_timeout`` seconds; ``None``: at once); the publisher goes on
        either way. ``await awatch()`` waits without blocking an event loop.
        """
        publisher = self._follow(name, factory, tags, options)
        if ready_timeout is not None and not RUNTIME.in_loop_thread():
            publisher.wait_ready(ready_timeout)
        return publisher

    async def awatch(
        self,
        name: str,
        factory: Factory[E] | None = None,
        *,
        tags: Iterable[str] | str | None = None,
        ready_timeout: float | None = 5.0,
        **options: Any,
    ) -> DiscoveryPublisher[E]:
        """Async form of ``watch()``."""
        publisher = self._follow(name, factory, tags, options)
        if ready_timeout is not None:
            await publisher.await_ready(ready_timeout)
        return publisher

    def _follow(
        self, name: str, factory: Factory[E] | None, tags: Iterable[str] | str | None, options: dict[str, Any]
    ) -> DiscoveryPublisher[E]:
        options.setdefault("logger", self._logger)
        own = self._backend.publisher(name, factory, tags=tags, **options)
        return Publisher(self._backend, name, factory, tags=tags, **options) if own is None else own

    def list_services(self) -> _Names:
        """The names of the services registered."""
        return wait_on_runtime(self._backend.services(), "Registry.list_services()", "its async form")

    async def alist_services(self) -> _Names:
        """Async form of ``list_services()``."""
        return await await_on_runtime(self._backend.services())

    def health(self) -> Health:
        """The registry's own health."""
        return wait_on_runtime(self._backend.health(), "Registry.health()", "await registry.ahealth()")

    async def ahealth(self) -> Health:
        """Async form of ``health()``."""
        return await await_on_runtime(self._backend.health())

    # closing
    def _all(self) -> _Registrars:
        self._closed = True
        registered, self._registered = self._registered, {}
        return [r for rs in registered.values() for r in rs]

    def close(self) -> None:
        """Deregister everything this registry registered and close the backend; idempotent."""
        for registrar in self._all():
            registrar.close()
        wait_on_runtime(self._backend.aclose(), "Registry.close()", "await registry.aclose()")

    async def aclose(self) -> None:
        """Async form of ``close()``."""
        for registrar in self._all():
            await registrar.aclose()
        await await_on_runtime(self._backend.aclose())

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
        return f"Registry({self._backend.name})"
