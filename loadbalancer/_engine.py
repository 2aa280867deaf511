"""The one retry and hedging engine: what a call does next, decided without doing any of it.

A ``Call`` holds one call's state (its deadline, the attempts made, the endpoints tried, the
errors met, the backoff) and answers each event with a ``Step``: attempts to start now, a
wait, or the end (a value to return, an error to raise). It never sleeps, calls an endpoint
or starts a task: ``drive`` (blocking) and ``adrive`` (asyncio) act on its steps, as
tenacity's ``Retrying`` and ``AsyncRetrying`` act on ``BaseRetrying.iter()``. ``Retry``,
``Hedge``, the HTTP clients and the proxy run them, each saying what a failure is worth;
the engine applies the policy: attempts, deadline, per-attempt timeout, backoff with
jitter, budget, hedge delay, and the endpoints already tried, which a retry or a hedge
avoids whenever the set holds another.

Most calls succeed at their first attempt: callers make that attempt themselves and build a
``Call`` only when it fails (``Call.after_first``), so that the engine costs them nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import tenacity

from ._util import describe
from ._workers import Workers
from .budget import RetryBudget, retryable
from .errors import AttemptTimeoutError, NotReadyError, RetryBudgetExhaustedError, RetryError, RetryTimeoutError

__all__ = [
    "DEFAULT_WAIT", "Attempt", "Call", "Policy", "Step", "Verdict", "adrive", "drive", "run_on", "told", "tried",
]  # fmt: skip

DEFAULT_WAIT: Callable[[tenacity.RetryCallState], float] = tenacity.wait_random_exponential(multiplier=0.01, max=1.0)
"""Full jitter: a uniform wait up to 10 ms, 20 ms, 40 ms, ... at most 1 s, so that many clients' retries spread out."""

_REPICKS = 3  # more picks asked of the balancer before looking through the set for an endpoint not tried
NOTHING: Any = object()


class Deadline:
    """The ``time.monotonic()`` instant by which the current call (or attempt) must be done, or ``None``.

    A context variable: ``Retry`` (and every caller on the engine) sets it around each
    attempt, so a sync endpoint can pass what is left on as its own timeout.
    ``loadbalancer.deadline()`` reads it, as does ``.get()``; ``.set()`` and ``.reset()``
    are the context variable's; ``var`` is the ``contextvars.ContextVar`` itself;
    ``loadbalancer.remaining()`` gives the seconds left.

    >>> import loadbalancer
    >>> loadbalancer.deadline() is None  # outside a call
    True
    """

    __slots__ = ("get", "reset", "set", "var")

    def __init__(self) -> None:
        self.var: contextvars.ContextVar[float | None] = contextvars.ContextVar("loadbalancer.deadline", default=None)
        self.get = self.var.get
        self.set = self.var.set
        self.reset = self.var.reset

    def __call__(self) -> float | None:
        return self.var.get()

    def __repr__(self) -> str:
        return f"<loadbalancer.deadline {self.var.get()!r}>"


deadline = Deadline()


class Verdict(Exception):
    """Raised by an attempt to say how it failed: ``error``, whether to ``retry``, an ``answer`` to
    return if the call ends there (an HTTP answer), the shortest wait before a retry (``at_least``)."""

    def __init__(self, error: BaseException, *, retry: bool, answer: Any = NOTHING, at_least: float = 0.0) -> None:
        super().__init__(error)
        self.error = error
        self.retry = retry
        self.answer = answer
        self.at_least = at_least


