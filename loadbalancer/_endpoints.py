"""The endpoint cache's pieces: the factory, called once per new instance, and delayed closing.

A factory receives the instance's ``"host:port"`` (go-kit's ``Factory``), or the
``Instance`` itself when its first parameter is annotated ``Instance``. A publisher built
without a factory publishes the ``Instance`` objects themselves (go-kit's Instancer).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

from ._runtime import RUNTIME
from ._util import describe
from .instance import Instance

E = TypeVar("E")

Running = asyncio.Future[None] | concurrent.futures.Future[None]


def _wants_instance(factory: Callable[..., object]) -> bool:
    """Whether ``factory``'s first parameter is annotated ``Instance`` (else it gets ``"host:port"``)."""
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: it takes the string
        return False
    if not parameters:
        return False
    annotation = parameters[0].annotation
    if annotation is Instance:
        return True
    # ``from __future__ import annotations`` leaves the annotation as text
    return isinstance(annotation, str) and annotation.rpartition(".")[2] == "Instance"


def maker(factory: Callable[..., Any] | None) -> Callable[[Instance], Any] | None:
    """A function of an ``Instance`` that calls ``factory`` as it wants to be called (``None``: no factory)."""
    if factory is None:
        return None
    if not callable(factory):
        raise TypeError(f"factory must be callable (a function of 'host:port' or of an Instance), got {factory!r}")
    if _wants_instance(factory):
        return factory
    return lambda instance: factory(instance.address)


_BUSY_WAIT = 5.0  # seconds a publisher's close() waits for departed endpoints being closed elsewhere


class Closer(Generic[E]):
    """Closes endpoints of departed instances: ``aclose()`` (preferred) or ``close()``, after a delay."""

    def __init__(self, log: Any, delay: float) -> None:
        self._log = log
        self.delay = delay
        self._closing: set[asyncio.Future[None]] = set()
        self._retiring: dict[int, list[E]] = {}  # endpoints waiting for their close
        self._due: list[int] = []  # batches to close at the next flush() (no delay)
        self._busy: list[int] = []  # threads closing a batch now
        self._batches = itertools.count()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def retire(self, endpoints: list[E]) -> None:
        """Close ``endpoints`` ``delay`` seconds from now, so that calls in flight can finish.

        Call it under the publisher's lock, with the set that drops them: a ``close()`` of the
        publisher from then on finds them. With no delay, ``flush()`` (outside that lock: a
        closer is user code) closes them.
        """
        if not endpoints:
            return
        with self._lock:
            batch = next(self._batches)
            self._retiring[batch] = endpoints
            if self.delay <= 0:
                self._due.append(batch)
        if self.delay > 0:
            RUNTIME.call_later(self.delay, self._retired, batch)

    def flush(self) -> None:
        """Close what was retired with no delay."""
        with self._lock:
            due, self._due = self._due, []
        for batch in due:
            self._retired(batch)

    def _retired(self, batch: int) -> None:
        me = threading.get_ident()
        with self._lock:
            endpoints = self._retiring.pop(batch, None)
            if endpoints is None:
                return  # taken by waiting(): the publisher closed them
            self._busy.append(me)
        try:
            self.close(endpoints)
        finally:
            with self._lock:
                self._busy.remove(me)
                self._idle.notify_all()

    def waiting(self) -> list[E]:
        """Take the endpoints still waiting for their close (the publisher closes: now).

        Those another thread is closing at this moment are waited for (a few seconds at
        most), so that every endpoint is closed once the publisher's ``close()`` returns.
        """
        me = threading.get_ident()
        with self._lock:
            batches, self._retiring, self._due = self._retiring, {}, []
            self._idle.wait_for(lambda: all(thread == me for thread in self._busy), _BUSY_WAIT)
        return [endpoint for endpoints in batches.values() for endpoint in endpoints]

    def close(self, endpoints: Iterable[E]) -> list[Running]:
        """Close each endpoint now; return the async closers still running.

        An async closer runs in the caller's event loop when there is one (where an async
        client was most likely used), else on the runtime.
        """
        running: list[Running] = []
        for endpoint in endpoints:
            if isinstance(endpoint, Instance):
                continue  # a publisher without a factory: nothing to close
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
            coro = self._await(result, endpoint)
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

    async def _await(self, awaitable: Awaitable[object], endpoint: object) -> None:
        try:
            await awaitable
        except Exception as error:
            self._log.error("endpoint_close_failed", endpoint=repr(endpoint), error=describe(error))
