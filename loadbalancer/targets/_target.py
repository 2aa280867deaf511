"""``Target``: a target string taken apart, and the readers of its query options."""

from __future__ import annotations

import ipaddress
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from .._tls import TLSConfig
from ..errors import InvalidTargetError

__all__ = ["Build", "Kind", "Options", "Target", "drop_empty", "host_port", "ip_address", "parse", "tls_config"]

T = TypeVar("T")
Kind = Literal["text", "seconds", "flag"]

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class Build:
    """What a target builds, not built yet: ``make(*args, **kwargs)``; its options are already checked."""

    make: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __call__(self) -> Any:
        return self.make(*self.args, **self.kwargs)


@dataclass(frozen=True)
class Target:
    """A target string taken apart, in gRPC's naming style: ``scheme://authority/path?options``.

    ``authority`` is what sits between ``//`` and the path (servers, maybe ``user:password@``
    first; empty in ``dns:///name`` and in the short form ``dns:name``); ``path`` keeps its
    leading ``/`` where one was written; ``options`` are the query's ``key=value`` pairs (a key
    given twice keeps both values, joined with a comma).

    >>> target = parse("consul://127.0.0.1:8500/api?tag=v2&dc=dc1")
    >>> target.scheme, target.authority, target.name, target.options["dc"]
    ('consul', '127.0.0.1:8500', 'api', 'dc1')
    """

    text: str
    scheme: str
    authority: str
    path: str
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The path without its leading ``/``: a DNS name, a service name."""
        return self.path[1:] if self.path.startswith("/") else self.path

    @property
    def userinfo(self) -> tuple[str, str | None] | None:
        """``(user, password)`` from ``user:password@`` before the servers (percent-decoded), or ``None``."""
        info, at, _ = self.authority.rpartition("@")
        if not at:
            return None
        user, colon, password = info.partition(":")
        return urllib.parse.unquote(user), urllib.parse.unquote(password) if colon else None

    @property
    def hosts(self) -> list[str]:
        """The comma-separated servers of the authority (without ``user:password@``)."""
        servers = self.authority.rpartition("@")[2]
        return [part.strip() for part in servers.split(",") if part.strip()]

    def error(self, reason: str) -> InvalidTargetError:
        """An ``InvalidTargetError`` about this target."""
        return InvalidTargetError(self.text, reason)

    def __str__(self) -> str:
        return self.text


def parse(target: str) -> Target:
    """Take ``target`` apart; raise ``InvalidTargetError`` naming the part that is wrong.

    Only the form is checked here: whether the scheme is known and what its options mean is
    for ``publisher()`` and ``registrar()``.
    """
    if not isinstance(target, str):
        raise InvalidTargetError(target, "a target is a string such as 'dns:///_api._tcp.example.'")
    text = target.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme:
        raise InvalidTargetError(target, "no scheme: write it first, as in 'dns:///_api._tcp.example.'")
    if not _SCHEME.fullmatch(scheme):
        raise InvalidTargetError(target, f"scheme {scheme!r} is not a URI scheme (a letter, then letters or digits)")
    if any(c.isspace() for c in text) or any(ord(c) < 32 for c in text):
        raise InvalidTargetError(target, "it contains white space or control characters")
    if "#" in rest:
        raise InvalidTargetError(target, "a target has no #fragment")
    rest, _, query = rest.partition("?")
    if rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        path = slash + path
    else:
        authority, path = "", rest
    return Target(text, scheme.lower(), authority, urllib.parse.unquote(path), _options(target, query))


def _options(target: str, query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    if not query:
        return options
    for pair in query.split("&"):
        key, equals, value = pair.partition("=")
        key = urllib.parse.unquote_plus(key)
        if not key or not equals:
            raise InvalidTargetError(target, f"query option {pair!r} is not key=value")
        value = urllib.parse.unquote_plus(value)
        options[key] = f"{options[key]},{value}" if key in options else value
    return options


class Options:
    """Reads a target's query options, each converted and checked once; ``finish()`` refuses the rest."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._given = dict(target.options)
        self._known: list[str] = []

    def _take(self, key: str) -> str | None:
        self._known.append(key)
        return self._given.pop(key, None)

    def _convert(self, key: str, kind: str, convert: Callable[[str], T]) -> T | None:
        value = self._take(key)
        if value is None:
            return None
        try:
            return convert(value)
        except ValueError:
            raise self.target.error(f"option {key}={value!r}: not {kind}") from None

    def text(self, key: str) -> str | None:
        """The option as a string (``None`` when not given)."""
        value = self._take(key)
        if value == "":
            raise self.target.error(f"option {key}= is empty")
        return value

    def seconds(self, key: str) -> float | None:
        """A positive number of seconds."""
        return self._convert(key, "a positive number of seconds", _seconds)

    def flag(self, key: str) -> bool | None:
        """``true``/``false`` (also ``1``/``0``, ``yes``/``no``, ``on``/``off``)."""
        return self._convert(key, "true or false", _flag)

    def read(self, key: str, kind: Kind) -> Any:
        """The option read as ``kind``: ``"text"``, ``"seconds"`` or ``"flag"``."""
        return self.text(key) if kind == "text" else self.seconds(key) if kind == "seconds" else self.flag(key)

    def finish(self) -> None:
        """Refuse the options nobody read, listing those the scheme knows."""
        if self._given:
            known = ", ".join(sorted(set(self._known))) or "none"
            unknown = ", ".join(sorted(self._given))
            raise self.target.error(f"unknown option {unknown} (a {self.target.scheme}: target takes {known})")


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or math.isinf(value):
        raise ValueError(text)
    return value


