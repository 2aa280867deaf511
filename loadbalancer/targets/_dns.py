"""``dns:///_api._tcp.example.`` (the system's resolver) or ``dns://10.0.0.53:53/_api._tcp.example.``."""

from __future__ import annotations

from typing import Any

import dns.resolver

from .. import dnssrv
from ._adapter import TAG, Adapter
from ._target import Target, host_port, ip_address

__all__ = ["ADAPTER"]


def _name(target: Target, options: dict[str, Any], registering: bool) -> dict[str, Any]:
    if not target.name:
        raise target.error("no SRV name: write dns:///_api._tcp.example.")
    if not target.authority:
        return {"name": target.name}
    if "resolver" in options:
        raise target.error("the nameserver is named twice: in the target and as resolver=")
    return {"name": target.name, "resolver": _resolver(target)}


def _resolver(target: Target) -> dns.resolver.Resolver:
    """A resolver asking only the target's nameserver (an IP address, port 53 by default)."""
    if target.userinfo is not None or len(target.hosts) != 1:
        raise target.error(f"nameserver {target.authority!r}: give one IP address[:port]")
    host, port = host_port(target, target.hosts[0], 53, "nameserver")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [ip_address(target, host, "nameserver")]
    resolver.port = port
    return resolver


ADAPTER = Adapter(
    dnssrv.Publisher,
    _name,
    publishing={
        **TAG,
        "interval": ("interval", "seconds"),
        "timeout": ("timeout", "seconds"),
        "follow_ttl": ("follow_ttl", "flag"),
        "resolve_targets": ("resolve_targets", "flag"),
    },
)