@dataclass(frozen=True)
class Policy:
    """How a call is retried and hedged.

    - ``attempts``: at most this many, the first included;
    - ``timeout``: the call's deadline, seconds (``None``: none);
    - ``attempt_timeout``: each attempt's own, within the deadline (``None``: the deadline's);
    - ``wait``: the wait before a retry, a tenacity wait strategy or a function of a
      ``tenacity.RetryCallState`` (default: full jitter from 10 ms, doubling, up to 1 s);
    - ``stop``: a further tenacity stop condition, or ``None``;
    - ``budget``: a ``RetryBudget`` every retry and hedge takes a token from, or ``None``;
    - ``hedge``: seconds after which a slow attempt gets a second one on another endpoint (a
      number, or a function giving it at each call); ``None``: no hedging.
    """

    attempts: int = 3
    timeout: float | None = None
    attempt_timeout: float | None = None
    wait: Callable[[tenacity.RetryCallState], float] = DEFAULT_WAIT
    stop: Callable[[tenacity.RetryCallState], bool] | None = None
    budget: RetryBudget | None = None
    hedge: float | Callable[[], float] | None = None
    _retrying: tenacity.Retrying = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # only a home for the strategies, for those that look at retry_state.retry_object
        object.__setattr__(self, "_retrying", tenacity.Retrying(wait=self.wait))

    def end(self, start: float) -> float:
        """The deadline of a call that starts at ``start`` (``inf``: none)."""
        return math.inf if self.timeout is None else start + self.timeout


class Attempt:
    """One attempt of a call: on which endpoint, its number, by when it must end, whether a hedge."""

    __slots__ = ("deadline", "endpoint", "hedge", "limit", "number", "started")

    def __init__(
        self, endpoint: Any, number: int, deadline: float, hedge: bool, started: float, limit: float | None = None
    ) -> None:
        self.endpoint = endpoint
        self.number = number
        self.deadline = deadline
        self.hedge = hedge
        self.started = started
        self.limit = limit  # its own timeout, when that (not the call's deadline) sets its deadline

    def timed_out(self, what: str = "cancelled") -> AttemptTimeoutError:
        """The error of this attempt given up at its deadline (``what``: "cancelled" or "still running")."""
        if self.limit is not None:
            return AttemptTimeoutError(f"attempt {self.number} ran out of its {self.limit:g}s")
        return AttemptTimeoutError(f"attempt {self.number} {what} at the deadline")

    def __repr__(self) -> str:
        return f"Attempt({self.number}, {self.endpoint!r}{', hedge' if self.hedge else ''})"


class Step:
    """What the driver does now.

    Start the attempts in ``start``. If the call is ``done``, return ``value`` or raise
    ``error`` (and cancel what still runs). Else, while attempts run, wait for one to end
    (``Call.succeeded``, ``Call.failed``) or until ``wake`` (``Call.wake``: time to hedge);
    when none runs, wait ``sleep`` seconds (with ``not_ready``: at most that long for the
    publisher's first answer) and go on with ``Call.resume``.
    """

    __slots__ = ("done", "error", "not_ready", "sleep", "start", "value", "wake")

    def __init__(
        self,
        start: Sequence[Attempt] = (),
        *,
        sleep: float = 0.0,
        wake: float = math.inf,
        not_ready: bool = False,
        done: bool = False,
        value: Any = None,
        error: BaseException | None = None,
    ) -> None:
        self.start = start
        self.sleep = sleep
        self.wake = wake
        self.not_ready = not_ready
        self.done = done
        self.value = value
        self.error = error


def summary(errors: Sequence[BaseException]) -> str:
    """``attempt 1: ConnectionRefusedError: ...; attempt 2: ...``."""
    return "; ".join(f"attempt {n}: {describe(error)}" for n, error in enumerate(errors, 1))


def conclusion(
    reason: str, errors: list[BaseException], elapsed: float, why: str, timeout: float | None
) -> BaseException:
    """The error a call ends with: ``RetryTimeoutError``, ``RetryBudgetExhaustedError`` or ``RetryError``."""
    listed = f": {summary(errors)}" if errors else ""
    if reason == "deadline":
        limit = f"of {timeout:g}s " if timeout is not None else ""
        return RetryTimeoutError(f"deadline {limit}exceeded after {len(errors)} attempts{why}{listed}", errors)
    if reason == "budget":
        return RetryBudgetExhaustedError(f"retry budget exhausted after {len(errors)} attempts{listed}", errors)
    return RetryError(f"gave up after {len(errors)} attempts in {elapsed:.3f}s{listed}", errors)


