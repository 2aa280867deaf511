"""What the mDNS backend reads and writes: service types, TXT properties, and the instance a service info gives."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence

from zeroconf import BadTypeInNameException, IPVersion, ServiceInfo
from zeroconf._utils.name import service_type_name

from ..errors import InvalidInstanceError
from ..instance import Instance

__all__ = [
    "check_interfaces",
    "check_ip_version",
    "check_name",
    "check_type",
    "check_types",
    "default_name",
    "instance_of",
    "properties_of",
    "service_key",
    "types_of",
]

TAGS = "tags"  # the TXT key whose value lists an instance's tags, comma-separated
_VERSIONS = {"v4": IPVersion.V4Only, "v6": IPVersion.V6Only, "all": IPVersion.All}


def check_type(value: object) -> str:
    """A DNS-SD service type in its full form (``"_http._tcp"`` -> ``"_http._tcp.local."``); ``ValueError`` names it."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"invalid service type {value!r}: give a DNS-SD type such as '_http._tcp.local.'")
    text = value if value.endswith(".") else value + "."
    if not text.lower().endswith(".local."):
        text += "local."
    starts = f"invalid service type {value!r}: a DNS-SD type starts with '_', as in '_http._tcp.local.'"
    try:
        checked = service_type_name(text, strict=False)
    except BadTypeInNameException as error:
        raise ValueError(starts if not text.startswith("_") else f"invalid service type {value!r}: {error}") from None
    if checked.lower() != text.lower() and checked.startswith("_"):
        # an instance name was given ("web._http._tcp.local.") where a type belongs
        raise ValueError(f"invalid service type {value!r}: give the type only ('{checked}'), the instance as name=")
    if not text.startswith("_"):
        raise ValueError(starts)
    return text


def check_types(value: str | Iterable[str]) -> tuple[str, ...]:
    """One type or several (farp's ``ServiceTypes``), checked, without duplicates, in the order given."""
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise ValueError("no service type given: name at least one, such as '_http._tcp.local.'")
    found: dict[str, str] = {}
    for item in items:
        checked = check_type(item)
        found.setdefault(checked.lower(), checked)
    return tuple(found.values())


def service_key(types: Sequence[str]) -> str:
    """The service name a backend knows several types by: ``"_http._tcp.local.,_ipp._tcp.local."``."""
    return ",".join(types)


def types_of(service: str) -> tuple[str, ...]:
    """The types of a ``service_key`` (or of one type)."""
    return check_types(service.split(","))


def check_name(value: object) -> str:
    """An instance name (the user-visible first label): non-empty, at most 63 bytes, no control characters."""
    if not isinstance(value, str) or not value or len(value.encode()) > 63 or any(ord(c) < 0x20 for c in value):
        raise ValueError(f"invalid instance name {value!r}: 1 to 63 bytes of UTF-8 without control characters")
    return value


def check_interfaces(value: object) -> str | list[str]:
    """``"all"``, ``"default"``, or a list of interface IP addresses."""
    if value in ("all", "default"):
        return value
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, Iterable):
        raise ValueError(f"invalid interfaces {value!r}: 'all', 'default' or a list of IP addresses")
    found = []
    for item in value:
        try:
            found.append(str(ipaddress.ip_address(item)))
        except ValueError:
            raise ValueError(f"invalid interfaces {value!r}: {item!r} is not an IP address") from None
    if not found:
        raise ValueError(f"invalid interfaces {value!r}: no address given")
    return found


def check_ip_version(value: object) -> IPVersion:
    version = _VERSIONS.get(value) if isinstance(value, str) else None
    if version is None:
        raise ValueError(f"invalid ip_version {value!r}: 'v4', 'v6' or 'all'")
    return version


def default_name(port: int) -> str:
    """This host's short name and the port: ``"web-3-8080"``."""
    return f"{socket.gethostname().split('.')[0] or 'host'}-{port}"


def properties_of(instance: Instance, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The TXT properties that announce ``instance``: its metadata, and its tags under ``tags``."""
    properties = dict(instance.metadata)
    if extra:
        properties.update(extra)
    if instance.tags:
        properties[TAGS] = ",".join(instance.tags)
    for key, value in properties.items():
        if not key or "=" in key or len(key.encode()) + len(value.encode()) + 1 > 255:
            raise ValueError(f"invalid TXT property {key!r}={value!r}: a key without '=', 255 bytes in all at most")
    return properties


def _text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", "replace")


def instance_of(info: ServiceInfo, version: IPVersion = IPVersion.All) -> Instance:
    """The instance a resolved service info describes: its first address (IPv4 first), SRV port, weight and
    priority, TXT properties as metadata (a ``tags`` key as tags). ``InvalidInstanceError`` if it has no address."""
    addresses = info.parsed_addresses(version)
    if not addresses or info.port is None:
        raise InvalidInstanceError(info.name, "the service has no address or no port")
    metadata: dict[str, str] = {}
    tags: tuple[str, ...] = ()
    for key, value in info.properties.items():
        name = _text(key)
        if name.lower() == TAGS:
            tags = tuple(tag.strip() for tag in _text(value).split(",") if tag.strip())
        elif name:
            metadata[name] = _text(value)
    return Instance(addresses[0], info.port, weight=info.weight, priority=info.priority, tags=tags, metadata=metadata)
