"""The schemes a target may name: the table, and how each one's adapter is loaded."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ExtraNotInstalledError

__all__ = ["BUILTIN", "Builder", "Scheme"]

Builder = Callable[..., Any]


@dataclass(frozen=True)
class Scheme:
    """One scheme: what it names, an example, the extra it needs, and its builders (or the module holding them)."""

    name: str
    summary: str
    example: str
    extra: str | None = None
    adapter: str | None = None  # a module of this package holding its ``ADAPTER``
    publisher: Builder | None = None
    registrar: Builder | None = None
    why_not_register: str = ""  # why the scheme has no registrar, said to whoever tries

    def builders(self) -> tuple[Builder, Builder | None]:
        """``(publisher, registrar)``; an adapter whose extra is missing raises ``ExtraNotInstalledError``."""
        if self.publisher is not None:
            return self.publisher, self.registrar
        assert self.adapter is not None
        try:
            module = importlib.import_module(f"{__package__}.{self.adapter}")
        except ExtraNotInstalledError:
            raise
        except ImportError as error:
            if self.extra is None:
                raise
            raise ExtraNotInstalledError(f"the {self.name}: scheme", self.extra, error.name or str(error)) from error
        adapter = module.ADAPTER
        return adapter.publisher, adapter.registrar if adapter.registrar_class is not None else None


_NO_DNS = (
    "cannot register with DNS SRV: the records are the zone's, changed by its administrator"
    " (for example with an RFC 2136 update: nsupdate); register with etcd, zk or consul instead"
)
_NO_K8S = (
    "cannot register with Kubernetes: a Service's EndpointSlices are written by the cluster's"
    " controllers; run the instance as a pod that the Service selects"
)
_NO_STATIC = "cannot register with a static list: it holds only what the target gives"
_NO_SEEDS = "cannot register with HTTP seeds: each seed owns the list it answers"

BUILTIN = (
    Scheme("static", "a fixed list", "static:///10.0.0.1:80,10.0.0.2:80", adapter="_static",
           why_not_register=_NO_STATIC),
    Scheme("dns", "DNS SRV records", "dns:///_api._tcp.example. or dns://10.0.0.53/_api._tcp.example.",
           adapter="_dns", why_not_register=_NO_DNS),
    Scheme("etcd", "keys under an etcd prefix", "etcd://10.0.0.1:2379,10.0.0.2:2379/services/api",
           extra="etcd", adapter="_etcd"),
    Scheme("zk", "children of a ZooKeeper path", "zk://10.0.0.1:2181,10.0.0.2:2181/services/api",
           extra="zookeeper", adapter="_zookeeper"),
    Scheme("consul", "a Consul service's instances", "consul://127.0.0.1:8500/api?tag=v2&dc=dc1",
           extra="consul", adapter="_consul"),
    Scheme("k8s", "a Kubernetes Service's EndpointSlices", "k8s:///api.default:http",
           extra="kubernetes", adapter="_kubernetes", why_not_register=_NO_K8S),
    Scheme("eureka", "a Eureka application", "eureka://10.0.0.1:8761,10.0.0.2:8761/eureka/API",
           extra="eureka", adapter="_eureka"),
    Scheme("mdns", "DNS-SD services on the local network", "mdns:///_http._tcp.local.",
           extra="mdns", adapter="_mdns"),
    Scheme("httppoll+http", "seeds answering a JSON list", "httppoll+http://10.0.0.1:8080/instances",
           extra="httppoll", adapter="_httppoll", why_not_register=_NO_SEEDS),
    Scheme("httppoll+https", "the same over https", "httppoll+https://seeds.example/instances?service=api",
           extra="httppoll", adapter="_httppoll", why_not_register=_NO_SEEDS),
    Scheme("memory", "the process's in-memory registry", "memory:///api", adapter="_memory"),
)  # fmt: skip

ALIASES = {"zookeeper": "zk", "kubernetes": "k8s"}  # the names the command line has always used
