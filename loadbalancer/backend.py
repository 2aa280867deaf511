"""The backend protocol for registries, and what is written once on it for every backend.

A registry backend (memory, etcd, Consul, Kubernetes, ...) implements ``Backend``: list a
service's instances with a cursor (an etcd revision, a Consul index, a resourceVersion),
watch from a cursor where it can (else it is polled), register an instance under a lease,
keep the lease alive, deregister, list services, report its own health, close. On it:

- ``Publisher(backend, service, factory=None, *, tags=...)``: list, then watch (or poll);
  on an error, publish the stale set, back off (a tenacity wait strategy), and resume the
  watch from the last cursor, or list again when the backend says the cursor is gone
  (``CursorExpiredError``): no change is lost or applied twice;
- ``Registrar(backend, service, instance, *, ttl=...)``: sync and async twins, ``with`` /
  ``async with``, keep-alive at a third of the TTL, re-registration after a lost lease,
  deregistration on close and at interpreter exit. Errors, the same for every backend:
  ``register()`` and ``deregister()`` raise when the registry cannot be told (the caller
  asked, and must know; a registration that could not be removed lapses with its lease);
  ``close()`` logs instead (it runs in ``finally`` blocks and at exit, where raising would
  hide the error that matters); keep-alive and re-registration failures are logged and
  retried in the background, never raised into unrelated code;
- ``Registry(backend)``: by service name, etcd-registry's ``join``/``leave``/``lookup``/
  ``list`` and farp's ``register``/``deregister``/``discover(name, tags=)``/``watch``/
  ``list_services``/``health``, each with an async twin where it does I/O.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

import tenacity

from . import _exit, _metrics
from ._backoff import Backoff
from ._bridge import await_on_runtime, wait_on_runtime
from ._discovery import DiscoveryPublisher, check_tags
from ._log import get_logger
from ._runtime import RUNTIME
from ._typing import E
from ._util import describe, seconds
from .errors import DiscoveryError
from .instance import Instance, parse_instance
from .publisher import Factory

__all__ = [
    "Backend",
    "Batch",
    "Change",
    "CursorExpiredError",
    "Health",
    "Lease",
    "LeaseLostError",
    "Listing",
    "Publisher",
    "Registrar",
    "Registry",
]

# Inside the classes below, the method ``list`` shadows the builtin.
_Instances = list[Instance]
_Names = list[str]
_Registrars = list["Registrar"]


@dataclass(frozen=True, slots=True)
class Listing:
    """A service's instances at one point: ``instances`` by key, and the ``cursor`` to watch from."""

    instances: Mapping[Hashable, Instance]
    cursor: Any = None


@dataclass(frozen=True, slots=True)
class Change:
    """One key changed: it holds ``instance`` now, or is gone (``None``); ``cursor``: where it happened, if known."""

    key: Hashable
    instance: Instance | None
    cursor: Any = None


@dataclass(frozen=True, slots=True)
class Batch:
    """What a watch yields: ``changes`` (maybe none) and the ``cursor`` the watch has reached with them.

    An empty batch says the watch is established or still alive (a progress notice): a
    stale set is fresh again, and a later resume may start from ``cursor``.
    """

    changes: Sequence[Change] = ()
    cursor: Any = None


@dataclass(frozen=True, slots=True)
class Lease:
    """What ``Backend.register`` returns: one registration, its ``ttl`` as granted, the backend's ``handle``.

    ``id`` is what users and logs see of it (an etcd lease ID, a Consul service ID).
    """

    service: str
    instance: Instance
    ttl: float
    handle: Any = None
    id: Any = None


@dataclass(frozen=True, slots=True)
class Health:
    """A registry's own health: ``healthy``, and what it said (``detail``)."""

    healthy: bool
    detail: Mapping[str, Any] = field(default_factory=dict)


def _order(key: Any) -> Any:
    return key


class CursorExpiredError(DiscoveryError):
    """The watch cannot resume from the cursor (compacted, 410 Gone): list again."""


class LeaseLostError(DiscoveryError):
    """The registration's lease or session is gone (expired, revoked): register again."""


