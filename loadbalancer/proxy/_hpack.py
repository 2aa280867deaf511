"""HPACK for the proxy's HTTP/2 side: answer heads from cached field encodings, request heads
decoded once per distinct block.

Encoding: hpack's own encoder searches HPACK's dynamic table for every field, a linear search
in Python, and Huffman-codes each value again for every answer: about 13 us of an answer
head, once a seventh of an HTTP/2 request's time in the proxy. The answers a proxy relays repeat
their fields (``server``, ``content-type``, ``etag``, ``date`` for a second, ...), and a field
sent as a literal without indexing (RFC 7541, 6.2.2) is the same bytes every time and leaves
the client's table alone: each is encoded once and its bytes kept. Nothing is ever indexed,
so the client's decoder needs no table size update; the price is a few bytes a head.

Decoding: a client that sends the same request again sends the same block once its fields
are in the table: h2load's is five bytes, each an index. hpack decodes it anew each time,
about 9 us. ``DecodeCache`` keeps the fields of a block whose decoding changed nothing in
the table, and gives them again for the same bytes as long as the table has not changed
since (any entry added, any resize, empties the cache): the same bytes against the same
table are the same fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack.exceptions import HPACKError, OversizedHeaderListError
from hpack.hpack import Decoder, encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

from ._fields import look_up_all, remember

__all__ = ["DecodeCache", "FieldCache", "OversizedHeaderListError", "UndecodableBlockErrors"]

# What hpack raises for a block it cannot decode (its own errors, and a few builtins on the
# malformed inputs it does not check itself).
UndecodableBlockErrors = (HPACKError, IndexError, TypeError, ValueError)

_CACHED_BLOCKS = 64  # distinct request blocks kept per connection
_CACHED_BLOCK = 1024  # longer blocks are not kept
_CACHED_VALUE = 256  # longer values are encoded each time (no memory for one-off cookies and tokens)
_CACHED_FIELDS = 4096  # entries kept at most: the cache starts afresh when full
_FULL: dict[tuple[bytes, bytes], int] = {}  # a static table entry: its index (1-based)
_NAMES: dict[bytes, int] = {}  # a static table name: the index of its first entry
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _FULL.setdefault((_name, _value), _index)
    _NAMES.setdefault(_name, _index)


class FieldCache:
    """One connection's HPACK encoder: header blocks that never touch the dynamic table.

    Names must be lowercase, as HTTP/2 requires (the proxy lowers them).
    """

    __slots__ = ("_fields", "_huffman")

    def __init__(self) -> None:
        self._fields: dict[tuple[bytes, bytes], bytes] = {}
        self._huffman = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)

    def encode(self, headers: Iterable[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        fields = headers if isinstance(headers, list) else list(headers)
        encoded: list[bytes] = look_up_all(self._fields, fields, self._encoded, _short_value, _CACHED_FIELDS)
        return b"".join(encoded)

    def _encoded(self, field: tuple[bytes, bytes]) -> bytes:
        return self._field(field[0], field[1])

    def _field(self, name: bytes, value: bytes) -> bytes:
        index = _FULL.get((name, value))
        if index is not None:  # indexed field (6.1)
            indexed = encode_integer(index, 7)
            indexed[0] |= 0x80
            return bytes(indexed)
        index = _NAMES.get(name)
        if index is not None:  # literal without indexing, indexed name (6.2.2): 0000 and a 4-bit prefix
            return bytes(encode_integer(index, 4)) + self._string(value)
        return b"\x00" + self._string(name) + self._string(value)  # literal without indexing, new name

    def _string(self, text: bytes) -> bytes:
        """A string literal (5.2): Huffman-coded when that is shorter."""
        coded = self._huffman.encode(text)
        if len(coded) < len(text):
            length = encode_integer(len(coded), 7)
            length[0] |= 0x80
            return bytes(length) + coded
        return bytes(encode_integer(len(text), 7)) + text


def _short_value(field: tuple[bytes, bytes]) -> bool:
    return len(field[1]) <= _CACHED_VALUE


class _CountedTable(HeaderTable):
    """hpack's table, counting its changes (entries added, resizes)."""

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.changes += 1
        super().add(name, value)

    @property
    def maxsize(self) -> int:
        return self._maxsize

    @maxsize.setter
    def maxsize(self, newmax: int) -> None:
        self.changes += 1
        HeaderTable.maxsize.fset(self, newmax)  # type: ignore[attr-defined]


class DecodeCache(Decoder):
    """hpack's decoder, giving the fields of a block decoded before against the same table again."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size)
        self.header_table = _CountedTable()
        self._blocks: dict[bytes, tuple[Any, ...]] = {}
        self._changes = 0  # the table's count of changes the cached blocks were decoded against

    def decode_fields(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """A header block's fields, as bytes pairs."""
        fields: list[tuple[bytes, bytes]] = self.decode(block, raw=True)
        return fields

    def decode(self, data: bytes, raw: bool = False) -> Any:
        table = self.header_table
        assert isinstance(table, _CountedTable)
        blocks = self._blocks
        if table.changes != self._changes:
            blocks.clear()
            self._changes = table.changes
        key = bytes(data)
        fields = blocks.get(key)
        if fields is not None and raw:
            return list(fields)
        decoded = super().decode(data, raw)
        if raw and table.changes == self._changes and len(key) <= _CACHED_BLOCK:  # it changed nothing
            remember(blocks, key, tuple(decoded), _CACHED_BLOCKS)
        return decoded
