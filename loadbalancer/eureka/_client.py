"""The HTTP side of the Eureka backend: the servers' URLs, failover from one to the next, errors.

One ``Client`` holds one httpx connection pool and the list of Eureka servers (each a
service URL such as ``http://10.0.0.1:8761/eureka/``). It sticks to the server that last
answered, as Eureka's own client does, and moves on to the next one when a server cannot
be reached or answers with a server error. It is only used on the library's runtime loop.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .._util import describe
from ..errors import DiscoveryError

__all__ = ["DEFAULT_URLS", "Client", "EurekaError", "parse_urls"]

DEFAULT_URLS = ("http://127.0.0.1:8761/eureka/",)


class EurekaError(DiscoveryError):
    """A Eureka request failed: ``server`` is the service URL that said so (``None``: every one failed).

    ``status`` is the HTTP status when a server answered; ``transient`` says whether
    another server or a later attempt may succeed.
    """

    def __init__(
        self, message: str, *, server: str | None = None, status: int | None = None, transient: bool = False
    ) -> None:
        self.server = server
        self.status = status
        self.transient = transient
        super().__init__(message)


def parse_urls(urls: str | Sequence[str]) -> tuple[str, ...]:
    """Eureka service URLs, checked and ending in ``/``: ``"http://h1:8761/eureka/,http://h2:8761/eureka/"``.

    A URL without a path gets Eureka's usual ``/eureka/``. Raises ``ValueError`` naming a
    bad URL.

    >>> parse_urls("http://10.0.0.1:8761, https://10.0.0.2/eureka/v2")
    ('http://10.0.0.1:8761/eureka/', 'https://10.0.0.2/eureka/v2/')
    """
    items = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else list(urls)
    if not items or not all(isinstance(u, str) for u in items):
        raise ValueError(f"urls must be Eureka service URLs ('http://host:8761/eureka/'), got {urls!r}")
    found: list[str] = []
    for url in items:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid Eureka URL {url!r}: give 'http://host:port/eureka/' (http or https)")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"invalid Eureka URL {url!r}: the port is not a number in 1-65535") from None
        if parts.query or parts.fragment:
            raise ValueError(f"invalid Eureka URL {url!r}: no query or fragment")
        path = parts.path if parts.path not in ("", "/") else "/eureka/"
        found.append(f"{parts.scheme}://{parts.netloc}{path.rstrip('/')}/")
    return tuple(found)


class Client:
    """Eureka's REST API (JSON) over several servers, with failover; ``timeout`` in seconds per request."""

    def __init__(
        self,
        urls: str | Sequence[str] = DEFAULT_URLS,
        *,
        timeout: float = 5.0,
        verify: bool | str | ssl.SSLContext = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.servers = parse_urls(urls)
        self.timeout = timeout
        self._verify = verify
        self._headers = {"Accept": "application/json", **(headers or {})}
        self._current = 0
        self._pool: httpx.AsyncClient | None = None

    @property
    def server(self) -> str:
        """The service URL in use now."""
        return self.servers[self._current]

    def _http(self) -> httpx.AsyncClient:
        if self._pool is None:
            self._pool = httpx.AsyncClient(timeout=self.timeout, verify=self._verify, headers=self._headers)
        return self._pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        ok: tuple[int, ...] = (200, 204),
        answered: tuple[int, ...] = (),
    ) -> httpx.Response:
        """``method path`` on the current server, then the others in turn; the first answer in ``ok`` or ``answered``.

        A refused connection, a timeout or a 5xx answer moves on to the next server; any
        other status raises ``EurekaError`` at once (the request itself was wrong).
        """
        failures: list[str] = []
        count = len(self.servers)
        for step in range(count):
            index = (self._current + step) % count
            server = self.servers[index]
            try:
                response = await self._http().request(method, server + path, params=params, json=json)
            except httpx.HTTPError as error:
                failures.append(f"{server}: {describe(error)}")
                continue
            if response.status_code in ok or response.status_code in answered:
                self._current = index
                return response
            if response.status_code >= 500:
                failures.append(f"{server}: HTTP {response.status_code}")
                continue
            raise EurekaError(
                f"eureka {server}: {what} failed: HTTP {response.status_code} {response.text[:200]!r}",
                server=server,
                status=response.status_code,
            )
        raise EurekaError(f"eureka: {what} failed on every server ({'; '.join(failures)})", transient=True)


def app_path(app: str, *rest: str) -> str:
    """``apps/APP[/rest...]`` with each part quoted."""
    return "/".join(["apps", quote(app, safe=""), *(quote(part, safe="") for part in rest)])
