"""``eureka://h1:8761,h2:8761/eureka/APP``: a Eureka application; the path before the app is the servers' base."""

from __future__ import annotations

from typing import Any

from .. import eureka
from ._adapter import TAG, TTL, Adapter
from ._target import Options, Target, tls_config

__all__ = ["ADAPTER"]

_DEFAULT_SERVER = "127.0.0.1:8761"


def _app(target: Target, options: dict[str, Any], registering: bool) -> dict[str, Any]:
    app = target.path.rpartition("/")[2]
    if not app:
        raise target.error("no application: write eureka://127.0.0.1:8761/eureka/API")
    return {"app": app}


def _common(target: Target, query: Options) -> dict[str, Any]:
    base = target.path.rpartition("/")[0]
    tls = tls_config(query)
    scheme = "https" if tls is not None else "http"
    userinfo = target.authority.rpartition("@")[0]
    credentials = f"{userinfo}@" if userinfo else ""
    servers = target.hosts or [_DEFAULT_SERVER]
    endpoints = [f"{scheme}://{credentials}{server}{base}/" for server in servers]
    return {"endpoints": endpoints, "timeout": query.seconds("timeout"), "tls": tls}


ADAPTER = Adapter(
    eureka.Publisher,
    _app,
    _common,
    {**TAG, "interval": ("interval", "seconds")},
    eureka.Registrar,
    {**TTL, "id": ("instance_id", "text")},
)
