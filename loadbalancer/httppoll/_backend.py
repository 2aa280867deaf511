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

Records that name another service than the one asked for are left out, and said so:
``httppoll_records_skipped`` names the seed, how many records and which services, once
each time that changes; a warning when nothing of the service was kept, so that a
``service=`` left at its default does not quietly publish nothing.
"""

from __future__ import annotations

import asyncio
import collections
import json
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .._deprecated import renamed, warn
from .._log import get_logger
from .._tls import TLS, legacy_tls, ssl_context
from .._util import describe, seconds
from ..backend import Backend as _Backend
from ..backend import Batch, Change, Listing
from ..errors import DiscoveryError, InvalidInstanceError
from ..instance import Instance, parse_record

__all__ = ["HEALTHY", "Backend", "SeedError", "parse_answer", "read_answer"]

# Statuses that take traffic (farp's and common health vocabularies); any other leaves the instance out.
HEALTHY = frozenset({"up", "passing", "healthy", "serving", "ok"})


class SeedError(DiscoveryError):
    """Every seed failed; ``errors`` maps each seed URL to what went wrong there."""

    def __init__(self, message: str, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__(message)


def _check_seed(url: str, scheme: str) -> str:
    """``url`` checked, with ``scheme`` put in front if it has none."""
    if isinstance(url, str) and url and "://" not in url:
        url = f"{scheme}://{url}"
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
    (the key; default ``host:port``), ``name`` (an instance of another service is left
    out: ``read_answer`` counts them), ``version`` (into the metadata as ``version``),
    ``status`` (absent, or one of ``up``, ``passing``, ``healthy``, ``serving``, ``ok``,
    to be published).

    >>> parse_answer([{"id": "a1", "name": "api", "address": "10.0.0.7", "port": 80, "version": "2"}], "api")
    {'a1': Instance(host='10.0.0.7', port=80, metadata={'version': '2'})}
    """
    return read_answer(document, service)[0]


def read_answer(document: Any, service: str) -> tuple[dict[str, Instance], dict[str, int]]:
    """``parse_answer``'s instances, and how many records were left out for naming another service, by name.

    >>> read_answer({"services": {"api": ["10.0.0.7:80"], "db": ["10.0.0.9:5432"]}}, "api")
    ({'10.0.0.7:80': Instance(host='10.0.0.7', port=80)}, {'db': 1})
    """
    items = document
    others: collections.Counter[str] = collections.Counter()
    if isinstance(document, dict):
        services = document.get("services")
        if isinstance(services, dict):
            items = services.get(service, [])
            others.update({str(name): len(listed) for name, listed in services.items()
                           if name != service and isinstance(listed, list)})  # fmt: skip
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
            others[str(name)] += 1
            continue
        status = item.get("status")
        if status is not None and str(status).lower() not in HEALTHY:
            continue
        instance = _instance(item)
        key = item.get("id")
        found[str(key) if key is not None else instance.address] = instance
    return found, {name: others[name] for name in sorted(others) if others[name]}


def _instance(item: dict[str, Any]) -> Instance:
    """One record object: the shared record format, with farp's ``version`` put into the metadata."""
    instance = parse_record(json.dumps(item))
    version = item.get("version")
    if version is not None and "version" not in instance.metadata:
        metadata = {**instance.metadata, "version": str(version)}
        instance = Instance(instance.host, instance.port, instance.weight, instance.priority,
                            tags=instance.tags, metadata=metadata)  # fmt: skip
    return instance


@dataclass
class _Seed:
    """What one seed URL last said: its validators and its instances."""

    etag: str | None = None
    modified: str | None = None
    instances: Mapping[str, Instance] = field(default_factory=dict)
    skipping: tuple[tuple[str, ...], bool] = ((), False)  # other services' records left out; whether none was kept
    answered: bool = False
    failing: bool = False


@dataclass(frozen=True)
class Poll:
    """A watch's cursor: the merged set reported, and when it was read (monotonic seconds)."""

    instances: Mapping[str, Instance]
    at: float


