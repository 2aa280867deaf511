"""Service instances: where an endpoint lives, and what discovery said about it."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import InvalidInstanceError

__all__ = ["Instance", "format_record", "parse_instance", "parse_record"]

# RFC 1123 labels, plus "_" which service names (RFC 2782) and many internal zones use.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_EMPTY: Mapping[str, str] = MappingProxyType({})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # RFC 3986: "http://", "grpc+tls://", ...
# Where an instance's zone is read from, first found first (see Instance.zone).
ZONE_KEYS = ("zone", "topology.kubernetes.io/zone", "availability-zone", "availabilityZone")
_ZONE_TAG = "zone="


def _check_host(host: str, value: object) -> str:
    """Return ``host`` normalised (IP addresses canonical, names lower case, no final dot)."""
    if not host:
        raise InvalidInstanceError(value, "host is empty")
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise InvalidInstanceError(value, f"{host!r} is not a valid IPv6 address") from None
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253:
        raise InvalidInstanceError(value, "host name is longer than 253 characters")
    labels = name.split(".")
    if labels[-1].isdigit() or all(label.isdigit() for label in labels):
        try:
            return str(ipaddress.IPv4Address(name))
        except ValueError:
            raise InvalidInstanceError(value, f"{host!r} is not a valid IPv4 address") from None
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise InvalidInstanceError(value, f"{host!r} is not a valid host name")
    return name.lower()


def _check_port(port: object, value: object) -> int:
    if isinstance(port, str):
        digits = port[1:] if port.startswith("-") else port
        if not digits.isascii() or not digits.isdigit():
            raise InvalidInstanceError(value, "port is not a number")
        port = int(port)  # a negative one is out of range, not "not a number"
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidInstanceError(value, "port is not a number")
    if not 1 <= port <= 65535:
        raise InvalidInstanceError(value, f"port {port} is out of range 1-65535")
    return port


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance of a service, as a discovery source describes it.

    ``str(instance)`` is ``"host:port"`` (``"[::1]:8080"`` for IPv6), the string a factory
    receives. ``weight`` and ``priority`` follow SRV records (RFC 2782: lower priority is
    preferred, weight is relative within a priority); ``ttl`` is how long the source said
    the record may be cached, if it said.

    >>> Instance.parse("[::1]:8080")
    Instance(host='::1', port=8080)
    >>> str(Instance("api.internal", 443, weight=10))
    'api.internal:443'
    """

    host: str
    port: int
    weight: int = 1
    priority: int = 0
    ttl: float | None = None
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    address: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        value = f"{self.host}:{self.port}"
        set_ = object.__setattr__
        host = _check_host(self.host, value) if isinstance(self.host, str) else None
        if host is None:
            raise InvalidInstanceError(value, "host is not a string")
        set_(self, "host", host)
        set_(self, "port", _check_port(self.port, value))
        for name in ("weight", "priority"):
            number = getattr(self, name)
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise InvalidInstanceError(value, f"{name} must be a non-negative integer, got {number!r}")
        if self.ttl is not None and (
            isinstance(self.ttl, bool) or not isinstance(self.ttl, int | float) or self.ttl < 0
        ):
            raise InvalidInstanceError(value, f"ttl must be a non-negative number, got {self.ttl!r}")
        if isinstance(self.tags, str) or not isinstance(self.tags, Iterable):
            raise InvalidInstanceError(value, f"tags must be a sequence of strings, got {self.tags!r}")
        set_(self, "tags", tuple(self.tags))
        if not isinstance(self.metadata, MappingProxyType):
            set_(self, "metadata", MappingProxyType(dict(self.metadata)))
        set_(self, "address", f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}")

    @property
    def zone(self) -> str | None:
        """The zone (availability zone, failure domain) the instance runs in, if discovery said.

        Read from ``metadata``: the first non-empty of ``zone``, ``topology.kubernetes.io/zone``,
        ``availability-zone`` and ``availabilityZone``; else from a tag ``zone=<name>``; else
        ``None``. The backends put their system's zone under ``zone``: Kubernetes the
        EndpointSlice endpoint's ``zone``, Consul the service's (or else the node's) meta
        ``zone``, Eureka the metadata ``zone`` (or else the AWS data center's
        ``availability-zone``). Static and registry instances carry it as metadata or a tag.

        >>> Instance("10.0.0.7", 80, tags=("zone=eu-1a",)).zone
        'eu-1a'
        >>> Instance("10.0.0.7", 80, metadata={"zone": "eu-1b"}).zone
        'eu-1b'
        """
        metadata = self.metadata
        if metadata:
            for key in ZONE_KEYS:
                value = metadata.get(key)
                if value:
                    return value
        for tag in self.tags:
            if tag.startswith(_ZONE_TAG) and len(tag) > len(_ZONE_TAG):
                return tag[len(_ZONE_TAG) :]
        return None

    def __str__(self) -> str:
        return self.address

    def __repr__(self) -> str:
        extras = "".join(
            f", {name}={getattr(self, name)!r}"
            for name, default in (("weight", 1), ("priority", 0), ("ttl", None), ("tags", ()))
            if getattr(self, name) != default
        )
        if self.metadata:
            extras += f", metadata={dict(self.metadata)!r}"
        return f"Instance(host={self.host!r}, port={self.port!r}{extras})"

    def __hash__(self) -> int:
        # Equal instances share host and port; metadata (a mapping) is not hashable.
        return hash((self.host, self.port))

    @classmethod
    def parse(cls, value: str, **attributes: Any) -> Instance:
        """Parse ``"host:port"`` (``"[v6addr]:port"`` for IPv6) into an ``Instance``.

        Extra keyword arguments (``weight=``, ``tags=``, ...) become its attributes.
        Raises ``InvalidInstanceError`` (a ``ValueError``) that quotes the bad value.
        """
        return parse_instance(value, cls, **attributes)


