"""``zookeeper.Backend``: ZooKeeper on the backend protocol of ``loadbalancer.backend``, on kazoo.

A service is a path (``root=None``) or, with ``root``, a name under it; each child node is
one instance (its data: ``host:port`` or the project's JSON record). Listing reads the
children and their data; the cursor is each child's data version (mzxid), so that the watch
that follows reads again only what changed since. Watching is event driven (``_watch``).
A registration is an ephemeral sequential node: its lease is the client's session, so a
keep-alive checks that the node is still there and owned by the current session (after a
session expiry ZooKeeper has removed it, and the registrar creates it again).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import KazooState

from .._deprecated import renamed
from .._log import get_logger
from .._tls import TLS
from .._util import describe, seconds
from ..backend import Backend as _Backend
from ..backend import Batch, Health, Lease, LeaseLostError, Listing
from ..errors import DiscoveryError
from ..instance import Instance
from ._link import CONNECTION_ERRORS, Link, gather_all, kazoo_tls, new_client, session_of
from ._nodes import InvalidNodeError, encode_instance, parse_node, shown
from ._paths import DEFAULT_ENDPOINTS, check_endpoints, check_path, child_path
from ._watch import Follower, Read, Watcher

__all__ = ["Backend"]

_Names = list[str]  # the method ``list`` shadows the builtin in the class


class Backend(_Backend):
    """ZooKeeper as a registry: services under ``root`` (or, with ``root=None``, services are paths).

    ``endpoints``: kazoo's connection string ``"zk1:2181,zk2:2181/chroot"`` (or a sequence of
    servers; default ``127.0.0.1:2181``), for a ``KazooClient`` of the backend's own that
    connects on first use; or ``client=``, the application's (then left running on close).
    ``tls``: a ``loadbalancer.TLSConfig`` or ``True``, for the backend's own client.
    ``session_timeout`` is asked of the server for that client; ``timeout`` bounds the wait
    for a connection and for each reply; ``max_backoff`` caps kazoo's reconnection waits.

    >>> backend = Backend("127.0.0.1:2181", root="/services")
    >>> backend.path_of("api")
    '/services/api'
    """

    name = "zookeeper"

    @renamed(hosts="endpoints")
    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        client: KazooClient | None = None,
        root: str | None = "/services",
        tls: TLS = None,
        session_timeout: float | timedelta = 10.0,
        timeout: float | timedelta = 10.0,
        max_backoff: float | timedelta = 5.0,
        logger: Any = None,
    ) -> None:
        self._root = None if root is None else check_path(root, "root")
        self._timeout = seconds(timeout, "timeout", allow_zero=False)
        session = seconds(session_timeout, "session_timeout", allow_zero=False)
        backoff = seconds(max_backoff, "max_backoff", allow_zero=False)
        if client is None:
            connection = check_endpoints(DEFAULT_ENDPOINTS if endpoints is None else endpoints)
            client = new_client(connection, session, backoff, kazoo_tls(tls))
            self._link = Link(
                client, owned=True, timeout=self._timeout, on_state=self._state_changed, endpoints=connection
            )
        else:
            if endpoints is not None:
                raise TypeError("give endpoints= or client=, not both (a client has its own servers)")
            if tls is not None and tls is not False:
                raise TypeError("give tls= or client=, not both (configure TLS on the KazooClient you pass)")
            if not isinstance(client, KazooClient):
                raise TypeError(f"client must be a kazoo.client.KazooClient, got {client!r}")
            self._link = Link(client, owned=False, timeout=self._timeout, on_state=self._state_changed)
        self.log = get_logger(logger, name=__name__, endpoints=self._link.endpoints)
        self._followers: set[Follower] = set()
        self._listeners: set[Callable[[str], None]] = set()
        self._deferred: dict[str, int] = {}  # node -> its session: deletions waiting for the connection
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def client(self) -> KazooClient:
        """The kazoo client in use (the one given, or the backend's own)."""
        return self._link.client

    @property
    def endpoints(self) -> str:
        """The servers, as a connection string (chroot included)."""
        return self._link.endpoints

    def path_of(self, service: str) -> str:
        """The path holding ``service``'s instances."""
        if self._root is None:
            return check_path(service)
        if not isinstance(service, str) or not service or "/" in service:
            raise ValueError(f"invalid service name {service!r}: it must be a non-empty string without '/'")
        return child_path(self._root, service)

    def listen(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(state)`` on the runtime loop after each kazoo state change, until ``unlisten``."""
        self._listeners.add(callback)

    def unlisten(self, callback: Callable[[str], None]) -> None:
        self._listeners.discard(callback)

    # -- reading -------------------------------------------------------------------------

    async def list(self, service: str) -> Listing:
        path = self.path_of(service)
        await self._connected(f"cannot list {path}")
        names = await self.children(path)
        if names is None:
            return Listing({}, {})
        reads = await gather_all(self.node(child_path(path, name)) for name in names)
        instances: dict[Any, Instance] = {}
        versions: dict[str, int] = {}
        for name, read in zip(names, reads, strict=True):
            if read is not None:
                instance, versions[name] = read
                if instance is not None:
                    instances[name] = instance
        return Listing(instances, versions)

    def watch(self, service: str, cursor: Any) -> AsyncIterator[Batch]:
        """Children and data watches on ``service``'s path, from the versions ``cursor`` holds."""
        follower = Follower(self, self.path_of(service), cursor or {}, self._followers, self.log)
        return follower.batches()

    async def children(self, path: str, watch: Watcher | None = None) -> _Names | None:
        """The children of ``path`` in name order (``None``: no such path; with ``watch``, its creation is watched)."""
        client = self._link.client
        while True:
            try:
                return sorted(await self._read(path, client.get_children_async(path, watch=watch)))
            except NoNodeError:
                if watch is None or await self.version(path, watch) is None:
                    return None
                # created since: read its children

    async def node(self, path: str, watch: Watcher | None = None) -> Read | None:
        """The instance ``path`` holds (``None`` if malformed, logged) and its version; ``None``: no such node."""
        try:
            data, stat = await self._read(path, self._link.client.get_async(path, watch=watch))
        except NoNodeError:
            return None
        try:
            return parse_node(data), stat.mzxid
        except InvalidNodeError as error:
            self.log.error("zookeeper_node_invalid", node=path, data=shown(data), error=str(error))
            return None, stat.mzxid

    async def version(self, path: str, watch: Watcher | None = None) -> int | None:
        """The version (mzxid) of ``path``'s data; ``None``: no such node."""
        stat = await self._read(path, self._link.client.exists_async(path, watch=watch))
        return None if stat is None else int(stat.mzxid)

    async def _read(self, path: str, request: Any) -> Any:
        try:
            return await self._link.call(request)
        except NoNodeError:
            raise
        except (KazooException, TimeoutError) as error:
            self.log.info("zookeeper_read_failed", path=path, error=describe(error))
            raise self._link.failure(f"cannot read {path}", error) from error

    async def _connected(self, what: str) -> None:
        if not await self._link.until_connected(self._timeout):
            raise DiscoveryError(
                f"{what}: no connection to ZooKeeper at {self._link.endpoints} within {self._timeout:g}s"
            )

    # -- registering -----------------------------------------------------------------------

    async def register(self, service: str, instance: Instance, ttl: float) -> Lease:
        prefix = f"instance-{secrets.token_hex(6)}-"
        return await self.register_node(service, instance, ttl, data=encode_instance(instance), prefix=prefix)

    async def register_node(
        self, service: str, instance: Instance, ttl: float, *, data: bytes, prefix: str, adopt: bool = False
    ) -> Lease:
        """Create ``{path}/{prefix}{sequence}`` holding ``data``, ephemeral; its lease is the session.

        ``adopt``: first look for a node of this prefix that the session already owns (a
        create whose reply was lost with the connection), rather than register twice.
        """
        path = self.path_of(service)
        what = f"cannot register {instance} under {path}"
        await self._connected(what)
        client, call = self._link.client, self._link.call
        try:
            found = await self._owned(path, prefix) if adopt else None
            if found is None:
                request = client.create_async(
                    child_path(path, prefix), data, ephemeral=True, sequence=True, makepath=True, include_data=True
                )
                node, stat = await call(request)
                found = node, int(stat.ephemeralOwner)
        except (KazooException, TimeoutError) as error:
            raise self._link.failure(what, error) from error
        return Lease(service, instance, ttl, found, found[0])

    async def _owned(self, path: str, prefix: str) -> tuple[str, int] | None:
        session, call, client = session_of(self._link.client), self._link.call, self._link.client
        try:
            names = await call(client.get_children_async(path))
        except NoNodeError:
            return None
        for name in sorted(n for n in names if n.startswith(prefix)):
            stat = await call(client.exists_async(child_path(path, name)))
            if stat is not None and session is not None and stat.ephemeralOwner == session:
                return child_path(path, name), session
        return None

    async def keepalive(self, lease: Lease) -> None:
        node, session = lease.handle
        await self._connected(f"cannot check {node}")
        if session_of(self._link.client) == session:
            try:
                stat = await self._link.call(self._link.client.exists_async(node))
            except (KazooException, TimeoutError) as error:
                raise self._link.failure(f"cannot check {node}", error) from error
            if stat is not None and stat.ephemeralOwner == session:
                return
        raise LeaseLostError(f"ZooKeeper: {node} went with its session, or was deleted")

    async def deregister(self, lease: Lease) -> None:
        """Delete the node; without a connection within ``timeout``, once the connection is back.

        (Or it goes by itself when its session ends: either way, that is logged, not raised.)
        """
        node, session = lease.handle
        if not await self._link.until_connected(self._timeout):
            self._defer(node, session)
            return
        if session_of(self._link.client) != session:
            return  # gone with its session
        try:
            await self._link.call(self._link.client.delete_async(node))
        except NoNodeError:
            pass  # gone already (someone deleted it)
        except CONNECTION_ERRORS:
            self._defer(node, session)
        except KazooException as error:
            raise self._link.failure(f"cannot delete {node}", error) from error

    def _defer(self, node: str, session: int) -> None:
        self._deferred[node] = session
        note = "the node is deleted when the connection is back, or goes when the session ends"
        self.log.warning("deregister_deferred", node=node, note=note)

    async def _delete_deferred(self) -> None:
        session = session_of(self._link.client)
        for node, owner in list(self._deferred.items()):
            try:
                if owner == session:
                    await self._link.call(self._link.client.delete_async(node))
            except NoNodeError:
                pass
            except (KazooException, TimeoutError):
                continue  # the next connection tries again, unless the session ends first
            self._deferred.pop(node, None)

    # -- the connection ----------------------------------------------------------------------

    def _state_changed(self, state: str) -> None:
        if state == KazooState.CONNECTED:
            self.log.info("zookeeper_connected")
            if self._deferred:
                task = asyncio.get_running_loop().create_task(self._delete_deferred())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        else:
            lost = state == KazooState.LOST
            self.log.info("zookeeper_session_lost" if lost else "zookeeper_connection_lost")
            where = self._link.endpoints
            reason = (
                f"ZooKeeper session at {where} expired or closed"
                if lost
                else f"connection to ZooKeeper at {where} lost"
            )
            for follower in list(self._followers):
                follower.lost(DiscoveryError(reason))
        for listener in list(self._listeners):
            listener(state)

    async def services(self) -> _Names:
        root = self._root or "/"
        await self._connected(f"cannot list {root}")
        return await self.children(root) or []

    async def health(self) -> Health:
        connected = await self._link.until_connected(self._timeout)
        return Health(connected, {"endpoints": self._link.endpoints, "state": str(self._link.client.state)})

    async def stop(self) -> None:
        """Stop the backend's own client while it has nothing to keep (its threads end); first use starts it again."""
        await asyncio.to_thread(self._link.stop)

    def close(self) -> None:
        """Release the client: stop it if it is the backend's own (blocks while kazoo's threads end)."""
        self._link.close()

    async def aclose(self) -> None:
        if not self._link.closed:
            await asyncio.to_thread(self._link.close)

    def __repr__(self) -> str:
        return f"zookeeper.Backend({self._link.endpoints!r}, root={self._root!r})"
