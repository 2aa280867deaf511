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

from typing import TYPE_CHECKING, Any

from .._httppolicy import IDEMPOTENT, RetryPolicy, retry_after
from ._factory import AsyncHttpEndpoint, HttpEndpoint, async_factory, factory
from ._transport import (
    AnswerError,
    AsyncTransport,
    DeadlineExceeded,
    NoInstancesError,
    Transport,
    UnknownServiceError,
)

if TYPE_CHECKING:
    from ._requests import RequestsAdapter, RequestsDeadlineExceeded, RequestsNoInstancesError

__all__ = [
    "IDEMPOTENT",
    "AnswerError",
    "AsyncHttpEndpoint",
    "AsyncTransport",
    "DeadlineExceeded",
    "HttpEndpoint",
    "NoInstancesError",
    "RequestsAdapter",
    "RequestsDeadlineExceeded",
    "RequestsNoInstancesError",
    "RetryPolicy",
    "Transport",
    "UnknownServiceError",
    "async_factory",
    "factory",
    "retry_after",
]

_REQUESTS = {"RequestsAdapter", "RequestsDeadlineExceeded", "RequestsNoInstancesError"}


def __getattr__(name: str) -> Any:
    # requests is optional: imported when its adapter is first asked for
    if name in _REQUESTS:
        from . import _requests

        return getattr(_requests, name)
    raise AttributeError(f"module 'loadbalancer.http' has no attribute {name!r}")
