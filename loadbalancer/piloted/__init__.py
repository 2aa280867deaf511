"""go-piloted for Python: a containerised application's backends, from ContainerPilot's Consul.

As in Go::

    piloted.Config("")                       piloted.config("")   # path, or $CONTAINERPILOT
    ep, err := piloted.Service("db")         ep = piloted.service("db")
    fmt.Sprintf("%s:%d", ep.Address, ep.Port) f"{ep.address}:{ep.port}"

``config(path)`` reads the ContainerPilot configuration (v2 JSON with ``backends``, v3
JSON5 with ``watches``), rendered first as ContainerPilot renders it (``{{ .VAR }}``,
``default``, ``env``, ``split``, ``join``, ``replace``, ``regexReplaceAll``, ``loop``).
``service(name)`` returns one ``Endpoint`` (``.address``, ``.port``) of a configured
backend, round robin in the order Consul answers; the backends are polled every
``poll``/``interval`` seconds and all refreshed on SIGHUP (a ``service()`` call waits for
the refresh). ``Piloted(path)`` is the object under those functions, for more than one.

Errors, each its own class (all ``PilotedError``): ``NoConfigError`` (path and
``CONTAINERPILOT`` both blank), ``ConfigNotFoundError``, ``TemplateError`` and
``ConfigSyntaxError`` (with the line), ``ConfigError``, ``ServiceNotConfiguredError``,
``NoHealthyInstanceError``, ``NotConfiguredError`` (``service()`` before ``config()``).

Needs the ``consul`` extra: ``pip install 'loadbalancer[consul]'``.
"""

try:
    import httpx  # noqa: F401
    import json5  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "loadbalancer.piloted needs httpx and json5, which are not installed: pip install 'loadbalancer[consul]'"
    ) from error

from ._config import (
    ENV,
    Config,
    ConfigError,
    ConfigNotFoundError,
    ConfigSyntaxError,
    NoConfigError,
    NoHealthyInstanceError,
    NotConfiguredError,
    ServiceNotConfiguredError,
    Watch,
    load_config,
    parse_config,
)
from ._errors import PilotedError
from ._piloted import Endpoint, Piloted, config, refresh, service
from ._template import TemplateError, render

__all__ = [
    "ENV",
    "Config",
    "ConfigError",
    "ConfigNotFoundError",
    "ConfigSyntaxError",
    "Endpoint",
    "NoConfigError",
    "NoHealthyInstanceError",
    "NotConfiguredError",
    "Piloted",
    "PilotedError",
    "ServiceNotConfiguredError",
    "TemplateError",
    "Watch",
    "config",
    "load_config",
    "parse_config",
    "refresh",
    "render",
    "service",
]
