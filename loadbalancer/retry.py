"""``Retry``: a balancer turned into one endpoint that retries on failure, within a deadline.

A call's first attempt is made here, at the least cost: a pick, a context-variable set and,
for an async attempt, one entry in a deadline watchdog. Only when it fails does the retry
engine (``loadbalancer._engine``) take over, with its two drivers: the blocking one for
sync endpoints, the asyncio one for async endpoints and for ``acall``. The policy objects
are tenacity's (``retry_if_exception_type``, ``stop_after_attempt``,
``wait_exponential_jitter``, ...), evaluated on a ``tenacity.RetryCallState``.
"""

from __future__ import annotations

import asyncio
import collections.abc
import inspect
import math
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator
from datetime import timedelta
from types import CoroutineType
from typing import Any, Generic, TypeVar, cast, overload

import tenacity

from . import _metrics
from ._engine import (
    DEFAULT_WAIT,
    Attempt,
    Call,
    Policy,
    adrive,
    deadline,
    drive,
    summary,
)
from ._log import get_logger
from ._runtime import RUNTIME
from ._util import seconds
from ._workers import Workers
from .balancer import Balancer
from .budget import RetryBudget, _budget_of, retryable
from .errors import AttemptTimeoutError, NotReadyError, RetryBudgetExhaustedError, RetryError, RetryTimeoutError
from .tracked import TrackedEndpoint

__all__ = ["Retry", "deadline", "remaining"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool] | tenacity.retry_base

_monotonic = time.monotonic
# bound once: the successful call is the hot path, and each attribute lookup shows there
_get_deadline, _set_deadline, _reset_deadline = deadline.get, deadline.set, deadline.reset
THREADS = 32  # threads a threaded Retry runs its attempts on, at most


def remaining() -> float | None:
    """Seconds left before the current ``Retry`` deadline (never negative), or ``None`` outside one."""
    end = deadline.get()
    return None if end is None else max(0.0, end - _monotonic())


def _retry_predicate(retry_on: RetryOn) -> tenacity.retry_base:
    if isinstance(retry_on, tenacity.retry_base):
        return retry_on
    if isinstance(retry_on, type) and issubclass(retry_on, BaseException):
        return tenacity.retry_if_exception_type(retry_on)
    if (
        isinstance(retry_on, tuple)
        and retry_on
        and all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in retry_on)
    ):
        return tenacity.retry_if_exception_type(retry_on)
    if callable(retry_on) and not isinstance(retry_on, tuple | type):
        return tenacity.retry_if_exception(retry_on)
    raise TypeError(
        f"retry_on must be an exception type, a tuple of them, a predicate or a tenacity retry, got {retry_on!r}"
    )


def _strategy(value: Any, name: str, base: type, example: str) -> Any:
    """``value`` if it is a tenacity ``name`` strategy or a callable taking one ``RetryCallState``."""
    if value is None or isinstance(value, base):
        return value
    expected = f"{name} must be a tenacity {name} strategy (such as {example}) or a callable taking a RetryCallState"
    if isinstance(value, type):
        raise TypeError(f"{expected}, got the class {value.__module__}.{value.__qualname__}: call it to make one")
    if not callable(value):
        raise TypeError(f"{expected}, got {value!r}")
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):  # some builtins have none: nothing to check
        return value
    try:
        signature.bind(None)
    except TypeError:
        raise TypeError(f"{expected}, got {value!r}, which cannot be called with one") from None
    return value


_ASYNC_HINT = (
    "the endpoints are async, so call(request) made a coroutine, and no event loop runs in this thread"
    " to await it: use `await call(request)` inside a coroutine (or `await call.acall(request)`, which"
    " takes sync and async endpoints alike), or run it with asyncio.run(call(request))"
)


