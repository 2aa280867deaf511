"""Consul discovery: go-kit's ``sd/consul`` (an instancer and a registrar) on Consul's HTTP API.

``Publisher(service, factory)`` follows a service's healthy instances with blocking queries
on ``/v1/health/service/<service>``; ``Registrar(service, instance)`` keeps an instance
registered with the local agent under a TTL check (or an HTTP check); ``Registry(endpoints)``
offers both by service name (register, discover, watch, list_services, health). All three
stand on ``Backend``, Consul on the generic backend protocol of ``loadbalancer.backend``.

    from loadbalancer import RoundRobin, consul

    publisher = consul.Publisher("api", make_client, endpoints="http://127.0.0.1:8500", tags=["v2"])
    balancer = RoundRobin(publisher)

    with consul.Registrar("api", "10.0.0.7:8080", ttl=10, deregister_after=60):
        serve()

The agent, the ACL token and TLS not given as ``endpoints=``, ``token=`` and ``tls=`` are
read from Consul's own environment variables, as Consul's CLI reads them
(``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN_FILE``, ``CONSUL_HTTP_TOKEN``, ``CONSUL_HTTP_SSL``,
``CONSUL_CACERT``, ``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY``, ``CONSUL_HTTP_SSL_VERIFY``).

Needs the ``consul`` extra: ``pip install 'loadbalancer[consul]'``.
"""

from ..errors import ExtraNotInstalledError

try:
    import httpx  # noqa: F401
except ImportError as error:
    raise ExtraNotInstalledError("loadbalancer.consul", "consul", "httpx") from error

from ._backend import Backend, instance_of
from ._client import Client, ConsulError
from ._facades import Publisher, Registrar, Registry

__all__ = ["Backend", "Client", "ConsulError", "Publisher", "Registrar", "Registry", "instance_of"]
