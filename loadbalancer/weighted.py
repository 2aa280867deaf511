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
import functools
import heapq
import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from .balancer import (
    _TABLE_MAX_ENDPOINTS,
    _TABLE_SIZE,
    Balancer,
    _Empty,
    _Ramped,
    _ramped_cycle,
    _Ring,
    _smooth_cycle,
    _spread,
    _TablePick,
)
from .instance import Instance
from .publisher import EndpointSet, Publisher
from .slowstart import SlowStart

__all__ = ["SmoothWeightedRoundRobin", "Weighted"]

_ = _smooth_cycle  # imported for the tests and older callers: it lived here

E = TypeVar("E")

_bisect = bisect.bisect_right
_ZERO_WEIGHT_SCALE = 100  # a weight of 0 counts as 1/100 (see the module docstring)


def _priority_group(endpoints: EndpointSet[E]) -> tuple[list[E], list[Instance]]:
    """The endpoints (and instances) of the lowest priority value present; ``endpoints`` must not be empty."""
    group, instances, _ = _ramped_group(endpoints, endpoints.instances, None)
    return group, instances


def _ramped_group(
    members: Sequence[E], instances: Sequence[Instance], factors: Sequence[float] | None
) -> tuple[list[E], list[Instance], list[float] | None]:
    """``_priority_group`` of parallel sequences, with the slow start factors of the group."""
    best = min(instance.priority for instance in instances)
    keep = [k for k, instance in enumerate(instances) if instance.priority == best]
    ramp = None if factors is None else [factors[k] for k in keep]
    return [members[k] for k in keep], [instances[k] for k in keep], ramp


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

    See the module docstring for priority groups and weight 0. ``seed`` (default ``None``)
    makes the sequence of picks reproducible. ``slow_start`` (a ``SlowStart``; default
    ``None``, off): a new instance's weight ramps up over the window (see
    ``loadbalancer.slowstart``); picks are then drawn 256 at a time from the table.

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

    @staticmethod
    def _tabulate(
        random_: Callable[[], float], members: Sequence[E], instances: Sequence[Instance], factors: object
    ) -> object:
        group, chosen, ramp = _ramped_group(members, instances, factors)  # type: ignore[arg-type]
        weights: Sequence[float] = _effective_weights(chosen)
        if ramp is not None:
            weights = [w * f for w, f in zip(weights, ramp, strict=True)]
        if len(group) > _TABLE_MAX_ENDPOINTS:
            return _Cumulative(group, weights, random_)
        return _spread(group, _table_counts(weights, _TABLE_SIZE))


def _table_counts(weights: Sequence[float], size: int) -> list[int]:
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

    def __init__(self, group: Sequence[E], weights: Sequence[float], random_: Callable[[], float]) -> None:
        total = sum(weights)
        self._group = tuple(group)
        # Cumulative shares; the last is exactly 1.0 > random(), so bisect stays in range.
        self._bounds = [running / total for running in itertools.accumulate(weights)]
        self._random = random_

    def __getitem__(self, _: int) -> E:
        return self._group[_bisect(self._bounds, self._random())]


def _smooth_pass(
    rng: random.Random, members: Sequence[E], instances: Sequence[Instance], factors: Sequence[float] | None
) -> list[E]:
    """SmoothWeightedRoundRobin's pass: one cycle of the priority group from a random point
    (weights times the slow start ``factors`` while instances ramp)."""
    group, chosen, ramp = _ramped_group(members, instances, factors)
    weights = _effective_weights(chosen)
    order = _smooth_cycle(weights) if ramp is None else _ramped_cycle(weights, ramp)
    start = rng.randrange(len(order))
    return [group[i] for i in itertools.chain(order[start:], order[:start])]


class SmoothWeightedRoundRobin(Balancer[E]):
    """Hands out the lowest priority group's endpoints in turn, each as often as its weight says.

    nginx's smooth weighted round robin: with weights 5, 1, 1 for a, b, c the order is
    ``a a b a c a a`` (not ``a a a a a b c``), repeated; deterministic, unlike ``Weighted``.
    Priority groups and weight 0 as in the module docstring. Like ``RoundRobin``, each new
    set starts at a random point of its cycle, so a fleet of clients does not move in step.
    Weights whose cycle (their sum, over their common divisor) would exceed 65,536 steps are
    scaled down to fit, keeping every endpoint in. ``slow_start`` (a ``SlowStart``; default
    ``None``, off): a new instance's weight ramps up over the window (see
    ``loadbalancer.slowstart``); while some instance ramps, the cycle is rebuilt from the
    ramped weights (in 64ths of a weight, at most 4,096 steps or 16 per endpoint).

    >>> from loadbalancer import Instance, static
    >>> publisher = static.Publisher(
    ...     [Instance("10.0.0.1", 80, weight=5), Instance("10.0.0.2", 80), Instance("10.0.0.3", 80)], str
    ... )
    >>> lb = SmoothWeightedRoundRobin(publisher)
    >>> picks = [lb.endpoint()[-4:-3] for _ in range(7)]   # the last digit of each address
    >>> "".join(picks) in ("1121311" * 2)
    True
    """

    def __init__(self, publisher: Publisher[E], *, slow_start: SlowStart | None = None) -> None:
        self._offset = random.Random()
        self._ramped: _Ramped | None = None
        if slow_start is not None:
            self._ramped = _Ramped(slow_start, functools.partial(_smooth_pass, self._offset), publisher)
            self._ring = self._ramped.ring
            self.endpoint = self._ramped.chain()  # type: ignore[method-assign]
        else:
            self._ring = _Ring(None)
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
        if self._ramped is not None:
            self._ramped.update(endpoints, endpoints)
            return
        if endpoints:
            items: object = _smooth_pass(self._offset, endpoints, endpoints.instances, None)
        else:
            items = _Empty(self._ring, self._publisher, endpoints)
        old, self._ring.items = self._ring.items, items
        if type(old) is list:
            old.clear()
