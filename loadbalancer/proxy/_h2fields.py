"""The checks RFC 9113 puts on a request's HTTP/2 header block (8.2, 8.3), in one pass.

h2 can check what it receives itself, with a chain of generators over every field; that costs
about a quarter of h2's work on a request. The proxy checks the same rules here, on the list
it reads anyway, and resets a malformed request's stream (PROTOCOL_ERROR, 8.1.1) before any
backend sees it. Field names are held to RFC 9110's token, lowercase (stricter than h2).
"""

from __future__ import annotations

__all__ = ["malformed"]

_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
_CONNECTION_SPECIFIC = frozenset({b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"})
_TOKEN = b"abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~"  # RFC 9110's tchar, lowercase
_FORBIDDEN = b"\x00\r\n"  # in a value (RFC 9113, 8.2.1)
# (translate() and strip() give the very same object back when they change nothing: one C call
# a check, where a regular expression's match costs several times more)


def malformed(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request header block is malformed, or None when it is not."""
    pseudo: dict[bytes, bytes] = {}
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return f"pseudo-header field {name!r} after a regular field"
            if name not in _PSEUDO:
                return f"unknown pseudo-header field {name!r}"
            if name in pseudo:
                return f"pseudo-header field {name!r} twice"
            pseudo[name] = value
        else:
            regular = True
            if not name or name.translate(None, _TOKEN):
                return f"invalid field name {name!r}"
            if name in _CONNECTION_SPECIFIC:
                return f"connection-specific field {name!r}"
            if name == b"te" and value.lower() != b"trailers":
                return "TE other than trailers"
        if value.translate(None, _FORBIDDEN) is not value or value.strip(b" \t") is not value:
            return f"invalid value of {name!r}"  # NUL, CR or LF, or white space first or last
    method = pseudo.get(b":method")
    if method is None:
        return "no :method"
    if method == b"CONNECT" and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo:
            return "a CONNECT with :scheme or :path"
        return None
    if b":scheme" not in pseudo or not pseudo.get(b":path"):
        return "no :scheme, or no or an empty :path"
    if b":protocol" in pseudo and method != b"CONNECT":
        return ":protocol on a request other than CONNECT"
    return None
