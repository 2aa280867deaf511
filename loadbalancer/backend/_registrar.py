"""The generic registrar, written once on the backend protocol."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from .. import _exit, _metrics
from .._bridge import await_on_runtime, wait_on_runtime
from .._deprecated import renamed
from .._log import get_logger
from .._util import describe, seconds
from ..instance import Instance, parse_instance
from ._protocol import Backend, Lease, LeaseLostError

__all__ = ["Registrar"]


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

    @renamed(own_backend="own")
    def __init__(
        self,
        backend: Backend,
        service: str,
        instance: Instance | str,
        *,
        ttl: float | timedelta = 10.0,
        logger: Any = None,
        own: bool = False,
    ) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a loadbalancer.backend.Backend, got {backend!r}")
        self._backend = backend
        self._service = service
        self._instance = instance if isinstance(instance, Instance) else parse_instance(instance)
        self._ttl = seconds(ttl, "ttl", allow_zero=False)
        self._log = get_logger(logger, name=type(self).__module__, service=service, instance=self._instance.address)
        self._own = own
        self._lease: Lease | None = None
        self._registered = False
        self.registrations = 0  # counters the metrics layer reads (loadbalancer.metrics)
        self.renewals = 0
        self.leases_lost = 0
        _metrics.register("registrar", self)
        self._keeper: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None  # set by ``_check_soon()``; made on the runtime loop
        self._busy: asyncio.Lock | None = None  # made on the runtime loop
        self._closed = False

    @property
    def instance(self) -> Instance:
        return self._instance

    @property
    def service(self) -> str:
        """The service the instance is registered under."""
        return self._service

    @property
    def backend(self) -> Backend:
        """The registry it is registered in."""
        return self._backend

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

    def _check_soon(self) -> None:
        """Renew now rather than at the next half TTL (on the runtime loop).

        For a backend that learns of a lost lease by an event (ZooKeeper's new session):
        registering again then waits for no timer.
        """
        if self._wake is not None:
            self._wake.set()

    async def _pause(self, delay: float) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()

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
            await self._pause(delay)
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
            if self._own:
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
