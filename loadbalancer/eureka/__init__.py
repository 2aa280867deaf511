"""Eureka discovery: Netflix Eureka's v2 REST API (JSON), as Spring Cloud services use it.

``Publisher(app, factory)`` follows an application's UP instances the way Eureka's own
client does (a full fetch, then deltas checked against the server's apps hash code, a full
fetch on a mismatch), over one or more Eureka servers with failover; ``Registrar(app,
instance)`` registers an instance, sends a heartbeat every 30 s, changes its status, and
cancels it on close; ``Registry(endpoints)`` offers both by application name on the
generic backend protocol (``Backend``, which talks to the servers through a ``Client``).

    from loadbalancer import RoundRobin, eureka

    servers = "http://10.0.0.1:8761/eureka/,http://10.0.0.2:8761/eureka/"
    balancer = RoundRobin(eureka.Publisher("api", make_client, endpoints=servers))

    with eureka.Registrar("api", "10.0.0.7:8080", endpoints=servers):
        serve()

``tls=loadbalancer.TLSConfig(ca=..., cert=..., key=...)`` (or an ``ssl.SSLContext``) sets
the CAs and a client certificate; a server URL without a scheme is then spoken to over https.

Needs the ``eureka`` extra: ``pip install 'loadbalancer[eureka]'``.
"""

try:
    import httpx  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    from ..errors import ExtraNotInstalledError

    raise ExtraNotInstalledError("loadbalancer.eureka", "eureka", "httpx") from error

from ._backend import Backend, Registration
from ._client import Client, EurekaError, parse_urls
from ._publisher import Publisher
from ._registrar import Registrar
from ._registry import Registry

__all__ = ["Backend", "Client", "EurekaError", "Publisher", "Registrar", "Registration", "Registry", "parse_urls"]
