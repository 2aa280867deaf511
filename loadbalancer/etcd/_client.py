"""``etcd.Client``: the members of one etcd cluster over its v3 JSON gateway, with failover and auth.

Everything goes through etcd's v3 JSON gateway (``/v3/...``): keys and values are base64,
64-bit numbers are JSON strings, zero values are left out. One ``Client`` holds one httpx
connection pool (made on first use, on the event loop that uses it) and the list of
cluster members.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import AsyncGenerator, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

import httpx

from .._deprecated import renamed
from .._tls import TLS, legacy_tls, ssl_context
from .._util import describe, seconds
from ..errors import DiscoveryError
from ._connection import DEFAULT_ENDPOINTS, parse_endpoints

__all__ = ["Client", "EtcdError", "b64", "range_end"]

# gRPC status codes etcd reports (in the body, and as ``grpc_code`` in a stream's error line).
UNAVAILABLE = 14  # no leader, request timed out, leader changed, member stopping
_TRANSIENT_CODES = frozenset({1, 4, UNAVAILABLE})  # cancelled, deadline exceeded, unavailable
_UNAUTHENTICATED = 16
_OUT_OF_RANGE = 11  # "required revision has been compacted" / "... is a future revision"


class EtcdError(DiscoveryError):
    """An etcd request failed; ``member`` is the member's URL, ``key`` the key or prefix concerned.

    ``code`` is etcd's gRPC status code when it gave one (14: unavailable, 11: compacted or
    future revision, 16: unauthenticated); ``reason`` is what went wrong, without the
    context; ``transient`` says whether another member or a later attempt may succeed.

    >>> error = EtcdError("etcd http://127.0.0.1:2379: range '/services/api/' failed: ConnectError",
    ...                   member="http://127.0.0.1:2379", key="/services/api/", reason="ConnectError")
    >>> error.member, error.key
    ('http://127.0.0.1:2379', '/services/api/')
    """

    def __init__(
        self,
        message: str,
        *,
        member: str | None = None,
        key: str | None = None,
        code: int | None = None,
        transient: bool = False,
        reason: str | None = None,
    ) -> None:
        self.member = member
        self.key = key
        self.code = code
        self.transient = transient
        self.reason = message if reason is None else reason
        super().__init__(message)

    @property
    def compacted(self) -> bool:
        """Whether etcd said the revision asked for has been compacted away."""
        return self.code == _OUT_OF_RANGE and "compacted" in str(self)


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def range_end(prefix: bytes) -> bytes:
    """The end of the key range that holds every key starting with ``prefix``."""
    raw = bytearray(prefix)
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return b"\0"  # every key
    raw[-1] += 1
    return bytes(raw)


def _decode(text: str) -> dict[str, Any]:
    """The first JSON object of a gateway reply (a stream's first line), unwrapped from ``result``."""
    for line in text.splitlines():
        if line.strip():
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError(f"expected a JSON object, got {line[:200]!r}")
            result = message.get("result")
            return result if isinstance(result, dict) and "error" not in message else message
    raise ValueError("empty reply")


def _error_of(message: dict[str, Any]) -> tuple[int | None, str] | None:
    """``(code, text)`` if ``message`` reports an error (the unary form or a stream's error line)."""
    error = message.get("error")
    if error is None:
        return None
    if isinstance(error, dict):
        code = error.get("grpc_code")
        return (code if isinstance(code, int) else None), str(error.get("message", error))
    code = message.get("code")
    return (code if isinstance(code, int) else None), str(message.get("message") or error)


class Client:
    """The members of one etcd cluster, spoken to over its v3 JSON gateway, moving on when one fails.

    - ``endpoints``: a connection string ``"[http[s]://]host[:port][,host[:port]...][/namespace]"``
      or a sequence of member URLs (the port defaults to 2379). A member without a scheme
      takes the one before it; the first takes ``https`` when ``tls=`` is given, else ``http``.
    - ``namespace``: what every key goes under (or the connection string's path);
    - ``username``/``password``: etcd authentication; a token from ``/v3/auth/authenticate``
      goes with each request and is fetched again when etcd says it has expired;
    - ``tls``: a ``loadbalancer.TLSConfig`` (CA, client certificate), an ``ssl.SSLContext``,
      ``True`` (the system's CAs) or ``None`` (plain; ``https://`` members get the system's CAs);
    - ``timeout``: seconds per request.

    Requests start at the current member; a failure that another member may not have (a
    refused connection, a timeout, "no leader") moves on to the next, once around the
    cluster, and raises ``EtcdError`` when none answered. The methods are coroutines, run
    on one event loop: hand the client to an ``etcd.Backend`` (which publishers and
    registrars run on the library's loop) before using it, or use it on a loop of your own.

    >>> client = Client("10.0.0.1,10.0.0.2:2380/prod", username="root", password="s3cret", tls=True)
    >>> client.members, client.namespace
    (('https://10.0.0.1:2379', 'https://10.0.0.2:2380'), '/prod')
    >>> backend = Backend(client, root="/prod/services/")  # doctest: +SKIP
    >>> publisher = loadbalancer.backend.Publisher(backend, "api")  # doctest: +SKIP

    Or directly, in async code::

        async with etcd.Client("127.0.0.1:2379") as client:
            status = await client.call("/v3/maintenance/status", {})
    """

    @renamed(verify=legacy_tls, cert=legacy_tls)
    def __init__(
        self,
        endpoints: str | Sequence[str] = DEFAULT_ENDPOINTS,
        *,
        namespace: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls: TLS = None,
        timeout: float | timedelta = 5.0,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username= and password=, or neither")
        context = ssl_context(tls)  # checks the CA and certificate files now: errors at construction
        connection = parse_endpoints(endpoints, namespace, scheme="http" if context is None else "https")
        self.members = connection.members
        self.namespace = connection.namespace
        self.timeout = seconds(timeout, "timeout", allow_zero=False)
        self._auth = None if username is None or password is None else (username, password)
        self._verify: bool | ssl.SSLContext = True if context is None else context
        self._pool: httpx.AsyncClient | None = None
        self._closed = False
        self._index = 0
        self._tokens: dict[str, str] = {}

    @property
    def _http(self) -> httpx.AsyncClient:
        # Made on first use, on the runtime loop that all of this client's requests run on.
        if self._pool is None:
            if self._closed:
                raise RuntimeError("the etcd client is closed")
            self._pool = httpx.AsyncClient(
                verify=self._verify,
                timeout=httpx.Timeout(self.timeout),
                limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=30.0),
                trust_env=False,  # cluster traffic never goes through a proxy named in the environment
            )
        return self._pool

    @property
    def member(self) -> str:
        """The member that requests go to first."""
        return self.members[self._index]

    def rotate(self, failed: str | None) -> None:
        """Move on from ``failed`` to the next member (if it is still the current one)."""
        if failed is None or failed == self.members[self._index]:
            self._index = (self._index + 1) % len(self.members)

    def forget_token(self, member: str) -> None:
        """Drop ``member``'s token: the next request there authenticates again."""
        self._tokens.pop(member, None)

    async def aclose(self) -> None:
        """Close the connections; the client cannot be used afterwards."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        namespace = f", namespace={self.namespace!r}" if self.namespace else ""
        return f"etcd.Client({','.join(self.members)!r}{namespace})"

    # -- unary requests --------------------------------------------------------------------

    async def call(
        self,
        path: str,
        body: dict[str, Any],
        *,
        what: str | None = None,
        key: str | None = None,
        within: float | None = None,
    ) -> dict[str, Any]:
        """POST ``body`` to ``path`` (``"/v3/kv/range"``), trying each member once from the current one.

        Returns the reply's JSON object; raises ``EtcdError`` (its message says ``what`` was
        done to ``key``: ``what`` defaults to the path's last part). ``within``: a time
        limit in seconds for each member's answer, instead of the client's ``timeout``.
        """
        what = what or path.rsplit("/", 1)[-1]
        errors: list[EtcdError] = []
        for _ in range(len(self.members)):
            member = self.member
            try:
                return await self.call_member(member, path, body, what=what, key=key, within=within)
            except EtcdError as error:
                if not error.transient:
                    raise
                errors.append(error)
                self.rotate(member)
        if len(errors) == 1:
            raise errors[0]
        reasons = "; ".join(f"{error.member}: {error.reason}" for error in errors)
        last = errors[-1]
        raise EtcdError(
            f"etcd {what} {key!r} failed on every member: {reasons}",
            member=last.member,
            key=key,
            code=last.code,
            transient=True,
        ) from last

    async def call_member(
        self,
        member: str,
        path: str,
        body: dict[str, Any],
        *,
        what: str | None = None,
        key: str | None = None,
        within: float | None = None,
    ) -> dict[str, Any]:
        """POST ``body`` to ``path`` on ``member`` only (fetching a fresh token once if the old one expired)."""
        what = what or path.rsplit("/", 1)[-1]
        for attempt in range(2):
            headers = await self._headers(member, what, key)
            try:
                response = await self._http.post(
                    f"{member}{path}",
                    json=body,
                    headers=headers,
                    timeout=self.timeout if within is None else within,
                )
                text = response.text
            except (httpx.HTTPError, OSError) as error:  # OSError: an ssl.SSLError can come through unwrapped
                raise _member_error(member, what, key, describe(error), transient=True) from error
            try:
                message = _decode(text)
            except ValueError as error:
                if response.status_code >= 500:
                    raise _member_error(member, what, key, f"HTTP {response.status_code}", transient=True) from None
                raise _member_error(member, what, key, f"unreadable reply ({error})") from None
            problem = _error_of(message)
            if problem is None and response.status_code == 200:
                return message
            code, reason = problem if problem is not None else (None, f"HTTP {response.status_code}")
            if code == _UNAUTHENTICATED and self._auth is not None and attempt == 0 and member in self._tokens:
                self.forget_token(member)  # expired: authenticate again, once
                continue
            transient = code in _TRANSIENT_CODES or (code is None and response.status_code >= 500)
            raise _member_error(member, what, key, reason, code=code, transient=transient)
        raise AssertionError("unreachable")

    async def _headers(self, member: str, what: str, key: str | None) -> dict[str, str]:
        if self._auth is None:
            return {}
        token = self._tokens.get(member)
        if token is None:
            name, password = self._auth
            try:
                response = await self._http.post(
                    f"{member}/v3/auth/authenticate", json={"name": name, "password": password}
                )
                message = _decode(response.text)
            except (httpx.HTTPError, OSError) as error:  # OSError: an ssl.SSLError can come through unwrapped
                raise _member_error(member, "authenticate for " + what, key, describe(error), transient=True) from error
            except ValueError as error:
                raise _member_error(member, "authenticate for " + what, key, f"unreadable reply ({error})") from None
            problem = _error_of(message)
            token = message.get("token")
            if problem is not None or not isinstance(token, str):
                code, reason = problem or (None, f"no token in {message!r}")
                raise _member_error(
                    member,
                    f"authenticate as {name!r} for {what}",
                    key,
                    reason,
                    code=code,
                    transient=code == UNAVAILABLE,
                )
            self._tokens[member] = token
        return {"Authorization": token}

    async def probe(self, member: str, within: float | None = None) -> None:
        """Raise ``EtcdError`` unless ``member`` answers its status (within ``within`` seconds) and has a leader."""
        status = await self.call_member(member, "/v3/maintenance/status", {}, what="status", within=within)
        problems = [str(problem) for problem in status.get("errors", ())]
        if any("no leader" in problem for problem in problems):
            raise _member_error(member, "status", None, "; ".join(problems), code=UNAVAILABLE, transient=True)

    # -- watch streams ---------------------------------------------------------------------

    async def watch(self, member: str, body: dict[str, Any], *, key: str) -> AsyncGenerator[dict[str, Any], None]:
        """The responses (``result`` objects) of a watch on ``member``; ``EtcdError`` when the stream fails or ends.

        The watch asks etcd to end it when the member loses its leader (gRPC metadata
        ``hasleader``), so that a member cut off from the cluster cannot keep a silent watch.
        """
        headers = await self._headers(member, "watch", key)
        headers["Grpc-Metadata-Hasleader"] = "true"
        try:
            async with self._http.stream(
                "POST",
                f"{member}/v3/watch",
                json=body,
                headers=headers,
                timeout=httpx.Timeout(self.timeout, read=None),  # liveness is checked by the caller
            ) as response:
                if response.status_code != 200:
                    text = (await response.aread()).decode(errors="replace")
                    try:
                        problem = _error_of(_decode(text))
                    except ValueError:
                        problem = None
                    code, reason = problem or (None, f"HTTP {response.status_code}")
                    raise _member_error(
                        member, "watch", key, reason, code=code, transient=code in _TRANSIENT_CODES or code is None
                    )
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        message = json.loads(line)
                    except ValueError:
                        raise _member_error(
                            member, "watch", key, f"unreadable line {line[:200]!r}", transient=True
                        ) from None
                    problem = _error_of(message)
                    if problem is not None:
                        code, reason = problem
                        raise _member_error(member, "watch", key, reason, code=code, transient=True)
                    result = message.get("result")
                    if isinstance(result, dict):
                        yield result
        except (httpx.HTTPError, OSError) as error:  # OSError: an ssl.SSLError can come through unwrapped
            raise _member_error(member, "watch", key, describe(error), transient=True) from error
        raise _member_error(member, "watch", key, "the stream ended", transient=True)


def _member_error(
    member: str,
    what: str,
    key: str | None,
    reason: str,
    *,
    code: int | None = None,
    transient: bool = False,
) -> EtcdError:
    """One member's failure: ``etcd http://127.0.0.1:2379: range '/services/api/' failed: ...``."""
    subject = f" {key!r}" if key is not None else ""
    return EtcdError(
        f"etcd {member}: {what}{subject} failed: {reason}",
        member=member,
        key=key,
        code=code,
        transient=transient,
        reason=reason,
    )
