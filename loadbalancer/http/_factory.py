"""``http.factory()`` and ``http.async_factory()``: HTTP endpoints for go-kit style composition.

``Retry(3, 2.0, RoundRobin(static.Publisher(instances, http.factory())))`` is a callable that
sends a request to an instance and returns its httpx response, retried elsewhere on a
connection error or a 502/503/504/429 answer (those raise ``httpx.HTTPStatusError`` so that
``Retry`` sees them). The time left before ``Retry``'s deadline is each request's timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import httpx

from .._httpspec import RETRY_STATUSES
from ..instance import Instance
from ..retry import remaining

__all__ = ["AsyncHttpEndpoint", "HttpEndpoint", "async_factory", "factory"]

Request = httpx.Request | str


class _Endpoint:
    def __init__(self, instance: Instance, scheme: str, statuses: Collection[int]) -> None:
        self.instance = instance
        self.base = httpx.URL(f"{scheme}://{instance.address}")
        self._statuses = statuses

    def _request(self, request: Request) -> httpx.Request:
        """``request`` sent here: a path (GET) or an ``httpx.Request`` whose URL's host is replaced."""
        if isinstance(request, str):
            request = httpx.Request("GET", self.base.join(request))
        else:
            request = httpx.Request(
                request.method,
                request.url.copy_with(scheme=self.base.scheme, host=self.base.host, port=self.base.port),
                headers=request.headers,
                stream=request.stream,
                extensions=request.extensions,
            )
        left = remaining()
        if left is not None:
            request.extensions = {**request.extensions, "timeout": httpx.Timeout(left).as_dict()}
        return request

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code in self._statuses:
            response.raise_for_status()  # 5xx and 429: HTTPStatusError, which Retry retries
        return response

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.instance.address!r})"


class HttpEndpoint(_Endpoint):
    """``endpoint(request)``: send ``request`` (a path, or an ``httpx.Request``) to this instance."""

    def __init__(self, instance: Instance, scheme: str, statuses: Collection[int], options: dict[str, Any]) -> None:
        super().__init__(instance, scheme, statuses)
        self.client = httpx.Client(**options)

    def __call__(self, request: Request) -> httpx.Response:
        return self._check(self.client.send(self._request(request)))

    def close(self) -> None:
        self.client.close()


class AsyncHttpEndpoint(_Endpoint):
    """The async twin: ``await endpoint(request)``."""

    def __init__(self, instance: Instance, scheme: str, statuses: Collection[int], options: dict[str, Any]) -> None:
        super().__init__(instance, scheme, statuses)
        self.client = httpx.AsyncClient(**options)

    async def __call__(self, request: Request) -> httpx.Response:
        return self._check(await self.client.send(self._request(request)))

    async def aclose(self) -> None:
        await self.client.aclose()


def factory(
    *, scheme: str = "http", retry_statuses: Collection[int] = RETRY_STATUSES, **client_options: Any
) -> Callable[[Instance], HttpEndpoint]:
    """A factory of ``HttpEndpoint``s (one ``httpx.Client``, so one connection pool, per instance).

    ``client_options`` go to ``httpx.Client`` (``timeout=``, ``verify=``, ``headers=``, ...).
    """

    def make(instance: Instance) -> HttpEndpoint:
        return HttpEndpoint(instance, scheme, frozenset(retry_statuses), client_options)

    return make


def async_factory(
    *, scheme: str = "http", retry_statuses: Collection[int] = RETRY_STATUSES, **client_options: Any
) -> Callable[[Instance], AsyncHttpEndpoint]:
    """A factory of ``AsyncHttpEndpoint``s (one ``httpx.AsyncClient`` per instance)."""

    def make(instance: Instance) -> AsyncHttpEndpoint:
        return AsyncHttpEndpoint(instance, scheme, frozenset(retry_statuses), client_options)

    return make
