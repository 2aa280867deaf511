"""The client side: an asyncio protocol with httptools' parser that relays each request to a backend."""

from __future__ import annotations

import asyncio
import collections
import http
import time
from typing import Any

import httptools

from .._log import get_logger
from .._util import describe
from ..errors import NoEndpointsError
from ..http._policy import IDEMPOTENT, RETRY_STATUSES
from ._cache import CACHEABLE_METHODS, Cache, Entry
from ._metrics import Metrics
from ._upstream import Backend, ConnectFailedError, QueueTimeoutError, UpstreamConnection

__all__ = ["ClientConnection", "Proxy"]

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization", b"te",
     b"trailer", b"transfer-encoding", b"upgrade"}
)  # fmt: skip
_DROPPED_FROM_REQUEST = HOP_BY_HOP | {b"expect", b"content-length", b"host"}
_DROPPED_FROM_RESPONSE = HOP_BY_HOP | {b"content-length"}
_IDEMPOTENT = frozenset(method.encode() for method in IDEMPOTENT)
_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_MAX_PENDING = 1 << 20  # request body bytes held while no backend takes them yet
_MAX_HEADERS = 64 * 1024
_log = get_logger(name=__name__)


class UpstreamError(Exception):
    """The backend's connection failed or sent a malformed answer."""


class DiscardedAnswerError(Exception):
    """The backend answered with a status worth retrying elsewhere; the answer was dropped."""


class FailedAnswerError(Exception):
    """The backend answered 5xx (relayed to the client): counts as its failure for ejection and feedback."""


class Proxy:
    """One worker's state: the balancer, the cache, the metrics, the connections open to clients."""

    def __init__(
        self,
        balancer: Any,
        *,
        metrics: Metrics,
        cache: Cache | None = None,
        attempts: int = 3,
        timeout: float = 30.0,
        scheme: str = "http",
        keepalive_timeout: float = 75.0,
    ) -> None:
        self.balancer = balancer
        self.metrics = metrics
        self.cache = cache
        self.attempts = attempts
        self.timeout = timeout
        self.scheme = scheme.encode()
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[ClientConnection] = set()
        self.draining = False
        self.drained = asyncio.Event()  # set when draining and the last client connection closed
        self._latency: dict[str, Any] = {}

    def observe(self, backend: str, seconds: float) -> None:
        child = self._latency.get(backend)
        if child is None:
            child = self._latency[backend] = self.metrics.latency.labels(backend)
        child.observe(seconds)

    def sweep(self) -> None:
        """Close client connections idle past the keep-alive timeout."""
        deadline = time.monotonic() - self.keepalive_timeout
        for connection in list(self.connections):
            if connection.idle and connection.last_active < deadline:
                connection.close()

    def close_idle(self) -> None:
        for connection in list(self.connections):
            if connection.idle:
                connection.close()


