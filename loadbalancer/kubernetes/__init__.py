"""Kubernetes discovery: a Service's endpoints from its EndpointSlices (``discovery.k8s.io/v1``).

``Publisher("web", factory, namespace="shop", port="http")`` lists the Service's
EndpointSlices, then watches them from the list's ``resourceVersion`` (bookmarks keep a
quiet watch's version recent; a ``410 Gone`` lists again), and publishes each ready
endpoint as ``Instance(address, port)`` with ``zone``, ``node``, ``pod`` and the
conditions in its metadata. One endpoint changing costs one change, however large the
Service. ``Registry(namespace=...)`` offers ``discover``, ``watch``, ``list_services`` and
``health`` by Service name, on ``Backend``, the generic backend protocol.

    from loadbalancer import RoundRobin, kubernetes

    publisher = kubernetes.Publisher("web", make_client, namespace="shop", port="http")
    balancer = RoundRobin(publisher)

The cluster: in a pod, the service account (``KUBERNETES_SERVICE_HOST``/``_PORT``, its
token, re-read when the kubelet rotates it, and its CA); elsewhere a kubeconfig
(``$KUBECONFIG`` or ``~/.kube/config``, its current context or ``context=``: server, CA,
token, token file or client certificate); or ``config=Config(...)``. It talks to the API
server with httpx. Needs the ``kubernetes`` extra: ``pip install 'loadbalancer[kubernetes]'``.
"""

try:
    import httpx  # noqa: F401
    import yaml  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    from ..errors import ExtraNotInstalledError

    raise ExtraNotInstalledError("loadbalancer.kubernetes", "kubernetes", error.name or str(error)) from error

from ._backend import SERVICE_LABEL, Accept, Backend
from ._client import Client, KubernetesError
from ._config import Config, ConfigError, TokenSource
from ._publisher import Publisher, Registry

__all__ = [
    "SERVICE_LABEL",
    "Accept",
    "Backend",
    "Client",
    "Config",
    "ConfigError",
    "KubernetesError",
    "Publisher",
    "Registry",
    "TokenSource",
]
