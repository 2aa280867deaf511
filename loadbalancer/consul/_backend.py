"""``consul.Backend``: Consul's HTTP API on the backend protocol of ``loadbalancer.backend``.

Listing is ``GET /v1/health/service/<name>`` (``passing``, one ``tag`` per tag, ``dc``); the
``X-Consul-Index`` is the cursor. Watching is the blocking-query loop Consul documents:
``index`` and ``wait``, the answer diffed against the set before it; the index is reset
(the service listed afresh) when it goes backwards, set to 1 when Consul answers with one
not above zero, and answers that change nothing are rate-limited (a token bucket) so that
a query answering at once cannot spin, while a real change is never held back.
Registration is an agent service with a TTL check, passed at once and then every half TTL
by the registrar (or an HTTP check run by the agent); deregistration removes the service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable, Iterable, Mapping
from typing import Any

from .._log import get_logger
from .._util import describe
from ..backend import Backend as _Backend
from ..backend import Batch, Change, CursorExpiredError, Health, Lease, LeaseLostError, Listing
from ..errors import InvalidInstanceError
from ..instance import Instance
from ._client import Client, ConsulError, go_duration

__all__ = ["Backend", "Key", "instance_of"]

Key = tuple[str, str]  # (node, service ID): Consul's own order of a service's entries
_Names = list[str]
_Snapshots = dict[int, dict[Hashable, Instance]]


def instance_of(entry: Mapping[str, Any]) -> Instance:
    """One entry of ``/v1/health/service/<name>`` as an ``Instance``.

    The address is ``Service.Address``, or the node's when the service has none; the weight
    is ``Weights.Warning`` while a check warns, else ``Weights.Passing``; ``Service.Tags``
    and ``Service.Meta`` become tags and metadata, and ``Node.Meta.zone`` the metadata's
    ``zone`` when the service's meta has none (``Instance.zone``).

    >>> instance_of({"Node": {"Address": "10.0.0.2"}, "Service": {"Port": 80, "Tags": ["v2"],
    ...              "Weights": {"Passing": 3, "Warning": 1}}, "Checks": []})
    Instance(host='10.0.0.2', port=80, weight=3, tags=('v2',))
    """
    service = entry.get("Service") or {}
    node = entry.get("Node") or {}
    host = service.get("Address") or node.get("Address") or ""
    weights = service.get("Weights") or {}
    statuses = {check.get("Status") for check in entry.get("Checks") or ()}
    weight = weights.get("Warning" if "warning" in statuses and "critical" not in statuses else "Passing", 1)
    meta = {str(k): str(v) for k, v in (service.get("Meta") or {}).items()}
    node_zone = (node.get("Meta") or {}).get("zone")
    if node_zone and not meta.get("zone"):
        meta["zone"] = str(node_zone)  # the node's zone, when the service does not name its own
    return Instance(
        host,
        service.get("Port", 0),
        weight=weight,
        tags=tuple(service.get("Tags") or ()),
        metadata=meta,
    )


class _Bucket:
    """A token bucket: ``rate`` queries a second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last: float | None = None

    async def take(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            delay = (1 - self.tokens) / self.rate
            await asyncio.sleep(delay)
            self.last = loop.time()
            self.tokens = 1.0
        self.tokens -= 1


class Backend(_Backend):
    """Consul as a registry: a service name, its healthy instances, agent registration.

    ``passing_only``: only instances whose checks all pass (Consul's ``passing``);
    ``tags``: only those carrying every tag (asked of Consul); ``wait``: how long a blocking
    query may wait for a change (Consul caps it at 10 minutes); ``rate``: the most blocking
    queries a second one watch makes after answers that changed nothing (bursts of ``burst``
    allowed; an answer with a change is followed at once); ``deregister_after``:
    ``DeregisterCriticalServiceAfter`` of the checks it registers (seconds, ``None``: never).
    """

    name = "consul"

    def __init__(
        self,
        client: Client,
        *,
        passing_only: bool = True,
        tags: Iterable[str] = (),
        wait: float = 60.0,
        rate: float = 20.0,
        burst: int = 20,
        deregister_after: float | None = None,
        logger: Any = None,
    ) -> None:
        if not 0 < wait <= 600:
            raise ValueError(f"wait must be between 0 and 600 seconds (Consul's cap), got {wait!r}")
        if rate <= 0:
            raise ValueError(f"rate must be a positive number of queries a second, got {rate!r}")
        self.client = client
        self.passing_only = passing_only
        self.tags = tuple(tags)
        self.wait = wait
        self.rate = rate
        self.burst = max(1, int(burst))
        self.deregister_after = deregister_after
        self.log = get_logger(logger, name=__name__)
        self._snapshots: dict[str, _Snapshots] = {}  # what list() and watch() last saw, by index

    def position(self, cursor: Any) -> Any:
        return cursor

    # -- reading ---------------------------------------------------------------------------

    def _params(self) -> list[tuple[str, str]]:
        params = [("tag", tag) for tag in self.tags]
        if self.passing_only:
            params.append(("passing", "1"))
        return params

    async def _query(self, service: str, index: int | None) -> tuple[dict[Hashable, Instance], int]:
        if not isinstance(service, str) or not service:
            raise ValueError(f"invalid Consul service name {service!r}")
        params = self._params()
        wait = None
        if index:
            wait = self.wait
            params += [("index", str(index)), ("wait", go_duration(wait))]
        body, new = await self.client.get(f"/v1/health/service/{Client.segment(service)}", params, wait=wait)
        if not isinstance(body, list):
            raise ConsulError(
                f"consul {self.client.address}: /v1/health/service/{service}: expected a list, got {body!r:.200}"
            )
        found: dict[Hashable, Instance] = {}
        for entry in body:
            key: Key = ((entry.get("Node") or {}).get("Node", ""), (entry.get("Service") or {}).get("ID", ""))
            try:
                found[key] = instance_of(entry)
            except (InvalidInstanceError, TypeError, ValueError) as error:
                self.log.error("consul_entry_invalid", node=key[0], service_id=key[1], error=describe(error))
        return found, new

    def _remember(self, service: str, index: int, found: dict[Hashable, Instance]) -> None:
        snapshots = self._snapshots.setdefault(service, {})
        snapshots[index] = found
        while len(snapshots) > 4:
            del snapshots[next(iter(snapshots))]

    async def list(self, service: str) -> Listing:
        found, index = await self._query(service, None)
        index = max(index, 1)
        self._remember(service, index, found)
        return Listing(found, index)

    # -- watching --------------------------------------------------------------------------

    async def watch(self, service: str, cursor: Any) -> AsyncIterator[Batch]:
        """Blocking queries from index ``cursor``; each answer becomes the batch of what changed."""
        index = int(cursor or 0)
        known = self._snapshots.get(service, {}).get(index)
        if known is None:
            raise CursorExpiredError(f"no set known at Consul index {index} of {service!r}: list again")
        bucket = _Bucket(self.rate, self.burst)
        first = True
        quiet = False
        while True:
            if quiet:  # the last answer changed nothing: a loop answering at once must not spin
                await bucket.take()
            found, new = await self._query(service, None if first else index)
            if new < index:
                raise CursorExpiredError(f"the Consul index of {service!r} went back from {index} to {new}")
            if new <= 0:
                self.log.warning("consul_index_reset", service=service, index=new)
                new = 1  # not above zero: a query with it would not block
            changes = [Change(key, None) for key in known if key not in found]
            changes.extend(Change(key, instance) for key, instance in found.items() if known.get(key) != instance)
            if changes or first:
                self._remember(service, new, found)
                yield Batch(changes, new)
            elif new != index:
                self._remember(service, new, found)
                yield Batch((), new)
            first, quiet = False, not changes
            known, index = found, new

    # -- registering -----------------------------------------------------------------------

    def service_id(self, service: str, instance: Instance) -> str:
        """The service ID a registration uses unless given one: ``"{service}-{host}-{port}"``."""
        return f"{service}-{instance.host}-{instance.port}"

    def definition(
        self,
        service: str,
        instance: Instance,
        ttl: float,
        *,
        service_id: str | None = None,
        http_check: str | None = None,
        check_interval: float = 10.0,
    ) -> dict[str, Any]:
        """The agent service definition for ``instance``: its TTL check, or the HTTP check if given."""
        check: dict[str, Any]
        if http_check is not None:
            check = {"HTTP": http_check, "Interval": go_duration(check_interval)}
        else:
            check = {"TTL": go_duration(ttl)}
        check["CheckID"] = f"service:{service_id or self.service_id(service, instance)}"
        if self.deregister_after is not None:
            check["DeregisterCriticalServiceAfter"] = go_duration(self.deregister_after)
        definition: dict[str, Any] = {
            "ID": service_id or self.service_id(service, instance),
            "Name": service,
            "Address": instance.host,
            "Port": instance.port,
            "Tags": sorted(instance.tags),
            "Meta": dict(instance.metadata),
            "Weights": {"Passing": max(1, instance.weight), "Warning": 1},
            "Check": check,
        }
        return definition

    async def register_definition(
        self, service: str, instance: Instance, ttl: float, definition: dict[str, Any]
    ) -> Lease:
        """Register ``definition`` with the agent; a TTL check is passed at once."""
        await self.client.put("/v1/agent/service/register", definition, [("replace-existing-checks", "true")])
        check = definition["Check"]
        handle = check["CheckID"] if "TTL" in check else None
        if handle is not None:
            await self.client.put(f"/v1/agent/check/pass/{Client.segment(handle)}")
        return Lease(service, instance, ttl, handle=handle, id=definition["ID"])

    async def register(self, service: str, instance: Instance, ttl: float) -> Lease:
        return await self.register_definition(service, instance, ttl, self.definition(service, instance, ttl))

    async def keepalive(self, lease: Lease) -> None:
        """Pass the TTL check; without one, make sure the agent still has the service."""
        try:
            if lease.handle is not None:
                await self.client.put(f"/v1/agent/check/pass/{Client.segment(lease.handle)}")
            else:
                services, _ = await self.client.get("/v1/agent/services")
                if lease.id not in (services or {}):
                    raise LeaseLostError(f"the Consul agent no longer has service {lease.id!r}")
        except ConsulError as error:
            if error.status == 404 or (error.status == 500 and "TTL" in str(error)):
                raise LeaseLostError(f"the Consul agent no longer has service {lease.id!r}: {error}") from error
            raise

    async def deregister(self, lease: Lease) -> None:
        try:
            await self.client.put(f"/v1/agent/service/deregister/{Client.segment(str(lease.id))}")
        except ConsulError as error:
            if error.status != 404:  # already gone: deregistering is idempotent
                raise

    # -- the rest --------------------------------------------------------------------------

    async def services(self) -> _Names:
        body, _ = await self.client.get("/v1/catalog/services")
        return sorted(body or {})

    async def health(self) -> Health:
        try:
            leader, _ = await self.client.get("/v1/status/leader")
        except ConsulError as error:
            return Health(False, {"address": self.client.address, "error": str(error)})
        return Health(bool(leader), {"address": self.client.address, "leader": leader})

    async def aclose(self) -> None:
        await self.client.aclose()

    def __repr__(self) -> str:
        return f"consul.Backend({self.client.address!r})"
