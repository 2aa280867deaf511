"""``TrackedEndpoint``: an endpoint as a feedback balancer hands it out, counting its calls in flight.

A feedback balancer (``LeastLoaded``, ``PeakEwma``; an ``OutlierDetector`` too) does not hand
out the publisher's endpoints but a ``TrackedEndpoint`` for each: calling it counts the call
as outstanding, calls the endpoint and, when the call returns, raises, or (async) its
awaitable completes or is cancelled, stops counting it and tells the balancer's observer
``(tracked, latency, error-or-None)``. Balancers that do not learn (RoundRobin, Random,
Weighted, ...) hand out the raw endpoints and pay nothing.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from types import CoroutineType
from typing import Any, Generic, Protocol, TypeVar

from .instance import Instance

__all__ = ["TrackedEndpoint"]

E = TypeVar("E")

Clock = Callable[[], float]


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

    def begin(self) -> float:
        """Count a call its caller drives itself (from callbacks, not as a call of this wrapper).

        Give what it returns to ``end`` once the call is over, exactly once.

        >>> from loadbalancer import static
        >>> from loadbalancer.least_loaded import LeastLoaded
        >>> tracked = LeastLoaded(static.Publisher(["10.0.0.1:80"], lambda address: print)).endpoint()
        >>> start = tracked.begin()
        >>> tracked.outstanding
        1
        >>> tracked.end(start, None)
        >>> tracked.outstanding
        0
        """
        self._inflight.append(None)
        observer = self._observer
        if observer is None:
            return 0.0
        observer.started(self)
        return self._clock()

    def end(self, start: float, error: BaseException | None) -> None:
        """The call ``begin`` counted is over: ``error`` if it failed (the balancer learns from it)."""
        self._inflight.pop()
        observer = self._observer
        if observer is not None:
            observer.finished(self, self._clock() - start, error)

    # A call that went on after it returned (``finish_later``) has ended: the same, one frame
    # fewer than a method that calls ``end`` (a proxy calls ``end`` once a request).
    _finished = end

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
