"""``mdns:///_http._tcp.local.``: DNS-SD services on the local network (types comma-separated; ``?name=``)."""

from __future__ import annotations

from typing import Any

from .. import mdns
from ._adapter import TAG, TTL, Adapter
from ._target import Options, Target

__all__ = ["ADAPTER"]


def _types(target: Target, options: dict[str, Any], registering: bool) -> dict[str, Any]:
    if target.authority:
        raise target.error(f"mdns targets take no authority: write mdns:///{target.name or '_http._tcp.local.'}")
    types = [part for part in target.name.split(",") if part]
    if not types:
        raise target.error("no service type: write mdns:///_http._tcp.local.")
    if registering and len(types) > 1:
        raise target.error("an instance is registered under one service type")
    return {"service_type": types[0] if len(types) == 1 else types}


def _common(target: Target, query: Options) -> dict[str, Any]:
    return {"name": query.text("name"), "interfaces": query.text("interfaces")}


ADAPTER = Adapter(
    mdns.Publisher,
    _types,
    _common,
    {**TAG, "settle": ("settle", "seconds"), "interval": ("interval", "seconds"), "timeout": ("timeout", "seconds")},
    mdns.Registrar,
    TTL,
)
