"""The generic discovery publisher, written once on the backend protocol."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import tenacity

from .._backoff import Backoff
from .._deprecated import renamed
from .._discovery import DiscoveryPublisher
from .._typing import E
from .._util import describe, seconds
from ..publisher import Factory
from ._protocol import Backend, Batch, CursorExpiredError

__all__ = ["Publisher"]


class Publisher(DiscoveryPublisher[E]):
    """Follows ``service`` on ``backend``: list, then watch (or poll), publishing each change as it comes.

    A failure keeps the last good set (stale) and backs off (``wait``: a tenacity wait
    strategy; default exponential with full jitter up to ``max_backoff``); the watch then
    resumes from the last cursor seen, or the service is listed again if the backend says
    the cursor is gone. ``factory``, ``tags``, ``invalidate_after`` and ``close_delay`` as
    for every publisher; ``own``: close ``backend`` when the publisher closes.
    """

    @renamed(own_backend="own")
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
        own: bool = False,
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
        self._own = own
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
