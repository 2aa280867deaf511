"""Consistent hashing: the same key goes to the same endpoint while the set allows it.

``ConsistentHash`` uses rendezvous hashing (highest random weight, HRW) over 65,536 slots:
a key's slot is ``crc32(key) & 0xffff``, and a slot belongs to the endpoint with the
highest score ``hash(endpoint, slot)`` (weighted: the lowest ``-ln(u) / weight``, ``u`` the
score as a fraction). The owner of each slot is worked out the first time a key lands in
it and kept in a table, so a pick is a hash and an index; a new set starts a new table,
but a set that only lost endpoints keeps every slot whose owner stayed. In front of the
table, a key -> endpoint dict remembers the keys seen since the set last changed (emptied
when it holds ``cache_size`` keys; not an LRU, whose bookkeeping would cost a pick more than
it saves): a key that comes back (a session, a user id) costs one dict lookup instead of
UTF-8 encoding and CRC-32. A key seen for the first time pays for the lookup and the insert
on top of the hash; ``cache_size=0`` turns the cache off for keys that never repeat.

Why rendezvous and not Maglev: both give O(1) picks from a table, but rendezvous moves
exactly the keys it must and no others: when an endpoint leaves, only its keys move
(spread over the others in proportion to their weights); when one joins, only the keys it
takes move, about 1/(n+1) of them. Maglev moves more (measured for a 65,537-entry table:
1.02x the minimum at 10 endpoints, 1.2x at 50, 2.4x at 200), and must fill its whole
table for every set (60-90 ms of Python at 10-200 endpoints) where rendezvous fills a
slot when it is first used (about 0.5 us per endpoint). Maglev balances a little better
(every endpoint gets its share of slots to +-1); here each slot falls to an endpoint at
random, so shares vary by about sqrt(n / 65536) (0.4% at 10 endpoints, 1.2% at 100).

Hashes are stable across processes and Python versions (CRC-32, BLAKE2b and a 64-bit
mixer, never Python's randomised ``hash()``), so a fleet of clients agrees on the owners.
Priority groups and weight 0 are those of ``loadbalancer.weighted``.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Sequence
from typing import Any, Generic, NoReturn, TypeVar

from .balancer import Balancer, _no_endpoints_error
from .publisher import EndpointSet, Publisher
from .weighted import _effective_weights, _priority_group

__all__ = ["ConsistentHash"]

E = TypeVar("E")

_SLOTS = 1 << 16
_MASK = _SLOTS - 1
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: spreads consecutive slots apart
_crc32 = zlib.crc32


def _seed(address: str) -> int:
    return int.from_bytes(hashlib.blake2b(address.encode(), digest_size=8).digest(), "big")


def _mix(x: int) -> int:
    """splitmix64's finaliser: a bijection on 64-bit integers whose output bits all depend on every input bit."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class _Rendezvous(Generic[E]):
    """One set's owners: ``owner(slot)`` is the endpoint with the best score for the slot."""

    __slots__ = ("endpoints", "seeds", "weights")

    def __init__(self, endpoints: Sequence[E], seeds: Sequence[int], weights: Sequence[int]) -> None:
        self.endpoints = tuple(endpoints)
        self.seeds = tuple(seeds)
        # Equal weights need no logarithm: the highest hash wins, as it would with -ln(u)/w.
        self.weights = None if len(set(weights)) == 1 else tuple(weights)

    def owner(self, slot: int) -> E:
        x = slot * _GOLDEN
        best = 0
        if self.weights is None:
            top = -1
            for index, seed in enumerate(self.seeds):
                score = _mix((seed + x) & _M64)
                if score > top:
                    best, top = index, score
        else:
            low = math.inf
            for index, (seed, weight) in enumerate(zip(self.seeds, self.weights, strict=True)):
                u = ((_mix((seed + x) & _M64) >> 11) + 0.5) * 2.0**-53  # uniform in (0, 1)
                cost = -math.log(u) / weight
                if cost < low:
                    best, low = index, cost
        return self.endpoints[best]


class _NoTable(list[Any]):
    """The table of an empty set: any lookup raises ``NoEndpointsError`` (no test on the hot path)."""

    def __init__(self, publisher: Publisher[Any], endpoints: EndpointSet[Any]) -> None:
        super().__init__()
        self.publisher = publisher
        self.endpoints = endpoints

    def __getitem__(self, index: Any) -> NoReturn:
        raise _no_endpoints_error(self.publisher, self.endpoints)


class _Owners(dict[Any, Any]):
    """One set's key -> endpoint cache, holding the table and the rendezvous it fills
    from, so that a pick reads all three in one snapshot (one attribute read)."""

    __slots__ = ("hrw", "limit", "table")

    def __init__(self, table: list[Any], hrw: _Rendezvous[Any] | None, limit: int) -> None:
        super().__init__()
        self.table = table
        self.hrw = hrw
        self.limit = limit


