"""The one background event loop that drives every publisher's polling and watching.

A thread per publisher would make many publishers expensive; instead one daemon thread
runs an asyncio loop, started on first use and restarted after ``fork()``. Beside it, a
bounded set of daemon threads (``BLOCKING`` at most) runs the blocking work it must not
run itself (sync health checks), so that none of it takes the application's default
executor. This is the library's only global mutable state.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._workers import Workers

T = TypeVar("T")
BLOCKING = 16  # threads for blocking work of the runtime's (sync health checks), at most


class Runtime:
    """A lazily started event loop on a daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._workers: Workers | None = None

    @property
    def workers(self) -> Workers:
        """The runtime's threads for blocking work (``BLOCKING`` at most, daemon, made on first use)."""
        workers = self._workers
        if workers is None:
            with self._lock:
                if self._workers is None:
                    self._workers = Workers(BLOCKING, "loadbalancer-blocking")
                workers = self._workers
        return workers

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                ready = threading.Event()
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._main, args=(loop, ready), name="loadbalancer-runtime", daemon=True
                )
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _main(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on the runtime's own thread."""
        return self._thread is threading.current_thread()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the runtime; the returned future is safe to wait on from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the runtime thread, soon."""
        self.loop.call_soon_threadsafe(callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> None:
        """Run ``callback(*args)`` on the runtime thread after ``delay`` seconds."""
        loop = self.loop
        loop.call_soon_threadsafe(loop.call_later, delay, callback, *args)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the loop (used at interpreter exit and in tests); it restarts on next use."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(self._cancel_all_and_stop, loop)
            if thread is not threading.current_thread():
                thread.join(timeout)

    @staticmethod
    def _cancel_all_and_stop(loop: asyncio.AbstractEventLoop) -> None:
        # Publishers the application never closed still poll: cancel their tasks, let them
        # unwind, then stop (else asyncio warns of pending tasks destroyed at exit).
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            gathered = asyncio.gather(*tasks, return_exceptions=True)
            gathered.add_done_callback(lambda _: loop.stop())
        else:
            loop.stop()

    def _after_fork(self) -> None:
        # The thread does not exist in the child; the loop object is not usable there.
        self._lock = threading.Lock()
        self._loop = self._thread = None
        self._workers = None


RUNTIME = Runtime()
atexit.register(RUNTIME.stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RUNTIME._after_fork)
