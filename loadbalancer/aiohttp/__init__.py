"""aiohttp sessions that balance, retry and follow discovery: a client middleware.

One middleware turns ``http://api/...`` into a balanced, retried call to the instances that
discovery found, for every request of a session::

    from aiohttp import ClientSession
    from loadbalancer import aiohttp as lbaiohttp, static

    mw = lbaiohttp.middleware({"api": static.Publisher(["127.0.0.1:8001", "127.0.0.1:8002"])})
    async with mw, ClientSession(middlewares=(mw,)) as session:
        async with session.get("http://api/users/1") as response:
            ...

``middleware()`` makes a ``Middleware``; ``RetryPolicy`` says what is retried and when;
``NoInstancesError``, ``DeadlineExceeded`` and ``AnswerError`` are its errors, each both
aiohttp's and the library's. Needs aiohttp 3.12 to 3.14 (``pip install 'loadbalancer[aiohttp]'``):
the middleware points each request at an instance by assigning ``request.url``, which
aiohttp allows but does not document, so the extra pins the releases it was tested with.
"""

try:
    import aiohttp  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "loadbalancer.aiohttp needs aiohttp, which is not installed: pip install 'loadbalancer[aiohttp]'"
    ) from error

from .._httppolicy import RetryPolicy
from ._middleware import AnswerError, DeadlineExceeded, Middleware, NoInstancesError, middleware

__all__ = ["AnswerError", "DeadlineExceeded", "Middleware", "NoInstancesError", "RetryPolicy", "middleware"]
