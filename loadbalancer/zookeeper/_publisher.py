"""``zookeeper.Publisher``: go-kit's ``sd/zk`` instancer, the generic publisher over ``zookeeper.Backend``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Unpack

from kazoo.client import KazooClient

from .._deprecated import renamed
from .._options import PublisherOptions
from .._tls import TLS
from .._typing import E
from ..backend import Publisher as _Generic
from ..publisher import Factory
from ._backend import Backend
from ._paths import check_path

__all__ = ["Publisher"]


class Publisher(_Generic[E]):
    """Watches the children of ``path`` in ZooKeeper and publishes the instance each one holds.

    go-kit's ``zk.NewInstancer``. Each child node's data is ``"host:port"`` or a JSON document
    ``{"host": "10.0.0.5", "port": 8080, "weight": 10, "priority": 0, "tags": ["v2"],
    "metadata": {"zone": "a"}}`` (only ``host`` and ``port`` are required; Curator's
    ``address`` is read as ``host``; other keys are ignored). Instances are published in the
    order of their node names. A node whose data is neither is left out and logged
    (``zookeeper_node_invalid``, with the node and its data); it is read again when its data changes.
    A ``Registrar`` writes nodes of this form.

    - ``endpoints``: a kazoo connection string, ``"zk1:2181,zk2:2181,zk3:2181"`` (or a
      sequence of servers), optionally ending in a chroot (``".../apps"``); default
      ``127.0.0.1:2181``. The publisher then owns a ``KazooClient``, which costs three
      threads (kazoo's connection thread and two callback workers) and one TCP connection.
      To watch many paths, create one ``KazooClient`` and pass it as ``client=`` to each
      publisher: the application starts and stops it, and publishers only add listeners
      and watches (a publisher given a client that is not connected waits for it).
    - ``tls``: a ``loadbalancer.TLSConfig`` (CA file, client certificate) or ``True``, for
      the publisher's own client (kazoo takes files: an ``ssl.SSLContext`` is a ``TypeError``).
    - ``session_timeout``: the ZooKeeper session timeout asked of the server (which clamps
      it to its own bounds), for an owned client.
    - The path is read once, then followed with a children watch and a data watch per
      child: a change is published as ZooKeeper reports it, not at a poll interval. A
      missing ``path`` is an empty set; it fills when the path is created.
    - When the connection drops the last good set stays, marked stale (``refresh_failed`` is
      logged); kazoo reconnects (waits up to ``max_backoff`` seconds between attempts) and
      the publisher then reads every node again and sets its watches again. After a session
      expiry, ephemeral nodes of other processes may have gone: the same full read shows it.
    - ``timeout``: how long ``refresh()`` waits for a connection, and the longest wait for any
      reply (a request made while kazoo reconnects waits for the connection). A publisher
      that has no connection ``timeout`` seconds after it was made reports it (a stale set,
      ``last_error``, ``refresh_failed`` logged) while kazoo goes on trying; the first
      connection makes the set fresh.
    - ``invalidate_after``, ``close_delay``, ``tags``: as for every ``loadbalancer.Publisher``.

    It is the generic ``loadbalancer.backend.Publisher`` over a ``zookeeper.Backend``: reads
    and watches run on the library's shared background loop, kazoo's threads only hand
    events to it, and subscribers are called there.

    >>> from loadbalancer import zookeeper
    >>> publisher = zookeeper.Publisher("/services/api", lambda hostport: hostport, endpoints="127.0.0.1:2181")
    >>> publisher.refresh()  # doctest: +SKIP
    EndpointSet([10.0.0.5:8080, 10.0.0.6:8080])
    >>> publisher.close()
    """

    @renamed(hosts="endpoints")
    def __init__(
        self,
        path: str,
        factory: Factory[E] | None = None,
        *,
        endpoints: str | Sequence[str] | None = None,
        client: KazooClient | None = None,
        tls: TLS = None,
        session_timeout: float | timedelta = 10.0,
        timeout: float | timedelta = 10.0,
        **options: Unpack[PublisherOptions],
    ) -> None:
        path = check_path(path)
        backend = Backend(
            endpoints,
            client=client,
            root=None,
            tls=tls,
            session_timeout=session_timeout,
            timeout=timeout,
            max_backoff=options.get("max_backoff", 5.0),
            logger=options.get("logger"),
        )
        self._zk = backend
        super().__init__(backend, path, factory, own=True, **options)
        backend.log = self._log = self._log.bind(endpoints=backend.endpoints)  # its events carry our context

    @classmethod
    def _on(cls, backend: Backend, service: str, factory: Factory[E] | None, **options: Any) -> Publisher[E]:
        """A publisher of ``service`` on a backend shared with others (a ``Registry``'s), which it leaves open."""
        self = cls.__new__(cls)
        self._zk = backend
        _Generic.__init__(self, backend, service, factory, **options)
        return self

    @property
    def path(self) -> str:
        """The watched path (within the chroot, if the endpoints have one)."""
        return self._zk.path_of(self.service)

    @property
    def client(self) -> KazooClient:
        """The kazoo client in use (the one given, or the publisher's own)."""
        return self._zk.client

    def close(self) -> None:
        """Stop watching, close every endpoint, and stop the publisher's own client (if it has one)."""
        super().close()
        if self._own:
            self._zk.close()

    async def aclose(self) -> None:
        """Async form of ``close()``."""
        await super().aclose()
        if self._own:
            await self._zk.aclose()

    def __repr__(self) -> str:
        return f"zookeeper.Publisher({self.path!r}, endpoints={self._zk.endpoints!r})"
