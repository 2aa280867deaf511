"""Hedged requests: when an attempt is slow, send a second one elsewhere; the first answer wins."""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Generic, TypeVar

from . import _metrics
from ._engine import Attempt, Call, Policy, adrive, deadline
from ._log import get_logger
from ._util import seconds
from .balancer import Balancer
from .budget import RetryBudget, _budget_of

__all__ = ["Hedge"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")

_SAMPLES = 1000  # latencies kept for the percentile
_MIN_SAMPLES = 20  # below this, the initial delay stands


class Hedge(Balancer[Callable[[Req], Awaitable[Resp]]], Generic[Req, Resp]):
    """Wraps a balancer of async endpoints: each call hedges against a slow endpoint.

    A call starts on ``lb``'s endpoint; if it has not answered after the hedge delay, a second
    attempt goes to another endpoint (one not tried in the call, whenever the set holds one),
    and the first success wins: the other attempt is cancelled, as both are when the caller
    cancels the call. If both fail, the last error is raised (so a ``Retry`` around it can go on).
    The delay is fixed (``after=`` seconds) or follows the latency of recent calls
    (``percentile=0.95``: hedge the slowest 5%), starting from ``initial`` until enough
    calls were seen. Hedges spend a ``RetryBudget`` (default: 10% of calls plus 10 a
    second), so a slow fleet does not get twice the load. It is itself a balancer, so it
    composes: ``Retry(3, 2.0, Hedge(RoundRobin(publisher), percentile=0.95))``.

    A call made before the publisher's source first answered waits for that answer, up to
    the enclosing ``Retry``'s deadline, or ``ready_timeout`` seconds outside one.

    >>> from loadbalancer import RoundRobin, static
    >>> async def endpoint(request):
    ...     return request
    >>> hedged = Hedge(RoundRobin(static.Publisher(["a:1", "b:2"], lambda a: endpoint)), after=0.05)
    >>> import asyncio; asyncio.run(hedged.endpoint()("ping"))
    'ping'
    """

    def __init__(
        self,
        lb: Balancer[Callable[[Req], Awaitable[Resp]]],
        *,
        after: float | timedelta | None = None,
        percentile: float | None = None,
        initial: float | timedelta = 0.05,
        budget: RetryBudget | bool | None = True,
        ready_timeout: float | timedelta = 5.0,
        logger: Any = None,
    ) -> None:
        if not isinstance(lb, Balancer):
            raise TypeError(f"lb must be a loadbalancer.Balancer, got {lb!r}")
        if (after is None) == (percentile is None):
            raise ValueError("give exactly one of after= (seconds) or percentile= (such as 0.95)")
        if percentile is not None and (
            isinstance(percentile, bool) or not isinstance(percentile, int | float) or not 0 < percentile < 1
        ):
            raise ValueError(f"percentile must be between 0 and 1, got {percentile!r}")
        self._lb = lb
        self._after = None if after is None else seconds(after, "after")
        self._percentile = percentile
        self._initial = seconds(initial, "initial")
        self._budget = _budget_of(budget, ratio=0.1)
        self._latencies: collections.deque[float] = collections.deque(maxlen=_SAMPLES)
        self._stale_quantile = 0  # samples since the quantile was last worked out (every 50: a sort of 1,000)
        self._delay = self._after if self._after is not None else self._initial
        self._policy = Policy(attempts=2, budget=self._budget, hedge=self.hedge_delay)
        self._ready_timeout = seconds(ready_timeout, "ready_timeout")
        self._log = get_logger(logger, name=__name__, service=lb.publisher.service)
        self.hedges = 0  # counters the metrics layer reads (loadbalancer.metrics)
        self.hedge_wins = 0
        _metrics.register("hedge", self)
        super().__init__(lb.publisher)

    def _update(self, endpoints: Any) -> None:
        pass  # the wrapped balancer follows the publisher

    def endpoint(self) -> Callable[[Req], Awaitable[Resp]]:
        """An endpoint that hedges each call across two of ``lb``'s endpoints."""
        return self._call

    def hedge_delay(self) -> float:
        """Seconds an attempt may take before a hedge is sent (now)."""
        if self._after is None and self._stale_quantile >= 50 and len(self._latencies) >= _MIN_SAMPLES:
            ordered = sorted(self._latencies)
            assert self._percentile is not None  # set whenever _after is not
            self._delay = ordered[min(len(ordered) - 1, int(self._percentile * len(ordered)))]
            self._stale_quantile = 0
        return self._delay

    def _record(self, latency: float) -> None:
        self._latencies.append(latency)
        self._stale_quantile += 1

    async def _call(self, request: Req) -> Resp:
        if self._budget is not None:
            self._budget.deposit()
        start = time.monotonic()
        outer = deadline.get()
        end = math.inf if outer is None else outer
        call = Call(
            self._policy,
            self._lb.endpoint,
            start=start,
            end=end,
            candidates=self._lb.candidates,
            retryable=_never,  # a hedge, not a retry: a failure ends the call unless the other attempt answers
            conclude=_last_error,
            log=self._log,
            events="hedge",
            stats=self,
        )

        async def attempt(this: Attempt) -> Resp:
            result = this.endpoint(request)
            if not hasattr(type(result), "__await__"):
                raise TypeError(f"Hedge needs async endpoints; {this.endpoint!r} returned {type(result).__name__}")
            value: Resp = await result
            self._record(time.monotonic() - this.started)
            return value

        async def ready(seconds: float) -> None:
            await self._lb.publisher.await_ready(self._ready_timeout if outer is None else seconds)

        result: Resp = await adrive(call, call.begin(start), attempt, ready=ready)
        return result

    def __repr__(self) -> str:
        how = f"after={self._after:g}" if self._after is not None else f"percentile={self._percentile:g}"
        return f"Hedge({self._lb!r}, {how})"


def _never(error: BaseException) -> bool:
    return False


def _last_error(
    reason: str, errors: list[BaseException], elapsed: float, why: str, timeout: float | None
) -> BaseException:
    return errors[-1]
