"""Balancers that honour SRV priority and weight (RFC 2782).

Both pick only from the *priority group*: the endpoints with the lowest ``priority`` value
in the current set (lower is preferred, as in SRV records). When the publisher's set no
longer holds any endpoint of that priority, the next group takes over with the next set.

Within the group, an endpoint's share of the picks is its ``weight`` over the group's
total. Weight 0 follows RFC 2782: "in the presence of records containing weights greater
than 0, records with weight 0 should have a very small chance of being selected". Here a
weight of 0 counts as 0.01 (a hundredth of the smallest positive weight) when some weight
in the group is positive: next to weights 60/30/10 a weight-0 endpoint gets 0.01% of the
picks, next to a single weight 1 about 1%. When every weight in the group is 0, the
endpoints share the picks equally, as the RFC's selection algorithm makes them.
(That algorithm, taken literally, gives the weight-0 records together 1/(S+1) of the
picks, S the sum of the weights: half of them next to a single weight 1, which is not a
very small chance; hence the fixed 0.01.)
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import operator
import random
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .balancer import (
    _TABLE_MAX_ENDPOINTS,
    _TABLE_SIZE,
    Balancer,
    _Empty,
    _NoTable,
    _Ring,
    _spread,
    _TablePick,
)
from .instance import Instance
from .publisher import EndpointSet, Publisher

__all__ = ["SmoothWeightedRoundRobin", "Weighted"]

E = TypeVar("E")

_bisect = bisect.bisect_right
_ZERO_WEIGHT_SCALE = 100  # a weight of 0 counts as 1/100 (see the module docstring)


def _priority_group(endpoints: EndpointSet[E]) -> tuple[list[E], list[Instance]]:
    """The endpoints (and instances) of the lowest priority value present; ``endpoints`` must not be empty."""
    best = min(instance.priority for instance in endpoints.instances)
    group = [(e, i) for e, i in zip(endpoints, endpoints.instances, strict=True) if i.priority == best]
    return [e for e, _ in group], [i for _, i in group]


def _effective_weights(instances: Sequence[Instance]) -> list[int]:
    """Integer weights in proportion to the picks each instance should get (module docstring):
    weight 0 counts as 0.01 unless all are 0 (then all count the same); divided by their
    greatest common divisor."""
    weights = [instance.weight for instance in instances]
    if not any(weights):
        return [1] * len(weights)
    if 0 in weights:
        weights = [w * _ZERO_WEIGHT_SCALE if w else 1 for w in weights]
    divisor = math.gcd(*weights)
    return [w // divisor for w in weights]


class Weighted(_TablePick[E]):
    """Picks at random within the lowest priority group, in proportion to the weights (RFC 2782).

    See the module docstring for priority groups and weight 0. ``seed`` makes the sequence
    of picks reproducible.

    >>> from loadbalancer import Instance, static
    >>> publisher = static.Publisher(
    ...     [Instance("10.0.0.1", 80, weight=3), Instance("10.0.0.2", 80, weight=1),
    ...      Instance("10.0.0.3", 80, priority=1)],      # a backup: used when the others are gone
    ...     str,
    ... )
    >>> lb = Weighted(publisher, seed=1)
    >>> picks = [lb.endpoint() for _ in range(10_000)]
    >>> 0.72 < picks.count("10.0.0.1:80") / len(picks) < 0.78, "10.0.0.3:80" in picks
    (True, False)
    """

    def _update(self, endpoints: EndpointSet[E]) -> None:
        if not endpoints:
            self._table = _NoTable(self._publisher, endpoints)
            return
        group, instances = _priority_group(endpoints)
        weights = _effective_weights(instances)
        if len(group) > _TABLE_MAX_ENDPOINTS:
            self._table = _Cumulative(group, weights, self._random)
        else:
            self._table = _spread(group, _table_counts(weights, _TABLE_SIZE))


def _table_counts(weights: Sequence[int], size: int) -> list[int]:
    """Slots per weight in a pick table of ``size`` (more than ``len(weights)``), summing to ``size``.

    Each weight gets its share of the slots rounded by largest remainder, except that a
    share under one slot gets exactly one (so a tiny positive weight keeps a tiny chance),
    paid for by the weights furthest above their share.
    """
    total = sum(weights)
    ideal = [w * size / total for w in weights]
    counts = [max(1, int(x)) for x in ideal]
    short = size - sum(counts)
    if short > 0:
        # The slots left go to those furthest below their share. A share lifted to one slot
        # is above it (a negative remainder), so it comes last and never gets a second slot.
        by_remainder = sorted(range(len(counts)), key=lambda i: counts[i] - ideal[i])
        for i in by_remainder[:short]:
            counts[i] += 1
    elif short < 0:
        # The floors of one slot overfilled the table: take slots back one at a time from
        # whoever is furthest above its share, never below one slot. While the table is
        # overfilled some count is above one (the size exceeds the number of weights).
        over = [(ideal[i] - count, i) for i, count in enumerate(counts) if count > 1]
        heapq.heapify(over)
        for _ in range(-short):
            _, i = heapq.heappop(over)
            counts[i] -= 1
            if counts[i] > 1:
                heapq.heappush(over, (ideal[i] - counts[i], i))
    return counts


class _Cumulative(Generic[E]):
    """A large group's "table": ignores the random bits and picks exactly, by bisection."""

    __slots__ = ("_bounds", "_group", "_random")

    def __init__(self, group: Sequence[E], weights: Sequence[int], random_: Callable[[], float]) -> None:
        total = sum(weights)
        self._group = tuple(group)
        # Cumulative shares; the last is exactly 1.0 > random(), so bisect stays in range.
        self._bounds = [running / total for running in itertools.accumulate(weights)]
        self._random = random_

    def __getitem__(self, _: int) -> E:
        return self._group[_bisect(self._bounds, self._random())]


