"""The proxy's HTTP/2 answer-head encoder: what hpack's own decoder reads back, field for field."""

from __future__ import annotations

import hpack
import pytest

from loadbalancer.proxy import _hpack
from loadbalancer.proxy._hpack import FieldCache

HEAD = [
    (b":status", b"200"),  # a whole static-table entry
    (b"content-type", b"text/html; charset=utf-8"),  # a static-table name
    (b"x-request-id", b"3f2a9c"),  # a new name
    (b"etag", b'"' + b"e" * 200 + b'"'),  # a length past a 7-bit prefix
    (b"x-binary", bytes(range(1, 40))),  # Huffman would be longer: sent raw
    (b"set-cookie", b"s=" + b"v" * 400),  # too long to keep
    (b"x-empty", b""),
]


def test_heads_decode_to_the_fields_sent_and_leave_the_clients_table_empty() -> None:
    encoder, decoder = FieldCache(), hpack.Decoder()
    for _ in range(3):  # the first encodes, the others come from the cache: the same bytes
        assert decoder.decode(encoder.encode(list(HEAD)), raw=True) == HEAD
    assert len(decoder.header_table.dynamic_entries) == 0  # nothing indexed: no size update needed
    assert encoder.encode(iter(HEAD)) == encoder.encode(HEAD)  # any iterable


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_hpack, "_CACHED_FIELDS", 8)
    encoder, decoder = FieldCache(), hpack.Decoder()
    for n in range(50):
        head = [(b":status", b"200"), (b"x-id", b"%d" % n)]
        assert decoder.decode(encoder.encode(head), raw=True) == head
        assert len(encoder._fields) <= 8
    long = [(b"x-long", b"v" * 300)]
    encoder.encode(long)
    assert long[0] not in encoder._fields


def test_the_decode_cache_agrees_with_hpack_through_table_changes() -> None:
    # A client's encoder indexing fields in a small table (entries added and evicted), a size
    # update on the way, and blocks repeated: the cached decoder must read what hpack reads.
    client, plain, cached = hpack.Encoder(), hpack.Decoder(), _hpack.DecodeCache(65536)
    heads = [
        [(b":method", b"GET"), (b":path", b"/a"), (b":scheme", b"https"), (b":authority", b"x")],
        [(b":method", b"GET"), (b":path", b"/b"), (b":scheme", b"https"), (b"x-n", b"1")],
        [(b":method", b"POST"), (b":path", b"/a"), (b"x-n", b"2"), (b"x-long", b"v" * 90)],
    ]
    blocks = []
    for n in range(60):
        if n == 30:
            client.header_table_size = 128  # the client shrinks its table: a size update in the next block
        blocks.append(client.encode(heads[n % 3] if n % 7 else heads[n % 2]))
    for block in blocks:
        expected = plain.decode(block, raw=True)
        try:
            got = cached.decode(block, raw=True)
        except hpack.HPACKDecodingError:
            pytest.fail("the cached decoder failed where hpack did not")
        assert got == expected
    repeated = client.encode(heads[0])
    assert cached.decode(repeated, raw=True) == plain.decode(repeated, raw=True)
    again = client.encode(heads[0])  # all indexed now: a block that changes nothing
    first = cached.decode(again, raw=True)
    assert cached.decode(again, raw=True) == first == plain.decode(again, raw=True)
    assert bytes(again) in cached._blocks  # kept, and given again