class Request:
    __slots__ = (
        "body_done", "chunked", "expect", "has_body", "headers", "host", "keep_alive", "method", "pending",
        "pending_bytes", "upstream", "url", "version",
    )  # fmt: skip

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.version = b"1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.host = b""
        self.keep_alive = True
        self.has_body = False
        self.chunked = False
        self.expect = False
        self.body_done = False
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.upstream: UpstreamConnection | None = None


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests (HTTP/1.1 keep-alive, pipelined in turn) and serves each."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = b""
        self.queue: collections.deque[Request] = collections.deque()
        self.parsing: Request | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.last_active = time.monotonic()
        self.upstream_paused: UpstreamConnection | None = None
        self.header_bytes = 0

    @property
    def idle(self) -> bool:
        return self.task is None and not self.queue and self.parsing is None

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2" and type(self) is ClientConnection:
            from ._h2 import H2Connection

            h2_connection = H2Connection(self.proxy)
            transport.set_protocol(h2_connection)
            h2_connection.connection_made(transport)
            return
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = (peer[0] if isinstance(peer, tuple) else "unknown").encode()
        self.proxy.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(501, b"protocol upgrades are not relayed\n")
        except httptools.HttpParserError:
            self._reject(400, b"malformed request\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        proxy = self.proxy
        proxy.connections.discard(self)
        if proxy.draining and not proxy.connections:
            proxy.drained.set()
        if self.task is not None:
            self.task.cancel()  # releases the backend connection and slot it held
        self.queue.clear()

    def pause_writing(self) -> None:
        request = self.queue[0] if self.queue else None
        upstream = request.upstream if request is not None else None
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()
            self.upstream_paused = upstream

    def resume_writing(self) -> None:
        upstream = self.upstream_paused
        self.upstream_paused = None
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.resume_reading()

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        self.parsing = Request()
        self.header_bytes = 0

    def on_url(self, url: bytes) -> None:
        assert self.parsing is not None
        self.parsing.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.parsing
        assert request is not None
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > _MAX_HEADERS:
            raise httptools.HttpParserError("headers too large")
        lowered = name.lower()
        if lowered == b"host":
            request.host = value
        elif lowered == b"content-length":
            request.has_body = value.strip() not in (b"0", b"")
        elif lowered == b"transfer-encoding":
            request.chunked = request.has_body = True
        elif lowered == b"expect":
            request.expect = value.lower() == b"100-continue"
        request.headers.append((lowered, value))

    def on_headers_complete(self) -> None:
        request = self.parsing
        assert request is not None
        parser = self.parser
        request.method = parser.get_method()
        request.version = parser.get_http_version().encode()
        request.keep_alive = parser.should_keep_alive()
        self.queue.append(request)
        if request.expect and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.task is None:
            self.task = self.loop.create_task(self._serve())

    def on_body(self, chunk: bytes) -> None:
        request = self.parsing
        assert request is not None
        upstream = request.upstream
        if upstream is not None:
            upstream.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if request.chunked else chunk)
            return
        request.pending.append(chunk)
        request.pending_bytes += len(chunk)
        if request.pending_bytes > _MAX_PENDING and self.transport is not None:
            self.transport.pause_reading()  # resumed when a backend takes the body

    def on_message_complete(self) -> None:
        request = self.parsing
        assert request is not None
        request.body_done = True
        self.parsing = None
        if request.upstream is not None and request.chunked:
            request.upstream.write(b"0\r\n\r\n")

    # -- serving --

    async def _serve(self) -> None:
        try:
            while self.queue and not self.closed:
                request = self.queue[0]
                try:
                    await self._handle(request)
                except Exception as error:  # a bug must cost this connection only, never a slot or a hang
                    _log.error("proxy_request_failed", error=describe(error), exc_info=error)
                    self.abort()
                    return
                if self.queue and self.queue[0] is request:
                    self.queue.popleft()
                if not request.keep_alive or self.proxy.draining:
                    self.close()
                    return
                if not request.body_done:  # answered before the body was read: the stream is out of step
                    self.close()
                    return
        finally:
            self.task = None
            self.last_active = time.monotonic()

    async def _handle(self, request: Request) -> None:
        proxy = self.proxy
        cache = proxy.cache
        cache_base: bytes | None = None
        lookup: dict[bytes, bytes] = {}
        if cache is not None and request.method in CACHEABLE_METHODS:
            lookup = dict(request.headers)
            control = lookup.get(b"cache-control", b"").lower()
            if b"authorization" not in lookup and b"no-store" not in control:
                # a HEAD is answered from the GET's entry (without the body); only GETs are stored
                cache_base = Cache.base_key(b"GET", proxy.scheme + b"://" + request.host + request.url)
                entry = None if b"no-cache" in control else cache.lookup(cache_base, lookup)
                proxy.metrics.cache.labels("hit" if entry is not None else "miss").inc()
                if entry is not None:
                    self._send_cached(request, entry)
                    proxy.metrics.answered("cache", request.method.decode(), entry.status)
                    return
        attempts_left = proxy.attempts
        idempotent = request.method in _IDEMPOTENT and not request.has_body
        tried: list[str] = []
        while True:
            attempts_left -= 1
            try:
                tracked = proxy.balancer.endpoint()
                for _ in range(8 if tried else 0):  # a retry goes to a backend not tried yet, if there is one
                    if str(tracked) not in tried:
                        break
                    tracked = proxy.balancer.endpoint()
            except NoEndpointsError:
                proxy.metrics.unavailable.labels("no_backend").inc()
                self._simple(request, 503, b"no backend available\n")
                return
            attempt = Attempt(self, request, retry_statuses=idempotent and attempts_left > 0, cache_base=cache_base)
            attempt.lookup = lookup
            tried.append(str(tracked))
            try:
                await tracked(attempt)
                return
            except ConnectFailedError:
                if attempts_left > 0 and request.pending_bytes <= _MAX_PENDING:
                    proxy.metrics.retries.labels("connect").inc()
                    continue
                self._simple(request, 502, b"no backend could be reached\n", attempt.backend)
                return
            except QueueTimeoutError:
                proxy.metrics.unavailable.labels("queue_timeout").inc()
                self._simple(request, 503, b"all connections to the backend stayed busy\n", attempt.backend)
                return
            except DiscardedAnswerError:
                proxy.metrics.retries.labels("status").inc()
                continue
            except FailedAnswerError:
                return
            except TimeoutError:
                if attempt.head_sent:
                    self.abort()
                else:
                    self._simple(request, 504, b"the backend did not answer in time\n", attempt.backend)
                return
            except UpstreamError:
                if attempt.head_sent:
                    self.abort()  # the answer was cut: the client must see it was
                    return
                if idempotent and attempts_left > 0:
                    proxy.metrics.retries.labels("upstream").inc()
                    continue
                self._simple(request, 502, b"the backend failed\n", attempt.backend)
                return

    def _send_cached(self, request: Request, entry: Entry) -> None:
        age = int(time.monotonic() - entry.stored)
        headers = [*entry.headers, (b"age", b"%d" % age), (b"x-cache", b"HIT")]
        head_only = request.method == b"HEAD"
        self.send_head(request, entry.status, headers, b"%d" % len(entry.body), head_only)
        if not head_only and entry.body:
            self.send_body(request, entry.body, False)
        self.send_end(request, False)

    def _simple(self, request: Request, status: int, body: bytes, backend: Backend | None = None) -> None:
        """An answer of the proxy's own (503, 502, 504), plain text."""
        if not request.body_done:
            request.keep_alive = False  # the rest of the body is not read: the connection cannot go on
        head_only = request.method == b"HEAD"
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        self.send_head(request, status, headers, b"%d" % len(body), head_only)
        if not head_only:
            self.send_body(request, body, False)
        self.send_end(request, False)
        self.proxy.metrics.answered(str(backend) if backend else "none", request.method.decode(), status)

    def _reject(self, status: int, body: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(
                b"HTTP/1.1 %d %b\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%b"
                % (status, _REASONS[status], len(body), body)
            )
        self.close()

    # -- the answer's framing (HTTP/1.1 here; HTTP/2 overrides) --

    def send_head(
        self, request: Request, status: int, headers: list[tuple[bytes, bytes]], length: bytes | None, no_body: bool
    ) -> bool:
        """Write the answer's head; True when its body is to be sent chunked."""
        lines = [b"HTTP/1.1 %d %b\r\n" % (status, _REASONS.get(status, b"Unknown"))]
        lines += [b"%b: %b\r\n" % pair for pair in headers]
        chunked = False
        if length is not None:
            lines.append(b"content-length: %b\r\n" % length)
        elif not no_body:
            if request.version == b"1.1":
                lines.append(b"transfer-encoding: chunked\r\n")
                chunked = True
            else:
                request.keep_alive = False  # the end of the body is the end of the connection
        if not request.keep_alive or self.proxy.draining:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self.write(b"".join(lines))
        return chunked

    def send_body(self, request: Request, chunk: bytes, chunked: bool) -> None:
        self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)

    def send_end(self, request: Request, chunked: bool) -> None:
        if chunked:
            self.write(b"0\r\n\r\n")

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