class Backend(_Backend):
    """Seed URLs as a registry: ``service`` is put into each seed where it says ``{service}``.

    - ``endpoints``: the seed URLs (a comma-separated string or a sequence); a URL without
      a scheme is asked over https when ``tls=`` is given, else over http;
    - ``interval``: seconds between polls; ``timeout``: seconds per request;
    - ``headers``: sent with every request (an ``Authorization``, say);
    - ``tls``: a ``loadbalancer.TLSConfig`` (CA, client certificate), an ``ssl.SSLContext``,
      ``True`` (the system's CAs) or ``None`` (``https://`` seeds get the system's CAs).

    >>> Backend("10.0.0.1/peers.json,https://10.0.0.2/peers.json").endpoints
    ('http://10.0.0.1/peers.json', 'https://10.0.0.2/peers.json')
    """

    name = "httppoll"

    @renamed(seeds="endpoints", verify=legacy_tls)
    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        interval: float | timedelta = 5.0,
        timeout: float | timedelta = 5.0,
        headers: Mapping[str, str] | None = None,
        tls: TLS = None,
        logger: Any = None,
    ) -> None:
        items = [s.strip() for s in endpoints.split(",")] if isinstance(endpoints, str) else list(endpoints)
        if not items:
            raise ValueError(f"endpoints must name at least one seed URL, got {endpoints!r}")
        context = ssl_context(tls)  # checks the CA and certificate files now: errors at construction
        self.endpoints = tuple(_check_seed(s, "http" if context is None else "https") for s in items)
        self.poll_interval = seconds(interval, "interval", allow_zero=False)
        self.log = get_logger(logger, name=__name__)
        self._timeout = seconds(timeout, "timeout", allow_zero=False)
        self._headers = {"Accept": "application/json", **(headers or {})}
        self._verify: bool | ssl.SSLContext = True if context is None else context
        self._pool: httpx.AsyncClient | None = None
        self._state: dict[tuple[str, str], _Seed] = {}  # by URL and service: one URL may serve several
        self.requests = {"200": 0, "304": 0, "failed": 0}

    @property
    def seeds(self) -> tuple[str, ...]:
        """The old name of ``endpoints`` (deprecated)."""
        warn("httppoll.Backend.seeds is deprecated: read .endpoints", stacklevel=3)
        return self.endpoints

    def _http(self) -> httpx.AsyncClient:
        if self._pool is None:
            self._pool = httpx.AsyncClient(timeout=self._timeout, headers=self._headers, verify=self._verify)
        return self._pool

    def urls(self, service: str) -> list[str]:
        """The seed URLs asked for ``service``."""
        return [s.replace("{service}", quote(service, safe="")) for s in self.endpoints]

    async def _ask(self, url: str, service: str, templated: bool) -> bool:
        """Poll one seed; whether its answer changed. Raises what went wrong (its last answer stays)."""
        seed = self._state.setdefault((url, service), _Seed())
        headers = {}
        if seed.etag:
            headers["If-None-Match"] = seed.etag
        if seed.modified:
            headers["If-Modified-Since"] = seed.modified
        response = await self._http().get(url, headers=headers)
        if response.status_code == 304 and seed.answered:
            self.requests["304"] += 1
            return False
        others: dict[str, int] = {}
        if response.status_code == 404 and templated:
            instances: dict[str, Instance] = {}  # this seed does not know the service
        elif response.status_code != 200:
            raise DiscoveryError(f"HTTP {response.status_code}")
        else:
            try:
                instances, others = read_answer(response.json(), service)
            except ValueError as error:  # InvalidInstanceError included
                raise DiscoveryError(f"not a list of instances as documented: {error}") from None
        self._note_skipped(seed, url, service, others, kept=len(instances))
        self.requests["200"] += 1
        seed.etag = response.headers.get("ETag")
        seed.modified = response.headers.get("Last-Modified")
        changed = not seed.answered or instances != seed.instances
        seed.instances, seed.answered = instances, True
        return changed

    def _note_skipped(self, seed: _Seed, url: str, service: str, others: dict[str, int], kept: int) -> None:
        """Say which other services' records a seed's answer left out, once each time that changes.

        A warning when nothing of ``service`` was kept (a mistaken ``service=`` looks just
        like that); where a seed lists several services and some of ``service``, an info.
        """
        situation = (tuple(others), not kept)
        if situation == seed.skipping:
            return
        was, seed.skipping = seed.skipping, situation
        if not others:
            if was[0]:
                self.log.info("httppoll_records_skipped_none", seed=url, service=service)
            return
        log = self.log.warning if not kept else self.log.info
        log(
            "httppoll_records_skipped",
            seed=url,
            service=service,
            skipped=sum(others.values()),
            named=others,
            kept=kept,
            reason=f"records naming another service than {service!r} are left out",
        )

    async def _poll(self, service: str) -> bool:
        """Ask every seed at once; whether any answer changed. Raises ``SeedError`` when all failed."""
        urls = self.urls(service)
        templated = any("{service}" in s for s in self.endpoints)
        results = await asyncio.gather(*(self._ask(u, service, templated) for u in urls), return_exceptions=True)
        errors: dict[str, str] = {}
        for url, result in zip(urls, results, strict=True):
            seed = self._state[url, service]
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
            for key, instance in self._state[url, service].instances.items():
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
        return f"httppoll.Backend({','.join(self.endpoints)!r})"
