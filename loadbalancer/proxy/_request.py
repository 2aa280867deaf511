"""A request as the proxy holds it (either protocol), and the checks it must pass before a backend sees it."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["HOP_BY_HOP", "Refusal", "Request", "check", "dropped"]

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization", b"te",
     b"trailer", b"transfer-encoding", b"upgrade"}
)  # fmt: skip

# RFC 3986's host (an IP literal in brackets, or a reg-name/IPv4 address) and an optional port.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{1,5})?")


def dropped(base: frozenset[bytes], connection: bytes) -> frozenset[bytes]:
    """``base`` and the fields a Connection field's value names (hop-by-hop too)."""
    named = [token.strip().lower() for token in connection.split(b",")]
    extra = [name for name in named if name not in base and name != b"close"]
    return base.union(extra) if extra else base  # "keep-alive" and "close", nearly always: nothing to add


Refusal = tuple[int, bytes]
"""An answer of the proxy's own instead of a backend's: status and plain-text body."""


class Request:
    """One request, from its head on: what was parsed, its body in transit, the attempt serving it."""

    __slots__ = (
        "answered", "attempt", "body_done", "chunked", "connection", "expect", "has_body", "headers", "host",
        "hosts", "keep_alive", "method", "pending", "pending_bytes", "refusal", "serving", "stream", "upgrade",
        "upstream", "url", "version",
    )  # fmt: skip

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.version = b"1.1"
        self.headers: list[tuple[bytes, bytes]] = []  # names lowered
        self.host = b""
        self.hosts = 0  # Host fields seen
        self.connection = b""  # the Connection header (what it names is hop-by-hop)
        self.keep_alive = True
        self.has_body = False
        self.chunked = False
        self.expect = False
        self.upgrade = b""  # the protocol asked for, when relayed (websocket)
        self.body_done = False
        self.answered = False  # the answer's head went to the client
        self.pending: list[bytes] = []  # body received before a backend took it (kept for a retry)
        self.pending_bytes = 0
        self.upstream: Any = None  # the backend connection taking the body as it arrives
        self.attempt: Any = None  # the attempt serving it now
        self.serving: Any = None  # what carries it while forwarded (an attempt or a task): cancel() gives it up
        self.stream: Any = None  # HTTP/2: its stream
        self.refusal: Refusal | None = None  # answered by the proxy itself, never forwarded

    def cache_key_url(self, scheme: bytes) -> bytes:
        """The URL a cached answer is stored under, from validated parts only."""
        return scheme + b"://" + self.host.lower() + self.url


def valid_host(value: bytes) -> bool:
    """Whether ``value`` is a host with an optional port, as a Host header or ``:authority`` carries it."""
    return _HOST.fullmatch(value) is not None


def check(request: Request) -> Refusal | None:
    """Refuse what must not reach a backend (a ``Refusal``); rewrite an absolute-form target to origin form."""
    method = request.method
    if method == b"CONNECT":
        return 405, b"CONNECT is not served by this proxy\n"
    if request.hosts > 1:
        return 400, b"more than one Host header\n"
    url = request.url
    if url[:1] != b"/":
        if url == b"*":
            if method != b"OPTIONS":
                return 400, b"the target * is for OPTIONS only\n"
        else:
            return _absolute_form(request)
    if not request.host:
        if request.version != b"1.0" or request.hosts:
            return 400, b"missing Host header\n"
    elif not valid_host(request.host):
        return 400, b"invalid Host header\n"
    return None


def _absolute_form(request: Request) -> Refusal | None:
    """``GET http://host/path``: the target's authority wins over any Host header (RFC 9112, 3.2.2)."""
    scheme, separator, rest = request.url.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        return 400, b"malformed request target\n"
    end = len(rest)
    for mark in (b"/", b"?"):
        found = rest.find(mark)
        if 0 <= found < end:
            end = found
    authority, path = rest[:end], rest[end:]
    if not valid_host(authority):
        return 400, b"invalid host in the request target\n"
    request.host = authority
    request.url = path if path.startswith(b"/") else b"/" + path
    return None
