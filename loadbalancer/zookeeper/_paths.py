"""ZooKeeper paths and connection strings, checked before anything connects."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence

DEFAULT_ENDPOINTS = "127.0.0.1:2181"


def check_path(path: object, what: str = "path") -> str:
    """Return ``path`` if it is a valid absolute ZooKeeper path, else raise ``ValueError`` quoting it."""
    if not isinstance(path, str):
        raise TypeError(f"{what} must be a string like '/services/api', got {path!r}")

    def bad(reason: str) -> ValueError:
        return ValueError(f"invalid ZooKeeper {what} {path!r}: {reason}")

    if not path.startswith("/"):
        raise bad("it must start with '/'")
    if path == "/":
        return path
    if path.endswith("/"):
        raise bad("it must not end with '/'")
    for part in path[1:].split("/"):
        if not part:
            raise bad("it has an empty component ('//')")
        if part in (".", ".."):
            raise bad(f"{part!r} is not allowed as a component")
    for char in path:
        code = ord(char)
        if code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xF8FF or code >= 0xFFF0:
            raise bad(f"character {char!r} is not allowed")
    return path


def check_endpoints(endpoints: object) -> str:
    """kazoo's connection string (``"h1:2181,h2:2181/chroot"``) from ``endpoints=``: such a string or a sequence.

    Raises ``ValueError`` quoting what was given when a server or the chroot is malformed.
    """
    if isinstance(endpoints, Sequence) and not isinstance(endpoints, str):
        if not all(isinstance(server, str) for server in endpoints):
            raise TypeError(f"endpoints must be strings like '127.0.0.1:2181', got {endpoints!r}")
        joined = ",".join(endpoints)
    elif isinstance(endpoints, str):
        joined = endpoints
    else:
        raise TypeError(f"endpoints must be a connection string like '127.0.0.1:2181', got {endpoints!r}")

    def bad(reason: str) -> ValueError:
        return ValueError(f"invalid ZooKeeper endpoints {endpoints!r}: {reason}")

    servers, slash, chroot = joined.partition("/")
    if slash and chroot:
        try:
            check_path("/" + chroot, "chroot")
        except ValueError as error:
            raise bad(str(error)) from None
    for server in servers.split(","):
        server = server.strip()
        if not server:
            raise bad("a server is missing (empty entry)")
        try:
            parts = urllib.parse.urlsplit("//" + server)
            port, host = parts.port, parts.hostname
        except ValueError as error:
            raise bad(f"{server!r}: {error}") from None
        if not host or parts.path or parts.query or parts.fragment or parts.username is not None:
            raise bad(f"{server!r} is not host[:port]")
        if port == 0:
            raise bad(f"{server!r}: port 0")
    return joined


def child_path(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"
