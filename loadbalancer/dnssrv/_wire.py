"""The cheap re-check of an unchanged SRV answer: one UDP query and a strict, minimal reading.

dnspython parses a small SRV answer in hundreds of microseconds and its resolver adds more;
a thousand publishers polling every second would need more than a core for that alone.
Most polls find the answer unchanged, so a publisher that holds a good answer first asks
the server that gave it again, over a fresh UDP socket, and reads the reply with ``scan``
below. When the reply says the same thing (same records in any order; TTLs aside) nothing
else happens. Anything else (other records, an error code, truncation, a reply ``scan``
does not fully understand, a timeout) goes to dnspython's resolver, which stays the only
source of what is published. So ``scan`` can only ever answer "unchanged", and it is
written to say so only when the reply is well formed and matches on every record.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Key", "Labels", "Scan", "UdpQuery", "key_records", "read_name", "scan"]

Labels = tuple[bytes, ...]
"""A domain name as its lowercased wire labels, ending with the root label ``b""``."""

Record = tuple[int, int, int, Labels]
"""An SRV record as ``(priority, weight, port, target)``."""

Address = tuple[Labels, bytes]
"""An address record from the additional section: ``(owner, packed address)``."""

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_SRV = struct.Struct("!HHH")

_A, _AAAA, _SRV_TYPE, _OPT, _SIG, _TSIG, _IN = 1, 28, 33, 41, 24, 250, 1
_NOERROR, _NXDOMAIN = 0, 3
_QR, _TC = 0x8000, 0x0200
_MAX_HOPS = 16  # dnspython's limit on chained compression pointers


class Malformed(Exception):
    """The reply is not a DNS message ``scan`` can read; dnspython will judge it."""


@dataclass(frozen=True, slots=True)
class Key:
    """What a published set depends on: the rcode, the SRV records and (optionally) glue."""

    rcode: int
    records: tuple[Record, ...]
    addresses: tuple[Address, ...] = ()


@dataclass(frozen=True, slots=True)
class Scan:
    """A reply read by ``scan``: its ``key`` and the smallest TTL among the records that count."""

    key: Key
    ttl: int | None = field(default=None, compare=False)


def key_records(records: set[Record], addresses: set[Address], rcode: int) -> Key:
    """The canonical ``Key``: records and addresses sorted, duplicates dropped."""
    return Key(rcode, tuple(sorted(records)), tuple(sorted(addresses)))


def read_name(data: bytes, pos: int) -> tuple[Labels, int]:
    """Read the (possibly compressed) name at ``pos``: its labels and the offset after it.

    The same rules as dnspython: a pointer must point before the name it is read from, and
    the name pointed to must end before that; at most 16 pointers; 255 octets at most.
    """
    labels: list[bytes] = []
    limit = len(data)
    start = pos
    end = -1
    hops = 0
    size = 1
    while True:
        if pos >= limit:
            raise Malformed("name runs past the end")
        count = data[pos]
        if count == 0:
            pos += 1
            break
        if count < 64:
            after = pos + 1 + count
            size += count + 1
            if after > limit or size > 255:
                raise Malformed("label runs past the end, or name too long")
            labels.append(data[pos + 1 : after].lower())
            pos = after
        elif count >= 192:
            if pos + 1 >= limit:
                raise Malformed("pointer runs past the end")
            target = ((count & 0x3F) << 8) | data[pos + 1]
            if end < 0:
                end = pos + 2
            hops += 1
            if target >= start or hops > _MAX_HOPS:
                raise Malformed("bad compression pointer")
            limit, pos, start = start, target, target
        else:
            raise Malformed("bad label type")
    labels.append(b"")
    return tuple(labels), (pos if end < 0 else end)


def scan(data: bytes, query: bytes, *, glue: bool) -> Scan | None:
    """Read the reply ``data`` to ``query`` (the wire sent); ``None`` unless it is a plain answer.

    A plain answer: the same ID and question, not truncated, NOERROR or NXDOMAIN, the answer
    section only SRV records of the name asked (no CNAME chain), no signatures. With
    ``glue``, the additional section's A/AAAA records of the targets count too.
    """
    try:
        return _scan(data, query, glue)
    except (Malformed, struct.error, IndexError):
        return None


def _scan(data: bytes, query: bytes, glue: bool) -> Scan | None:
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if data[:2] != query[:2] or not flags & _QR or flags & _TC or (flags >> 11) & 0xF or qdcount != 1:
        return None
    rcode = flags & 0xF
    if rcode not in (_NOERROR, _NXDOMAIN):
        return None
    qname, qend = read_name(query, 12)
    name, pos = read_name(data, 12)
    if name != qname or data[pos : pos + 4] != query[qend : qend + 4]:
        return None
    pos += 4
    records: set[Record] = set()
    addresses: set[Address] = set()
    targets: set[Labels] = set()
    ttl: int | None = None
    for index in range(ancount + nscount + arcount):
        owner, pos = read_name(data, pos)
        rdtype, rdclass, rttl, rdlength = _RR.unpack_from(data, pos)
        pos += _RR.size
        rdend = pos + rdlength
        if rdend > len(data):
            raise Malformed("record data runs past the end")
        if index < ancount:  # the answer section
            if owner != qname or rdtype != _SRV_TYPE or rdclass != _IN or rdlength < 7:
                return None
            priority, weight, port = _SRV.unpack_from(data, pos)
            target, after = read_name(data, pos + 6)
            if after != rdend:
                raise Malformed("SRV record data has the wrong length")
            records.add((priority, weight, port, target))
            targets.add(target)
            ttl = rttl if ttl is None else min(ttl, rttl)
        elif index >= ancount + nscount:  # the additional section
            if rdtype in (_SIG, _TSIG) or (rdtype == _OPT and rttl >> 24):
                return None  # signed, or an extended rcode: for dnspython to judge
            if rdclass == _IN and rdtype in (_A, _AAAA):
                if rdlength != (4 if rdtype == _A else 16):
                    raise Malformed("address of the wrong length")
                if glue and owner in targets:
                    addresses.add((owner, data[pos:rdend]))
                    ttl = rttl if ttl is None else min(ttl, rttl)
        pos = rdend
    if pos != len(data):
        return None  # trailing bytes: dnspython rejects them
    return Scan(key_records(records, addresses, rcode), ttl)


class UdpQuery:
    """One query over a fresh, connected UDP socket, driven by loop callbacks (no task).

    ``done(sent, reply)`` is called once, on the loop: ``reply`` is ``None`` after ``within``
    seconds without one or on a socket error (such as an ICMP refusal). The socket is
    connected, so the kernel drops datagrams from any other address; a reply with another
    ID is ignored. Each query gets a random ID and, from the kernel, a random source port.
    Steady-state polling of many names is mostly this, so it avoids the coroutine machinery
    (a task wake-up per step costs as much as the rest together).
    """

    __slots__ = ("_done", "_fd", "_loop", "_sock", "_timer", "sent")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        address: str,
        port: int,
        query: bytes,
        within: float,
        done: Callable[[bytes, bytes | None], object],
    ) -> None:
        self._loop = loop
        self._done: Callable[[bytes, bytes | None], object] | None = done
        self.sent = os.urandom(2) + query[2:]
        self._sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
        self._fd = -1
        self._timer: asyncio.TimerHandle | None = None
        try:
            self._sock.setblocking(False)
            self._sock.connect((address, port))
            self._sock.send(self.sent)
        except OSError:
            self._sock.close()
            raise
        self._fd = self._sock.fileno()  # a number: given the socket, asyncio formats its repr on each call
        loop.add_reader(self._fd, self._readable)
        self._timer = loop.call_later(within, self._finish, None)

    def _readable(self) -> None:
        try:
            data = self._sock.recv(65535)
        except BlockingIOError:
            return
        except OSError:
            self._finish(None)
            return
        if data[:2] == self.sent[:2]:
            self._finish(data)

    def _finish(self, reply: bytes | None) -> None:
        done, self._done = self._done, None
        self.cancel()
        if done is not None:
            done(self.sent, reply)

    def cancel(self) -> None:
        """Stop waiting and close the socket; ``done`` is not called (idempotent)."""
        self._done = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._fd = -1
            self._sock.close()
