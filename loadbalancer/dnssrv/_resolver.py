"""dnspython's resolver as this package uses it: made async, described in messages, and its failures."""

from __future__ import annotations

import copy
from typing import TypeGuard

import dns.asyncresolver
import dns.exception
import dns.inet
import dns.nameserver
import dns.resolver

from .._util import describe
from ..errors import DiscoveryError

__all__ = ["DnsError", "NameNotFoundError", "async_resolver", "probeable", "servers"]


class DnsError(DiscoveryError):
    """A DNS lookup failed (timeout, SERVFAIL, REFUSED, no server answering, a malformed answer).

    ``name``: the name looked up; ``servers``: the nameservers asked, as ``address@port``.
    A publisher keeps its last good set, marked stale, and tries again.
    """

    def __init__(self, message: str, *, name: str = "", servers: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.servers = servers


class NameNotFoundError(DnsError):
    """The SRV name does not exist (NXDOMAIN): misspelled, or its service withdrawn.

    Not the same as a name that exists with no SRV records (an empty set): a name that is
    not there is most often a mistake in it. Like every discovery failure, a publisher
    keeps its last good set, marked stale, and asks again at its next poll; the event
    ``srv_name_not_found`` (a warning) names the name and the servers asked.
    """


def async_resolver(resolver: object) -> dns.asyncresolver.Resolver:
    """``resolver`` as an async resolver: the system's (``None``), the same settings copied (a sync one), or itself."""
    if resolver is None:
        try:
            return dns.asyncresolver.Resolver()
        except dns.exception.DNSException as error:
            raise DnsError(f"no usable system DNS configuration: {describe(error)}") from error
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


def probeable(address: str | None) -> TypeGuard[str]:
    """Whether the probe can reach this nameserver: a plain IP address (not DoH, no scope)."""
    return address is not None and "%" not in address and dns.inet.is_address(address)


def servers(resolver: dns.resolver.BaseResolver) -> str:
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
