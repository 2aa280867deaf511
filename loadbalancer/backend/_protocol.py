"""The backend protocol: what a registry implements, and the values it exchanges."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._discovery import DiscoveryPublisher
from .._typing import E
from ..errors import DiscoveryError
from ..instance import Instance
from ..publisher import Factory

__all__ = ["Backend", "Batch", "Change", "CursorExpiredError", "Health", "Lease", "LeaseLostError", "Listing"]

# Inside the class below, the method ``list`` shadows the builtin.
_Names = list[str]


@dataclass(frozen=True, slots=True)
class Listing:
    """A service's instances at one point: ``instances`` by key, and the ``cursor`` to watch from.

    ``ttl``: how many seconds the source says this answer holds (a DNS record's TTL, an HTTP
    ``max-age``), if it says; a polling publisher told to ``follow_ttl`` reads again after it.
    """

    instances: Mapping[Hashable, Instance]
    cursor: Any = None
    ttl: float | None = None


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


class CursorExpiredError(DiscoveryError):
    """The watch cannot resume from the cursor (compacted, 410 Gone): list again."""


class LeaseLostError(DiscoveryError):
    """The registration's lease or session is gone (expired, revoked): register again."""


class Backend(abc.ABC):
    """A service registry. Every method runs on the library's runtime loop.

    ``list`` is required; a backend that cannot watch leaves ``watch`` as it is (it is then
    polled every ``poll_interval`` seconds, and may offer ``revalidate``, a cheaper check
    than listing again); one that cannot register leaves the registration methods raising
    ``NotImplementedError``.
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

    def revalidate(
        self, service: str, cursor: Any, done: Callable[[Listing | None], object]
    ) -> Callable[[], object] | None:
        """Start a poll cheaper than ``list`` (a conditional GET, a DNS re-query); ``None``: the backend has none.

        A polled backend's publisher asks this first when a poll is due. Call ``done`` once,
        later, on the runtime loop: with a ``Listing`` when the answer is known without a
        full read (the one read at ``cursor`` if nothing changed: its ``instances`` the same
        object, so nothing is published again, its ``cursor`` and ``ttl`` maybe new; or a
        new one), or with ``None`` when not sure: the publisher lists. Return a function
        that cancels the check (``done`` is then not called). Callbacks rather than a
        coroutine: a backend polled often and by the thousand should not pay for a task or
        a future per poll; others may run a coroutine with ``asyncio.ensure_future`` and
        call ``done`` from its done callback.
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