# The longest cycle SmoothWeightedRoundRobin precomputes, and a bound on the work to build
# it (steps x endpoints); weights whose cycle is longer are scaled down to fit.
_MAX_CYCLE = 1 << 16
_MAX_WORK = 4_000_000


def _smooth_cycle(weights: Sequence[int]) -> list[int]:
    """nginx's smooth weighted round robin: one full cycle of indices into ``weights``.

    Each step, every index gains its weight; the one with the most (the first on a tie)
    is picked and loses the total. A cycle is ``sum(weights)`` steps long, after which the
    state is back at zero; each index appears ``weight`` times, spread out.
    """
    n = len(weights)
    limit = max(n, min(_MAX_CYCLE, _MAX_WORK // n))
    total = sum(weights)
    if total > limit:
        weights = [max(1, w * limit // total) for w in weights]
        divisor = math.gcd(*weights)
        weights = [w // divisor for w in weights]
        total = sum(weights)
    current = [0] * n
    cycle = []
    add = operator.add
    for _ in range(total):
        current = list(map(add, current, weights))
        chosen = current.index(max(current))
        current[chosen] -= total
        cycle.append(chosen)
    return cycle


class SmoothWeightedRoundRobin(Balancer[E]):
    """Hands out the lowest priority group's endpoints in turn, each as often as its weight says.

    nginx's smooth weighted round robin: with weights 5, 1, 1 for a, b, c the order is
    ``a a b a c a a`` (not ``a a a a a b c``), repeated; deterministic, unlike ``Weighted``.
    Priority groups and weight 0 as in the module docstring. Like ``RoundRobin``, each new
    set starts at a random point of its cycle, so a fleet of clients does not move in step.
    Weights whose cycle (their sum, over their common divisor) would exceed 65,536 steps are
    scaled down to fit, keeping every endpoint in.

    >>> from loadbalancer import Instance, static
    >>> publisher = static.Publisher(
    ...     [Instance("10.0.0.1", 80, weight=5), Instance("10.0.0.2", 80), Instance("10.0.0.3", 80)], str
    ... )
    >>> lb = SmoothWeightedRoundRobin(publisher)
    >>> picks = [lb.endpoint()[-4:-3] for _ in range(7)]   # the last digit of each address
    >>> "".join(picks) in ("1121311" * 2)
    True
    """

    def __init__(self, publisher: Publisher[E]) -> None:
        self._ring = _Ring(None)
        self._offset = random.Random()
        # As RoundRobin: a C-level chain over endless repetitions of the current cycle.
        lists = itertools.starmap(getattr, itertools.repeat((self._ring, "items")))
        self.endpoint = itertools.chain.from_iterable(lists).__next__  # type: ignore[method-assign]
        super().__init__(publisher)
        if self._ring.items is None:
            self._update(publisher.endpoints())

    def endpoint(self) -> E:  # replaced per instance by the C-level pick made in __init__
        """The next endpoint of the weighted cycle; ``NoEndpointsError`` if the set is empty."""
        raise NotImplementedError

    def _update(self, endpoints: EndpointSet[E]) -> None:
        if endpoints:
            group, instances = _priority_group(endpoints)
            cycle = [group[i] for i in _smooth_cycle(_effective_weights(instances))]
            start = self._offset.randrange(len(cycle))
            items: object = cycle[start:] + cycle[:start]
        else:
            items = _Empty(self._ring, self._publisher, endpoints)
        old, self._ring.items = self._ring.items, items
        if type(old) is list:
            old.clear()
