"""Feedback for balancers that learn from calls: tracking wrappers and the P2C pick over them.

A feedback balancer does not hand out the publisher's endpoints but a ``TrackedEndpoint``
for each: calling it counts the call as outstanding, calls the endpoint and, when the call
returns, raises, or (async) its awaitable completes or is cancelled, stops counting it and
tells the balancer's observer ``(tracked, latency, error-or-None)``. Balancers that do not
learn (RoundRobin, Random, Weighted, ...) hand out the raw endpoints and pay nothing.

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
from types import CoroutineType
from typing import Any, Generic, Protocol, TypeVar

from . import _metrics
from .balancer import Balancer, _Empty, _Ring
from .instance import Instance
from .publisher import EndpointSet, Publisher

__all__ = ["TrackedEndpoint"]

E = TypeVar("E")

Clock = Callable[[], float]

# Up to this many ordered pairs a deck holds every ordered pair once (n <= 64); beyond it,
# rounds of random cyclic pairings, each endpoint twice per round (once on either side).
_DECK_PAIRS = 4096
_DECK_MIN = 64


class _Observer(Protocol):
    """What a feedback balancer learns from: one call's start and its outcome."""

    def attach(self, tracked: TrackedEndpoint[Any]) -> None:
        """A tracker was made for a new endpoint: set up its state (``tracked._state``)."""

    def started(self, tracked: TrackedEndpoint[Any]) -> None:
        """A call started (already counted in ``tracked.outstanding``)."""

    def finished(self, tracked: TrackedEndpoint[Any], latency: float, error: BaseException | None) -> None:
        """A call ended after ``latency`` seconds (already uncounted); ``error`` if it raised or was cancelled."""


# Result types seen not to be awaitable. A failed hasattr(type, "__await__") costs more than
# the rest of a tracked call, so each type is looked at once (the set is bounded).
_PLAIN: set[type] = {type(None), bool, int, float, str, bytes, dict, list, tuple}
_PLAIN_LIMIT = 256


_NOW, _AWAIT, _LATER = 0, 1, 2


def _finishing(result: object) -> int:
    """How a call that returned ``result`` ends: now, when the awaitable completes, or later.

    Later: the result has ``finish_later(done)`` (a streamed HTTP response: the call is
    busy until its body is closed), and calls ``done(error_or_None)`` once when it ends.
    """
    kind = type(result)
    if kind is CoroutineType or hasattr(kind, "__await__"):
        return _AWAIT
    if hasattr(kind, "finish_later"):
        return _LATER
    if len(_PLAIN) < _PLAIN_LIMIT:
        _PLAIN.add(kind)
    return _NOW


