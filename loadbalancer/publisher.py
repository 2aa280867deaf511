"""The ``Publisher`` base: the latest snapshot of a service's endpoints and its subscribers.

A publisher has three jobs, each in its own room:

- this module: the snapshot (an immutable ``EndpointSet``), its subscribers, readiness (has
  the source been read yet?), background work and closing. Every publisher is one of these,
  the filters (``OutlierDetector``, ``HealthChecker``) included;
- ``_endpoints.EndpointCache``: the factory, reuse of unchanged instances' endpoints, and
  delayed closing of departed ones;
- ``_discovery.DiscoveryPublisher``: an instance source (a backend) feeding the cache, with
  stale-on-error, invalidation, tags and on-demand refresh.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, Generic, Self

from . import _metrics
from ._bridge import wait_on_runtime
from ._deprecated import warn
from ._log import get_logger
from ._runtime import RUNTIME
from ._typing import E
from ._util import describe, seconds
from .instance import Instance

__all__ = ["EndpointSet", "Factory", "Publisher", "Subscription"]

Factory = Callable[[str], E] | Callable[[Instance], E]
"""Turns an instance into an endpoint (any object; usually a callable).

It receives the instance's ``"host:port"``, or the ``Instance`` itself (weight, tags,
metadata) when its first parameter is annotated ``Instance``.
"""


class EndpointSet(tuple[E, ...]):
    """An immutable snapshot of a publisher's endpoints, in the source's order.

    It is a tuple of endpoints; ``instances`` holds the ``Instance`` each endpoint was made
    for, index for index. ``error`` is set when the set is stale: the last refresh failed and
    this is the last good set (or an empty set if no refresh has ever succeeded).
    """

    instances: tuple[Instance, ...]
    error: BaseException | None

    def __new__(
        cls,
        endpoints: Iterable[E] = (),
        instances: Iterable[Instance] = (),
        error: BaseException | None = None,
    ) -> EndpointSet[E]:
        self = super().__new__(cls, endpoints)
        self.instances = tuple(instances)
        self.error = error
        if len(self.instances) != len(self):
            raise ValueError("an EndpointSet needs exactly one instance per endpoint")
        return self

    @property
    def stale(self) -> bool:
        """Whether the last refresh failed (the set is the last good one)."""
        return self.error is not None

    def __repr__(self) -> str:
        stale = f", stale: {describe(self.error)}" if self.error is not None else ""
        return f"EndpointSet([{', '.join(map(str, self.instances))}]{stale})"


# What ``endpoints()`` returns before the source has been read (``publisher.ready`` is false).
UNREAD: EndpointSet[Any] = EndpointSet()


class Subscription:
    """Returned by ``Publisher.subscribe``; ``unsubscribe()`` or leave the ``with`` block to stop."""

    __slots__ = ("_key", "_publisher")

    def __init__(self, publisher: Publisher[Any], key: int) -> None:
        self._publisher: Publisher[Any] | None = publisher
        self._key = key

    def unsubscribe(self) -> None:
        """Stop receiving updates (idempotent)."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher._unsubscribe(self._key)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()


