"""Balancers: pick one endpoint from a publisher's latest set.

A balancer subscribes to its publisher and keeps its own view of the set; a pick reads that
view without a lock, so picks are safe from any thread or task while the set changes.
"""

from __future__ import annotations

import itertools
import random
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, NoReturn, TypeVar

from ._util import describe
from .errors import NoEndpointsError, NotReadyError, PublisherClosedError
from .publisher import UNREAD, EndpointSet, Publisher

__all__ = ["Balancer", "Random", "RoundRobin"]

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)

_PASS = 256  # fewest picks per pass of the round robin's list (Python runs once a pass)


class Balancer(ABC, Generic[E_co]):
    """Base class: ``endpoint()`` returns one endpoint, or raises ``NoEndpointsError``.

    A subclass sets up its own state, then calls ``super().__init__(publisher)``, which
    subscribes ``_update`` to the publisher: it is called at once with the current set (an
    empty one if the source has not answered yet), then on every change, on the
    publisher's thread.
    """

    def __init__(self, publisher: Publisher[E_co]) -> None:
        if not isinstance(publisher, Publisher):
            raise TypeError(f"a balancer needs a loadbalancer.Publisher, got {publisher!r}")
        self._publisher = publisher
        # The publisher must not keep a balancer alive: subscribe through a weak reference
        # and unsubscribe when the balancer is collected.
        ref = weakref.ref(self)

        def update(endpoints: EndpointSet[Any]) -> None:
            balancer = ref()
            if balancer is not None:
                balancer._update(endpoints)

        with publisher._lock:  # no change can slip in between the subscription and the first set
            subscription = publisher.subscribe(update)
            if publisher._current is None:  # not read yet: nothing was replayed
                self._update(UNREAD)
        weakref.finalize(self, subscription.unsubscribe)

    @property
    def publisher(self) -> Publisher[Any]:
        """The publisher this balancer picks from."""
        return self._publisher

    @abstractmethod
    def endpoint(self) -> E_co:
        """Pick an endpoint; raise ``NoEndpointsError`` if there is none."""

    def candidates(self) -> Sequence[E_co]:
        """The endpoints picks choose from now, as ``endpoint()`` returns them (a retry looks
        through them for one it has not tried when the picks keep offering tried ones)."""
        return self._publisher.endpoints()

    @abstractmethod
    def _update(self, endpoints: EndpointSet[Any]) -> None:
        """Take a new set from the publisher."""

    def _no_endpoints(self, endpoints: EndpointSet[Any]) -> NoReturn:
        raise _no_endpoints_error(self._publisher, endpoints)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._publisher!r})"


def _no_endpoints_error(publisher: Publisher[Any], endpoints: EndpointSet[Any]) -> NoEndpointsError:
    message = f"no endpoints available from {publisher!r}"
    if publisher.closed:
        return PublisherClosedError(f"{message}: the publisher is closed")
    if endpoints is UNREAD and not publisher.ready:
        return NotReadyError(
            f"{message} yet: its source has not answered yet; wait for it with publisher.wait_ready(timeout)"
            " (Retry and Hedge wait by themselves)"
        )
    if endpoints.error is not None:
        message += f": last refresh failed: {describe(endpoints.error)}"
    return NoEndpointsError(message, error=endpoints.error)


class _Ring:
    """Holds the round robin's current list; kept apart so the pick chain holds no balancer."""

    __slots__ = ("items",)

    def __init__(self, items: object) -> None:
        self.items = items


class _Empty:
    """Stands in for an empty list in the ring: iterating it raises ``NoEndpointsError``.

    An empty list would make the pick chain spin for ever. Once the ring holds a new list,
    this iterator ends and the chain moves on to that list.
    """

    __slots__ = ("_endpoints", "_publisher", "_ring")

    def __init__(self, ring: _Ring, publisher: Publisher[Any], endpoints: EndpointSet[Any]) -> None:
        self._ring = ring
        self._publisher = publisher
        self._endpoints = endpoints

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> NoReturn:
        if self._ring.items is not self:
            raise StopIteration
        raise _no_endpoints_error(self._publisher, self._endpoints)


