"""Zone-aware routing: keep calls in the client's own zone while that zone has the capacity for them.

Instances carry a zone (``Instance.zone``: Kubernetes EndpointSlice topology, Consul and
Eureka metadata, a ``zone=`` tag). ``ZoneAware`` routes each pick to a zone, then lets a
balancer of that zone's instances pick (one balancer per zone: ``RoundRobin`` by default,
or ``LeastLoaded``, ``PeakEwma``, ... with ``balancer=``). The zone is chosen as Envoy's
zone-aware routing chooses it, from two distributions over the zones: the *upstream*
share (the zone's fraction of the instances in the set, which a ``HealthChecker`` or
``OutlierDetector`` underneath keeps to the healthy ones) and the *client* share (the
fraction of the calling fleet in that zone, from ``peers``):

- when the local zone's upstream share is at least its client share, every call stays
  local (each zone's clients then load their zone's instances no more than the average);
- otherwise the local zone takes ``upstream / client`` of the calls and the rest spills
  to the other zones in proportion to their *residual* capacity, ``upstream - client``
  where positive: zones with more servers than clients absorb the spill-over. With the
  local zone empty (an outage), all calls go to the others, in that proportion.

Zone routing is off, and calls spread over all zones in proportion to their instances
(as if there were no zones), when the set holds fewer than ``min_cluster_size``
instances, when its instances or the clients are in fewer than two zones, when the
clients' share of the local zone is unknown, or in panic (the publisher, a filter, passes
on unhealthy instances because too few are healthy, or the peers' publisher does).
"""

from __future__ import annotations

import itertools
import random
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ._filtered import count
from .balancer import Balancer, RoundRobin, _NoTable
from .publisher import EndpointSet, Publisher, Subscription

__all__ = ["ZoneAware", "zone_shares"]

E = TypeVar("E")

Seed = int | float | str | bytes | None

_ROUTE_BITS = 12  # a pick chooses its zone from a table of 4,096 routes: shares to 1/4096
_ROUTES = 1 << _ROUTE_BITS
UNKNOWN = ""  # the zone of instances that carry none


def zone_shares(
    zone: str,
    upstream: Mapping[str, float],
    clients: Mapping[str, float] | None,
    *,
    min_cluster_size: int = 6,
    panic: bool = False,
) -> dict[str, float]:
    """The share of a ``zone`` client's calls that each zone should get (Envoy's zone-aware routing).

    ``upstream`` maps each zone to its healthy instances (a count), ``clients`` each zone
    to its clients (a count or a share; ``None``: as many in each zone of ``upstream``
    and in ``zone``). Returns the zones with a share above 0, the shares summing to 1
    (empty when ``upstream`` is). See the module docstring for the rule.

    >>> zone_shares("a", {"a": 3, "b": 3, "c": 3}, {"a": 1, "b": 1, "c": 1})
    {'a': 1.0}
    >>> zone_shares("a", {"a": 2, "b": 4, "c": 4}, {"a": 4, "b": 3, "c": 3})
    {'a': 0.5, 'b': 0.25, 'c': 0.25}
    """
    total = sum(n for n in upstream.values() if n > 0)
    if total <= 0:
        return {}
    spread = {z: n / total for z, n in upstream.items() if n > 0}
    if clients is None:
        clients = dict.fromkeys([*spread, zone], 1.0)
    client_total = sum(n for n in clients.values() if n > 0)
    local_clients = clients.get(zone, 0)
    if (
        panic
        or total < min_cluster_size
        or len(spread) < 2
        or client_total <= 0
        or local_clients <= 0
        or sum(1 for n in clients.values() if n > 0) < 2
    ):
        return spread
    up_local = spread.get(zone, 0.0)
    client_local = local_clients / client_total
    if up_local > 0 and up_local >= client_local:
        return {zone: 1.0}
    direct = up_local / client_local
    residual = {z: share - max(clients.get(z, 0), 0) / client_total for z, share in spread.items() if z != zone}
    residual = {z: r for z, r in residual.items() if r > 0}
    if not residual:  # rounding left no zone with room: spread the rest evenly (as Envoy does)
        residual = dict.fromkeys((z for z in spread if z != zone), 1.0)
    room = sum(residual.values())
    shares = {zone: direct} if direct > 0 else {}
    shares.update((z, (1.0 - direct) * r / room) for z, r in residual.items())
    return shares


