"""What the ZooKeeper publisher and registrar share: paths, node data, and a kazoo client seen from asyncio.

kazoo has no asyncio support: it runs its own threads (per client: one for the connection,
two that run completion and watch callbacks). ``Link`` bridges them to the library's shared
runtime loop: kazoo's callbacks only hand work over with ``call_soon_threadsafe``, and every
decision (what to read, what to publish, what to re-create) is taken on the runtime thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

import tenacity
from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, OperationTimeoutError, SessionExpiredError

from .._backoff import Backoff
from .._runtime import RUNTIME
from .._util import describe
from ..errors import DiscoveryError, InvalidInstanceError
from ..instance import Instance, format_record, parse_record

DEFAULT_HOSTS = "127.0.0.1:2181"

# Errors that mean "the connection or session is gone, not the request": wait for kazoo to
# reconnect rather than retry on a timer.
CONNECTION_ERRORS = (ConnectionLoss, SessionExpiredError, OperationTimeoutError, TimeoutError)

_MAX_DATA_SHOWN = 200  # characters of a malformed node's data quoted in the log

# kazoo logs through the stdlib (``kazoo.client``, ``kazoo.protocol.connection``): a
# connection retried for ever warns on every attempt. The clients this library creates log
# to a child of the library's own logger instead, so that they follow the application's
# logging setup (records propagate to ``loadbalancer`` and the root logger as usual). Its
# NullHandler only stops the stdlib's last-resort handler from printing that chatter to
# stderr when the application configured no logging at all: the library's own events
# (``refresh_failed`` and the like) report the failure once.
KAZOO_LOGGER = logging.getLogger("loadbalancer.zookeeper.kazoo")
KAZOO_LOGGER.addHandler(logging.NullHandler())


# -- paths and connection strings ----------------------------------------------------------


def check_path(path: object, what: str = "path") -> str:
    """Return ``path`` if it is a valid absolute ZooKeeper path, else raise ``ValueError`` quoting it."""
    if not isinstance(path, str):
        raise TypeError(f"{what} must be a string like '/services/api', got {path!r}")

    def bad(reason: str) -> ValueError:
        return ValueError(f"invalid ZooKeeper {what} {path!r}: {reason}")

    if not path.startswith("/"):
        raise bad("it must start with '/'")
    if path == "/":
        return path
    if path.endswith("/"):
        raise bad("it must not end with '/'")
    for part in path[1:].split("/"):
        if not part:
            raise bad("it has an empty component ('//')")
        if part in (".", ".."):
            raise bad(f"{part!r} is not allowed as a component")
    for char in path:
        code = ord(char)
        if code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xF8FF or code >= 0xFFF0:
            raise bad(f"character {char!r} is not allowed")
    return path


def check_hosts(hosts: object) -> str:
    """Validate a kazoo connection string (``"h1:2181,h2:2181/chroot"``); raise ``ValueError`` quoting it."""
    if not isinstance(hosts, str):
        raise TypeError(f"hosts must be a connection string like '127.0.0.1:2181', got {hosts!r}")
    servers, slash, chroot = hosts.partition("/")
    if slash and chroot:
        try:
            check_path("/" + chroot, "chroot")
        except ValueError as error:
            raise ValueError(f"invalid ZooKeeper hosts {hosts!r}: {error}") from None
    for server in servers.split(","):
        server = server.strip()
        if not server:
            raise ValueError(f"invalid ZooKeeper hosts {hosts!r}: a server is missing (empty entry)")
        try:
            parts = urllib.parse.urlsplit("//" + server)
            port, host = parts.port, parts.hostname
        except ValueError as error:
            raise ValueError(f"invalid ZooKeeper hosts {hosts!r}: {server!r}: {error}") from None
        if not host or parts.path or parts.query or parts.fragment or parts.username is not None:
            raise ValueError(f"invalid ZooKeeper hosts {hosts!r}: {server!r} is not host[:port]")
        if port == 0:
            raise ValueError(f"invalid ZooKeeper hosts {hosts!r}: {server!r}: port 0")
    return hosts


def child_path(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


# -- node data ---------------------------------------------------------------------------


class InvalidNodeError(ValueError):
    """A node's data is neither ``host:port`` nor an instance document."""


def parse_node(data: bytes | None) -> Instance:
    """An instance from a node's data: ``host:port`` or a JSON document.

    The document: ``{"host": ..., "port": ..., "weight": 1, "priority": 0, "tags": [...],
    "metadata": {...}}``; only ``host`` (or Curator's ``address``) and ``port`` are required,
    other keys are ignored (the format every registry backend shares: ``parse_record``).
    """
    if not data:
        raise InvalidNodeError("the node has no data")
    try:
        return parse_record(data)
    except InvalidInstanceError as error:
        raise InvalidNodeError(error.reason) from None


def encode_instance(instance: Instance) -> bytes:
    """A node's data for ``instance``: plain ``host:port`` when that says it all, else a JSON document."""
    return format_record(instance, plain=True).encode()


def shown(data: bytes | None) -> str:
    """A node's data for a log line: text as is (cut short), other bytes escaped."""
    if data is None:
        return ""
    text = data.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= _MAX_DATA_SHOWN else text[:_MAX_DATA_SHOWN] + "..."