class RoundRobin(Balancer[E]):
    """Hands out the endpoints in turn.

    Each new set starts at a random position, so that a fleet of clients that learns of a
    change together does not send its next requests to the same first endpoint.

    >>> from loadbalancer import static
    >>> lb = RoundRobin(static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], str))
    >>> sorted([lb.endpoint(), lb.endpoint()])
    ['10.0.0.1:80', '10.0.0.2:80']
    """

    def __init__(self, publisher: Publisher[E]) -> None:
        self._ring = _Ring(None)
        self._offset = random.Random()
        # The pick is the hottest path in the library, so it runs entirely in C: a chain
        # over an endless repetition of the ring's current list. Python code runs only
        # when a pass ends (once per len(set) picks) or the set is empty. _update clears
        # the old list, which ends the pass in progress at once, so no pick returns an
        # endpoint of a replaced set after _update returns.
        lists = itertools.starmap(getattr, itertools.repeat((self._ring, "items")))
        self.endpoint = itertools.chain.from_iterable(lists).__next__  # type: ignore[method-assign]
        super().__init__(publisher)

    def endpoint(self) -> E:  # replaced per instance by the C-level pick made in __init__
        """The next endpoint in turn; ``NoEndpointsError`` if the set is empty."""
        raise NotImplementedError

    def _update(self, endpoints: EndpointSet[E]) -> None:
        if endpoints:
            start = self._offset.randrange(len(endpoints))
            ring = [*endpoints[start:], *endpoints[:start]]
            if len(ring) < _PASS:
                ring *= -(-_PASS // len(ring))  # the same order, repeated: fewer trips into Python
            items: object = ring
        else:
            items = _Empty(self._ring, self._publisher, endpoints)
        old, self._ring.items = self._ring.items, items
        if type(old) is list:
            old.clear()


# Random picks index a table of _TABLE_SIZE endpoints with 16 random bits: one C call and
# one index, about a third of what random() * len() costs. Each endpoint fills
# _TABLE_SIZE // n or one more slots, so a share is off by at most n / _TABLE_SIZE of
# itself (0.4% at 256 endpoints); larger sets pick exactly, at the slower cost.
_TABLE_BITS = 16
_TABLE_SIZE = 1 << _TABLE_BITS
_TABLE_MAX_ENDPOINTS = 256


def _spread(endpoints: Sequence[E], counts: Sequence[int]) -> list[E]:
    """A pick table: ``counts[i]`` copies of ``endpoints[i]`` in a row (built in C)."""
    runs = itertools.starmap(itertools.repeat, zip(endpoints, counts, strict=True))
    return list(itertools.chain.from_iterable(runs))


class _Exact(Generic[E]):
    """A large set's "table": ignores the random bits and picks exactly (``random() * n``)."""

    __slots__ = ("_endpoints", "_random")

    def __init__(self, endpoints: Sequence[E], random_: Callable[[], float]) -> None:
        self._endpoints = tuple(endpoints)
        self._random = random_

    def __getitem__(self, _: int) -> E:
        endpoints = self._endpoints
        return endpoints[int(self._random() * len(endpoints))]


class _NoTable:
    """The table of an empty set: any lookup raises ``NoEndpointsError`` (no test on the hot path)."""

    __slots__ = ("_endpoints", "_publisher")

    def __init__(self, publisher: Publisher[Any], endpoints: EndpointSet[Any]) -> None:
        self._publisher = publisher
        self._endpoints = endpoints

    def __getitem__(self, _: int) -> NoReturn:
        raise _no_endpoints_error(self._publisher, self._endpoints)


class _TablePick(Balancer[E]):
    """A balancer whose pick indexes ``self._table`` (set by ``_update``) with 16 random bits."""

    def __init__(self, publisher: Publisher[E], seed: int | float | str | bytes | None = None) -> None:
        rng = random.Random(seed)
        self._bits = rng.getrandbits
        self._random = rng.random
        self._table: Any = None
        super().__init__(publisher)

    def endpoint(self) -> E:
        """An endpoint at random; ``NoEndpointsError`` if the set is empty."""
        # One attribute read takes the whole snapshot, so a pick never mixes two sets.
        return self._table[self._bits(_TABLE_BITS)]  # type: ignore[no-any-return]


class Random(_TablePick[E]):
    """Picks an endpoint uniformly at random; ``seed`` makes the sequence reproducible.

    >>> from loadbalancer import static
    >>> lb = Random(static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], str), seed=7)
    >>> lb.endpoint() in ("10.0.0.1:80", "10.0.0.2:80")
    True
    """

    def _update(self, endpoints: EndpointSet[E]) -> None:
        n = len(endpoints)
        if not n:
            self._table = _NoTable(self._publisher, endpoints)
        elif n > _TABLE_MAX_ENDPOINTS:
            self._table = _Exact(endpoints, self._random)
        else:
            share, extra = divmod(_TABLE_SIZE, n)
            self._table = _spread(endpoints, [share + (i < extra) for i in range(n)])
