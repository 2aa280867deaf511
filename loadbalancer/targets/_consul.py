"""``consul://127.0.0.1:8500/api?tag=v2&passing=true&dc=dc1``: a Consul service's instances.

Where the target is silent, ``consul.Client`` reads what Consul's own CLI reads:
``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``, ``CONSUL_HTTP_SSL``, ``CONSUL_CACERT``,
``CONSUL_CLIENT_CERT`` and ``CONSUL_CLIENT_KEY``.
"""

from __future__ import annotations

from typing import Any

from .. import consul
from ._adapter import TAG, TTL, Adapter
from ._target import Options, Target, tls_config

__all__ = ["ADAPTER"]


def _service(target: Target, options: dict[str, Any], registering: bool) -> dict[str, Any]:
    name = target.name
    if not name or "/" in name:
        raise target.error(f"service {name!r}: write one service name, as in consul://127.0.0.1:8500/api")
    return {"service": name}


def _common(target: Target, query: Options) -> dict[str, Any]:
    if target.userinfo is not None:
        raise target.error("Consul targets take no user:password@ (give the ACL token as ?token= or CONSUL_HTTP_TOKEN)")
    if len(target.hosts) > 1:
        raise target.error(f"{target.authority!r}: a Consul client talks to one agent; give one host:port")
    return {
        "endpoints": target.hosts[0] if target.hosts else None,
        "datacenter": query.text("dc"),
        "token": query.text("token"),
        "timeout": query.seconds("timeout"),
        "tls": tls_config(query),
    }


ADAPTER = Adapter(
    consul.Publisher,
    _service,
    _common,
    {**TAG, "passing": ("passing_only", "flag"), "wait": ("wait", "seconds")},
    consul.Registrar,
    {**TTL, "id": ("service_id", "text")},
)
