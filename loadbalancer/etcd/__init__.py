"""etcd discovery: go-kit's ``etcd`` package (a publisher and a registrar) on etcd's v3 JSON gateway.

``Publisher(prefix, factory)`` reads every key under ``prefix/`` and follows changes with a
watch; ``Registrar(prefix, instance)`` keeps one instance registered under a lease;
``Registry(endpoints)`` offers both by service name (``join``, ``leave``, ``lookup``,
``list``). All three stand on ``Backend``, etcd on the generic backend protocol of
``loadbalancer.backend``, which talks to the cluster through a ``Client``. They need
``httpx`` (``pip install 'loadbalancer[etcd]'``) and an etcd 3.x cluster with its gRPC
gateway (on by default, at the client URLs).

    from loadbalancer import RoundRobin, etcd

    publisher = etcd.Publisher("/services/api", make_client, endpoints="http://10.0.0.1:2379,10.0.0.2:2379")
    balancer = RoundRobin(publisher)

    with etcd.Registrar("/services/api", "10.0.0.7:8080", endpoints="http://10.0.0.1:2379", ttl=10):
        serve()

Endpoints: a connection string ``"[http[s]://]host[:port][,host[:port]...][/namespace]"`` (a
member without a scheme takes the one before it, the first ``https`` when ``tls=`` is
given and ``http`` otherwise; the port defaults to 2379) or a sequence of member URLs.
When a member fails, the next one is tried. ``tls=loadbalancer.TLSConfig(ca=...,
cert=..., key=...)`` (or an ``ssl.SSLContext``) sets the CAs and a client certificate;
``username=``/``password=`` authenticate.

Key layout: ``{namespace}{prefix}/{instance-id}``. The namespace (the connection string's
path, or ``namespace=``) comes first; the prefix is used as given, with one ``/`` after it;
a registrar's instance id is the instance's ``host:port`` unless given. So
``Registrar("/services/api", "10.0.0.7:8080", endpoints="127.0.0.1:2379/prod")`` writes
``/prod/services/api/10.0.0.7:8080``, and ``Publisher("/services/api", ...)`` on the same
connection string reads every key under ``/prod/services/api/``. ``Registry`` puts service
``name`` under ``{namespace}/services/{name}/``.

Values: either ``host:port`` (``[v6addr]:port`` for IPv6), as go-kit and most shell scripts
write them, or a JSON object::

    {"name": "api", "host": "10.0.0.7", "port": 8080, "weight": 10, "priority": 0,
     "tags": ["blue"], "metadata": {"zone": "eu-1"}}

``host`` and ``port`` are required; ``weight`` (default 1) and ``priority`` (default 0) are
non-negative integers; ``tags`` is a list of strings and ``metadata`` an object of strings;
``name`` and unknown members are ignored. A value that is neither is skipped and logged
(``etcd_value_invalid`` with the key and the value); it never stops the watch.
"""

try:
    import httpx  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    from ..errors import ExtraNotInstalledError

    raise ExtraNotInstalledError("loadbalancer.etcd", "etcd", "httpx") from error

from ._backend import Backend
from ._client import Client, EtcdError
from ._publisher import Publisher
from ._registrar import Registrar
from ._registry import Registry
from ._values import encode_value, parse_value

__all__ = ["Backend", "Client", "EtcdError", "Publisher", "Registrar", "Registry", "encode_value", "parse_value"]
