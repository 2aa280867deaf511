"""``etcd.Publisher``: a key prefix, read once and then watched, over etcd's v3 JSON gateway."""

from __future__ import annotations

from collections.abc import Sequence
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
from ._client import Client
from ._connection import DEFAULT_ENDPOINTS, key_prefix

__all__ = ["Publisher"]


class Publisher(_Generic[E]):
    """Publishes the instances registered under a key prefix of etcd, following every change.

    The prefix is read once (a linearizable range read, paged at a pinned revision), then
    watched from the next revision. Each key under ``prefix + "/"`` is one instance; its
    value is ``"host:port"`` or a JSON document ``{"host": ..., "port": ..., "weight": ...,
    "priority": ..., "tags": [...], "metadata": {...}}`` (see ``loadbalancer.etcd``).
    Instances are published in key order; a value that cannot be read is skipped and logged
    with its key and value; a deleted key (or an expired lease) removes its instance.

    - ``endpoints``: a connection string ``"http://h1:2379,h2:2379/namespace"`` or a sequence
      of member URLs; the namespace (or ``namespace=``) goes in front of every key.
    - A broken watch (an error line, the stream ending, a refused connection, a member that
      stops answering) moves to the next member and resumes from the revision after the
      last one seen, so no change is lost or applied twice. If the history there has been
      compacted, the prefix is read afresh and watched from that read.
    - ``keepalive``: after this many seconds without a word from the watch, the member is
      asked for its status; no answer within ``timeout``, or a member without a leader,
      counts as a broken watch. The watch also asks etcd to end it if its member loses the
      leader, and asks for progress notifications (sent if the server enables them).
    - When no member can be reached, the last good set stays (marked stale, ``last_error``
      set) and attempts go on, backing off up to ``max_backoff`` seconds; the set is fresh
      again as soon as a watch is re-established.
    - ``username``/``password``: etcd authentication (the token is renewed when it expires);
      ``tls``: a ``loadbalancer.TLSConfig`` (CA file, client certificate), an
      ``ssl.SSLContext`` or ``True``; members named without a scheme are then spoken to
      over https (see ``etcd.Client``).
    - ``refresh()`` (or ``await arefresh()``) reads the prefix now and returns the set.

    - ``tags``: only instances carrying all of them; without a ``factory`` the instances
      themselves are published.

    It is the generic ``loadbalancer.backend.Publisher`` over an ``etcd.Backend``: watching
    runs on the library's shared background loop, with one HTTP connection pool per
    publisher, and a change costs what it changes (a watch event is applied by key).

    >>> publisher = Publisher("/services/api", str, endpoints="http://127.0.0.1:2379")  # doctest: +SKIP
    >>> publisher.refresh()  # doctest: +SKIP
    EndpointSet([10.0.0.1:8080, 10.0.0.2:8080])
    >>> publisher.close()  # doctest: +SKIP
    """

    @renamed(verify=legacy_tls, cert=legacy_tls)
    def __init__(
        self,
        prefix: str,
        factory: Factory[E] | None = None,
        *,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS,
        namespace: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TLS = None,
        timeout: float | timedelta = 5.0,
        keepalive: float | timedelta = 5.0,
        **options: Unpack[PublisherOptions],
    ) -> None:
        keepalive_ = seconds(keepalive, "keepalive", allow_zero=False)
        client = Client(endpoints, namespace=namespace, username=username, password=password, tls=tls, timeout=timeout)
        full = key_prefix(client.namespace, prefix)
        backend = Backend(client, keepalive=keepalive_, logger=options.get("logger"))
        self._client = client
        super().__init__(
            backend,
            full,
            factory,
            own=True,
            **options,
        )
        backend.log = self._log  # its events carry this publisher's context

    @property
    def prefix(self) -> str:
        """The key prefix watched, namespace included, ending in ``/``."""
        return self.service

    @property
    def revision(self) -> int:
        """The etcd revision that the published set reflects (0 before the first read)."""
        return int(self.cursor or 0)

    @property
    def member(self) -> str:
        """The URL of the member the publisher talks to now."""
        return self._client.member

    def __repr__(self) -> str:
        return f"etcd.Publisher({self.service!r}, endpoints={','.join(self._client.members)!r})"
