"""``httppoll.Publisher`` and ``httppoll.Registry``: the generic publisher and facade over seed URLs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Unpack

from .._deprecated import renamed
from .._options import PublisherOptions
from .._tls import TLS, legacy_tls
from .._typing import E
from ..backend import Publisher as _Generic
from ..backend import Registry as _Registry
from ..publisher import Factory
from ._backend import Backend

__all__ = ["Publisher", "Registry"]


class Publisher(_Generic[E]):
    """Polls the seed URLs ``endpoints`` every ``interval`` seconds and publishes the instances they list.

    Each seed answers a JSON list of instances (``"host:port"`` strings or objects: ``id``,
    ``name``, ``version``, ``address``/``host``, ``port``, ``weight``, ``priority``,
    ``tags``, ``metadata``, ``status``; see ``httppoll.parse_answer``). Requests carry
    ``If-None-Match``: an unchanged answer is a ``304``, and then nothing is parsed or
    compared. The seeds' lists are merged by instance id (the first seed wins a
    disagreement); a failing seed keeps its last answer; when every seed fails the set is
    kept (stale) and polling backs off up to ``max_backoff``. ``service``: the name put
    into seeds that say ``{service}`` and the ``name`` instances must have, if they have one
    (records naming another service are left out, and logged: ``httppoll_records_skipped``).
    ``endpoints``: one seed URL, several comma-separated, or a sequence; ``tls``, ``timeout``
    and ``headers`` are those of ``httppoll.Backend``.

    >>> publisher = Publisher("http://127.0.0.1:8500/peers.json", service="api", interval=2)  # doctest: +SKIP
    >>> publisher.refresh()  # doctest: +SKIP
    EndpointSet([Instance(host='10.0.0.7', port=8080)])
    """

    @renamed(seeds="endpoints", verify=legacy_tls)
    def __init__(
        self,
        endpoints: str | Sequence[str],
        factory: Factory[E] | None = None,
        *,
        service: str = "default",
        interval: float | timedelta = 5.0,
        timeout: float | timedelta = 5.0,
        headers: Mapping[str, str] | None = None,
        tls: TLS = None,
        **options: Unpack[PublisherOptions],
    ) -> None:
        backend = Backend(
            endpoints, interval=interval, timeout=timeout, headers=headers, tls=tls, logger=options.get("logger")
        )
        super().__init__(
            backend,
            service,
            factory,
            own=True,
            **options,
        )
        backend.log = self._log
        self._seeds = backend

    @property
    def requests(self) -> dict[str, int]:
        """Requests so far by outcome: ``"200"`` (read and parsed), ``"304"`` (unchanged), ``"failed"``."""
        return dict(self._seeds.requests)

    def __repr__(self) -> str:
        return f"httppoll.Publisher({','.join(self._seeds.endpoints)!r})"


class Registry(_Registry):
    """The registry facade over seed URLs: ``discover``, ``lookup`` and ``watch``; registering raises.

    ``endpoints`` and ``options`` (``interval``, ``timeout``, ``headers``, ``tls``) are
    those of ``httppoll.Backend``.

    >>> registry = Registry("http://127.0.0.1:8500/services/{service}.json")
    >>> registry.backend.urls("api")
    ['http://127.0.0.1:8500/services/api.json']
    >>> registry.close()
    """

    @renamed(seeds="endpoints", verify=legacy_tls)
    def __init__(self, endpoints: str | Sequence[str], *, logger: Any = None, **options: Any) -> None:
        super().__init__(Backend(endpoints, logger=logger, **options), logger=logger)
