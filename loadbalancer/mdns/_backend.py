"""``mdns.Backend``: multicast DNS service discovery (RFC 6762, RFC 6763) on the backend protocol, with zeroconf.

A "service" is a DNS-SD service type (``"_http._tcp.local."``), or several joined by
commas. Following one is a ``_Tracker``: a zeroconf browser whose events (a new PTR, an
update, a goodbye) become changes by instance name, each new or updated instance resolved
(SRV, TXT, A/AAAA) before it is published. Every ``interval`` seconds the tracker looks at
the records of the instances it knows: one whose SRV or addresses have expired from the
cache, and that does not answer a fresh query, is removed (a responder that died without
goodbye packets: its PTR alone would keep it for 75 minutes). The changes carry a revision
that the generic publisher resumes from.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import timedelta
from typing import Any

from zeroconf import (
    DNSQuestionType,
    InterfaceChoice,
    NonUniqueNameException,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf, AsyncZeroconfServiceTypes

from .._deprecated import renamed
from .._log import get_logger
from .._util import describe, seconds
from ..backend import Backend as _Backend
from ..backend import Batch, Change, CursorExpiredError, Health, Lease, LeaseLostError, Listing
from ..backend import Registry as _Registry
from ..errors import DiscoveryError, InvalidInstanceError
from ..instance import Instance
from ._records import (
    check_interfaces,
    check_ip_version,
    check_name,
    check_type,
    default_name,
    instance_of,
    properties_of,
    service_key,
    types_of,
)

__all__ = ["Backend", "MdnsError", "Registry"]

_Names = list[str]  # the method ``list`` shadows the builtin in the class
_HISTORY = 10_000  # changes kept per tracker for watches to resume from
_OTHER_TTL = 4500  # seconds: RFC 6762's TTL for records that do not name a host (PTR, TXT)


class MdnsError(DiscoveryError):
    """An mDNS operation failed: the name could not be claimed, the sockets could not be opened, ..."""


class _Tracker:
    """One browse (one or several types, perhaps one instance name) and the instances it has resolved."""

    def __init__(self, backend: Backend, service: str, types: tuple[str, ...], only: str | None) -> None:
        self.backend = backend
        self.service = service
        self.types = types
        self._only = None if only is None else {f"{only}.{t}".lower() for t in types}
        self.instances: dict[str, Instance] = {}
        self.type_of: dict[str, str] = {}  # instance name -> its type, for each name the browser announced
        self.revision = 0
        self.history: collections.deque[tuple[int, Change]] = collections.deque(maxlen=_HISTORY)
        self._waiters: list[asyncio.Future[None]] = []
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._browser: AsyncServiceBrowser | None = None
        self._checker: asyncio.Task[None] | None = None
        self._started = 0.0
        self._log = backend.log.bind(service=service)

    async def start(self) -> None:
        zc = await self.backend.zeroconf()
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        # QM questions only: a unicast answer (QU) reaches one of the sockets bound to port 5353
        # on this host, not necessarily ours, when another mDNS stack (Avahi) runs beside us
        self._browser = AsyncServiceBrowser(
            zc.zeroconf, list(self.types), handlers=[self._on_change], question_type=DNSQuestionType.QM
        )
        self._checker = loop.create_task(self._recheck(), name=f"mdns recheck {self.service}")

    async def settled(self) -> None:
        """Wait until the first answers to the browse have come in and been resolved."""
        loop = asyncio.get_running_loop()
        remaining = self._started + self.backend.settle - loop.time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        pending = [task for task in self._resolving.values() if not task.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.backend.timeout)

    def _wanted(self, name: str) -> bool:
        return self._only is None or name.lower() in self._only

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if not self._wanted(name):
            return
        if state_change is ServiceStateChange.Removed:
            task = self._resolving.pop(name, None)
            if task is not None:
                task.cancel()
            self.type_of.pop(name, None)
            if name in self.instances:
                self._log.info("mdns_instance_removed", instance_name=name, reason="goodbye or PTR expired")
                self._record(name, None)
            return
        self.type_of[name] = service_type
        self._resolve(name, service_type)

    def _resolve(self, name: str, service_type: str) -> None:
        previous = self._resolving.pop(name, None)
        if previous is not None:
            previous.cancel()
        self._resolving[name] = asyncio.get_running_loop().create_task(
            self._resolve_now(name, service_type), name=f"mdns resolve {name}"
        )

    async def _resolve_now(self, name: str, service_type: str) -> None:
        try:
            zc = await self.backend.zeroconf()
            info = AsyncServiceInfo(service_type, name)
            if not await info.async_request(zc.zeroconf, self.backend.timeout * 1000, DNSQuestionType.QM):
                self._log.info("mdns_resolve_failed", instance_name=name, timeout=self.backend.timeout)
                return  # tried again at the next recheck while the browser still lists it
            try:
                instance = instance_of(info, self.backend.ip_version)
            except InvalidInstanceError as error:
                self._log.warning("mdns_instance_invalid", instance_name=name, error=error.reason)
                if name in self.instances:
                    self._record(name, None)
                return
            if self.instances.get(name) != instance or self._differs(name, instance):
                self._record(name, instance)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # zeroconf closed under us, a socket error: logged, tried again later
            self._log.warning("mdns_resolve_failed", instance_name=name, error=describe(error))
        finally:
            if self._resolving.get(name) is asyncio.current_task():
                del self._resolving[name]

    def _differs(self, name: str, instance: Instance) -> bool:
        old = self.instances.get(name)
        return old is None or old.metadata != instance.metadata

    def _record(self, name: str, instance: Instance | None) -> None:
        if instance is None:
            if self.instances.pop(name, None) is None:
                return
        else:
            self.instances[name] = instance
        self.revision += 1
        self.history.append((self.revision, Change(name, instance, self.revision)))
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def changed(self, seen: int) -> None:
        if self.revision != seen:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    async def _recheck(self) -> None:
        """Drop instances whose SRV or address records expired and that no longer answer (no goodbye was seen)."""
        while True:
            await asyncio.sleep(self.backend.interval)
            try:
                zc = await self.backend.zeroconf()
                now = current_time_millis()
                for name, service_type in list(self.type_of.items()):
                    if name in self._resolving:
                        continue
                    info = AsyncServiceInfo(service_type, name)
                    if name in self.instances and info.load_from_cache(zc.zeroconf, now):
                        continue  # its records are alive in the cache
                    self._resolving[name] = task = asyncio.get_running_loop().create_task(
                        self._confirm(name, service_type), name=f"mdns confirm {name}"
                    )
                    del task
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._log.warning("mdns_recheck_failed", error=describe(error))

    async def _confirm(self, name: str, service_type: str) -> None:
        try:
            zc = await self.backend.zeroconf()
            info = AsyncServiceInfo(service_type, name)
            if await info.async_request(zc.zeroconf, self.backend.timeout * 1000, DNSQuestionType.QM):
                with contextlib.suppress(InvalidInstanceError):
                    instance = instance_of(info, self.backend.ip_version)
                    if self.instances.get(name) != instance or self._differs(name, instance):
                        self._record(name, instance)
                return
            if name in self.instances:
                self._log.info(
                    "mdns_instance_expired",
                    instance_name=name,
                    reason="its SRV or address records expired and it did not answer a query",
                    timeout=self.backend.timeout,
                )
                self._record(name, None)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._log.warning("mdns_resolve_failed", instance_name=name, error=describe(error))
        finally:
            if self._resolving.get(name) is asyncio.current_task():
                del self._resolving[name]

    async def close(self) -> None:
        tasks = [*self._resolving.values(), *([self._checker] if self._checker else [])]
        self._resolving.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()


class Backend(_Backend):
    """Multicast DNS service discovery as a registry: a service is a DNS-SD type (or several, comma-separated).

    - ``interfaces``: ``"all"`` (default), ``"default"`` or a list of the local IP
      addresses whose interfaces to use; ``ip_version``: ``"v4"`` (default), ``"v6"`` or
      ``"all"`` (an IPv6 link-local address needs its scope, which ``"host:port"`` cannot carry).
    - ``settle``: how long a first listing waits for answers to the browse (mDNS has no
      "that is all"; a responder that multicast its records in the last second answers
      only the browse's second query, about a second later, as RFC 6762 section 6 asks:
      keep it above 1.2 s); ``timeout``: how long to
      wait for an instance's SRV, TXT and addresses (3 s); ``interval``: how often (10 s) the records of
      known instances are checked (an instance whose SRV or addresses expired and that does
      not answer again is removed).
    - ``instance``: follow only the instance of that name (in each type).
    - ``zeroconf``: an ``AsyncZeroconf`` of yours (not closed by the backend); by default
      the backend opens its own on first use and closes it in ``aclose()``.

    Registering announces a service (``register``); a lease is the announcement, kept as
    long as the process runs; its ``ttl`` is the TTL of the SRV and A records (the PTR and
    TXT records keep RFC 6762's 75 minutes), how long this library's publishers keep the
    instance if the process dies without sending goodbye packets.
    """

    name = "mdns"

    @renamed(resolve_timeout="timeout", recheck="interval")
    def __init__(
        self,
        *,
        interfaces: str | Iterable[str] = "all",
        ip_version: str = "v4",
        settle: float | timedelta = 1.5,
        timeout: float | timedelta = 3.0,
        interval: float | timedelta = 10.0,
        instance: str | None = None,
        zeroconf: AsyncZeroconf | None = None,
        logger: Any = None,
    ) -> None:
        self._interfaces = check_interfaces(interfaces)
        self.ip_version = check_ip_version(ip_version)
        self._ip_version_name = ip_version
        self.settle = seconds(settle, "settle")
        self.timeout = seconds(timeout, "timeout", allow_zero=False)
        self.interval = seconds(interval, "interval", allow_zero=False)
        self._instance = None if instance is None else check_name(instance)
        self._zc: AsyncZeroconf | None = zeroconf
        self._own_zc = zeroconf is None
        self._opening: asyncio.Lock | None = None
        self._trackers: dict[str, _Tracker] = {}
        self._starting: dict[str, asyncio.Task[_Tracker]] = {}
        self._registered: dict[str, ServiceInfo] = {}
        self._closed = False
        self.log = get_logger(logger, name=__name__)

    # -- zeroconf --------------------------------------------------------------------------

    async def zeroconf(self) -> AsyncZeroconf:
        """The ``AsyncZeroconf`` this backend uses (opened on first use, on the runtime loop)."""
        if self._closed:
            raise MdnsError("the mDNS backend is closed")
        if self._zc is not None:
            return self._zc
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._zc is None:
                choice = {"all": InterfaceChoice.All, "default": InterfaceChoice.Default}.get(
                    self._interfaces if isinstance(self._interfaces, str) else "", self._interfaces
                )
                try:
                    self._zc = AsyncZeroconf(interfaces=choice, ip_version=self.ip_version)
                except OSError as error:
                    raise MdnsError(
                        f"cannot open mDNS sockets on interfaces {self._interfaces!r}: {describe(error)}"
                    ) from error
            return self._zc

    async def _tracker(self, service: str) -> _Tracker:
        service = service_key(types_of(service))
        tracker = self._trackers.get(service)
        if tracker is not None:
            return tracker
        starting = self._starting.get(service)
        if starting is None:
            starting = asyncio.get_running_loop().create_task(self._start(service))
            self._starting[service] = starting
        return await asyncio.shield(starting)

    async def _start(self, service: str) -> _Tracker:
        try:
            tracker = _Tracker(self, service, types_of(service), self._instance)
            await tracker.start()
            self._trackers[service] = tracker
            return tracker
        finally:
            self._starting.pop(service, None)

    # -- discovery -------------------------------------------------------------------------

    def position(self, cursor: Any) -> Any:
        return cursor

    async def list(self, service: str) -> Listing:
        tracker = await self._tracker(service)
        await tracker.settled()
        found: dict[Any, Instance] = dict(tracker.instances)
        return Listing(found, tracker.revision)

    async def watch(self, service: str, cursor: Any) -> AsyncIterator[Batch]:
        tracker = await self._tracker(service)
        seen = int(cursor or 0)
        yield Batch((), seen)  # established
        while True:
            history = tracker.history
            if history and seen < history[0][0] - 1:
                raise CursorExpiredError(f"mDNS: revision {seen} of {service} is no longer kept")
            changes = [change for revision, change in history if revision > seen]
            seen = tracker.revision
            if changes:
                yield Batch(changes, seen)
                continue
            await tracker.changed(seen)

    async def services(self) -> _Names:
        """The service types announced on the network (a browse of ``_services._dns-sd._udp.local.``)."""
        zc = await self.zeroconf()
        found = await AsyncZeroconfServiceTypes.async_find(aiozc=zc, timeout=max(self.settle, 0.5))
        return sorted(found)

    async def health(self) -> Health:
        detail: dict[str, Any] = {
            "interfaces": self._interfaces,
            "ip_version": self._ip_version_name,
            "browsing": sorted(self._trackers),
            "announced": sorted(self._registered),
        }
        if self._closed:
            return Health(False, {**detail, "error": "closed"})
        try:
            zc = await self.zeroconf()
        except MdnsError as error:
            return Health(False, {**detail, "error": str(error)})
        return Health(not zc.zeroconf.done, detail)

    # -- announcing ------------------------------------------------------------------------

    async def register(self, service: str, instance: Instance, ttl: float) -> Lease:
        return await self.announce(service, instance, ttl=ttl)

    async def announce(
        self,
        service_type: str,
        instance: Instance,
        *,
        ttl: float = 120.0,
        name: str | None = None,
        server: str | None = None,
        properties: Mapping[str, str] | None = None,
        rename: bool = True,
    ) -> Lease:
        """Probe for ``name`` (RFC 6762 section 8), then announce ``instance`` under it; the lease's id is the name.

        A name another host holds is changed (``"web-2"``, ...) and the change logged as
        ``mdns_name_conflict``, or with ``rename=False`` refused (``MdnsError``).
        """
        service_type = check_type(service_type)
        wanted = check_name(default_name(instance.port) if name is None else name)
        try:
            address = ipaddress.ip_address(instance.host)
        except ValueError:
            raise ValueError(
                f"cannot announce {instance.address!r} over mDNS: give the instance's IP address, not a host name"
            ) from None
        host = server or f"{default_name(instance.port)}.local."
        if not host.endswith("."):
            host += "."
        record_ttl = max(1, round(ttl))
        info = AsyncServiceInfo(
            service_type,
            f"{wanted}.{service_type}",
            port=instance.port,
            weight=instance.weight,
            priority=instance.priority,
            properties=properties_of(instance, properties),
            server=host,
            addresses=[address.packed],
            host_ttl=record_ttl,  # SRV and A: as RFC 6762 section 10 advises for records naming a host
            other_ttl=max(_OTHER_TTL, record_ttl),  # PTR and TXT
        )
        zc = await self.zeroconf()
        try:
            await (await zc.async_register_service(info, allow_name_change=rename))
        except NonUniqueNameException:
            raise MdnsError(
                f"cannot announce {wanted!r} as a {service_type} service: another responder holds the name"
            ) from None
        except Exception as error:
            raise MdnsError(f"cannot announce {wanted!r} as a {service_type} service: {describe(error)}") from error
        if info.name.lower() != f"{wanted}.{service_type}".lower():
            self.log.warning(
                "mdns_name_conflict", service=service_type, requested=f"{wanted}.{service_type}", registered=info.name
            )
        self._registered[info.name] = info
        return Lease(service_type, instance, float(record_ttl), info, info.name)

    async def keepalive(self, lease: Lease) -> None:
        info: ServiceInfo = lease.handle
        zc = await self.zeroconf()
        if info.name not in self._registered or zc.zeroconf.registry.async_get_info_name(info.name) is None:
            raise LeaseLostError(f"mDNS: {info.name} is no longer announced")

    async def deregister(self, lease: Lease) -> None:
        info: ServiceInfo = lease.handle
        if self._registered.pop(info.name, None) is None or self._zc is None:
            return
        await (await self._zc.async_unregister_service(info))  # goodbye packets (TTL 0)

    async def aclose(self) -> None:
        if self._closed:
            return
        trackers, self._trackers = list(self._trackers.values()), {}
        for tracker in trackers:
            await tracker.close()
        zc = self._zc
        if zc is not None:
            for info in list(self._registered.values()):
                with contextlib.suppress(Exception):
                    await (await zc.async_unregister_service(info))
            self._registered.clear()
            if self._own_zc:
                await zc.async_close()
        self._closed = True

    def __repr__(self) -> str:
        return f"mdns.Backend(interfaces={self._interfaces!r}, ip_version={self._ip_version_name!r})"


class Registry(_Registry):
    """The registry facade (``loadbalancer.backend.Registry``) on multicast DNS: service names are DNS-SD types.

    ``register("_http._tcp.local.", "192.168.1.5:8080")`` announces an instance (named
    after this host and the port); ``discover("_http._tcp.local.", tags=...)`` browses and
    resolves what answers; ``watch(type)`` follows it; ``list_services()`` lists the types
    announced on the network. Options as for ``mdns.Backend``; ``ttl``: the records' TTL.
    """

    def __init__(self, *, ttl: float | timedelta = 120.0, logger: Any = None, **options: Any) -> None:
        self._mdns = Backend(logger=logger, **options)
        super().__init__(self._mdns, ttl=ttl, logger=logger)

    def __repr__(self) -> str:
        return f"mdns.Registry({self._mdns!r})"
