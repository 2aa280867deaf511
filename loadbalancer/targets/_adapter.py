"""``Adapter``: how a scheme's targets become its backend's publisher and registrar, said as data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..instance import Instance
from ._target import Build, Kind, Options, Target, drop_empty

__all__ = ["TAG", "TTL", "Adapter", "Readers"]

Readers = Mapping[str, tuple[str, Kind]]  # a query option -> (the constructor's keyword, how to read it)
TAG: Readers = MappingProxyType({"tag": ("tags", "text")})  # what every publisher takes: a filter
TTL: Readers = MappingProxyType({"ttl": ("ttl", "seconds")})  # what every registrar takes: its lease
Subject = Callable[[Target, dict[str, Any], bool], dict[str, Any]]
Common = Callable[[Target, Options], dict[str, Any]]


def _nothing(target: Target, query: Options) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Adapter:
    """A scheme, as data: the backend's classes, what the target names, and the query options each reads.

    - ``subject(target, options, registering)``: the constructor's leading arguments, by name
      (``{"prefix": "/services/api"}``); it may take what it needs out of the keyword ``options``;
    - ``common(target, query)``: the keywords both the publisher and the registrar take
      (servers, TLS, timeouts), read from the target and its query;
    - ``publishing`` / ``registering``: the query options only one of them takes.
    """

    publisher_class: Callable[..., Any]
    subject: Subject
    common: Common = _nothing
    publishing: Readers = field(default_factory=lambda: TAG)
    registrar_class: Callable[..., Any] | None = None
    registering: Readers = field(default_factory=lambda: TTL)

    def publisher(self, target: Target, factory: Any, options: dict[str, Any]) -> Build:
        return self._plan(self.publisher_class, target, options, self.publishing, False, factory=factory)

    def registrar(self, target: Target, instance: Instance | str, options: dict[str, Any]) -> Build:
        assert self.registrar_class is not None
        return self._plan(self.registrar_class, target, options, self.registering, True, instance=instance)

    def _plan(
        self,
        make: Callable[..., Any],
        target: Target,
        options: dict[str, Any],
        readers: Readers,
        registering: bool,
        **second: Any,
    ) -> Build:
        options = dict(options)
        named = self.subject(target, options, registering)
        query = Options(target)
        given = self.common(target, query)
        for key, (keyword, kind) in readers.items():
            given[keyword] = query.read(key, kind)
        query.finish()
        return Build(make, (), {**named, **second, **drop_empty(given), **options})
