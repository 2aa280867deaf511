"""The one backoff: waits between failed attempts, from a tenacity wait strategy.

Every background loop that retries (watches, polls, registrations) counts its failures in
a ``Backoff`` and asks it how long to wait; the strategy is tenacity's vocabulary, so a
user can pass any ``tenacity.wait_*`` where a ``wait=`` is offered.
"""

from __future__ import annotations

import tenacity


class Backoff:
    """Counts consecutive failures; ``delay()`` is the wait after them (0 after none).

    Default strategy: exponential from ``first`` seconds, doubling, capped at ``cap``, with
    full jitter (a uniform wait up to that), so that many clients do not retry in step.

    >>> backoff = Backoff(tenacity.wait_exponential(multiplier=0.1, max=1.0))
    >>> [backoff.next() for _ in range(5)]
    [0.1, 0.2, 0.4, 0.8, 1.0]
    >>> backoff.reset(); backoff.delay()
    0.0
    """

    def __init__(self, wait: tenacity.wait.wait_base | None = None, *, first: float = 0.05, cap: float = 5.0) -> None:
        self._wait = wait if wait is not None else tenacity.wait_random_exponential(multiplier=first, max=cap)
        self._state: tenacity.RetryCallState | None = None  # made at the first failure: most calls have none
        self.failures = 0

    def delay(self) -> float:
        """The wait after ``failures`` failures in a row (0.0 after none)."""
        if not self.failures:
            return 0.0
        state = self._state
        if state is None:
            state = self._state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = self.failures
        return max(0.0, float(self._wait(state)))

    def next(self) -> float:
        """Count one more failure; the wait after it."""
        self.failures += 1
        return self.delay()

    def reset(self) -> None:
        """A success: the next failure is the first again."""
        self.failures = 0
