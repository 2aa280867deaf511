"""ContainerPilot's configuration, as go-piloted reads it: a template rendered, then JSON (v2) or JSON5 (v3)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import json5

from .._httpurl import base_url
from .._tls import TLSConfig
from ..errors import NoEndpointsError
from ._errors import PilotedError
from ._template import TemplateError, render

__all__ = [
    "ENV",
    "Config",
    "ConfigError",
    "ConfigNotFoundError",
    "ConfigSyntaxError",
    "NoConfigError",
    "NoHealthyInstanceError",
    "NotConfiguredError",
    "PilotedError",
    "ServiceNotConfiguredError",
    "TemplateError",
    "Watch",
    "load_config",
    "parse_config",
]

ENV = "CONTAINERPILOT"


class NoConfigError(PilotedError, ValueError):
    """Neither a path nor the ``CONTAINERPILOT`` environment variable names a configuration file."""


class ConfigNotFoundError(PilotedError, FileNotFoundError):
    """The configuration file named does not exist (or cannot be read); ``path`` names it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"ContainerPilot configuration {path!r} cannot be read: {reason}")
        self.path = path


class ConfigError(PilotedError, ValueError):
    """The configuration is read but does not say what go-piloted needs (the message names the value)."""


class ConfigSyntaxError(ConfigError):
    """The rendered configuration is not valid JSON5; ``line`` is where the parser stopped."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        where = f"line {line}" if line is not None else "somewhere"
        super().__init__(f"ContainerPilot configuration {path!r}: {where}: {reason}")
        self.path = path
        self.line = line


class NotConfiguredError(PilotedError, RuntimeError):
    """``piloted.service()`` was called before ``piloted.config()``."""


class ServiceNotConfiguredError(PilotedError, LookupError):
    """The service asked for is not one of the configuration's backends (watches); ``service`` names it."""

    def __init__(self, service: str, path: str, configured: list[str]) -> None:
        known = ", ".join(repr(n) for n in configured) or "none"
        super().__init__(f"service {service!r} is not configured in {path!r} (configured: {known})")
        self.service = service


class NoHealthyInstanceError(PilotedError, NoEndpointsError):
    """Consul has no healthy (passing) instance of the service; ``service`` names it."""

    def __init__(self, service: str, detail: str, *, error: BaseException | None = None) -> None:
        super().__init__(f"service {service!r} has no healthy instance: {detail}", error=error)
        self.service = service


@dataclass(frozen=True, slots=True)
class Watch:
    """One backend (v2) or watch (v3): Consul service ``name``, polled every ``interval`` seconds."""

    name: str
    interval: float
    tag: str | None = None
    datacenter: str | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """What go-piloted takes from a ContainerPilot configuration."""

    path: str
    version: int
    consul: str  # the agent's URL
    watches: tuple[Watch, ...]
    token: str | None = None
    verify: bool | str = True  # consul.tls.verify, or its cafile
    cert: str | tuple[str, str] | None = None  # consul.tls.clientcert (and clientkey)

    @property
    def tls(self) -> TLSConfig | None:
        """The ``tls=`` for ``consul.Client``: the file's TLS settings where the agent speaks https, else ``None``.

        >>> Config("cp.json5", 3, "https://c:8501", (), verify="ca.pem").tls
        TLSConfig(ca='ca.pem', cert=None, key=None, verify=True)
        """
        if not self.consul.startswith("https://") or (self.verify is True and self.cert is None):
            return None  # as ContainerPilot: the scheme decides; none given: Consul's variables may
        cert, key = (self.cert, None) if self.cert is None or isinstance(self.cert, str) else self.cert
        ca = self.verify if isinstance(self.verify, str) else None
        return TLSConfig(ca=ca, cert=cert, key=key, verify=self.verify is not False)

    def watch(self, name: str) -> Watch | None:
        for watch in self.watches:
            if watch.name == name:
                return watch
        return None


_JSON5_LINE = re.compile(r"^<string>:(\d+)\s*(.*)$", re.DOTALL)