# -- the client ---------------------------------------------------------------------------


class _AsyncResult(Protocol):
    def rawlink(self, callback: Callable[[Any], object]) -> None: ...


def new_client(hosts: str, session_timeout: float, max_backoff: float) -> KazooClient:
    # kazoo's default reconnection backoff grows to an hour; a discovery client must come
    # back soon after the servers do.
    retry = {"max_tries": -1, "delay": min(0.1, max_backoff), "backoff": 2, "max_delay": max_backoff}
    return KazooClient(hosts=hosts, timeout=session_timeout, connection_retry=retry, logger=KAZOO_LOGGER)


def session_of(client: KazooClient) -> int | None:
    """The current session id, or ``None`` while not connected."""
    client_id = client.client_id
    return None if client_id is None else int(client_id[0])


class Link:
    """A kazoo client (owned or the application's) whose state changes reach the runtime loop.

    ``on_state(state)`` runs on the runtime thread after each change kazoo reports
    (``KazooState.CONNECTED``, ``SUSPENDED``, ``LOST``). An owned client is started by
    ``start()`` and stopped by ``close()``; an application's client is left as it is.
    """

    def __init__(
        self,
        hosts: str,
        client: KazooClient | None,
        *,
        session_timeout: float,
        max_backoff: float,
        timeout: float,
        on_state: Callable[[str], None],
    ) -> None:
        if client is None:
            self.client = new_client(hosts, session_timeout, max_backoff)
            self.owned = True
            self.hosts = hosts
        else:
            self.client = client
            self.owned = False
            servers = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in client.hosts)
            self.hosts = ",".join(servers) + (client.chroot or "")
        self.timeout = timeout
        self._on_state = on_state
        self._online = asyncio.Event()  # set while connected; used on the runtime loop only
        self._closed = False
        self._started = False
        self._lock = threading.Lock()
        self.client.add_listener(self._listener)

    def start(self) -> None:
        """Start connecting an owned client (in the background; idempotent)."""
        with self._lock:
            if self.owned and not self._started and not self._closed:
                self._started = True
                self.client.start_async()

    def stop(self) -> None:
        """Stop an owned client that has nothing to keep alive (its threads end); ``start()`` starts it again.

        Blocks while kazoo's threads wind down: call it off the runtime thread.
        """
        with self._lock:
            if not self.owned or not self._started or self._closed:
                return
            self._started = False
        try:
            self.client.stop()
            self.client.close()
        except Exception:  # a client that cannot stop cleanly must not hide the caller's error
            pass

    def _listener(self, state: str) -> bool:
        # On kazoo's connection thread, which must not block: hand over and return.
        if self._closed:
            return True  # kazoo removes a listener that returns True
        RUNTIME.call_soon(self._changed, state)
        return False

    def _changed(self, state: str) -> None:
        if self._closed:
            return
        # kazoo may have moved on since: trust its flag over the (possibly old) event
        if self.client.connected:
            self._online.set()
        else:
            self._online.clear()
        self._on_state(state)

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    @property
    def closed(self) -> bool:
        return self._closed

    async def until_connected(self, within: float) -> bool:
        """Wait (on the runtime loop) until the client is connected; ``False`` after ``within`` seconds."""
        deadline = asyncio.get_running_loop().time() + within
        while not self.client.connected:
            self._online.clear()  # only a later CONNECTED may wake us
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            try:
                # re-check now and then: a state change may have been handled before we waited
                await asyncio.wait_for(self._online.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass
        return True

    async def call(self, result: _AsyncResult) -> Any:
        """Await a kazoo ``IAsyncResult`` on the running loop, for at most ``timeout`` seconds.

        A request made while kazoo reconnects waits in its queue until the connection is back:
        the timeout bounds that (as ``TimeoutError``).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any) -> None:
            if future.done():
                return
            if result.successful():
                future.set_result(result.value)
            else:
                future.set_exception(result.exception)

        def done(result: Any) -> None:  # on a kazoo thread
            try:
                loop.call_soon_threadsafe(settle, result)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        result.rawlink(done)
        async with asyncio.timeout(self.timeout):
            return await future

    def close(self) -> None:
        """Stop listening; stop and close an owned client (its session ends, its ephemeral nodes go)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        self.client.remove_listener(self._listener)
        if self.owned and started:
            try:
                self.client.stop()
                self.client.close()
            except Exception:  # a client that cannot stop cleanly still must not break close()
                pass


def connection_error(link: Link, error: BaseException) -> DiscoveryError:
    """A ``DiscoveryError`` naming the servers, for a failed request."""
    reason = f"no reply within {link.timeout:g}s" if isinstance(error, TimeoutError) else describe(error)
    result = DiscoveryError(f"ZooKeeper at {link.hosts}: {reason}")
    result.__cause__ = error
    return result


def backoff(max_backoff: float) -> Backoff:
    """Retries' waits: 0.1 s, doubling, capped at ``max_backoff``."""
    return Backoff(tenacity.wait_exponential(multiplier=0.1, max=max_backoff))
