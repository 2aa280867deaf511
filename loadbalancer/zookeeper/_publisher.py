"""``zookeeper.Publisher``: go-kit's ``sd/zk`` instancer, a children watch with kazoo."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import EventType, KazooState, WatchedEvent

from .._discovery import DiscoveryPublisher as _Base
from .._runtime import RUNTIME
from .._typing import E
from .._util import describe, seconds
from ..errors import DiscoveryError
from ..instance import Instance
from ..publisher import Factory
from ._link import (
    CONNECTION_ERRORS,
    DEFAULT_HOSTS,
    InvalidNodeError,
    Link,
    backoff,
    check_hosts,
    check_path,
    child_path,
    connection_error,
    parse_node,
    shown,
)

__all__ = ["Publisher"]


class Publisher(_Base[E]):
    """Watches the children of ``path`` in ZooKeeper and publishes the instance each one holds.

    go-kit's ``zk.NewInstancer``. Each child node's data is ``"host:port"`` or a JSON document
    ``{"host": "10.0.0.5", "port": 8080, "weight": 10, "priority": 0, "tags": ["v2"],
    "metadata": {"zone": "a"}}`` (only ``host`` and ``port`` are required; Curator's
    ``address`` is read as ``host``; other keys are ignored). Instances are published in the
    order of their node names. A node whose data is neither is left out and logged
    (``invalid_node``, with the node and its data); it is read again when its data changes.
    A ``Registrar`` writes nodes of this form.

    - ``hosts``: a kazoo connection string, ``"zk1:2181,zk2:2181,zk3:2181"``, optionally
      ending in a chroot (``".../apps"``); the publisher then owns a ``KazooClient``, which
      costs three threads (kazoo's connection thread and two callback workers) and one TCP
      connection. To watch many paths, create one ``KazooClient`` and pass it as ``client=``
      to each publisher: the application starts and stops it, and publishers only add
      listeners and watches (a publisher given a client that is not connected waits for it).
    - ``session_timeout``: the ZooKeeper session timeout asked of the server (which clamps
      it to its own bounds), for an owned client.
    - A missing ``path`` is an empty set; it fills when the path is created.
    - When the connection drops the last good set stays, marked stale (``refresh_failed`` is
      logged); kazoo reconnects (waits up to ``max_backoff`` seconds between attempts) and
      the publisher then reads every node again and sets its watches again. After a session
      expiry, ephemeral nodes of other processes may have gone: the same full read shows it.
    - Reads and their watches run on the library's shared background loop; kazoo's threads
      only hand events to it. Subscribers are called there.
    - ``timeout``: how long ``refresh()`` waits for a connection, and the longest wait for any
      reply (a request made while kazoo reconnects waits for the connection). A publisher
      that has no connection ``timeout`` seconds after it was made reports it (a stale set,
      ``last_error``, ``refresh_failed`` logged) while kazoo goes on trying; the first
      connection makes the set fresh.
    - ``invalidate_after``, ``close_delay``: as for every ``loadbalancer.Publisher``.

    >>> from loadbalancer import zookeeper
    >>> publisher = zookeeper.Publisher("/services/api", lambda hostport: hostport, hosts="127.0.0.1:2181")
    >>> publisher.refresh()  # doctest: +SKIP
    EndpointSet([10.0.0.5:8080, 10.0.0.6:8080])
    >>> publisher.close()
    """

    def __init__(
        self,
        path: str,
        factory: Factory[E] | None = None,
        *,
        hosts: str = DEFAULT_HOSTS,
        client: KazooClient | None = None,
        session_timeout: float | timedelta = 10.0,
        timeout: float | timedelta = 10.0,
        max_backoff: float | timedelta = 5.0,
        logger: Any = None,
        invalidate_after: float | timedelta | None = None,
        close_delay: float | timedelta = 1.0,
        tags: Iterable[str] | str | None = None,
    ) -> None:
        self._path = check_path(path)
        if client is not None and hosts != DEFAULT_HOSTS:
            raise TypeError("give hosts= or client=, not both (a client has its own hosts)")
        if client is None:
            check_hosts(hosts)
        elif not isinstance(client, KazooClient):
            raise TypeError(f"client must be a kazoo.client.KazooClient, got {client!r}")
        session = seconds(session_timeout, "session_timeout", allow_zero=False)
        self._timeout = seconds(timeout, "timeout", allow_zero=False)
        self._max_backoff = seconds(max_backoff, "max_backoff", allow_zero=False)
        super().__init__(
            factory,
            service=self._path,
            logger=logger,
            invalidate_after=invalidate_after,
            close_delay=close_delay,
            tags=tags,
        )
        self._link = Link(
            hosts,
            client,
            session_timeout=session,
            max_backoff=self._max_backoff,
            timeout=self._timeout,
            on_state=self._state_changed,
        )
        self._log = self._log.bind(hosts=self._link.hosts)
        # State below is touched on the runtime thread only.
        self._nodes: dict[str, Instance | None] = {}  # child name -> what its data says (None: malformed)
        self._changed: set[str] = set()  # children whose data watch fired since they were read
        self._reread = True  # read every child again (a new connection: kazoo forgets watches)
        self._missing = False  # the path was missing at the last read
        self._backoff = backoff(self._max_backoff)
        self._retry: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._busy = asyncio.Lock()
        self._start(self._run())
        self._link.start()

    # -- public ----------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The watched path (within the chroot, if ``hosts`` has one)."""
        return self._path

    @property
    def client(self) -> KazooClient:
        """The kazoo client in use (the one given, or the publisher's own)."""
        return self._link.client

    def close(self) -> None:
        """Stop watching, close every endpoint, and stop the publisher's own client (if it has one)."""
        super().close()
        self._link.close()

    async def aclose(self) -> None:
        """Async form of ``close()``."""
        await super().aclose()
        await asyncio.to_thread(self._link.close)

    def __repr__(self) -> str:
        return f"zookeeper.Publisher({self._path!r}, hosts={self._link.hosts!r})"

    # -- on the runtime thread --------------------------------------------------------------

    async def _refresh(self) -> None:
        if not await self._link.until_connected(self._timeout):
            self._publish_error(self._unreachable())
            return
        await self._read()

    def _unreachable(self) -> DiscoveryError:
        return DiscoveryError(f"no connection to ZooKeeper at {self._link.hosts} within {self._timeout:g}s")

    async def _run(self) -> None:
        # A server never reached sends no state change to report: after ``timeout`` say so
        # (stale, ``last_error``, one WARNING) while kazoo goes on trying to connect.
        if not await self._link.until_connected(self._timeout) and not self.closed:
            self._publish_error(self._unreachable())
        if self._link.connected:
            self._wake.set()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._link.connected:  # else the next CONNECTED wakes us
                await self._read()

    def _state_changed(self, state: str) -> None:
        if self.closed:
            return
        if state == KazooState.CONNECTED:
            self._log.info("zookeeper_connected")
            self._reread = True
            self._wake.set()
        elif state == KazooState.SUSPENDED:
            self._log.info("zookeeper_connection_lost")
            self._publish_error(DiscoveryError(f"connection to ZooKeeper at {self._link.hosts} lost"))
        elif state == KazooState.LOST:
            self._log.info("zookeeper_session_lost")
            self._reread = True
            self._publish_error(DiscoveryError(f"ZooKeeper session at {self._link.hosts} expired or closed"))

    def _watched(self, event: WatchedEvent) -> None:
        # On kazoo's callback thread: hand the event over.
        if not self.closed:
            RUNTIME.call_soon(self._on_event, event)

    def _on_event(self, event: WatchedEvent) -> None:
        if self.closed:
            return
        path = event.path
        if event.type == EventType.CHANGED and path and path != self._path:
            self._changed.add(path.rpartition("/")[2])
        self._wake.set()

    async def _read(self) -> None:
        """Read the children and the data of new or changed ones, setting watches; publish."""
        async with self._busy:
            if self.closed:
                return
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
            try:
                instances = await self._fetch()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._failed(error)
                return
            self._backoff.reset()
            if instances is not None:
                self._commit()

    async def _fetch(self) -> bool | None:
        """Read what changed and apply it by node name (``None``: nothing to publish yet)."""
        client, call = self._link.client, self._link.call
        full = self._reread
        if full:
            self._reread = False
            self._nodes.clear()
        changed, self._changed = self._changed, set()
        try:
            children: list[str] = await call(client.get_children_async(self._path, watch=self._watched))
        except NoNodeError:
            # Watch for its creation; exists() sets the watch whether or not the node is there.
            if await call(client.exists_async(self._path, watch=self._watched)) is not None:
                self._wake.set()  # created in between: read it
                return None
            if not self._missing:
                self._log.info("zookeeper_path_missing", path=self._path)
                self._missing = True
            self._nodes.clear()
            with self._lock:
                self._reset(())
            return True
        except BaseException:
            self._changed |= changed
            raise
        self._missing = False
        children.sort()
        wanted = [name for name in children if name not in self._nodes or name in changed]
        try:
            results = await asyncio.gather(
                *(call(client.get_async(child_path(self._path, name), watch=self._watched)) for name in wanted),
                return_exceptions=True,
            )
        except BaseException:
            self._changed |= changed
            raise
        for name, result in zip(wanted, results, strict=True):
            if isinstance(result, NoNodeError):
                self._nodes.pop(name, None)  # deleted since the listing; the children watch fires
                continue
            if isinstance(result, BaseException):
                self._changed |= changed | set(wanted)
                raise result
            data = result[0]
            try:
                self._nodes[name] = parse_node(data)
            except InvalidNodeError as error:
                self._nodes[name] = None
                self._log.error("invalid_node", node=child_path(self._path, name), data=shown(data), error=str(error))
        present = set(children)
        gone = [name for name in self._nodes if name not in present]
        for name in gone:
            del self._nodes[name]
        # Node names are the keys: a change costs what changed, not the size of the set.
        with self._lock:
            if full:
                self._reset((name, instance) for name in children if (instance := self._nodes.get(name)) is not None)
            else:
                for name in gone:
                    self._delete(name)
                for name in wanted:
                    instance = self._nodes.get(name)
                    if instance is None:
                        self._delete(name)  # malformed, or deleted since the listing
                    else:
                        self._put(name, instance)
        return True

    def _failed(self, error: Exception) -> None:
        if isinstance(error, CONNECTION_ERRORS):
            self._reread = True  # a connection that came back has forgotten our watches
        elif not isinstance(error, KazooException | DiscoveryError):
            # a bug here or in kazoo: stale beats empty all the same
            self._log.error("zookeeper_read_crashed", error=describe(error), exc_info=error)
        failure = error if isinstance(error, DiscoveryError) else connection_error(self._link, error)
        delay = self._backoff.next()
        self._log.info("zookeeper_read_failed", error=describe(error), failures=self._backoff.failures, retry_in=delay)
        self._publish_error(failure)
        # Retry on a timer too: a connection that is still up (a timeout, an ACL refusing
        # us) sends no CONNECTED event to wake us.
        self._retry = asyncio.get_running_loop().call_later(delay, self._wake.set)