class TrackedEndpoint(Generic[E]):
    """An endpoint as a feedback balancer hands it out: call it as you would the endpoint.

    Each call counts as outstanding until it returns or raises; an ``async`` call until its
    awaitable completes, raises or is cancelled. ``endpoint`` is the publisher's endpoint,
    ``instance`` the ``Instance`` it was made for, ``outstanding`` the calls in flight.
    Only calls through the wrapper are seen: call it, not ``endpoint``.

    >>> from loadbalancer import static
    >>> from loadbalancer.least_loaded import LeastLoaded
    >>> lb = LeastLoaded(static.Publisher(["10.0.0.1:80"], lambda address: lambda request: request * 2))
    >>> tracked = lb.endpoint()
    >>> tracked(21), tracked.outstanding, str(tracked)
    (42, 0, '10.0.0.1:80')
    """

    __slots__ = ("__weakref__", "_clock", "_inflight", "_observer", "_state", "_stats", "endpoint", "instance")

    def __init__(
        self,
        endpoint: E,
        instance: Instance,
        observer: _Observer | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.instance = instance
        # The outstanding count is the length of this list: append() and pop() are single C
        # calls, so the count stays exact under threads without a lock. It also serves as
        # the least-loaded cost (see the module docstring).
        self._inflight: list[None] = []
        self._observer = observer
        self._clock = clock
        self._state: Any = None  # the observer's per-endpoint state
        self._stats: Any = None  # the metrics' per-instance figures, while metrics are on

    @property
    def outstanding(self) -> int:
        """Calls in flight through this wrapper."""
        return len(self._inflight)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inflight = self._inflight
        observer = self._observer
        inflight.append(None)
        if observer is None:
            try:
                result = self.endpoint(*args, **kwargs)  # type: ignore[operator]
            except BaseException:
                inflight.pop()
                raise
            if type(result) not in _PLAIN:
                how = _finishing(result)
                if how == _AWAIT:
                    return self._follow(result, 0.0)  # the call goes on until awaited to the end
                if how == _LATER:
                    result.finish_later(functools.partial(self._finished, 0.0))
                    return result
            inflight.pop()
            return result
        observer.started(self)
        clock = self._clock
        start = clock()
        try:
            result = self.endpoint(*args, **kwargs)  # type: ignore[operator]
        except BaseException as error:
            inflight.pop()
            observer.finished(self, clock() - start, error)
            raise
        if type(result) not in _PLAIN:
            how = _finishing(result)
            if how == _AWAIT:
                return self._follow(result, start)
            if how == _LATER:
                result.finish_later(functools.partial(self._finished, start))
                return result
        inflight.pop()
        observer.finished(self, clock() - start, None)
        return result

    def _finished(self, start: float, error: BaseException | None) -> None:
        """A call that went on after it returned (``finish_later``) has ended."""
        self._inflight.pop()
        observer = self._observer
        if observer is not None:
            observer.finished(self, self._clock() - start, error)

    async def _follow(self, awaitable: Any, start: float) -> Any:
        """Await what a sync-looking endpoint returned, still counting the call.

        The call was counted when the endpoint was called; should this coroutine never be
        awaited (a bug Python warns about), the count stays up. Endpoints recognised as
        async when they are wrapped do not have this gap (see ``_AsyncTrackedEndpoint``).
        """
        observer = self._observer
        try:
            result = await awaitable
        except BaseException as error:
            self._inflight.pop()
            if observer is not None:
                observer.finished(self, self._clock() - start, error)
            raise
        if type(result) not in _PLAIN and _finishing(result) == _LATER:
            result.finish_later(functools.partial(self._finished, start))
            return result
        self._inflight.pop()
        if observer is not None:
            observer.finished(self, self._clock() - start, None)
        return result

    def __str__(self) -> str:
        return self.instance.address

    def __repr__(self) -> str:
        return f"TrackedEndpoint({self.instance!r}, outstanding={len(self._inflight)})"


class _AsyncTrackedEndpoint(TrackedEndpoint[E]):
    """The wrapper of an endpoint known to be ``async``: the call is counted once awaited.

    A coroutine that is never awaited never calls the endpoint and never counts.
    """

    __slots__ = ()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inflight = self._inflight
        observer = self._observer
        inflight.append(None)
        if observer is not None:
            observer.started(self)
        clock = self._clock
        start = clock()
        try:
            result = await self.endpoint(*args, **kwargs)  # type: ignore[operator]
        except BaseException as error:  # CancelledError included: the call is over
            inflight.pop()
            if observer is not None:
                observer.finished(self, clock() - start, error)
            raise
        if type(result) not in _PLAIN and _finishing(result) == _LATER:
            result.finish_later(functools.partial(self._finished, start))
            return result
        inflight.pop()
        if observer is not None:
            observer.finished(self, clock() - start, None)
        return result


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
    costs = [cost(t) for t in trackers]
    items: list[Any] = []
    for i, j in pairs:
        items += ((trackers[i], trackers[j]), costs[i], costs[j])
    return items


class FeedbackBalancer(Balancer[E]):
    """Base of the P2C balancers: tracking wrappers kept across sets, and the C-level pick.

    Subclasses give ``_cost`` (the list the deck compares) and an observer, if any.
    """

    def __init__(
        self,
        publisher: Publisher[E],
        *,
        observer: _Observer | None,
        seed: int | float | str | bytes | None,
        clock: Clock = time.monotonic,
    ) -> None:
        if isinstance(publisher, Publisher):
            for endpoint, instance in zip(publisher.endpoints(), publisher.endpoints().instances, strict=True):
                self._check(endpoint, instance)
        self._observer = observer
        self._clock = clock
        self._rng = random.Random(seed)
        self._trackers: dict[str, TrackedEndpoint[E]] = {}
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

    def _cost(self, tracked: TrackedEndpoint[E]) -> object:
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
        items: object = (
            deck(trackers, self._cost, self._rng) if trackers else _Empty(self._deck, self._publisher, endpoints)
        )
        old, self._deck.items = self._deck.items, items
        if type(old) is list:
            old.clear()

    def tracked(self) -> list[TrackedEndpoint[E]]:
        """The current set's wrappers, in the publisher's order (to read ``outstanding``)."""
        return list(self._trackers.values())
