"""An answer's end-to-end header fields as the proxy relays them, and how they are read off a backend's answer head."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ._request import HOP_BY_HOP, dropped

__all__ = ["EMPTY", "AnswerHead", "Fields", "LoweredLines", "look_up_all", "read_answer_head", "remember"]

Pair = tuple[bytes, bytes]
K = TypeVar("K")
V = TypeVar("V")


class Fields:
    """Header fields in both forms a client side wants, each made once.

    ``block`` is the fields' lines as HTTP/1.1 writes them, each ending in CRLF: for a backend's
    answer, its own lines as read, so an HTTP/1.1 client's answer head costs no work per field.
    ``pairs()`` gives (name, value) pairs, names as sent, made from the block on first use (for
    HTTP/2, the cache and relayed 1xx answers).
    """

    __slots__ = ("_pairs", "block")

    def __init__(self, block: bytes, pairs: list[Pair] | None = None) -> None:
        self.block = block
        self._pairs = pairs

    @classmethod
    def of(cls, pairs: Iterable[Pair]) -> Fields:
        """Fields from (name, value) pairs."""
        listed = list(pairs)
        return cls(b"".join([b"%b: %b\r\n" % pair for pair in listed]), listed)

    def pairs(self) -> list[Pair]:
        """The fields as (name, value) pairs, values without their surrounding white space."""
        if self._pairs is None:
            found = []
            for line in self.block.split(b"\r\n")[:-1]:  # (the block ends in CRLF)
                name, _, value = line.partition(b":")
                found.append((name, value.strip(b" \t")))
            self._pairs = found
        return self._pairs

    def plus(self, pairs: Iterable[Pair]) -> Fields:
        """These fields and ``pairs`` after them."""
        more = Fields.of(pairs)
        return Fields(self.block + more.block, [*self.pairs(), *more.pairs()])

    def __repr__(self) -> str:
        return f"Fields({self.block!r})"


EMPTY = Fields(b"", [])

_CACHED_LINE = 256  # longer lines are read each time (a cookie, a token: seldom the same twice)
_CACHED_LINES = 512


def remember(cache: dict[Any, Any], key: object, value: object, limit: int) -> None:
    """Keep ``value`` under ``key`` in a cache bounded to ``limit`` entries: emptied when full,
    the entries in use come back at their next miss (cheaper than tracking which are old)."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value


def look_up_all(
    cache: dict[K, V], keys: list[K], make: Callable[[K], V], worth: Callable[[K], bool], limit: int
) -> list[V]:
    """The values of ``keys``, from ``cache`` (one comprehension when all are there), or made
    and kept (those ``worth`` keeping, in at most ``limit`` entries)."""
    try:
        return [cache[key] for key in keys]
    except KeyError:
        pass
    found = []
    for key in keys:
        value = cache.get(key)
        if value is None:
            value = make(key)
            if worth(key):
                remember(cache, key, value, limit)
        found.append(value)
    return found


class LoweredLines:
    """HTTP/2's pairs for fields' lines, names lowered: each distinct line read once, then looked up.

    Most lines of a backend's answers recur (Server, Content-Type, Cache-Control, ...): an answer
    whose lines were all seen before costs a split and one lookup a line. Bounded: emptied when full.
    """

    __slots__ = ("_pairs",)

    def __init__(self) -> None:
        self._pairs: dict[bytes, Pair] = {}

    def pairs(self, fields: Fields) -> list[Pair]:
        lines = fields.block.split(b"\r\n")
        lines.pop()  # (the block ends in CRLF)
        return look_up_all(self._pairs, lines, _lowered, _short_line, _CACHED_LINES)


def _lowered(line: bytes) -> Pair:
    name, _, value = line.partition(b":")
    return name.lower(), value.strip(b" \t")


def _short_line(line: bytes) -> bool:
    return len(line) <= _CACHED_LINE


_DROPPED = HOP_BY_HOP | {b"content-length"}  # the proxy frames the answer itself
# Every line naming a field the proxy acts on or drops, with its value. The
# parser (llhttp) has checked the head before it is read here: lines end in CRLF, names are
# tokens followed at once by the colon, no line is folded; so a line is found from the CRLF before it.
# (The look-ahead at the first letter skips most lines at once: it costs a third of the search.)
_ACTED_ON = re.compile(
    rb"\r\n(?=[%b])(%b):[ \t]*([^\r]*)"
    % (b"".join(sorted({name[:1] for name in _DROPPED})), b"|".join(re.escape(name) for name in sorted(_DROPPED))),
    re.IGNORECASE,
)

AnswerHead = tuple[Fields, bytes | None, bool, bytes, bytes]
"""An answer head's end-to-end fields, Content-Length, whether it has Transfer-Encoding, Connection and Upgrade."""


def read_answer_head(lines: bytes) -> AnswerHead:
    """Read an answer's field lines: ``lines`` is CRLF, then each line followed by CRLF, as checked by the parser.

    The end-to-end fields are the lines left once those that are hop-by-hop (RFC 9110, 7.6.1),
    or named by the Connection field, or Content-Length are cut out; they keep the backend's bytes.
    """
    # One C call finds every such line: the pieces between them, then each one's name and value.
    pieces = _ACTED_ON.split(lines)
    if len(pieces) == 1:
        return Fields(lines[2:]), None, False, b"", b""
    length: bytes | None = None
    transfer_encoding = False
    connection = upgrade = b""
    for name, value in zip(pieces[1::3], pieces[2::3], strict=True):
        name = name.lower()
        if name == b"content-length":
            length = value.rstrip(b" \t")
        elif name == b"connection":
            connection = connection + b"," + value if connection else value
        elif name == b"transfer-encoding":
            transfer_encoding = True
        elif name == b"upgrade":
            upgrade = value.rstrip(b" \t")
    fields = Fields(b"".join(pieces[::3])[2:])  # (each piece begins with a line's CRLF; the first with the leading one)
    if connection and connection != b"keep-alive":
        named = dropped(_DROPPED, connection)
        if named is not _DROPPED:  # the Connection field names fields of the backend's own: cut them too
            fields = Fields.of(pair for pair in fields.pairs() if pair[0].lower() not in named)
    return fields, length, transfer_encoding, connection, upgrade
