"""``dnssrv.Publisher``: go-kit's ``dnssrv.NewPublisher``, the generic publisher polling a ``dnssrv.Backend``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import dns.resolver

from .._deprecated import renamed
from .._typing import E
from .._util import seconds
from ..backend import Publisher as _Generic
from ..publisher import Factory
from ._backend import Backend
from ._lookup import check_name

__all__ = ["Publisher"]


class Publisher(_Generic[E]):
    """Looks up the SRV records of ``name`` every ``interval`` seconds and publishes ``target:port``.

    go-kit's ``dnssrv.NewPublisher(name, ttl, factory, logger)``: ``Publisher(name, 5.0,
    factory)``. ``name`` is taken as absolute (no search list). Each SRV record becomes an
    ``Instance`` whose host is the target without its trailing dot, carrying the record's
    ``priority``, ``weight`` and ``ttl``. Instances are published sorted by (priority,
    highest weight first, host, port), so an answer that only comes in another order is not
    a change. Lookups run on the library's shared background loop; the first starts at
    once. ``refresh()`` (or ``await arefresh()``) looks up now and returns the set;
    ``refresh_soon()`` only starts it.

    - ``interval``: seconds between lookups (default 5; ``ttl=`` is its old name);
      ``jitter``: each wait is shortened by a random part of up to this fraction (default
      0.1), so a fleet does not poll in lock-step and a change is still seen within
      ``interval``.
    - ``follow_ttl``: wait for the records' own TTL instead, kept within ``min_interval``
      (default 1 s) and ``max_interval`` (default 5 min); answers without records are polled
      every ``interval``.
    - ``resolver``: a ``dns.resolver.Resolver`` (its settings are copied into an async one at
      construction) or a ``dns.asyncresolver.Resolver`` (used as is, so later changes to it
      count); default: the system's configuration. Its nameservers, ports and ``timeout``
      (per try) govern each lookup; a cache on it is honoured (the re-check below is off).
    - ``timeout``: seconds a lookup may take in all, retries included (dnspython's
      ``lifetime``); default: the resolver's ``lifetime`` (5 s unless set).
    - Failures (timeout, SERVFAIL, REFUSED, no server answering, a truncated or malformed
      answer: ``dnssrv.DnsError``) keep the last good set, marked stale, and are logged with
      the name and server; the next attempt comes after ``interval``, then the wait doubles
      while failing, up to ``max(interval, max_backoff)`` (default 30 s). A name that does
      not exist (NXDOMAIN: ``dnssrv.NameNotFoundError``, the warning ``srv_name_not_found``)
      is such a failure too: a misspelled name is not an empty service. An answer without
      records empties the set, as does an answer whose only target is ``"."`` (RFC 2782:
      decidedly not available).
    - ``resolve_targets``: publish one instance per A/AAAA address of each target (taken
      from the answer's additional section when there, else looked up), host = the address.
    - A TTL that changes on its own (a caching resolver counting down) is not a change: an
      instance keeps the ``ttl`` it had when its record (target, port, priority, weight) was
      first published.
    - ``invalidate_after``, ``close_delay``, ``tags``: as for every ``loadbalancer.Publisher``.

    Most polls find the answer unchanged; those cost one UDP query to the server that gave
    the last answer and a strict reading of the reply (``dnssrv.Backend.revalidate``). Any
    difference or doubt sends the poll through the resolver, which alone decides what is
    published. An answer too large for UDP comes over TCP on every poll: give the resolver
    EDNS (``resolver.use_edns(0, 0, 1232)``) for large sets.

    >>> import dns.resolver
    >>> resolver = dns.resolver.Resolver(configure=False)
    >>> resolver.nameservers, resolver.port = ["127.0.0.1"], 5300  # a local DNS server
    >>> publisher = Publisher("_api._tcp.example.test.", 5.0, lambda hostport: hostport, resolver=resolver)
    >>> publisher.refresh()  # doctest: +SKIP
    EndpointSet([a.example.test:8080, b.example.test:8080])
    >>> publisher.close()
    """

    @renamed(ttl="interval")
    def __init__(
        self,
        name: str,
        interval: float | timedelta = 5.0,
        factory: Factory[E] | None = None,
        *,
        resolver: dns.resolver.BaseResolver | None = None,
        timeout: float | timedelta | None = None,
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
        qname = check_name(name)
        every = seconds(interval, "interval", allow_zero=False)
        backoff = max(every, seconds(max_backoff, "max_backoff"))
        backend = Backend(
            interval=every, timeout=timeout, resolver=resolver, resolve_targets=resolve_targets, logger=logger
        )
        super().__init__(
            backend,
            qname.to_text(),
            factory,
            tags=tags,
            jitter=jitter,
            follow_ttl=follow_ttl,
            min_interval=min_interval,
            max_interval=max_interval,
            max_backoff=backoff,
            logger=logger,
            invalidate_after=invalidate_after,
            close_delay=close_delay,
            own=True,
        )

    @property
    def name(self) -> str:
        """The SRV name looked up, absolute (``"_api._tcp.example.com."``)."""
        return self.service

    def __repr__(self) -> str:
        return f"dnssrv.Publisher({self.service!r}, interval={self.interval:g})"
