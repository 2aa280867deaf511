"""Slow start: a new instance's share of the picks ramps up over a window, as Envoy's slow start does.

Pass ``slow_start=SlowStart(...)`` to ``RoundRobin``, ``Random``, ``Weighted``,
``SmoothWeightedRoundRobin``, ``LeastLoaded`` or ``PeakEwma``. An instance that joins the
balancer's set gets its weight (its RFC 2782 weight for the weighted balancers, 1 for the
others) scaled by a factor that grows from ``min_weight_percent`` to 1 over ``window``
seconds::

    factor = max((elapsed / window) ** (1 / aggression), min_weight_percent / 100)

``aggression`` 1 ramps linearly; above 1 the share rises fast at first (2: the square
root of the time), below 1 slowly at first. An instance ramps from the moment the
balancer sees it join the set, and again whenever it comes back after leaving it (so an
instance that a ``HealthChecker`` or ``OutlierDetector`` took out and let back in ramps
again). The instances of the first set the balancer sees do not ramp: a client that
starts does not throttle a warm fleet (Envoy does the same for the hosts present when
a cluster initialises); neither does anyone when all instances are new together.

The ramped weights are recomputed at coarse intervals (every ``window / 64`` seconds at
most), never per pick, and only while some instance ramps; a balancer without
``slow_start`` runs exactly as before. For the feedback balancers (``LeastLoaded``,
``PeakEwma``) a ramping instance is offered as one of the two choices in proportion to
its factor, so with equal loads its share of the picks is its factor's share, and less
when it is slower than the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from ._util import seconds
from .instance import Instance

__all__ = ["SlowStart"]

Clock = Callable[[], float]

_STEPS = 64  # the ramped weights are recomputed at most this many times a window
_MIN_ELAPSED = 0.001  # Envoy counts at least 1 ms since the join


@dataclass(frozen=True)
class SlowStart:
    """How new instances ramp up: pass it as ``slow_start=`` to a balancer.

    - ``window`` (seconds or ``timedelta``, default 30): how long an instance's weight
      ramps after it joins; Envoy's ``slow_start_window``.
    - ``aggression`` (default 1.0, above 0): the shape of the ramp, ``(elapsed / window) **
      (1 / aggression)``; 1 is linear, larger rises faster at first.
    - ``min_weight_percent`` (default 10.0, 0 to 100): the least share of its weight a
      ramping instance gets, from its first moment.
    - ``clock`` (default ``time.monotonic``): seconds, monotonic; give a simulation's
      virtual clock (or a test's) here.

    >>> SlowStart(window=60).factor(15.0)
    0.25
    >>> SlowStart(window=60, aggression=2.0).factor(15.0)
    0.5
    >>> SlowStart(window=60).factor(1.0)      # not below min_weight_percent
    0.1
    """

    window: float | timedelta = 30.0
    aggression: float = 1.0
    min_weight_percent: float = 10.0
    clock: Clock = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", seconds(self.window, "window", allow_zero=False))
        aggression = self.aggression
        if isinstance(aggression, bool) or not isinstance(aggression, int | float) or not aggression > 0:
            raise ValueError(f"aggression must be a number above 0, got {aggression!r}")
        if not math.isfinite(aggression):
            raise ValueError(f"aggression must be finite, got {aggression!r}")
        object.__setattr__(self, "aggression", float(aggression))
        percent = self.min_weight_percent
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 <= percent <= 100:
            raise ValueError(f"min_weight_percent must be a percentage from 0 to 100, got {percent!r}")
        object.__setattr__(self, "min_weight_percent", float(percent))
        if not callable(self.clock):
            raise TypeError(f"clock must be callable, got {self.clock!r}")

    def factor(self, elapsed: float) -> float:
        """The share of its weight an instance gets ``elapsed`` seconds after it joined (1 after the window)."""
        window: float = self.window  # type: ignore[assignment]  # a float after __post_init__
        if elapsed >= window:
            return 1.0
        ramp = max(elapsed, _MIN_ELAPSED) / window
        if self.aggression != 1.0:
            ramp **= 1.0 / self.aggression
        return max(ramp, self.min_weight_percent / 100.0)


class _Ramp:
    """A balancer's record of which instances ramp, since when; used under the balancer's lock.

    ``update`` takes each new set; ``factors`` says the weight factor of each instance of a
    set now (``None`` when nobody ramps) and sets ``due_at``, when to ask again.
    """

    __slots__ = ("clock", "config", "due_at", "joined", "seen")

    def __init__(self, config: SlowStart) -> None:
        if not isinstance(config, SlowStart):
            raise TypeError(f"slow_start must be a loadbalancer.SlowStart, got {config!r}")
        self.config = config
        self.clock = config.clock
        self.seen: set[str] | None = None  # the addresses of the last set; None before the first non-empty one
        self.joined: dict[str, float] = {}  # address -> when it joined, while it ramps
        self.due_at = math.inf

    def update(self, instances: Sequence[Instance]) -> None:
        """A new set: the addresses not in the last one start ramping now; departed ones stop."""
        addresses = {instance.address for instance in instances}
        seen = self.seen
        if seen is None:
            if addresses:
                self.seen = addresses  # the first set: its instances do not ramp
            return
        if addresses - seen:
            now = self.clock()
            for address in addresses - seen:
                self.joined[address] = now
        for address in [a for a in self.joined if a not in addresses]:
            del self.joined[address]
        self.seen = addresses

    def factors(self, instances: Sequence[Instance]) -> list[float] | None:
        """Each instance's weight factor now, or ``None`` if none ramps; sets ``due_at``."""
        joined = self.joined
        if not joined:
            self.due_at = math.inf
            return None
        now = self.clock()
        config = self.config
        window: float = config.window  # type: ignore[assignment]
        factors = [1.0] * len(instances)
        for i, instance in enumerate(instances):
            start = joined.get(instance.address)
            if start is not None:
                elapsed = now - start
                if elapsed >= window:
                    del joined[instance.address]
                else:
                    factors[i] = config.factor(elapsed)
        if not joined:
            self.due_at = math.inf
            return None
        self.due_at = now + window / _STEPS
        return factors

    def due(self) -> bool:
        """Whether the factors should be recomputed now."""
        return self.due_at != math.inf and self.clock() >= self.due_at
