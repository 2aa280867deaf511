"""Following one ZooKeeper path with kazoo's one-shot watches: its children and their data, as batches.

A watch is a children watch on the path and a data watch on each child, set again by the
read each event calls for: a child added or removed costs a children read (and a data
read of the new one), a child changed costs a read of that child. kazoo drops every watch
when its connection is lost; the backend then tells each follower (``lost()``), whose
batches raise, so that the publisher marks its set stale and, once the connection is back,
lists and watches afresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, MutableSet
from typing import Any, Protocol

from kazoo.protocol.states import EventType, WatchedEvent

from .._runtime import RUNTIME
from ..backend import Batch, Change
from ..instance import Instance
from ._link import gather_all
from ._paths import child_path

Watcher = Callable[[WatchedEvent], None]
Read = tuple[Instance | None, int]  # a child's instance (None: malformed) and its data's version (mzxid)


class Reads(Protocol):
    """What a follower reads with: the backend's requests, each setting ``watch`` when given."""

    async def children(self, path: str, watch: Watcher | None = None) -> list[str] | None: ...

    async def node(self, path: str, watch: Watcher | None = None) -> Read | None: ...

    async def version(self, path: str, watch: Watcher | None = None) -> int | None: ...


class Follower:
    """One watch of ``path``, starting from ``versions`` (child name -> mzxid, as the listing read them).

    ``batches()`` yields the changes since the listing first (an empty batch if none: the
    watch is established), then each event's changes. A follower is in ``live`` while its
    batches run.
    """

    def __init__(self, reads: Reads, path: str, versions: Mapping[str, int], live: MutableSet[Follower], log: Any):
        self._reads = reads
        self._path = path
        self._known = dict(versions)  # every child read, malformed ones included
        self._live = live
        self._log = log
        self._dirty = True  # the children must be read (again)
        self._changed: set[str] = set()  # children whose data watch fired
        self._wake = asyncio.Event()
        self._failure: BaseException | None = None
        self._done = False

    def lost(self, error: BaseException) -> None:
        """The connection or session is gone, and kazoo's watches with it (on the runtime loop)."""
        if self._failure is None:
            self._failure = error
        self._wake.set()

    def watched(self, event: WatchedEvent) -> None:
        # On kazoo's callback thread: hand the event over.
        if not self._done:
            RUNTIME.call_soon(self._on_event, event)

    def _on_event(self, event: WatchedEvent) -> None:
        if self._done or event.type == EventType.NONE:  # NONE: a state change, which ``lost()`` reports
            return
        if event.path == self._path:
            self._dirty = True  # children added or removed, or the path created or deleted
        else:
            self._changed.add(event.path.rpartition("/")[2])
        self._wake.set()

    async def batches(self) -> AsyncIterator[Batch]:
        self._live.add(self)
        try:
            yield Batch(await self._sync(first=True))
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._failure is not None:
                    raise self._failure
                changes = await self._sync(first=False)
                if changes:
                    yield Batch(changes)
        finally:
            self._done = True
            self._live.discard(self)

    async def _sync(self, first: bool) -> list[Change]:
        """Read what the events (or, the first time, the listing's age) call for; the changes found."""
        changes: list[Change] = []
        wanted: set[str] = set()
        if self._dirty:
            self._dirty = False
            children = await self._reads.children(self._path, self.watched)
            if children is None:
                self._log.info("zookeeper_path_missing", path=self._path)
                changes = [Change(name, None) for name in self._known]
                self._known.clear()
                self._changed.clear()
                return changes
            present = set(children)
            for name in [name for name in self._known if name not in present]:
                del self._known[name]
                changes.append(Change(name, None))
            wanted.update(name for name in children if name not in self._known)
            if first:
                wanted.update(await self._moved(children, changes))
        changed, self._changed = self._changed, set()
        wanted.update(name for name in changed if name in self._known)
        changes.extend(await self._read(sorted(wanted)))
        return changes

    async def _moved(self, children: list[str], changes: list[Change]) -> list[str]:
        """Watch the children the listing read; those changed since (to read again), noting those gone."""
        names = [name for name in children if name in self._known]
        versions = await gather_all(self._reads.version(child_path(self._path, n), self.watched) for n in names)
        moved = []
        for name, version in zip(names, versions, strict=True):
            if version is None:
                del self._known[name]
                changes.append(Change(name, None))
            elif version != self._known[name]:
                moved.append(name)
        return moved

    async def _read(self, names: list[str]) -> list[Change]:
        reads = await gather_all(self._reads.node(child_path(self._path, name), self.watched) for name in names)
        changes = []
        for name, read in zip(names, reads, strict=True):
            if read is None:  # deleted since: the children watch fires too
                self._known.pop(name, None)
                changes.append(Change(name, None))
                continue
            instance, self._known[name] = read
            changes.append(Change(name, instance))  # None: malformed now, so it serves no more
        return changes
