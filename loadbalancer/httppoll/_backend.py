"""``httppoll.Backend``: seed URLs that answer with a JSON list of instances, polled with ETags.

Each seed is asked with ``If-None-Match`` (its last ``ETag``) and ``If-Modified-Since``
(its last ``Last-Modified``): a ``304 Not Modified`` costs one small request and no
parsing. The seeds' answers are merged (the union by instance id; where seeds disagree
about one id, the seed listed first wins). A seed that fails keeps its last good answer in
the merge (logged); only when every seed fails does the poll raise, so that the publisher
keeps its set (stale) and backs off.

Watching is a poll loop of the backend's own rather than the generic publisher's polling:
it yields only what changed (by instance id) and nothing at all when every seed said
``304``, so an unchanged answer never rebuilds or re-diffs the set; its cursor is the
merged set it has reported.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .._log import get_logger
from .._util import describe
from ..backend import Backend as _Backend
from ..backend import Batch, Change, Listing
from ..errors import DiscoveryError, InvalidInstanceError
from ..instance import Instance, parse_record

__all__ = ["HEALTHY", "Backend", "SeedError", "parse_answer"]

# Statuses that take traffic (farp's and common health vocabularies); any other leaves the instance out.
HEALTHY = frozenset({"up", "passing", "healthy", "serving", "ok"})


class SeedError(DiscoveryError):
    """Every seed failed; ``errors`` maps each seed URL to what went wrong there."""

    def __init__(self, message: str, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__(message)


def _check_seed(url: str) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid seed URL {url!r}: give an http:// or https:// URL")
    return url


def parse_answer(document: Any, service: str) -> dict[str, Instance]:
    """A seed's JSON answer -> instances by id; ``InvalidInstanceError`` / ``ValueError`` name what is wrong.

    The answer is a list of instances, or an object holding one as ``"instances"``, or
    ``{"services": {"name": [...]}}``. An instance is ``"host:port"`` or an object in the
    record format of ``loadbalancer.instance.parse_record`` (``host`` or ``address``,
    ``port``, ``weight``, ``priority``, ``tags``, ``metadata``) with farp's fields: ``id``
    (the key; default ``host:port``), ``name`` (an instance of another service is skipped),
    ``version`` (into the metadata as ``version``), ``status`` (absent, or one of ``up``,
    ``passing``, ``healthy``, ``serving``, ``ok``, to be published).

    >>> parse_answer([{"id": "a1", "name": "api", "address": "10.0.0.7", "port": 80, "version": "2"}], "api")
    {'a1': Instance(host='10.0.0.7', port=80, metadata={'version': '2'})}
    """
    items = document
    if isinstance(document, dict):
        if isinstance(document.get("services"), dict):
            items = document["services"].get(service, [])
        elif "instances" in document:
            items = document["instances"]
    if not isinstance(items, list):
        raise ValueError(f"expected a JSON list of instances, got {json.dumps(document)[:200]}")
    found: dict[str, Instance] = {}
    for item in items:
        if isinstance(item, str):
            instance = parse_record(item)
            found[instance.address] = instance
            continue
        if not isinstance(item, dict):
            raise InvalidInstanceError(item, "an instance is a 'host:port' string or a JSON object")
        name = item.get("name")
        if name is not None and name != service:
            continue
        status = item.get("status")
        if status is not None and str(status).lower() not in HEALTHY:
            continue
        instance = parse_record(json.dumps(item))
        version = item.get("version")
        if version is not None and "version" not in instance.metadata:
            metadata = {**instance.metadata, "version": str(version)}
            instance = Instance(instance.host, instance.port, instance.weight, instance.priority,
                                tags=instance.tags, metadata=metadata)  # fmt: skip
        key = item.get("id")
        found[str(key) if key is not None else instance.address] = instance
    return found


@dataclass
class _Seed:
    """What one seed URL last said: its validators and its instances."""

    etag: str | None = None
    modified: str | None = None
    instances: Mapping[str, Instance] = field(default_factory=dict)
    answered: bool = False
    failing: bool = False


@dataclass(frozen=True)
class Poll:
    """A watch's cursor: the merged set reported, and when it was read (monotonic seconds)."""

    instances: Mapping[str, Instance]
    at: float


