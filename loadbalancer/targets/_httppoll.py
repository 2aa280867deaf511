"""``httppoll+https://seed1,seed2/instances?service=api``: seeds answering a JSON list, polled."""

from __future__ import annotations

from typing import Any

from .. import httppoll
from ._adapter import TAG, Adapter
from ._target import Options, Target, tls_config

__all__ = ["ADAPTER"]


def _seeds(target: Target, options: dict[str, Any], registering: bool) -> dict[str, Any]:
    if not target.hosts:
        raise target.error("no seed: write httppoll+https://seed.example/instances")
    scheme = target.scheme.partition("+")[2]
    userinfo = target.authority.rpartition("@")[0]
    credentials = f"{userinfo}@" if userinfo else ""
    built = [f"{scheme}://{credentials}{host}{target.path}" for host in target.hosts]
    return {"endpoints": options.pop("endpoints", None) or built}


def _common(target: Target, query: Options) -> dict[str, Any]:
    tls = tls_config(query)
    if tls is not None and target.scheme == "httppoll+http":
        raise target.error("TLS options on a plain-http seed: write httppoll+https://")
    return {"tls": tls, "timeout": query.seconds("timeout")}


ADAPTER = Adapter(
    httppoll.Publisher,
    _seeds,
    _common,
    {**TAG, "service": ("service", "text"), "interval": ("interval", "seconds")},
)
