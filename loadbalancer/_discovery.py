"""``DiscoveryPublisher``: an instance source feeding the endpoint cache, for every backend.

A backend tells it what it found in one of two ways:

- the whole set: ``_publish(instances)`` (a DNS answer, a static list, a poll): diffed by
  address against the last set, in the source's order;
- changes by key, for sources that know what changed (an etcd watch event, a ZooKeeper
  child, a registry entry): ``_put(key, instance)``, ``_delete(key)``, then ``_commit()``;
  ``_reset(pairs)`` replaces every key at once (a fresh read). The set is in key order, and
  a change costs what it changes, not the size of the set.

and ``_publish_error(error)`` when a read failed: the last good set stays, marked stale
(stale beats empty), until ``invalidate_after`` runs out.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import time
from collections.abc import Callable, Hashable, Iterable
from datetime import timedelta
from typing import Any, Generic, TypeVar

from ._endpoints import Closer, maker
from ._runtime import RUNTIME
from ._typing import E
from ._util import describe, seconds
from .errors import InvalidInstanceError
from .instance import Instance, parse_instance
from .publisher import EndpointSet, Factory, Publisher

K = TypeVar("K", bound=Hashable)

_CLOSE_WAIT = 5.0  # how long a sync close() waits for async closers on the runtime


def check_tags(tags: Iterable[str] | str | None) -> frozenset[str]:
    """``tags=`` as a set; a lone string is one tag."""
    if tags is None:
        return frozenset()
    if isinstance(tags, str):
        return frozenset((tags,))
    found = frozenset(tags)
    for tag in found:
        if not isinstance(tag, str):
            raise TypeError(f"tags must be strings, got {tag!r}")
    return found


class DiscoveryPublisher(Publisher[E], Generic[E]):
    """The base of every discovery publisher: instances in, endpoints out.

    ``factory`` turns each new instance into its endpoint (``None``: the instances are the
    endpoints); an instance that stays keeps its endpoint; a departed one's endpoint is
    closed ``close_delay`` seconds later. ``tags``: publish only instances that carry all of
    them. ``invalidate_after``: how long a stale set may serve (``None``: for ever), by
    ``clock`` (seconds; injectable for tests and simulations).
    """

    def __init__(
        self,
        factory: Factory[E] | None = None,
        *,
        service: str,
        logger: Any = None,
        invalidate_after: float | timedelta | None = None,
        close_delay: float | timedelta = 1.0,
        tags: Iterable[str] | str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(service=service, logger=logger)
        self._make = maker(factory)
        self._tags = check_tags(tags)
        self._invalidate_after = None if invalidate_after is None else seconds(invalidate_after, "invalidate_after")
        self._closer: Closer[E] = Closer(self._log, seconds(close_delay, "close_delay"))
        self._cache: dict[str, tuple[Instance, E]] = {}  # address -> (instance, endpoint): what is published
        self._parsed: dict[str, Instance] = {}  # the last set's instance strings, parsed
        self._generation = 0  # counts good refreshes; an invalidation timer checks it
        self._clock = clock
        self._stale_since = 0.0  # by ``clock``: when the current stale period began
        # the keyed form: the source's truth, and the published lists kept in key order
        self._by_key: dict[Any, Instance] = {}
        self._keys: list[Any] = []
        self._instances: list[Instance] = []
        self._endpoints: list[E] = []
        self._hidden: set[Any] = set()  # keys not published: their address is another key's, or the factory failed
        self._rebuild = False  # the lists must be built afresh from ``_by_key``
        self._dirty = False
        self._added = 0
        self._removed: list[E] = []
        self.refresh_failures: dict[str, int] = {}  # by the error's type: counters the metrics layer reads
        self.last_good: float | None = None  # time.monotonic() of the last good read

    @property
    def tags(self) -> frozenset[str]:
        """The tags every published instance carries (empty: no filter)."""
        return self._tags

    def _wanted(self, instance: Instance) -> bool:
        tags = self._tags
        return not tags or tags.issubset(instance.tags)

    def _endpoint(self, instance: Instance) -> E | None:
        """A new endpoint for ``instance`` (the instance itself without a factory); ``None`` if the factory failed."""
        make = self._make
        if make is None:
            return instance  # type: ignore[return-value]
        try:
            endpoint: E | None = make(instance)
        except Exception as error:
            self._log.error("factory_failed", instance=instance.address, error=describe(error), exc_info=error)
            return None
        if endpoint is None:
            self._log.error("factory_failed", instance=instance.address, error="the factory returned None")
        return endpoint

    # -- the whole set ---------------------------------------------------------------------

    def _publish(self, items: Iterable[Instance | str], *, strict: bool = False) -> None:
        """Make ``items`` the current set (in this order; an address listed twice counts once).

        Strings are parsed; a malformed one is logged and skipped, or with ``strict=True``
        raises ``InvalidInstanceError`` before anything changes.
        """
        with self._lock:
            if self._closed:
                return
            instances = self._resolve(items, strict)
            old = self._cache
            new: dict[str, tuple[Instance, E]] = {}
            kept: list[Instance] = []
            endpoints: list[E] = []
            added = 0
            plain = self._make is None
            wanted = self._wanted if self._tags else None
            for instance in instances:
                address = instance.address
                if address in new or (wanted is not None and not wanted(instance)):
                    continue
                entry = old.get(address)
                if plain:
                    endpoint: E | None = instance  # type: ignore[assignment]
                    added += entry is None
                elif entry is None:
                    endpoint = self._endpoint(instance)
                    if endpoint is None:
                        continue
                    added += 1
                else:
                    endpoint = entry[1]
                new[address] = (instance, endpoint)  # type: ignore[assignment]
                kept.append(instance)
                endpoints.append(endpoint)  # type: ignore[arg-type]
            removed = [entry[1] for address, entry in old.items() if address not in new]
            self._cache = new
            current = self._current
            self._generation += 1
            self.last_good = time.monotonic()
            self._log_recovery(current, len(kept))
            if current is None or current.error is not None or tuple(kept) != current.instances:
                if added or removed or current is None:
                    self._log.info("endpoints_updated", count=len(kept), added=added, removed=len(removed))
                self._set(EndpointSet(endpoints, kept, None))
            self._closer.retire(removed)  # under the lock: a close() from now on finds them
        self._closer.flush()

    def _resolve(self, items: Iterable[Instance | str], strict: bool) -> list[Instance]:
        memo, parsed = self._parsed, {}
        result: list[Instance] = []
        for item in items:
            if isinstance(item, Instance):
                result.append(item)
                continue
            instance = memo.get(item) if isinstance(item, str) else None
            if instance is None:
                try:
                    instance = parse_instance(item)
                except InvalidInstanceError as error:
                    if strict:
                        raise
                    self._log.error("instance_invalid", instance=item, error=error.reason)
                    continue
            parsed[item] = instance
            result.append(instance)
        self._parsed = parsed
        return result

    # -- changes by key --------------------------------------------------------------------

    def _put(self, key: Any, instance: Instance) -> None:
        """Key ``key`` now holds ``instance`` (published at the next ``_commit()``). Call with ``_lock`` held."""
        if self._tags and not self._wanted(instance):
            self._delete(key)
            return
        old = self._by_key.get(key)
        if old == instance and key not in self._hidden:
            return
        self._by_key[key] = instance
        self._dirty = True
        if self._rebuild:
            return
        address = instance.address
        if old is not None and key not in self._hidden:
            index = bisect.bisect_left(self._keys, key)
            if old.address == address:  # the same endpoint serves it (re-weighted, new tags, ...)
                self._instances[index] = instance
                self._cache[address] = (instance, self._cache[address][1])
                return
            self._unlist(index, old.address)
        self._hidden.discard(key)
        if address in self._cache:  # another key holds this address: one endpoint per address
            self._rebuild = True
            return
        endpoint = self._endpoint(instance)
        if endpoint is None:
            self._hidden.add(key)  # tried again at the next commit
            return
        index = bisect.bisect_left(self._keys, key)
        self._keys.insert(index, key)
        self._instances.insert(index, instance)
        self._endpoints.insert(index, endpoint)
        self._cache[address] = (instance, endpoint)
        self._added += 1

    def _delete(self, key: Any) -> None:
        """Key ``key`` is gone (published at the next ``_commit()``). Call with ``_lock`` held."""
        old = self._by_key.pop(key, None)
        if old is None:
            return
        self._dirty = True
        if key in self._hidden:
            self._hidden.discard(key)
            return
        if self._rebuild:
            return
        if any(self._by_key.get(k, old).address == old.address for k in self._hidden):
            self._rebuild = True  # a hidden key of the same address takes over
            return
        self._unlist(bisect.bisect_left(self._keys, key), old.address)

    def _unlist(self, index: int, address: str) -> None:
        del self._keys[index], self._instances[index]
        self._removed.append(self._endpoints.pop(index))
        del self._cache[address]

    def _reset(self, pairs: Iterable[tuple[Any, Instance]]) -> None:
        """Every key at once (a fresh read): keys not in ``pairs`` are deleted. Call with ``_lock`` held."""
        found = dict(pairs)
        if not self._by_key and not self._keys:
            self._by_key = {k: v for k, v in found.items() if not self._tags or self._wanted(v)}
            self._rebuild = self._dirty = True
            return
        for key in [key for key in self._by_key if key not in found]:
            self._delete(key)
        for key, instance in found.items():
            self._put(key, instance)

    def _build(self) -> None:
        """Build the published lists afresh from ``_by_key``, keeping the endpoints of addresses that stay."""
        old = self._cache
        new: dict[str, tuple[Instance, E]] = {}
        keys: list[Any] = []
        instances: list[Instance] = []
        endpoints: list[E] = []
        hidden: set[Any] = set()
        for key in sorted(self._by_key):
            instance = self._by_key[key]
            address = instance.address
            if address in new:
                hidden.add(key)
                continue
            entry = old.get(address)
            if entry is None:
                endpoint = self._endpoint(instance)
                if endpoint is None:
                    hidden.add(key)
                    continue
                self._added += 1
            else:
                endpoint = entry[1]
            new[address] = (instance, endpoint)
            keys.append(key)
            instances.append(instance)
            endpoints.append(endpoint)
        self._removed.extend(entry[1] for address, entry in old.items() if address not in new)
        self._cache, self._keys, self._instances, self._endpoints = new, keys, instances, endpoints
        self._hidden = hidden
        self._rebuild = False

    def _commit(self, *, fresh: bool = True) -> None:
        """Publish the changes made by key since the last commit (and mark the set fresh if stale)."""
        self._commit_locked(fresh)
        self._closer.flush()  # closers are user code: never under the lock

    def _commit_locked(self, fresh: bool) -> None:
        with self._lock:
            if self._closed:
                return
            # keys whose factory failed: try again (an address shared with another key stays hidden)
            if (
                self._hidden
                and not self._rebuild
                and any(self._by_key[k].address not in self._cache for k in self._hidden)
            ):
                self._rebuild = True
            if self._rebuild:
                self._build()
            current = self._current
            stale = current is not None and current.error is not None
            if not (self._dirty or current is None or (fresh and stale)):
                return
            if not fresh and stale and current is not None:  # changes seen, the source still failing
                self._dirty = False
                self._set(EndpointSet(self._endpoints, self._instances, current.error))
                removed, self._removed = self._removed, []
                self._added = 0
                self._closer.retire(removed)
                return
            self._dirty = False
            self._generation += 1
            self.last_good = time.monotonic()
            removed, self._removed = self._removed, []
            added, self._added = self._added, 0
            if fresh:
                self._log_recovery(current, len(self._keys))
            if added or removed or current is None:
                self._log.info("endpoints_updated", count=len(self._keys), added=added, removed=len(removed))
            self._set(EndpointSet(self._endpoints, self._instances, None))
            self._closer.retire(removed)

    # -- failures --------------------------------------------------------------------------

    def _publish_error(self, error: BaseException) -> None:
        """Record a failed refresh: keep the last good set, mark it stale, log."""
        with self._lock:
            if self._closed:
                return
            current = self._current
            kept = 0 if current is None else len(current)
            kind = type(error).__name__
            self.refresh_failures[kind] = self.refresh_failures.get(kind, 0) + 1
            if current is not None and current.error is not None:
                # already stale: logged when it turned so; nothing new for subscribers
                self._log.info("refresh_failed", error=describe(error), kept=kept)
                self._invalidate(self._generation)  # due by the clock? (a timer checks too)
                return
            self._log.warning("refresh_failed", error=describe(error), kept=kept)
            stale: EndpointSet[E] = EndpointSet(current or (), current.instances if current else (), error)
            self._set(stale)
            self._stale_since = self._clock()
            if self._invalidate_after is not None and stale:
                self._invalidate(self._generation)

    def _log_recovery(self, current: EndpointSet[E] | None, count: int) -> None:
        # at the failure's own level: whoever saw ``refresh_failed`` sees that it is over
        if current is not None and current.error is not None:
            self._log.warning("refresh_recovered", count=count, error_was=describe(current.error))

    def _invalidate(self, generation: int) -> None:
        """Drop a set stale for ``invalidate_after`` by the clock; else check again when it would be.

        ``generation`` counts good refreshes: a timer of an earlier stale period does nothing.
        """
        with self._lock:
            current = self._current
            after = self._invalidate_after
            if (
                self._closed
                or after is None
                or generation != self._generation
                or current is None
                or current.error is None
                or not current
            ):
                return  # a good refresh came in the meantime, or nothing is left to drop
            left = after - (self._clock() - self._stale_since)
            if left > 0:
                RUNTIME.call_later(left, self._invalidate, generation)
                return
            self._log.warning(
                "stale_endpoints_dropped",
                count=len(current),
                after=self._invalidate_after,
                error=describe(current.error),
            )
            removed = [entry[1] for entry in self._cache.values()]
            self._cache = {}
            if self._by_key:  # the keys stay known: the next good commit makes their endpoints anew
                self._keys, self._instances, self._endpoints = [], [], []
                self._rebuild = True
            self._set(EndpointSet((), (), current.error))
            self._closer.retire(removed)
        self._closer.flush()

    # -- closing ---------------------------------------------------------------------------

    def _release(self) -> list[E]:
        """Shut down (once) and hand over every endpoint to close."""
        if not self._shutdown():
            return []
        with self._lock:
            endpoints = [entry[1] for entry in self._cache.values()]
            self._cache = {}
            self._by_key, self._keys, self._instances, self._endpoints = {}, [], [], []
        return endpoints + self._closer.waiting()  # those of departed instances too: none is left open

    def close(self) -> None:
        """Stop discovery and close every endpoint now; idempotent.

        Async closers run on the library's background loop and ``close()`` waits a few
        seconds for them; in async code prefer ``await aclose()``, which runs them in the
        caller's loop.
        """
        for future in self._closer.close(self._release()):
            if isinstance(future, concurrent.futures.Future) and not RUNTIME.in_loop_thread():
                try:
                    future.result(_CLOSE_WAIT)
                except concurrent.futures.TimeoutError:
                    self._log.warning("endpoint_close_slow", waited=_CLOSE_WAIT)

    async def aclose(self) -> None:
        """Stop discovery and close every endpoint, awaiting async closers in this loop."""
        running = self._closer.close(self._release())
        if running:
            await asyncio.gather(*(asyncio.wrap_future(f) for f in running), return_exceptions=True)
