"""The ``Publisher`` base: subscriptions, the latest snapshot, the endpoint cache, staleness.

A discovery backend subclasses ``Publisher`` and only tells it what it found, through two
protected methods:

- ``self._publish(instances)``: here is the complete current set (``Instance`` objects or
  ``"host:port"`` strings, in the source's order);
- ``self._publish_error(error)``: this refresh failed; keep the last good set (stale beats
  empty) until ``invalidate_after`` runs out.

Everything else (calling the factory once per new instance, reusing endpoints of unchanged
instances, closing endpoints of vanished ones, telling subscribers, logging) lives here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import itertools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from ._log import get_logger
from ._runtime import RUNTIME
from ._util import describe, seconds
from .errors import InvalidInstanceError
from .instance import Instance, parse_instance

__all__ = ["EndpointSet", "Factory", "Publisher", "Subscription"]

E = TypeVar("E")
Factory = Callable[[str], E]
"""Turns an instance's ``"host:port"`` into an endpoint (any object; usually a callable)."""

_CLOSE_WAIT = 5.0  # how long a sync close() waits for async closers on the runtime

_Running = asyncio.Future[None] | concurrent.futures.Future[None]


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


_NOTHING: EndpointSet[Any] = EndpointSet()


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

    Subclasses say where instances come from; this base turns each new instance into an
    endpoint with ``factory`` (once per instance), reuses the endpoints of instances that
    stay, and closes (``aclose()`` or ``close()``) those of instances that go,
    ``close_delay`` seconds later so that calls in flight can finish. A failed refresh keeps
    the last good set (stale beats empty); with ``invalidate_after=`` seconds, a set that
    stays stale that long is dropped and picks fail until a refresh succeeds.

    >>> from loadbalancer import static
    >>> with static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], lambda hostport: hostport) as p:
    ...     list(p.endpoints())
    ['10.0.0.1:80', '10.0.0.2:80']
    """

    def __init__(
        self,
        factory: Factory[E],
        *,
        service: str,
        logger: Any = None,
        invalidate_after: float | timedelta | None = None,
        close_delay: float | timedelta = 1.0,
    ) -> None:
        if not callable(factory):
            raise TypeError(f"factory must be callable, got {factory!r}")
        self._factory = factory
        self._service = service
        self._log = get_logger(logger, service=service)
        self._invalidate_after = None if invalidate_after is None else seconds(invalidate_after, "invalidate_after")
        self._close_delay = seconds(close_delay, "close_delay")
        self._lock = threading.RLock()
        self._keys = itertools.count()
        self._subscribers: dict[int, Callable[[EndpointSet[E]], object]] = {}
        self._current: EndpointSet[E] | None = None
        self._cache: dict[str, tuple[Instance, E]] = {}  # address -> (instance, endpoint)
        self._parsed: dict[str, Instance] = {}  # the current set's instance strings, parsed
        self._generation = 0  # counts good refreshes; an invalidation timer checks it
        self._last_error: BaseException | None = None
        self._closed = False
        self._task: concurrent.futures.Future[None] | None = None
        self._closing: set[asyncio.Future[None]] = set()
        self._reads: set[concurrent.futures.Future[object]] = set()  # on-demand reads in progress
        self._reads_lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------

    def endpoints(self) -> EndpointSet[E]:
        """The latest snapshot (empty until the source has been read)."""
        current = self._current
        return _NOTHING if current is None else current

    @property
    def service(self) -> str:
        """What this publisher discovers (a DNS name, a key prefix, ``"static"``)."""
        return self._service

    @property
    def last_error(self) -> BaseException | None:
        """The most recent refresh failure; cleared by the next good refresh."""
        return self._last_error

    @property
    def closed(self) -> bool:
        """Whether ``close()`` or ``aclose()`` has been called."""
        return self._closed

    def subscribe(self, callback: Callable[[EndpointSet[E]], object]) -> Subscription:
        """Call ``callback(endpoints)`` now with the current set, if one is known, then on every change.

        Callbacks run on the thread that made the change, one at a time and in order; keep
        them short. One that raises is logged and does not stop the others.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {callback!r}")
        with self._lock:
            key = next(self._keys)
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
        ``last_error``. Not callable on the library's runtime thread (where subscribers of
        the backends are called), which does the reading: use ``await arefresh()`` there.
        """
        if type(self)._refresh is Publisher._refresh:
            return self.endpoints()
        if RUNTIME.in_loop_thread():
            raise RuntimeError(
                f"{self!r}.refresh() would block the library's runtime thread, which reads the source;"
                " use `await publisher.arefresh()` in a coroutine there"
            )
        future = self._submit_refresh()
        if future is not None:
            with contextlib.suppress(concurrent.futures.CancelledError):  # closed meanwhile
                future.result()
        return self.endpoints()

    async def arefresh(self) -> EndpointSet[E]:
        """Async form of ``refresh()``, callable from any event loop (the read runs on the runtime)."""
        if type(self)._refresh is Publisher._refresh:
            return self.endpoints()
        future = self._submit_refresh()
        if future is not None:
            try:
                await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not (future.cancelled() and self._closed) or (task is not None and task.cancelling()):
                    raise  # the caller was cancelled, not the read by closing
        return self.endpoints()

    # -- what backends call ----------------------------------------------------------------

    def _publish(self, items: Iterable[Instance | str], *, strict: bool = False) -> None:
        """Make ``items`` the current set.

        Strings are parsed; a malformed one is logged and skipped, or with ``strict=True``
        raises ``InvalidInstanceError`` before anything changes.
        """
        with self._lock:
            if self._closed:
                return
            instances = self._resolve(items, strict)
            old, new = self._cache, {}
            kept: list[Instance] = []
            endpoints: list[E] = []
            added = 0
            for instance in instances:
                address = instance.address
                if address in new:
                    continue  # the source listed it twice; the first one stands
                entry = old.get(address)
                if entry is None:
                    try:
                        endpoint = self._factory(address)
                    except Exception as error:
                        self._log.error("factory_failed", instance=address, error=describe(error), exc_info=error)
                        continue
                    added += 1
                else:
                    endpoint = entry[1]
                new[address] = (instance, endpoint)
                kept.append(instance)
                endpoints.append(endpoint)
            removed = [entry[1] for address, entry in old.items() if address not in new]
            self._cache = new
            self._generation += 1
            self._last_error = None
            current = self._current
            if current is None or current.error is not None or tuple(kept) != current.instances:
                self._current = EndpointSet(endpoints, kept, None)
                self._log.info("endpoints_updated", count=len(kept), added=added, removed=len(removed))
                self._emit(self._current)
        self._retire(removed)

    def _resolve(self, items: Iterable[Instance | str], strict: bool) -> list[Instance]:
        memo, parsed = self._parsed, {}
        result: list[Instance] = []
        for item in items:
            if isinstance(item, Instance):
                result.append(item)
                continue
            instance = memo.get(item) if isinstance(item, str) else None
            if instance is None:
                try:
                    instance = parse_instance(item)
                except InvalidInstanceError as error:
                    if strict:
                        raise
                    self._log.error("invalid_instance", instance=item, error=error.reason)
                    continue
            parsed[item] = instance
            result.append(instance)
        self._parsed = parsed
        return result

    def _publish_error(self, error: BaseException) -> None:
        """Record a failed refresh: keep the last good set, mark it stale, log."""
        with self._lock:
            if self._closed:
                return
            self._last_error = error
            current = self._current
            kept = 0 if current is None else len(current)
            if current is not None and current.error is not None:
                # already stale: logged when it turned so; nothing new for subscribers
                self._log.info("refresh_failed", error=describe(error), kept=kept)
                return
            self._log.warning("refresh_failed", error=describe(error), kept=kept)
            stale: EndpointSet[E] = EndpointSet(current or (), current.instances if current else (), error)
            self._current = stale
            self._emit(stale)
            if self._invalidate_after is not None and stale:
                if self._invalidate_after == 0:
                    self._invalidate(self._generation)
                else:
                    RUNTIME.call_later(self._invalidate_after, self._invalidate, self._generation)

    def _invalidate(self, generation: int) -> None:
        with self._lock:
            current = self._current
            if self._closed or generation != self._generation or current is None or current.error is None:
                return  # a good refresh came in the meantime
            self._log.warning(
                "stale_endpoints_dropped",
                count=len(current),
                after=self._invalidate_after,
                error=describe(current.error),
            )
            removed = [entry[1] for entry in self._cache.values()]
            self._cache = {}
            self._current = EndpointSet((), (), current.error)
            self._emit(self._current)
        self._retire(removed)

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a backend's background coroutine (polling, watching) on the shared runtime."""
        self._task = RUNTIME.submit(coro)

    async def _refresh(self) -> object:
        """Read the source now and publish (or ``_publish_error``) what it says.

        Runs on the runtime. A backend that can read its source on demand overrides it;
        ``refresh()`` and ``arefresh()`` then run it, and closing cancels a read in progress.
        """
        return None

    def _submit_refresh(self) -> concurrent.futures.Future[object] | None:
        """Start ``_refresh()`` on the runtime (``None`` once closed); safe from any thread."""
        if self._closed:
            return None
        future = RUNTIME.submit(self._refresh())
        with self._reads_lock:
            self._reads.add(future)
        future.add_done_callback(self._refresh_done)
        return future

    def _refresh_done(self, future: concurrent.futures.Future[object]) -> None:
        with self._reads_lock:
            self._reads.discard(future)

    # -- subscribers and closing -----------------------------------------------------------

    def _emit(self, snapshot: EndpointSet[E]) -> None:
        for callback in self._subscribers.values():
            self._notify(callback, snapshot)

    def _notify(self, callback: Callable[[EndpointSet[E]], object], snapshot: EndpointSet[E]) -> None:
        try:
            callback(snapshot)
        except Exception as error:
            self._log.error("subscriber_failed", subscriber=repr(callback), error=describe(error), exc_info=error)

    def _retire(self, endpoints: list[E]) -> None:
        if not endpoints:
            return
        if self._close_delay > 0:
            RUNTIME.call_later(self._close_delay, self._close_endpoints, endpoints)
        else:
            self._close_endpoints(endpoints)

    def _close_endpoints(self, endpoints: Iterable[E]) -> list[_Running]:
        """Close each endpoint (``aclose()`` preferred to ``close()``); return what still runs.

        An async closer runs in the caller's event loop when there is one (where an async
        client was most likely used), else on the runtime.
        """
        running: list[_Running] = []
        for endpoint in endpoints:
            closer = getattr(endpoint, "aclose", None)
            if not callable(closer):
                closer = getattr(endpoint, "close", None)
                if not callable(closer):
                    continue
            try:
                result = closer()
            except Exception as error:
                self._log.error("endpoint_close_failed", endpoint=repr(endpoint), error=describe(error))
                continue
            if not inspect.isawaitable(result):
                continue
            coro = self._await_close(result, endpoint)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                running.append(RUNTIME.submit(coro))
            else:
                task = loop.create_task(coro)
                self._closing.add(task)  # hold a reference so the task is not collected early
                task.add_done_callback(self._closing.discard)
                running.append(task)
        return running

    async def _await_close(self, awaitable: Awaitable[object], endpoint: object) -> None:
        try:
            await awaitable
        except Exception as error:
            self._log.error("endpoint_close_failed", endpoint=repr(endpoint), error=describe(error))

    def _shutdown(self) -> list[E]:
        """Mark closed, stop background work, tell subscribers the set is gone."""
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            if self._task is not None:
                self._task.cancel()
            endpoints = [entry[1] for entry in self._cache.values()]
            self._cache = {}
            self._current = EndpointSet()
            self._emit(self._current)  # the last word: nothing (ends ``updates()`` too)
            self._subscribers = {}
        with self._reads_lock:
            reads, self._reads = self._reads, set()
        for future in reads:
            future.cancel()
        self._log.debug("publisher_closed")
        return endpoints

    def close(self) -> None:
        """Stop discovery and close every endpoint now; idempotent.

        Async closers run on the library's background loop and ``close()`` waits a few
        seconds for them; in async code prefer ``await aclose()``, which runs them in the
        caller's loop.
        """
        for future in self._close_endpoints(self._shutdown()):
            if isinstance(future, concurrent.futures.Future) and not RUNTIME.in_loop_thread():
                try:
                    future.result(_CLOSE_WAIT)
                except concurrent.futures.TimeoutError:
                    self._log.warning("endpoint_close_slow", waited=_CLOSE_WAIT)

    async def aclose(self) -> None:
        """Stop discovery and close every endpoint, awaiting async closers in this loop."""
        running = self._close_endpoints(self._shutdown())
        if running:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in running), return_exceptions=True)

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
