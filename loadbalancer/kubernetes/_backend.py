"""``kubernetes.Backend``: a Service's EndpointSlices (``discovery.k8s.io/v1``) on the backend protocol.

List the slices labelled ``kubernetes.io/service-name=<service>`` (paged, one consistent
snapshot), then watch from the list's ``resourceVersion`` with bookmarks. Every endpoint is
one key, ``(slice name, address)``: a slice event is compared with what that slice held
before, so one endpoint changing is one change, whatever the size of the Service. A
version the server no longer has (``410 Gone``, on the watch request or as an ``ERROR``
event) raises ``CursorExpiredError``: the publisher lists afresh.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator, Hashable, Mapping
from typing import Any, Literal

from .._log import get_logger
from .._util import describe
from ..backend import Backend as _Backend
from ..backend import Batch, Change, CursorExpiredError, Health, Listing
from ..errors import InvalidInstanceError
from ..instance import Instance
from ._client import Client, KubernetesError

__all__ = ["SERVICE_LABEL", "Accept", "Backend"]

SERVICE_LABEL = "kubernetes.io/service-name"
Accept = Literal["ready", "serving", "all"]
_PAGE = 500  # slices per list request
_ZONE_LABEL = "topology.kubernetes.io/zone"  # an endpoint's zone in v1beta1 slices' topology map
_Names = list[str]  # the method ``list`` shadows the builtin in the class
_Slice = dict[Hashable, Instance]


class _Cursor:
    """Where a watch resumes: the ``resourceVersion``, and what each slice held then (to compare events with)."""

    __slots__ = ("slices", "version")

    def __init__(self, version: str, slices: dict[str, _Slice]) -> None:
        self.version = version
        self.slices = slices

    def __str__(self) -> str:
        return self.version

    def __repr__(self) -> str:
        return repr(self.version)


def _flag(conditions: Mapping[str, Any], name: str, default: bool) -> bool:
    value = conditions.get(name)
    return default if value is None else bool(value)


class Backend(_Backend):
    """EndpointSlices of Services in ``namespace`` as a registry: ``service`` is a Service's name.

    - ``port``: which of the slice's ports: a name (``"http"``), a number, or ``None`` for
      the only one (a slice with several ports is then skipped and logged);
    - ``accept``: ``"ready"`` endpoints (default; ``ready`` unset counts as ready, as the API
      documents), ``"serving"`` ones (ready, or terminating but still serving: what to use
      while a rollout drains) or ``"all"``;
    - ``label_selector``: more labels the slices must have (``"app=web,tier!=canary"``);
    - ``watch_timeout``: seconds the server keeps one watch open (it is then resumed from
      the last version, without a re-list).

    Each instance's metadata holds ``zone`` (the endpoint's ``zone``, or in older
    ``v1beta1`` slices its ``topology`` map's ``topology.kubernetes.io/zone``; read it as
    ``Instance.zone``), ``node``, ``hostname``, ``pod`` (when the endpoint says them),
    ``slice``, ``port_name`` and the ``ready``/``serving``/``terminating`` conditions
    (``"true"``/``"false"``).
    """

    name = "kubernetes"

    def __init__(
        self,
        client: Client,
        *,
        namespace: str | None = None,
        port: int | str | None = None,
        label_selector: str | None = None,
        accept: Accept = "ready",
        watch_timeout: float = 290.0,
        logger: Any = None,
    ) -> None:
        namespace = client.config.namespace if namespace is None else namespace
        if not isinstance(namespace, str) or not namespace or "/" in namespace:
            raise ValueError(f"invalid namespace {namespace!r}: it must be a non-empty name without '/'")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int | str) or port == ""):
            raise ValueError(f"invalid port {port!r}: give a port name, a port number, or None for the only one")
        if isinstance(port, int) and not 0 < port < 65536:
            raise ValueError(f"invalid port {port!r}: a port number is 1-65535")
        if accept not in ("ready", "serving", "all"):
            raise ValueError(f"invalid accept={accept!r}: it is 'ready', 'serving' or 'all'")
        if label_selector is not None and not isinstance(label_selector, str):
            raise ValueError(f"invalid label_selector {label_selector!r}: it is a string such as 'app=web'")
        if not watch_timeout >= 1:
            raise ValueError(f"invalid watch_timeout {watch_timeout!r}: at least 1 second")
        self.client = client
        self.namespace = namespace
        self.port = port
        self.label_selector = label_selector or None
        self.accept = accept
        self.watch_timeout = int(watch_timeout)
        self.log = get_logger(logger, name=__name__)
        self._path = f"/apis/discovery.k8s.io/v1/namespaces/{urllib.parse.quote(namespace)}/endpointslices"
        self._warned: set[tuple[str, str]] = set()

    def selector(self, service: str) -> str:
        if not isinstance(service, str) or not service or "," in service or "=" in service:
            raise ValueError(f"invalid service name {service!r}")
        own = f"{SERVICE_LABEL}={service}"
        return f"{own},{self.label_selector}" if self.label_selector else own

    # -- reading ---------------------------------------------------------------------------

    async def _list_slices(self, selector: str | None, what: str) -> tuple[list[dict[str, Any]], str]:
        for _ in range(3):  # a continuation expired (410) between two pages: start again
            params = {"limit": str(_PAGE)}
            if selector is not None:
                params["labelSelector"] = selector
            items: list[dict[str, Any]] = []
            version = ""
            try:
                while True:
                    reply = await self.client.get(self._path, params, what=what)
                    meta = reply.get("metadata") or {}
                    version = version or str(meta.get("resourceVersion", ""))
                    items.extend(reply.get("items") or ())
                    following = meta.get("continue")
                    if not following:
                        return items, version
                    params["continue"] = following
            except KubernetesError as error:
                if error.status != 410 or "continue" not in params:
                    raise
                self.log.info("kubernetes_list_restarted", namespace=self.namespace, reason=str(error))
        raise KubernetesError(f"kubernetes {self.client.server}: {what}: the paged list kept expiring", status=410)

    async def list(self, service: str) -> Listing:
        items, version = await self._list_slices(
            self.selector(service), f"list endpointslices of service {service!r} in namespace {self.namespace!r}"
        )
        slices = {}
        instances: dict[Hashable, Instance] = {}
        for item in items:
            name = str((item.get("metadata") or {}).get("name", ""))
            found = self._convert(service, name, item)
            slices[name] = found
            instances.update(found)
        return Listing(instances, _Cursor(version, slices))

    def _convert(self, service: str, name: str, item: Mapping[str, Any]) -> _Slice:
        """One slice's endpoints, by ``(slice name, address)``, as this backend publishes them."""
        number, port_name = self._pick_port(service, name, item.get("ports"))
        if number is None:
            return {}
        found: _Slice = {}
        accept = self.accept
        for endpoint in item.get("endpoints") or ():
            addresses = endpoint.get("addresses") or ()
            if not addresses:
                continue
            conditions = endpoint.get("conditions") or {}
            ready = _flag(conditions, "ready", True)  # unset: ready (an unknown state counts as ready)
            serving = _flag(conditions, "serving", ready)
            terminating = _flag(conditions, "terminating", False)
            if (accept == "ready" and not ready) or (accept == "serving" and not serving):
                continue
            address = str(addresses[0])  # all of them reach the same endpoint: the API says to use the first
            metadata = {
                "slice": name,
                "ready": "true" if ready else "false",
                "serving": "true" if serving else "false",
                "terminating": "true" if terminating else "false",
            }
            if port_name:
                metadata["port_name"] = port_name
            for key, field in (("zone", "zone"), ("node", "nodeName"), ("hostname", "hostname")):
                value = endpoint.get(field)
                if value:
                    metadata[key] = str(value)
            if "zone" not in metadata:  # discovery.k8s.io/v1beta1 slices: the topology map
                zone = (endpoint.get("topology") or {}).get(_ZONE_LABEL)
                if zone:
                    metadata["zone"] = str(zone)
            target = endpoint.get("targetRef") or {}
            if target.get("kind") == "Pod" and target.get("name"):
                metadata["pod"] = str(target["name"])
            try:
                instance = Instance(address, number, metadata=metadata)
            except InvalidInstanceError as error:
                self.log.error("kubernetes_endpoint_invalid", service=service, slice=name, address=address,
                               error=error.reason)  # fmt: skip
                continue
            found[(name, address)] = instance
        return found

    def _pick_port(self, service: str, name: str, ports: Any) -> tuple[int | None, str | None]:
        wanted = self.port
        listed = [p for p in ports or () if isinstance(p, dict) and p.get("port")]
        if not listed:
            if isinstance(wanted, int):  # no ports listed: every port of the endpoints
                return wanted, None
            return self._skip(service, name, "the slice lists no port: give port= a number")
        if wanted is None:
            if len(listed) == 1:
                return int(listed[0]["port"]), listed[0].get("name") or None
            names = ", ".join(f"{p.get('name') or '(unnamed)'}={p['port']}" for p in listed)
            return self._skip(service, name, f"the slice has several ports ({names}): choose one with port=")
        for entry in listed:
            if (isinstance(wanted, str) and entry.get("name") == wanted) or entry["port"] == wanted:
                return int(entry["port"]), entry.get("name") or None
        names = ", ".join(f"{p.get('name') or '(unnamed)'}={p['port']}" for p in listed)
        return self._skip(service, name, f"the slice has no port {wanted!r} (it has {names})")

    def _skip(self, service: str, name: str, reason: str) -> tuple[None, None]:
        if (name, reason) not in self._warned:  # once per slice and reason, not at every event
            self._warned.add((name, reason))
            self.log.warning("kubernetes_slice_skipped", service=service, slice=name, reason=reason)
        return None, None

    # -- watching --------------------------------------------------------------------------

    async def watch(self, service: str, cursor: Any) -> AsyncIterator[Batch]:
        """Batches after ``cursor`` (a list's), one per slice event; a clean end of the stream is resumed at once."""
        if not isinstance(cursor, _Cursor):
            raise CursorExpiredError(f"no resourceVersion to watch from ({cursor!r})")
        state = cursor
        slices = state.slices
        version = state.version
        what = f"watch endpointslices of service {service!r} in namespace {self.namespace!r}"
        announced = False
        loop = asyncio.get_running_loop()
        while True:
            params = {
                "watch": "1",
                "labelSelector": self.selector(service),
                "resourceVersion": version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(self.watch_timeout),
            }
            started = loop.time()
            heard = False
            try:
                async for event in self.client.stream(
                    self._path, params, what=what, idle=self.watch_timeout + self.client.timeout
                ):
                    if event is None:
                        if not announced:
                            announced = True
                            yield Batch((), _Cursor(version, slices))
                        continue
                    heard = True
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        code = obj.get("code")
                        message = str(obj.get("message") or obj)
                        if code == 410:
                            raise CursorExpiredError(f"resourceVersion {version} is gone: {message}")
                        raise KubernetesError(f"kubernetes {self.client.server}: {what}: {message}", status=code)
                    meta = obj.get("metadata") or {}
                    version = str(meta.get("resourceVersion") or version)
                    if kind == "BOOKMARK":
                        yield Batch((), _Cursor(version, slices))
                        continue
                    name = str(meta.get("name", ""))
                    old = slices.get(name, {})
                    new = {} if kind == "DELETED" else self._convert(service, name, obj)
                    if new:
                        slices[name] = new
                    else:
                        slices.pop(name, None)
                    changes = [Change(key, None) for key in old if key not in new]
                    changes.extend(Change(key, inst) for key, inst in new.items() if old.get(key) != inst)
                    yield Batch(changes, _Cursor(version, slices))
            except KubernetesError as error:
                if error.status == 410:
                    raise CursorExpiredError(f"resourceVersion {version} is gone: {error}") from error
                raise
            if not heard and loop.time() - started < 1.0:
                raise KubernetesError(f"kubernetes {self.client.server}: {what}: the server ended the watch at once")
            self.log.debug("kubernetes_watch_renewed", service=service, version=version)

    # -- the rest ----------------------------------------------------------------------------

    async def services(self) -> _Names:
        """The Services with EndpointSlices in the namespace (read from the slices' labels)."""
        items, _ = await self._list_slices(None, f"list endpointslices in namespace {self.namespace!r}")
        names = {((item.get("metadata") or {}).get("labels") or {}).get(SERVICE_LABEL) for item in items}
        return sorted(str(name) for name in names if name)

    async def health(self) -> Health:
        try:
            answer = await self.client.get("/readyz", what="readyz")
        except KubernetesError as error:
            return Health(False, {"server": self.client.server, "error": describe(error)})
        return Health(True, {"server": self.client.server, "readyz": str(answer).strip()})

    async def aclose(self) -> None:
        await self.client.aclose()
