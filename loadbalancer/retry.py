"""``Retry``: a balancer turned into one endpoint that retries on failure, within a deadline.

The policy objects are tenacity's (``retry_if_exception_type``, ``stop_after_attempt``,
``wait_exponential_jitter``, ...), evaluated on a ``tenacity.RetryCallState``. They are only
consulted after a failure: a call that succeeds at once pays for a pick, a context-variable
set and, for an async attempt that suspends, one entry in a deadline watchdog, not for
tenacity's loop.
"""

from __future__ import annotations

import asyncio
import collections.abc
import concurrent.futures
import contextvars
import inspect
import itertools
import math
import queue
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator
from datetime import timedelta
from types import CoroutineType, coroutine
from typing import Any, Generic, TypeVar, cast, overload

import tenacity

from . import _metrics
from ._feedback import TrackedEndpoint
from ._log import get_logger
from ._runtime import RUNTIME
from ._util import describe, seconds
from .balancer import Balancer
from .budget import RetryBudget, budget_of, retryable
from .errors import NotReadyError, RetryBudgetExhaustedError, RetryError, RetryTimeoutError

__all__ = ["Retry", "deadline", "remaining"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")

deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("loadbalancer.deadline", default=None)
"""The ``time.monotonic()`` instant by which the current ``Retry`` call must be done.

Set while an endpoint runs under ``Retry``; a factory's endpoint can read it and pass the
remaining budget on as a per-request timeout (see ``remaining()``).
"""

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool] | tenacity.retry_base

_monotonic = time.monotonic
# bound once: the successful call is the hot path, and each attribute lookup shows there
_get_deadline, _set_deadline, _reset_deadline = deadline.get, deadline.set, deadline.reset
_get_running_loop = asyncio._get_running_loop  # None outside a running event loop; a C call

# Full jitter (a uniform wait up to 10 ms, 20 ms, 40 ms, ..., at most 1 s): retries of many
# clients spread out instead of arriving together; the deadline bounds the total anyway.
_REPICKS = 3  # how many more picks a retry may ask for to avoid an endpoint that already failed
_DEFAULT_WAIT = tenacity.wait_random_exponential(multiplier=0.01, max=1.0)


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


def _is_awaitable(result: object) -> bool:
    kind = type(result)
    return kind is CoroutineType or hasattr(kind, "__await__")


@coroutine
def _resume(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Go on awaiting ``coro``, stepped by hand once already and suspended on ``pending``:
    hand ``pending`` to the task, pass what comes back in, then delegate as ``await`` does."""
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as thrown:  # a cancellation, or whatever the driver throws in
            try:
                pending = coro.throw(thrown)
            except StopIteration as done:
                return done.value
            continue
        if sent is None:  # what an asyncio task always sends: plain delegation from here on
            return (yield from coro.__await__())
        try:
            pending = coro.send(sent)
        except StopIteration as done:
            return done.value


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
    """One async Retry call registered with a watchdog."""

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
    """Cancels the tasks of async Retry calls whose deadline has passed.

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


class _Workers:
    """The threads that run ``threaded=True`` attempts: an idle one takes the next attempt,
    and when none is idle a new one starts.

    A fixed pool (``ThreadPoolExecutor``) does not fit: attempts abandoned at their deadline
    still hold their workers while their endpoint hangs, so a few hung calls use the whole
    pool up and later calls to healthy endpoints time out waiting for a worker; and its
    threads are joined at interpreter exit, so one hung attempt holds exit until it ends.
    Here no attempt ever waits for a thread (as go-kit starts a goroutine per attempt): only
    attempts in flight or hung hold one, and a hung one only until its endpoint returns;
    the threads of a quiet spell end after ``IDLE`` seconds. They are daemon threads, so
    an abandoned attempt does not hold the interpreter's exit.
    """

    IDLE = 30.0

    __slots__ = ("_idle", "_lock", "_names")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Task]] = []  # the inboxes of idle threads, last idle last
        self._names = itertools.count(1)

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        task = (future, fn, args)
        with self._lock:
            if self._idle:
                self._idle.pop().put(task)  # the most recently idle: the others may retire
                return future
        inbox: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        inbox.put(task)
        name = f"loadbalancer-retry-{next(self._names)}"
        threading.Thread(target=self._work, args=(inbox,), name=name, daemon=True).start()
        return future

    def _work(self, inbox: queue.SimpleQueue[_Task]) -> None:
        task: _Task | None = inbox.get()
        while task is not None:
            future, fn, args = task
            task = None
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as error:
                    future.set_exception(error)
            del future, fn, args  # hold nothing of the call while idle
            with self._lock:
                self._idle.append(inbox)
            try:
                task = inbox.get(timeout=self.IDLE)
            except queue.Empty:
                with self._lock:
                    if any(idle is inbox for idle in self._idle):
                        self._idle.remove(inbox)
                        return
                task = inbox.get()  # a submit() took this thread just now: its task is in the inbox