class Attempt:
    """One try of a request on one backend; also the ``Exchange`` its upstream connection reports to."""

    __slots__ = (
        "backend", "buffer", "buffered", "cache_base", "chunked_out", "client", "future", "head_sent", "lookup",
        "request", "retry_statuses", "status", "timer", "upstream_headers",
    )  # fmt: skip

    def __init__(self, client: ClientConnection, request: Request, *, retry_statuses: bool, cache_base: bytes | None):
        self.client = client
        self.request = request
        self.retry_statuses = retry_statuses
        self.cache_base = cache_base
        self.backend: Backend | None = None
        self.future: asyncio.Future[None] | None = None
        self.head_sent = False
        self.chunked_out = False
        self.status = 0
        self.buffer: list[bytes] | None = None
        self.buffered = 0
        self.upstream_headers: list[tuple[bytes, bytes]] = []
        self.lookup: dict[bytes, bytes] = {}
        self.timer: asyncio.TimerHandle | None = None

    async def run(self, backend: Backend) -> None:
        self.backend = backend
        client = self.client
        request = self.request
        connection = await backend.acquire()
        loop = client.loop
        future = self.future = loop.create_future()
        started = time.monotonic()
        timer = self.timer = loop.call_later(client.proxy.timeout, _time_out, future)
        completed = False
        try:
            connection.peer = client.transport
            connection.start(
                self, self._request_head(backend) + b"".join(self._take_pending()), request.method == b"HEAD"
            )
            if request.body_done:
                if request.chunked and request.has_body:
                    connection.write(b"0\r\n\r\n")
            else:
                request.upstream = connection
            await future
            completed = True
        finally:
            timer.cancel()
            request.upstream = None
            if not completed:
                connection.exchange = None
                connection.close()
            backend.release(connection)
        proxy = client.proxy
        proxy.observe(str(backend), time.monotonic() - started)
        proxy.metrics.answered(str(backend), request.method.decode(), self.status)
        if self.buffer is not None and proxy.cache is not None and self.cache_base is not None:
            proxy.cache.store(self.cache_base, self.lookup, self.status, self.upstream_headers, b"".join(self.buffer))
        if self.status >= 500:
            raise FailedAnswerError(f"{backend.url} answered {self.status}")

    def _take_pending(self) -> list[bytes]:
        request = self.request
        pending = request.pending
        if request.chunked:
            pending = [b"%x\r\n%b\r\n" % (len(chunk), chunk) for chunk in pending]
        if request.pending_bytes > _MAX_PENDING and self.client.transport is not None:
            self.client.transport.resume_reading()
        # kept (not cleared) so that a failed connect can go to another backend with the same body
        return pending

    def _request_head(self, backend: Backend) -> bytes:
        request = self.request
        client = self.client
        connection_tokens = [
            token.strip().lower()
            for name, value in request.headers
            if name == b"connection"
            for token in value.split(b",")
        ]
        dropped = _DROPPED_FROM_REQUEST.union(connection_tokens) if connection_tokens else _DROPPED_FROM_REQUEST
        lines = [b"%b %b HTTP/1.1\r\n" % (request.method, request.url)]
        forwarded_for = client.client_ip
        proto = client.proxy.scheme
        host = request.host or backend.host_header
        for name, value in request.headers:
            if name in dropped:
                if name == b"content-length" and not request.chunked:
                    lines.append(b"content-length: %b\r\n" % value)
                continue
            if name == b"x-forwarded-for":
                forwarded_for = value + b", " + forwarded_for
                continue
            if name in (b"x-forwarded-proto", b"x-forwarded-host"):
                continue
            lines.append(b"%b: %b\r\n" % (name, value))
        if request.chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(
            b"host: %b\r\nx-forwarded-for: %b\r\nx-forwarded-proto: %b\r\nx-forwarded-host: %b\r\n\r\n"
            % (host, forwarded_for, proto, host)
        )
        return b"".join(lines)

    # -- Exchange --

    def head(self, connection: UpstreamConnection) -> bool:
        if self.timer is not None:
            self.timer.cancel()  # --timeout bounds the wait for an answer to begin, not a long body
        status = connection.status
        self.status = status
        if self.retry_statuses and status in RETRY_STATUSES:
            if self.future is not None and not self.future.done():
                self.future.set_exception(DiscardedAnswerError(f"{connection.backend.url} answered {status}"))
            return False
        client = self.client
        request = self.request
        headers = connection.headers
        connection_tokens = [
            token.strip().lower()
            for name, value in headers
            if name.lower() == b"connection"
            for token in value.split(b",")
        ]
        dropped = _DROPPED_FROM_RESPONSE.union(connection_tokens) if connection_tokens else _DROPPED_FROM_RESPONSE
        kept: list[tuple[bytes, bytes]] = []
        length: bytes | None = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length":
                length = value
            if lowered not in dropped:
                kept.append((name, value))
        no_body = request.method == b"HEAD" or status in (204, 304) or 100 <= status < 200
        self.chunked_out = client.send_head(request, status, kept, length, no_body)
        self.head_sent = True
        if self.cache_base is not None and request.method == b"GET" and 200 <= status < 500:
            self.buffer = []
            self.upstream_headers = kept
        return True

    def body(self, chunk: bytes) -> None:
        self.client.send_body(self.request, chunk, self.chunked_out)
        if self.buffer is not None:
            self.buffer.append(chunk)
            self.buffered += len(chunk)
            cache = self.client.proxy.cache
            if cache is not None and self.buffered > cache.max_entry:
                self.buffer = None

    def complete(self, keep_alive: bool) -> None:
        self.client.send_end(self.request, self.chunked_out)
        future = self.future
        if future is not None and not future.done():
            future.set_result(None)

    def failed(self, error: BaseException) -> None:
        future = self.future
        if future is not None and not future.done():
            future.set_exception(UpstreamError(str(error) or type(error).__name__))


def _time_out(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("the backend did not answer in time"))
