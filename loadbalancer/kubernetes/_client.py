"""The few API calls discovery needs, straight over httpx: a GET of JSON, and a watch stream of JSON lines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from .._util import describe
from ..errors import DiscoveryError
from ._config import Config

__all__ = ["Client", "KubernetesError"]


class KubernetesError(DiscoveryError):
    """The API server could not be reached or refused a request; ``status`` is the HTTP code (if any)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


def _reason(response: httpx.Response, text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return f"HTTP {response.status_code} {body.get('reason') or ''}: {body.get('message') or ''}".strip(": ")
    return f"HTTP {response.status_code}" + (f": {text[:200]}" if text else "")


class Client:
    """One connection pool to one API server, authenticated as ``config`` says (a rotated token is picked up)."""

    def __init__(self, config: Config, *, timeout: float = 10.0) -> None:
        self.config = config
        self.timeout = timeout
        self._verify = config.ssl_context()  # checks the CA and certificate files now: errors at construction
        self._pool: httpx.AsyncClient | None = None
        self._closed = False

    @property
    def server(self) -> str:
        return self.config.server

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._pool is None:  # made on first use, on the runtime loop every request runs on
            if self._closed:
                raise RuntimeError("the Kubernetes client is closed")
            self._pool = httpx.AsyncClient(
                base_url=self.config.server,
                verify=self._verify,
                timeout=httpx.Timeout(self.timeout),
                trust_env=False,  # cluster traffic never goes through a proxy named in the environment
            )
        return self._pool

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self.config.token.get()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def aclose(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    async def get(self, path: str, params: Mapping[str, str] | None = None, *, what: str) -> Any:
        """GET ``path``; the JSON body (or text, for a non-JSON reply). A refused token is read again, once."""
        for attempt in range(2):
            try:
                response = await self._http.get(path, params=params, headers=self._headers())
            except (httpx.HTTPError, OSError) as error:
                raise KubernetesError(f"kubernetes {self.server}: {what} failed: {describe(error)}") from error
            if response.status_code == 401 and attempt == 0 and self.config.token.path is not None:
                self.config.token.refresh()  # rotated since it was read
                continue
            if response.status_code != 200:
                raise KubernetesError(
                    f"kubernetes {self.server}: {what} failed: {_reason(response, response.text)}",
                    status=response.status_code,
                )
            if response.headers.get("content-type", "").startswith("application/json"):
                try:
                    return response.json()
                except ValueError as error:
                    raise KubernetesError(f"kubernetes {self.server}: {what}: unreadable reply") from error
            return response.text
        raise AssertionError("unreachable")

    async def stream(self, path: str, params: Mapping[str, str], *, what: str, idle: float) -> AsyncIterator[Any]:
        """A watch: each line's JSON as it comes (``None`` once, first, when the server has answered 200).

        Ends when the server ends the stream; raises ``KubernetesError`` on an error status, a
        broken connection or ``idle`` seconds of silence.
        """
        for attempt in range(2):
            try:
                async with self._http.stream(
                    "GET", path, params=params, headers=self._headers(), timeout=httpx.Timeout(self.timeout, read=idle)
                ) as response:
                    if response.status_code == 401 and attempt == 0 and self.config.token.path is not None:
                        self.config.token.refresh()
                        continue
                    if response.status_code != 200:
                        text = (await response.aread()).decode(errors="replace")
                        raise KubernetesError(
                            f"kubernetes {self.server}: {what} failed: {_reason(response, text)}",
                            status=response.status_code,
                        )
                    yield None
                    async for line in response.aiter_lines():
                        if not line.strip():
                            continue
                        try:
                            yield json.loads(line)
                        except ValueError:
                            raise KubernetesError(
                                f"kubernetes {self.server}: {what}: unreadable line {line[:200]!r}"
                            ) from None
                    return
            except (httpx.HTTPError, OSError) as error:
                raise KubernetesError(f"kubernetes {self.server}: {what} broke: {describe(error)}") from error
        raise KubernetesError(f"kubernetes {self.server}: {what} failed: HTTP 401 Unauthorized", status=401)
