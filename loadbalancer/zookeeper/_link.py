"""A kazoo client seen from asyncio: made with the library's settings, started, awaited, stopped.

kazoo has no asyncio support: it runs its own threads (per client: one for the connection,
two that run completion and watch callbacks). ``Link`` bridges them to the library's shared
runtime loop: kazoo's callbacks only hand work over with ``call_soon_threadsafe``, and every
decision (what to read, what to publish, what to re-create) is taken on the runtime thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, OperationTimeoutError, SessionExpiredError

from .._runtime import RUNTIME
from .._tls import TLS, TLSConfig
from .._util import describe
from ..errors import DiscoveryError

# Errors that mean "the connection or session is gone, not the request".
CONNECTION_ERRORS = (ConnectionLoss, SessionExpiredError, OperationTimeoutError, TimeoutError)

# kazoo logs through the stdlib (``kazoo.client``, ``kazoo.protocol.connection``): a
# connection retried for ever warns on every attempt. The clients this library creates log
# to a child of the library's own logger instead, so that they follow the application's
# logging setup (records propagate to ``loadbalancer`` and the root logger as usual). Its
# NullHandler only stops the stdlib's last-resort handler from printing that chatter to
# stderr when the application configured no logging at all: the library's own events
# (``refresh_failed`` and the like) report the failure once.
KAZOO_LOGGER = logging.getLogger("loadbalancer.zookeeper.kazoo")
KAZOO_LOGGER.addHandler(logging.NullHandler())

T = TypeVar("T")


class _AsyncResult(Protocol):
    def rawlink(self, callback: Callable[[Any], object]) -> None: ...


def kazoo_tls(tls: TLS) -> dict[str, Any]:
    """``tls=`` as kazoo's keywords (``use_ssl``, ``ca``, ``certfile``, ``keyfile``, ...); files checked now.

    kazoo builds its own ``SSLContext`` for every connection from file names, so an
    ``ssl.SSLContext`` cannot be handed to it: that is a ``TypeError`` saying what to give.
    """
    if tls is None or tls is False:
        return {}
    if isinstance(tls, ssl.SSLContext):
        raise TypeError(
            "ZooKeeper's client (kazoo) cannot use an ssl.SSLContext: give tls=loadbalancer.TLSConfig(ca=..., "
            "cert=..., key=...) (or tls=True for the system's CAs)"
        )
    config = TLSConfig() if tls is True else tls
    if not isinstance(config, TLSConfig):
        raise TypeError(f"tls= must be a loadbalancer.TLSConfig or True, got {tls!r}")
    config.context()  # a file that cannot be read: a ValueError naming it now, not kazoo retrying for ever
    return {
        "use_ssl": True,
        "ca": config.ca,
        "certfile": config.cert,
        "keyfile": config.key or config.cert,  # kazoo loads a certificate only with a key file
        "verify_certs": config.verify,
        "check_hostname": config.verify,
    }


def new_client(endpoints: str, session_timeout: float, max_backoff: float, tls: dict[str, Any]) -> KazooClient:
    # kazoo's default reconnection backoff grows to an hour; a discovery client must come
    # back soon after the servers do.
    retry = {"max_tries": -1, "delay": min(0.1, max_backoff), "backoff": 2, "max_delay": max_backoff}
    return KazooClient(hosts=endpoints, timeout=session_timeout, connection_retry=retry, logger=KAZOO_LOGGER, **tls)


async def gather_all(requests: Iterable[Awaitable[T]]) -> list[T]:
    """Await requests together; raise the first failure once all are done (none is left unretrieved)."""
    pending = list(requests)
    if len(pending) == 1:  # the common case of a watch event: no task to make
        return [await pending[0]]
    results = await asyncio.gather(*pending, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def session_of(client: KazooClient) -> int | None:
    """The current session id, or ``None`` while not connected."""
    client_id = client.client_id
    return None if client_id is None else int(client_id[0])


class Link:
    """A kazoo client (owned or the application's) whose state changes reach the runtime loop.

    ``on_state(state)`` runs on the runtime thread after each change kazoo reports
    (``KazooState.CONNECTED``, ``SUSPENDED``, ``LOST``). An owned client is started by
    ``start()`` and stopped by ``stop()`` or ``close()``; an application's client is left
    as it is.
    """

    def __init__(
        self,
        client: KazooClient,
        *,
        owned: bool,
        timeout: float,
        on_state: Callable[[str], None],
        endpoints: str | None = None,
    ) -> None:
        self.client = client
        self.owned = owned
        if endpoints is None:  # the servers as the client knows them
            servers = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in client.hosts)
            endpoints = ",".join(servers) + (client.chroot or "")
        self.endpoints = endpoints
        self.timeout = timeout
        self._on_state = on_state
        self._online = asyncio.Event()  # set while connected; used on the runtime loop only
        self._closed = False
        self._finished = False
        self._started = False
        self._lock = threading.Lock()
        self._closing = threading.Lock()  # held while closing: a second close() waits for the first
        client.add_listener(self._listener)

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
        self._stop_client()

    def close(self) -> None:
        """Stop listening; stop and close an owned client (its session ends, its ephemeral nodes go).

        Returns once the client has stopped, also when another thread is closing it.
        """
        with self._closing:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                started = self._started
            self.client.remove_listener(self._listener)
            if self.owned and started:
                self._stop_client()
            self._finished = True

    def _stop_client(self) -> None:
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
    def closed(self) -> bool:
        """Whether ``close()`` has finished."""
        return self._finished

    async def until_connected(self, within: float) -> bool:
        """Wait (on the runtime loop) until the client is connected; ``False`` after ``within`` seconds."""
        self.start()
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

    def failure(self, what: str, error: BaseException) -> DiscoveryError:
        """A ``DiscoveryError`` for a failed request: ``what`` failed, at which servers, and why."""
        reason = f"no reply within {self.timeout:g}s" if isinstance(error, TimeoutError) else describe(error)
        result = DiscoveryError(f"{what}: ZooKeeper at {self.endpoints}: {reason}")
        result.__cause__ = error
        return result
