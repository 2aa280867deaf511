"""Which failures are worth retrying, and how many retries a client may send at all."""

from __future__ import annotations

import collections
import math
import threading
import time
from datetime import timedelta
from typing import Any

from ._util import seconds
from .errors import NoEndpointsError, PublisherClosedError

__all__ = ["RetryBudget", "retryable"]

# Errors that say the request or the code is wrong: another endpoint will say the same.
_PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    ValueError,
    AttributeError,
    NameError,
    LookupError,
    AssertionError,
    NotImplementedError,
    ArithmeticError,
    ImportError,
    SyntaxError,
    RecursionError,
    MemoryError,
)


def retryable(error: BaseException) -> bool:
    """``Retry``'s default classification: retry everything but programming errors.

    Connection errors, timeouts, ``NoEndpointsError`` (discovery may catch up) and the
    errors of client libraries (``httpx.TransportError``, ...) are retried; ``TypeError``,
    ``ValueError``, ``KeyError``, ``AttributeError`` and their kin are raised at once,
    since another endpoint would fail the same way; so is ``PublisherClosedError``, which
    no retry can mend.

    >>> retryable(ConnectionRefusedError()), retryable(TimeoutError()), retryable(KeyError("x"))
    (True, True, False)
    """
    if isinstance(error, NoEndpointsError):
        return not isinstance(error, PublisherClosedError)
    return not isinstance(error, _PROGRAMMING_ERRORS)


def _budget_of(value: object, **options: float) -> RetryBudget | None:
    """A ``budget=`` argument as a budget: ``True`` makes one of its own (with ``options``),
    ``False`` or ``None`` none; a ``RetryBudget`` (perhaps shared) as it is."""
    if value is True:
        return RetryBudget(**options)
    if value is False or value is None:
        return None
    if isinstance(value, RetryBudget):
        return value
    raise TypeError(f"budget must be a RetryBudget, True (a budget of its own) or None, got {value!r}")


class RetryBudget:
    """Caps retries at a fraction of recent requests plus a small floor, as Finagle's RetryBudget.

    Over the last ``window`` seconds, retries may reach ``ratio`` x the requests plus
    ``min_per_second`` x ``window``. When a backend fails every request, a client then
    sends ``1 + ratio`` times its normal load, not ``max_attempts`` times: retries cannot
    multiply load during an outage. One budget may be shared by several ``Retry`` objects.

    Counting a request is one increment (a ``Retry`` counts its calls, which the budget
    reads, so that no call pays twice); the window is worked out only when a retry asks for
    a token, from samples of that count (the request rate since the oldest sample in the
    window stands in for what came before it). An increment lost to a race between threads
    makes the budget a little stricter, never looser.

    >>> budget = RetryBudget(ratio=0.2, min_per_second=0)
    >>> for _ in range(10):
    ...     budget.deposit()
    >>> budget.withdraw(), budget.withdraw(), budget.withdraw()
    (True, True, False)
    """

    def __init__(self, *, ratio: float = 0.2, min_per_second: float = 10.0, window: float | timedelta = 10.0) -> None:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1000:
            raise ValueError(f"ratio must be a number from 0 to 1000, got {ratio!r}")
        if isinstance(min_per_second, bool) or not isinstance(min_per_second, int | float) or min_per_second < 0:
            raise ValueError(f"min_per_second must be a non-negative number, got {min_per_second!r}")
        self.ratio = float(ratio)
        self.min_per_second = float(min_per_second)
        self.window = seconds(window, "window", allow_zero=False)
        self._requests = 0  # deposit()'s
        self._counters: list[Any] = []  # the Retrys that use it: their ``calls`` count as requests
        self._lock = threading.Lock()
        now = time.monotonic()
        self._samples: collections.deque[tuple[float, int]] = collections.deque([(now, 0)])  # (time, requests by then)
        self._retries: collections.deque[float] = collections.deque()  # when each retry in the window was granted
        self._refused = 0
        self._warned = -math.inf  # when a refusal was last logged as a warning (see _warning_due)

    def deposit(self) -> None:
        """Count one request (``Retry`` counts its own calls: no need to deposit them)."""
        self._requests += 1

    def withdraw(self) -> bool:
        """Take a token for one retry; ``False`` when the budget is spent."""
        now = time.monotonic()
        with self._lock:
            count = self._count()
            start = now - self.window
            samples = self._samples
            if now - samples[-1][0] >= min(1.0, self.window / 10):
                samples.append((now, count))
            while len(samples) > 2 and samples[1][0] <= start:
                samples.popleft()
            retries = self._retries
            while retries and retries[0] <= start:
                retries.popleft()
            allowed = self.ratio * self._requests_since(start, now, count) + self.min_per_second * self.window
            if len(retries) + 1 > allowed:
                self._refused += 1
                return False
            retries.append(now)
            return True

    def _attach(self, counter: Any) -> None:
        """Count ``counter.calls`` as requests too (a ``Retry``'s: one increment serves both)."""
        with self._lock:
            self._counters = [*self._counters, counter]

    def _count(self) -> int:
        return self._requests + sum(int(counter.calls) for counter in self._counters)

    def _requests_since(self, start: float, now: float, count: int) -> float:
        when, then = self._samples[0]
        if when >= start or now <= when:
            return count - then
        # the oldest sample predates the window: assume the same rate before and after start
        return (count - then) * (now - start) / (now - when)

    def _warning_due(self) -> bool:
        """Whether a refusal just made should be logged as a WARNING: once per window.

        A spent budget is a condition of the fleet, worth a warning; one per refused call
        would flood an application's log during the very outage the budget limits.
        """
        now = time.monotonic()
        with self._lock:
            if now - self._warned < self.window:
                return False
            self._warned = now
            return True

    @property
    def refused(self) -> int:
        """How many retries this budget has refused (a counter for metrics)."""
        return self._refused

    def __repr__(self) -> str:
        return f"RetryBudget(ratio={self.ratio:g}, min_per_second={self.min_per_second:g}, window={self.window:g})"
