"""The generic discovery publisher, written once on the backend protocol: list, then watch or poll."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import timedelta
from typing import Any

import tenacity

from .._backoff import Backoff
from .._deprecated import renamed
from .._discovery import DiscoveryPublisher
from .._runtime import RUNTIME
from .._typing import E
from .._util import describe, seconds
from ..instance import Instance
from ..publisher import Factory
from ._protocol import Backend, Batch, CursorExpiredError, Listing

__all__ = ["Publisher"]


def _order(key: Any) -> Any:
    return key  # a backend's keys sort (``Hashable`` does not say so)


class _Schedule:
    """When a polled backend is read next: every ``interval`` or at the answer's TTL, jittered; backing off on failures.

    Jitter only shortens a wait (by a random part of up to ``jitter`` of it), so a fleet does
    not poll in lock-step and a change is still seen within the interval. ``wait``: the
    backoff after failed reads, a tenacity wait strategy; default: one interval, then
    doubling up to ``max(interval, max_backoff)``.
    """

    def __init__(
        self,
        interval: float,
        *,
        jitter: float,
        follow_ttl: bool,
        min_interval: float | timedelta,
        max_interval: float | timedelta,
        wait: tenacity.wait.wait_base | None,
        max_backoff: float,
    ) -> None:
        self.interval = interval
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter < 1:
            raise ValueError(f"jitter must be a fraction in [0, 1), got {jitter!r}")
        self.jitter = float(jitter)
        self.follow_ttl = bool(follow_ttl)
        self.min_interval = seconds(min_interval, "min_interval", allow_zero=False)
        self.max_interval = seconds(max_interval, "max_interval", allow_zero=False)
        if self.min_interval > self.max_interval:
            raise ValueError(
                f"min_interval ({self.min_interval:g}) must not exceed max_interval ({self.max_interval:g})"
            )
        if wait is None:
            wait = tenacity.wait_exponential(multiplier=self.interval, max=max(self.interval, max_backoff))
        self.backoff = Backoff(wait)

    def wait(self, ttl: float | None) -> float:
        """The wait before the next read, before jitter: the backoff while failing, else the interval or the TTL."""
        if self.backoff.failures:
            return self.backoff.delay()
        if self.follow_ttl and ttl is not None:
            return min(max(float(ttl), self.min_interval), self.max_interval)
        return self.interval

    def delay(self, ttl: float | None) -> float:
        """``wait(ttl)`` shortened by the jitter."""
        return self.wait(ttl) * (1.0 - self.jitter * random.random())


def _schedule(
    backend: Backend,
    interval: float | timedelta | None,
    polled: bool,
    jitter: float,
    follow_ttl: bool,
    min_interval: float | timedelta,
    max_interval: float | timedelta,
    wait: tenacity.wait.wait_base | None,
    cap: float,
) -> _Schedule:
    every = backend.poll_interval  # a watching backend's serves only if its watch() says None: unchecked, as before
    if interval is not None or polled:
        every = seconds(every if interval is None else interval, "interval", allow_zero=False)
    return _Schedule(every, jitter=jitter, follow_ttl=follow_ttl, min_interval=min_interval,
                     max_interval=max_interval, wait=wait, max_backoff=cap)  # fmt: skip


class Publisher(DiscoveryPublisher[E]):
    """Follows ``service`` on ``backend``: list, then watch (or poll), publishing each change as it comes.

    A failure keeps the last good set (stale) and backs off (``wait``: a tenacity wait
    strategy; default exponential with full jitter up to ``max_backoff``); the watch then
    resumes from the last cursor seen, or the service is listed again if the backend says
    the cursor is gone. ``factory``, ``tags``, ``invalidate_after`` and ``close_delay`` as
    for every publisher; ``own``: close ``backend`` when the publisher closes.

    A backend that cannot watch is polled, and these apply:

    - ``interval``: seconds between polls (default: the backend's ``poll_interval``); each
      wait is shortened by a random part of up to ``jitter`` of it (default 0.1), so a
      fleet does not poll in lock-step and a change is still seen within ``interval``;
    - ``follow_ttl``: wait for the answer's own TTL instead (``Listing.ttl``), kept within
      ``min_interval`` (1 s) and ``max_interval`` (5 min); answers without one every ``interval``;
    - a failed poll is retried after one interval, then the wait doubles up to
      ``max(interval, max_backoff)`` (``wait=`` replaces that);
    - when a poll is due the backend's ``revalidate`` (a cheap "unchanged?") is asked
      first, and the service is listed only when it cannot vouch for the set;
    - ``refresh()`` joins a read already under way rather than read twice in a row.

    ``refresh_soon()`` starts a read without waiting for it (safe in a signal handler).

    >>> from loadbalancer import memory
    >>> with Publisher(memory.Backend(), "api", own=True) as publisher:
    ...     publisher.refresh()
    EndpointSet([])
    """

    @renamed(own_backend="own")
    def __init__(
        self,
        backend: Backend,
        service: str,
        factory: Factory[E] | None = None,
        *,
        tags: Iterable[str] | str | None = None,
        interval: float | timedelta | None = None,
        jitter: float = 0.1,
        follow_ttl: bool = False,
        min_interval: float | timedelta = 1.0,
        max_interval: float | timedelta = 300.0,
        wait: tenacity.wait.wait_base | None = None,
        max_backoff: float | timedelta = 5.0,
        logger: Any = None,
        invalidate_after: float | timedelta | None = None,
        close_delay: float | timedelta = 1.0,
        own: bool = False,
    ) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a loadbalancer.backend.Backend, got {backend!r}")
        if not isinstance(service, str) or not service:
            raise ValueError(f"service must be a non-empty name, got {service!r}")
        cap = seconds(max_backoff, "max_backoff", allow_zero=False)
        self._polled = type(backend).watch is Backend.watch
        self._schedule = _schedule(backend, interval, self._polled, jitter, follow_ttl, min_interval, max_interval,
                                   wait, cap)  # fmt: skip
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
        self._backoff = Backoff(wait, cap=cap)
        self._cursor: Any = None  # where the changes applied stand
        self._published_cursor: Any = None  # where the published set stands
        self._pending = False  # changes applied, a commit scheduled
        self._own = own
        # polling (a backend that leaves ``watch`` as it is)
        self._hint: float | None = None  # the last answer's TTL
        self._listed: Mapping[Hashable, Instance] | None = None  # the instances of the last listing published
        self._reading = asyncio.Lock()  # one read at a time; binds to the runtime loop on first use
        self._reads_done = 0  # reads done, so that a refresh can tell that one ended while it waited
        self._wake: asyncio.Future[None] | None = None  # resolves when a full read is due
        self._timer: asyncio.TimerHandle | None = None  # the next poll
        self._checking = False  # a revalidation is in flight
        self._cancel_check: Callable[[], object] | None = None
        self._checked_at = 0  # ``_reads_done`` when it started: a read since makes it moot
        self._start(self._run())

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def cursor(self) -> Any:
        """Where the published set stands in the backend's history (``None`` before the first read)."""
        return self._published_cursor

    @property
    def interval(self) -> float:
        """Seconds between polls, for a backend that is polled."""
        return self._schedule.interval

    def refresh_soon(self) -> None:
        """Start a read of the source without waiting for it (``refresh()`` waits); safe in a signal handler."""
        if not self._closed:
            RUNTIME.call_soon(self._submit_refresh)

    async def _refresh(self) -> None:
        if self._polled:
            # A read under way when this was asked for (the first one, or a poll) answers
            # it: wait for that one rather than read twice in a row.
            if self._reading.locked():
                reads = self._reads_done
                async with self._reading:
                    if self._reads_done != reads:
                        return
            await self._read()
            return
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
        self._hint = listing.ttl
        if self._polled:
            self._publish_listing(listing)
            return
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
            await (self._poll() if self._polled else self._follow())
        finally:
            if self._own:
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
                    await asyncio.sleep(self._schedule.delay(self._hint))
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

    # -- polling: a backend that cannot watch --------------------------------------------------

    async def _poll(self) -> None:
        while not self._closed:
            await self._read()
            await self._until_due()

    async def _read(self) -> None:
        """One full read of a polled backend (a poll or a refresh): publish what it says, or count the failure."""
        async with self._reading:
            if self._closed:
                return
            try:
                await self._list()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                backoff = self._schedule.backoff
                backoff.failures += 1
                retry_in = round(self._schedule.wait(None), 3)
                self._log.info(
                    self._event("poll_failed"), error=describe(error), failures=backoff.failures, retry_in=retry_in
                )
                self._publish_error(error)
            else:
                self._schedule.backoff.reset()
            finally:
                self._reads_done += 1

    def _publish_listing(self, listing: Listing) -> None:
        """A polled backend's answer: the whole set, diffed by address, in key order."""
        found = listing.instances
        self._listed = found
        self._cursor = self._published_cursor = listing.cursor  # before publishing: subscribers may read it
        self._publish([found[key] for key in sorted(found, key=_order)])

    async def _until_due(self) -> None:
        """Return when a full read is due: after the wait, unless a revalidation vouches for the set (then wait again).

        All of it on loop callbacks: most polls of most sources find nothing changed, and a
        task wake-up per poll would cost as much as the revalidation itself.
        """
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        self._wake = wake
        self._arm(loop)
        try:
            await wake
        finally:
            self._wake = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            cancel, self._cancel_check = self._cancel_check, None
            if self._checking:
                self._checking = False
                if cancel is not None:
                    cancel()

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(self._schedule.delay(self._hint), self._due, loop)

    def _due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self._closed:
            return
        if self._reading.locked():  # a refresh is reading right now: it stands for this poll
            self._arm(loop)
            return
        cancel = None
        if self._listed is not None and not self._schedule.backoff.failures:
            self._checking, self._checked_at = True, self._reads_done
            try:
                cancel = self._backend.revalidate(self._service, self._cursor, self._checked)
            except Exception as error:  # a bug in the backend: list instead
                self._log.error(self._event("revalidate_crashed"), error=describe(error), exc_info=error)
            if not self._checking:
                return  # answered at once
        if cancel is None:
            self._checking = False
            self._woken()
            return
        self._cancel_check = cancel

    def _checked(self, listing: Listing | None) -> None:
        if not self._checking:
            return  # no longer wanted
        self._checking = False
        self._cancel_check = None
        if listing is None or self._closed:
            self._woken()
            return
        if self._reads_done == self._checked_at:  # else a refresh has read since: it is newer
            self._hint = listing.ttl
            if listing.instances is not self._listed:
                self._publish_listing(listing)
            else:
                self._cursor = self._published_cursor = listing.cursor
        self._arm(asyncio.get_running_loop())

    def _woken(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _event(self, what: str) -> str:
        return f"{self._backend.name}_{what}"

    def __repr__(self) -> str:
        return f"backend.Publisher({self._backend.name}, {self._service!r})"
