"""``eureka.Backend``: Eureka's v2 REST API on the backend protocol of ``loadbalancer.backend``.

Reading works as Eureka's own client does: one full fetch of the registry (``GET
/apps``), then every ``interval`` seconds a delta (``GET /apps/delta``: what changed in
the server's last few minutes) applied to a local copy, whose reconcile hash (the count of
instances per status) must then equal the server's ``apps__hashcode``; on a mismatch, or
when no delta could be had, the registry is fetched in full again. The copy is the whole
registry (the hash covers every application) and is shared by every publisher of the
backend: one fetch serves them all. Each fetch is turned into changes by instance id, kept
in a history with a revision counter: the revision is the cursor, so a watch resumes
exactly where it was and costs what changed.

Registration: ``POST /apps/APP``, heartbeats ``PUT /apps/APP/ID`` (a 404 means the server
forgot the instance: ``LeaseLostError``, and the registrar registers it again), status
changes ``PUT /apps/APP/ID/status?value=``, cancellation ``DELETE /apps/APP/ID``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .._log import get_logger
from .._util import describe
from ..backend import Backend as _Backend
from ..backend import Batch, Change, CursorExpiredError, Health, Lease, LeaseLostError, Listing
from ..errors import InvalidInstanceError
from ..instance import Instance
from ._client import Client, EurekaError, app_path
from ._records import STATUSES, applications, hash_code, instance_of, key_of, registration, status_of

__all__ = ["Backend", "Registration"]

_HISTORY = 100_000  # changes kept for watches to resume from; an older cursor lists again
_Names = list[str]  # the method ``list`` shadows the builtin in the class


@dataclass(slots=True)
class _Entry:
    status: str
    instance: Instance | None  # as published: None when filtered out (status, no usable port)


@dataclass
class Registration:
    """What a Eureka lease's handle holds: the app, the instance id, and the document registered."""

    app: str
    instance_id: str
    document: dict[str, Any]
    status: str = "UP"