class _ZoneSet(Publisher[E]):
    """One zone's part of the upstream set, published by ``ZoneAware`` to that zone's balancer."""

    def __init__(self, parent: Publisher[Any], zone: str) -> None:
        super().__init__(service=parent.service, log_name=__name__)
        self._parent = parent
        self.zone = zone

    def publish(self, endpoints: EndpointSet[E]) -> None:
        with self._lock:
            current = self._current
            if (
                current is not None
                and current.error is endpoints.error
                and current.instances == endpoints.instances
                and all(a is b for a, b in zip(current, endpoints, strict=True))
            ):
                return
            self._set(endpoints)

    @property
    def last_error(self) -> BaseException | None:
        """The upstream publisher's most recent refresh failure."""
        return self._parent.last_error

    def __repr__(self) -> str:
        return f"{self._parent!r}[zone={self.zone!r}]"


class ZoneAware(Balancer[E]):
    """Picks in the client's own ``zone`` while it has the capacity; spills over in proportion.

    - ``zone``: this client's zone (required; compare ``Instance.zone`` of the instances).
    - ``peers`` (default ``None``): where the clients are. A ``Publisher`` of this client's
      own service (the calling fleet; each instance counts one client in its
      ``Instance.zone``), or a mapping ``zone -> clients`` (counts or shares). ``None``
      assumes the clients are spread evenly over the zones of the set and ``zone``.
    - ``balancer`` (default ``RoundRobin``): called with a publisher of one zone's
      instances, once per zone; picks within the zone. Any balancer class or factory:
      ``LeastLoaded``, ``lambda p: PeakEwma(p, slow_start=SlowStart())``, ...
    - ``min_cluster_size`` (default 6, Envoy's): below this many instances in the set, no
      zone routing (calls spread over all zones in proportion to their instances).
    - ``seed`` (default ``None``): makes the zone draws reproducible.

    The zone of a pick is drawn from the shares ``zone_shares`` computes (see the module
    docstring), kept in a table of 4,096 routes rebuilt when the set or the peers change;
    a zone's share is therefore exact to 1/4,096. ``shares`` shows them. Instances with no
    zone form a zone of their own (``""``). ``endpoint()`` returns what the zone's
    balancer returns (a ``TrackedEndpoint`` for the P2C balancers).

    >>> from loadbalancer import Instance, static
    >>> servers = static.Publisher(
    ...     [Instance(f"10.0.{z}.{i}", 80, metadata={"zone": "abc"[z]}) for z in range(3) for i in range(1, 4)], str
    ... )
    >>> lb = ZoneAware(servers, zone="a", peers={"a": 10, "b": 10, "c": 10})
    >>> lb.shares, lb.endpoint().startswith("10.0.0.")
    ({'a': 1.0}, True)
    """

    def __init__(
        self,
        publisher: Publisher[E],
        *,
        zone: str,
        peers: Publisher[Any] | Mapping[str, float] | None = None,
        balancer: Callable[[Publisher[E]], Balancer[E]] = RoundRobin,
        min_cluster_size: int = 6,
        seed: Seed = None,
    ) -> None:
        if not isinstance(zone, str) or not zone:
            raise TypeError(f"zone must be this client's zone name, got {zone!r}")
        if not callable(balancer):
            raise TypeError(f"balancer must be a balancer class or a factory of one, got {balancer!r}")
        self._zone = zone
        self._factory = balancer
        self._min_cluster_size = count(min_cluster_size, "min_cluster_size")
        self._clients = _clients_of(peers)
        self._peers = peers if isinstance(peers, Publisher) else None
        rng = random.Random(seed)
        self._bits = rng.getrandbits
        self._lock = threading.RLock()
        self._sets: dict[str, _ZoneSet[E]] = {}
        self._balancers: dict[str, Balancer[E]] = {}
        self._upstream: dict[str, int] = {}
        self._endpoints: EndpointSet[E] = EndpointSet()
        self._shares: dict[str, float] = {}
        self._routes: Any = None
        super().__init__(publisher)
        if self._peers is not None:
            self._subscription = _follow(self, self._peers)

    @property
    def zone(self) -> str:
        """This client's zone."""
        return self._zone

    @property
    def shares(self) -> dict[str, float]:
        """The share of the picks each zone gets now (zones with none left out)."""
        return dict(self._shares)

    def balancers(self) -> dict[str, Balancer[E]]:
        """The balancer of each zone seen so far, by zone name (``""``: instances with no zone)."""
        return dict(self._balancers)

    def endpoint(self) -> E:
        """An endpoint of the zone drawn for this pick; ``NoEndpointsError`` if the set is empty."""
        return self._routes[self._bits(_ROUTE_BITS)]()  # type: ignore[no-any-return]

    def candidates(self) -> Sequence[E]:
        """The endpoints of the zones picks go to now, as their balancers return them."""
        balancers = self._balancers
        return [e for z in self._shares for e in balancers[z].candidates()]

    def _update(self, endpoints: EndpointSet[E]) -> None:
        with self._lock:
            self._endpoints = endpoints
            by_zone: dict[str, list[int]] = {z: [] for z in self._sets}
            for i, instance in enumerate(endpoints.instances):
                by_zone.setdefault(instance.zone or UNKNOWN, []).append(i)
            for name, members in by_zone.items():
                part: EndpointSet[E] = EndpointSet(
                    [endpoints[i] for i in members], [endpoints.instances[i] for i in members], endpoints.error
                )
                self._zone_set(name).publish(part)
            self._upstream = {z: len(m) for z, m in by_zone.items() if m}
            self._reroute()

    def _zone_set(self, name: str) -> _ZoneSet[E]:
        zone_set = self._sets.get(name)
        if zone_set is None:
            zone_set = self._sets[name] = _ZoneSet(self._publisher, name)
            inner = self._factory(zone_set)
            if not isinstance(inner, Balancer):
                raise TypeError(f"balancer(publisher) must return a loadbalancer.Balancer, got {inner!r}")
            self._balancers[name] = inner
        return zone_set

    def _peers_changed(self, endpoints: EndpointSet[Any]) -> None:
        with self._lock:
            self._clients = _count_zones(endpoints)
            self._reroute()

    def _reroute(self) -> None:
        """Recompute the shares and the route table (under the lock)."""
        panic = bool(getattr(self._publisher, "panicking", False)) or bool(getattr(self._peers, "panicking", False))
        shares = zone_shares(
            self._zone, self._upstream, self._clients, min_cluster_size=self._min_cluster_size, panic=panic
        )
        if not shares:
            self._shares = {}
            self._routes = _NoTable(self._publisher, self._endpoints)
            return
        zones = list(shares)
        slots = _slots([shares[z] for z in zones])
        picks = [self._balancers[z].endpoint for z in zones]
        self._shares = shares
        self._routes = list(itertools.chain.from_iterable(map(itertools.repeat, picks, slots)))

    def __repr__(self) -> str:
        return f"ZoneAware({self._publisher!r}, zone={self._zone!r})"