_Task = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]]


class Retry(Generic[Req, Resp]):
    """Turn a balancer into one endpoint that retries failed calls on the next endpoint.

    Each attempt asks ``lb`` for an endpoint; a call made before the publisher's source
    first answered waits for that answer first (within the deadline; it is not an attempt).
    The call ends at the first success, after
    ``max_attempts`` attempts (``RetryError`` with every attempt's exception), at an error
    that ``retry_on`` does not cover (raised as it is), or when ``timeout`` seconds have
    passed (``RetryTimeoutError``, both a ``RetryError`` and a ``TimeoutError``).

    Sync and async endpoints share the spelling: ``call(req)`` for sync endpoints,
    ``await call(req)`` for ``async`` ones; ``await call.acall(req)`` takes either kind.
    Over async endpoints, ``call(req)`` where no event loop runs returns the call unrun
    (``asyncio.run(call(req))`` runs it); used as a response it raises an error saying to
    await it. An async attempt still running at the deadline
    is cancelled. A sync attempt cannot be interrupted; it can read the deadline from
    ``loadbalancer.deadline`` / ``loadbalancer.remaining()`` and use it as its own timeout,
    or ``threaded=True`` runs each sync attempt on a worker thread so that the call returns
    at the deadline even when an endpoint hangs (the attempt is abandoned; this costs a
    thread hand-off per attempt). Abandoned attempts never starve later calls (a new
    thread starts when none is idle) nor hold the interpreter's exit (daemon threads).

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
        attempt_timeout: float | timedelta | None = None,
        logger: Any = None,
    ) -> None:
        # Both bounds are required, as in go-kit: None is not "no limit" but a mistake to report.
        for name, value, kind in (
            ("max_attempts", max_attempts, "a positive integer"),
            ("timeout", timeout, "a positive number of seconds or a timedelta"),
        ):
            if value is None:
                raise TypeError(
                    f"{name} is required: give {kind} (Retry always bounds both its attempts and its time), got None"
                )
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive integer, got {max_attempts!r}")
        if not isinstance(lb, Balancer):
            raise TypeError(f"lb must be a loadbalancer.Balancer, got {lb!r}")
        self._max_attempts = max_attempts
        self._timeout = seconds(timeout, "timeout", allow_zero=False)
        self._lb = lb
        self._pick = lb.endpoint
        self._retry = _retry_predicate(retry_on)
        wait = _strategy(wait, "wait", tenacity.wait.wait_base, "tenacity.wait_fixed(0.1)")
        stop = _strategy(stop, "stop", tenacity.stop.stop_base, "tenacity.stop_after_delay(1)")
        stop_all = tenacity.stop_after_attempt(max_attempts) | tenacity.stop_after_delay(self._timeout)
        # a plain callable is as good as a stop_base here: stop_any calls each with the state
        self._stop = stop_all if stop is None else stop_all | cast(tenacity.stop.stop_base, stop)
        self._wait = _DEFAULT_WAIT if wait is None else wait
        budget = budget_of(budget)
        self._budget = budget
        # counting a request is the only cost a budget adds to a call: a C-level increment
        # One C-level increment per call, which is also the budget's count of requests: the
        # budget sums its Retrys' counters, so no call pays for two.
        self._calls = itertools.count()
        self._deposit: Callable[[], object] = self._calls.__next__
        if budget is not None:
            budget._attach(self._calls)
        self.retries = 0  # counters the metrics layer reads (loadbalancer.metrics)
        self.give_ups = 0
        self.deadlines = 0
        self.budget_refusals = 0
        _metrics.register("retry", self)
        # Only a home for the strategies, for those that look at retry_state.retry_object.
        self._retrying = tenacity.Retrying(stop=self._stop, wait=self._wait, retry=self._retry)
        self._threaded = threaded
        self._attempt_timeout = (
            None if attempt_timeout is None else seconds(attempt_timeout, "attempt_timeout", allow_zero=False)
        )
        # one test on the hot path for both: calls that need more than the plain path
        self._slow = threaded or self._attempt_timeout is not None
        # A failed call raises to its caller, who decides what it is worth: its events are
        # INFO (a library must not write a line to stderr per failed call of an application
        # that has not set logging up). A spent budget is a fleet-level condition: a WARNING
        # at most once per budget window, INFO for the refusals in between.
        self._log = get_logger(logger, name=__name__, service=lb.publisher.service)
        self._names: tuple[object, dict[int, str]] | None = None  # (snapshot, id(endpoint) -> address)
        self._watchdog: _Watchdog | None = None
        # hasattr() on a type without __await__ raises inside: ~250 ns; remember the answer
        self._awaitable: dict[type, bool] = {CoroutineType: True}
        self._workers = _Workers() if threaded else None
        self._in_loops = False  # called inside a running event loop at least once

    @property
    def balancer(self) -> Balancer[Callable[[Req], Resp]]:
        """The balancer each attempt picks from."""
        return self._lb

    def __call__(self, request: Req) -> Resp:
        self._deposit()
        start = _monotonic()
        end = start + self._timeout
        outer = _get_deadline()
        if outer is not None and outer < end:
            end = outer  # an enclosing Retry's deadline is tighter
        if self._slow:
            if self._threaded:
                return self._call_threaded(request, start, end)
            return self._retry_sync(request, start, end, None, None)  # attempt_timeout: the general path
        token = _set_deadline(end)
        endpoint = None  # None if the pick itself failed
        try:
            endpoint = self._pick()
            result = endpoint(request)
        except Exception as error:
            _reset_deadline(token)
            if type(error) is NotReadyError and self._first_answer(end):
                return self._call_within(request, end)  # it is in: call as if now, by the same deadline
            return self._retry_sync(request, start, end, error, endpoint)
        _reset_deadline(token)
        # Casts are spelled as strings: a subscripted generic would be built on every call.
        if type(result) is not CoroutineType:  # an async endpoint's is one: no lookup
            kind = type(result)
            awaitable = self._awaitable.get(kind)
            if awaitable is None:
                awaitable = self._remember_kind(kind)
            if not awaitable:
                return result
        call = self._run_async(result, endpoint, request, start, end)
        if not self._in_loops:
            # Looking for a running loop costs a getpid() system call inside one (a third of
            # the call): look until this Retry was once called in a loop, which is when a
            # sync call over async endpoints (the mistake _PendingCall explains) stops being
            # likely.
            if _get_running_loop() is None:  # nothing can await the call in this thread now
                return cast("Resp", _PendingCall(call, result))
            self._in_loops = True
        return cast("Resp", call)

    def _first_answer(self, end: float) -> bool:
        """The publisher has not answered yet: wait for it (not an attempt), up to ``end``; whether it did."""
        publisher = self._lb.publisher
        if RUNTIME.in_loop_thread():  # the runtime reads the sources: it must not wait for itself
            return False
        return publisher.wait_ready(max(0.0, end - _monotonic())) and not publisher.closed

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
        endpoints then run as under ``call(request)``: on this thread, which they block,
        retries and their waits included. Before the publisher's first answer, ``acall``
        waits for it without blocking the event loop (``call(request)`` blocks the thread
        for it, within the deadline).
        """
        publisher = self._lb.publisher
        if publisher.ready:
            result = self(request)
        else:
            end = _monotonic() + self._timeout
            outer = _get_deadline()
            if outer is not None and outer < end:
                end = outer
            await publisher.ready_wait(max(0.0, end - _monotonic()))
            result = self._call_within(request, end)
        if _is_awaitable(result):
            return cast("Resp", await cast("Awaitable[Any]", result))
        return result

    def _remember_kind(self, kind: type) -> bool:
        if len(self._awaitable) > 256:  # endpoints returning ever new types: do not grow for ever
            self._awaitable = {CoroutineType: True}
        awaitable = self._awaitable[kind] = hasattr(kind, "__await__")
        return awaitable

    # -- after a failure -------------------------------------------------------------------

    def _new_state(self, start: float, request: Req) -> tenacity.RetryCallState:
        state = tenacity.RetryCallState(self._retrying, None, (request,), {})
        state.start_time = start
        return state

    def _next_wait(
        self, state: tenacity.RetryCallState, errors: list[BaseException], end: float, endpoint: object
    ) -> float:
        """Decide after an attempt on ``endpoint`` (``None``: the pick failed) failed: seconds
        to wait before the next, or raise."""
        error = errors[-1]
        attempt = len(errors)
        state.attempt_number = attempt
        state.set_exception((type(error), error, error.__traceback__))
        instance = self._instance_of(endpoint)
        if not self._retry(state):
            self._log.info("retry_not_retryable", attempt=attempt, instance=instance, error=describe(error))
            raise error
        now = state.outcome_timestamp or _monotonic()
        if now >= end:
            raise self._timeout_error(errors, state.start_time, "", instance)
        if self._stop(state):
            raise self._gave_up(errors, state.start_time, instance)
        delay = max(0.0, float(self._wait(state)))
        if now + delay >= end:
            raise self._timeout_error(
                errors, state.start_time, f"; the next attempt would start after it (wait {delay:.3g}s)", instance
            )
        if self._budget is not None and not self._budget.withdraw():
            self.budget_refusals += 1
            log = self._log.warning if self._budget._warning_due() else self._log.info
            log(
                "retry_budget_exhausted",
                attempts=attempt,
                instance=instance,
                error=describe(error),
                refused=self._budget.refused,
            )
            exhausted = RetryBudgetExhaustedError(
                f"retry budget exhausted after {attempt} attempts ({self._budget!r}): {self._summary(errors)}", errors
            )
            exhausted.__cause__ = error
            raise exhausted
        state.idle_for += delay
        state.upcoming_sleep = delay
        self.retries += 1
        self._log.info(
            "retry_attempt_failed", attempt=attempt, instance=instance, error=describe(error), wait=round(delay, 6)
        )
        return delay

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

    def _pick_other(self, failed: list[object]) -> Callable[[Req], Resp]:
        """A pick for a retry: the balancer's, asked again (a few times) while it offers an
        endpoint that already failed this call. Concurrent calls share a round robin's turn,
        so without this a retry could land on the endpoint that just refused it."""
        endpoint = self._pick()
        for _ in range(_REPICKS):
            if not any(endpoint is f for f in failed):
                break
            endpoint = self._pick()
        return endpoint

    def _summary(self, errors: list[BaseException]) -> str:
        return "; ".join(f"attempt {n}: {describe(e)}" for n, e in enumerate(errors, 1))

    @property
    def calls(self) -> int:
        """Calls made through this ``Retry`` (a counter for metrics)."""
        return int(repr(self._calls)[6:-1])  # itertools.count has no read: its repr holds the next value

    def _gave_up(self, errors: list[BaseException], start: float, instance: str | None) -> RetryError:
        self.give_ups += 1
        elapsed = _monotonic() - start
        self._log.info(
            "retry_gave_up",
            attempts=len(errors),
            elapsed=round(elapsed, 6),
            instance=instance,
            error=describe(errors[-1]),
        )
        error = RetryError(f"gave up after {len(errors)} attempts in {elapsed:.3f}s: {self._summary(errors)}", errors)
        error.__cause__ = errors[-1]
        return error

    def _timeout_error(
        self, errors: list[BaseException], start: float, why: str, instance: str | None
    ) -> RetryTimeoutError:
        self.deadlines += 1
        elapsed = _monotonic() - start
        self._log.info(
            "retry_deadline_exceeded",
            attempts=len(errors),
            timeout=self._timeout,
            elapsed=round(elapsed, 6),
            instance=instance,
        )
        summary = f": {self._summary(errors)}" if errors else ""
        error = RetryTimeoutError(
            f"deadline of {self._timeout:g}s exceeded after {len(errors)} attempts{why}{summary}", errors
        )
        error.__cause__ = errors[-1] if errors else None
        return error

    # -- sync ------------------------------------------------------------------------------

    def _retry_sync(self, request: Req, start: float, end: float, error: Exception | None, endpoint: object) -> Resp:
        """Attempts on this thread after a first that failed with ``error`` (``None``: from the first).

        Each attempt sees its own deadline (``attempt_timeout``, within the call's) through
        ``loadbalancer.deadline``; an async attempt made here under ``attempt_timeout`` goes on
        in ``_per_attempt_async``, which can cancel it.
        """
        errors: list[BaseException] = [] if error is None else [error]
        failed: list[object] = [] if endpoint is None else [endpoint]
        state = self._new_state(start, request)
        while True:
            if errors:
                delay = self._next_wait(state, errors, end, endpoint)
                if delay:
                    time.sleep(delay)
            token = deadline.set(self._attempt_end(end))
            endpoint = None
            try:
                endpoint = self._pick_other(failed)
                result = endpoint(request)
            except Exception as failure:
                errors.append(failure)
                if endpoint is not None:
                    failed.append(endpoint)
                continue
            finally:
                deadline.reset(token)
            if self._attempt_timeout is not None and _is_awaitable(result):
                return cast(
                    "Resp", self._per_attempt_async(result, endpoint, request, failed, errors, state, start, end)
                )
            if errors:
                self._log.debug("retry_succeeded", attempt=len(errors) + 1)
            return result

    def _call_threaded(self, request: Req, start: float, end: float) -> Resp:
        # The pick happens here, on the caller's thread, so that a retry steers away from
        # the endpoints that already failed this call as the other paths do (_pick_other).
        assert self._workers is not None
        errors: list[BaseException] = []
        failed: list[object] = []
        state: tenacity.RetryCallState | None = None
        endpoint: Callable[[Req], Resp] | None = None
        while True:
            if errors:
                if state is None:
                    state = self._new_state(start, request)
                delay = self._next_wait(state, errors, end, endpoint)
                if delay:
                    time.sleep(delay)
            endpoint = None
            try:
                endpoint = self._pick_other(failed)
            except Exception as failure:
                errors.append(failure)
                continue
            context = contextvars.copy_context()
            attempt_end = self._attempt_end(end)
            future = self._workers.submit(context.run, self._attempt_in_thread, endpoint, request, attempt_end)
            # wait() rather than result(timeout): an endpoint's own TimeoutError is a failed
            # attempt, not the deadline (concurrent.futures.TimeoutError is TimeoutError).
            if not concurrent.futures.wait((future,), max(0.0, attempt_end - _monotonic())).done:
                at = "the deadline" if attempt_end >= end else f"its {self._attempt_timeout:g}s"
                errors.append(TimeoutError(f"attempt {len(errors) + 1} still running at {at}"))
                if attempt_end >= end:
                    raise self._timeout_error(errors, start, "", self._instance_of(endpoint)) from errors[-1]
                failed.append(endpoint)  # abandoned at its own timeout: try another
                continue
            try:
                result: Resp = future.result()
            except Exception as failure:
                errors.append(failure)
                failed.append(endpoint)
                continue
            if errors:
                self._log.debug("retry_succeeded", attempt=len(errors) + 1)
            return result

    def _attempt_end(self, end: float) -> float:
        """When the attempt starting now must end: its own timeout, within the call's deadline."""
        limit = self._attempt_timeout
        return end if limit is None else min(end, _monotonic() + limit)

    async def _per_attempt_async(
        self,
        first: Any,
        endpoint: object,
        request: Req,
        failed: list[object],
        errors: list[BaseException],
        state: tenacity.RetryCallState,
        start: float,
        end: float,
    ) -> Any:
        attempt: Any = first
        while True:
            attempt_end = self._attempt_end(end)
            token = deadline.set(attempt_end)
            try:
                if not _is_awaitable(attempt):
                    return attempt
                async with asyncio.timeout(max(0.0, attempt_end - _monotonic())):
                    return await attempt
            except TimeoutError as failure:
                errors.append(TimeoutError(f"attempt {len(errors) + 1} ran out of its {self._attempt_timeout:g}s"))
                errors[-1].__cause__ = failure
                if attempt_end >= end:
                    raise self._timeout_error(errors, start, "", self._instance_of(endpoint)) from errors[-1]
            except Exception as failure:
                errors.append(failure)
            finally:
                deadline.reset(token)
            failed.append(endpoint)
            while True:
                delay = self._next_wait(state, errors, end, endpoint)
                if delay:
                    await asyncio.sleep(delay)
                endpoint = None
                try:
                    endpoint = self._pick_other(failed)
                    attempt = endpoint(request)
                except Exception as failure:
                    errors.append(failure)
                    if endpoint is not None:
                        failed.append(endpoint)
                    continue
                break

    def _attempt_in_thread(self, endpoint: Callable[[Req], Resp], request: Req, end: float) -> Resp:
        deadline.set(end)  # this runs in a copied context: nothing to reset
        result = endpoint(request)
        if _is_awaitable(result):
            cast(Coroutine[Any, Any, Any], result).close()
            raise TypeError("threaded=True runs sync endpoints; this endpoint is async: drop threaded=True")
        return result

    # -- async -----------------------------------------------------------------------------

    async def _run_async(self, first: object, endpoint: object, request: Req, start: float, end: float) -> Any:
        """Await ``first``, the awaitable the first attempt returned, with the deadline set;
        on a failure, retry."""
        token = _set_deadline(end)
        try:
            if type(first) is CoroutineType:
                # Step the attempt by hand once: most successful attempts of a fast endpoint
                # end without suspending, and an attempt that does not suspend cannot be
                # cancelled, so the deadline watchdog (current_task() and an entry in a
                # slot: more than the rest of the call) is armed only when it suspends.
                try:
                    pending = first.send(None)
                except StopIteration as done:
                    return done.value
                except Exception as error:
                    return await self._guarded(None, error, endpoint, request, start, end)
                return await self._guarded(_resume(first, pending), None, endpoint, request, start, end)
            return await self._guarded(cast("Awaitable[Any]", first), None, endpoint, request, start, end)
        finally:
            _reset_deadline(token)

    async def _guarded(
        self,
        attempt: Awaitable[Any] | None,
        error: Exception | None,
        endpoint: object,
        request: Req,
        start: float,
        end: float,
    ) -> Any:
        """The rest of an async call under the deadline watchdog: the first attempt (if it
        is still running, ``attempt``; else it failed with ``error``), then the retries."""
        task = asyncio.current_task()
        guard: _Guard | None = None
        if task is not None:
            loop = task.get_loop()
            watchdog = self._watchdog
            if watchdog is None or watchdog.loop is not loop:
                watchdog = self._watchdog = _Watchdog(loop)
            guard = watchdog.arm(end, task)
        errors: list[BaseException] = []
        try:
            if attempt is None:
                errors.append(cast(Exception, error))
            else:
                try:
                    return await attempt
                except Exception as failure:
                    errors.append(failure)
            failed = [endpoint]
            state = self._new_state(start, request)
            while True:
                delay = self._next_wait(state, errors, end, endpoint)
                if delay:
                    await asyncio.sleep(delay)
                endpoint = None
                try:
                    endpoint = self._pick_other(failed)
                    result = endpoint(request)
                    if _is_awaitable(result):
                        result = await cast(Awaitable[Any], result)
                except Exception as failure:
                    errors.append(failure)
                    if endpoint is not None:
                        failed.append(endpoint)
                    continue
                self._log.debug("retry_succeeded", attempt=len(errors) + 1)
                return result
        except asyncio.CancelledError:
            if guard is not None and guard.fired and task is not None and task.uncancel() <= guard.cancelling:
                errors.append(TimeoutError(f"attempt {len(errors) + 1} cancelled at the deadline"))
                raise self._timeout_error(errors, start, "", self._instance_of(endpoint)) from errors[-1]
            raise
        finally:
            if guard is not None:
                guard.disarm()

    def __repr__(self) -> str:
        return f"Retry({self._max_attempts}, {self._timeout:g}, {self._lb!r})"
