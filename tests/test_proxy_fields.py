"""An answer head's fields read off its bytes (``_fields``), checked against httptools' own per-field callbacks."""

from __future__ import annotations

import random

import httptools
import pytest

from loadbalancer.proxy._fields import _CANDIDATES, EMPTY, Fields, LoweredLines, read_answer_head
from loadbalancer.proxy._request import HOP_BY_HOP, dropped

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 21:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n"
    b"Last-Modified: Sun, 06 Dec 2026 20:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6765-400"\r\nAccept-Ranges: bytes\r\n\r\n'
)


def lines_of(head: bytes) -> bytes:
    """What the upstream connection hands over: the status line and each field line, with its CRLF."""
    return head[: head.find(b"\r\n\r\n") + 2]


class Parsed:
    """The fields as httptools reports them one by one (the parser checks the head on the way)."""

    def __init__(self, head: bytes) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        httptools.HttpResponseParser(self).feed_data(head)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))


Read = tuple[list[bytes], list[tuple[bytes, bytes]], bytes | None, bool, list[bytes], bytes]


def tokens(connection: bytes) -> list[bytes]:
    return [token.strip().lower() for token in connection.split(b",") if token.strip()]


def expected(head: bytes) -> Read:
    """What RFC 9110 says the proxy passes on, from httptools' fields: the end-to-end lines as sent, and the framing."""
    fields = Parsed(head).fields
    values: dict[bytes, list[bytes]] = {}
    for name, value in fields:
        values.setdefault(name.lower(), []).append(value.strip(b" \t"))
    connection = b",".join(values.get(b"connection", []))
    cut = dropped(HOP_BY_HOP | {b"content-length"}, connection)
    lines = head.split(b"\r\n")[1:-2]
    assert len(lines) == len(fields)
    kept_lines = [line for line, (name, _) in zip(lines, fields, strict=True) if name.lower() not in cut]
    kept = [(name, value.strip(b" \t")) for name, value in fields if name.lower() not in cut]
    length = values.get(b"content-length", [None])[-1]
    upgrade = values.get(b"upgrade", [b""])[-1]
    return kept_lines, kept, length, b"transfer-encoding" in values, tokens(connection), upgrade


def read(head: bytes) -> Read:
    fields, length, transfer_encoding, connection, upgrade = read_answer_head(lines_of(head))
    assert Fields(fields.block).pairs() == fields.pairs()  # the two forms agree
    return fields.block.split(b"\r\n")[:-1], fields.pairs(), length, transfer_encoding, tokens(connection), upgrade


def test_an_nginx_answer_loses_its_length_and_connection_and_keeps_the_rest_as_sent() -> None:
    fields, length, transfer_encoding, connection, upgrade = read_answer_head(lines_of(NGINX))
    assert fields.block == (
        b"Server: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 21:00:00 GMT\r\nContent-Type: application/octet-stream\r\n"
        b'Last-Modified: Sun, 06 Dec 2026 20:00:00 GMT\r\nETag: "6765-400"\r\nAccept-Ranges: bytes\r\n'
    )
    assert (length, transfer_encoding, connection, upgrade) == (b"1024", False, b"keep-alive", b"")
    assert fields.pairs()[0] == (b"Server", b"nginx/1.22.1")


def test_names_are_matched_whatever_their_case_and_only_whole() -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nCONTENT-length:   7  \r\nKeep-Alive: timeout=5\r\nTE-Extra: kept\r\n"
        b"Connection-Info: kept\r\nUpgraded: kept\r\nX-Trailer: kept\r\nproxy-authenticate: Basic\r\n"
        b"Trailer: X-Sum\r\nte: trailers\r\n\r\n"
    )
    fields, length, transfer_encoding, connection, _ = read_answer_head(lines_of(head))
    assert fields.block == b"TE-Extra: kept\r\nConnection-Info: kept\r\nUpgraded: kept\r\nX-Trailer: kept\r\n"
    assert length == b"7" and not transfer_encoding and connection == b""


def test_fields_the_connection_field_names_are_cut_too() -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, X-Hop\r\nX-Hop: this hop only\r\nx-end: to-end\r\n"
        b"CONNECTION: x-other\r\nX-Other: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    fields, length, transfer_encoding, connection, _ = read_answer_head(lines_of(head))
    assert fields.pairs() == [(b"x-end", b"to-end")]
    assert fields.block == b"x-end: to-end\r\n"
    assert length is None and transfer_encoding and connection == b"Keep-Alive, X-Hop,x-other"


