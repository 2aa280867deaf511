"""Consul discovery: go-kit's ``sd/consul`` (an instancer and a registrar) on Consul's HTTP API.

``Publisher(service, factory)`` follows a service's healthy instances with blocking queries
on ``/v1/health/service/<service>``; ``Registrar(service, instance)`` keeps an instance
registered with the local agent under a TTL check (or an HTTP check); ``Registry(address)``
offers both by service name (register, discover, watch, list_services, health). All three
stand on ``Backend``, Consul on the generic backend protocol of ``loadbalancer.backend``.

    from loadbalancer import RoundRobin, consul

    publisher = consul.Publisher("api", make_client, address="http://127.0.0.1:8500", tags=["v2"])
    balancer = RoundRobin(publisher)

    with consul.Registrar("api", "10.0.0.7:8080", ttl=10, deregister_after=60):
        serve()

Needs the ``consul`` extra: ``pip install 'loadbalancer[consul]'``.
"""

try:
    import httpx  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "loadbalancer.consul needs httpx, which is not installed: pip install 'loadbalancer[consul]'"
    ) from error

from ._backend import Backend, instance_of
from ._client import Client, ConsulError
from ._facades import Publisher, Registrar, Registry

__all__ = ["Backend", "Client", "ConsulError", "Publisher", "Registrar", "Registry", "instance_of"]
