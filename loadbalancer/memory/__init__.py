"""An in-process service registry: for tests, and for applications that live in one process.

``memory.Backend()`` is a registry held in memory, on the same backend protocol as the
network registries: register an instance under a TTL lease (it expires unless kept alive),
deregister, list, watch every change from a cursor, list the services. Build the usual
pieces on it::

    from loadbalancer import RoundRobin, memory

    registry = memory.Registry()                 # its own memory.Backend
    registry.register("api", "127.0.0.1:8080", ttl=10)
    lb = RoundRobin(registry.watch("api"))       # a publisher of Instances (no factory)
    lb.endpoint()                                # Instance(host='127.0.0.1', port=8080)

``memory.Publisher(backend, service, factory=None, *, tags=...)`` and
``memory.Registrar(backend, service, instance, *, ttl=...)`` are the generic
``loadbalancer.backend`` ones; changes reach publishers at once, one by one (no re-read).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
from collections.abc import AsyncIterator
from typing import Any

from ..backend import (
    Backend as _Backend,
)
from ..backend import (
    Batch,
    Change,
    CursorExpiredError,
    Health,
    Lease,
    LeaseLostError,
    Listing,
    Publisher,
    Registrar,
)
from ..backend import (
    Registry as _Registry,
)
from ..instance import Instance

__all__ = ["Backend", "Publisher", "Registrar", "Registry", "default_backend"]

_Names = list[str]  # the method ``list`` shadows the builtin in the class
_HISTORY = 10_000  # changes kept for watches to resume from; older cursors list again


class _Entry:
    __slots__ = ("instance", "timer")

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.timer: asyncio.TimerHandle | None = None


class Backend(_Backend):
    """A registry in this process's memory. Every method runs on the library's runtime loop.

    Keys are lease ids, so a service's instances are listed in registration order; the
    cursor is a revision counting every change. ``history`` changes are kept for watches
    to resume from (an older cursor gets ``CursorExpiredError``: the publisher lists again).
    """

    name = "memory"

    def __init__(self, *, history: int = _HISTORY) -> None:
        self._services: dict[str, dict[int, _Entry]] = {}
        self._revision = 0
        self._history: collections.deque[tuple[int, str, Change]] = collections.deque(maxlen=history)
        self._ids = itertools.count(1)
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _record(self, service: str, key: int, instance: Instance | None) -> None:
        self._revision += 1
        self._history.append((self._revision, service, Change(key, instance, self._revision)))
        condition = self._condition()
        async with condition:
            condition.notify_all()

    def position(self, cursor: Any) -> Any:
        return cursor

    async def list(self, service: str) -> Listing:
        entries = self._services.get(service, {})
        return Listing({key: entry.instance for key, entry in entries.items()}, self._revision)

    async def watch(self, service: str, cursor: Any) -> AsyncIterator[Batch]:
        seen = int(cursor or 0)
        condition = self._condition()
        yield Batch((), seen)  # established
        while True:
            if self._history and seen < self._history[0][0] - 1:
                raise CursorExpiredError(f"memory registry: revision {seen} is no longer kept")
            changes = [change for revision, name, change in self._history if revision > seen and name == service]
            seen = self._revision
            if changes:
                yield Batch(changes, seen)
                continue
            async with condition:
                if self._revision == seen:
                    await condition.wait()

    async def register(self, service: str, instance: Instance, ttl: float) -> Lease:
        key = next(self._ids)
        entry = _Entry(instance)
        self._services.setdefault(service, {})[key] = entry
        lease = Lease(service, instance, ttl, key, key)
        self._arm(lease, entry)
        await self._record(service, key, instance)
        return lease

    def _arm(self, lease: Lease, entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_later(lease.ttl, lambda: loop.create_task(self._expire(lease)))

    async def _expire(self, lease: Lease) -> None:
        entries = self._services.get(lease.service, {})
        if entries.pop(lease.handle, None) is not None:
            await self._record(lease.service, lease.handle, None)

    async def keepalive(self, lease: Lease) -> None:
        entry = self._services.get(lease.service, {}).get(lease.handle)
        if entry is None:
            raise LeaseLostError(f"memory registry: the lease of {lease.instance} under {lease.service!r} expired")
        self._arm(lease, entry)

    async def deregister(self, lease: Lease) -> None:
        entry = self._services.get(lease.service, {}).pop(lease.handle, None)
        if entry is not None:
            if entry.timer is not None:
                entry.timer.cancel()
            await self._record(lease.service, lease.handle, None)

    async def services(self) -> _Names:
        return sorted(name for name, entries in self._services.items() if entries)

    async def health(self) -> Health:
        return Health(True, {"services": len(self._services), "revision": self._revision})

    def __repr__(self) -> str:
        return f"memory.Backend({sum(len(e) for e in self._services.values())} instances)"


_default: Backend | None = None
_default_lock = threading.Lock()


def default_backend() -> Backend:
    """The process-wide ``memory.Backend`` that every ``memory:///name`` target shares.

    A registrar and a publisher of the same ``memory:`` target meet in it; pass
    ``backend=`` to ``targets.publisher()`` / ``targets.registrar()`` to use another.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = Backend()
        return _default


class Registry(_Registry):
    """The registry facade (``loadbalancer.backend.Registry``) over a ``memory.Backend`` (its own by default)."""

    def __init__(self, backend: Backend | None = None, **options: Any) -> None:
        super().__init__(Backend() if backend is None else backend, **options)