def test_a_switch_keeps_the_protocol_name_as_sent_and_a_head_without_fields_reads_empty() -> None:
    head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket \r\nConnection: upgrade\r\n\r\n"
    fields, _, _, connection, upgrade = read_answer_head(lines_of(head))
    assert fields.block == b"" and fields.pairs() == [] and upgrade == b"WebSocket" and connection == b"upgrade"
    empty, length, _, _, _ = read_answer_head(lines_of(b"HTTP/1.1 204 No Content\r\n\r\n"))
    assert empty.block == b"" and length is None


def test_fields_made_from_pairs_and_added_to() -> None:
    fields = Fields.of([(b"content-type", b"text/plain")])
    more = fields.plus([(b"age", b"3")])
    assert more.block == b"content-type: text/plain\r\nage: 3\r\n"
    assert more.pairs() == [(b"content-type", b"text/plain"), (b"age", b"3")]
    assert Fields(more.block).pairs() == more.pairs()  # read back from the bytes alone
    assert fields.block == b"content-type: text/plain\r\n"  # unchanged


NAMES = [
    b"Server", b"Date", b"Content-Type", b"Content-Length", b"content-length", b"Connection", b"CONNECTION",
    b"Keep-Alive", b"Transfer-Encoding", b"TE", b"Trailer", b"Upgrade", b"Proxy-Connection", b"Proxy-Authenticate",
    b"Proxy-Authorization", b"X-Hop", b"x-hop", b"Set-Cookie", b"Cache-Control", b"TE-X", b"Trailers", b"Con",
    b"Connection-X", b"ETag", b"Vary", b"Upgrade-Insecure", b"P", b"T", b"U",
]  # fmt: skip
VALUES = [b"", b"1", b"12", b"keep-alive", b"close", b"X-Hop", b"x-hop, Vary", b"a b", b"  padded  ", b"chunked"]


@pytest.mark.parametrize("seed", range(300))
def test_random_heads_read_as_httptools_reads_them(seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for _ in range(rng.randrange(0, 12)):
        name = rng.choice(NAMES)
        if name.lower() == b"content-length":
            value = rng.choice([b"0", b"5", b"  5 "])
        elif name.lower() == b"transfer-encoding":
            value = b"chunked"
        else:
            value = rng.choice(VALUES)
        lines.append(name + b":" + rng.choice([b"", b" ", b"\t "]) + value)
    head = b"HTTP/1.1 200 OK\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    try:
        want = expected(head)
    except httptools.HttpParserError:
        return  # (two Content-Lengths, or one beside Transfer-Encoding: the parser refuses it first)
    got = read(head)
    if got[1] != want[1] or got[2:] != want[2:]:
        raise AssertionError(f"{head!r}: {got} != {want}")
    cut_by_connection = set(want[4]) - {b"keep-alive", b"close"} - HOP_BY_HOP
    if not cut_by_connection:
        assert got[0] == want[0]  # the backend's own bytes


def test_http2_pairs_are_lowered_read_once_a_line_and_bounded() -> None:
    lowered = LoweredLines()
    fields, *_ = read_answer_head(lines_of(NGINX))
    want = [(name.lower(), value) for name, value in fields.pairs()]
    assert lowered.pairs(fields) == want
    again, *_ = read_answer_head(lines_of(NGINX.replace(b"21:00:00", b"21:00:01")))  # one line new
    assert lowered.pairs(again) == [(n, v.replace(b"21:00:00", b"21:00:01")) for n, v in want]
    assert lowered.pairs(Fields(b"X-Pad:   a b  \r\n")) == [(b"x-pad", b"a b")]
    assert lowered.pairs(EMPTY) == []
    long = Fields(b"Set-Cookie: " + b"c" * 300 + b"\r\n")
    assert lowered.pairs(long) == [(b"set-cookie", b"c" * 300)]
    for index in range(2000):  # every line new: the cache stays bounded
        assert lowered.pairs(Fields(b"X-N: %d\r\n" % index)) == [(b"x-n", b"%d" % index)]
    assert len(lowered._pairs) <= 512


def test_answer_lines_that_could_be_cut_are_remembered_within_a_bound() -> None:
    for index in range(2000):  # every candidate line new: the cache stays bounded, and each is read right
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nCache-Control: max-age=%d\r\nDate: d\r\n\r\n" % (index, index)
        fields, length, *_ = read_answer_head(lines_of(head))
        assert length == b"%d" % index and fields.block == b"Cache-Control: max-age=%d\r\nDate: d\r\n" % index
    assert len(_CANDIDATES) <= 512
    long = b"Content-Type: " + b"t" * 300
    head = b"HTTP/1.1 200 OK\r\n%b\r\nConnection: x\r\n\r\n" % long
    for _ in range(2):  # too long to keep: read each time, the same way
        fields, length, _, connection, _ = read_answer_head(lines_of(head))
        assert fields.block == long + b"\r\n" and length is None and connection == b"x"
    assert long not in _CANDIDATES
