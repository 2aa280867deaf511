"""``zookeeper.Backend`` and ``zookeeper.Registry``: ZooKeeper on the backend protocol of ``loadbalancer.backend``.

Service ``name`` lives under ``{root}/{name}``, one child node per instance (the data
``zookeeper.Publisher`` reads). A registration is an ephemeral sequential node: its lease
is the client's session, so a keep-alive checks that the node is still there and still
owned by the current session (after a session expiry ZooKeeper has removed it, and the
registrar creates it again). Following a service is the event-driven
``zookeeper.Publisher`` on the same client.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from .._log import get_logger
from .._typing import E
from .._util import seconds
from ..backend import Backend as _Backend
from ..backend import Health, Lease, LeaseLostError, Listing
from ..backend import Registry as _Registry
from ..errors import DiscoveryError
from ..instance import Instance
from ..publisher import Factory
from ._link import (
    DEFAULT_HOSTS,
    InvalidNodeError,
    Link,
    check_hosts,
    check_path,
    child_path,
    encode_instance,
    parse_node,
    session_of,
    shown,
)
from ._publisher import Publisher

__all__ = ["Backend", "Registry"]

_Names = list[str]  # the method ``list`` shadows the builtin in the class


class Backend(_Backend):
    """ZooKeeper as a registry of services under ``root`` (its own kazoo client, or ``client=``)."""

    name = "zookeeper"

    def __init__(
        self,
        hosts: str = DEFAULT_HOSTS,
        *,
        client: KazooClient | None = None,
        root: str = "/services",
        session_timeout: float | timedelta = 10.0,
        timeout: float | timedelta = 10.0,
        max_backoff: float | timedelta = 5.0,
        logger: Any = None,
    ) -> None:
        if client is None:
            check_hosts(hosts)
        self._root = check_path(root, "root")
        self._timeout = seconds(timeout, "timeout", allow_zero=False)
        self._link = Link(
            hosts,
            client,
            session_timeout=seconds(session_timeout, "session_timeout", allow_zero=False),
            max_backoff=seconds(max_backoff, "max_backoff", allow_zero=False),
            timeout=self._timeout,
            on_state=lambda state: None,
        )
        self._log = get_logger(logger, name=__name__, hosts=self._link.hosts)
        self._link.start()

    @property
    def client(self) -> KazooClient:
        return self._link.client

    def path_of(self, service: str) -> str:
        if not isinstance(service, str) or not service or "/" in service:
            raise ValueError(f"invalid service name {service!r}: it must be a non-empty string without '/'")
        return child_path(self._root, service)

    async def _connected(self, what: str) -> None:
        if not await self._link.until_connected(self._timeout):
            raise DiscoveryError(f"{what}: no connection to ZooKeeper at {self._link.hosts} within {self._timeout:g}s")

    async def list(self, service: str) -> Listing:
        path = self.path_of(service)
        await self._connected(f"cannot list {path}")
        client, call = self._link.client, self._link.call
        try:
            children: list[str] = await call(client.get_children_async(path))
        except NoNodeError:
            return Listing({})
        found: dict[Any, Instance] = {}
        for name in sorted(children):
            try:
                data, _ = await call(client.get_async(child_path(path, name)))
            except NoNodeError:
                continue  # gone since the listing
            try:
                found[name] = parse_node(data)
            except InvalidNodeError as error:
                self._log.error("invalid_node", node=child_path(path, name), data=shown(data), error=str(error))
        return Listing(found)

    async def register(self, service: str, instance: Instance, ttl: float) -> Lease:
        path = self.path_of(service)
        await self._connected(f"cannot register {instance} under {path}")
        client = self._link.client
        node = await self._link.call(
            client.create_async(
                child_path(path, f"instance-{secrets.token_hex(6)}-"),
                encode_instance(instance),
                ephemeral=True,
                sequence=True,
                makepath=True,
            )
        )
        return Lease(service, instance, ttl, (node, session_of(client)), node)

    async def keepalive(self, lease: Lease) -> None:
        node, session = lease.handle
        await self._connected(f"cannot check {node}")
        stat = await self._link.call(self._link.client.exists_async(node))
        if stat is None or stat.ephemeralOwner != session:
            raise LeaseLostError(f"ZooKeeper: {node} went with its session")

    async def deregister(self, lease: Lease) -> None:
        node, _ = lease.handle
        await self._connected(f"cannot delete {node}")
        try:
            await self._link.call(self._link.client.delete_async(node))
        except NoNodeError:
            pass  # gone already (its session ended, or someone deleted it)

    async def services(self) -> _Names:
        await self._connected(f"cannot list {self._root}")
        try:
            names: list[str] = await self._link.call(self._link.client.get_children_async(self._root))
        except NoNodeError:
            return []
        return sorted(names)

    async def health(self) -> Health:
        state = str(self._link.client.state)
        return Health(self._link.connected, {"hosts": self._link.hosts, "state": state})

    async def aclose(self) -> None:
        await asyncio.to_thread(self._link.close)

    def publisher(
        self,
        service: str,
        factory: Factory[E] | None = None,
        *,
        tags: Iterable[str] | str | None = None,
        **options: Any,
    ) -> Publisher[E]:
        """A ``zookeeper.Publisher`` following ``service`` on this backend's client (children and data watches)."""
        return Publisher(self.path_of(service), factory, client=self._link.client, tags=tags, **options)

    def __repr__(self) -> str:
        return f"zookeeper.Backend({self._link.hosts!r}, root={self._root!r})"


class Registry(_Registry):
    """The registry facade (``loadbalancer.backend.Registry``) on ZooKeeper: services under ``root``.

    ``watch(name)`` is a ``zookeeper.Publisher`` (children and data watches) on the
    registry's client; registrations are ephemeral nodes, checked every ``ttl / 2`` and
    created again after a session expiry.
    """

    def __init__(
        self, hosts: str = DEFAULT_HOSTS, *, ttl: float | timedelta = 10.0, logger: Any = None, **options: Any
    ):
        self._zk = Backend(hosts, logger=logger, **options)
        super().__init__(self._zk, ttl=ttl, logger=logger)
