"""HTTP clients that balance, retry and learn: httpx transports and a requests adapter.

One line turns ``http://api/...`` into a balanced, retried, learning call to the instances
that discovery found::

    import httpx
    from loadbalancer import http, static

    client = httpx.Client(transport=http.Transport({"api": static.Publisher(["127.0.0.1:8001", "127.0.0.1:8002"])}))
    client.get("http://api/users/1")

``Transport`` / ``AsyncTransport`` (httpx), ``RequestsAdapter`` (requests, mounted on a
session), ``factory()`` / ``async_factory()`` (endpoints for go-kit style composition with
``Retry``), and ``RetryPolicy`` (what is retried, when). Needs httpx (``pip install
'loadbalancer[http]'``); the requests adapter needs requests.
"""

try:
    import httpx  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "loadbalancer.http needs httpx, which is not installed: pip install 'loadbalancer[http]'"
    ) from error

from ._policy import IDEMPOTENT, RetryPolicy, retry_after
from ._transport import (
    AnswerError,
    AsyncTransport,
    DeadlineExceeded,
    NoInstancesError,
    Transport,
    UnknownServiceError,
)

__all__ = [
    "IDEMPOTENT",
    "AnswerError",
    "AsyncTransport",
    "DeadlineExceeded",
    "NoInstancesError",
    "RetryPolicy",
    "Transport",
    "UnknownServiceError",
    "retry_after",
]
