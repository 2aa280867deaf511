"""Where an etcd cluster is: its members' URLs and the namespace, read from a connection string."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_ENDPOINTS", "Connection", "key_prefix", "parse_endpoints"]

DEFAULT_ENDPOINTS = ("http://127.0.0.1:2379",)
_DEFAULT_PORT = 2379

_ITEM = re.compile(
    r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?(?P<host>\[[^\]/]*\]|[^:/\[\]]*)(?::(?P<port>[^/]*))?(?P<path>/.*)?"
)
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


@dataclass(frozen=True, slots=True)
class Connection:
    """Where a cluster is: its members' base URLs and the namespace every key goes under."""

    members: tuple[str, ...]
    namespace: str  # "" or "/name" (no trailing slash)


def parse_endpoints(
    endpoints: str | Sequence[str], namespace: str | None = None, *, scheme: str = "http"
) -> Connection:
    """Read ``"http://h1:2379,h2:2379/namespace"`` or a sequence of member URLs.

    A member without a scheme takes the scheme of the one before it (``scheme`` for the
    first: ``"https"`` where TLS settings are given); one without a port gets 2379. A path
    after a member is the namespace; all members must agree on it, and so must
    ``namespace=`` when given. Raises ``ValueError`` quoting the value.

    >>> parse_endpoints("10.0.0.1,10.0.0.2:2380/prod", scheme="https")
    Connection(members=('https://10.0.0.1:2379', 'https://10.0.0.2:2380'), namespace='/prod')
    """
    if isinstance(endpoints, str):
        items = endpoints.split(",")
    elif isinstance(endpoints, Sequence) and all(isinstance(item, str) for item in endpoints):
        items = list(endpoints)
    else:
        raise TypeError(f"etcd endpoints must be a string or a sequence of strings, got {endpoints!r}")

    def bad(reason: str) -> ValueError:
        return ValueError(f"invalid etcd endpoints {endpoints!r}: {reason}")

    if not items or not any(item.strip() for item in items):
        raise bad("no member given")
    members: list[str] = []
    paths: set[str] = set()
    for raw in items:
        scheme, member, path = _member(raw.strip(), scheme, bad)
        members.append(member)
        if path is not None:
            paths.add(_namespace(path))
    if len(paths) > 1:
        raise bad(f"members name different namespaces: {sorted(paths)}")
    found = paths.pop() if paths else ""
    if namespace is not None:
        wanted = _namespace(namespace)
        if found and found != wanted:
            raise bad(f"the namespace {found!r} differs from namespace={namespace!r}")
        found = wanted
    if len(set(members)) != len(members):
        raise bad("a member is named twice")
    return Connection(tuple(members), found)


def _member(item: str, scheme: str, bad: Callable[[str], ValueError]) -> tuple[str, str, str | None]:
    """One member: ``(its scheme, its base URL, its path or None)``; ``scheme``: the one it takes if it names none."""
    if not item:
        raise bad("an empty member between commas")
    match = _ITEM.fullmatch(item)
    if match is None or "?" in item or "#" in item or "@" in item:
        raise bad(f"{item!r} is not [scheme://]host[:port][/namespace]")
    if match["scheme"]:
        scheme = match["scheme"].lower()
        if scheme not in ("http", "https"):
            raise bad(f"scheme {match['scheme']!r} is not http or https")
    host = match["host"]
    if not host:
        raise bad(f"{item!r} has no host")
    if host.startswith("["):
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1])}]"
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
    elif not _HOST.fullmatch(host):
        raise bad(f"{host!r} is not a host name or address")
    port = match["port"]
    if port is None:
        number = _DEFAULT_PORT
    elif port.isascii() and port.isdigit() and 1 <= int(port) <= 65535:
        number = int(port)
    else:
        raise bad(f"port {port!r} is not a number in 1-65535")
    return scheme, f"{scheme}://{host}:{number}", match["path"]


def _namespace(path: str) -> str:
    inner = path.strip("/")
    return f"/{inner}" if inner else ""


def key_prefix(namespace: str, prefix: str) -> str:
    """The key prefix watched: ``namespace + prefix + "/"`` (``"/ns" + "/services/api" + "/"``).

    The prefix is used as given (a leading ``/`` is only added after a namespace), so that
    ``"/services/api"`` never also matches ``"/services/api2/..."``.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"the etcd key prefix must be a string, got {prefix!r}")
    body = prefix.strip().rstrip("/")
    if not body and not prefix.strip().startswith("/"):
        raise ValueError(f"invalid etcd key prefix {prefix!r}: it is empty")
    if namespace and not body.startswith("/"):
        body = "/" + body
    return f"{namespace}{body}/"
