"""``eureka.Publisher``: the generic publisher over an ``eureka.Backend`` of its own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Unpack

from .._deprecated import renamed
from .._options import PublisherOptions
from .._tls import TLS, legacy_tls
from .._typing import E
from .._util import seconds
from ..backend import Publisher as _Generic
from ..publisher import Factory
from ._backend import Backend
from ._client import DEFAULT_URLS, Client

__all__ = ["Publisher"]


class Publisher(_Generic[E]):
    """Follows Eureka application ``app``'s instances and publishes them (go-kit style: with a factory, endpoints).

    As Eureka's own client: the registry is fetched in full once, then a delta every
    ``interval`` seconds (30, Eureka's default), checked against the server's apps hash
    code; a mismatch, or a server that gives no delta, means a full fetch. Only ``UP``
    instances are published unless ``statuses=`` says otherwise; ``secure`` picks the port
    (``None``: the non-secure port when enabled, else the secure one; ``True``: only the
    secure port, with metadata ``eureka.secure="true"``); ``address="hostname"`` publishes
    the ``hostName`` instead of ``ipAddr``. Metadata is the instance's Eureka metadata, of
    which ``weight``, ``priority`` and ``tags`` (comma-separated) become the instance's.

    ``endpoints``: one or more Eureka service URLs (``"http://h1:8761/eureka/,http://h2:8761/eureka/"``
    or a list); when one fails the next is used. A fetch that fails on every server keeps
    the last good set (stale) and backs off up to ``max_backoff`` seconds. ``tls`` and
    ``timeout`` are those of ``eureka.Client``.

    >>> publisher = Publisher("api", endpoints="http://127.0.0.1:8761/eureka/", interval=5)  # doctest: +SKIP
    >>> publisher.refresh()  # doctest: +SKIP
    EndpointSet([Instance(host='10.0.0.7', port=8080)])
    """

    @renamed(urls="endpoints", verify=legacy_tls)
    def __init__(
        self,
        app: str,
        factory: Factory[E] | None = None,
        *,
        endpoints: str | Sequence[str] = DEFAULT_URLS,
        interval: float | timedelta = 30.0,
        statuses: Iterable[str] = ("UP",),
        secure: bool | None = None,
        address: str = "ip",
        timeout: float | timedelta = 5.0,
        tls: TLS = None,
        **options: Unpack[PublisherOptions],
    ) -> None:
        client = Client(endpoints, tls=tls, timeout=timeout)
        backend = Backend(
            client,
            interval=seconds(interval, "interval", allow_zero=False),
            statuses=statuses,
            secure=secure,
            address=address,
            logger=options.get("logger"),
        )
        super().__init__(
            backend,
            app,
            factory,
            own=True,
            **options,
        )
        backend.log = self._log
        self._client = client

    @property
    def server(self) -> str:
        """The Eureka service URL in use now."""
        return self._client.server

    def __repr__(self) -> str:
        return f"eureka.Publisher({self.service!r}, endpoints={','.join(self._client.servers)!r})"