def _flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


def host_port(target: Target, text: str, default_port: int, what: str) -> tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` of ``target``'s authority, with the port checked."""
    host, port = text, default_port
    if text.startswith("["):
        inside, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise target.error(f"{what} {text!r}: an IPv6 address is written [::1]:port")
        host, after = inside, after[1:]
        if after:
            port = _port(target, text, after, what)
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        port = _port(target, text, number, what)
    elif ":" in text:
        raise target.error(f"{what} {text!r}: write an IPv6 address in brackets, [{text}]:port")
    if not host:
        raise target.error(f"{what} {text!r}: no host")
    return host, port


def _port(target: Target, text: str, number: str, what: str) -> int:
    if not number.isascii() or not number.isdigit() or not 0 < int(number) < 65536:
        raise target.error(f"{what} {text!r}: the port is not a number from 1 to 65535")
    return int(number)


def ip_address(target: Target, host: str, what: str) -> str:
    """``host`` if it is an IP address, else an error naming ``what`` it was."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise target.error(f"{what} {host!r}: give an IP address, not a name") from None


def drop_empty(values: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments that were given (``None`` means: the backend's default)."""
    return {key: value for key, value in values.items() if value is not None}


def tls_config(options: Options, env: Mapping[str, str | None] | None = None) -> TLSConfig | None:
    """TLS from the query (``tls``, ``cacert``, ``cert``, ``key``, ``insecure``), else from ``env``'s same keys.

    Any of the files, or ``insecure=true``, turns TLS on; ``tls=true`` alone trusts the system's CAs.
    """
    env = env or {}
    on = options.flag("tls")
    files = {key: options.text(key) or env.get(key) for key in ("cacert", "cert", "key")}
    insecure = options.flag("insecure")
    if insecure is None and env.get("insecure") is not None:
        insecure = _flag(env["insecure"] or "false")
    if on is False:
        if any(files.values()) or insecure:
            raise options.target.error("tls=false contradicts the cacert=, cert=, key= or insecure= also given")
        return None
    if not (on or any(files.values()) or insecure):
        return None
    try:
        return TLSConfig(ca=files["cacert"], cert=files["cert"], key=files["key"], verify=not insecure)
    except (TypeError, ValueError) as error:
        raise options.target.error(str(error)) from None
