"""``Backend.revalidate`` for DNS: the server of a good answer asked again over UDP, on loop callbacks.

The reply is read by ``_wire.scan`` and can only ever vouch that nothing changed; any
difference or doubt (other records, an error code, truncation, a timeout) makes the
publisher look up through the resolver, which alone decides what is published.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import dns.asyncresolver
import dns.message
import dns.name
import dns.rdatatype

from ..backend import Listing
from ..instance import Instance
from ._wire import Key, Scan, UdpQuery, scan

__all__ = ["Answer", "Probe"]

_MATCHED_REPLIES = 8  # replies remembered per name: servers shuffle records (3 records: 6 orders)


@dataclass(frozen=True, slots=True, eq=False)
class Answer:
    """A DNS listing's cursor: the answer it was read from, and what asking its server again needs."""

    key: Key
    server: tuple[str, int] | None  # who gave it; None: no probe possible
    instances: Mapping[Hashable, Instance] = field(repr=False)  # the listing's, handed back while unchanged
    probe: Probe = field(repr=False)
    # what the resolver asked then: once it asks others, no probe
    nameservers: Sequence[object] = field(repr=False)
    port: int = field(repr=False)
    ports: dict[str, int] = field(repr=False)


class Probe:
    """Asks one SRV name's last server again, over a fresh UDP socket, and vouches only for a strict match.

    ``timeout``: the backend's (``None``: the resolver's lifetime). ``spent``: seconds the
    last probe that could not vouch took; the lookup after it has that much less time
    (``take_spent()``), so a dead server costs one lifetime, not two.
    """

    __slots__ = ("_last", "_matched", "glue", "query", "resolver", "spent", "timeout")

    def __init__(
        self, resolver: dns.asyncresolver.Resolver, qname: dns.name.Name, *, glue: bool, timeout: float | None
    ) -> None:
        self.resolver = resolver
        self.query = _query(resolver, qname)
        self.glue = glue
        self.timeout = timeout
        self.spent = 0.0
        self._matched: dict[bytes, tuple[Key, Scan]] = {}  # replies (sans ID) read, and the answer they matched
        self._last: Listing | None = None  # the last listing vouched for: most polls vouch for the same

    def answer(self, key: Key, server: tuple[str, int] | None, instances: Mapping[Hashable, Instance]) -> Answer:
        """The cursor of a listing just read through the resolver."""
        resolver = self.resolver
        nameservers, ports = list(resolver.nameservers), dict(resolver.nameserver_ports)
        return Answer(key, server, instances, self, nameservers, resolver.port, ports)

    def start(self, answer: Answer, done: Callable[[Listing | None], object]) -> Callable[[], object] | None:
        """Ask ``answer``'s server again: ``done(listing)`` if nothing changed, else ``done(None)``.

        Returns the function that cancels the query; ``None`` if the server cannot be asked.
        """
        server, query, resolver = answer.server, self.query, self.resolver
        if (
            server is None
            or query is None
            or resolver.nameservers != answer.nameservers
            or resolver.port != answer.port
            or resolver.nameserver_ports != answer.ports
        ):
            return None  # nothing to probe, or the resolver has been given other servers since
        lifetime = resolver.lifetime if self.timeout is None else self.timeout
        wait = resolver.timeout if resolver.timeout < lifetime else lifetime
        loop = asyncio.get_running_loop()
        replied = partial(self._replied, done, answer, loop, loop.time())
        try:
            return UdpQuery(loop, server[0], server[1], query, wait, replied).cancel
        except OSError:
            return None

    def _replied(
        self,
        done: Callable[[Listing | None], object],
        answer: Answer,
        loop: asyncio.AbstractEventLoop,
        started: float,
        sent: bytes,
        reply: bytes | None,
    ) -> None:
        seen = self._vouch(answer.key, sent, reply)
        if seen is None:
            self.spent = loop.time() - started
            done(None)
            return
        last = self._last
        if last is None or last.cursor is not answer or last.ttl != seen.ttl:
            last = self._last = Listing(answer.instances, answer, seen.ttl)
        done(last)

    def _vouch(self, key: Key, sent: bytes, reply: bytes | None) -> Scan | None:
        """The reply read, if it says what the answer (of ``key``) said; else ``None``."""
        if reply is None:
            return None
        # A reply identical (but for its ID) to one already read and matched needs no reading.
        body = reply[2:]
        known = self._matched.get(body)
        if known is not None and known[0] is key:
            return known[1]
        seen = scan(reply, sent, glue=self.glue)
        if seen is None or seen.key != key:
            return None
        if len(self._matched) >= _MATCHED_REPLIES:
            del self._matched[next(iter(self._matched))]
        self._matched[body] = (key, seen)
        return seen

    def take_spent(self) -> float:
        """``spent``, reset."""
        spent, self.spent = self.spent, 0.0
        return spent

    def forget(self) -> None:
        """The answer changed: the replies that matched the old one are of no use."""
        self._matched.clear()


def _query(resolver: dns.asyncresolver.Resolver, qname: dns.name.Name) -> bytes | None:
    """The query the probe sends (its ID replaced each time), or ``None`` where probing is off."""
    if resolver.keyname is not None or resolver.cache is not None:
        return None  # replies must be verified (TSIG), or the cache is meant to answer
    request = dns.message.make_query(qname, dns.rdatatype.SRV)
    request.use_edns(resolver.edns, resolver.ednsflags, resolver.payload, options=resolver.ednsoptions)
    if resolver.flags is not None:
        request.flags = resolver.flags
    return request.to_wire()