def load_config(path: str = "", env: Mapping[str, str] | None = None) -> Config:
    """Read the configuration at ``path`` (``CONTAINERPILOT`` when blank), render and parse it."""
    environ = os.environ if env is None else env
    chosen = path.strip() if isinstance(path, str) else path
    if not isinstance(chosen, str):
        raise TypeError(f"path must be a string, got {path!r}")
    if not chosen:
        chosen = environ.get(ENV, "").strip()
        if chosen.startswith("file://"):
            chosen = chosen[len("file://") :]
    if not chosen:
        raise NoConfigError(f"no ContainerPilot configuration: the path is blank and so is ${ENV}")
    try:
        text = Path(chosen).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigNotFoundError(chosen, "no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigNotFoundError(chosen, str(error)) from None
    return parse_config(text, environ, path=chosen)


def parse_config(text: str, env: Mapping[str, str], *, path: str = "<config>") -> Config:
    """``text`` (a template) rendered with ``env`` and parsed."""
    rendered = render(text, env, name=path)
    try:
        document = json5.loads(rendered)
    except ValueError as error:
        match = _JSON5_LINE.match(str(error))
        if match is None:
            raise ConfigSyntaxError(path, None, str(error)) from None
        raise ConfigSyntaxError(path, int(match.group(1)), match.group(2)) from None
    if not isinstance(document, dict):
        raise ConfigError(f"ContainerPilot configuration {path!r}: expected an object, got {type(document).__name__}")
    if "watches" in document or "jobs" in document:
        return _v3(document, path)
    return _v2(document, path)


def _bad(path: str, what: str, value: Any, reason: str) -> ConfigError:
    return ConfigError(f"ContainerPilot configuration {path!r}: invalid {what} {value!r}: {reason}")


def _interval(path: str, item: Mapping[str, Any], key: str, name: str) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _bad(path, f"{key} of {name!r}", value, "a positive number of seconds is required")
    return float(value)


def _optional(path: str, item: Mapping[str, Any], key: str, name: str) -> str | None:
    value = item.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise _bad(path, f"{key} of {name!r}", value, "a string is required")
    return value


def _name(path: str, item: Any, what: str) -> str:
    if not isinstance(item, dict):
        raise _bad(path, what, item, "an object is required")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(path, f"name of a {what}", name, "a non-empty string is required")
    return name


def _v2(document: dict[str, Any], path: str) -> Config:
    consul = document.get("consul")
    if not isinstance(consul, str) or not consul:
        raise _bad(path, "consul", consul, 'give the agent\'s address, such as "localhost:8500"')
    backends = document.get("backends") or []
    if not isinstance(backends, list):
        raise _bad(path, "backends", backends, "a list is required")
    watches = []
    for item in backends:
        name = _name(path, item, "backend")
        watches.append(Watch(name, _interval(path, item, "poll", name), _optional(path, item, "tag", name)))
    return Config(path, 2, _address(path, consul, None), tuple(watches))


def _v3(document: dict[str, Any], path: str) -> Config:
    consul = document.get("consul")
    token = None
    verify: bool | str = True
    cert: str | tuple[str, str] | None = None
    if isinstance(consul, dict):
        address = consul.get("address")
        scheme = consul.get("scheme")
        token = consul.get("token") or None
        tls = consul.get("tls") or {}
        if not isinstance(tls, dict):
            raise _bad(path, "consul.tls", tls, "an object is required")
        if tls.get("cafile"):
            verify = str(tls["cafile"])
        if tls.get("verify") is False:
            verify = False
        if tls.get("clientcert"):
            cert = (str(tls["clientcert"]), str(tls["clientkey"])) if tls.get("clientkey") else str(tls["clientcert"])
    else:
        address, scheme = consul, None
    if not isinstance(address, str) or not address:
        raise _bad(path, "consul", consul, 'give the agent\'s address, such as "localhost:8500"')
    watches_ = document.get("watches") or []
    if not isinstance(watches_, list):
        raise _bad(path, "watches", watches_, "a list is required")
    watches = []
    for item in watches_:
        name = _name(path, item, "watch")
        watches.append(
            Watch(
                name,
                _interval(path, item, "interval", name),
                _optional(path, item, "tag", name),
                _optional(path, item, "dc", name),
            )
        )
    return Config(path, 3, _address(path, address, scheme), tuple(watches), token, verify, cert)


def _address(path: str, address: str, scheme: Any) -> str:
    if scheme not in (None, "", "http", "https"):
        raise _bad(path, "consul.scheme", scheme, 'use "http" or "https"')
    if "://" not in address:
        address = f"{scheme or 'http'}://{address}"
    try:
        return base_url(address, default_port=8500, what="Consul address")  # Consul's HTTP port
    except ValueError as error:
        raise _bad(path, "consul", address, str(error)) from None
