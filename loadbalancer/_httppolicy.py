"""What an HTTP client retries, and when: the rules the httpx transports, the requests adapter and
the aiohttp middleware share (in the core, so that none of them needs another's HTTP library).

Envoy's and gRPC's rules, in short: a request that never left (the connection could not be
made) may go to another instance whatever its method; one that was sent is retried only
when it is idempotent (or allowed) and its body can be sent again; 502, 503, 504 and 429
answers are retried likewise, after the ``Retry-After`` they ask for when it fits in the
deadline.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import tenacity

from ._engine import DEFAULT_WAIT, Policy
from ._httpspec import FAILURE_STATUSES, IDEMPOTENT, RETRY_STATUSES
from ._util import seconds
from .budget import RetryBudget, _budget_of

__all__ = ["IDEMPOTENT", "RetryPolicy", "options_of", "policy_of", "retry_after"]


def _statuses(value: Iterable[int], name: str) -> frozenset[int]:
    found = frozenset(value)
    for status in found:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"{name} must hold HTTP status codes (100-599), got {status!r}")
    return found


@dataclass(frozen=True)
class RetryPolicy:
    """How an HTTP call is retried. Every field has the default the transports use.

    - ``attempts``: at most this many attempts in all (1: no retry; the transports' shorthand
      ``retries=N`` means N retries after the first attempt, ``attempts=N + 1``);
    - ``timeout``: the overall deadline of a call, seconds (``None``: none);
    - ``attempt_timeout``: each attempt's own timeout (Envoy's ``per_try_timeout``): a slow
      instance is left for another while the deadline allows;
    - ``methods``: methods retried once sent (default: the idempotent ones); a request
      that never left is retried whatever its method;
    - ``statuses``: answers retried (502, 503, 504, 429); ``retry_after``: honour their
      ``Retry-After`` (seconds or a date) when it fits in the deadline, else return them;
    - ``failure_statuses``: answers that count as the instance's failure for outlier
      ejection and feedback balancers (5xx);
    - ``wait``: a tenacity wait strategy between attempts (default: full jitter from 10 ms,
      doubling, up to 1 s); ``budget``: a ``RetryBudget`` (``True``: one of its own,
      ``None``: no limit);
    - ``hedge_after``: seconds after which an idempotent request still unanswered is sent to
      a second instance too (the first answer wins; async transports only; ``None``: never).

    Build one and hand it to several clients: ``Transport(services, retries=policy)``.
    """

    attempts: int = 3
    timeout: float | None = None
    attempt_timeout: float | None = None
    methods: Collection[str] = IDEMPOTENT
    statuses: Collection[int] = RETRY_STATUSES
    retry_after: bool = True
    failure_statuses: Collection[int] = FAILURE_STATUSES
    wait: tenacity.wait.wait_base | None = None
    budget: RetryBudget | bool | None = True
    hedge_after: float | None = None
    _budget: RetryBudget | None = field(init=False, repr=False, compare=False)
    _engine: Policy = field(init=False, repr=False, compare=False)
    _hedging: Policy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts must be a positive integer (retries: 0 or more), got {self.attempts!r}")
        set_ = object.__setattr__
        if self.timeout is not None:
            set_(self, "timeout", seconds(self.timeout, "timeout", allow_zero=False))
        if self.attempt_timeout is not None:
            set_(self, "attempt_timeout", seconds(self.attempt_timeout, "attempt_timeout", allow_zero=False))
        if self.hedge_after is not None:
            set_(self, "hedge_after", seconds(self.hedge_after, "hedge_after"))
        set_(self, "methods", frozenset(method.upper() for method in self.methods))
        set_(self, "statuses", _statuses(self.statuses, "retry_statuses"))
        if not isinstance(self.failure_statuses, range):
            set_(self, "failure_statuses", _statuses(self.failure_statuses, "failure_statuses"))
        if self.wait is not None and not callable(self.wait):
            raise TypeError(f"wait must be a tenacity wait strategy, got {self.wait!r}")
        set_(self, "_budget", _budget_of(self.budget))
        engine = Policy(
            attempts=self.attempts,
            timeout=self.timeout,
            attempt_timeout=self.attempt_timeout,
            wait=self.wait or DEFAULT_WAIT,
            budget=self._budget,
        )
        set_(self, "_engine", engine)
        set_(self, "_hedging", replace(engine, hedge=self.hedge_after) if self.hedge_after is not None else engine)

    @classmethod
    def of(
        cls,
        retries: int | RetryPolicy | None,
        timeout: float | timedelta | None,
        attempt_timeout: float | timedelta | None,
        **options: object,
    ) -> RetryPolicy:
        """The clients' keyword arguments as a policy (``retries`` may be a policy already)."""
        if isinstance(retries, RetryPolicy):
            return retries
        if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or retries < 0):
            raise ValueError(f"retries must be a whole number of retries (0: none), or a RetryPolicy, got {retries!r}")
        return cls(
            1 if retries is None else retries + 1,
            None if timeout is None else seconds(timeout, "timeout", allow_zero=False),
            None if attempt_timeout is None else seconds(attempt_timeout, "attempt_timeout", allow_zero=False),
            **options,  # type: ignore[arg-type]
        )

    def engine(self, hedge: bool = False) -> Policy:
        """The retry engine's policy (with the hedge delay when ``hedge``)."""
        return self._hedging if hedge else self._engine

    def deposit(self) -> None:
        if self._budget is not None:
            self._budget.deposit()

    def resendable(self, method: str, replayable: bool) -> bool:
        """Whether a request that was sent may be sent again."""
        return replayable and method in self.methods

    def answer(self, method: str, replayable: bool, status: int, retry_after_header: str | None) -> float | None:
        """An answer with ``status``: ``None`` to return it, else the shortest wait before asking again."""
        if status not in self.statuses or not self.resendable(method, replayable):
            return None
        asked = retry_after(retry_after_header) if self.retry_after else None
        return asked or 0.0

    def failure(self, method: str, replayable: bool, unsent: bool) -> bool:
        """Whether a transport failure is worth another attempt: the request never left
        (``unsent``: any method, if its body can be sent again), or it is resendable."""
        return replayable if unsent else self.resendable(method, replayable)

    def deadline(self, start: float) -> float:
        return math.inf if self.timeout is None else start + self.timeout

    def attempt_limit(self, end: float) -> float | None:
        """Seconds the next attempt may take: its own timeout, within what is left of the deadline."""
        left = end - time.monotonic()
        limit = left if self.attempt_timeout is None else min(self.attempt_timeout, left)
        return None if limit == math.inf else max(limit, 0.0)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number of seconds, or an HTTP date); ``None`` if unreadable.

    >>> retry_after("2"), retry_after("soon")
    (2.0, None)
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def policy_of(
    policy: RetryPolicy | None,
    retries: int | RetryPolicy | None,
    timeout: float | timedelta | None,
    attempt_timeout: float | timedelta | None,
    options: dict[str, Any],
) -> RetryPolicy:
    """``policy``, or the one the clients' shorthand keyword arguments describe (not both)."""
    if policy is None:
        return RetryPolicy.of(retries, timeout, attempt_timeout, **options)
    if not isinstance(policy, RetryPolicy):
        raise TypeError(f"policy must be a loadbalancer.http.RetryPolicy, got {policy!r}")
    defaults = options_of(None, None, True, None, None, True)
    if retries != 2 or timeout is not None or attempt_timeout is not None or options != defaults:
        raise ValueError("give the retry options either in policy= or as keyword arguments, not both")
    return policy


def options_of(
    methods: Any,
    statuses: Any,
    honour_retry_after: bool,
    failures: Any,
    wait: Any,
    budget: Any,
    hedge_after: Any = None,
) -> dict[str, Any]:
    options: dict[str, Any] = {"retry_after": honour_retry_after, "wait": wait, "budget": budget}
    if hedge_after is not None:
        options["hedge_after"] = seconds(hedge_after, "hedge_after")
    if methods is not None:
        options["methods"] = methods
    if statuses is not None:
        options["statuses"] = statuses
    if failures is not None:
        options["failure_statuses"] = failures
    return options