class _PendingCall(collections.abc.Coroutine[Any, Any, Any]):
    """What ``call(request)`` returns over async endpoints where no event loop runs.

    The call has not run. Awaited, or handed to asyncio (``asyncio.run(call(request))``,
    ``loop.run_until_complete()``, ``asyncio.run_coroutine_threadsafe()``), it runs as the
    coroutine it wraps. Used as if it were the response, it raises an ``AttributeError``
    that says what to do; dropped without running, it warns (``RuntimeWarning``) the same.
    Calls made inside a running loop return the coroutine itself: this costs them nothing.
    """

    __slots__ = ("_call", "_first")

    def __init__(self, call: Coroutine[Any, Any, Any], first: object) -> None:
        self._call = call
        self._first = first  # the endpoint's awaitable, which the call would await first

    def __await__(self) -> Generator[Any, None, Any]:
        return self._call.__await__()

    def send(self, value: Any) -> Any:
        return self._call.send(value)

    def throw(self, *args: Any) -> Any:
        return self._call.throw(*args)

    def close(self) -> None:
        started = inspect.getcoroutinestate(self._call) != inspect.CORO_CREATED
        self._call.close()
        if not started:  # the endpoint's coroutine was never awaited: close it too, quietly
            close = getattr(self._first, "close", None)
            if close is not None:
                close()

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"{name!r}: this is not the response: {_ASYNC_HINT}")

    def __repr__(self) -> str:
        return f"<pending Retry call, not run: {_ASYNC_HINT}>"

    def __del__(self) -> None:
        try:
            call = self._call
        except AttributeError:  # __init__ did not finish
            return
        if inspect.getcoroutinestate(call) == inspect.CORO_CREATED:
            self.close()
            warnings.warn(f"a Retry call was never run: {_ASYNC_HINT}", RuntimeWarning, stacklevel=2)


class _Guard:
    """One async first attempt registered with a watchdog."""

    __slots__ = ("cancelling", "fired", "guards", "task")

    def __init__(self, task: asyncio.Task[Any], guards: set[_Guard]) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.fired = False
        self.guards = guards
        guards.add(self)

    def disarm(self) -> None:
        self.guards.discard(self)


class _Watchdog:
    """Cancels the tasks of async calls whose deadline has passed during their first attempt.

    ``asyncio.timeout()`` or a ``call_later`` per call costs several microseconds, more
    than the rest of a successful call. Here deadlines share one timer per millisecond
    slot: arming a call is a set insertion, disarming a removal, and the timer, set once
    per slot, cancels whatever is still in it. A deadline fires at most 1 ms late.
    """

    RESOLUTION = 0.001

    __slots__ = ("loop", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, set[_Guard]] = {}

    def arm(self, end: float, task: asyncio.Task[Any]) -> _Guard:
        slot = math.ceil(end / self.RESOLUTION)
        guards = self.slots.get(slot)
        if guards is None:
            guards = self.slots[slot] = set()
            self.loop.call_later(max(0.0, slot * self.RESOLUTION - _monotonic()), self._fire, slot)
        return _Guard(task, guards)

    def _fire(self, slot: int) -> None:
        for guard in self.slots.pop(slot, ()):
            guard.fired = True
            guard.task.cancel()


def _check_bounds(max_attempts: object, timeout: object, lb: object) -> None:
    # Both bounds are required, as in go-kit: None is not "no limit" but a mistake to report.
    for name, value, kind in (
        ("max_attempts", max_attempts, "a positive integer"),
        ("timeout", timeout, "a positive number of seconds or a timedelta"),
    ):
        if value is None:
            raise TypeError(
                f"{name} is required: give {kind} (Retry always bounds both its attempts and its time), got None"
            )
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int):
        raise TypeError(
            f"max_attempts must be a positive integer (an int, such as 3), got {type(max_attempts).__name__}"
            f" {max_attempts!r}"
        )
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be a positive integer, got {max_attempts!r}: give 1 or more")
    if not isinstance(lb, Balancer):
        raise TypeError(f"lb must be a loadbalancer.Balancer, got {lb!r}")