class Backend(_Backend):
    """Seed URLs as a registry: ``service`` is put into each seed where it says ``{service}``.

    ``interval``: seconds between polls; ``timeout`` per request; ``headers`` sent with
    every request (an ``Authorization``, say); ``verify`` for ``https://`` seeds.
    """

    name = "httppoll"

    def __init__(
        self,
        seeds: str | Sequence[str],
        *,
        interval: float = 5.0,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        verify: bool | str | ssl.SSLContext = True,
        logger: Any = None,
    ) -> None:
        items = [s.strip() for s in seeds.split(",")] if isinstance(seeds, str) else list(seeds)
        if not items:
            raise ValueError(f"seeds must name at least one URL, got {seeds!r}")
        self.seeds = tuple(_check_seed(s) for s in items)
        self.poll_interval = interval
        self.log = get_logger(logger, name=__name__)
        self._timeout = timeout
        self._headers = {"Accept": "application/json", **(headers or {})}
        self._verify = verify
        self._pool: httpx.AsyncClient | None = None
        self._state: dict[str, _Seed] = {}  # by URL, the service put in
        self.requests = {"200": 0, "304": 0, "failed": 0}

    def _http(self) -> httpx.AsyncClient:
        if self._pool is None:
            self._pool = httpx.AsyncClient(timeout=self._timeout, headers=self._headers, verify=self._verify)
        return self._pool

    def urls(self, service: str) -> list[str]:
        """The seed URLs asked for ``service``."""
        return [s.replace("{service}", quote(service, safe="")) for s in self.seeds]

    async def _ask(self, url: str, service: str, templated: bool) -> bool:
        """Poll one seed; whether its answer changed. Raises what went wrong (its last answer stays)."""
        seed = self._state.setdefault(url, _Seed())
        headers = {}
        if seed.etag:
            headers["If-None-Match"] = seed.etag
        if seed.modified:
            headers["If-Modified-Since"] = seed.modified
        response = await self._http().get(url, headers=headers)
        if response.status_code == 304 and seed.answered:
            self.requests["304"] += 1
            return False
        if response.status_code == 404 and templated:
            instances: dict[str, Instance] = {}  # this seed does not know the service
        elif response.status_code != 200:
            raise DiscoveryError(f"HTTP {response.status_code}")
        else:
            try:
                instances = parse_answer(response.json(), service)
            except ValueError as error:  # InvalidInstanceError included
                raise DiscoveryError(f"not a list of instances as documented: {error}") from None
        self.requests["200"] += 1
        seed.etag = response.headers.get("ETag")
        seed.modified = response.headers.get("Last-Modified")
        changed = not seed.answered or instances != seed.instances
        seed.instances, seed.answered = instances, True
        return changed

    async def _poll(self, service: str) -> bool:
        """Ask every seed at once; whether any answer changed. Raises ``SeedError`` when all failed."""
        urls = self.urls(service)
        templated = any("{service}" in s for s in self.seeds)
        results = await asyncio.gather(*(self._ask(u, service, templated) for u in urls), return_exceptions=True)
        errors: dict[str, str] = {}
        for url, result in zip(urls, results, strict=True):
            seed = self._state[url]
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                errors[url] = describe(result)
                self.requests["failed"] += 1
                if not seed.failing:
                    seed.failing = True
                    self.log.warning("httppoll_seed_failed", seed=url, error=errors[url], kept=len(seed.instances))
            elif seed.failing:
                seed.failing = False
                self.log.info("httppoll_seed_recovered", seed=url)
        if len(errors) == len(urls):
            listed = "; ".join(f"{u}: {e}" for u, e in errors.items())
            raise SeedError(f"httppoll: no seed answered for {service!r} ({listed})", errors)
        return any(r is True for r in results)

    def _merged(self, service: str) -> dict[str, Instance]:
        merged: dict[str, Instance] = {}
        for url in self.urls(service):
            for key, instance in self._state[url].instances.items():
                merged.setdefault(key, instance)  # the seed listed first wins
        return merged

    async def list(self, service: str) -> Listing:
        await self._poll(service)
        merged: dict[Any, Instance] = self._merged(service)
        return Listing(merged, Poll(MappingProxyType(merged), time.monotonic()))

    async def watch(self, service: str, cursor: Any) -> AsyncIterator[Batch]:
        """Polls every ``interval`` seconds; yields the changes by id (an empty batch when nothing changed)."""
        last = cursor if isinstance(cursor, Poll) else Poll({}, 0.0)
        while True:
            delay = last.at + self.poll_interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            changed = await self._poll(service)
            now = time.monotonic()
            if not changed:
                last = Poll(last.instances, now)
                yield Batch((), last)
                continue
            merged = self._merged(service)
            before = last.instances
            changes = [Change(key, None) for key in before.keys() - merged.keys()]
            changes.extend(
                Change(key, instance)
                for key, instance in merged.items()
                if (old := before.get(key)) is None or old != instance or old.metadata != instance.metadata
            )
            last = Poll(MappingProxyType(merged), now)
            yield Batch(changes, last)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    def __repr__(self) -> str:
        return f"httppoll.Backend({','.join(self.seeds)!r})"
