"""Which Consul agent, and how to speak to it: the arguments given, else Consul's own environment variables.

Read as Consul's CLI and Go API client read them; an argument given beats its variable:

- ``endpoints=``, else ``CONSUL_HTTP_ADDR``, else ``http://127.0.0.1:8500``: the agent,
  ``host:port`` or ``http[s]://host:port``;
- ``token=``, else the contents of the file ``CONSUL_HTTP_TOKEN_FILE`` names, else
  ``CONSUL_HTTP_TOKEN``: the ACL token;
- ``tls=``, else ``CONSUL_HTTP_SSL`` (``true``: speak https), ``CONSUL_CACERT``,
  ``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY`` and ``CONSUL_HTTP_SSL_VERIFY`` (``false``:
  do not check the agent's certificate).

https is spoken where the address says ``https://`` or where TLS is asked for (``tls=``
other than ``None``/``False``, or ``CONSUL_HTTP_SSL=true``); as in Consul, an ``http://``
in the address never turns TLS that was asked for off.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._deprecated import warn
from .._httpurl import base_url
from .._tls import TLS, TLSConfig, ssl_context, verify_context
from .._util import describe

__all__ = ["DEFAULT_ADDRESS", "Connection", "OldTLS", "connection", "old_tls", "parse_address"]

DEFAULT_ADDRESS = "http://127.0.0.1:8500"
_PORT = 8500  # Consul's HTTP port

# Go's strconv.ParseBool, which Consul reads its boolean variables with
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the agent is and how to speak to it."""

    url: str  # "http[s]://host:port"
    token: str | None
    verify: ssl.SSLContext | bool  # what httpx takes: a context, True for its own default, False for none


@dataclass(frozen=True, slots=True)
class OldTLS:
    """TLS settings given as the deprecated ``verify=``/``cert=``: as before, only an ``https://`` address uses them.

    (``_tls.legacy_tls`` would make them a TLS request, switching a plain address to https.)
    """

    verify: bool | str | ssl.SSLContext
    cert: str | tuple[str, str] | None

    def context(self) -> ssl.SSLContext | bool:
        if isinstance(self.verify, bool) and self.cert is None:
            return self.verify  # httpx's own default context (or none) does
        return verify_context(self.verify, self.cert)


def old_tls(options: dict[str, Any], old: str, value: Any) -> None:
    """Fold the deprecated ``verify=`` and ``cert=`` into ``tls=`` (a ``_deprecated.renamed`` converter)."""
    warn(f"{old}= is deprecated: write tls=loadbalancer.TLSConfig(...) (or an ssl.SSLContext)", stacklevel=4)
    if old == "verify":
        verify, cert = value, options.pop("cert", None)
    else:
        verify, cert = options.pop("verify", True), value
    if options.get("tls") is not None:
        raise TypeError("give TLS settings as tls= alone, not with verify= or cert=")
    options["tls"] = OldTLS(verify, cert)


def parse_address(address: str) -> str:
    """``"host:port"`` or ``"http[s]://host:port"`` as a base URL (port 8500 unless given, 443 for https)."""
    return base_url(address, default_port=_PORT, what="Consul address")


def connection(
    endpoints: str | Sequence[str] | None,
    token: str | None,
    tls: TLS | OldTLS,
    environ: Mapping[str, str] = os.environ,
) -> Connection:
    """The agent's URL, the token and the TLS context from the arguments, else from ``environ``."""
    address = _one_address(endpoints, "endpoints")
    if address is None:
        address = _one_address(_env(environ, "CONSUL_HTTP_ADDR"), "CONSUL_HTTP_ADDR") or DEFAULT_ADDRESS
    url, verify = _scheme_and_context(parse_address(address), tls, environ)
    return Connection(url, _token(token, environ), verify)


def _one_address(endpoints: str | Sequence[str] | None, name: str) -> str | None:
    if endpoints is None:
        return None
    if isinstance(endpoints, str):
        items = endpoints.split(",")
    elif isinstance(endpoints, Sequence) and all(isinstance(item, str) for item in endpoints):
        items = list(endpoints)
    else:
        raise TypeError(
            f"{name} must be a Consul agent's address (a string or a one-element sequence), got {endpoints!r}"
        )
    found = [item.strip() for item in items if item.strip()]
    if not found:
        raise ValueError(f"invalid Consul address {endpoints!r} ({name}): give host:port or http[s]://host:port")
    if len(found) > 1:
        raise ValueError(
            f"{name}={endpoints!r} names {len(found)} addresses, but a Consul client talks to one agent"
            " (the local agent forwards to the servers): give one"
        )
    return found[0]


def _scheme_and_context(url: str, tls: TLS | OldTLS, environ: Mapping[str, str]) -> tuple[str, ssl.SSLContext | bool]:
    if isinstance(tls, OldTLS):
        return url, tls.context() if url.startswith("https://") else True
    if tls is None:
        asked, tls = _environment_tls(environ)
    else:
        asked = tls is not False
    if not (asked or url.startswith("https://")):
        return url, True
    context = ssl_context(tls)
    return "https://" + url.split("://", 1)[1], True if context is None else context


def _environment_tls(environ: Mapping[str, str]) -> tuple[bool, TLSConfig | None]:
    """Whether ``CONSUL_HTTP_SSL`` asks for https, and the TLS settings of the other variables (``None``: none)."""
    https = _flag(environ, "CONSUL_HTTP_SSL", default=False)
    verify = _flag(environ, "CONSUL_HTTP_SSL_VERIFY", default=True)
    ca, cert, key = (_env(environ, name) for name in ("CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"))
    if key is not None and cert is None:
        raise ValueError(
            f"CONSUL_CLIENT_KEY={key!r} is set without CONSUL_CLIENT_CERT: give the certificate it belongs to"
        )
    if ca is None and cert is None and verify:
        return https, None
    return https, TLSConfig(ca=ca, cert=cert, key=key, verify=verify)


def _token(token: str | None, environ: Mapping[str, str]) -> str | None:
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError(f"invalid Consul ACL token {token!r}: give a non-empty string or None")
        return token
    path = _env(environ, "CONSUL_HTTP_TOKEN_FILE")
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(
                f"cannot read the Consul ACL token file CONSUL_HTTP_TOKEN_FILE={path!r}: {describe(error)}"
            ) from None
        if text:
            return text
    return _env(environ, "CONSUL_HTTP_TOKEN")


def _env(environ: Mapping[str, str], name: str) -> str | None:
    return environ.get(name) or None  # set but empty is unset, as in Consul


def _flag(environ: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = _env(environ, name)
    if value is None:
        return default
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError(f"invalid {name}={value!r}: give true or false (or 1/0, t/f)")