class Retry(Generic[Req, Resp]):
    """Turn a balancer into one endpoint that retries failed calls on the next endpoint.

    Each attempt asks ``lb`` for an endpoint; a call made before the publisher's source
    first answered waits for that answer first (within the deadline; it is not an attempt).
    A retry goes to an endpoint not tried yet in that call whenever the set holds one. The
    call ends at the first success, after ``max_attempts`` attempts (``RetryError`` with
    every attempt's exception), at an error that ``retry_on`` does not cover (raised as it
    is), or when ``timeout`` seconds have passed (``RetryTimeoutError``, both a
    ``RetryError`` and a ``TimeoutError``).

    Sync and async endpoints share the spelling: ``call(req)`` for sync endpoints,
    ``await call(req)`` for ``async`` ones; ``await call.acall(req)`` takes either kind, and
    its waits between attempts never block the event loop (sync endpoints themselves run
    on it). Over async endpoints, ``call(req)`` where no event loop runs returns the call
    unrun (``asyncio.run(call(req))`` runs it); used as a response it raises an error saying
    to await it. An async attempt still running at the deadline (or past its own
    ``attempt_timeout``) is cancelled. A sync attempt cannot be interrupted; it can read the
    deadline from ``loadbalancer.deadline`` / ``loadbalancer.remaining()`` and use it as its
    own timeout, or ``threaded=True`` runs each sync attempt on a worker thread so that the
    call returns at the deadline even when an endpoint hangs (the attempt is abandoned; this
    costs a thread hand-off per attempt). Those threads are at most ``threads`` (default 32)
    for a ``Retry``: an attempt waits for one to come free within its deadline, so hung
    endpoints cannot make them grow without bound; they are daemon threads, so an abandoned
    attempt does not hold the interpreter's exit.

    ``retry_on`` is an exception type, a tuple of them, a predicate on the exception or a
    tenacity ``retry_*`` object (default: ``loadbalancer.retryable``, everything but
    programming errors such as ``TypeError`` or ``KeyError``); ``wait`` a tenacity wait
    strategy between attempts, or a callable taking a ``tenacity.RetryCallState`` and
    returning seconds (default: exponential backoff with full jitter, from 10 ms up to 1 s;
    ``tenacity.wait_none()`` retries at once); ``stop`` an extra tenacity stop condition (or
    such a callable returning ``True`` to stop). ``max_attempts`` and ``timeout`` are both
    required, as in go-kit: there is no "no limit" (``None``, ``inf``). ``budget`` limits
    retries to a share of recent requests (default: a ``RetryBudget()`` of its own, 20% plus
    10 a second; pass one to share it, ``None`` for no limit); a spent budget raises
    ``RetryBudgetExhaustedError`` instead of retrying.

    >>> from loadbalancer import RoundRobin, static
    >>> backends = static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], lambda hp: lambda req: f"{hp} got {req}")
    >>> call = Retry(3, 5.0, RoundRobin(backends))
    >>> call("ping").endswith("got ping")
    True
    """

    def __init__(
        self,
        max_attempts: int,
        timeout: float | timedelta,
        lb: Balancer[Callable[[Req], Resp]],
        *,
        retry_on: RetryOn = retryable,
        wait: tenacity.wait.wait_base | Callable[[tenacity.RetryCallState], float] | None = None,
        stop: tenacity.stop.stop_base | Callable[[tenacity.RetryCallState], bool] | None = None,
        budget: RetryBudget | bool | None = True,
        threaded: bool = False,
        threads: int = THREADS,
        attempt_timeout: float | timedelta | None = None,
        logger: Any = None,
    ) -> None:
        _check_bounds(max_attempts, timeout, lb)
        self._max_attempts = max_attempts
        self._timeout = seconds(timeout, "timeout", allow_zero=False)
        self._lb = lb
        self._pick = lb.endpoint
        self._retry = _retry_predicate(retry_on)
        wait = _strategy(wait, "wait", tenacity.wait.wait_base, "tenacity.wait_fixed(0.1)")
        stop = _strategy(stop, "stop", tenacity.stop.stop_base, "tenacity.stop_after_delay(1)")
        self._budget = _budget_of(budget)
        attempt_timeout = (
            None if attempt_timeout is None else seconds(attempt_timeout, "attempt_timeout", allow_zero=False)
        )
        self._policy = Policy(
            attempts=max_attempts,
            timeout=self._timeout,
            attempt_timeout=attempt_timeout,
            wait=DEFAULT_WAIT if wait is None else wait,
            stop=stop,
            budget=self._budget,
        )
        self.calls = 0  # counters the metrics layer reads (loadbalancer.metrics); calls also feed the budget
        if self._budget is not None:
            self._budget._attach(self)
        self.retries = 0
        self.give_ups = 0
        self.deadlines = 0
        self.budget_refusals = 0
        _metrics.register("retry", self)
        self._workers = Workers(threads, "loadbalancer-attempt") if threaded else None
        # one test on the hot path for both: calls that need more than the plain path
        self._slow = threaded or attempt_timeout is not None
        # A failed call raises to its caller, who decides what it is worth: its events are
        # INFO (a library must not write a line to stderr per failed call of an application
        # that has not set logging up). A spent budget is a fleet-level condition: a WARNING
        # at most once per budget window, INFO for the refusals in between.
        self._log = get_logger(logger, name=__name__, service=lb.publisher.service)
        self._names: tuple[object, dict[int, str]] | None = None  # (snapshot, id(endpoint) -> address)
        self._watchdog: _Watchdog | None = None
        # hasattr() on a type without __await__ raises inside: ~250 ns; remember the answer
        self._awaitable: dict[type, bool] = {CoroutineType: True}
        self._in_loops = False  # called inside a running event loop at least once

    @property
    def balancer(self) -> Balancer[Callable[[Req], Resp]]:
        """The balancer each attempt picks from."""
        return self._lb

    def __call__(self, request: Req) -> Resp:
        self.calls += 1
        start = _monotonic()
        end = start + self._timeout
        outer = _get_deadline()
        if outer is not None and outer < end:
            end = outer  # an enclosing Retry's deadline is tighter
        if self._slow:
            return self._general(request, start, end)
        token = _set_deadline(end)
        endpoint = None  # None if the pick itself failed
        try:
            endpoint = self._pick()
            result = endpoint(request)
        except Exception as error:
            _reset_deadline(token)
            if type(error) is NotReadyError and self._first_answer(end):
                return self._call_within(request, end)  # it is in: call as if now, by the same deadline
            call = self._call(request, start, end)
            step = call.after_first(endpoint, error, _monotonic())
            return cast("Resp", drive(call, step, self._runner(request), ready=self._wait_ready))
        _reset_deadline(token)
        # Casts are spelled as strings: a subscripted generic would be built on every call.
        if type(result) is not CoroutineType:  # an async endpoint's is one: no lookup
            kind = type(result)
            awaitable = self._awaitable.get(kind)
            if awaitable is None:
                awaitable = self._remember_kind(kind)
            if not awaitable:
                return result
        call_ = self._run_async(cast("Awaitable[Any]", result), endpoint, request, start, end)
        if not self._in_loops:
            # Only until this Retry was once called in a running loop: then a sync call over
            # async endpoints (the mistake _PendingCall explains) stops being likely.
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # nothing can await the call in this thread now
                return cast("Resp", _PendingCall(call_, result))
            self._in_loops = True
        return cast("Resp", call_)

    def _general(self, request: Req, start: float, end: float) -> Resp:
        """Threaded or with an attempt timeout: every attempt through the engine."""
        call = self._call(request, start, end)
        step = call.begin(_monotonic())
        if self._workers is None and step.start:
            first = step.start[0]
            token = _set_deadline(first.deadline)
            try:
                result = first.endpoint(request)
            except Exception as error:
                step = call.failed(first, error, _monotonic())
            else:
                if not hasattr(type(result), "__await__"):
                    return cast("Resp", result)
                # async endpoints: each attempt cancelled past its own time, by the asyncio driver
                return cast("Resp", adrive(call, step, self._first_then(result, first, request), ready=self._aready))
            finally:
                _reset_deadline(token)
        return cast("Resp", drive(call, step, self._runner(request), ready=self._wait_ready, workers=self._workers))

    def _call(self, request: Req, start: float, end: float) -> Call:
        return Call(
            self._policy,
            self._pick,
            start=start,
            end=end,
            candidates=self._lb.candidates,
            retryable=self._retryable,
            conclude=self._conclude,
            log=self._log,
            stats=self,
            name=self._instance_of,
            request=request,
        )

    def _runner(self, request: Req) -> Callable[[Attempt], Any]:
        def run(attempt: Attempt) -> Any:
            return attempt.endpoint(request)

        return run

    def _first_then(self, first: Any, attempt: Attempt, request: Req) -> Callable[[Attempt], Any]:
        def run(next_attempt: Attempt) -> Any:
            return first if next_attempt is attempt else next_attempt.endpoint(request)

        return run

    def _retryable(self, error: BaseException) -> bool:
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.set_exception((type(error), error, error.__traceback__))
        return bool(self._retry(state))

    def _conclude(
        self, reason: str, errors: list[BaseException], elapsed: float, why: str, timeout: float | None
    ) -> BaseException:
        listed = f": {summary(errors)}" if errors else ""
        if reason == "deadline":
            return RetryTimeoutError(
                f"deadline of {self._timeout:g}s exceeded after {len(errors)} attempts{why}{listed}", errors
            )
        if reason == "budget":
            return RetryBudgetExhaustedError(
                f"retry budget exhausted after {len(errors)} attempts ({self._budget!r}){listed}", errors
            )
        return RetryError(f"gave up after {len(errors)} attempts in {elapsed:.3f}s{listed}", errors)

    def _first_answer(self, end: float) -> bool:
        """The publisher has not answered yet: wait for it (not an attempt), up to ``end``; whether it did."""
        publisher = self._lb.publisher
        if RUNTIME.in_loop_thread():  # the runtime reads the sources: it must not wait for itself
            return False
        return publisher.wait_ready(max(0.0, end - _monotonic())) and not publisher.closed

    def _wait_ready(self, seconds_: float) -> None:
        if not RUNTIME.in_loop_thread():
            self._lb.publisher.wait_ready(seconds_)

    async def _aready(self, seconds_: float) -> None:
        await self._lb.publisher.await_ready(seconds_)

    def _call_within(self, request: Req, end: float) -> Resp:
        token = _set_deadline(end)  # an enclosing deadline: the call keeps the original one
        try:
            return self(request)
        finally:
            _reset_deadline(token)

    @overload
    async def acall(self: Retry[Req, Coroutine[Any, Any, T]], request: Req) -> T: ...

    @overload
    async def acall(self: Retry[Req, Awaitable[T]], request: Req) -> T: ...

    @overload
    async def acall(self: Retry[Req, T], request: Req) -> T: ...

    async def acall(self, request: Req) -> Any:
        """``await call.acall(request)``: the call, whether the endpoints are sync or async.

        ``await call(request)`` needs async endpoints (over sync ones, ``call(request)`` is
        the response itself, and Python refuses to await it); ``call(request)`` outside a
        coroutine needs sync ones. Code that may meet either kind awaits ``acall``. Sync
        endpoints then run on the event loop's thread, each attempt blocking it while it
        runs; the waits between attempts, and for the publisher's first answer, never do.
        """
        self.calls += 1
        start = _monotonic()
        end = start + self._timeout
        outer = _get_deadline()
        if outer is not None and outer < end:
            end = outer
        call = self._call(request, start, end)
        return await adrive(call, call.begin(_monotonic()), self._runner(request), ready=self._aready)

    def _remember_kind(self, kind: type) -> bool:
        if len(self._awaitable) > 256:  # endpoints returning ever new types: do not grow for ever
            self._awaitable = {CoroutineType: True}
        awaitable = self._awaitable[kind] = hasattr(kind, "__await__")
        return awaitable

    def _instance_of(self, endpoint: object) -> str | None:
        """The address of the instance ``endpoint`` was made for, for the failure events.

        Looked up in the publisher's current set (an index built once per set, and only
        when a call fails); an endpoint that is no longer in it is named by its own
        ``str()`` if its type defines one, else not at all (``None``, as for a failed pick).
        """
        if endpoint is None:
            return None
        if isinstance(endpoint, TrackedEndpoint):
            return str(endpoint)  # its instance's address
        endpoints = self._lb.publisher.endpoints()
        names = self._names
        if names is None or names[0] is not endpoints:
            index = {id(e): str(i) for e, i in zip(endpoints, endpoints.instances, strict=True)}
            names = self._names = (endpoints, index)  # the snapshot held keeps its ids valid
        name = names[1].get(id(endpoint))
        if name is None and type(endpoint).__str__ is not object.__str__:
            name = str(endpoint)
        return name

    # -- async -----------------------------------------------------------------------------

    async def _run_async(self, first: Awaitable[Any], endpoint: object, request: Req, start: float, end: float) -> Any:
        """Await ``first``, the awaitable the first attempt returned, under the deadline; on a failure, retry."""
        token = _set_deadline(end)
        task = asyncio.current_task()
        guard: _Guard | None = None
        if task is not None:
            watchdog = self._watchdog
            if watchdog is None or watchdog.loop is not task.get_loop():
                watchdog = self._watchdog = _Watchdog(task.get_loop())
            guard = watchdog.arm(end, task)
        try:
            return await first
        except asyncio.CancelledError:
            if guard is None or not guard.fired or task is None or task.uncancel() > guard.cancelling:
                raise  # cancelled from outside, not at the deadline
            error: Exception = AttemptTimeoutError("attempt 1 cancelled at the deadline")
        except Exception as failure:
            error = failure
        finally:
            if guard is not None:
                guard.disarm()
            _reset_deadline(token)
        call = self._call(request, start, end)
        step = call.after_first(endpoint, error, _monotonic())
        return await adrive(call, step, self._runner(request), ready=self._aready)

    def __repr__(self) -> str:
        return f"Retry({self._max_attempts}, {self._timeout:g}, {self._lb!r})"
