"""RFC 9113's rules for a request's HTTP/2 header block, as the proxy checks them (``_h2fields``)."""

from __future__ import annotations

import pytest

from loadbalancer.proxy._h2fields import malformed

GOOD = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/a?b"), (b":authority", b"example.com")]


@pytest.mark.parametrize(
    "headers",
    [
        GOOD,
        [*GOOD, (b"accept", b"*/*"), (b"x-empty", b""), (b"te", b"Trailers"), (b"cookie", b"a=1; b=2")],
        [(b":method", b"CONNECT"), (b":authority", b"example.com:443")],  # ordinary CONNECT: no :scheme, :path
        [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"), (b":path", b"/chat")],
        [*GOOD[:3], (b"host", b"example.com"), (b"x-tab", b"a\tb")],  # inner whitespace is fine
    ],
)
def test_well_formed_blocks_pass(headers: list[tuple[bytes, bytes]]) -> None:
    assert malformed(headers) is None


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ([*GOOD, (b"X-Upper", b"1")], "invalid field name"),
        ([*GOOD, (b"x y", b"1")], "invalid field name"),
        ([*GOOD, (b"x:y", b"1")], "invalid field name"),
        ([*GOOD, (b"", b"1")], "invalid field name"),
        ([*GOOD, (b"x\x7f", b"1")], "invalid field name"),
        ([*GOOD, (b"x", b"a\r\nb")], "invalid value"),
        ([*GOOD, (b"x", b"a\x00")], "invalid value"),
        ([*GOOD, (b"x", b" a")], "invalid value"),
        ([*GOOD, (b"x", b"a\t")], "invalid value"),
        ([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/\n")], "invalid value"),
        ([*GOOD, (b"connection", b"close")], "connection-specific"),
        ([*GOOD, (b"transfer-encoding", b"chunked")], "connection-specific"),
        ([*GOOD, (b"upgrade", b"h2c")], "connection-specific"),
        ([*GOOD, (b"keep-alive", b"5")], "connection-specific"),
        ([*GOOD, (b"te", b"gzip")], "TE other than trailers"),
        ([*GOOD, (b":status", b"200")], "unknown pseudo-header"),
        ([(b"accept", b"*/*"), *GOOD], "after a regular field"),
        ([*GOOD, (b":path", b"/b")], "twice"),
        ([(b":scheme", b"https"), (b":path", b"/")], "no :method"),
        ([(b":method", b"GET"), (b":path", b"/")], "no :scheme"),
        ([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"")], "no :scheme, or no or an empty :path"),
        ([(b":method", b"CONNECT"), (b":scheme", b"https"), (b":authority", b"a:1")], "CONNECT with :scheme"),
        ([*GOOD, (b":protocol", b"websocket")], ":protocol on a request other than CONNECT"),
    ],
)
def test_malformed_blocks_are_named(headers: list[tuple[bytes, bytes]], why: str) -> None:
    reason = malformed(headers)
    assert reason is not None and why in reason, reason
