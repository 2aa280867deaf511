"""Service instances: where an endpoint lives, and what discovery said about it."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import InvalidInstanceError

__all__ = ["Instance", "parse_instance"]

# RFC 1123 labels, plus "_" which service names (RFC 2782) and many internal zones use.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_EMPTY: Mapping[str, str] = MappingProxyType({})


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
        if not port.isascii() or not port.isdigit():
            raise InvalidInstanceError(value, "port is not a number")
        port = int(port)
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
    text = value.strip()
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
