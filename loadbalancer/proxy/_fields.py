"""An answer's end-to-end header fields as the proxy relays them, and how they are read off a backend's answer head."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar

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
# Whether a line's first byte can begin one of those names (in either case): the other lines,
# most of them, are kept on that one byte.
_STARTS: Final = bytes(bytes([byte]).lower() in {name[:1] for name in _DROPPED} for byte in range(256))
_NOT_ACTED_ON: Pair = (b"", b"")
# The lines that could name such a field, each read once: (its name, lowered, and value) if it
# does, else ``_NOT_ACTED_ON``. They recur from one answer to the next (Content-Type,
# Connection: keep-alive, the Content-Length of a resource), as the lines HTTP/2 reads.
_CANDIDATES: Final[dict[bytes, Pair]] = {}

AnswerHead = tuple[Fields, bytes | None, bool, bytes, bytes]
"""An answer head's end-to-end fields, Content-Length, whether it has Transfer-Encoding, Connection and Upgrade."""


def _acted_on(line: bytes) -> Pair:
    name, colon, value = line.partition(b":")
    name = name.lower()
    return (name, value.strip(b" \t")) if colon and name in _DROPPED else _NOT_ACTED_ON


def read_answer_head(head: bytes) -> AnswerHead:
    """Read an answer's field lines: ``head`` is its status line and field lines, each followed by CRLF.

    The end-to-end fields are the lines left once those that are hop-by-hop (RFC 9110, 7.6.1),
    or named by the Connection field, or Content-Length are cut out; they keep the backend's bytes.
    """
    # The parser (llhttp) checked the head before it is read here: lines end in CRLF, names are
    # tokens followed at once by the colon, no line is folded. One split, then a byte a line
    # and, for the few lines that could be cut, one lookup.
    split = head.split(b"\r\n")  # [the status line, each field line, ""]
    starts = _STARTS
    candidates = _CANDIDATES
    kept: list[bytes] = []
    length: bytes | None = None
    transfer_encoding = False
    connection = upgrade = b""
    for index in range(1, len(split)):
        line = split[index]
        if len(line) == 0 or not starts[line[0]]:  # (len: no generic truth test in the compiled build)
            kept.append(line)
            continue
        found = candidates.get(line)
        if found is None:
            found = _acted_on(line)
            if len(line) <= _CACHED_LINE:
                remember(candidates, line, found, _CACHED_LINES)
        name, value = found
        if not name:
            kept.append(line)
        elif name == b"content-length":
            length = value
        elif name == b"connection":
            connection = connection + b"," + value if connection else value
        elif name == b"transfer-encoding":
            transfer_encoding = True
        elif name == b"upgrade":
            upgrade = value
    # the lines kept, each followed by CRLF (the last element, empty, gives the last one's)
    fields = Fields(head[len(split[0]) + 2 :] if len(kept) == len(split) - 1 else b"\r\n".join(kept))
    if connection and connection != b"keep-alive":
        named = dropped(_DROPPED, connection)
        if named is not _DROPPED:  # the Connection field names fields of the backend's own: cut them too
            fields = Fields.of(pair for pair in fields.pairs() if pair[0].lower() not in named)
    return fields, length, transfer_encoding, connection, upgrade