class Backend(abc.ABC):
    """A service registry. Every method runs on the library's runtime loop.

    ``list`` is required; a backend that cannot watch leaves ``watch`` as it is (it is then
    polled every ``poll_interval`` seconds); one that cannot register leaves the
    registration methods raising ``NotImplementedError``.
    """

    name = "backend"
    poll_interval = 5.0

    @abc.abstractmethod
    async def list(self, service: str) -> Listing:
        """The instances of ``service`` now, with a cursor to watch from."""

    def watch(self, service: str, cursor: Any) -> AsyncIterator[Batch] | None:
        """Changes after ``cursor``, in batches, until the watch breaks (raises) or ends; ``None``: poll instead.

        Yield an empty batch once the watch is established: it tells the publisher that the
        registry answers again (a stale set is fresh again). Raise ``CursorExpiredError``
        when the watch cannot resume from ``cursor``: the publisher lists again.
        """
        return None

    def position(self, cursor: Any) -> Any:
        """A value that orders cursors (``None``: they are opaque, as a Kubernetes resourceVersion).

        Lets a publisher drop a refresh older than what it has, and changes that a newer
        read already reflects.
        """
        return None

    async def register(self, service: str, instance: Instance, ttl: float) -> Lease:
        """Register ``instance`` under ``service`` for ``ttl`` seconds unless kept alive."""
        raise NotImplementedError(f"the {self.name} backend cannot register instances")

    async def keepalive(self, lease: Lease) -> None:
        """Renew ``lease``; raise ``LeaseLostError`` if it is gone."""
        raise NotImplementedError(f"the {self.name} backend cannot register instances")

    async def deregister(self, lease: Lease) -> None:
        """Remove the registration (idempotent)."""
        raise NotImplementedError(f"the {self.name} backend cannot register instances")

    async def services(self) -> _Names:
        """The names of the services registered."""
        raise NotImplementedError(f"the {self.name} backend cannot list services")

    async def health(self) -> Health:
        """The registry's own health."""
        return Health(True)

    async def aclose(self) -> None:  # noqa: B027 - a backend without resources has nothing to close
        """Release connections."""

    def publisher(
        self,
        service: str,
        factory: Factory[E] | None = None,
        *,
        tags: Iterable[str] | str | None = None,
        **options: Any,
    ) -> DiscoveryPublisher[E] | None:
        """A publisher of the backend's own for ``service`` (event-driven), or ``None``: the generic one."""
        return None


# -- the generic discovery publisher ---------------------------------------------------------


class Publisher(DiscoveryPublisher[E]):
    """Follows ``service`` on ``backend``: list, then watch (or poll), publishing each change as it comes.

    A failure keeps the last good set (stale) and backs off (``wait``: a tenacity wait
    strategy; default exponential with full jitter up to ``max_backoff``); the watch then
    resumes from the last cursor seen, or the service is listed again if the backend says
    the cursor is gone. ``factory``, ``tags``, ``invalidate_after`` and ``close_delay`` as
    for every publisher; ``own_backend``: close ``backend`` when the publisher closes.
    """

    def __init__(
        self,
        backend: Backend,
        service: str,
        factory: Factory[E] | None = None,
        *,
        tags: Iterable[str] | str | None = None,
        wait: tenacity.wait.wait_base | None = None,
        max_backoff: float | timedelta = 5.0,
        logger: Any = None,
        invalidate_after: float | timedelta | None = None,
        close_delay: float | timedelta = 1.0,
        own_backend: bool = False,
    ) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a loadbalancer.backend.Backend, got {backend!r}")
        if not isinstance(service, str) or not service:
            raise ValueError(f"service must be a non-empty name, got {service!r}")
        super().__init__(
            factory,
            service=service,
            logger=logger,
            invalidate_after=invalidate_after,
            close_delay=close_delay,
            tags=tags,
        )
        self._log = self._log.bind(backend=backend.name)
        self._backend = backend
        self._backoff = Backoff(wait, cap=seconds(max_backoff, "max_backoff", allow_zero=False))
        self._cursor: Any = None  # where the changes applied stand
        self._published_cursor: Any = None  # where the published set stands
        self._pending = False  # changes applied, a commit scheduled
        self._own_backend = own_backend
        self._start(self._run())

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def cursor(self) -> Any:
        """Where the published set stands in the backend's history (``None`` before the first read)."""
        return self._published_cursor

    async def _refresh(self) -> None:
        try:
            await self._list(newer_only=True)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._publish_error(error)

    async def _list(self, *, newer_only: bool = False) -> None:
        listing = await self._backend.list(self._service)
        position = self._backend.position
        if newer_only and self._cursor is not None:
            new, old = position(listing.cursor), position(self._cursor)
            if new is not None and old is not None and new < old:
                return  # the watch has gone past this read
        with self._lock:
            self._reset(listing.instances.items())
            self._cursor = listing.cursor
        self._publish_now()

    def _publish_now(self) -> None:
        self._pending = False
        self._published_cursor = self._cursor  # before publishing: subscribers may read it
        self._commit()

    async def _run(self) -> None:
        try:
            await self._follow()
        finally:
            if self._own_backend:
                await self._backend.aclose()

    async def _follow(self) -> None:
        listed = False
        while not self._closed:
            try:
                if not listed:
                    await self._list()
                    listed = True
                stream = self._backend.watch(self._service, self._cursor)
                if stream is None:
                    self._backoff.reset()
                    await asyncio.sleep(self._backend.poll_interval)
                    listed = False
                    continue
                async with contextlib.aclosing(stream):  # type: ignore[type-var]
                    async for batch in stream:
                        self._apply(batch)
                    self._flush()
                listed = False  # the watch ended without an error: read afresh
            except asyncio.CancelledError:
                raise
            except CursorExpiredError as error:
                self._flush()
                self._log.info(self._event("resync"), cursor=self._cursor, reason=str(error))
                listed = False
            except Exception as error:
                self._flush()
                self._publish_error(error)
                delay = self._backoff.next()
                self._log.info(self._event("watch_failed"), error=describe(error), retry_in=round(delay, 3))
                await asyncio.sleep(delay)

    def _apply(self, batch: Batch) -> None:
        """Apply a watch's batch; publish once the watch has read what it already received.

        A burst of changes costs one publication, a lone change is published at once (the
        commit runs at the loop's next turn).
        """
        self._backoff.reset()
        position = self._backend.position
        base = None if self._cursor is None else position(self._cursor)
        changed = False
        with self._lock:
            for change in batch.changes:
                if base is not None and change.cursor is not None:
                    at = position(change.cursor)
                    if at is not None and at <= base:
                        continue  # a read after it already reflects it
                if change.instance is None:
                    self._delete(change.key)
                else:
                    self._put(change.key, change.instance)
                changed = True
            if batch.cursor is not None and (base is None or (position(batch.cursor) or 0) >= base):
                self._cursor = batch.cursor
        stale = self.last_error is not None
        if changed or stale:
            if not self._pending:
                self._pending = True
                asyncio.get_running_loop().call_soon(self._flush)
        elif not self._pending:
            self._published_cursor = self._cursor  # a progress notice: the set stands at the newer cursor

    def _flush(self) -> None:
        if self._pending and not self._closed:
            self._publish_now()

    def _event(self, what: str) -> str:
        return f"{self._backend.name}_{what}"

    def __repr__(self) -> str:
        return f"backend.Publisher({self._backend.name}, {self._service!r})"


