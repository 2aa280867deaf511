"""``RetryingFuture``: a unary call's ``future()``, retried by the engine without a thread of its own.

Each attempt is grpc's own future; its done callback (on grpc's thread) tells the engine how
it ended and starts the next attempt, or a timer for the wait before it. The future is also
a ``grpc.Call``: its metadata, code and details are the attempt's that ended the call.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from .._engine import Attempt, Step
from ._core import Core, Extras, Key, Tracked

__all__ = ["RetryingFuture"]

_RUNNING, _DONE, _CANCELLED = 0, 1, 2

if TYPE_CHECKING:
    _FutureBase = grpc.Future[Any]  # generic in the type stubs only
else:
    _FutureBase = grpc.Future


class RetryingFuture(_FutureBase, grpc.Call):
    """A unary call in flight, with its retries (``grpc.Future`` and ``grpc.Call``)."""

    def __init__(self, core: Core, key: Key, request: Any, timeout: float | None, extras: Extras) -> None:
        self._core = core
        self._key = key
        self._request = request
        self._extras = extras
        self._done = threading.Condition()
        self._state = _RUNNING
        self._value: Any = None
        self._error: Exception | None = None
        self._inner: Any = None  # the running (or last) attempt's grpc future
        self._callbacks: list[Callable[[Any], None]] = []
        start = time.monotonic()
        end = core.end(start, timeout)
        core.policy.deposit()
        self._call = core.call(key[1], start, end)
        self._act(self._call.begin(start))

    # -- driving the engine ---------------------------------------------------------------------

    def _act(self, step: Step) -> None:
        call = self._call
        while self._state == _RUNNING:
            if step.done:
                error = step.error
                self._finish(step.value, error if isinstance(error, Exception) or error is None else Exception(error))
                return
            if step.start:
                self._launch(step.start[0])
                return
            if step.not_ready:
                self._later(0.0, functools.partial(self._core.route.publisher.wait_ready, step.sleep))
                return
            if step.sleep:
                self._later(step.sleep, None)
                return
            step = call.resume(time.monotonic())

    def _later(self, delay: float, first: Callable[[], object] | None) -> None:
        def resume() -> None:
            if first is not None:
                first()
            self._act(self._call.resume(time.monotonic()))

        timer = threading.Timer(delay, resume)
        timer.daemon = True
        timer.start()

    def _launch(self, attempt: Attempt) -> None:
        left = self._core.left(attempt.deadline)
        key, request, extras = self._key, self._request, self._extras

        def invoke(sub: Any) -> Tracked:
            return Tracked(sub.callable(key).future(request, timeout=left, **extras))

        try:
            inner = attempt.endpoint(invoke).call
        except Exception as error:
            self._act(self._call.raised(attempt, error, time.monotonic()))
            return
        with self._done:
            self._inner = inner
            cancelled = self._state == _CANCELLED
        if cancelled:
            inner.cancel()
            return
        inner.add_done_callback(lambda future: self._landed(attempt, future))

    def _landed(self, attempt: Attempt, future: Any) -> None:
        if self._state != _RUNNING:
            return
        now = time.monotonic()
        error = future.exception()
        if error is None:
            step = self._call.succeeded(attempt, future.result(), now)
        else:
            step = self._call.raised(attempt, error, now)
        self._act(step)

    def _finish(self, value: Any, error: Exception | None) -> None:
        from ..errors import NoEndpointsError

        if isinstance(error, NoEndpointsError) and not isinstance(error, grpc.RpcError):
            error = self._core.no_instance(self._key[1], error)
        with self._done:
            if self._state != _RUNNING:
                return
            self._state = _DONE
            self._value, self._error = value, error
            self._done.notify_all()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    # -- grpc.Future ----------------------------------------------------------------------------

    def cancel(self) -> bool:
        with self._done:
            if self._state != _RUNNING:
                return False
            self._state = _CANCELLED
            inner = self._inner
            self._done.notify_all()
            callbacks, self._callbacks = self._callbacks, []
        if inner is not None:
            inner.cancel()
        for callback in callbacks:
            callback(self)
        return True

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def running(self) -> bool:
        return self._state == _RUNNING

    def done(self) -> bool:
        return self._state != _RUNNING

    def _wait(self, timeout: float | None) -> None:
        with self._done:
            if not self._done.wait_for(lambda: self._state != _RUNNING, timeout):
                raise grpc.FutureTimeoutError()
        if self._state == _CANCELLED:
            raise grpc.FutureCancelledError()

    def result(self, timeout: float | None = None) -> Any:
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout: float | None = None) -> Exception | None:
        self._wait(timeout)
        return self._error

    def traceback(self, timeout: float | None = None) -> Any:
        error = self.exception(timeout)
        return None if error is None else error.__traceback__

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        with self._done:
            if self._state == _RUNNING:
                self._callbacks.append(fn)
                return
        fn(self)

    # -- grpc.Call: the attempt's that ended the call -------------------------------------------

    def _last(self) -> Any:
        if isinstance(self._error, grpc.Call):
            return self._error
        self._wait(None)
        return self._inner if self._error is None or not isinstance(self._error, grpc.Call) else self._error

    def initial_metadata(self) -> Any:
        return self._last().initial_metadata()

    def trailing_metadata(self) -> Any:
        return self._last().trailing_metadata()

    def code(self) -> Any:
        return self._last().code()

    def details(self) -> Any:
        return self._last().details()

    def is_active(self) -> bool:
        return self._state == _RUNNING

    def time_remaining(self) -> float:
        left = self._core.left(self._call.end)
        return float("inf") if left is None else left

    def add_callback(self, callback: Callable[[], None]) -> bool:
        if self._state != _RUNNING:
            return False
        self.add_done_callback(lambda _: callback())
        return True
