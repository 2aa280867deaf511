"""Eureka's instance records (the v2 REST API's JSON) to ``Instance`` and back, and the apps hash code."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..errors import InvalidInstanceError
from ..instance import Instance

__all__ = ["applications", "hash_code", "instance_of", "key_of", "registration", "status_of"]

# Instances come with these statuses; only UP ones take traffic unless asked otherwise.
STATUSES = frozenset({"UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN"})
SECURE = "eureka.secure"  # metadata set on an instance published with its secure port


def _list(value: Any) -> list[Any]:
    """Eureka's JSON writes a one-element list as the element itself: both read as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def applications(document: Any) -> tuple[Iterator[tuple[str, dict[str, Any]]], str | None]:
    """The ``(app, instance record)`` pairs of a ``/apps`` or ``/apps/delta`` answer, and its apps hash code."""
    if not isinstance(document, dict) or not isinstance(document.get("applications"), dict):
        raise ValueError(f"not a Eureka applications document: {str(document)[:200]!r}")
    body = document["applications"]
    hash_ = body.get("apps__hashcode")

    def pairs() -> Iterator[tuple[str, dict[str, Any]]]:
        for application in _list(body.get("application")):
            if not isinstance(application, dict):
                continue
            name = str(application.get("name", "")).upper()
            for record in _list(application.get("instance")):
                if isinstance(record, dict):
                    yield str(record.get("app") or name).upper(), record

    return pairs(), None if hash_ is None else str(hash_)


def key_of(record: Mapping[str, Any]) -> str:
    """An instance's id: ``instanceId``, or its ``hostName`` as older servers have it."""
    key = record.get("instanceId") or record.get("hostName")
    if not isinstance(key, str) or not key:
        raise InvalidInstanceError(dict(record), "neither 'instanceId' nor 'hostName' is given")
    return key


def status_of(record: Mapping[str, Any]) -> str:
    return str(record.get("status") or "UNKNOWN").upper()


def _port(value: Any) -> tuple[int | None, bool]:
    """``{"$": 8080, "@enabled": "true"}`` (or a bare number) -> (port, enabled)."""
    if isinstance(value, dict):
        number, enabled = value.get("$"), str(value.get("@enabled", "true")).lower() == "true"
    else:
        number, enabled = value, True
    if isinstance(number, str) and number.isdigit():
        number = int(number)
    if isinstance(number, bool) or not isinstance(number, int):
        return None, False
    return number, enabled


def instance_of(record: Mapping[str, Any], *, secure: bool | None, address: str) -> Instance | None:
    """The ``Instance`` an instance record describes; ``None`` when it has no port of the kind wanted.

    ``secure``: ``None`` the non-secure port when enabled, else the secure one; ``True``
    only the secure port; ``False`` only the non-secure one. ``address``: ``"ip"``
    (``ipAddr``, falling back to ``hostName``) or ``"hostname"``. Metadata: the record's,
    with ``weight``, ``priority`` and ``tags`` (comma-separated) read as the instance's, and
    ``zone`` set from ``dataCenterInfo.metadata.availability-zone`` (AWS) when absent.
    Raises ``InvalidInstanceError`` naming the record.
    """
    port, port_on = _port(record.get("port"))
    secure_port, secure_on = _port(record.get("securePort"))
    chosen: int | None = None
    is_secure = False
    if secure is not True and port_on:
        chosen = port
    elif secure is not False and secure_on:
        chosen, is_secure = secure_port, True
    if chosen is None:
        return None
    host = record.get("ipAddr") if address == "ip" else record.get("hostName")
    host = host or record.get("hostName") or record.get("ipAddr")
    key = record.get("instanceId") or host
    if not isinstance(host, str):
        raise InvalidInstanceError(key, "no 'ipAddr' or 'hostName'")
    raw = record.get("metadata")
    metadata = {k: str(v) for k, v in raw.items() if not k.startswith("@")} if isinstance(raw, dict) else {}
    attributes: dict[str, Any] = {}
    for name in ("weight", "priority"):
        text = metadata.pop(name, None)
        if text is not None:
            if not text.isascii() or not text.isdigit():
                raise InvalidInstanceError(key, f"metadata {name!r} must be a non-negative integer, got {text!r}")
            attributes[name] = int(text)
    tags = metadata.pop("tags", "")
    attributes["tags"] = tuple(t.strip() for t in tags.split(",") if t.strip())
    if not metadata.get("zone"):
        # AWS: the data center's availability zone, when the metadata does not name a zone
        center = record.get("dataCenterInfo")
        zone = (center.get("metadata") or {}).get("availability-zone") if isinstance(center, dict) else None
        if isinstance(zone, str) and zone:
            metadata["zone"] = zone
    if is_secure:
        metadata[SECURE] = "true"
    try:
        return Instance(host, chosen, metadata=metadata, **attributes)
    except InvalidInstanceError as error:
        raise InvalidInstanceError(key, error.reason) from None


def hash_code(counts: Mapping[str, int]) -> str:
    """Eureka's reconcile hash: ``STATUS_count_`` for each status in name order (``"DOWN_1_UP_3_"``)."""
    return "".join(f"{status}_{count}_" for status, count in sorted(counts.items()) if count)


def registration(
    app: str,
    instance: Instance,
    *,
    instance_id: str,
    status: str,
    duration: float,
    secure: bool,
    vip: str | None,
    extra_metadata: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The ``{"instance": {...}}`` document that registers ``instance`` as one of ``app``'s."""
    now = str(int(time.time() * 1000))
    metadata: dict[str, str] = dict(instance.metadata)
    if instance.weight != 1:
        metadata["weight"] = str(instance.weight)
    if instance.priority != 0:
        metadata["priority"] = str(instance.priority)
    if instance.tags:
        metadata["tags"] = ",".join(instance.tags)
    metadata.update(extra_metadata)
    scheme = "https" if secure else "http"
    base = f"{scheme}://{instance.address}/"
    vip_ = vip or app.lower()
    lease = max(1, round(duration))
    return {
        "instance": {
            "instanceId": instance_id,
            "hostName": instance.host,
            "app": app,
            "ipAddr": instance.host,
            "status": status,
            "overriddenstatus": "UNKNOWN",
            "port": {"$": instance.port if not secure else 80, "@enabled": "false" if secure else "true"},
            "securePort": {"$": instance.port if secure else 443, "@enabled": "true" if secure else "false"},
            "countryId": 1,
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
            "leaseInfo": {"renewalIntervalInSecs": max(1, round(lease / 3)), "durationInSecs": lease},
            "metadata": metadata,
            "homePageUrl": base,
            "statusPageUrl": base + "info",
            "healthCheckUrl": base + "health",
            "vipAddress": vip_,
            "secureVipAddress": vip_,
            "isCoordinatingDiscoveryServer": "false",
            "lastUpdatedTimestamp": now,
            "lastDirtyTimestamp": now,
        }
    }
