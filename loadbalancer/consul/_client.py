"""The HTTP side of the Consul backend: requests to one agent, with the token and the datacenter, and their errors.

One ``Client`` holds one httpx connection pool to one Consul agent (or server) and is used
only on the library's runtime loop; which agent and how to speak to it is ``_connection``'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from .._deprecated import renamed
from .._tls import TLS
from .._util import describe
from ..errors import DiscoveryError
from ._connection import connection, old_tls

__all__ = ["Client", "ConsulError", "go_duration"]


class ConsulError(DiscoveryError):
    """A Consul request failed: ``status`` is the HTTP status (``None``: no answer), ``path`` what was asked.

    >>> error = ConsulError("consul http://127.0.0.1:8500: PUT /v1/agent/service/register: 403 ACL not found",
    ...                     status=403, path="/v1/agent/service/register")
    >>> error.status, error.denied
    (403, True)
    """

    def __init__(self, message: str, *, status: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.path = path

    @property
    def denied(self) -> bool:
        """Whether Consul refused the ACL token (403)."""
        return self.status == 403


def go_duration(value: float) -> str:
    """Seconds as a Go duration string, as Consul takes them (``"2.5s"``)."""
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


class Client:
    """One Consul agent's HTTP API: ``get``/``put`` with the token, the datacenter and a timeout.

    ``endpoints``: the agent, ``"host:port"`` or ``"http[s]://host:port"`` (one address: a
    client talks to its local agent); ``token``: the ACL token; ``tls``: a
    ``loadbalancer.TLSConfig``, an ``ssl.SSLContext`` or ``True`` (https to an address
    without a scheme too), ``False`` for none. What is not given is read from Consul's
    environment variables as Consul's CLI reads them (``CONSUL_HTTP_ADDR``,
    ``CONSUL_HTTP_TOKEN_FILE``, ``CONSUL_HTTP_TOKEN``, ``CONSUL_HTTP_SSL``, ``CONSUL_CACERT``,
    ``CONSUL_CLIENT_CERT``, ``CONSUL_CLIENT_KEY``, ``CONSUL_HTTP_SSL_VERIFY``); ``tls=False``
    reads no TLS variable.

    >>> Client("127.0.0.1:8501", tls=True, token="secret").address
    'https://127.0.0.1:8501'
    """

    @renamed(address="endpoints", verify=old_tls, cert=old_tls)
    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        token: str | None = None,
        datacenter: str | None = None,
        tls: TLS = None,
        timeout: float = 5.0,
    ) -> None:
        if datacenter is not None and (not isinstance(datacenter, str) or not datacenter or "/" in datacenter):
            raise ValueError(f"invalid datacenter {datacenter!r}: give a name such as 'dc1'")
        agent = connection(endpoints, token, tls)
        self.address = agent.url
        self.token = agent.token
        self.datacenter = datacenter
        self.timeout = timeout
        self._verify = agent.verify
        self._pool: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._pool is None:
            headers = {} if self.token is None else {"X-Consul-Token": self.token}
            self._pool = httpx.AsyncClient(
                base_url=self.address,
                verify=self._verify,
                headers=headers,
                timeout=self.timeout,
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            )
        return self._pool

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    async def get(
        self, path: str, params: list[tuple[str, Any]] | None = None, *, wait: float | None = None
    ) -> tuple[Any, int]:
        """GET ``path``: the decoded JSON body and ``X-Consul-Index`` (0 if absent); ``wait`` stretches the timeout."""
        query = list(params or ())
        if self.datacenter is not None:
            query.append(("dc", self.datacenter))
        timeout = self.timeout if wait is None else wait + wait / 16 + self.timeout
        reply = await self._send("GET", path, params=query, timeout=timeout)
        try:
            body = reply.json() if reply.content else None
        except json.JSONDecodeError as error:
            raise self._error("GET", path, f"the answer is not JSON: {describe(error)}", reply.status_code) from None
        try:
            index = int(reply.headers.get("X-Consul-Index", "0"))
        except ValueError:
            raise self._error("GET", path, f"bad X-Consul-Index {reply.headers['X-Consul-Index']!r}", 200) from None
        return body, index

    async def put(self, path: str, body: Any = None, params: list[tuple[str, Any]] | None = None) -> None:
        await self._send("PUT", path, params=list(params or ()), json_body=body)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, Any]],
        timeout: float | None = None,  # noqa: ASYNC109 - httpx's per-request timeout
        json_body: Any = None,
    ) -> httpx.Response:
        try:
            reply = await self._http().request(
                method,
                path,
                params=params,
                json=json_body,
                timeout=self.timeout if timeout is None else timeout,
            )
        except (httpx.HTTPError, OSError) as error:  # OSError: a TLS alert read after the handshake escapes httpx
            raise self._error(method, path, describe(error), None) from error
        if reply.status_code != 200:
            text = reply.text.strip()[:300] or reply.reason_phrase
            raise self._error(method, path, f"{reply.status_code} {text}", reply.status_code)
        return reply

    def _error(self, method: str, path: str, what: str, status: int | None) -> ConsulError:
        return ConsulError(f"consul {self.address}: {method} {path}: {what}", status=status, path=path)

    @staticmethod
    def segment(value: str) -> str:
        """``value`` quoted as one path segment."""
        return quote(value, safe="")