def parse_instance(value: object, cls: type[Instance] = Instance, **attributes: Any) -> Instance:
    """Parse an instance string; see ``Instance.parse``."""
    if not isinstance(value, str):
        raise InvalidInstanceError(value, f"expected a 'host:port' string, got {type(value).__name__}")
    text = value
    if text != text.strip():
        raise InvalidInstanceError(value, f"white space around it (did you mean {text.strip()!r}?)")
    scheme = _SCHEME.match(text)
    if scheme:
        raise InvalidInstanceError(value, f"looks like a URL; give 'host:port' without {scheme.group()!r}")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise InvalidInstanceError(value, "missing ']' after IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        if ":" not in host:
            raise InvalidInstanceError(value, f"{host!r} in brackets is not an IPv6 address")
        if not rest.startswith(":"):
            raise InvalidInstanceError(value, "missing ':port' after ']'")
        port = rest[1:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise InvalidInstanceError(value, "missing ':port'")
        if ":" in host:
            raise InvalidInstanceError(value, "IPv6 addresses need brackets, as in '[::1]:80'")
    if not port:
        raise InvalidInstanceError(value, "port is empty")
    return cls(_check_host(host, value), _check_port(port, value), **attributes)


# -- what registries (etcd, ZooKeeper, files) store for an instance ------------------------------


def parse_record(raw: bytes | str) -> Instance:
    """The instance a registry's record describes; ``InvalidInstanceError`` says what is wrong.

    A record is ``host:port`` (``[v6addr]:port`` for IPv6; surrounding white space ignored)
    or a JSON object: ``host`` (or Curator's ``address``) and ``port`` required (a port may
    be a string of digits); ``weight`` (default 1) and ``priority`` (default 0) non-negative
    integers; ``tags`` a list of strings; ``metadata`` an object of strings; ``name`` and
    any other member ignored.

    >>> parse_record(b'{"host": "10.0.0.7", "port": 8080, "weight": 5}').weight
    5
    >>> parse_record("10.0.0.7:8080")
    Instance(host='10.0.0.7', port=8080)
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInstanceError(raw, "the record is not UTF-8 text") from None
    text = raw.strip()
    if not text:
        raise InvalidInstanceError(raw, "the record is empty")
    if not text.startswith("{"):
        return parse_instance(text)
    try:
        document = json.loads(text)
    except ValueError as error:
        raise InvalidInstanceError(text, f"not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise InvalidInstanceError(text, "the JSON value is not an object")
    host = document.get("host", document.get("address"))
    if not isinstance(host, str) or not host.strip():
        raise InvalidInstanceError(text, "'host' is missing or not a string")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = document.get("port")
    if isinstance(port, str) and port.isascii() and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidInstanceError(text, "'port' is missing or not a number")
    tags = document.get("tags") or ()
    if not isinstance(tags, list | tuple) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidInstanceError(text, "'tags' must be a list of strings")
    metadata = document.get("metadata") or {}
    if not isinstance(metadata, Mapping) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidInstanceError(text, "'metadata' must be an object whose values are strings")
    attributes: dict[str, Any] = {"tags": tuple(tags), "metadata": metadata}
    for name, default in (("weight", 1), ("priority", 0)):
        number = document.get(name)
        number = default if number is None else number
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise InvalidInstanceError(text, f"{name!r} must be a non-negative integer, got {number!r}")
        attributes[name] = number
    try:
        return Instance(host, port, **attributes)
    except InvalidInstanceError as error:
        raise InvalidInstanceError(text, error.reason) from None


def format_record(instance: Instance, *, name: str | None = None, plain: bool = False) -> str:
    """The record ``parse_record`` reads back as ``instance``: a JSON object (defaults left out,
    keys sorted; ``name`` added if given), or with ``plain=True`` just ``host:port`` when the
    instance has nothing more to say.

    >>> format_record(Instance("10.0.0.7", 8080, weight=5))
    '{"host":"10.0.0.7","port":8080,"weight":5}'
    >>> format_record(Instance("10.0.0.7", 8080), plain=True)
    '10.0.0.7:8080'
    """
    extras = instance.weight != 1 or instance.priority != 0 or instance.tags or instance.metadata
    if plain and not extras and name is None:
        return instance.address
    document: dict[str, Any] = {"host": instance.host, "port": instance.port}
    if name is not None:
        document["name"] = name
    if instance.weight != 1:
        document["weight"] = instance.weight
    if instance.priority != 0:
        document["priority"] = instance.priority
    if instance.tags:
        document["tags"] = list(instance.tags)
    if instance.metadata:
        document["metadata"] = dict(instance.metadata)
    return json.dumps(document, sort_keys=True, separators=(",", ":"))
