"""Balancers: pick one endpoint from a publisher's latest set.

A balancer subscribes to its publisher and keeps its own view of the set; a pick reads that
view without a lock, so picks are safe from any thread or task while the set changes.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import random
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, NoReturn, TypeVar

from ._util import describe
from .errors import NoEndpointsError, NotReadyError, PublisherClosedError
from .instance import Instance
from .publisher import UNREAD, EndpointSet, Publisher
from .slowstart import SlowStart, _Ramp

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


# The longest cycle SmoothWeightedRoundRobin precomputes, and a bound on the work to build
# it (steps x endpoints); weights whose cycle is longer are scaled down to fit.
_MAX_CYCLE = 1 << 16
_MAX_WORK = 4_000_000


def _smooth_cycle(weights: Sequence[int], limit: int = _MAX_CYCLE) -> list[int]:
    """nginx's smooth weighted round robin: one full cycle of indices into ``weights``.

    Each step, every index gains its weight; the one with the most (the first on a tie)
    is picked and loses the total. A cycle is ``sum(weights)`` steps long, after which the
    state is back at zero; each index appears ``weight`` times, spread out. Weights whose
    sum exceeds ``limit`` (or the work bound) are scaled down to fit, keeping every index in.
    """
    n = len(weights)
    limit = max(n, min(limit, _MAX_WORK // n))
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


# -- slow start ---------------------------------------------------------------------------------
#
# With ``slow_start=`` a balancer's pick is still a C-level chain over passes, but each pass
# comes from a ``_Ramped`` source (one Python call a pass) that rebuilds the pass with the
# current ramp factors when they are due (at most every window / 64 s, and only while some
# instance ramps). Passes built while instances ramp are bounded (``_ramp_limit``) so the
# factors are looked at every few thousand picks. Without ``slow_start`` none of this runs.

_RAMP_QUANTUM = 64  # a ramping weight's resolution: its factor in 64ths of the weight
_RAMP_PASS = 4096  # the most steps of a pass built while instances ramp (or 16 a member)


def _ramp_limit(n: int) -> int:
    return max(_RAMP_PASS, 16 * n)


def _ramped_cycle(weights: Sequence[float], factors: Sequence[float]) -> list[int]:
    """A weighted order of indices by ``weights`` x ``factors``, in 64ths of a weight, at most
    ``_ramp_limit`` long: index ``i`` appears ``count[i]`` times, at evenly spaced points
    of the cycle (stride scheduling), so turns interleave as in a smooth weighted cycle at
    a fraction of its cost (it is rebuilt every few hundred milliseconds while instances ramp)."""
    raw = [w * f for w, f in zip(weights, factors, strict=True)]
    scale = _RAMP_QUANTUM / max(raw)
    limit = _ramp_limit(len(raw))
    if sum(raw) * scale > limit:
        scale = limit / sum(raw)
    counts = [max(1, round(w * scale)) for w in raw]
    points = [((k + 0.5) / c, i) for i, c in enumerate(counts) for k in range(c)]
    points.sort()
    return [i for _, i in points]


Build = Callable[[Sequence[Any], Sequence[Instance], "Sequence[float] | None"], object]


class _Ramped:
    """Slow start's source of passes for a C-level pick chain (it holds no balancer).

    ``update(endpoints, members)`` takes a new set (``members`` are what the picks return,
    index for index with ``endpoints.instances``: the endpoints, or their trackers);
    ``build(members, instances, factors)`` makes a pass (a list) from them, ``factors``
    ``None`` when nobody ramps. The chain calls ``next_pass`` at the end of every pass.
    """

    __slots__ = ("build", "instances", "lock", "members", "publisher", "ramp", "ring")

    def __init__(self, slow_start: SlowStart, build: Build, publisher: Publisher[Any]) -> None:
        self.ramp = _Ramp(slow_start)
        self.build = build
        self.publisher = publisher
        self.ring = _Ring(None)
        self.lock = threading.Lock()
        self.members: Sequence[Any] = ()
        self.instances: Sequence[Instance] = ()

    def chain(self) -> Callable[[], Any]:
        """The pick: the items of the passes ``next_pass`` hands out, one after another."""
        passes = itertools.starmap(self.next_pass, itertools.repeat(()))
        return itertools.chain.from_iterable(passes).__next__

    def update(self, endpoints: EndpointSet[Any], members: Sequence[Any]) -> None:
        with self.lock:
            self.ramp.update(endpoints.instances)
            self.members, self.instances = members, endpoints.instances
            self._install(None if endpoints else _Empty(self.ring, self.publisher, endpoints))

    def _install(self, items: object) -> None:
        """Make ``items`` (or, if ``None``, a pass built now) current; end the pass in progress."""
        if items is None:
            items = self.build(self.members, self.instances, self.ramp.factors(self.instances))
        old, self.ring.items = self.ring.items, items
        if type(old) is list:
            old.clear()

    def next_pass(self) -> Any:
        # Called by the chain, in C, between two picks: it must not raise (a raising source
        # ends the chain for good), so an error keeps the pass it had.
        try:
            if self.ramp.due():
                with self.lock:
                    if self.ramp.due() and self.members:
                        self._install(None)
        except Exception:  # the clock or a build failed: keep picking from the last pass
            pass
        return self.ring.items


class _RampedTable(_Ramped):
    """The same for a table pick (``Random``, ``Weighted``): ``build`` makes the table, and each
    pass is a batch of picks drawn from it with random bits at once (in C)."""

    __slots__ = ("randbytes", "table")

    def __init__(
        self, slow_start: SlowStart, build: Build, publisher: Publisher[Any], randbytes: Callable[[int], bytes]
    ) -> None:
        super().__init__(slow_start, build, publisher)
        self.randbytes = randbytes
        self.table: Any = None

    def _install(self, items: object) -> None:
        if items is None:
            self.table = self.build(self.members, self.instances, self.ramp.factors(self.instances))
        else:
            self.table = None
        old, self.ring.items = self.ring.items, items
        if type(old) is list:
            old.clear()

    def next_pass(self) -> Any:
        try:
            with self.lock:
                if self.ramp.due() and self.members:
                    self._install(None)
                table = self.table
                if table is None:
                    return self.ring.items  # the _Empty of an empty set
                bits = memoryview(self.randbytes(2 * _BATCH)).cast("H")  # 16-bit indices
                batch = list(map(table.__getitem__, bits))
                self.ring.items = batch
                return batch
        except Exception:  # see _Ramped.next_pass
            return self.ring.items


_BATCH = 256  # picks a table-pick balancer draws at once under slow start


def _round_robin_pass(
    rng: random.Random, members: Sequence[E], instances: Sequence[Instance], factors: Sequence[float] | None
) -> list[E]:
    """RoundRobin's pass: the members in turn from a random start (``factors``: a smooth
    weighted cycle by them, while instances ramp)."""
    if factors is not None:
        cycle = _ramped_cycle([1.0] * len(members), factors)
        start = rng.randrange(len(cycle))
        return [members[i] for i in itertools.chain(cycle[start:], cycle[:start])]
    start = rng.randrange(len(members))
    ring = [*members[start:], *members[:start]]
    if len(ring) < _PASS:
        ring *= -(-_PASS // len(ring))  # the same order, repeated: fewer trips into Python
    return ring


class RoundRobin(Balancer[E]):
    """Hands out the endpoints in turn.

    Each new set starts at a random position, so that a fleet of clients that learns of a
    change together does not send its next requests to the same first endpoint.
    ``slow_start`` (a ``SlowStart``; default ``None``, off): a new instance's turns ramp up
    over its window, in a smooth weighted order (see ``loadbalancer.slowstart``).

    >>> from loadbalancer import static
    >>> lb = RoundRobin(static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], str))
    >>> sorted([lb.endpoint(), lb.endpoint()])
    ['10.0.0.1:80', '10.0.0.2:80']
    """

    def __init__(self, publisher: Publisher[E], *, slow_start: SlowStart | None = None) -> None:
        self._offset = random.Random()
        self._ramped: _Ramped | None = None
        if slow_start is not None:
            self._ramped = _Ramped(slow_start, functools.partial(_round_robin_pass, self._offset), publisher)
            self._ring = self._ramped.ring
            self.endpoint = self._ramped.chain()  # type: ignore[method-assign]
            super().__init__(publisher)
            return
        self._ring = _Ring(None)
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
        if self._ramped is not None:
            self._ramped.update(endpoints, endpoints)
            return
        if endpoints:
            items: object = _round_robin_pass(self._offset, endpoints, endpoints.instances, None)
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
    """A balancer whose pick indexes ``self._table`` with 16 random bits.

    A subclass gives ``_tabulate(random, members, instances, factors)``, a plain function
    that makes the table of a non-empty set (``factors``: the slow start factors, or
    ``None``). With ``slow_start`` the pick is instead a chain over batches of picks drawn
    from the table (``_RampedTable``), which rebuilds it while instances ramp.
    """

    _tabulate: Callable[[Callable[[], float], Sequence[Any], Sequence[Instance], Sequence[float] | None], Any]

    def __init__(
        self,
        publisher: Publisher[E],
        seed: int | float | str | bytes | None = None,
        *,
        slow_start: SlowStart | None = None,
    ) -> None:
        rng = random.Random(seed)
        self._bits = rng.getrandbits
        self._random = rng.random
        self._table: Any = None
        self._ramped: _RampedTable | None = None
        if slow_start is not None:
            build = functools.partial(type(self)._tabulate, rng.random)
            self._ramped = _RampedTable(slow_start, build, publisher, rng.randbytes)
            self.endpoint = self._ramped.chain()  # type: ignore[method-assign]
        super().__init__(publisher)

    def endpoint(self) -> E:
        """An endpoint at random; ``NoEndpointsError`` if the set is empty."""
        # One attribute read takes the whole snapshot, so a pick never mixes two sets.
        return self._table[self._bits(_TABLE_BITS)]  # type: ignore[no-any-return]

    def _update(self, endpoints: EndpointSet[E]) -> None:
        if self._ramped is not None:
            self._ramped.update(endpoints, endpoints)
        elif endpoints:
            self._table = type(self)._tabulate(self._random, endpoints, endpoints.instances, None)
        else:
            self._table = _NoTable(self._publisher, endpoints)


class Random(_TablePick[E]):
    """Picks an endpoint uniformly at random; ``seed`` makes the sequence reproducible.

    >>> from loadbalancer import static
    >>> lb = Random(static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], str), seed=7)
    >>> lb.endpoint() in ("10.0.0.1:80", "10.0.0.2:80")
    True
    """

    def __init__(self, publisher: Publisher[E], seed: int | float | str | bytes | None = None) -> None:
        super().__init__(publisher, seed)  # no slow start: Weighted over equal weights is Random with it

    @staticmethod
    def _tabulate(
        random_: Callable[[], float], members: Sequence[E], instances: Sequence[Instance], factors: object
    ) -> object:
        n = len(members)
        if n > _TABLE_MAX_ENDPOINTS:
            return _Exact(members, random_)
        share, extra = divmod(_TABLE_SIZE, n)
        return _spread(members, [share + (i < extra) for i in range(n)])
