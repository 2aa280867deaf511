"""An HTTP load-balancing proxy: ``loadbalancer proxy -p 8000 -b http://10.0.0.1:8080 -b ...``.

It takes goaround's flags (``-p``, ``-b``, ``-n``, ``-cacert``/``-privkey``, ``-cache``,
``-prometheus-port``) with ``--long`` spellings beside them, and balances over the toolkit's
own parts: backends from ``-b`` URLs or any publisher (``--source dns:_api._tcp.example.``),
health checks (``HttpCheck``: goaround's ``/health`` rule), outlier ejection and a balancer
(``--balancer``). Backends can be replaced at runtime over a unix socket. The server is an
asyncio protocol with httptools' C parser on uvloop, one process per core sharing the port,
with HTTP/2 (a protocol core of its own, HPACK from hpack) and WebSocket relaying. It is made
to face untrusted clients: every wait has a timeout and every buffer a bound, each a flag with
a documented default (``--header-timeout``, ``--max-header-size``, ``--max-connections``, ...:
see ``--help``).

Needs the ``proxy`` extra: ``pip install 'loadbalancer[proxy]'``.
"""

try:
    import cachetools  # noqa: F401
    import hpack  # noqa: F401
    import httptools  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvloop  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"loadbalancer.proxy needs {error.name or 'its dependencies'}, which is not installed:"
        " pip install 'loadbalancer[proxy]'"
    ) from error

from ._main import main

__all__ = ["main"]
