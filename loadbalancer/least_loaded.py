"""Load-aware balancers: least-loaded and peak EWMA, both by "power of two choices" (P2C).

Each pick looks at two distinct endpoints and takes the cheaper, as Finagle, Linkerd and
Envoy do: nearly as good as looking at all of them, at a fraction of the cost, and without
the herd behaviour of always taking the single best. The balancers learn the cost from the
calls themselves: they hand out ``TrackedEndpoint`` wrappers that count calls in flight and
time them (sync and async, ``Retry`` included); there is nothing to report by hand.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from typing import Any, TypeVar

from ._feedback import FeedbackBalancer
from ._util import seconds
from .publisher import Publisher
from .slowstart import SlowStart
from .tracked import Clock, TrackedEndpoint

__all__ = ["LeastLoaded", "PeakEwma"]

E = TypeVar("E")

Seed = int | float | str | bytes | None


class LeastLoaded(FeedbackBalancer[E]):
    """Of two endpoints drawn at random, takes the one with fewer calls in flight.

    Finagle's "P2C least loaded", Envoy's "least request". Endpoints must be callable
    (sync or ``async``); ``endpoint()`` returns a ``TrackedEndpoint`` that calls through to
    the endpoint and counts the call while it runs (``.endpoint`` is the raw one). Ties go
    either way at random. ``seed`` (default ``None``) makes the sequence of pairs
    reproducible. ``slow_start`` (a ``SlowStart``; default ``None``, off): a new endpoint
    is offered as one of the two in proportion to its ramp factor, so its share ramps up
    over the window (see ``loadbalancer.slowstart``).

    >>> from loadbalancer import static
    >>> lb = LeastLoaded(static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], lambda hp: lambda req: f"{hp} got {req}"))
    >>> lb.endpoint()("ping").endswith("got ping")
    True
    """

    def __init__(self, publisher: Publisher[E], seed: Seed = None, *, slow_start: SlowStart | None = None) -> None:
        super().__init__(publisher, observer=None, seed=seed, slow_start=slow_start)


class _EwmaState:
    __slots__ = ("base", "cell", "cost", "lock", "stamp")

    def __init__(self) -> None:
        # [tier, score]: lists compare item by item, so the tier decides first (see _cell).
        self.cell: list[float] = [_UNTRIED, 0.0]
        self.cost = 0.0  # the latency estimate (seconds) as of ``stamp``
        self.stamp = 0.0
        self.base: float | None = None  # log(cost) + (stamp - epoch) / tau; None before the first answer
        self.lock = threading.Lock()


_UNTRIED, _MEASURED, _PROBING = 0, 1, 2
_TINY = 1e-9  # a floor for latencies, so that log() is defined for instant (or mocked) calls
_LOG = [math.log(n) for n in range(1, 257)]  # _LOG[p] == log(p + 1)


def _cell(base: float | None, pending: int) -> tuple[int, float]:
    if base is not None:
        return _MEASURED, base + (_LOG[pending] if pending < 256 else math.log(pending + 1))
    if pending:
        # No answer yet and a call in flight: as Finagle, avoid it until it answers (the
        # one with fewer such calls first), so a new endpoint gets one probe at a time.
        return _PROBING, float(pending)
    return _UNTRIED, 0.0  # never called: cheapest, so it is tried soon


class _PeakEwmaModel:
    """The observer of ``PeakEwma``: per-endpoint latency estimates and the costs the pick compares.

    Finagle's cost is ``ewma * (outstanding + 1)``, where the estimate decays toward zero
    with time since it was last updated (so that an endpoint that looked slow is tried
    again later). Comparing ``c_a * exp(-(t - s_a) / tau) * (p_a + 1)`` with the same for
    ``b`` at a common time ``t`` is the same as comparing
    ``log(c) + (s - epoch) / tau + log(p + 1)``, which does not depend on ``t``: so each
    endpoint's score changes only when one of its calls starts or ends, never per pick,
    and the pick stays a C-level comparison of ``[tier, score]`` lists.
    """

    def __init__(self, half_life: float, clock: Clock, penalty: float = 1.0) -> None:
        self.penalty = penalty
        self.tau = half_life / math.log(2)
        self.clock = clock
        self.epoch = clock()  # keeps (stamp - epoch) / tau small, for float precision

    def attach(self, tracked: TrackedEndpoint[Any]) -> None:
        tracked._state = _EwmaState()

    def started(self, tracked: TrackedEndpoint[Any]) -> None:
        # No lock (this runs on every call): write the cell from the current base, and
        # again if a finishing call changed the base meanwhile, so that the last write
        # always reflects the latest base (finished() writes under its lock after it).
        state: _EwmaState = tracked._state
        inflight = tracked._inflight
        while True:
            base = state.base
            state.cell[:] = _cell(base, len(inflight))  # one C call: a pick sees old or new
            if state.base is base:
                return

    def finished(self, tracked: TrackedEndpoint[Any], latency: float, error: BaseException | None) -> None:
        state: _EwmaState = tracked._state
        now = self.clock()
        with state.lock:
            if state.base is None and isinstance(error, Exception) and latency < self.penalty:
                # A first answer that is a failure (a refused connection, a 5xx) counts as at
                # least this slow: a fast failure must not make a new endpoint look fastest.
                latency = self.penalty
            if state.base is None:
                cost = latency
            else:
                cost = state.cost
                if error is not None and latency < cost:
                    # A failed or cancelled call says only that a success would have taken
                    # at least this long: it may raise the estimate, never lower it (a fast
                    # failure must not make an endpoint look fast).
                    latency = cost
                if latency > cost:
                    cost = latency  # peak: a slower sample replaces the estimate at once
                else:
                    weight = math.exp((state.stamp - now) / self.tau)  # of the old estimate
                    cost = cost * weight + latency * (1.0 - weight)
            state.cost = cost
            state.stamp = now
            base = state.base = math.log(cost if cost > _TINY else _TINY) + (now - self.epoch) / self.tau
            pending = len(tracked._inflight)
            state.cell[:] = (_MEASURED, base + (_LOG[pending] if pending < 256 else math.log(pending + 1)))


class PeakEwma(FeedbackBalancer[E]):
    """Of two endpoints drawn at random, takes the one with the lower latency x load.

    Finagle's and Linkerd's "peak EWMA": an endpoint's cost is its latency estimate times
    (calls in flight + 1). The estimate follows call latencies with a moving average whose
    memory fades with time (a sample's weight halves every ``half_life`` seconds), except
    that a latency above the estimate replaces it at once (peak sensitivity: slowness is
    believed at once, recovery gradually). The estimate also decays toward zero while an
    endpoint gets no answers, so one that was avoided for being slow is tried again
    (after about ``half_life * log2(slow / fast)`` seconds) and comes back if it recovered.
    An endpoint never called costs nothing (it is tried at once); one with calls in flight
    but no answer yet is avoided, so a new endpoint is probed one call at a time.

    Failed and cancelled calls count with the time they took, but only to raise the
    estimate; an endpoint whose first answer is a failure (an exception, not a
    cancellation) counts as ``failure_penalty`` seconds slow (default 1 s), so that one that
    fails fast (a refused connection) does not look fastest. Endpoints must be callable
    (sync or ``async``); ``endpoint()`` returns a
    ``TrackedEndpoint``. ``clock`` (seconds, monotonic; default ``time.monotonic``) is for
    tests and simulations (slow start reads its own ``SlowStart.clock``). ``half_life``
    default 10 s; ``seed`` default ``None``. ``slow_start`` (a ``SlowStart``; default
    ``None``, off): a new endpoint is offered as one of the two in proportion to its ramp
    factor (see ``loadbalancer.slowstart``).

    >>> from loadbalancer import static
    >>> lb = PeakEwma(static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], lambda hp: lambda req: f"{hp} got {req}"))
    >>> lb.endpoint()("ping").endswith("got ping")
    True
    """

    def __init__(
        self,
        publisher: Publisher[E],
        *,
        half_life: float | timedelta = 10.0,
        failure_penalty: float | timedelta = 1.0,
        seed: Seed = None,
        clock: Clock = time.monotonic,
        slow_start: SlowStart | None = None,
    ) -> None:
        self._half_life = seconds(half_life, "half_life", allow_zero=False)
        penalty = seconds(failure_penalty, "failure_penalty")
        model = _PeakEwmaModel(self._half_life, clock, penalty)
        super().__init__(publisher, observer=model, seed=seed, clock=clock, slow_start=slow_start)

    @property
    def half_life(self) -> float:
        """Seconds after which a latency sample counts half as much."""
        return self._half_life

    @staticmethod
    def _cost(tracked: TrackedEndpoint[Any]) -> object:
        state: _EwmaState = tracked._state
        return state.cell

    def latency(self, endpoint: TrackedEndpoint[E] | str) -> float | None:
        """The latency estimate (seconds) of an endpoint of the current set, by wrapper or
        ``"host:port"``, as last updated; ``None`` before its first answer."""
        address = endpoint if isinstance(endpoint, str) else endpoint.instance.address
        tracked = self._trackers.get(address)
        if tracked is None:
            raise KeyError(f"{address!r} is not in the current set of {self._publisher!r}")
        state: _EwmaState = tracked._state
        return None if state.base is None else state.cost