Conclude = Callable[[str, list[BaseException], float, str, "float | None"], BaseException]


def tried(call: Call) -> str:
    """``10.0.0.1:80: ConnectError: ...; 10.0.0.2:80: ...``: each failed attempt's instance and error."""
    return "; ".join(f"{call.name(endpoint) or 'no instance'}: {describe(error)}" for endpoint, error in call.failures)


_TOLD: dict[type[BaseException], type[BaseException]] = {}


def _told_str(self: BaseException) -> str:
    return str(getattr(self, "_loadbalancer_told", ""))


def told(error: BaseException, call: Call, what: str) -> BaseException:
    """``error``, the last attempt's, made to tell the whole call: ``what``, and each instance tried with its error.

    The error stays the object it is (its type's ``isinstance``, its attributes, its
    traceback): its class becomes a subclass of its own whose message is the call's, and
    ``error.tried`` holds ``(instance, error)`` for each failed attempt. Where its class
    cannot be changed (a built-in exception), the call's message is added as a note.
    """
    if not call.failures or hasattr(error, "_loadbalancer_told"):
        return error
    count = len(call.failures)
    message = f"{what}: {count} attempt{'' if count == 1 else 's'} failed: {tried(call)}"
    cls = type(error)
    sub = _TOLD.get(cls)
    if sub is None:
        namespace = {"__str__": _told_str, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
        sub = _TOLD[cls] = type(cls.__name__, (cls,), namespace)
    try:
        error.__class__ = sub
    except TypeError:
        error.add_note(message)
        return error
    error._loadbalancer_told = message  # type: ignore[attr-defined]
    error.tried = tuple((call.name(endpoint), failure) for endpoint, failure in call.failures)  # type: ignore[attr-defined]
    return error


class Call:
    """One call's decisions.

    ``pick()`` is the balancer's next endpoint; ``candidates()`` the current set, looked
    through for one not tried yet when the balancer keeps offering tried ones. ``retryable``
    classifies what an attempt raised when its caller gives no verdict (default:
    ``loadbalancer.retryable``). ``conclude`` makes the error a call that cannot go on ends
    with, from the reason (``"attempts"``, ``"stop"``, ``"deadline"``, ``"budget"``); a call
    whose last failure carried an ``answer`` returns that instead. ``log`` receives the
    events, named ``{events}_attempt_failed``, ``_gave_up``, ``_deadline_exceeded``,
    ``_budget_exhausted``, ``_not_retryable``, ``_hedge_sent``, ``_succeeded``; ``stats`` the
    counters it has of ``retries``, ``give_ups``, ``deadlines``, ``budget_refusals``,
    ``hedges``, ``hedge_wins``; ``name(endpoint)`` names an endpoint's instance in events.
    ``discard(answer)`` releases an answer that a later attempt replaces.
    """

    __slots__ = (
        "_state", "answer", "attempts", "candidates", "conclude", "discard", "end", "errors", "events", "failures",
        "hedged", "log", "name", "pick", "policy", "ready_waited", "request", "retryable", "running", "start",
        "stats", "tried",
    )  # fmt: skip

    def __init__(
        self,
        policy: Policy,
        pick: Callable[[], Any],
        *,
        start: float,
        end: float | None = None,
        candidates: Callable[[], Sequence[Any]] | None = None,
        retryable: Callable[[BaseException], bool] = retryable,
        conclude: Conclude = conclusion,
        log: Any = None,
        events: str = "retry",
        stats: Any = None,
        name: Callable[[Any], str | None] = lambda endpoint: None if endpoint is None else str(endpoint),
        discard: Callable[[Any], object] | None = None,
        request: Any = None,
    ) -> None:
        self.policy = policy
        self.pick = pick
        self.candidates = candidates
        self.retryable = retryable
        self.conclude = conclude
        self.log = log
        self.events = events
        self.stats = stats
        self.name = name
        self.discard = discard
        self.request = request
        self.start = start
        self.end = policy.end(start) if end is None else end
        self.attempts = 0  # started
        self.running: list[Attempt] = []
        self.errors: list[BaseException] = []
        self.tried: list[Any] = []  # endpoints of failed attempts
        self.failures: list[tuple[Any, BaseException]] = []  # each failed attempt's endpoint (or None) and error
        self.answer: Any = NOTHING  # the last failed attempt's answer, returned if the call ends on it
        self.hedged = False
        self.ready_waited = False
        self._state: tenacity.RetryCallState | None = None

    # -- events --------------------------------------------------------------------------------

    def begin(self, now: float) -> Step:
        """The first attempt."""
        return self._next(now)

    def after_first(self, endpoint: Any, error: BaseException, now: float) -> Step:
        """The caller made the first attempt itself (on ``endpoint``; ``None``: its pick failed), and it
        raised ``error`` (a ``Verdict``, or an error ``retryable`` judges)."""
        self.attempts = 1
        attempt = Attempt(endpoint, 1, self.end, False, self.start)
        self.running.append(attempt)
        return self.raised(attempt, error, now)

    def succeeded(self, attempt: Attempt, value: Any, now: float) -> Step:
        """``attempt`` returned ``value``: the call is done."""
        self._leave(attempt)
        self._replace_answer(NOTHING)
        if self.errors and self.log is not None:
            self.log.debug(f"{self.events}_succeeded", attempt=attempt.number, hedge=attempt.hedge)
        if attempt.hedge and self.stats is not None:
            self.stats.hedge_wins += 1
        return Step(done=True, value=value)

    def failed(
        self,
        attempt: Attempt,
        error: BaseException,
        now: float,
        *,
        retry: bool | None = None,
        answer: Any = NOTHING,
        at_least: float = 0.0,
    ) -> Step:
        """``attempt`` failed with ``error``. ``retry``: whether another attempt is worth making
        (default: ``retryable(error)``); ``answer``: what the call returns rather than raising
        if it ends on this failure (an HTTP answer); ``at_least``: the shortest wait before a
        retry (the answer's ``Retry-After``)."""
        self._leave(attempt)
        self.errors.append(error)
        self.failures.append((attempt.endpoint, error))
        if answer is not NOTHING:
            self._replace_answer(answer)
        if attempt.endpoint is not None:
            self.tried.append(attempt.endpoint)
        if self.running:  # another attempt (a hedge) still runs: its outcome decides
            return Step(wake=self._hedge_at())
        if not (self.retryable(error) if retry is None else retry):
            if self.log is not None:
                self.log.info(
                    f"{self.events}_not_retryable", attempt=attempt.number, instance=self.name(attempt.endpoint),
                    error=describe(error),
                )  # fmt: skip
            return self._end(error)
        reason, why, delay = self._verdict(attempt, error, now, at_least)
        if reason:
            return self._stop(reason, why, attempt, error)
        if self.stats is not None:
            self.stats.retries += 1
        if self.log is not None:
            self.log.info(
                f"{self.events}_attempt_failed", attempt=attempt.number, instance=self.name(attempt.endpoint),
                error=describe(error), wait=round(delay, 6),
            )  # fmt: skip
        self._replace_answer(NOTHING)
        if delay > 0:
            return Step(sleep=delay)
        return self._next(now)

    def raised(self, attempt: Attempt, error: BaseException, now: float) -> Step:
        """``attempt`` raised ``error``: ``failed()``, with the verdict it carries if it is a ``Verdict``."""
        if type(error) is Verdict:
            return self.failed(
                attempt, error.error, now, retry=error.retry, answer=error.answer, at_least=error.at_least
            )
        return self.failed(attempt, error, now)

    def resume(self, now: float) -> Step:
        """After a wait (``sleep``, or for the publisher's first answer): the next attempt."""
        if now >= self.end and self.errors:
            return self._stop("deadline", "", None, self.errors[-1])
        return self._next(now)

    def wake(self, now: float) -> Step:
        """Time to hedge the running attempt, if the policy, the budget and the set allow it."""
        due = self._hedge_at()
        if now < due or not self.running:
            return Step(wake=due)
        self.hedged = True  # one hedge a call
        budget = self.policy.budget
        if self.attempts >= self.policy.attempts or (budget is not None and not budget.withdraw()):
            return Step()
        exclude = [attempt.endpoint for attempt in self.running] + self.tried
        try:
            endpoint = self._pick_other(exclude)
        except Exception:
            return Step()  # nowhere to send it: the running attempt goes on alone
        if any(endpoint is other for other in exclude):
            return Step()
        if self.stats is not None:
            self.stats.hedges += 1
        if self.log is not None:
            self.log.debug(f"{self.events}_hedge_sent", instance=self.name(endpoint), after=round(now - self.start, 6))
        return Step((self._attempt(endpoint, now, hedge=True),))

    # -- the policy ----------------------------------------------------------------------------

    def attempt_end(self, now: float) -> float:
        """When an attempt starting ``now`` must end: its own timeout, within the call's deadline."""
        limit = self.policy.attempt_timeout
        return self.end if limit is None else min(self.end, now + limit)

    def _next(self, now: float) -> Step:
        try:
            endpoint = self._pick_other(self.tried) if self.tried else self.pick()
        except NotReadyError as error:
            if not self.ready_waited and now < self.end:
                self.ready_waited = True  # the publisher's first answer is waited for, once: not an attempt
                return Step(not_ready=True, sleep=self.end - now)
            return self._pick_failed(error, now)
        except Exception as error:
            return self._pick_failed(error, now)
        return Step((self._attempt(endpoint, now, hedge=False),), wake=self._hedge_at())

    def _pick_failed(self, error: BaseException, now: float) -> Step:
        self.attempts += 1
        attempt = Attempt(None, self.attempts, self.end, False, now)
        self.running.append(attempt)
        return self.failed(attempt, error, now)

    def _attempt(self, endpoint: Any, now: float, *, hedge: bool) -> Attempt:
        self.attempts += 1
        end = self.attempt_end(now)
        limit = self.policy.attempt_timeout if end < self.end else None
        attempt = Attempt(endpoint, self.attempts, end, hedge, now, limit)
        self.running.append(attempt)
        return attempt

    def _hedge_at(self) -> float:
        """When to hedge the attempt that runs (``inf``: never)."""
        hedge = self.policy.hedge
        if hedge is None or self.hedged or len(self.running) != 1:
            return math.inf
        return min(self.end, self.running[0].started + (hedge() if callable(hedge) else hedge))

    def _verdict(self, attempt: Attempt, error: BaseException, now: float, at_least: float) -> tuple[str, str, float]:
        """Why the call stops after this failure (``""``: it goes on), and the wait before the next attempt."""
        if now >= self.end:
            return "deadline", "", 0.0
        if self.attempts >= self.policy.attempts:
            return "attempts", "", 0.0
        state = self._state
        if state is None:
            state = self._state = tenacity.RetryCallState(self.policy._retrying, None, (self.request,), {})
            state.start_time = self.start
        state.attempt_number = attempt.number
        state.outcome_timestamp = now
        state.set_exception((type(error), error, error.__traceback__))
        if self.policy.stop is not None and self.policy.stop(state):
            return "stop", "", 0.0
        delay = max(at_least, float(self.policy.wait(state)))
        if now + delay >= self.end:
            return "deadline", f"; the next attempt would start after it (wait {delay:.3g}s)", delay
        budget = self.policy.budget
        if budget is not None and not budget.withdraw():
            return "budget", "", delay
        state.idle_for += delay
        state.upcoming_sleep = delay
        return "", "", delay

    def _pick_other(self, exclude: Sequence[Any]) -> Any:
        """The balancer's pick, asked again while it offers an endpoint in ``exclude``; then
        any endpoint of the set that is not; then, if every one is, the balancer's pick anyway."""
        endpoint = self.pick()
        for _ in range(_REPICKS):
            if not any(endpoint is other for other in exclude):
                return endpoint
            endpoint = self.pick()
        if self.candidates is not None and any(endpoint is other for other in exclude):
            for candidate in self.candidates():
                if not any(candidate is other for other in exclude):
                    return candidate
        return endpoint

    # -- the end -------------------------------------------------------------------------------

    def _leave(self, attempt: Attempt) -> None:
        if attempt in self.running:
            self.running.remove(attempt)

    def _replace_answer(self, answer: Any) -> None:
        previous, self.answer = self.answer, answer
        if previous is not NOTHING and previous is not answer and self.discard is not None:
            self.discard(previous)

    def _end(self, error: BaseException) -> Step:
        if self.answer is not NOTHING:
            return Step(done=True, value=self.answer)
        return Step(done=True, error=error)

    def _stop(self, reason: str, why: str, attempt: Attempt | None, error: BaseException) -> Step:
        counter, event = _STOPS.get(reason, ("give_ups", "gave_up"))
        if self.stats is not None:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        elapsed = time.monotonic() - self.start
        if self.log is not None:
            fields: dict[str, Any] = {
                "attempts": len(self.errors),
                "elapsed": round(elapsed, 6),
                "error": describe(error),
            }
            log = self.log.info
            budget = self.policy.budget
            if reason == "budget" and budget is not None:
                fields["refused"] = budget.refused  # a fleet's condition: a warning once a window, not per call
                log = self.log.warning if budget._warning_due() else self.log.info
            elif reason == "deadline":
                fields["timeout"] = self.policy.timeout
            log(f"{self.events}_{event}", instance=self.name(attempt.endpoint) if attempt else None, **fields)
        if self.answer is not NOTHING:
            return Step(done=True, value=self.answer)
        failure = self.conclude(reason, self.errors, elapsed, why, self.policy.timeout)
        if failure is not error and failure.__cause__ is None:
            failure.__cause__ = error
        return Step(done=True, error=failure)


_STOPS = {"budget": ("budget_refusals", "budget_exhausted"), "deadline": ("deadlines", "deadline_exceeded")}


# -- the drivers ------------------------------------------------------------------------------


def drive(
    call: Call,
    step: Step,
    run: Callable[[Attempt], Any],
    *,
    ready: Callable[[float], object] | None = None,
    workers: Workers | None = None,
) -> Any:
    """Act on ``call``'s steps on this thread until it ends: return its value, or raise its error.

    ``run(attempt)`` makes one attempt (raising on failure); it runs here, seeing its deadline
    in ``loadbalancer.deadline``, or with ``workers`` on one of their threads, given up at its
    deadline (an ``AttemptTimeoutError``). ``ready(seconds)`` waits for the publisher's first
    answer. No hedging here: a hedge needs a second attempt running beside the first.
    """
    monotonic = time.monotonic
    while True:
        if step.done:
            if step.error is not None:
                raise step.error
            return step.value
        if not step.start:
            if step.not_ready and ready is not None:
                ready(step.sleep)
            elif step.sleep:
                time.sleep(step.sleep)
            step = call.resume(monotonic())
            continue
        attempt = step.start[0]
        try:
            if workers is None:
                token = deadline.set(attempt.deadline)
                try:
                    value = run(attempt)
                finally:
                    deadline.reset(token)
            else:
                value = run_on(workers, run, attempt)
        except Exception as error:
            step = call.raised(attempt, error, monotonic())
            continue
        step = call.succeeded(attempt, value, monotonic())


async def adrive(
    call: Call,
    step: Step,
    run: Callable[[Attempt], Any],
    *,
    ready: Callable[[float], Awaitable[object]] | None = None,
    discard: Callable[[Any], object] | None = None,
) -> Any:
    """Act on ``call``'s steps on the running event loop until it ends: its value, or raise its error.

    Never blocks the loop: waits are ``asyncio.sleep``. ``run(attempt)`` returns the attempt's
    value or an awaitable of it (a sync endpoint runs inline). Each attempt runs as a task
    within its deadline (cancelled past it: an ``AttemptTimeoutError``), so that a hedge can
    run beside it; the call's end cancels what still runs, as does the call's own
    cancellation, and ``discard`` releases what such an attempt still produced.
    """
    running: dict[asyncio.Task[Any], Attempt] = {}
    monotonic = time.monotonic
    loop = asyncio.get_running_loop()
    try:
        while True:
            if len(step.start) == 1 and not running and step.wake == math.inf:
                attempt = step.start[0]  # alone and nothing to hedge it with: awaited here, no task
                try:
                    value = await _within(run, attempt)
                except Exception as failure:
                    step = call.raised(attempt, failure, monotonic())
                else:
                    step = call.succeeded(attempt, value, monotonic())
                continue
            for attempt in step.start:
                running[loop.create_task(_within(run, attempt))] = attempt
            if step.done:
                if step.error is not None:
                    raise step.error
                return step.value
            if not running:
                if step.not_ready and ready is not None:
                    await ready(step.sleep)
                elif step.sleep:
                    await asyncio.sleep(step.sleep)
                step = call.resume(monotonic())
                continue
            timeout = None if step.wake == math.inf else max(0.0, step.wake - monotonic())
            finished, _ = await asyncio.wait(running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not finished:
                step = call.wake(monotonic())
                continue
            step = _settle(call, step, finished, running, discard)
    finally:
        for task in running:
            task.cancel()
            if discard is not None:
                task.add_done_callback(lambda done: _discard(done, discard))


def _settle(
    call: Call,
    step: Step,
    finished: set[asyncio.Task[Any]],
    running: dict[asyncio.Task[Any], Attempt],
    discard: Callable[[Any], object] | None,
) -> Step:
    """Tell ``call`` how the ``finished`` attempts ended; the step it decides next."""
    for task in finished:
        attempt = running.pop(task)
        outcome = task.exception()
        if step.done:  # decided by another attempt that ended at the same time
            if outcome is None and discard is not None:
                discard(task.result())
            continue
        if outcome is None:
            step = call.succeeded(attempt, task.result(), time.monotonic())
        elif isinstance(outcome, Exception):
            step = call.raised(attempt, outcome, time.monotonic())
        else:
            raise outcome
    return step


async def _within(run: Callable[[Attempt], Any], attempt: Attempt) -> Any:
    token = deadline.set(attempt.deadline)
    try:
        result = run(attempt)
        if not hasattr(type(result), "__await__"):
            return result
        left = attempt.deadline - time.monotonic()
        if left == math.inf:
            return await result
        scope = asyncio.timeout(max(0.0, left))
        try:
            async with scope:
                return await result
        except TimeoutError as error:
            if not scope.expired():
                raise  # the endpoint's own timeout, not the attempt's deadline
            raise attempt.timed_out() from error
    finally:
        deadline.reset(token)


def _discard(task: asyncio.Task[Any], discard: Callable[[Any], object]) -> None:
    if not task.cancelled() and task.exception() is None:
        discard(task.result())


def run_on(workers: Workers, run: Callable[[Attempt], Any], attempt: Attempt) -> Any:
    """``run(attempt)`` on one of ``workers``' threads: its value, or ``AttemptTimeoutError`` at its deadline.

    The attempt waits for a thread within its deadline; given up, it keeps its thread until
    its endpoint returns (that thread is then not free for others: ``Workers`` bounds them).
    """
    left = attempt.deadline - time.monotonic()
    ticket = workers.submit(_in_thread, run, attempt, wait=None if left == math.inf else max(0.0, left))
    if ticket is None:
        raise AttemptTimeoutError(f"attempt {attempt.number}: none of the {workers.size} threads came free in time")
    future = ticket.future
    left = attempt.deadline - time.monotonic()
    # wait() rather than result(timeout): an endpoint's own TimeoutError is a failed attempt, not the deadline
    if not concurrent.futures.wait((future,), None if left == math.inf else max(0.0, left)).done:
        raise attempt.timed_out("still running")
    return future.result()


def _in_thread(run: Callable[[Attempt], Any], attempt: Attempt) -> Any:
    deadline.set(attempt.deadline)  # a copied context: nothing to reset
    return run(attempt)
