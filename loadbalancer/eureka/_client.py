"""``eureka.Client``: Eureka's REST API over the servers' URLs, failing over from one to the next.

One ``Client`` holds one httpx connection pool and the list of Eureka servers (each a
service URL such as ``http://10.0.0.1:8761/eureka/``). It sticks to the server that last
answered, as Eureka's own client does, and moves on to the next one when a server cannot
be reached or answers with a server error.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .._deprecated import renamed
from .._tls import TLS, legacy_tls, ssl_context
from .._util import describe, seconds
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


def parse_urls(urls: str | Sequence[str], *, scheme: str = "http") -> tuple[str, ...]:
    """Eureka service URLs, checked and ending in ``/``: ``"http://h1:8761/eureka/,http://h2:8761/eureka/"``.

    A URL without a path gets Eureka's usual ``/eureka/``; one without a scheme gets
    ``scheme`` (``"https"`` where TLS settings are given). Raises ``ValueError`` naming a
    bad URL.

    >>> parse_urls("http://10.0.0.1:8761, https://10.0.0.2/eureka/v2")
    ('http://10.0.0.1:8761/eureka/', 'https://10.0.0.2/eureka/v2/')
    >>> parse_urls("10.0.0.1:8761", scheme="https")
    ('https://10.0.0.1:8761/eureka/',)
    """
    items = [u.strip() for u in urls.split(",")] if isinstance(urls, str) else list(urls)
    if not items or not all(isinstance(u, str) for u in items):
        raise ValueError(f"endpoints must be Eureka service URLs ('http://host:8761/eureka/'), got {urls!r}")
    found: list[str] = []
    for url in items:
        parts = urlsplit(url if "://" in url else f"{scheme}://{url}")
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
    """Eureka's REST API (JSON) over several servers, with failover.

    - ``endpoints``: one or more Eureka service URLs (``"http://h1:8761/eureka/,http://h2:8761/eureka/"``
      or a list; see ``parse_urls``); a URL without a scheme is spoken to over https when
      ``tls=`` is given, else over http;
    - ``tls``: a ``loadbalancer.TLSConfig`` (CA, client certificate), an ``ssl.SSLContext``,
      ``True`` (the system's CAs) or ``None`` (``https://`` URLs get the system's CAs);
    - ``timeout``: seconds per request; ``headers``: sent with every request.

    ``request()`` asks the server that answered last, then the others in turn. The client
    is async (one httpx connection pool, made on first use, on the loop that uses it): an
    ``eureka.Backend`` runs it on the library's loop.

    >>> client = Client("10.0.0.1:8761,10.0.0.2:8761", tls=True)
    >>> client.servers
    ('https://10.0.0.1:8761/eureka/', 'https://10.0.0.2:8761/eureka/')
    >>> backend = Backend(client, interval=5)  # doctest: +SKIP
    """

    @renamed(urls="endpoints", verify=legacy_tls)
    def __init__(
        self,
        endpoints: str | Sequence[str] = DEFAULT_URLS,
        *,
        tls: TLS = None,
        timeout: float | timedelta = 5.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        context = ssl_context(tls)  # checks the CA and certificate files now: errors at construction
        self.servers = parse_urls(endpoints, scheme="http" if context is None else "https")
        self.timeout = seconds(timeout, "timeout", allow_zero=False)
        self._verify: bool | ssl.SSLContext = True if context is None else context
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
        """Close the connections (a later request opens new ones)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    def __repr__(self) -> str:
        return f"eureka.Client({','.join(self.servers)!r})"

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

        A refused connection, a TLS failure, a timeout or a 5xx answer moves on to the next server; any
        other status raises ``EurekaError`` at once (the request itself was wrong).
        """
        failures: list[str] = []
        count = len(self.servers)
        for step in range(count):
            index = (self._current + step) % count
            server = self.servers[index]
            try:
                response = await self._http().request(method, server + path, params=params, json=json)
            except (httpx.HTTPError, OSError) as error:
                # OSError: under TLS 1.3 a refused client certificate is an alert after the
                # handshake, which can surface as a bare ssl.SSLError rather than httpx's error
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
