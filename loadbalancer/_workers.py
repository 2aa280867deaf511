"""A bounded set of daemon threads, for blocking work that must be given up at a deadline.

``ThreadPoolExecutor`` does not fit that work: its threads are joined at interpreter exit
(one hung call holds the exit for as long as it hangs), and work given up at its deadline
still holds its thread, so a few hung calls take the whole pool and later ones queue behind
them for ever. Here at most ``size`` calls run at once; a submission waits for a place only
as long as its caller allows (else it is refused: ``None``), so hung work cannot make the
threads grow without bound nor make others wait past their own deadlines. A caller that
bounds hung work itself (one per health-checked instance, say) may ``abandon()`` a call it
gave up, giving its place back at once. Threads idle for ``IDLE`` seconds end; being daemon
threads, given-up work does not hold the exit.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Ticket", "Workers"]

_Job = tuple["Ticket", contextvars.Context, Callable[..., Any], tuple[Any, ...]]


class Ticket:
    """A submitted call: its ``future``; ``abandon()`` gives its thread's place back before it returns."""

    __slots__ = ("_held", "_lock", "_slots", "future")

    def __init__(self, slots: threading.BoundedSemaphore) -> None:
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._slots = slots
        self._lock = threading.Lock()
        self._held = True

    def abandon(self) -> None:
        """Count the call out of the bound now (its thread runs on until it returns, counted by its caller)."""
        self._release()

    def _release(self) -> None:
        with self._lock:
            held, self._held = self._held, False
        if held:
            self._slots.release()


class Workers:
    """At most ``size`` daemon threads named ``{name}-N``; ``submit()`` runs a call on one."""

    IDLE = 30.0

    def __init__(self, size: int, name: str) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"threads must be a positive whole number, got {size!r}")
        self.size = size
        self.name = name
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Job]] = []  # the inboxes of idle threads, the last idle last
        self._started = 0

    def submit(self, fn: Callable[..., Any], *args: Any, wait: float | None = None) -> Ticket | None:
        """``fn(*args)`` on a thread, in a copy of this context; ``None`` if none came free within ``wait``
        seconds (``None``: as long as it takes; 0: only if one is free now)."""
        if not self._slots.acquire(blocking=wait != 0, timeout=None if wait in (None, 0) else max(0.0, wait)):
            return None
        ticket = Ticket(self._slots)
        job = (ticket, contextvars.copy_context(), fn, args)
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                self._started += 1
                name = f"{self.name}-{self._started}"
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=self._work, args=(inbox,), name=name, daemon=True).start()
        inbox.put(job)
        return ticket

    def _work(self, inbox: queue.SimpleQueue[_Job]) -> None:
        while True:
            try:
                job = inbox.get(timeout=self.IDLE)
            except queue.Empty:
                with self._lock:
                    if any(idle is inbox for idle in self._idle):
                        self._idle.remove(inbox)
                        return
                job = inbox.get()  # submit() took this thread just now: its job is on the way
            ticket, context, fn, args = job
            future = ticket.future
            try:
                if future.set_running_or_notify_cancel():
                    future.set_result(context.run(fn, *args))
            except BaseException as error:
                future.set_exception(error)
            finally:
                ticket._release()
            del job, ticket, future, context, fn, args  # hold nothing of the call while idle
            with self._lock:
                self._idle.append(inbox)
