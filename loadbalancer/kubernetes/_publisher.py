"""``kubernetes.Publisher`` and ``kubernetes.Registry``: a Service's endpoints, listed and then watched."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Unpack

from .._options import PublisherOptions
from .._typing import E
from .._util import seconds
from ..backend import Publisher as _Generic
from ..backend import Registry as _GenericRegistry
from ..publisher import Factory
from ._backend import Accept, Backend
from ._client import Client
from ._config import Config

__all__ = ["Publisher", "Registry"]


def _config(config: Config | None, kubeconfig: str | os.PathLike[str] | None, context: str | None) -> Config:
    if config is not None:
        if kubeconfig is not None or context is not None:
            raise ValueError("give config= or kubeconfig=/context=, not both")
        if not isinstance(config, Config):
            raise TypeError(f"config must be a loadbalancer.kubernetes.Config, got {config!r}")
        return config
    return Config.load(kubeconfig=kubeconfig, context=context)


class Publisher(_Generic[E]):
    """Publishes the endpoints of a Kubernetes Service, following its EndpointSlices.

    The slices labelled ``kubernetes.io/service-name=<service>`` are listed, then watched
    from the list's ``resourceVersion`` (with bookmarks, so a quiet Service resumes from a
    recent version); a ``410 Gone`` lists again. Each ready endpoint (``accept=``) is an
    ``Instance(address, port)`` with its zone, node, pod and conditions in ``metadata``.

    - ``namespace``: the Service's (default: the configuration's, else ``"default"``);
    - ``port``: a port name or number of the slices, or ``None`` for the only one;
    - ``label_selector``: more labels the slices must carry;
    - the cluster: ``config=`` (a ``kubernetes.Config``), or ``kubeconfig=``/``context=``;
      by default in-cluster inside a pod (the service account's token, re-read when it
      rotates, and CA), else ``$KUBECONFIG`` or ``~/.kube/config``;
    - failures keep the last good set (stale) and back off up to ``max_backoff``.

    >>> publisher = Publisher("web", port="http", namespace="shop")  # doctest: +SKIP
    >>> publisher.wait_ready(5); publisher.endpoints().instances  # doctest: +SKIP
    (Instance(host='10.1.0.5', port=8080, ...), ...)
    """

    def __init__(
        self,
        service: str,
        factory: Factory[E] | None = None,
        *,
        namespace: str | None = None,
        port: int | str | None = None,
        label_selector: str | None = None,
        accept: Accept = "ready",
        config: Config | None = None,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        timeout: float | timedelta = 10.0,
        watch_timeout: float | timedelta = 290.0,
        **options: Unpack[PublisherOptions],
    ) -> None:
        client = Client(_config(config, kubeconfig, context), timeout=seconds(timeout, "timeout", allow_zero=False))
        backend = Backend(
            client,
            namespace=namespace,
            port=port,
            label_selector=label_selector,
            accept=accept,
            watch_timeout=seconds(watch_timeout, "watch_timeout", allow_zero=False),
            logger=options.get("logger"),
        )
        backend.selector(service)  # a bad name raises here
        super().__init__(
            backend,
            service,
            factory,
            own=True,
            **options,
        )
        self._kubernetes = backend
        backend.log = self._log  # its events carry this publisher's context

    @property
    def namespace(self) -> str:
        return self._kubernetes.namespace

    @property
    def resource_version(self) -> str | None:
        """The ``resourceVersion`` the published set reflects (``None`` before the first list)."""
        cursor = self.cursor
        return None if cursor is None else str(cursor)

    def __repr__(self) -> str:
        server = self._kubernetes.client.server
        return f"kubernetes.Publisher({self.service!r}, namespace={self.namespace!r}, server={server!r})"


class Registry(_GenericRegistry):
    """The Services of one namespace by name: ``discover(name)``, ``watch(name)``, ``list_services()``, ``health()``.

    Registering raises ``NotImplementedError``: EndpointSlices are written by the cluster's
    controllers from a Service's selector (run the instance as a pod the Service selects).
    Options as for ``Publisher``.

    >>> registry = Registry(namespace="shop", kubeconfig="kubeconfig.yaml")  # doctest: +SKIP
    >>> registry.discover("web")  # doctest: +SKIP
    [Instance(host='10.1.0.5', port=8080, ...)]
    """

    def __init__(
        self,
        *,
        namespace: str | None = None,
        port: int | str | None = None,
        label_selector: str | None = None,
        accept: Accept = "ready",
        config: Config | None = None,
        kubeconfig: str | os.PathLike[str] | None = None,
        context: str | None = None,
        timeout: float | timedelta = 10.0,
        logger: Any = None,
    ) -> None:
        client = Client(_config(config, kubeconfig, context), timeout=seconds(timeout, "timeout", allow_zero=False))
        backend = Backend(
            client, namespace=namespace, port=port, label_selector=label_selector, accept=accept, logger=logger
        )
        super().__init__(backend, logger=logger)

    def __repr__(self) -> str:
        backend = self.backend
        assert isinstance(backend, Backend)
        return f"kubernetes.Registry(namespace={backend.namespace!r}, server={backend.client.server!r})"
