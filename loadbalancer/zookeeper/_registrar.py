"""``zookeeper.Registrar``: go-kit's ``sd/zk`` registrar, the generic registrar over ``zookeeper.Backend``."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState

from .._deprecated import renamed
from .._tls import TLS
from .._util import seconds
from ..backend import Lease
from ..backend import Registrar as _Generic
from ..instance import Instance, parse_instance
from ._backend import Backend
from ._nodes import encode_instance
from ._paths import check_path

__all__ = ["Registrar"]

_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _node_data(data: bytes | str | None, instance: Instance) -> bytes:
    if data is None:
        return encode_instance(instance)
    if isinstance(data, str):
        return data.encode()
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes or str, got {data!r}")
    return data


class Registrar(_Generic):
    """Registers ``instance`` under ``path`` as an ephemeral sequential node while it lives.

    go-kit's ``zk.NewRegistrar``. ``register()`` creates
    ``{path}/{prefix}{token}-{sequence}`` (parents are created as needed) holding ``data``:
    by default ``"host:port"``, or a JSON document when the instance has a weight, priority,
    tags or metadata to tell (the form ``zookeeper.Publisher`` reads). The node is ephemeral:
    ZooKeeper removes it when the session ends, so a process that dies unannounced leaves
    the set one session timeout later. ``deregister()`` deletes it; ``close()`` also stops
    the registrar's own client; interpreter exit deletes the node of a registrar not closed.

    - The session is the lease (``ttl`` reads ``session_timeout``): the node is checked every
      half session timeout, and at once on each reconnection. When the session has expired
      (after a long partition) ZooKeeper has removed the node; the registrar creates it
      again on the new session (a new sequence number: ``node`` changes).
    - The random ``token`` in the name lets the registrar recognise its own node after a
      create whose reply was lost with the connection, instead of creating a second one.
    - ``endpoints``, ``client``, ``tls``, ``session_timeout``, ``max_backoff``: as for
      ``zookeeper.Publisher``. ``timeout``: how long ``register()`` waits for a connection
      and for each reply before raising ``DiscoveryError``; a failed ``register()`` stops
      the registrar's own client (a later one starts it again).
    - ``deregister()`` without a connection waits up to ``timeout`` for one; failing that,
      the node is deleted when the connection is back, or goes by itself when the session
      ends (``deregister_deferred`` is logged, nothing raised).
    - Sync and async twins (``aregister()``, ``aderegister()``, ``aclose()``), ``with`` and
      ``async with``, as every ``loadbalancer.backend.Registrar``.

    >>> from loadbalancer import zookeeper
    >>> registrar = zookeeper.Registrar("/services/api", "10.0.0.5:8080", endpoints="127.0.0.1:2181")
    >>> registrar.register()  # doctest: +SKIP
    >>> registrar.node  # doctest: +SKIP
    '/services/api/instance-5f0c9b2e41aa-0000000003'
    >>> registrar.close()
    """

    @renamed(hosts="endpoints")
    def __init__(
        self,
        path: str,
        instance: Instance | str,
        *,
        endpoints: str | Sequence[str] | None = None,
        client: KazooClient | None = None,
        tls: TLS = None,
        data: bytes | str | None = None,
        prefix: str = "instance-",
        session_timeout: float | timedelta = 10.0,
        timeout: float | timedelta = 10.0,
        max_backoff: float | timedelta = 5.0,
        logger: Any = None,
    ) -> None:
        path = check_path(path)
        parsed = instance if isinstance(instance, Instance) else parse_instance(instance)
        node_data = _node_data(data, parsed)
        if not isinstance(prefix, str) or not prefix or not set(prefix) <= _PREFIX_CHARS:
            raise ValueError(f"invalid node name prefix {prefix!r}: use letters, digits, '-', '_' and '.'")
        session = seconds(session_timeout, "session_timeout", allow_zero=False)
        backend = Backend(
            endpoints,
            client=client,
            root=None,
            tls=tls,
            session_timeout=session,
            timeout=timeout,
            max_backoff=max_backoff,
            logger=logger,
        )
        self._setup(backend, path, parsed, session, node_data, prefix, logger, own=True)

    @classmethod
    def _on(
        cls, backend: Backend, service: str, instance: Instance | str, ttl: float | timedelta, logger: Any
    ) -> Registrar:
        """A registrar on a backend shared with others (a ``Registry``'s), which it leaves open."""
        self = cls.__new__(cls)
        parsed = instance if isinstance(instance, Instance) else parse_instance(instance)
        self._setup(backend, service, parsed, ttl, encode_instance(parsed), "instance-", logger, own=False)
        return self

    def _setup(
        self,
        backend: Backend,
        service: str,
        instance: Instance,
        ttl: float | timedelta,
        data: bytes,
        prefix: str,
        logger: Any,
        *,
        own: bool,
    ) -> None:
        super().__init__(backend, service, instance, ttl=ttl, logger=logger, own=own)
        self._zk = backend
        self._data = data
        self._prefix = f"{prefix}{secrets.token_hex(6)}-"
        self._unsure = False  # a create failed: its node may exist all the same
        self._log = self._log.bind(endpoints=backend.endpoints)
        backend.listen(self._state_changed)

    @property
    def path(self) -> str:
        """The path the node is created under."""
        return self._zk.path_of(self._service)

    @property
    def data(self) -> bytes:
        """What the node holds."""
        return self._data

    @property
    def node(self) -> str | None:
        """The node's full path while registered (it changes after a session expiry), else ``None``."""
        lease = self._lease
        return None if lease is None else str(lease.id)

    @property
    def client(self) -> KazooClient:
        return self._zk.client

    async def _grant(self) -> Lease:
        try:
            lease = await self._zk.register_node(
                self._service, self._instance, self._ttl, data=self._data, prefix=self._prefix, adopt=self._unsure
            )
        except BaseException:
            self._unsure = True
            if not self._registered and self._own:
                # nothing registered: do not leave kazoo's threads reconnecting (a failed
                # ``with`` has no ``__exit__`` to stop them); the next register() starts them
                await asyncio.shield(self._zk.stop())
            raise
        self._unsure = False
        return lease

    def _state_changed(self, state: str) -> None:
        if state == KazooState.CONNECTED and self._registered:
            self._check_soon()  # a new session has lost the node: create it again now

    async def _close(self) -> None:
        try:
            await super()._close()
        finally:
            self._zk.unlisten(self._state_changed)

    def __repr__(self) -> str:
        state = f"node={self.node!r}" if self._registered and self.node else "not registered"
        return f"zookeeper.Registrar({self.path!r}, {self._instance.address!r}, {state})"