class Publisher(Generic[E]):
    """Publishes the latest set of endpoints of a service to its subscribers.

    ``endpoints()`` is the latest snapshot; ``subscribe(callback)`` is called at once with
    it (once the source has been read) and after every change; ``async for endpoints in
    publisher.updates()`` iterates them. ``ready`` says whether the source has answered
    yet (with instances, with none, or with an error); ``wait_ready(timeout)`` and ``await
    publisher.await_ready()`` wait for that first answer.

    >>> from loadbalancer import static
    >>> with static.Publisher(["10.0.0.1:80", "10.0.0.2:80"]) as p:
    ...     [str(instance) for instance in p.endpoints()]
    ['10.0.0.1:80', '10.0.0.2:80']
    """

    def __init__(self, *, service: str, logger: Any = None, log_name: str | None = None) -> None:
        self._service = service
        self._log = get_logger(logger, name=log_name or type(self).__module__, service=service)
        self._lock = threading.RLock()
        self._next_key = itertools.count()
        self._subscribers: dict[int, Callable[[EndpointSet[E]], object]] = {}
        self._current: EndpointSet[E] | None = None
        self._ready = threading.Event()
        self._closed = False
        self._task: concurrent.futures.Future[None] | None = None
        self._reads: set[concurrent.futures.Future[object]] = set()  # on-demand reads in progress
        self._reads_lock = threading.Lock()
        self.sets_published = 0  # a counter the metrics layer reads (loadbalancer.metrics)
        _metrics.register("publisher", self)

    # -- reading ---------------------------------------------------------------------------

    def endpoints(self) -> EndpointSet[E]:
        """The latest snapshot (empty until the source has been read: see ``ready``)."""
        current = self._current
        return UNREAD if current is None else current

    @property
    def service(self) -> str:
        """What this publisher discovers (a DNS name, a key prefix, a service name)."""
        return self._service

    @property
    def last_error(self) -> BaseException | None:
        """The most recent refresh failure; cleared by the next good refresh."""
        current = self._current
        return None if current is None else current.error

    @property
    def closed(self) -> bool:
        """Whether ``close()`` or ``aclose()`` has been called."""
        return self._closed

    @property
    def ready(self) -> bool:
        """Whether the source has answered at least once (instances, none, or an error), or the publisher is closed."""
        return self._ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (``None``: for ever) for the source's first answer; return ``ready``.

        Not callable on the library's runtime thread, which reads the sources (use ``await
        await_ready()`` there).
        """
        if self._ready.is_set():
            return True
        if RUNTIME.in_loop_thread():
            raise RuntimeError(
                f"{self!r}.wait_ready() would block the library's runtime thread, which reads the source;"
                " use `await publisher.await_ready()` in a coroutine there"
            )
        limit = None if timeout is None else seconds(timeout, "timeout")
        return self._ready.wait(limit)

    async def ready_wait(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - wait_ready's twin
        """Deprecated name of ``await_ready()``."""
        warn("publisher.ready_wait() is deprecated: write await publisher.await_ready()")
        return await self.await_ready(timeout)

    async def await_ready(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - wait_ready's twin
        """Async form of ``wait_ready()``, callable from any event loop."""
        if self._ready.is_set():
            return True
        limit = None if timeout is None else seconds(timeout, "timeout")
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def on_ready(_: object) -> None:
            loop.call_soon_threadsafe(settle)

        with self.subscribe(on_ready):
            if self._closed:
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limit):
                    await done
        return self._ready.is_set()

    def subscribe(self, callback: Callable[[EndpointSet[E]], object]) -> Subscription:
        """Call ``callback(endpoints)`` now with the current set, if one is known, then on every change.

        Callbacks run on the thread that made the change, one at a time and in order; keep
        them short. One that raises is logged and does not stop the others.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        with self._lock:
            key = next(self._next_key)
            self._subscribers = {**self._subscribers, key: callback}
            if self._current is not None:
                self._notify(callback, self._current)
        return Subscription(self, key)

    def _unsubscribe(self, key: int) -> None:
        with self._lock:
            self._subscribers = {k: v for k, v in self._subscribers.items() if k != key}

    async def updates(self) -> AsyncIterator[EndpointSet[E]]:
        """Iterate over the current set, then each new one; ends when the publisher closes.

        For example::

            async for endpoints in publisher.updates():
                print(len(endpoints), "endpoints")


        A slow consumer skips intermediate sets: it always gets the latest.
        """
        loop = asyncio.get_running_loop()
        latest: list[EndpointSet[E]] = []
        changed = asyncio.Event()

        def deliver(endpoints: EndpointSet[E]) -> None:
            latest[:] = [endpoints]
            changed.set()

        def on_update(endpoints: EndpointSet[E]) -> None:
            try:
                loop.call_soon_threadsafe(deliver, endpoints)
            except RuntimeError:  # the consumer's loop is closed
                pass

        with self.subscribe(on_update):
            while True:
                if latest:
                    yield latest.pop()
                elif self._closed:
                    return
                else:
                    await changed.wait()
                    changed.clear()

    def refresh(self) -> EndpointSet[E]:
        """Read the source now where it can be read on demand, wait, and return the latest set.

        A failed read leaves the last good set in place: check ``.stale`` on the result, or
        ``last_error``. A read already in progress is waited for rather than repeated. Not
        callable on the library's runtime thread: use ``await arefresh()`` there.
        """
        future = self._submit_refresh()
        if future is not None:
            with contextlib.suppress(concurrent.futures.CancelledError):  # closed meanwhile
                wait_on_runtime(future, f"{self!r}.refresh()", "await publisher.arefresh()")
        return self.endpoints()

    async def arefresh(self) -> EndpointSet[E]:
        """Async form of ``refresh()``, callable from any event loop (the read runs on the runtime)."""
        future = self._submit_refresh()
        if future is not None:
            try:
                await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not (future.cancelled() and self._closed) or (task is not None and task.cancelling()):
                    raise  # the caller was cancelled, not the read by closing
        return self.endpoints()

    # -- what subclasses use ---------------------------------------------------------------

    def _set(self, snapshot: EndpointSet[Any]) -> None:
        """Make ``snapshot`` current and tell the subscribers (call with ``_lock`` held)."""
        self._current = snapshot
        self.sets_published += 1
        self._ready.set()
        for callback in self._subscribers.values():
            self._notify(callback, snapshot)

    def _notify(self, callback: Callable[[EndpointSet[Any]], object], snapshot: EndpointSet[Any]) -> None:
        try:
            callback(snapshot)
        except Exception as error:
            self._log.error("subscriber_failed", subscriber=repr(callback), error=describe(error), exc_info=error)

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run the publisher's background coroutine (polling, watching) on the shared runtime."""
        self._task = RUNTIME.submit(coro)

    async def _refresh(self) -> object:
        """Read the source now and publish what it says. Runs on the runtime.

        A publisher that can read its source on demand overrides it; ``refresh()`` and
        ``arefresh()`` then run it, and closing cancels a read in progress.
        """
        return None

    def _submit_refresh(self) -> concurrent.futures.Future[object] | None:
        """Start ``_refresh()`` on the runtime (``None`` once closed or if there is nothing to read); any thread."""
        if self._closed or type(self)._refresh is Publisher._refresh:
            return None
        with self._reads_lock:
            for future in self._reads:
                return future  # one read at a time: join the one in progress
            future = RUNTIME.submit(self._refresh())
            self._reads.add(future)
        future.add_done_callback(self._refresh_done)
        return future

    def _refresh_done(self, future: concurrent.futures.Future[object]) -> None:
        with self._reads_lock:
            self._reads.discard(future)

    # -- closing ---------------------------------------------------------------------------

    def _shutdown(self) -> bool:
        """Mark closed, stop background work, tell subscribers the set is gone; whether it was open."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            if self._task is not None:
                self._task.cancel()
            self._set(EndpointSet())  # the last word: nothing (ends ``updates()`` too)
            self._subscribers = {}
        with self._reads_lock:
            reads, self._reads = self._reads, set()
        for future in reads:
            future.cancel()
        self._log.debug("publisher_closed")
        return True

    def close(self) -> None:
        """Stop discovery and release what the publisher holds; idempotent."""
        self._shutdown()

    async def aclose(self) -> None:
        """Async form of ``close()``."""
        self._shutdown()

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
        module = type(self).__module__.removeprefix("loadbalancer.")
        return f"{module}.{type(self).__name__}({self._service!r})"
