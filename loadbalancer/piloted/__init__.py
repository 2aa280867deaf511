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

Consul is reached through ``consul.Client``: what the configuration does not say (the
token, TLS settings) is read from Consul's environment variables (``CONSUL_HTTP_TOKEN``,
``CONSUL_HTTP_SSL``, ``CONSUL_CACERT``, ...), as ``consul.Client`` reads them.

Needs the ``piloted`` extra: ``pip install 'loadbalancer[piloted]'``.
"""

from ..errors import ExtraNotInstalledError

try:
    import httpx  # noqa: F401
except ImportError as error:
    raise ExtraNotInstalledError("loadbalancer.piloted", "piloted", "httpx") from error
try:
    import json5  # noqa: F401
except ImportError as error:
    raise ExtraNotInstalledError("loadbalancer.piloted", "piloted", "json5") from error

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
