"""``dnssrv.Publisher``: go-kit's ``dnssrv.NewPublisher``, polling an SRV name with dnspython."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, TypeGuard

import dns.asyncresolver
import dns.exception
import dns.inet
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset
import tenacity

from .._backoff import Backoff
from .._discovery import DiscoveryPublisher as _Base
from .._runtime import RUNTIME
from .._typing import E
from .._util import describe, seconds
from ..errors import DiscoveryError, InvalidInstanceError
from ..instance import Instance
from ..publisher import Factory
from ._wire import Key, Labels, Scan, UdpQuery, key_records, scan

__all__ = ["Publisher"]


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
_ROOT: Labels = (b"",)
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)
_MATCHED_REPLIES = 8  # replies remembered per publisher: servers shuffle records (3 records: 6 orders)


@dataclass(frozen=True, slots=True)
class _Result:
    """One good lookup through the resolver."""

    key: Key  # what the next probe's reply must match for "unchanged"
    instances: tuple[Instance, ...]
    ttl: int | None
    server: tuple[str, int] | None  # who to probe next time; None: no probe possible
    problems: tuple[tuple[str, str, int, str], ...] = ()  # (event, target, port, reason): records skipped


class Publisher(_Base[E]):
    """Looks up the SRV records of ``name`` every ``ttl`` seconds and publishes ``target:port``.

    go-kit's ``dnssrv.NewPublisher(name, ttl, factory, logger)``. ``name`` is taken as
    absolute (no search list). Each SRV record becomes an ``Instance`` whose host is the
    target without its trailing dot, carrying the record's ``priority``, ``weight`` and
    ``ttl``. Instances are published sorted by (priority, highest weight first, host, port),
    so an answer that only comes in another order is not a change. Lookups run on the
    library's shared background loop; the first starts at once. ``refresh()`` (or ``await
    arefresh()``) looks up now and returns the set; ``refresh_soon()`` only schedules it.

    - ``resolver``: a ``dns.resolver.Resolver`` (its settings are copied into an async one at
      construction) or a ``dns.asyncresolver.Resolver`` (used as is, so later changes to it
      count); default: the system's configuration. Its nameservers, ports, ``timeout`` and
      ``lifetime`` govern each lookup; a cache on it is honoured (the re-check below is off).
    - ``jitter``: each wait is shortened by a random part of up to this fraction (default 0.1),
      so a fleet does not poll in lock-step and a change is still seen within ``ttl``.
    - ``follow_ttl``: wait for the records' own TTL instead, kept within ``min_interval``
      (default 1 s) and ``max_interval`` (default 5 min); answers without records are polled
      every ``ttl``.
    - Failures (timeout, SERVFAIL, REFUSED, no server answering, a truncated or malformed
      answer) keep the last good set, marked stale, and are logged with the name and server;
      the next attempt comes after ``ttl``, then the wait doubles while failing, up to
      ``max(ttl, max_backoff)`` (default 30 s). NXDOMAIN or an answer without records empties
      the set, as does an answer whose only target is ``"."`` (RFC 2782: decidedly not
      available).
    - ``resolve_targets``: publish one instance per A/AAAA address of each target (taken
      from the answer's additional section when there, else looked up), host = the address.
    - A TTL that changes on its own (a caching resolver counting down) is not a change: an
      instance keeps the ``ttl`` it had when its record (target, port, priority, weight) was
      first published.
    - ``invalidate_after``, ``close_delay``: as for every ``loadbalancer.Publisher``.

    Most polls find the answer unchanged; those cost one UDP query to the server that gave
    the last answer and a strict reading of the reply. Any difference or doubt sends the poll
    through the resolver, which alone decides what is published. An answer too large for
    UDP comes over TCP on every poll: give the resolver EDNS (``resolver.use_edns(0, 0,
    1232)``) for large sets.

    >>> import dns.resolver
    >>> resolver = dns.resolver.Resolver(configure=False)
    >>> resolver.nameservers, resolver.port = ["127.0.0.1"], 5300  # a local DNS server
    >>> publisher = Publisher("_api._tcp.example.test.", 5.0, lambda hostport: hostport, resolver=resolver)
    >>> publisher.refresh()  # doctest: +SKIP
    EndpointSet([a.example.test:8080, b.example.test:8080])
    >>> publisher.close()
    """

    def __init__(
        self,
        name: str,
        ttl: float | timedelta,
        factory: Factory[E] | None = None,
        *,
        resolver: dns.resolver.BaseResolver | None = None,
        logger: Any = None,
        jitter: float = 0.1,
        follow_ttl: bool = False,
        min_interval: float | timedelta = 1.0,
        max_interval: float | timedelta = 300.0,
        max_backoff: float | timedelta = 30.0,
        resolve_targets: bool = False,
        invalidate_after: float | timedelta | None = None,
        close_delay: float | timedelta = 1.0,
        tags: Iterable[str] | str | None = None,
    ) -> None:
        qname = _check_name(name)
        self._interval = seconds(ttl, "ttl", allow_zero=False)
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter < 1:
            raise ValueError(f"jitter must be a fraction in [0, 1), got {jitter!r}")
        self._jitter = float(jitter)
        self._follow_ttl = bool(follow_ttl)
        self._min_interval = seconds(min_interval, "min_interval", allow_zero=False)
        self._max_interval = seconds(max_interval, "max_interval", allow_zero=False)
        if self._min_interval > self._max_interval:
            raise ValueError(
                f"min_interval ({self._min_interval:g}) must not exceed max_interval ({self._max_interval:g})"
            )
        self._max_backoff = max(self._interval, seconds(max_backoff, "max_backoff"))
        self._resolve_targets = bool(resolve_targets)
        self._resolver = _async_resolver(resolver)
        super().__init__(
            factory,
            service=qname.to_text(),
            logger=logger,
            invalidate_after=invalidate_after,
            close_delay=close_delay,
            tags=tags,
        )
        self._qname = qname
        self._srv = SrvLookup(self._resolver, qname, self._resolve_targets)
        self._query = self._probe_query()
        self._known: Key | None = None  # the last good answer's key, while probing may stand in for a lookup
        self._server: tuple[str, int] | None = None
        self._servers_seen: tuple[object, ...] = ()  # the resolver's servers when ``_server`` was set
        self._matched: dict[bytes, Scan] = {}  # replies (sans ID) that matched ``_known``, read
        self._applied: Key | None = None  # the last key published, to log transitions once
        self._problems: tuple[tuple[str, str, int, str], ...] = ()  # skipped records, logged once
        self._backoff = Backoff(tenacity.wait_exponential(multiplier=self._interval, max=self._max_backoff))
        self._wake: asyncio.Future[float] | None = None  # resolves when probing hands over to the resolver
        self._timer: asyncio.TimerHandle | None = None  # the next probe
        self._udp: UdpQuery | None = None  # the probe in flight
        self._busy = asyncio.Lock()  # one lookup at a time; binds to the runtime loop on first use
        self._lookups = 0  # lookups done, so that a refresh can tell one ended while it waited
        self._start(self._run())

    # -- public ----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The SRV name looked up, absolute (``"_api._tcp.example.com."``)."""
        return self.service

    def refresh_soon(self) -> None:
        """Schedule a lookup without waiting for it; safe to call from a signal handler."""
        if not self.closed:
            RUNTIME.call_soon(self._submit_refresh)

    def __repr__(self) -> str:
        return f"dnssrv.Publisher({self.service!r}, ttl={self._interval:g})"

    # -- polling ---------------------------------------------------------------------------

    async def _run(self) -> None:
        spent = 0.0
        while True:
            ttl = await self._poll(spent)
            if self._known is not None and self._server is not None:
                spent = await self._watch(ttl)
            else:
                spent = 0.0
                await asyncio.sleep(self._delay(ttl))

    def _wait(self, ttl: int | None) -> float:
        """The wait before the next poll, before jitter."""
        if self._backoff.failures:  # the first retry after one interval, then doubling
            return self._backoff.delay()
        if self._follow_ttl and ttl is not None:
            return min(max(float(ttl), self._min_interval), self._max_interval)
        return self._interval

    def _delay(self, ttl: int | None) -> float:
        # Jitter only shortens the wait: a change is still seen within the interval.
        return self._wait(ttl) * (1.0 - self._jitter * random.random())

    async def _refresh(self) -> object:
        # A lookup already under way when this was asked for (the constructor's first one,
        # or a poll) answers it: wait for that one rather than look up twice in a row.
        if self._busy.locked():
            lookups = self._lookups
            async with self._busy:
                if self._lookups != lookups:
                    return None
        return await self._poll()

    async def _poll(self, spent: float = 0.0) -> int | None:
        """One lookup through the resolver: publish what it found or record the failure.

        ``spent``: seconds a probe just took, deducted from the resolver's lifetime (but at
        least one timeout remains). Returns the TTL seen.
        """
        async with self._busy:
            if self.closed:
                return None
            timeout, lifetime = self._resolver.timeout, self._resolver.lifetime
            try:
                result = await self._lookup(max(lifetime - spent, min(timeout, lifetime)))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._lookups += 1
                if not isinstance(error, DiscoveryError):  # a bug here or below: still stale beats empty
                    self._log.error("srv_lookup_crashed", error=describe(error), exc_info=error)
                    error = self._error(error)
                self._failed(error)
                return None
            self._lookups += 1
            self._backoff.reset()
            self._apply(result)
            return result.ttl

    def _failed(self, error: DiscoveryError) -> None:
        self._backoff.failures += 1
        self._known = None  # the next success must go through the resolver and republish
        self._matched.clear()
        self._log.info(
            "srv_lookup_failed",
            server=_servers(self._resolver),
            error=describe(error.__cause__ or error),
            failures=self._backoff.failures,
            retry_in=round(self._wait(None), 3),
        )
        self._publish_error(error)

    # -- probing: the cheap re-check of an unchanged answer, on loop callbacks ----------------

    async def _watch(self, ttl: int | None) -> float:
        """Probe, on loop callbacks, while the answer stays the same; return once it may not.

        That is a different or doubtful reply, or none: the resolver must look. Returns the
        seconds the last probe took.
        """
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[float] = loop.create_future()
        self._wake = wake
        self._arm(loop, ttl)
        try:
            return await wake
        finally:
            self._wake = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._udp is not None:
                self._udp.cancel()
                self._udp = None

    def _arm(self, loop: asyncio.AbstractEventLoop, ttl: int | None) -> None:
        self._timer = loop.call_later(self._delay(ttl), self._send_probe, loop, ttl)

    def _send_probe(self, loop: asyncio.AbstractEventLoop, ttl: int | None) -> None:
        self._timer = None
        server, query, resolver = self._server, self._query, self._resolver
        if self.closed:
            return
        if (
            self._known is None
            or server is None
            or query is None
            or self._servers_seen != (list(resolver.nameservers), resolver.port, resolver.nameserver_ports)
        ):  # a refresh failed or changed things, or the resolver was given other servers
            self._woken(0.0)
        elif self._busy.locked():  # a refresh is looking up right now: it stands for this poll
            self._arm(loop, ttl)
        else:
            started = loop.time()
            try:
                self._udp = UdpQuery(
                    loop, server[0], server[1], query, self._resolver.timeout, partial(self._on_reply, loop, started)
                )
            except OSError:
                self._woken(0.0)

    def _on_reply(self, loop: asyncio.AbstractEventLoop, started: float, sent: bytes, reply: bytes | None) -> None:
        self._udp = None
        seen = self._vouch(sent, reply)
        if seen is not None:
            self._arm(loop, seen.ttl)
        else:
            self._woken(loop.time() - started)

    def _vouch(self, sent: bytes, reply: bytes | None) -> Scan | None:
        """The reply read, if it says what the last good answer said; else ``None``."""
        known = self._known
        if reply is None or known is None:
            return None
        # A reply identical (but for its ID) to one already read and matched needs no reading.
        body = reply[2:]
        seen = self._matched.get(body)
        if seen is None:
            seen = scan(reply, sent, glue=self._resolve_targets)
            if seen is None or seen.key != known:
                return None
            if len(self._matched) >= _MATCHED_REPLIES:
                del self._matched[next(iter(self._matched))]
            self._matched[body] = seen
        return seen

    def _woken(self, spent: float) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(spent)

    # -- the resolver's answer -> instances ------------------------------------------------

    async def _lookup(self, lifetime: float) -> _Result:
        return await self._srv.lookup(lifetime, probe=self._query is not None)

    def _error(self, error: BaseException, what: str | None = None) -> DiscoveryError:
        return self._srv.error(error, what)

    def _apply(self, result: _Result) -> None:
        """Publish ``result``; instances whose record only changed TTL keep their old ``Instance``."""
        if result.key != self._known:
            self._matched.clear()
        self._known, self._server = result.key, result.server
        resolver = self._resolver
        self._servers_seen = (list(resolver.nameservers), resolver.port, dict(resolver.nameserver_ports))
        changed, self._applied = result.key != self._applied, result.key
        if result.problems != self._problems:  # logged once, not on every poll
            for event, target, port, reason in set(result.problems) - set(self._problems):
                self._log.warning(event, target=target, port=port, reason=reason)
            self._problems = result.problems
        if changed and not result.instances:
            if result.key.rcode == dns.rcode.NXDOMAIN:
                self._log.info("srv_name_not_found")
            elif result.key.records:
                self._log.info("srv_service_not_available", reason="target is '.'")
        previous = {(i.host, i.port, i.priority, i.weight): i for i in self.endpoints().instances}
        self._publish([previous.get((i.host, i.port, i.priority, i.weight), i) for i in result.instances])

    def _probe_query(self) -> bytes | None:
        """The query the probe sends (its ID replaced each time), or ``None`` where probing is off."""
        resolver = self._resolver
        if resolver.keyname is not None or resolver.cache is not None:
            return None  # replies must be verified (TSIG), or the cache is meant to answer
        request = dns.message.make_query(self._qname, dns.rdatatype.SRV)
        request.use_edns(resolver.edns, resolver.ednsflags, resolver.payload, options=resolver.ednsoptions)
        if resolver.flags is not None:
            request.flags = resolver.flags
        return request.to_wire()


class SrvLookup:
    """Looks up the SRV records of one name through a resolver: the instances they describe."""

    def __init__(self, resolver: dns.asyncresolver.Resolver, qname: dns.name.Name, resolve_targets: bool) -> None:
        self.resolver = resolver
        self.qname = qname
        self.resolve_targets = resolve_targets

    async def lookup(self, lifetime: float, *, probe: bool = False) -> _Result:
        """One lookup through the resolver: the instances, and what a probe needs (``probe``: one may follow)."""
        resolver = self.resolver
        try:
            answer = await resolver.resolve(self.qname, dns.rdatatype.SRV, raise_on_no_answer=False, lifetime=lifetime)
        except dns.resolver.NXDOMAIN:
            return _Result(Key(dns.rcode.NXDOMAIN, ()), (), None, None)
        except dns.exception.DNSException as error:
            raise self.error(error) from error
        records: set[tuple[int, int, int, Labels]] = set()
        ttl: int | None = None
        if answer.rrset is not None:
            ttl = answer.rrset.ttl
            for rdata in answer.rrset:
                records.add((rdata.priority, rdata.weight, rdata.port, rdata.target.canonicalize().labels))
        glue: dict[Labels, list[tuple[bytes, int]]] = {}
        if self.resolve_targets:
            for rrset in answer.response.additional:
                _add_addresses(glue, rrset)
        targets = sorted({record[3] for record in records} - {_ROOT})
        glued = {(target, packed) for target in targets for packed, _ in glue.get(target, [])}
        key = key_records(records, glued, dns.rcode.NOERROR)
        server: tuple[str, int] | None = None
        if probe and _probeable(answer.nameserver) and answer.port is not None:
            server = (answer.nameserver, answer.port)
        if self.resolve_targets:
            missing = [target for target in targets if target not in glue]
            if missing:
                server = None  # the probe sees glue only; these need lookups every time
                found = await asyncio.gather(*(self.addresses(target, lifetime) for target in missing))
                glue.update(zip(missing, found, strict=True))
        instances: list[Instance] = []
        problems: list[tuple[str, str, int, str]] = []
        for priority, weight, port, target in records:
            if target == _ROOT:
                continue
            host = dns.name.Name(target).to_text(omit_final_dot=True)
            hosts = [(host, ttl)]
            if self.resolve_targets:
                hosts = [
                    (str(ipaddress.ip_address(packed)), min(ttl, rttl) if ttl is not None else rttl)
                    for packed, rttl in glue.get(target, [])
                ]
                if not hosts:
                    problems.append(("srv_target_without_address", host, port, "no A or AAAA record"))
            for address, instance_ttl in hosts:
                try:
                    instances.append(Instance(address, port, weight=weight, priority=priority, ttl=instance_ttl))
                except InvalidInstanceError as error:
                    problems.append(("invalid_srv_target", host, port, error.reason))
        if self.resolve_targets and ttl is not None:
            ttl = min([ttl] + [rttl for target in targets for _, rttl in glue.get(target, [])])
        instances.sort(key=lambda i: (i.priority, -i.weight, i.host, i.port))
        return _Result(key, tuple(instances), ttl, server, tuple(sorted(problems)))

    async def addresses(self, target: Labels, lifetime: float) -> list[tuple[bytes, int]]:
        """The A and AAAA addresses of ``target`` (none if it does not exist)."""
        name = dns.name.Name(target)
        found: dict[Labels, list[tuple[bytes, int]]] = {}
        for rdtype in _ADDRESS_TYPES:
            try:
                answer = await self.resolver.resolve(name, rdtype, raise_on_no_answer=False, lifetime=lifetime)
            except dns.resolver.NXDOMAIN:
                return []
            except dns.exception.DNSException as error:
                raise self.error(error, f"{dns.rdatatype.to_text(rdtype)} lookup of {name}") from error
            if answer.rrset is not None:
                _add_addresses(found, answer.rrset, name=target)
        return found.get(target, [])

    def error(self, error: BaseException, what: str | None = None) -> DiscoveryError:
        what = what or f"SRV lookup of {self.qname.to_text()}"
        return DiscoveryError(f"{what} via {_servers(self.resolver)} failed: {describe(error)}")


def _add_addresses(
    into: dict[Labels, list[tuple[bytes, int]]], rrset: dns.rrset.RRset, name: Labels | None = None
) -> None:
    if rrset.rdclass != dns.rdataclass.IN or rrset.rdtype not in _ADDRESS_TYPES:
        return
    owner = name if name is not None else rrset.name.canonicalize().labels
    found = into.setdefault(owner, [])
    for rdata in rrset:
        packed = ipaddress.ip_address(rdata.address).packed
        if all(packed != known for known, _ in found):
            found.append((packed, rrset.ttl))


def _check_name(name: object) -> dns.name.Name:
    """``name`` as an absolute ``dns.name.Name``, or a ``ValueError`` quoting it."""
    if not isinstance(name, str):
        raise TypeError(f"the SRV name must be a string, got {name!r}")
    text = name[:-1] if name.endswith(".") else name
    if not text:
        raise ValueError(f"invalid SRV name {name!r}: it is empty")
    if len(text) > 253:
        raise ValueError(f"invalid SRV name {name!r}: longer than 253 characters")
    for label in text.split("."):
        if not label:
            raise ValueError(f"invalid SRV name {name!r}: empty label")
        if len(label) > 63:
            raise ValueError(f"invalid SRV name {name!r}: label {label[:20]!r}... is longer than 63 characters")
        if not _LABEL.fullmatch(label):
            raise ValueError(
                f"invalid SRV name {name!r}: label {label!r} may hold only letters, digits, '_' and inner '-'"
            )
    return dns.name.from_text(text, dns.name.root)


def _async_resolver(resolver: object) -> dns.asyncresolver.Resolver:
    if resolver is None:
        try:
            return dns.asyncresolver.Resolver()
        except dns.exception.DNSException as error:
            raise DiscoveryError(f"no usable system DNS configuration: {describe(error)}") from error
    if isinstance(resolver, dns.asyncresolver.Resolver):
        return resolver
    if isinstance(resolver, dns.resolver.BaseResolver):
        # The same settings (nameservers, ports, timeout, lifetime, EDNS, flags, TSIG, cache),
        # with asyncio I/O; lists and dicts are copied so later changes to either stay apart.
        twin = dns.asyncresolver.Resolver(configure=False)
        for attribute, value in vars(resolver).items():
            setattr(twin, attribute, copy.copy(value) if isinstance(value, list | dict) else value)
        return twin
    raise TypeError(f"resolver must be a dns.resolver.Resolver or dns.asyncresolver.Resolver, got {resolver!r}")


def _probeable(address: str | None) -> TypeGuard[str]:
    """Whether the probe can reach this nameserver: a plain IP address (not DoH, no scope)."""
    return address is not None and "%" not in address and dns.inet.is_address(address)


def _servers(resolver: dns.resolver.BaseResolver) -> str:
    """The resolver's nameservers as ``address@port``, for messages."""
    names: list[str] = []
    for nameserver in resolver.nameservers:
        if isinstance(nameserver, str) and dns.inet.is_address(nameserver):
            names.append(f"{nameserver}@{resolver.nameserver_ports.get(nameserver, resolver.port)}")
        elif isinstance(nameserver, dns.nameserver.AddressAndPortNameserver):
            names.append(f"{nameserver.address}@{nameserver.port}")
        else:
            names.append(str(nameserver))
    return ", ".join(names) or "no nameservers"
