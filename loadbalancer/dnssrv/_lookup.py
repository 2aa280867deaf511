"""An SRV name looked up through dnspython's resolver: the name checked, the answer read into instances."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

from .._util import describe
from ..errors import InvalidInstanceError
from ..instance import Instance
from ._resolver import DnsError, NameNotFoundError, probeable, servers
from ._wire import Key, Labels, key_records

__all__ = ["Problem", "Result", "SrvLookup", "check_name"]

_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?")
_ROOT: Labels = (b"",)
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)

Problem = tuple[str, str, int, str]
"""A record skipped: ``(event, target, port, reason)``."""

Glue = dict[Labels, list[tuple[bytes, int]]]
"""Addresses by owner name: ``(packed address, TTL)``."""


@dataclass(frozen=True, slots=True)
class Result:
    """One good lookup through the resolver."""

    key: Key  # what a probe's reply must match for "unchanged"
    instances: tuple[Instance, ...]
    ttl: int | None
    server: tuple[str, int] | None  # who to probe next time; None: no probe possible
    problems: tuple[Problem, ...] = ()


class SrvLookup:
    """Looks up the SRV records of one name through a resolver: the instances they describe.

    Each record is an ``Instance(target, port, priority=, weight=, ttl=)``, sorted by
    priority, then the heaviest first; with ``resolve_targets``, one per A/AAAA address of
    the target (from the additional section when there, else looked up), host = the address.
    """

    def __init__(self, resolver: dns.asyncresolver.Resolver, qname: dns.name.Name, resolve_targets: bool) -> None:
        self.resolver = resolver
        self.qname = qname
        self.resolve_targets = resolve_targets

    async def lookup(self, lifetime: float, *, probe: bool = False) -> Result:
        """One lookup through the resolver (``probe``: note the server for a probe to follow).

        It ends within ``lifetime`` seconds (dnspython's own lifetime check can overrun it by
        its backoff sleeps), with a ``DnsError`` naming the servers asked if none answered.
        """
        try:
            async with asyncio.timeout(lifetime):
                return await self._lookup(lifetime, probe)
        except TimeoutError as error:
            raise self.error(error, reason=f"timed out: no answer within {lifetime:g}s") from error

    async def _lookup(self, lifetime: float, probe: bool) -> Result:
        try:
            answer = await self.resolver.resolve(
                self.qname, dns.rdatatype.SRV, raise_on_no_answer=False, lifetime=lifetime
            )
        except dns.resolver.NXDOMAIN as error:
            raise self.not_found() from error
        except dns.exception.DNSException as error:
            raise self.error(error) from error
        records: set[tuple[int, int, int, Labels]] = set()
        ttl: int | None = None
        if answer.rrset is not None:
            ttl = answer.rrset.ttl
            for rdata in answer.rrset:
                records.add((rdata.priority, rdata.weight, rdata.port, rdata.target.canonicalize().labels))
        glue: Glue = {}
        if self.resolve_targets:
            for rrset in answer.response.additional:
                _add_addresses(glue, rrset)
        targets = sorted({record[3] for record in records} - {_ROOT})
        glued = {(target, packed) for target in targets for packed, _ in glue.get(target, [])}
        key = key_records(records, glued, dns.rcode.NOERROR)
        server: tuple[str, int] | None = None
        if probe and probeable(answer.nameserver) and answer.port is not None:
            server = (answer.nameserver, answer.port)
        if self.resolve_targets:
            missing = [target for target in targets if target not in glue]
            if missing:
                server = None  # the probe sees glue only; these need lookups every time
                found = await asyncio.gather(*(self.addresses(target, lifetime) for target in missing))
                glue.update(zip(missing, found, strict=True))
        instances, problems = self._instances(records, glue, ttl)
        if self.resolve_targets and ttl is not None:  # the answer holds as long as its shortest record
            ttl = min([ttl] + [rttl for target in targets for _, rttl in glue.get(target, [])])
        return Result(key, instances, ttl, server, problems)

    def _instances(
        self, records: set[tuple[int, int, int, Labels]], glue: Glue, ttl: int | None
    ) -> tuple[tuple[Instance, ...], tuple[Problem, ...]]:
        instances: list[Instance] = []
        problems: list[Problem] = []
        for priority, weight, port, target in records:
            if target == _ROOT:
                continue  # RFC 2782: "decidedly not available"
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
                    problems.append(("srv_target_invalid", host, port, error.reason))
        instances.sort(key=lambda i: (i.priority, -i.weight, i.host, i.port))
        return tuple(instances), tuple(sorted(problems))

    async def addresses(self, target: Labels, lifetime: float) -> list[tuple[bytes, int]]:
        """The A and AAAA addresses of ``target`` (none if it does not exist)."""
        name = dns.name.Name(target)
        found: Glue = {}
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

    def not_found(self) -> NameNotFoundError:
        """The ``NameNotFoundError`` saying that this SRV name does not exist, and who said so."""
        asked, name = servers(self.resolver), self.qname.to_text()
        return NameNotFoundError(
            f"SRV name {name} does not exist (NXDOMAIN from {asked}): check its spelling"
            " (_service._proto.domain.) and the DNS server asked",
            name=name,
            servers=asked,
        )

    def error(self, error: BaseException, what: str | None = None, *, reason: str | None = None) -> DnsError:
        """The ``DnsError`` saying that ``what`` (this SRV lookup) failed, and where."""
        asked = servers(self.resolver)
        what = what or f"SRV lookup of {self.qname.to_text()}"
        reason = reason or describe(error)
        return DnsError(f"{what} via {asked} failed: {reason}", name=self.qname.to_text(), servers=asked)


def _add_addresses(into: Glue, rrset: dns.rrset.RRset, name: Labels | None = None) -> None:
    if rrset.rdclass != dns.rdataclass.IN or rrset.rdtype not in _ADDRESS_TYPES:
        return
    owner = name if name is not None else rrset.name.canonicalize().labels
    found = into.setdefault(owner, [])
    for rdata in rrset:
        packed = ipaddress.ip_address(rdata.address).packed
        if all(packed != known for known, _ in found):
            found.append((packed, rrset.ttl))


def check_name(name: object) -> dns.name.Name:
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
