"""Aperture: each client talks to a slice of the servers, not to all of them.

Every other balancer here connects each client to every instance: with 1,000 clients and
1,000 servers each server holds 1,000 connections. An aperture balancer picks (power of two
choices) within a small slice of the servers, sized by the load the client offers, so
each server holds a handful of connections. How the slices are chosen decides whether the
load stays even (Finagle's aperture balancers, whose design this follows):

- **deterministic**: when the client knows its place among its peers (index ``i`` of
  ``N``, a ``PeerSet``), clients and servers are laid on the same ring, each evenly spaced.
  Client ``i`` covers the arc from ``i/N`` on, as wide as its aperture but a whole number
  of client widths (``1/N`` each), so every point of the ring is covered by the same number
  of clients. A server only partly under the arc (at its edges) gets a share in proportion
  to the overlap. Every server then receives the same share of the fleet's load, and the
  slices of the clients that cover it are contiguous, so a change of membership moves each
  slice by about one server;
- **random**: when the client does not know its place, it takes ``aperture`` servers at
  random (a random order of its own, stable across changes of the set). Connections are
  as few, but some servers are in more clients' slices than others, so the load is uneven.

The aperture (in servers) starts at ``min_aperture`` and follows the load the client
offers: the calls it has in flight in the slice, smoothed over time, per server of the
slice, against a band (``low_load`` to ``high_load``): above it the slice widens, below it
narrows, never under ``min_aperture`` nor over the number of servers.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import math
import random
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from ._filtered import Filtered, count
from ._util import seconds
from .balancer import Balancer
from .instance import Instance
from .least_loaded import LeastLoaded
from .publisher import EndpointSet, Publisher, Subscription
from .tracked import Clock, TrackedEndpoint

__all__ = ["Aperture", "PeerSet"]

Seed = int | float | str | bytes | None

_OUTSIDE = "outside the aperture"
_RETRIES = 8  # re-picks at most when an edge server's overlap turns a pick down


@functools.lru_cache(maxsize=1 << 16)
def _ring_key(address: str) -> bytes:
    """A server's place in the order every client computes alike.

    A hash rather than the address itself, so that neighbours in the address space (one
    rack, one zone) are spread around the ring rather than all in a few clients' slices.
    """
    return hashlib.blake2b(address.encode(), digest_size=8).digest() + address.encode()


def _units(aperture: int, servers: int, peers: int) -> int:
    """Client widths (``1/peers`` of the ring) that a slice of at least ``aperture`` servers spans."""
    return min(peers, -(-aperture * peers // servers))


def _ring_slice(index: int, peers: int, servers: int, aperture: int) -> dict[int, float]:
    """The servers (ring positions) that client ``index`` of ``peers`` covers, each with its overlap in (0, 1].

    On a ring of length ``servers * peers`` (integers: exact), client ``index`` starts at
    ``index * servers`` and spans a whole number of client widths (``servers`` each);
    server ``j`` spans ``[j * peers, (j + 1) * peers)``.
    """
    units = _units(aperture, servers, peers)
    if units >= peers:
        return dict.fromkeys(range(servers), 1.0)
    start = index * servers
    end = start + units * servers
    covered: dict[int, float] = {}
    for j in range(start // peers, (end - 1) // peers + 1):
        overlap = min((j + 1) * peers, end) - max(j * peers, start)
        position = j % servers
        covered[position] = min(1.0, covered.get(position, 0.0) + overlap / peers)
    return covered


class PeerSet:
    """Where this client stands among the clients of its own service: ``index`` of ``count``.

    ``PeerSet(publisher, own)`` follows it from discovery: ``publisher`` (any backend)
    publishes the instances of the client's own service, and ``own`` is this process's
    ``"host:port"`` (or ``Instance``) as registered there. The index is ``own``'s position
    among the peers' addresses in sorted order (every peer sorts alike), the count their
    number. Until ``own`` is in the set, and whenever it is not, the coordinate is unknown
    (``None``) and an ``Aperture`` falls back to a random slice.

    ``PeerSet.fixed(index, count)`` is a coordinate known by other means (a StatefulSet
    ordinal, a job index).

    >>> PeerSet.fixed(3, 10).coordinate
    (3, 10)
    """

    def __init__(self, publisher: Publisher[Any], own: str | Instance) -> None:
        if not isinstance(publisher, Publisher):
            raise TypeError(
                f"publisher must be a loadbalancer.Publisher of the client's own service, got {publisher!r}"
            )
        if isinstance(own, Instance):
            address = own.address
        elif isinstance(own, str):
            try:
                address = Instance.parse(own).address
            except ValueError as error:
                raise ValueError(f"own must be this process's 'host:port' among its peers, got {own!r}") from error
        else:
            raise TypeError(f"own must be a 'host:port' string or an Instance, got {own!r}")
        self._setup(address, None)
        self._publisher: Publisher[Any] | None = publisher
        self._subscription: Subscription | None = publisher.subscribe(self._on_peers)

    @classmethod
    def fixed(cls, index: int, count: int) -> PeerSet:
        """A coordinate that does not change: client ``index`` (from 0) of ``count``."""
        for name, value in (("index", index), ("count", count)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be a whole number, got {value!r}")
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count!r}")
        if not 0 <= index < count:
            raise ValueError(f"index must be from 0 to count - 1 ({count - 1}), got {index!r}")
        self = cls.__new__(cls)
        self._setup(None, (index, count))
        self._publisher = None
        self._subscription = None
        return self

    def _setup(self, own: str | None, coordinate: tuple[int, int] | None) -> None:
        self._own = own
        self._coordinate = coordinate
        self._lock = threading.Lock()
        self._listeners: dict[int, Callable[[], object]] = {}
        self._next = 0

    @property
    def coordinate(self) -> tuple[int, int] | None:
        """``(index, count)``, or ``None`` while this client is not among the peers."""
        return self._coordinate

    @property
    def own(self) -> str | None:
        """This process's address among its peers (``None`` for a fixed coordinate)."""
        return self._own

    def _on_peers(self, endpoints: EndpointSet[Any]) -> None:
        peers = sorted({instance.address for instance in endpoints.instances})
        coordinate = None
        if self._own in peers:
            coordinate = (peers.index(self._own), len(peers))  # a binary search would do; sets are small
        with self._lock:
            if coordinate == self._coordinate:
                return
            self._coordinate = coordinate
            listeners = list(self._listeners.values())
        for listener in listeners:
            listener()

    def _listen(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` whenever the coordinate changes; return what stops it."""
        with self._lock:
            key = self._next
            self._next += 1
            self._listeners[key] = callback

        def stop() -> None:
            with self._lock:
                self._listeners.pop(key, None)

        return stop

    def close(self) -> None:
        """Stop following the peers' publisher (which stays open); idempotent."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.unsubscribe()

    def __repr__(self) -> str:
        if self._publisher is None:
            return f"PeerSet.fixed{self._coordinate!r}"
        return f"PeerSet({self._publisher!r}, {self._own!r}, coordinate={self._coordinate!r})"


class _Slice(Filtered[Any, Any]):
    """The publisher the inner balancer picks from: the outer set less the servers outside the slice."""

    def __init__(self, publisher: Publisher[Any], peers: PeerSet | None, min_aperture: int, seed: Seed) -> None:
        self._peers = peers
        self._min = min_aperture
        self.aperture = min_aperture
        self._salt = random.Random(seed).randbytes(16)  # this client's own random order of servers
        self._ranks: dict[str, bytes] = {}
        self.edges: dict[int, float] = {}  # id(endpoint) -> overlap, for the partly covered servers
        self.weights: dict[str, float] = {}  # address -> overlap, every server of the slice
        self.width = 0.0  # servers' worth covered: the sum of the overlaps
        self.deterministic = False
        super().__init__(publisher, panic_threshold=0.0, logger=None, own=False)

    def _inner_changed(self, endpoints: EndpointSet[Any]) -> None:
        self._compute(endpoints)

    def _compute(self, endpoints: EndpointSet[Any]) -> None:
        """Choose the slice of ``endpoints`` (under the lock): ``_excluded``, ``weights``, ``edges``."""
        instances = endpoints.instances
        addresses = list(dict.fromkeys(instance.address for instance in instances))
        servers = len(addresses)
        self.aperture = max(self._min, min(self.aperture, servers))
        coordinate = self._peers.coordinate if self._peers is not None else None
        self.deterministic = coordinate is not None
        if coordinate is None:
            weights = dict.fromkeys(self._random_slice(addresses), 1.0)
        elif servers:
            order = sorted(addresses, key=_ring_key)
            covered = _ring_slice(coordinate[0], coordinate[1], servers, self.aperture)
            weights = {order[position]: overlap for position, overlap in covered.items()}
        else:
            weights = {}
        self.weights = weights
        self.width = math.fsum(weights.values())
        self._excluded = {address: _OUTSIDE for address in addresses if address not in weights}
        self.edges = {
            id(endpoint): weights[instance.address]
            for endpoint, instance in zip(endpoints, instances, strict=True)
            if weights.get(instance.address, 1.0) < 1.0
        }

    def _random_slice(self, addresses: Sequence[str]) -> list[str]:
        """The ``aperture`` servers first in this client's random order (kept across sets: little churn)."""
        old = self._ranks
        salt = self._salt
        ranks = {}
        for address in addresses:
            rank = old.get(address)
            if rank is None:
                rank = hashlib.blake2b(address.encode(), key=salt, digest_size=8).digest()
            ranks[address] = rank
        self._ranks = ranks
        return heapq.nsmallest(self.aperture, addresses, key=ranks.__getitem__)

    def resize(self, wider: bool) -> bool:
        """Widen or narrow the slice by one step; whether the slice changed.

        A step is one server, except where the slice spans whole client widths
        (deterministic): then it is the next aperture that changes the width.
        """
        with self._lock:
            servers = len(self._inner_set)
            aperture = self.aperture
            coordinate = self._peers.coordinate if self._peers is not None else None
            peers = coordinate[1] if coordinate is not None and servers else 0
            if not peers:
                new = aperture + 1 if wider else aperture - 1
            else:
                units = _units(aperture, servers, peers)
                new = servers * units // peers + 1 if wider else servers * (units - 1) // peers
            new = max(self._min, min(new, max(self._min, servers)))
            if new == aperture or (peers and _units(new, servers, peers) == _units(aperture, servers, peers)):
                return False
            self.aperture = new
            self._compute(self._inner_set)
            self._refilter()
            return True

    def repeer(self) -> None:
        """The client's coordinate changed: choose the slice again."""
        with self._lock:
            if not self._closed:
                self._compute(self._inner_set)
                self._refilter()

    def __repr__(self) -> str:
        return f"Aperture slice of {self._inner!r}"


def _detach(slice_: _Slice, unlisten: Callable[[], None] | None) -> None:
    if unlisten is not None:
        unlisten()
    slice_.close()


class Aperture(Balancer[Any]):
    """Picks within a slice of the servers sized by load: few connections per server, even load.

    ``publisher``'s set is the servers. ``peers`` (a ``PeerSet``) gives this client's
    place among its peers, which makes the slice deterministic (even load across the
    servers); without it (``None``, default), or while the coordinate is unknown, the slice
    is random. ``balancer`` (default ``LeastLoaded``) is called with a publisher of the
    slice and picks within it: ``LeastLoaded``, ``PeakEwma`` (``lambda p: PeakEwma(p,
    ...)``) or any balancer class or factory; ``endpoint()`` returns what it returns (a
    ``TrackedEndpoint`` for the P2C balancers). Servers at the edges of a deterministic
    slice are picked in proportion to their overlap with it (a pick of one is turned down
    with probability ``1 - overlap`` and picked again).

    ``min_aperture`` (default 12: Finagle's, enough that a slice rarely holds no healthy
    server) is the fewest servers in a slice (all of them if there are fewer). The slice
    widens when the client's calls in flight in it, smoothed over ``smooth_window`` seconds
    (default 5), exceed ``high_load`` (default 2.0) per server of the slice, and narrows
    when under ``low_load`` (default 0.875); the load is read every slice-size picks from
    the inner balancer's ``TrackedEndpoint`` counts (a balancer that hands out no trackers
    keeps the slice at its minimum). ``seed`` makes the random order and the edge draws
    reproducible; ``clock`` (seconds, monotonic) is for tests and simulations.

    >>> from loadbalancer import static
    >>> servers = static.Publisher([f"10.0.0.{i}:80" for i in range(1, 101)], lambda hp: lambda req: hp)
    >>> lb = Aperture(servers, peers=PeerSet.fixed(0, 10), min_aperture=4)
    >>> len(lb.candidates())  # 100 servers over 10 clients: each covers a tenth
    10
    """

    def __init__(
        self,
        publisher: Publisher[Any],
        *,
        peers: PeerSet | None = None,
        min_aperture: int = 12,
        balancer: Callable[[Publisher[Any]], Balancer[Any]] = LeastLoaded,
        low_load: float = 0.875,
        high_load: float = 2.0,
        smooth_window: float | timedelta = 5.0,
        seed: Seed = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(publisher, Publisher):
            raise TypeError(f"Aperture balances over a loadbalancer.Publisher, got {publisher!r}")
        if peers is not None and not isinstance(peers, PeerSet):
            raise TypeError(f"peers must be a PeerSet or None, got {peers!r}")
        count(min_aperture, "min_aperture")
        self._low, self._high = _band(low_load, high_load)
        self._window = seconds(smooth_window, "smooth_window", allow_zero=False)
        if not callable(balancer):
            raise TypeError(f"balancer must be a balancer class or a factory of one, got {balancer!r}")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self._slice = _Slice(publisher, peers, min_aperture, seed)
        inner = balancer(self._slice)
        if not isinstance(inner, Balancer):
            self._slice.close()
            raise TypeError(f"balancer(publisher) must return a loadbalancer.Balancer, got {inner!r}")
        self._inner = inner
        self._peers = peers
        self._random = random.Random(seed).random
        self._clock = clock
        self._picks = 0
        self._ema: float | None = None
        self._stamp = clock()
        self._band = threading.Lock()
        super().__init__(publisher)
        unlisten = peers._listen(self._slice.repeer) if peers is not None else None
        if peers is not None:
            self._slice.repeer()  # the coordinate may have changed before we listened
        weakref.finalize(self, _detach, self._slice, unlisten)

    @property
    def aperture(self) -> int:
        """The slice's size as the load asks for it, in servers (the minimum, or more)."""
        return self._slice.aperture

    @property
    def deterministic(self) -> bool:
        """Whether the slice is the ring's (the coordinate is known) rather than random."""
        return self._slice.deterministic

    @property
    def balancer(self) -> Balancer[Any]:
        """The balancer that picks within the slice."""
        return self._inner

    def servers(self) -> dict[str, float]:
        """The slice now: each server's address and the share of it covered (below 1.0 only at the edges)."""
        return dict(self._slice.weights)

    def endpoint(self) -> Any:
        """Of two servers of the slice, the cheaper (as the inner balancer picks); ``NoEndpointsError`` if none."""
        picked = self._inner.endpoint()
        edges = self._slice.edges
        if edges:
            picked = self._weigh(picked, edges)
        self._picks += 1
        if self._picks >= len(self._slice.weights):
            self._sample()
        return picked

    def _weigh(self, picked: Any, edges: dict[int, float]) -> Any:
        """Accept a pick of an edge server with probability its overlap, else pick again."""
        for _ in range(_RETRIES):
            weight = edges.get(id(picked))
            if weight is None and isinstance(picked, TrackedEndpoint):
                weight = edges.get(id(picked.endpoint))
            if weight is None or self._random() < weight:
                return picked
            picked = self._inner.endpoint()
        return picked

    def _sample(self) -> None:
        """Read the load in flight in the slice, smooth it, and resize the slice if out of the band."""
        self._picks = 0
        if not self._band.acquire(blocking=False):
            return  # another thread is at it
        try:
            load = sum(c.outstanding for c in self._inner.candidates() if isinstance(c, TrackedEndpoint))
            now = self._clock()
            if self._ema is None:
                self._ema = float(load)
            elif now > self._stamp:
                keep = math.exp((self._stamp - now) / self._window)
                self._ema = load + (self._ema - load) * keep
            self._stamp = max(now, self._stamp)
            width = self._slice.width
            if width:
                per_server = self._ema / width
                if per_server >= self._high:
                    self._slice.resize(wider=True)
                elif per_server <= self._low:
                    self._slice.resize(wider=False)
        finally:
            self._band.release()

    def candidates(self) -> Sequence[Any]:
        """The endpoints of the slice, as the inner balancer hands them out."""
        return self._inner.candidates()

    def _update(self, endpoints: EndpointSet[Any]) -> None:
        """Nothing to do: the slice follows the publisher itself."""

    def __repr__(self) -> str:
        kind = "deterministic" if self._slice.deterministic else "random"
        return f"Aperture({self._publisher!r}, {kind}, aperture={self._slice.aperture})"


def _band(low: float, high: float) -> tuple[float, float]:
    for name, value in (("low_load", low), ("high_load", high)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative number of calls in flight per server, got {value!r}")
    if not low < high:
        raise ValueError(f"low_load ({low!r}) must be less than high_load ({high!r})")
    return float(low), float(high)
