"""Feedback for balancers that learn from calls: wrapping endpoints in trackers, and the P2C pick over them.

The pick of a feedback balancer is "power of two choices": look at two endpoints, take the
cheaper. It runs entirely in C, like RoundRobin's: each set gets a shuffled *deck* of
pairs, a flat list ``[pair, cost_a, cost_b, pair, cost_a, cost_b, ...]``, and a pick is
``pair[cost_a > cost_b]`` over the next three items of an endless chain over the current
deck. A cost is a list whose comparison orders endpoints: ``TrackedEndpoint._inflight``
(one ``None`` per outstanding call; equal items, so the shorter list is the smaller) for
least-loaded, a ``[tier, score]`` cell for peak EWMA. Observers update costs in place.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import operator
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from . import _metrics
from .balancer import Balancer, _Empty, _Ramped, _Ring
from .instance import Instance
from .publisher import EndpointSet, Publisher
from .slowstart import SlowStart
from .tracked import Clock, TrackedEndpoint, _AsyncTrackedEndpoint, _Observer

__all__ = ["FeedbackBalancer", "adopt", "deck", "ramped_deck", "track"]

E = TypeVar("E")

# Up to this many ordered pairs a deck holds every ordered pair once (n <= 64); beyond it,
# rounds of random cyclic pairings, each endpoint twice per round (once on either side).
_DECK_PAIRS = 4096
_DECK_MIN = 64
# While instances ramp (slow start), a deck of this many pairs (or 8 a member) draws its
# members in proportion to their factors.
_RAMP_PAIRS = 1024


class _Fanout:
    """Several observers of one tracker: a filter's (``OutlierDetector``) and a balancer's (``PeakEwma``)."""

    __slots__ = ("observers",)

    def __init__(self, *observers: _Observer) -> None:
        self.observers = observers

    def attach(self, tracked: TrackedEndpoint[Any]) -> None:
        for observer in self.observers:
            observer.attach(tracked)

    def started(self, tracked: TrackedEndpoint[Any]) -> None:
        for observer in self.observers:
            observer.started(tracked)

    def finished(self, tracked: TrackedEndpoint[Any], latency: float, error: BaseException | None) -> None:
        for observer in self.observers:
            observer.finished(tracked, latency, error)


def adopt(tracked: TrackedEndpoint[Any], observer: _Observer | None, clock: Clock) -> bool:
    """Let ``observer`` learn from an existing tracker's calls instead of wrapping it again.

    So ``PeakEwma(OutlierDetector(p))`` times each call once. Not possible (``False``) when
    the tracker already carries another observer's per-endpoint state or runs on another
    clock: the caller then wraps it.
    """
    if observer is None:
        return True  # the tracker's in-flight count is all a least-loaded pick needs
    if tracked._state is not None or tracked._clock is not clock:
        return False
    observer.attach(tracked)
    existing = tracked._observer
    tracked._observer = observer if existing is None else _Fanout(existing, observer)
    return True


def _is_async(endpoint: object) -> bool:
    if inspect.iscoroutinefunction(endpoint):
        return True
    call = getattr(type(endpoint), "__call__", None)  # noqa: B004 - the type's, not a callable() test
    return call is not None and inspect.iscoroutinefunction(call)


def track(
    endpoint: E,
    instance: Instance,
    observer: _Observer | None = None,
    clock: Clock = time.monotonic,
    service: str | None = None,
) -> TrackedEndpoint[E]:
    """Wrap ``endpoint``; an ``async`` one (function or ``async def __call__``) gets the async wrapper.

    With metrics on (``loadbalancer.metrics``), each call is also recorded for ``service``.
    """
    recording = None if service is None or getattr(endpoint, "records_calls", False) else _metrics.observer(service)
    if recording is not None:
        observer = recording if observer is None else _Fanout(observer, recording)
    kind = _AsyncTrackedEndpoint if _is_async(endpoint) else TrackedEndpoint
    tracked = kind(endpoint, instance, observer, clock)
    if observer is not None:
        observer.attach(tracked)
    return tracked


def deck(
    trackers: list[TrackedEndpoint[E]], cost: Callable[[TrackedEndpoint[E]], object], rng: random.Random
) -> list[Any]:
    """A shuffled flat list ``[(a, b), cost(a), cost(b), ...]`` of pairs of distinct trackers."""
    n = len(trackers)
    if n == 1:
        pairs = [(0, 0)]
    elif n * (n - 1) <= _DECK_PAIRS:
        pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    else:
        pairs = []
        order = list(range(n))
        for _ in range(max(1, _DECK_PAIRS // n)):
            rng.shuffle(order)
            pairs.extend(zip(order, order[1:] + order[:1], strict=True))
    # At least _DECK_MIN pairs, so that a pass (which ends in Python-visible work: a new
    # list iterator) spans many picks even for one or two endpoints.
    pairs *= -(-_DECK_MIN // len(pairs))
    rng.shuffle(pairs)
    return _items(pairs, trackers, cost)


def ramped_deck(
    cost: Callable[[TrackedEndpoint[E]], object],
    rng: random.Random,
    trackers: Sequence[TrackedEndpoint[E]],
    instances: Sequence[Instance],
    factors: Sequence[float] | None,
) -> list[Any]:
    """A deck for slow start: ``deck()`` while nobody ramps; else pairs whose members are drawn
    in proportion to ``factors`` (with replacement, so a pair may offer one tracker twice).

    Each tracker fills about ``2 * pairs * factor / sum(factors)`` of the deck's places
    (randomly rounded), first in half of them, so with equal costs its share of the picks is its factor's share;
    a costlier one (slower, busier) wins fewer of its pairs, as always.
    """
    if factors is None or len(trackers) == 1:
        return deck(list(trackers), cost, rng)
    places = max(_RAMP_PAIRS, 8 * len(trackers))
    total = sum(factors)
    slots: list[int] = []
    for i, factor in enumerate(factors):
        exact = places * factor / total
        count = int(exact) + (rng.random() < exact - int(exact))
        slots += itertools.repeat(i, count)
    if len(slots) % 2:
        slots.append(slots[rng.randrange(len(slots))])
    rng.shuffle(slots)
    # Each pair both ways round, so that every tracker comes first exactly as often as
    # second (ties go to the first): its share does not hang on the shuffle's luck.
    firsts, seconds = slots[::2], slots[1::2]
    pairs = [*zip(firsts, seconds, strict=True), *zip(seconds, firsts, strict=True)]
    rng.shuffle(pairs)
    return _items(pairs, trackers, cost)


class FeedbackBalancer(Balancer[E]):
    """Base of the P2C balancers: tracking wrappers kept across sets, and the C-level pick.

    Subclasses give ``_cost`` (a static method: the list the deck compares) and an
    observer, if any. ``slow_start`` (a ``SlowStart``) draws ramping endpoints into the
    pairs in proportion to their factors (``ramped_deck``).
    """

    def __init__(
        self,
        publisher: Publisher[E],
        *,
        observer: _Observer | None,
        seed: int | float | str | bytes | None,
        clock: Clock = time.monotonic,
        slow_start: SlowStart | None = None,
    ) -> None:
        if isinstance(publisher, Publisher):
            for endpoint, instance in zip(publisher.endpoints(), publisher.endpoints().instances, strict=True):
                self._check(endpoint, instance)
        self._observer = observer
        self._clock = clock
        self._rng = random.Random(seed)
        self._trackers: dict[str, TrackedEndpoint[E]] = {}
        self._ramped: _Ramped | None = None
        if slow_start is not None:
            build = functools.partial(ramped_deck, type(self)._cost, self._rng)
            self._ramped = _Ramped(slow_start, build, publisher)
            self._deck = self._ramped.ring
            items = itertools.chain.from_iterable(itertools.starmap(self._ramped.next_pass, itertools.repeat(())))
            pick = map(operator.getitem, items, map(operator.gt, items, items)).__next__
            self.endpoint = pick  # type: ignore[method-assign,assignment]
            super().__init__(publisher)
            return
        self._deck = _Ring(None)
        # The pick: chain yields the current deck's items, three per pick; map calls
        # getitem(pair, gt(cost_a, cost_b)) with them, all in C (atomic under the GIL, so
        # the three items of one pick are consecutive even with many threads picking).
        # Decks have a multiple of three items, and _update clears the old deck, which ends
        # the pass in progress at once: the next pick starts at the new deck's beginning.
        items = itertools.chain.from_iterable(itertools.starmap(getattr, itertools.repeat((self._deck, "items"))))
        pick = map(operator.getitem, items, map(operator.gt, items, items)).__next__
        self.endpoint = pick  # type: ignore[method-assign,assignment]
        super().__init__(publisher)

    def endpoint(self) -> E:  # replaced per instance by the C-level pick made in __init__
        """Of two endpoints, the cheaper (a ``TrackedEndpoint``); ``NoEndpointsError`` if the set is empty."""
        raise NotImplementedError

    def candidates(self) -> Sequence[TrackedEndpoint[E]]:  # type: ignore[override]
        """The tracked endpoints picks choose from now."""
        return list(self._trackers.values())

    @staticmethod
    def _cost(tracked: TrackedEndpoint[Any]) -> object:
        return tracked._inflight

    def _check(self, endpoint: object, instance: Instance) -> None:
        if not callable(endpoint):
            raise TypeError(
                f"{type(self).__name__} wraps each call to learn from it, so endpoints must be callable;"
                f" got {endpoint!r} for {instance.address}"
            )

    def _track(self, endpoints: EndpointSet[E]) -> list[TrackedEndpoint[E]]:
        # Keep the wrapper of an endpoint that stays (same address, same endpoint object):
        # its outstanding calls and learned costs carry over to the new set.
        old, new = self._trackers, {}
        trackers: list[TrackedEndpoint[E]] = []
        for endpoint, instance in zip(endpoints, endpoints.instances, strict=True):
            self._check(endpoint, instance)
            tracked = old.get(instance.address)
            if tracked is not None and (tracked is endpoint or tracked.endpoint is endpoint):
                if tracked is not endpoint:
                    tracked.instance = instance
            elif isinstance(endpoint, TrackedEndpoint) and adopt(endpoint, self._observer, self._clock):
                tracked = endpoint  # a filter's tracker already times these calls: one wrapper, not two
            else:
                tracked = track(endpoint, instance, self._observer, self._clock, self._publisher.service)
            new[instance.address] = tracked
            trackers.append(tracked)
        self._trackers = new
        return trackers

    def _update(self, endpoints: EndpointSet[E]) -> None:
        trackers = self._track(endpoints)
        if self._ramped is not None:
            self._ramped.update(endpoints, trackers)
            return
        items: object = (
            deck(trackers, self._cost, self._rng) if trackers else _Empty(self._deck, self._publisher, endpoints)
        )
        old, self._deck.items = self._deck.items, items
        if type(old) is list:
            old.clear()

    def tracked(self) -> list[TrackedEndpoint[E]]:
        """The current set's wrappers, in the publisher's order (to read ``outstanding``)."""
        return list(self._trackers.values())


def _items(
    pairs: Sequence[tuple[int, int]],
    trackers: Sequence[TrackedEndpoint[E]],
    cost: Callable[[TrackedEndpoint[E]], object],
) -> list[Any]:
    """A deck's flat items from its pairs of tracker indexes: each pair, then both costs."""
    costs = [cost(t) for t in trackers]
    items: list[Any] = []
    for i, j in pairs:
        items += ((trackers[i], trackers[j]), costs[i], costs[j])
    return items