def _slots(shares: Sequence[float]) -> list[int]:
    """Route-table slots per share, summing to ``_ROUTES`` (largest remainder); a share above 0 gets one at least."""
    ideal = [s * _ROUTES / sum(shares) for s in shares]
    counts = [max(1, int(x)) for x in ideal]
    order = sorted(range(len(counts)), key=lambda i: counts[i] - ideal[i])
    k = 0
    while sum(counts) < _ROUTES:
        counts[order[k % len(order)]] += 1
        k += 1
    while sum(counts) > _ROUTES:
        counts[counts.index(max(counts))] -= 1
    return counts


def _count_zones(endpoints: EndpointSet[Any]) -> dict[str, float]:
    counts: dict[str, float] = {}
    for instance in endpoints.instances:
        name = instance.zone or UNKNOWN
        counts[name] = counts.get(name, 0) + 1
    return counts


def _clients_of(peers: object) -> dict[str, float] | None:
    if peers is None:
        return None
    if isinstance(peers, Publisher):
        return _count_zones(peers.endpoints())
    if isinstance(peers, Mapping):
        clients = {}
        for name, value in peers.items():
            if not isinstance(name, str):
                raise TypeError(f"peers maps zone names to clients, got the key {name!r}")
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"peers[{name!r}] must be a non-negative number of clients, got {value!r}")
            clients[name] = float(value)
        return clients
    raise TypeError(f"peers must be a Publisher of the clients, a mapping zone -> clients, or None; got {peers!r}")


def _follow(balancer: ZoneAware[Any], peers: Publisher[Any]) -> Subscription:
    """Subscribe ``balancer`` to its peers through a weak reference (the peers must not keep it alive)."""
    ref = weakref.ref(balancer)

    def changed(endpoints: EndpointSet[Any]) -> None:
        lb = ref()
        if lb is not None:
            lb._peers_changed(endpoints)

    subscription = peers.subscribe(changed)
    weakref.finalize(balancer, subscription.unsubscribe)
    return subscription