# -- the generic registrar -------------------------------------------------------------------


class Registrar:
    """Keeps ``instance`` registered under ``service`` on ``backend`` while it lives.

    ``register()`` raises if the registration fails; after that the lease is renewed every
    half TTL (as granted) in the background, sooner after a failed renewal, and registered
    again if lost (all logged, never raised). ``deregister()`` removes it and raises the
    backend's error if the registry cannot be told (the registration then lapses with its
    lease); ``close()`` does the same but logs a failure instead; interpreter exit
    deregisters what is still registered. Sync and async twins: ``register``/``aregister``,
    ``deregister``/``aderegister``, ``close``/``aclose``, ``with`` and ``async with``.
    Events carry the backend's name: ``memory_registered``, ``etcd_lease_lost``, ...

    >>> from loadbalancer import memory
    >>> backend = memory.Backend()
    >>> with Registrar(backend, "api", "10.0.0.7:8080", ttl=10) as registrar:
    ...     registrar.registered
    True
    """

    def __init__(
        self,
        backend: Backend,
        service: str,
        instance: Instance | str,
        *,
        ttl: float | timedelta = 10.0,
        logger: Any = None,
        own_backend: bool = False,
    ) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a loadbalancer.backend.Backend, got {backend!r}")
        self._backend = backend
        self._service = service
        self._instance = instance if isinstance(instance, Instance) else parse_instance(instance)
        self._ttl = seconds(ttl, "ttl", allow_zero=False)
        self._log = get_logger(logger, name=type(self).__module__, service=service, instance=self._instance.address)
        self._own_backend = own_backend
        self._lease: Lease | None = None
        self._registered = False
        self.registrations = 0  # counters the metrics layer reads (loadbalancer.metrics)
        self.renewals = 0
        self.leases_lost = 0
        _metrics.register("registrar", self)
        self._keeper: asyncio.Task[None] | None = None
        self._busy: asyncio.Lock | None = None  # made on the runtime loop
        self._closed = False

    @property
    def instance(self) -> Instance:
        return self._instance

    @property
    def registered(self) -> bool:
        """Whether ``register()`` succeeded and no deregistration followed (re-registrations included)."""
        return self._registered

    @property
    def lease(self) -> Any:
        """The backend's id of the current lease (``None`` while not registered)."""
        return None if self._lease is None else self._lease.id

    @property
    def ttl(self) -> float:
        """The lease's time to live, as the registry granted it (as asked for, before registering)."""
        return self._ttl if self._lease is None else self._lease.ttl

    def register(self) -> None:
        """Register now; no-op if registered. Raises the backend's error on failure."""
        wait_on_runtime(self._register(), f"{self!r}.register()", "await registrar.aregister()")

    async def aregister(self) -> None:
        """Async form of ``register()``."""
        await await_on_runtime(self._register())

    def deregister(self) -> None:
        """Remove the registration; no-op if not registered. Raises the backend's error on failure."""
        wait_on_runtime(self._deregister(), f"{self!r}.deregister()", "await registrar.aderegister()")

    async def aderegister(self) -> None:
        """Async form of ``deregister()``."""
        await await_on_runtime(self._deregister())

    def close(self) -> None:
        """Deregister for good (a failure is logged, not raised) and release the backend if owned; idempotent."""
        wait_on_runtime(self._close(), f"{self!r}.close()", "await registrar.aclose()")

    async def aclose(self) -> None:
        """Async form of ``close()``."""
        await await_on_runtime(self._close())

    # -- what a backend's registrar may change ---------------------------------------------

    async def _grant(self) -> Lease:
        """Register with the backend (a new lease each time)."""
        return await self._backend.register(self._service, self._instance, self._ttl)

    def _event(self, what: str) -> str:
        return f"{self._backend.name}_{what}"

    # -- on the runtime --------------------------------------------------------------------

    def _lock(self) -> asyncio.Lock:
        if self._busy is None:
            self._busy = asyncio.Lock()
        return self._busy

    async def _register(self) -> None:
        async with self._lock():
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            if self._registered:
                return
            self._lease = await self._grant()
            self.registrations += 1
            self._registered = True
            _exit.track(self)
            self._keeper = asyncio.get_running_loop().create_task(self._keep(), name=f"keepalive {self!r}")
        self._log.info(self._event("registered"), lease=self.lease, ttl=self.ttl)

    async def _keep(self) -> None:
        delay = self.ttl / 2
        while True:
            await asyncio.sleep(delay)
            lease = self._lease
            try:
                if lease is None:  # lost, and registering again failed last time
                    self._lease = await self._grant()
                    self._log.info(self._event("reregistered"), lease=self.lease, ttl=self.ttl)
                else:
                    try:
                        await self._backend.keepalive(lease)
                        self.renewals += 1
                    except LeaseLostError as error:
                        self.leases_lost += 1
                        self._log.warning(self._event("lease_lost"), lease=lease.id, error=describe(error))
                        self._lease = None
                        self._lease = await self._grant()
                        self._log.info(self._event("reregistered"), lease=self.lease, ttl=self.ttl)
                delay = self.ttl / 2
            except Exception as error:  # the registry's error, or a reply not as documented: keep trying
                self._log.warning(self._event("keepalive_failed"), lease=None if lease is None else lease.id,
                                  error=describe(error))  # fmt: skip
                delay = min(self.ttl / 4, 1.0)  # again soon: the lease runs out meanwhile

    async def _deregister(self) -> None:
        async with self._lock():
            if not self._registered:
                return
            keeper, self._keeper = self._keeper, None
            if keeper is not None:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
            self._registered = False
            _exit.untrack(self)
            lease, self._lease = self._lease, None
            if lease is None:
                return
            try:
                await self._backend.deregister(lease)
            except Exception as error:
                self._log.warning(
                    self._event("deregister_failed"),
                    lease=lease.id,
                    error=describe(error),
                    note=f"it lapses with its lease ({lease.ttl:g}s)",
                )
                raise
        self._log.info(self._event("deregistered"), lease=lease.id)

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._deregister()
        except Exception as error:
            self._log.warning(self._event("close_incomplete"), error=describe(error))
        finally:
            if self._own_backend:
                await self._backend.aclose()

    async def _at_exit(self) -> None:
        with contextlib.suppress(Exception):
            await self._deregister()

    def __enter__(self) -> Self:
        self.register()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        await self.aregister()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "registered" if self._registered else "not registered"
        return f"Registrar({self._backend.name}, {self._service!r}, {self._instance.address!r}, {state})"


# -- the registry facade ---------------------------------------------------------------------


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
            await publisher.ready_wait(ready_timeout)
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