class Backend(_Backend):
    """Eureka as a registry: ``service`` is an application name (upper-cased, as Eureka does).

    - ``interval``: seconds between delta fetches (Eureka's client: 30);
    - ``statuses``: the statuses whose instances are published (``("UP",)``);
    - ``secure``: ``None`` the non-secure port when enabled, else the secure one; ``True``
      only instances with the secure port enabled (metadata ``eureka.secure="true"``);
      ``False`` only the non-secure port;
    - ``address``: ``"ip"`` (``ipAddr``) or ``"hostname"``;
    - ``full_after``: a delta covers only the server's recent changes (3 minutes by
      default), so after this many seconds without a successful fetch the next one is full.
    """

    name = "eureka"

    def __init__(
        self,
        client: Client,
        *,
        interval: float = 30.0,
        statuses: Iterable[str] = ("UP",),
        secure: bool | None = None,
        address: str = "ip",
        full_after: float = 150.0,
        logger: Any = None,
    ) -> None:
        wanted = frozenset(s.upper() for s in ([statuses] if isinstance(statuses, str) else statuses))
        unknown = wanted - STATUSES
        if not wanted or unknown:
            raise ValueError(f"statuses must be among {sorted(STATUSES)}, got {sorted(wanted) or statuses!r}")
        if address not in ("ip", "hostname"):
            raise ValueError(f"address must be 'ip' or 'hostname', got {address!r}")
        if secure not in (None, True, False):
            raise ValueError(f"secure must be None, True or False, got {secure!r}")
        self.client = client
        self.poll_interval = interval
        self.log = get_logger(logger, name=__name__)
        self._statuses = wanted
        self._secure = secure
        self._address = address
        self._full_after = full_after
        self._apps: dict[str, dict[str, _Entry]] | None = None  # None: never fetched
        self._counts: collections.Counter[str] = collections.Counter()
        self._revision = 0
        self._history: collections.deque[tuple[int, str, Change]] = collections.deque(maxlen=_HISTORY)
        self._fetched = -float("inf")  # monotonic time of the last successful fetch
        self._lock: asyncio.Lock | None = None
        self.fetches = collections.Counter[str]()  # "full", "delta", "mismatch": for tests and benchmarks

    def position(self, cursor: Any) -> Any:
        return cursor

    # -- the local copy ----------------------------------------------------------------------

    def _age(self) -> float:
        return time.monotonic() - self._fetched

    async def sync(self, max_age: float = 0.0) -> None:
        """Bring the local copy up to date unless it was fetched less than ``max_age`` seconds ago."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        started = time.monotonic()
        async with self._lock:
            if self._fetched >= started or (max_age and self._age() < max_age):
                return  # another caller fetched while this one waited
            if self._apps is None or self._age() > self._full_after:
                await self._full()
            else:
                await self._delta()
            self._fetched = time.monotonic()

    async def _full(self) -> None:
        response = await self.client.request("GET", "apps", what="fetch the registry")
        self.fetches["full"] += 1
        pairs, _ = _applications(response, self.client.server)
        fresh: dict[str, dict[str, _Entry]] = {}
        for app, record in pairs:
            found = self._entry(app, record)
            if found is not None:
                fresh.setdefault(app, {})[found[0]] = found[1]
        old = self._apps or {}
        self._apps = {}
        self._counts.clear()
        for app in old.keys() | fresh.keys():
            before, after = old.get(app, {}), fresh.get(app, {})
            for key in before.keys() - after.keys():
                self._note(app, key, before[key].instance, None)
            for key, entry in after.items():
                was = before.get(key)
                self._note(app, key, None if was is None else was.instance, entry.instance)
            if after:
                self._apps[app] = after
                self._counts.update(e.status for e in after.values())

    async def _delta(self) -> None:
        response = await self.client.request("GET", "apps/delta", what="fetch the delta", answered=(403, 404))
        if response.status_code != 200:  # deltas disabled on the server
            self.log.info("eureka_delta_refused", server=self.client.server, status=response.status_code)
            await self._full()
            return
        self.fetches["delta"] += 1
        pairs, remote = _applications(response, self.client.server)
        apps = self._apps
        assert apps is not None
        for app, record in pairs:
            action = str(record.get("actionType", "MODIFIED")).upper()
            try:
                key = key_of(record)
            except InvalidInstanceError as error:
                self.log.error("eureka_instance_invalid", app=app, error=error.reason)
                continue
            entries = apps.setdefault(app, {})
            was = entries.pop(key, None)
            if was is not None:
                self._counts[was.status] -= 1
            if action == "DELETED":
                self._note(app, key, None if was is None else was.instance, None)
            else:
                found = self._entry(app, record)
                if found is not None:
                    entries[key] = found[1]
                    self._counts[found[1].status] += 1
                self._note(
                    app, key, None if was is None else was.instance, None if found is None else found[1].instance
                )
            if not entries:
                del apps[app]
        local = hash_code(self._counts)
        if remote is not None and remote != local:
            self.fetches["mismatch"] += 1
            self.log.info("eureka_hash_mismatch", server=self.client.server, local=local, remote=remote)
            await self._full()

    def _entry(self, app: str, record: dict[str, Any]) -> tuple[str, _Entry] | None:
        try:
            key = key_of(record)
            status = status_of(record)
            instance = instance_of(record, secure=self._secure, address=self._address)
        except InvalidInstanceError as error:
            self.log.error("eureka_instance_invalid", app=app, instance=str(error.value), error=error.reason)
            return None
        return key, _Entry(status, instance if status in self._statuses else None)

    def _note(self, app: str, key: str, before: Instance | None, after: Instance | None) -> None:
        if before == after and (before is None or after is None or before.metadata == after.metadata):
            return
        self._revision += 1
        self._history.append((self._revision, app, Change(key, after, self._revision)))

    def _instances(self, app: str) -> dict[Any, Instance]:
        entries = (self._apps or {}).get(app, {})
        return {key: entry.instance for key, entry in entries.items() if entry.instance is not None}

    # -- reading ---------------------------------------------------------------------------

    async def list(self, service: str) -> Listing:
        app = _app(service)
        await self.sync()
        return Listing(self._instances(app), self._revision)

    async def watch(self, service: str, cursor: Any) -> AsyncIterator[Batch]:
        """A delta fetch every ``interval`` seconds (shared by the backend's watches); ``service``'s changes."""
        app = _app(service)
        seen = int(cursor or 0)
        interval = self.poll_interval
        first = True
        while True:
            if not first or self._age() >= interval:
                delay = interval - self._age()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self.sync(max_age=interval / 2)
            first = False
            if self._history and seen < self._history[0][0] - 1:
                raise CursorExpiredError(f"eureka: revision {seen} is no longer kept")
            changes = [c for revision, name, c in self._history if revision > seen and name == app] if (
                self._revision > seen) else []  # fmt: skip
            seen = self._revision
            yield Batch(changes, seen)

    async def services(self) -> _Names:
        await self.sync()
        return sorted(app for app in (self._apps or {}) if self._instances(app))

    async def health(self) -> Health:
        try:
            await self.sync()
        except Exception as error:
            return Health(False, {"servers": list(self.client.servers), "error": describe(error)})
        detail = {
            "server": self.client.server,
            "applications": len(self._apps or {}),
            "instances": sum(self._counts.values()),
            "apps_hashcode": hash_code(self._counts),
        }
        return Health(True, detail)

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- registering -------------------------------------------------------------------------

    async def register(self, service: str, instance: Instance, ttl: float) -> Lease:
        """Register with Eureka's defaults: instance id ``host:app:port``, status UP, lease ``ttl`` seconds."""
        app = _app(service)
        return await self.register_instance(
            Registration(app, f"{instance.host}:{app.lower()}:{instance.port}", {}), instance, ttl
        )

    async def register_instance(
        self,
        registration_: Registration,
        instance: Instance,
        ttl: float,
        *,
        secure: bool = False,
        vip: str | None = None,
    ) -> Lease:
        """``POST /apps/APP``: the lease's ``ttl`` is two thirds of Eureka's, so that heartbeats go every third."""
        document = registration(
            registration_.app,
            instance,
            instance_id=registration_.instance_id,
            status=registration_.status,
            duration=ttl,
            secure=secure,
            vip=vip,
        )
        registration_.document = document
        await self.client.request(
            "POST", app_path(registration_.app), json=document, what=f"register {registration_.instance_id!r}"
        )
        lease_ttl = document["instance"]["leaseInfo"]["durationInSecs"]
        return Lease(registration_.app, instance, lease_ttl * 2 / 3, registration_, registration_.instance_id)

    async def keepalive(self, lease: Lease) -> None:
        handle: Registration = lease.handle
        response = await self.client.request(
            "PUT",
            app_path(handle.app, handle.instance_id),
            params={"status": handle.status, "lastDirtyTimestamp": handle.document["instance"]["lastDirtyTimestamp"]},
            what=f"renew {handle.instance_id!r}",
            answered=(404,),
        )
        if response.status_code == 404:
            raise LeaseLostError(
                f"eureka {self.client.server}: {handle.instance_id!r} of {handle.app} is not registered"
            )

    async def set_status(self, lease: Lease, status: str) -> None:
        """``PUT /apps/APP/ID/status?value=STATUS`` (an override the server keeps until removed)."""
        handle: Registration = lease.handle
        response = await self.client.request(
            "PUT",
            app_path(handle.app, handle.instance_id, "status"),
            params={"value": status, "lastDirtyTimestamp": handle.document["instance"]["lastDirtyTimestamp"]},
            what=f"set the status of {handle.instance_id!r} to {status}",
            answered=(404,),
        )
        if response.status_code == 404:
            raise LeaseLostError(
                f"eureka {self.client.server}: {handle.instance_id!r} of {handle.app} is not registered"
            )
        handle.status = status

    async def deregister(self, lease: Lease) -> None:
        handle: Registration = lease.handle
        await self.client.request(
            "DELETE", app_path(handle.app, handle.instance_id), what=f"cancel {handle.instance_id!r}", answered=(404,)
        )

    def __repr__(self) -> str:
        return f"eureka.Backend({','.join(self.client.servers)!r})"


def _app(service: str) -> str:
    if not isinstance(service, str) or not service or "/" in service:
        raise ValueError(f"invalid Eureka application name {service!r}: a non-empty name without '/'")
    return service.upper()


def _applications(response: Any, server: str) -> tuple[Iterator[tuple[str, dict[str, Any]]], str | None]:
    try:
        pairs, hash_ = applications(response.json())
        return iter(list(pairs)), hash_
    except (ValueError, TypeError, AttributeError) as error:
        raise EurekaError(
            f"eureka {server}: not an applications document as documented ({error})", server=server
        ) from None


def check_status(status: str) -> str:
    """``status`` upper-cased, checked to be one of Eureka's (``ValueError`` naming it otherwise)."""
    if not isinstance(status, str) or status.upper() not in STATUSES:
        raise ValueError(f"invalid Eureka status {status!r}: one of {', '.join(sorted(STATUSES))}")
    return status.upper()
