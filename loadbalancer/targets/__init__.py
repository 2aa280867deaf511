"""Target strings: one string names any source, in gRPC's naming style (``scheme://authority/path?options``).

    from loadbalancer import RoundRobin, targets

    publisher = targets.publisher("dns:///_api._tcp.example.", factory)
    balancer = RoundRobin(publisher)
    with targets.registrar("etcd://127.0.0.1:2379/services/api", "10.0.0.5:8080"):
        serve()

========================================================  ==========================================
``static:///10.0.0.1:80,10.0.0.2:80``                     a fixed list
``dns:///_api._tcp.example.``, ``dns://10.0.0.53/...``     DNS SRV (the system's resolver, or this one)
``etcd://h1:2379,h2:2379/services/api``                   keys under an etcd prefix
``zk://h1:2181,h2:2181/services/api``                     children of a ZooKeeper path
``consul://127.0.0.1:8500/api?tag=v2&dc=dc1``             a Consul service's instances
``k8s:///api.default:http``                               a Kubernetes Service's EndpointSlices
``eureka://h1:8761,h2:8761/eureka/API``                   a Eureka application
``mdns:///_http._tcp.local.``                             DNS-SD services on the local network
``httppoll+https://seed/instances?service=api``           seeds answering a JSON list
``memory:///api``                                         the process's in-memory registry
========================================================  ==========================================

``parse(target)`` takes a string apart (``Target``: scheme, authority, path, options);
``publisher(target, factory=None, **options)`` builds the publisher it names (of
instances, or of endpoints with a factory); ``registrar(target, instance, **options)``
keeps an instance registered where the system takes registrations. Query options are
each scheme's (unknown ones are errors); keyword ``options`` go to the backend's
constructor as they are and win over the query. A malformed target raises
``loadbalancer.InvalidTargetError`` naming the part that is wrong; a scheme whose extra is
not installed raises ``loadbalancer.ExtraNotInstalledError`` with its ``pip install`` line.
"""

from __future__ import annotations

import threading
from typing import Any

from ..backend import Registrar
from ..errors import InvalidTargetError
from ..instance import Instance
from ..publisher import Publisher
from ._schemes import ALIASES, BUILTIN, Builder, Scheme
from ._target import Build, Target, parse

__all__ = ["Scheme", "Target", "add_scheme", "check", "parse", "publisher", "registrar", "schemes"]

_schemes: dict[str, Scheme] = {scheme.name: scheme for scheme in BUILTIN}
_lock = threading.Lock()


def schemes() -> list[Scheme]:
    """The schemes known, the built-in ones first."""
    return list(_schemes.values())


def add_scheme(
    name: str, publisher: Builder, registrar: Builder | None = None, *, summary: str = "", example: str = ""
) -> None:
    """Teach ``publisher()`` (and ``registrar()``) a scheme of your own.

    ``publisher(target, factory, options)`` gets the parsed ``Target``, the factory (or
    ``None``) and the keyword options as a dict; ``registrar(target, instance, options)``
    likewise. A built-in scheme cannot be replaced.
    """
    key = name.lower()
    if key in ALIASES or (key in _schemes and _schemes[key].adapter is not None):
        raise ValueError(f"scheme {name!r} is built in")
    probe = parse(f"{key}:x")  # the name must be a URI scheme
    with _lock:
        _schemes[probe.scheme] = Scheme(key, summary, example or f"{key}:///...", publisher=publisher,
                                        registrar=registrar)  # fmt: skip


def _scheme(target: Target) -> Scheme:
    scheme = _schemes.get(ALIASES.get(target.scheme, target.scheme))
    if scheme is None:
        known = ", ".join(sorted(_schemes))
        raise target.error(f"unknown scheme {target.scheme!r} (known: {known})")
    return scheme


def _parsed(target: str | Target) -> Target:
    return target if isinstance(target, Target) else parse(target)


def _plan(target: str | Target, subject: Any, options: dict[str, Any], *, register: bool = False) -> Any:
    """What ``target`` builds: a ``Build`` for the built-in schemes (options checked, nothing started yet)."""
    parsed = _parsed(target)
    scheme = _scheme(parsed)
    publisher_, registrar_ = scheme.builders()
    if not register:
        return publisher_(parsed, subject, options)
    if registrar_ is None:
        raise InvalidTargetError(parsed.text, scheme.why_not_register or f"{scheme.name}: cannot register instances")
    return registrar_(parsed, subject, options)


def publisher(target: str | Target, factory: Any = None, **options: Any) -> Publisher[Any]:
    """The publisher ``target`` names: of ``Instance`` objects, or of endpoints made by ``factory``."""
    plan = _plan(target, factory, options)
    built: Publisher[Any] = plan() if isinstance(plan, Build) else plan
    return built


def registrar(target: str | Target, instance: Instance | str, **options: Any) -> Registrar:
    """A registrar keeping ``instance`` registered at ``target`` (``register()`` or ``with`` starts it)."""
    plan = _plan(target, instance, options, register=True)
    built: Registrar = plan() if isinstance(plan, Build) else plan
    return built


def check(target: str | Target, *, register: bool = False, **options: Any) -> Target:
    """Check ``target`` and its options as ``publisher()`` (or ``registrar()``) would, without building anything.

    For a process that builds the publisher later, elsewhere (the proxy's workers): a bad
    target is refused before it starts. Returns the parsed target.
    """
    parsed = _parsed(target)
    _plan(parsed, "0.0.0.0:1" if register else None, options, register=register)
    return parsed
