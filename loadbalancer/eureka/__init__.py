"""Eureka discovery: Netflix Eureka's v2 REST API (JSON), as Spring Cloud services use it.

``Publisher(app, factory)`` follows an application's UP instances the way Eureka's own
client does (a full fetch, then deltas checked against the server's apps hash code, a full
fetch on a mismatch), over one or more Eureka servers with failover; ``Registrar(app,
instance)`` registers an instance, sends a heartbeat every 30 s, changes its status, and
cancels it on close; ``Registry(urls)`` offers both by application name on the generic
backend protocol (``Backend``).

    from loadbalancer import RoundRobin, eureka

    urls = "http://10.0.0.1:8761/eureka/,http://10.0.0.2:8761/eureka/"
    balancer = RoundRobin(eureka.Publisher("api", make_client, urls=urls))

    with eureka.Registrar("api", "10.0.0.7:8080", urls=urls):
        serve()

Needs the ``eureka`` extra: ``pip install 'loadbalancer[eureka]'``.
"""

try:
    import httpx  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "loadbalancer.eureka needs httpx, which is not installed: pip install 'loadbalancer[eureka]'"
    ) from error

from ._backend import Backend, Registration
from ._client import Client, EurekaError, parse_urls
from ._publisher import Publisher
from ._registrar import Registrar
from ._registry import Registry

__all__ = ["Backend", "Client", "EurekaError", "Publisher", "Registrar", "Registration", "Registry", "parse_urls"]