class ConsistentHash(Balancer[E]):
    """Sends each key to the same endpoint, and moves few keys when the set changes.

    ``endpoint(key=...)`` takes a ``str`` (hashed as UTF-8) or ``bytes`` key, such as a
    user or tenant id, and returns that key's endpoint among the lowest priority group,
    each endpoint owning a share of the keys in proportion to its weight. When an endpoint
    leaves, only its keys move; when one joins, it takes about 1/(n+1) of the keys from the
    others, and no other key moves (rendezvous hashing; see the module docstring). Every
    client with the same set maps a key to the same endpoint. ``endpoint()`` without a key
    raises ``TypeError``: this balancer cannot pick for ``Retry`` on its own. Up to
    ``cache_size`` keys (0: none) are remembered with their endpoint until the set changes,
    so a key that repeats is not hashed again.

    >>> from loadbalancer import static
    >>> publisher = static.Publisher(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"], str)
    >>> lb = ConsistentHash(publisher)
    >>> lb.endpoint(key="user-42") == lb.endpoint(key=b"user-42")
    True
    >>> before = {f"user-{i}": lb.endpoint(key=f"user-{i}") for i in range(1000)}
    >>> publisher.replace(["10.0.0.1:80", "10.0.0.2:80"])   # 10.0.0.3 leaves: only its keys move
    >>> all(lb.endpoint(key=k) == e for k, e in before.items() if e != "10.0.0.3:80")
    True
    """

    def __init__(self, publisher: Publisher[E], *, cache_size: int = 16_384) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be a non-negative integer, got {cache_size!r}")
        self._cache_size = cache_size
        self._hrw: _Rendezvous[E] | None = None
        self._addresses: tuple[str, ...] = ()
        self._table: list[E | None] = []
        self._owners = _Owners(self._table, None, cache_size)
        self._ready = False
        super().__init__(publisher)
        if not self._ready:
            self._update(publisher.endpoints())

    def endpoint(self, key: str | bytes | None = None) -> E:
        """The endpoint that owns ``key``; ``NoEndpointsError`` if the set is empty."""
        owners = self._owners
        try:
            found: E | None = owners.get(key)
        except (TypeError, ValueError):  # unhashable (a bytearray): hashed every time, not cached
            return self._owner(owners, key)
        if found is None:
            # Not seen since the cache was last emptied: CRC-32 of the key, then the table.
            try:
                slot = _crc32(key.encode() if type(key) is str else key) & _MASK  # type: ignore[arg-type]
            except TypeError:
                return self._owner(owners, key)
            found = owners.table[slot]
            if found is None:
                found = self._fill(owners, slot)
            if len(owners) >= owners.limit:
                if not owners.limit:
                    return found
                owners.clear()  # not an LRU: cheaper, and a working set that fits stays
            owners[key] = found
        return found

    def _owner(self, owners: _Owners, key: object) -> E:
        """The pick without the cache, for keys it cannot hold (or bad ones)."""
        try:
            slot = _crc32(key.encode() if isinstance(key, str) else key) & _MASK  # type: ignore[arg-type]
        except TypeError:
            self._bad_key(key)
        found: E | None = owners.table[slot]
        return self._fill(owners, slot) if found is None else found

    def _bad_key(self, key: object) -> NoReturn:
        if key is None:
            raise TypeError(
                f"{type(self).__name__} picks by key: call endpoint(key=...) with a str or bytes key"
            ) from None
        raise TypeError(f"a {type(self).__name__} key must be str or bytes, got {type(key).__name__}") from None

    def _fill(self, owners: _Owners, slot: int) -> E:
        # Two threads may fill the same slot at once: they find the same owner.
        hrw = owners.hrw
        if hrw is None:  # unreachable: an empty set's table raises on lookup
            self._no_endpoints(self._publisher.endpoints())
        owner: E = hrw.owner(slot)
        owners.table[slot] = owner
        return owner

    def _update(self, endpoints: EndpointSet[E]) -> None:
        self._ready = True
        if not endpoints:
            self._hrw = None
            self._addresses = ()
            self._table = _NoTable(self._publisher, endpoints)
            self._owners = _Owners(self._table, None, self._cache_size)
            return
        group, instances = _priority_group(endpoints)
        addresses = tuple(instance.address for instance in instances)
        hrw = _Rendezvous(group, [_seed(address) for address in addresses], _effective_weights(instances))
        table = self._kept_slots(hrw, addresses)
        # A pick reads the table, the rendezvous that fills it and the key cache in one
        # snapshot: a table is never filled from another set's rendezvous. The same
        # owners keep their cache; any other change starts an empty one.
        owners = self._owners if table is self._table else _Owners(table, hrw, self._cache_size)
        self._hrw, self._addresses, self._table, self._owners = hrw, addresses, table, owners

    def _kept_slots(self, hrw: _Rendezvous[E], addresses: tuple[str, ...]) -> list[E | None]:
        """The new set's table: the old one, less the slots of departed endpoints, if that is
        still right (no endpoint joined or changed, the weights kept their proportions)."""
        old = self._hrw
        if old is None or not set(addresses) <= set(self._addresses):
            return [None] * _SLOTS
        position = {address: index for index, address in enumerate(self._addresses)}
        kept = [position[address] for address in addresses]
        if any(old.endpoints[i] is not e for i, e in zip(kept, hrw.endpoints, strict=True)):
            return [None] * _SLOTS  # an endpoint was made anew: the table holds the old one
        old_weights = [1] * len(kept) if old.weights is None else [old.weights[i] for i in kept]
        new_weights = [1] * len(kept) if hrw.weights is None else list(hrw.weights)
        if any(a * new_weights[0] != b * old_weights[0] for a, b in zip(old_weights, new_weights, strict=True)):
            return [None] * _SLOTS  # proportions changed: scores are not comparable
        if len(kept) == len(self._addresses):
            return self._table  # the same owners (a stale mark, or nothing at all, changed)
        gone: dict[int, None] = {id(old.endpoints[i]): None for i in set(range(len(self._addresses))) - set(kept)}
        # gone.get(id(owner), owner): None for a departed owner, else the owner. All in C,
        # so the GIL is not handed back and forth 65,536 times with busy picking threads.
        return list(map(gone.get, map(id, self._table), self._table))
