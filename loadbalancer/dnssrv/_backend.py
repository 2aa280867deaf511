"""``dnssrv.Backend``: DNS SRV records on the backend protocol, polled (DNS pushes nothing).

DNS answers who provides a service; it takes no registrations (dynamic updates are a zone
administrator's business). ``list`` looks a name up through dnspython's resolver;
``revalidate`` asks the server of the last answer again with one UDP query (see
``_probe``), which is what most polls cost: a generic ``loadbalancer.backend.Publisher``
over this backend is a complete DNS SRV publisher (``dnssrv.Publisher`` is one).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from datetime import timedelta
from typing import Any

import dns.name
import dns.resolver

from .._deprecated import renamed
from .._log import get_logger
from .._util import describe, seconds
from ..backend import Backend as _Backend
from ..backend import Listing
from ..instance import Instance
from ._lookup import Problem, Result, SrvLookup, check_name
from ._probe import Answer, Probe
from ._resolver import DnsError, NameNotFoundError, async_resolver, servers

__all__ = ["Backend"]

_NAMES_KEPT = 1024  # SRV names whose state (probe, first-seen instances) a backend keeps


class Backend(_Backend):
    """SRV records as a registry: service ``name`` is ``_name._protocol.domain.`` (or an SRV name as given).

    - ``interval``: seconds between polls (``poll_interval``, 5 s);
    - ``timeout``: seconds one lookup may take, retries included (dnspython's
      ``lifetime``); default: the resolver's ``lifetime`` (dnspython's default: 5 s);
    - ``resolver``: a ``dns.resolver.Resolver`` (its settings are copied) or a
      ``dns.asyncresolver.Resolver`` (used as is, so later changes to it count); default:
      the system's configuration;
    - ``resolve_targets``: one instance per A/AAAA address of each target, host = the address.

    Instances are keyed by (priority, -weight, host, port): in key order, the lowest
    priority and the heaviest come first. A failed lookup raises ``DnsError``; a name that
    does not exist (NXDOMAIN) raises ``NameNotFoundError`` (logged once as the warning
    ``srv_name_not_found``); an answer without records lists no instances.

    >>> backend = Backend("svc.example.", resolver=dns.resolver.Resolver(configure=False))
    >>> backend.name_of("api").to_text()
    '_api._tcp.svc.example.'
    """

    name = "dns"

    @renamed(ttl="interval")
    def __init__(
        self,
        domain: str | None = None,
        *,
        protocol: str = "tcp",
        interval: float | timedelta = 5.0,
        timeout: float | timedelta | None = None,
        resolver: dns.resolver.BaseResolver | None = None,
        resolve_targets: bool = False,
        logger: Any = None,
    ) -> None:
        self._domain = None if domain is None else check_name(domain)
        if protocol not in ("tcp", "udp"):
            raise ValueError(f"protocol must be 'tcp' or 'udp', got {protocol!r}")
        self._protocol = protocol
        self.poll_interval = seconds(interval, "interval", allow_zero=False)
        self._timeout = None if timeout is None else seconds(timeout, "timeout", allow_zero=False)
        self._resolver = async_resolver(resolver)
        self._resolve_targets = bool(resolve_targets)
        self.log = get_logger(logger, name=__name__)
        self._names: dict[str, _Followed] = {}

    def name_of(self, service: str) -> dns.name.Name:
        """The SRV name asked for ``service``: ``_api._tcp.<domain>.``, or ``service`` itself if it is one."""
        if service.startswith("_") or self._domain is None:
            return check_name(service)
        return check_name(f"_{service}._{self._protocol}.{self._domain.to_text()}")

    async def list(self, service: str) -> Listing:
        followed = self._followed(service)
        lifetime = self._lifetime(followed.probe.take_spent())
        try:
            result = await followed.lookup.lookup(lifetime, probe=followed.probe.query is not None)
        except NameNotFoundError as error:
            if not followed.missing:  # once, when the name goes missing; the publisher logs each poll
                followed.missing = True
                self.log.warning("srv_name_not_found", service=followed.name, server=error.servers, error=str(error))
            raise
        except DnsError as error:
            self.log.info(
                "srv_lookup_failed",
                service=followed.name,
                server=servers(self._resolver),
                error=describe(error.__cause__ or error),
            )
            raise
        except Exception as error:  # a bug here or below: still, stale beats empty
            self.log.error("srv_lookup_crashed", service=followed.name, error=describe(error), exc_info=error)
            raise followed.lookup.error(error) from error
        followed.missing = False
        instances = followed.settle(result, self.log)
        return Listing(instances, followed.probe.answer(result.key, result.server, instances), result.ttl)

    def revalidate(
        self, service: str, cursor: Any, done: Callable[[Listing | None], object]
    ) -> Callable[[], object] | None:
        """One UDP query to the server of the answer at ``cursor``; ``None`` if it cannot be asked again."""
        return cursor.probe.start(cursor, done) if isinstance(cursor, Answer) else None

    def _lifetime(self, spent: float) -> float:
        """Seconds a lookup may take: the timeout less what a probe just spent, but at least one try's."""
        lifetime = self._resolver.lifetime if self._timeout is None else self._timeout
        return max(lifetime - spent, min(self._resolver.timeout, lifetime))

    def _followed(self, service: str) -> _Followed:
        followed = self._names.get(service)
        if followed is None:
            qname = self.name_of(service)
            if len(self._names) >= _NAMES_KEPT:
                del self._names[next(iter(self._names))]
            followed = self._names[service] = _Followed(
                SrvLookup(self._resolver, qname, self._resolve_targets),
                Probe(self._resolver, qname, glue=self._resolve_targets, timeout=self._timeout),
            )
        return followed

    def __repr__(self) -> str:
        return f"dnssrv.Backend({None if self._domain is None else self._domain.to_text()!r})"


class _Followed:
    """What a backend keeps of one SRV name between lookups: its probe, its instances, what was logged."""

    __slots__ = ("applied", "instances", "lookup", "missing", "name", "probe", "problems")

    def __init__(self, lookup: SrvLookup, probe: Probe) -> None:
        self.lookup = lookup
        self.probe = probe
        self.name = lookup.qname.to_text()
        self.applied: Result | None = None  # the last good lookup
        self.instances: dict[Hashable, Instance] = {}
        self.problems: tuple[Problem, ...] = ()  # records skipped, logged once
        self.missing = False  # the name was not found (NXDOMAIN) at the last lookup: logged once

    def settle(self, result: Result, log: Any) -> dict[Hashable, Instance]:
        """The instances of ``result`` by key; a record whose TTL alone changed keeps its ``Instance``.

        A TTL that changes on its own (a caching resolver counting down) is no change: an
        instance keeps the ``ttl`` it had when its record was first seen.
        """
        before = self.applied
        self.applied = result
        if result.problems != self.problems:  # logged once, not on every poll
            for event, target, port, reason in sorted(set(result.problems) - set(self.problems)):
                log.warning(event, service=self.name, target=target, port=port, reason=reason)
            self.problems = result.problems
        if before is None or result.key != before.key:
            self.probe.forget()
            if not result.instances and result.key.records:
                log.info("srv_service_not_available", service=self.name, reason="target is '.'")
        previous = self.instances
        self.instances = {}
        for instance in result.instances:
            kept = previous.get((instance.priority, -instance.weight, instance.host, instance.port), instance)
            self.instances[(kept.priority, -kept.weight, kept.host, kept.port)] = kept
        return self.instances
