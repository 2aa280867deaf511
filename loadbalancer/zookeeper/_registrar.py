"""``zookeeper.Registrar``: go-kit's ``sd/zk`` registrar, an ephemeral sequential node per instance."""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import threading
from collections.abc import Coroutine
from datetime import timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import KazooState

from .. import _exit
from .._log import get_logger
from .._runtime import RUNTIME
from .._util import describe, seconds
from ..errors import DiscoveryError
from ..instance import Instance, parse_instance
from ._link import (
    DEFAULT_HOSTS,
    Link,
    backoff,
    check_hosts,
    check_path,
    child_path,
    connection_error,
    encode_instance,
    session_of,
)

__all__ = ["Registrar"]

_EXIT_CONNECT_WAIT = 2.0  # at exit, how long a registrar waits for a lost connection to come back

T = TypeVar("T")

_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class Registrar:
    """Registers ``instance`` under ``path`` as an ephemeral sequential node while it lives.

    go-kit's ``zk.NewRegistrar``. ``register()`` creates
    ``{path}/{prefix}{token}-{sequence}`` (parents are created as needed) holding ``data``:
    by default ``"host:port"``, or a JSON document when the instance has a weight, priority,
    tags or metadata to tell (the form ``zookeeper.Publisher`` reads). The node is ephemeral:
    ZooKeeper removes it when the session ends, so a process that dies unannounced leaves
    the set one session timeout later. ``deregister()`` deletes it; ``close()`` also stops
    the registrar's own client; both happen at interpreter exit for registrars not closed.

    - When the session expires (after a long partition) ZooKeeper has removed the node; once
      kazoo has a new session the registrar creates it again (a new sequence number).
    - The random ``token`` in the name lets the registrar recognise its own node after a
      create whose reply was lost with the connection, instead of creating a second one.
    - ``hosts``, ``client``, ``session_timeout``, ``max_backoff``: as for
      ``zookeeper.Publisher``. ``timeout``: how long ``register()`` waits for a connection
      and for each reply before raising ``DiscoveryError``.
    - Use it as a context manager (``with`` registers and closes; ``async with`` too), or
      call ``register()`` / ``deregister()`` / ``close()`` and their async twins
      ``aregister()`` / ``aderegister()`` / ``aclose()``.

    >>> from loadbalancer import zookeeper
    >>> registrar = zookeeper.Registrar("/services/api", "10.0.0.5:8080", hosts="127.0.0.1:2181")
    >>> registrar.register()  # doctest: +SKIP
    >>> registrar.node  # doctest: +SKIP
    '/services/api/instance-5f0c9b2e41aa-0000000003'
    >>> registrar.close()
    """

    def __init__(
        self,
        path: str,
        instance: Instance | str,
        *,
        hosts: str = DEFAULT_HOSTS,
        client: KazooClient | None = None,
        data: bytes | str | None = None,
        prefix: str = "instance-",
        session_timeout: float | timedelta = 10.0,
        timeout: float | timedelta = 10.0,
        max_backoff: float | timedelta = 5.0,
        logger: Any = None,
    ) -> None:
        self._path = check_path(path)
        self._instance = instance if isinstance(instance, Instance) else parse_instance(instance)
        if client is not None and hosts != DEFAULT_HOSTS:
            raise TypeError("give hosts= or client=, not both (a client has its own hosts)")
        if client is None:
            check_hosts(hosts)
        elif not isinstance(client, KazooClient):
            raise TypeError(f"client must be a kazoo.client.KazooClient, got {client!r}")
        if data is None:
            self._data = encode_instance(self._instance)
        elif isinstance(data, str):
            self._data = data.encode()
        elif isinstance(data, bytes):
            self._data = data
        else:
            raise TypeError(f"data must be bytes or str, got {data!r}")
        if not isinstance(prefix, str) or not prefix or not set(prefix) <= _PREFIX_CHARS:
            raise ValueError(f"invalid node name prefix {prefix!r}: use letters, digits, '-', '_' and '.'")
        self._prefix = f"{prefix}{secrets.token_hex(6)}-"
        self._timeout = seconds(timeout, "timeout", allow_zero=False)
        self._max_backoff = seconds(max_backoff, "max_backoff", allow_zero=False)
        self._log = get_logger(logger, service=self._path, instance=self._instance.address)
        self._link = Link(
            hosts,
            client,
            session_timeout=seconds(session_timeout, "session_timeout", allow_zero=False),
            max_backoff=self._max_backoff,
            timeout=self._timeout,
            on_state=self._state_changed,
        )
        self._log = self._log.bind(hosts=self._link.hosts)
        # Touched on the runtime thread only (``_busy`` orders the operations):
        self._wanted = False  # whether the node should exist
        self._node: str | None = None  # the node created, while it may exist
        self._session: int | None = None  # the session that owns it
        self._backoff = backoff(self._max_backoff)
        self._retry: asyncio.TimerHandle | None = None
        self._busy = asyncio.Lock()
        self._closed = False
        self._close_lock = threading.Lock()

    # -- public ----------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The service path the node is created under."""
        return self._path

    @property
    def instance(self) -> Instance:
        return self._instance

    @property
    def data(self) -> bytes:
        """What the node holds."""
        return self._data

    @property
    def node(self) -> str | None:
        """The node's full path while registered (it changes after a session expiry), else ``None``."""
        return self._node if self._wanted else None

    @property
    def registered(self) -> bool:
        """Whether the registrar wants its node to exist (between ``register()`` and ``deregister()``)."""
        return self._wanted

    @property
    def client(self) -> KazooClient:
        return self._link.client

    def register(self) -> None:
        """Create the node (waiting up to ``timeout`` for ZooKeeper); idempotent.

        Raises ``DiscoveryError`` when ZooKeeper cannot be reached or refuses (nothing stays
        pending then).
        """
        self._wait(self._register(), "register")

    async def aregister(self) -> None:
        """Async form of ``register()``."""
        await asyncio.wrap_future(self._submit(self._register()))

    def deregister(self) -> None:
        """Delete the node; idempotent.

        Without a connection it waits up to ``timeout`` for one; failing that, the node is
        deleted when the connection is back, or goes by itself when the session ends (that
        is logged, not raised).
        """
        self._wait(self._deregister(), "deregister")

    async def aderegister(self) -> None:
        """Async form of ``deregister()``."""
        await asyncio.wrap_future(self._submit(self._deregister()))

    def close(self) -> None:
        """Deregister, then stop the registrar's own client (ending its session); idempotent."""
        self._close()

    def _close(self, within: float | None = None) -> None:
        if not self._begin_close():
            return
        try:
            self._wait(self._deregister(within), "close")
        finally:
            self._link.close()
            _exit.untrack(self)

    async def _at_exit(self) -> None:
        """At interpreter exit (on the runtime): delete the node and end the session, so that others
        see this process go at once rather than a session timeout later."""
        if not self._begin_close():
            return
        try:
            await self._deregister(_EXIT_CONNECT_WAIT)
        finally:
            await asyncio.to_thread(self._link.close)
            _exit.untrack(self)

    async def aclose(self) -> None:
        """Async form of ``close()``."""
        if not self._begin_close():
            return
        try:
            await asyncio.wrap_future(self._submit(self._deregister()))
        finally:
            await asyncio.to_thread(self._link.close)
            _exit.untrack(self)

    def __enter__(self) -> Self:
        self.register()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        await self.aregister()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = f"node={self._node!r}" if self._wanted and self._node else "not registered"
        return f"zookeeper.Registrar({self._path!r}, {self._instance.address!r}, {state})"

    # -- plumbing ---------------------------------------------------------------------------

    def _begin_close(self) -> bool:
        with self._close_lock:
            if self._closed:
                return False
            self._closed = True
            return True

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return RUNTIME.submit(coro)

    def _wait(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        if RUNTIME.in_loop_thread():
            coro.close()
            raise RuntimeError(
                f"zookeeper.Registrar.{what}() would block the library's runtime thread, which talks to ZooKeeper;"
                f" use `await registrar.a{what}()` in a coroutine there"
            )
        self._submit(coro).result()

    # -- on the runtime thread --------------------------------------------------------------

    async def _register(self) -> None:
        if self._closed:
            raise DiscoveryError(f"cannot register {self._instance} under {self._path}: the registrar is closed")
        self._wanted = True
        self._track()
        self._link.start()
        try:
            if not await self._link.until_connected(self._timeout):
                raise DiscoveryError(
                    f"cannot register {self._instance} under {self._path}:"
                    f" no connection to ZooKeeper at {self._link.hosts} within {self._timeout:g}s"
                )
            try:
                await self._reconcile()
            except (asyncio.CancelledError, DiscoveryError):
                raise
            except Exception as error:
                known = isinstance(error, KazooException | TimeoutError)
                failure = connection_error(self._link, error) if known else error
                raise DiscoveryError(f"cannot register {self._instance} under {self._path}: {failure}") from error
        except BaseException:
            self._wanted = False
            await self._give_up()
            raise

    async def _give_up(self) -> None:
        """After a failed register: with nothing registered, stop the registrar's own client.

        Else its threads would go on reconnecting (and the ``with`` that failed has no
        ``__exit__`` to stop them); a later ``register()`` starts it again.
        """
        if self._node is not None or self._wanted:
            return  # a node of ours may still exist: keep the session that owns it
        _exit.untrack(self)
        if self._link.owned:
            await asyncio.shield(asyncio.to_thread(self._link.stop))

    def _track(self) -> None:
        if not self._closed:
            _exit.track(self)

    async def _deregister(self, within: float | None = None) -> None:
        self._wanted = False
        if self._node is not None:
            # the connection may be on its way back (kazoo reconnects): give it a chance
            await self._link.until_connected(self._timeout if within is None else within)
        try:
            await self._reconcile()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._log.warning(
                "deregister_deferred",
                node=self._node,
                error=describe(error),
                note="the node is deleted when the connection is back, or goes when the session ends",
            )
            self._schedule_retry()

    async def _reconcile(self) -> None:
        """Make ZooKeeper match ``_wanted``: create the node or delete it."""
        async with self._busy:
            if self._retry is not None:
                self._retry.cancel()
                self._retry = None
            if self._wanted:
                await self._ensure()
            else:
                await self._remove()
            self._backoff.reset()

    async def _ensure(self) -> None:
        client, call = self._link.client, self._link.call
        session = session_of(client)
        if session is None:
            raise DiscoveryError(f"ZooKeeper at {self._link.hosts}: not connected")
        if self._node is not None and self._session == session:
            stat = await call(client.exists_async(self._node))
            if stat is not None and stat.ephemeralOwner == session:
                return  # still there
        # A node of ours may exist although we never heard of it: its create's reply was
        # lost with the connection. Adopt it rather than register twice.
        try:
            children: list[str] = await call(client.get_children_async(self._path))
        except NoNodeError:
            children = []
        for name in sorted(children):
            if name.startswith(self._prefix):
                node = child_path(self._path, name)
                stat = await call(client.exists_async(node))
                if stat is not None and stat.ephemeralOwner == session:
                    self._adopt(node, session)
                    return
        created, stat = await call(
            client.create_async(
                child_path(self._path, self._prefix),
                self._data,
                ephemeral=True,
                sequence=True,
                makepath=True,
                include_data=True,
            )
        )
        self._adopt(created, int(stat.ephemeralOwner))

    def _adopt(self, node: str, session: int) -> None:
        again = self._node is not None
        self._node, self._session = node, session
        self._log.info("reregistered" if again else "registered", node=node)

    async def _remove(self) -> None:
        node = self._node
        if node is None:
            return
        client = self._link.client
        if session_of(client) is None:
            raise DiscoveryError(f"ZooKeeper at {self._link.hosts}: not connected")
        try:
            await self._link.call(client.delete_async(node))
        except NoNodeError:
            pass  # gone already (its session ended, or someone deleted it)
        self._node = self._session = None
        self._log.info("deregistered", node=node)

    def _state_changed(self, state: str) -> None:
        if state == KazooState.CONNECTED:
            if self._wanted or self._node is not None:
                RUNTIME.submit(self._background())
        elif state == KazooState.LOST and self._wanted:
            self._log.warning(
                "zookeeper_session_lost", node=self._node, note="the node is created again on reconnection"
            )
        elif state == KazooState.SUSPENDED and self._wanted:
            self._log.info("zookeeper_connection_lost", node=self._node)

    async def _background(self) -> None:
        """Reconcile after a reconnection or a failure; on failure try again later."""
        if self._link.closed or not self._link.connected:
            return  # the next CONNECTED brings us back
        try:
            await self._reconcile()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._log.warning(
                "register_failed" if self._wanted else "deregister_failed", node=self._node, error=describe(error)
            )
            self._schedule_retry()

    def _schedule_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        delay = self._backoff.next()
        self._retry = asyncio.get_running_loop().call_later(delay, lambda: RUNTIME.submit(self._background()))
