"""``Piloted``: the backends of a ContainerPilot configuration, polled from Consul, handed out round robin."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, Self

from .._bridge import wait_on_runtime
from .._log import get_logger
from .._runtime import RUNTIME
from .._util import describe
from ..consul import Backend, Client
from ._config import (
    Config,
    NoHealthyInstanceError,
    NotConfiguredError,
    ServiceNotConfiguredError,
    Watch,
    load_config,
)

__all__ = ["Endpoint", "Piloted", "config", "refresh", "service"]

_Endpoints = list["Endpoint"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One backend instance: go-piloted's ``Endpoint{Address, Port}``.

    >>> Endpoint("10.0.0.7", 8080)
    Endpoint(address='10.0.0.7', port=8080)
    """

    address: str
    port: int

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


class Piloted:
    """The backends (v2) or watches (v3) of the ContainerPilot configuration at ``path``, kept from Consul.

    ``path`` blank: the ``CONTAINERPILOT`` environment variable names the file. The file is
    rendered as ContainerPilot renders it (``{{ .VAR }}`` and its template functions) with
    ``env`` (default ``os.environ``), then parsed (v2 JSON or v3 JSON5). Each configured
    service's passing instances are read from Consul at once and again every ``poll`` /
    ``interval`` seconds (with its ``tag`` and ``dc``); a failed read keeps what was known
    and is logged (``piloted_poll_failed``).

    ``service(name)`` returns the next ``Endpoint`` of ``name`` round robin, in the order
    Consul answered, from the first. ``refresh()`` re-reads every service now (what SIGHUP
    does for the module-level functions); a ``service()`` call made meanwhile waits for it.
    ``sighup=True`` makes this object's ``refresh`` the process's SIGHUP handler (main thread
    only). ``close()`` stops polling.

    >>> piloted = Piloted("/etc/containerpilot.json5")  # doctest: +SKIP
    >>> endpoint = piloted.service("db")  # doctest: +SKIP
    >>> f"{endpoint.address}:{endpoint.port}"  # doctest: +SKIP
    '10.0.0.12:5432'
    """

    def __init__(
        self,
        path: str = "",
        *,
        env: Mapping[str, str] | None = None,
        sighup: bool = False,
        timeout: float = 5.0,
        logger: Any = None,
    ) -> None:
        self.config: Config = load_config(path, env)
        self._log = get_logger(logger, name=__name__, config=self.config.path)
        self._clients: dict[str | None, Client] = {}
        self._backends: dict[str, tuple[Watch, Backend]] = {}
        for watch in self.config.watches:
            client = self._clients.get(watch.datacenter)
            if client is None:
                client = Client(
                    self.config.consul,
                    token=self.config.token,
                    datacenter=watch.datacenter,
                    tls=self.config.tls,
                    timeout=timeout,
                )
                self._clients[watch.datacenter] = client
            tags = () if watch.tag is None else (watch.tag,)
            self._backends[watch.name] = (watch, Backend(client, tags=tags, logger=logger))
        self._lock = threading.RLock()  # re-entered by the SIGHUP handler on the main thread
        self._cache: dict[str, _Endpoints] = {}
        self._turn: dict[str, int] = {}
        self._idle = threading.Condition(self._lock)
        self._updating = 0
        self._closed = False
        self._previous_handler: Any = None
        self._pollers = [RUNTIME.submit(self._poll(name)) for name in self._backends]
        if sighup:
            self._install_sighup()

    @property
    def services(self) -> list[str]:
        """The names of the services configured, in the configuration's order."""
        return list(self._backends)

    # -- reading ---------------------------------------------------------------------------

    def service(self, name: str) -> Endpoint:
        """The next endpoint of service ``name`` (round robin); waits for an update under way.

        Raises ``ServiceNotConfiguredError`` if ``name`` is not configured, and
        ``NoHealthyInstanceError`` if Consul knows no passing instance of it.
        """
        if name not in self._backends:
            raise ServiceNotConfiguredError(name, self.config.path, self.services)
        with self._idle:
            self._idle.wait_for(lambda: self._updating == 0)
            endpoints = self._cache.get(name)
        if endpoints is None:  # never read yet (Consul unreachable until now): read it now
            try:
                wait_on_runtime(self._fetch(name), "Piloted.service()")
            except NoHealthyInstanceError:
                raise
            except Exception as error:
                raise NoHealthyInstanceError(name, f"Consul cannot be read: {describe(error)}", error=error) from error
            with self._lock:
                endpoints = self._cache.get(name)
        if not endpoints:
            raise NoHealthyInstanceError(name, f"Consul at {self.config.consul} lists no passing instance")
        with self._lock:
            turn = self._turn.get(name, 0)
            self._turn[name] = turn + 1
        return endpoints[turn % len(endpoints)]

    def endpoints(self, name: str) -> _Endpoints:
        """Every endpoint of ``name`` known now, in Consul's order (empty if none or not yet read)."""
        if name not in self._backends:
            raise ServiceNotConfiguredError(name, self.config.path, self.services)
        with self._lock:
            return list(self._cache.get(name, ()))

    async def _fetch(self, name: str) -> None:
        _, backend = self._backends[name]
        listing = await backend.list(name)
        found = [Endpoint(i.host, i.port) for i in listing.instances.values()]
        with self._lock:
            old = self._cache.get(name)
            self._cache[name] = found
        if old != found:
            self._log.info("piloted_service_updated", service=name, endpoints=[str(e) for e in found])

    async def _poll(self, name: str) -> None:
        watch, _ = self._backends[name]
        while not self._closed:
            try:
                await self._fetch(name)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._log.warning("piloted_poll_failed", service=name, error=describe(error), retry_in=watch.interval)
            await asyncio.sleep(watch.interval)

    # -- refreshing ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read every configured service from Consul now; ``service()`` waits meanwhile. Failures are logged."""
        self.request_refresh().result()

    def request_refresh(self) -> concurrent.futures.Future[None]:
        """Start ``refresh()`` without waiting for it (safe in a signal handler); ``service()`` waits for it."""
        with self._lock:
            self._updating += 1
        try:
            return RUNTIME.submit(self._refresh_all())
        except BaseException:
            self._done_updating()
            raise

    async def _refresh_all(self) -> None:
        try:
            results = await asyncio.gather(*(self._fetch(name) for name in self._backends), return_exceptions=True)
            for name, result in zip(self._backends, results, strict=True):
                if isinstance(result, BaseException):
                    self._log.warning("piloted_refresh_failed", service=name, error=describe(result))
            self._log.info("piloted_refreshed", services=len(results))
        finally:
            self._done_updating()

    def _done_updating(self) -> None:
        with self._idle:
            self._updating -= 1
            self._idle.notify_all()

    def _install_sighup(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("SIGHUP can only be handled from the main thread: create Piloted(sighup=True) there")
        previous = signal.getsignal(signal.SIGHUP)
        self._previous_handler = previous

        def on_sighup(signum: int, frame: FrameType | None) -> None:
            if not self._closed:
                self.request_refresh()
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGHUP, on_sighup)
        self._handler: Callable[[int, FrameType | None], None] | None = on_sighup

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop polling and release the connections; idempotent."""
        if self._closed:
            return
        self._closed = True
        for poller in self._pollers:
            poller.cancel()
        handler = getattr(self, "_handler", None)
        if handler is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGHUP) is handler:
                previous = self._previous_handler
                signal.signal(signal.SIGHUP, previous if previous is not None else signal.SIG_DFL)
            self._handler = None

        async def release() -> None:
            for client in self._clients.values():
                await client.aclose()

        if RUNTIME.in_loop_thread():
            self._released: asyncio.Future[None] | None = asyncio.ensure_future(release())
        else:
            RUNTIME.submit(release()).result()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Piloted({self.config.path!r}, services={self.services})"


# -- go-piloted's module-level functions -----------------------------------------------------

_default: Piloted | None = None
_default_lock = threading.Lock()


def config(path: str = "") -> Piloted:
    """go-piloted's ``Config(path)``: read the configuration (``CONTAINERPILOT`` when ``path`` is blank).

    The configured services are polled from Consul from now on; SIGHUP (when called on the
    main thread) refreshes them all. Calling it again replaces the previous configuration.
    """
    global _default
    sighup = threading.current_thread() is threading.main_thread()
    piloted = Piloted(path, sighup=sighup)
    with _default_lock:
        old, _default = _default, piloted
    if old is not None:
        old.close()
    return piloted


def service(name: str) -> Endpoint:
    """go-piloted's ``Service(name)``: the next endpoint of ``name``, round robin."""
    piloted = _default
    if piloted is None:
        raise NotConfiguredError("call piloted.config(path) before piloted.service(name)")
    return piloted.service(name)


def refresh() -> None:
    """What SIGHUP does: read every configured service from Consul now."""
    piloted = _default
    if piloted is None:
        raise NotConfiguredError("call piloted.config(path) before piloted.refresh()")
    piloted.refresh()
