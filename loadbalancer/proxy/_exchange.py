"""Serving a request on the backends, whatever the client's protocol: cache, retries, one attempt at a time.

``Downstream`` is what HTTP/1.1 and HTTP/2 client connections share: ``handle()`` answers a
request from the cache or through the balancer, retrying as the proxy's rules allow, and the
protocol supplies the framing (``send_head``, ``send_body``, ...). An ``Attempt`` is one try
on one backend; its upstream connection reports the answer to it, and that connection's timer
bounds the waits on the backend (``--timeout`` from the end of the request to the answer's
head, then ``--read-timeout`` between reads, and for the backend to take the body).

The common case runs on callbacks alone: a first attempt on a kept-alive backend connection
starts when the request's head is read and ends in the backend's read callback, with no task,
coroutine or future (they cost a fifth of a request's time). A request that must wait for a
connection, or whose first attempt failed and may be retried, goes on in a task, on the retry
engine. Either way the request's ``serving`` is what cancels it (the client left or timed
out), and the client is told ``served(request)`` when its answer is complete.
"""

from __future__ import annotations

import asyncio
import http
import math
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .._engine import Attempt as Try
from .._engine import Call, adrive
from .._httpspec import IDEMPOTENT, RETRY_STATUSES
from .._log import get_logger
from .._util import describe
from ..errors import NoEndpointsError
from ..tracked import TrackedEndpoint
from ._cache import CACHEABLE_METHODS, Cache, Entry
from ._errors import (
    AnswerTimeoutError,
    ConnectFailedError,
    DiscardedAnswerError,
    FailedAnswerError,
    QueueTimeoutError,
    StalledError,
    UpstreamError,
)
from ._fields import EMPTY, Fields
from ._request import HOP_BY_HOP, Request, dropped
from ._upstream import Backend, UpstreamConnection

if TYPE_CHECKING:
    from ._proxy import Proxy

__all__ = ["REASONS", "Attempt", "Downstream"]

_DROPPED_FROM_REQUEST = HOP_BY_HOP | {b"expect", b"content-length", b"host", b"x-forwarded-proto", b"x-forwarded-host"}
_PLAIN_TEXT = Fields.of([(b"content-type", b"text/plain; charset=utf-8")])  # the proxy's own answers
_IDEMPOTENT = frozenset(method.encode() for method in IDEMPOTENT)
# A tuple made once: `isinstance(x, A | B)` builds the union on every call (two `|` of types).
_RETRIED_ON_CALLBACKS = (ConnectFailedError, DiscardedAnswerError, UpstreamError)
_LATE = (AnswerTimeoutError, StalledError)
REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
_log = get_logger(name=__name__)


class Downstream:
    """A client connection's protocol-independent half: serves requests, answers in the protocol's framing."""

    proxy: Proxy
    loop: asyncio.AbstractEventLoop
    client_ip: bytes

    # -- the framing each protocol provides ------------------------------------------------------

    def send_head(self, request: Request, status: int, headers: Fields, length: bytes | None, no_body: bool) -> bool:
        """Write the answer's head; True when its body is to be sent chunked."""
        raise NotImplementedError

    def send_body(self, request: Request, chunk: bytes | memoryview, chunked: bool) -> None:
        raise NotImplementedError

    def holds_body(self) -> bool:
        """Whether the last chunk given to ``send_body`` may still be held (not yet written out):
        a chunk read into a reused buffer must then not be overwritten."""
        return True

    def send_end(self, request: Request, chunked: bool) -> None:
        raise NotImplementedError

    def send_held(self) -> None:
        """Write out what the framing held back to join to the next write (the backend's read ended)."""

    def send_informational(self, request: Request, status: int, headers: Fields) -> None:
        """A 1xx answer ahead of the final one (103 Early Hints); dropped where the protocol cannot carry it."""

    def switch(self, request: Request, connection: UpstreamConnection, backend: Backend, rest: bytes) -> None:
        """The backend switched protocols (101) as the client asked: relay bytes both ways from now on."""
        raise NotImplementedError

    def attach(self, request: Request, connection: UpstreamConnection) -> None:
        """``connection`` now serves ``request``: apply the client's backpressure to it."""

    def detach(self, request: Request) -> None:
        """The attempt on ``request`` ended."""

    def upload_paused(self, request: Request) -> None:
        """The backend takes no more of the body for now: stop reading it from the client."""

    def upload_resumed(self, request: Request) -> None:
        """The backend takes the body again."""

    def abort(self) -> None:
        raise NotImplementedError

    def served(self, request: Request) -> None:
        """A request ``handle()`` forwarded has its answer (or the proxy's own) complete."""
        raise NotImplementedError

    def broken(self, request: Request, error: Exception) -> None:
        """Serving ``request`` raised (a bug): it must cost this request or connection only."""
        raise NotImplementedError

    # -- serving ------------------------------------------------------------------------------

    def handle(self, request: Request) -> bool:
        """Answer ``request`` now (True: refused, from the cache, or no backend), or forward it (False).

        A forwarded request is carried by ``request.serving`` (cancel it to give the request
        up) and ends with ``served(request)``, which may come before this returns.
        """
        proxy = self.proxy
        if request.refusal is not None:
            status, body = request.refusal
            self.answer(request, status, body)
            proxy.metrics.rejected.labels(str(status)).inc()
            return True
        cache = proxy.cache
        cache_base: bytes | None = None
        lookup: dict[bytes, bytes] = {}
        if cache is not None and request.method in CACHEABLE_METHODS:
            lookup = dict(request.headers)
            control = lookup.get(b"cache-control", b"").lower()
            if b"authorization" not in lookup and b"no-store" not in control:
                # a HEAD is answered from the GET's entry (without the body); only GETs are stored
                cache_base = Cache.base_key(b"GET", request.cache_key_url(proxy.scheme))
                entry = None if b"no-cache" in control else cache.lookup(cache_base, lookup)
                proxy.metrics.cache.labels("hit" if entry is not None else "miss").inc()
                if entry is not None:
                    self._send_cached(request, entry)
                    proxy.metrics.answered("cache", request.method, entry.status)
                    return True
        return self._forward(request, cache_base, lookup)

    def _forward(self, request: Request, cache_base: bytes | None, lookup: dict[bytes, bytes]) -> bool:
        proxy = self.proxy
        proxy.budget.deposit()
        try:
            endpoint = proxy.balancer.endpoint()
        except NoEndpointsError as error:
            self._failed(request, error, None)
            return True
        trackers: list[TrackedEndpoint[Any]] = []
        backend = endpoint
        while isinstance(backend, TrackedEndpoint):  # the balancer's and the ejection's trackers
            trackers.append(backend)
            backend = backend.endpoint
        attempt = Attempt(self, request, retry_statuses=self._retries_statuses(request, 1), cache_base=cache_base)
        attempt.lookup = lookup
        connection = backend.take() if isinstance(backend, Backend) else None
        if connection is None:  # a connection to open or wait for: a task
            request.serving = self.loop.create_task(self._carry(request, self._forward_slowly(attempt, endpoint)))
            return False
        attempt.endpoint = endpoint
        request.serving = attempt
        attempt.begin(trackers, backend, connection, self._first_ended)
        return False

    def _retries_statuses(self, request: Request, number: int) -> bool:
        """Whether attempt ``number`` may drop a 502/503/504 answer to retry elsewhere."""
        idempotent = request.method in _IDEMPOTENT and not request.has_body and not request.upgrade
        return idempotent and number < self.proxy.attempts

    def _first_ended(self, attempt: Attempt, error: BaseException | None) -> None:
        """A first attempt run on callbacks has ended: the request is served, failed, or retried in a task."""
        request = attempt.request
        try:
            if error is not None and isinstance(error, _RETRIED_ON_CALLBACKS):
                retry = self._retry(attempt, error, attempt.endpoint)
                request.serving = self.loop.create_task(self._carry(request, retry))
                return
            request.serving = None
            if error is not None:
                self._failed(request, error, attempt.backend)
        except Exception as bug:
            request.serving = None
            self.broken(request, bug)
            return
        self.served(request)

    async def _carry(self, request: Request, forwarding: Coroutine[Any, Any, None]) -> None:
        """Run a forwarding coroutine in its task; ``served`` once it ends (not if cancelled)."""
        try:
            await forwarding
        except Exception as error:
            request.serving = None
            self.broken(request, error)
            return
        request.serving = None
        self.served(request)

    async def _forward_slowly(self, attempt: Attempt, endpoint: Any) -> None:
        """The first attempt, when it must wait for a backend connection: as the retry engine's attempts run."""
        request = attempt.request
        try:
            await endpoint(attempt)
            return
        except (ConnectFailedError, DiscardedAnswerError, UpstreamError) as error:
            await self._retry(attempt, error, endpoint)
        except (QueueTimeoutError, FailedAnswerError, AnswerTimeoutError) as error:
            self._failed(request, error, attempt.backend)

    async def _retry(self, attempt: Attempt, first: BaseException, tracked: Any) -> None:
        """Retry a request whose first attempt failed, as the proxy's rules and the retry budget allow."""
        request = attempt.request
        cache_base, lookup = attempt.cache_base, attempt.lookup
        proxy = self.proxy
        idempotent = request.method in _IDEMPOTENT and not request.has_body and not request.upgrade
        backends: list[Backend | None] = [attempt.backend]

        def retryable(error: BaseException) -> bool:
            if isinstance(error, ConnectFailedError):  # never sent: any method, if the body is still held
                return request.pending_bytes <= proxy.limits.buffer_size
            if isinstance(error, DiscardedAnswerError):
                return True  # dropped only when another attempt may follow
            return isinstance(error, UpstreamError) and not isinstance(error, StalledError) and idempotent

        call = Call(
            proxy.policy,
            proxy.balancer.endpoint,
            start=time.monotonic(),
            end=math.inf,
            candidates=proxy.balancer.candidates,
            retryable=lambda error: not request.answered and retryable(error),
            conclude=_last_error,
            events="proxy",
        )

        async def run(next_try: Try) -> None:
            proxy.metrics.retries.labels(_RETRY_REASONS.get(type(call.errors[-1]), "upstream")).inc()
            again = Attempt(
                self, request, retry_statuses=self._retries_statuses(request, next_try.number), cache_base=cache_base
            )
            again.lookup = lookup
            try:
                await next_try.endpoint(again)
            finally:
                backends.append(again.backend)

        try:
            await adrive(call, call.after_first(tracked, first, time.monotonic()), run)
        except Exception as error:
            self._failed(request, error, backends[-1])

    def _failed(self, request: Request, error: BaseException, backend: Backend | None) -> None:
        """The answer of the proxy's own for the error a request's attempts ended with."""
        metrics = self.proxy.metrics
        if isinstance(error, FailedAnswerError):
            return  # the backend's answer was relayed as it was
        if isinstance(error, NoEndpointsError):
            metrics.unavailable.labels("no_backend").inc()
            self.answer(request, 503, b"no backend available\n")
        elif isinstance(error, ConnectFailedError):
            self.answer(request, 502, b"no backend could be reached\n", backend)
        elif isinstance(error, QueueTimeoutError):
            metrics.unavailable.labels("queue_timeout").inc()
            self.answer(request, 503, b"all connections to the backend stayed busy\n", backend)
        elif isinstance(error, DiscardedAnswerError):  # no further attempt was allowed after all (budget)
            self.answer(request, error.status, b"the backends answered %d\n" % error.status, backend)
        elif isinstance(error, _LATE):
            metrics.timeouts.labels("backend" if isinstance(error, AnswerTimeoutError) else "stall").inc()
            self._fail(request, 504, b"the backend did not answer in time\n", backend)
        elif isinstance(error, UpstreamError):
            self._fail(request, 502, b"the backend failed\n", backend)
        else:
            raise error

    def _fail(self, request: Request, status: int, body: bytes, backend: Backend | None) -> None:
        if request.answered:
            self.abort()  # the answer was cut: the client must see it was
        else:
            self.answer(request, status, body, backend)

    def _send_cached(self, request: Request, entry: Entry) -> None:
        age = int(time.monotonic() - entry.stored)  # the cache's clock
        headers = Fields.of([*entry.headers, (b"age", b"%d" % age), (b"x-cache", b"HIT")])
        head_only = request.method == b"HEAD"
        self.send_head(request, entry.status, headers, b"%d" % len(entry.body), head_only)
        if not head_only and entry.body:
            self.send_body(request, entry.body, False)
        self.send_end(request, False)

    def answer(self, request: Request, status: int, body: bytes, backend: Backend | None = None) -> None:
        """An answer of the proxy's own (400, 503, 502, 504, ...), plain text."""
        if not request.body_done:
            request.keep_alive = False  # the rest of the body is not read: the connection cannot go on
        head_only = request.method == b"HEAD"
        self.send_head(request, status, _PLAIN_TEXT, b"%d" % len(body), head_only)
        if not head_only:
            self.send_body(request, body, False)
        self.send_end(request, False)
        self.proxy.metrics.answered(backend.name if backend else "none", request.method, status)


class Attempt:
    """One try of a request on one backend; also the ``Exchange`` its upstream connection reports to.

    Run either as a coroutine (``run``: the retry engine's attempts, and a first attempt that
    waits for a connection) or on callbacks (``begin``: a first attempt on a kept-alive
    connection), which end in ``ended(attempt, error)``; ``cancel`` gives it up.
    """

    __slots__ = (
        "answer_due", "backend", "buffer", "buffered", "cache_base", "chunked_out", "client", "connection", "ended",
        "endpoint", "future", "head_seen", "lookup", "request", "retry_statuses", "settled", "started", "starts",
        "status", "switched", "trackers", "upstream_headers",
    )  # fmt: skip

    def __init__(self, client: Downstream, request: Request, *, retry_statuses: bool, cache_base: bytes | None):
        self.client = client
        self.request = request
        self.retry_statuses = retry_statuses
        self.cache_base = cache_base
        self.backend: Backend | None = None
        self.connection: UpstreamConnection | None = None
        self.future: asyncio.Future[None] | None = None
        self.ended: Callable[[Attempt, BaseException | None], None] | None = None  # on callbacks: told the end
        self.endpoint: Any = None  # what the balancer handed out (to be avoided by a retry)
        self.trackers: list[TrackedEndpoint[Any]] = []
        self.starts: list[float] = []
        self.settled = False
        self.head_seen = False
        self.switched = False
        self.chunked_out = False
        self.status = 0
        self.started = 0.0
        self.answer_due = math.inf
        self.buffer: list[bytes] | None = None
        self.buffered = 0
        self.upstream_headers = EMPTY
        self.lookup: dict[bytes, bytes] = {}

    async def run(self, backend: Backend) -> None:
        self.backend = backend
        connection = await backend.acquire()
        self.future = self.client.loop.create_future()
        completed = False
        try:
            self._start(connection)
            await self.future
            completed = True
        finally:
            self._finish(connection, completed)
        if self.status >= 500:
            raise FailedAnswerError(f"{backend.url} answered {self.status}")

    def begin(
        self,
        trackers: list[TrackedEndpoint[Any]],
        backend: Backend,
        connection: UpstreamConnection,
        ended: Callable[[Attempt, BaseException | None], None],
    ) -> None:
        """Start on ``connection`` (from ``backend``'s pool), counted by ``trackers``; ``ended`` is told the end."""
        self.backend = backend
        self.ended = ended
        self.trackers = trackers
        self.starts = [tracker.begin() for tracker in trackers]
        try:
            self._start(connection)
        except BaseException as error:  # a bug: undone here, the caller reports it
            self.settled = True
            self._finish(connection, False)
            self._untrack(error)
            raise

    def cancel(self) -> None:
        """Give up an attempt run on callbacks (the client left or timed out): its connection is closed.

        (One run by a task ends when its task is cancelled.)
        """
        if self.settled or self.ended is None or self.connection is None:
            return
        self.settled = True
        self._finish(self.connection, False)
        self._untrack(asyncio.CancelledError())

    def _start(self, connection: UpstreamConnection) -> None:
        client = self.client
        request = self.request
        loop = client.loop
        self.connection = connection
        proxy = client.proxy
        started = self.started = loop.time()
        if request.body_done:
            self.answer_due = started + proxy.limits.timeout
            connection.watch(started + proxy.first_wait)
        else:
            connection.watch(started + proxy.limits.read_timeout)
        assert self.backend is not None
        head = self._request_head(self.backend)
        connection.start(self, head + b"".join(self._pending()) if request.pending else head, request.method == b"HEAD")
        request.attempt = self
        if request.body_done:
            if request.chunked and request.has_body:
                connection.write(b"0\r\n\r\n")
        else:
            request.upstream = connection
        client.attach(request, connection)

    def _finish(self, connection: UpstreamConnection, completed: bool) -> None:
        """The attempt is over: its connection back to the pool (or closed), its figures."""
        client = self.client
        request = self.request
        backend = self.backend
        assert backend is not None
        request.upstream = None
        request.attempt = None
        client.detach(request)
        if not self.switched:  # a tunnel owns the connection and its slot from now on
            if not completed:
                connection.exchange = None
                connection.close()
            backend.release(connection)
        if not completed:
            return
        proxy = client.proxy
        proxy.metrics.completed(backend.name, request.method, self.status, client.loop.time() - self.started)
        if self.buffer is not None and proxy.cache is not None and self.cache_base is not None:
            proxy.cache.store(
                self.cache_base, self.lookup, self.status, self.upstream_headers.pairs(), b"".join(self.buffer)
            )

    def _settle(self, error: BaseException | None) -> None:
        """The answer is complete (``error`` None) or the attempt failed: end it, once."""
        if self.settled:
            return
        future = self.future
        if future is not None:
            if not future.done():  # run() goes on from here
                self.settled = True
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
            return
        ended = self.ended
        if ended is None or self.connection is None:
            return
        self.settled = True
        self._finish(self.connection, error is None)
        if error is None and self.status >= 500:
            assert self.backend is not None
            error = FailedAnswerError(f"{self.backend.url} answered {self.status}")
        self._untrack(error)
        ended(self, error)

    def _untrack(self, error: BaseException | None) -> None:
        trackers, starts = self.trackers, self.starts
        for index in range(len(trackers) - 1, -1, -1):  # innermost first (an index loop: no iterators to make)
            trackers[index].end(starts[index], error)
        self.trackers = []

    def _pending(self) -> list[bytes]:
        request = self.request
        if request.chunked:
            return [b"%x\r\n%b\r\n" % (len(chunk), chunk) for chunk in request.pending]
        # kept (not cleared) so that a failed connect can go to another backend with the same body
        return request.pending

    def _request_head(self, backend: Backend) -> bytes:
        request = self.request
        client = self.client
        cut = dropped(_DROPPED_FROM_REQUEST, request.connection) if request.connection else _DROPPED_FROM_REQUEST
        lines = [b"%b %b HTTP/1.1\r\n" % (request.method, request.url)]
        forwarded_for = client.client_ip
        host = request.host or backend.host_header
        for name, value in request.headers:
            if name in cut:
                if name == b"content-length" and not request.chunked:
                    lines.append(b"content-length: %b\r\n" % value)
                continue
            if name == b"x-forwarded-for":
                forwarded_for = value + b", " + forwarded_for
                continue
            lines.append(b"%b: %b\r\n" % (name, value))
        if request.chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        if request.upgrade:
            lines.append(b"connection: upgrade\r\nupgrade: %b\r\n" % request.upgrade)
        lines.append(
            b"host: %b\r\nx-forwarded-for: %b\r\nx-forwarded-proto: %b\r\nx-forwarded-host: %b\r\n\r\n"
            % (host, forwarded_for, client.proxy.scheme, host)
        )
        return b"".join(lines)

    # -- the waits on the backend --

    def deadline(self) -> None:
        """A wait on the backend may have run out: 504 before the answer's head, abort on a stall after it."""
        connection = self.connection
        if self.settled or connection is None or (self.future is not None and self.future.done()):
            return
        client = self.client
        limits = client.proxy.limits
        now = client.loop.time()
        url = self.backend.url if self.backend is not None else "the backend"
        due = now + limits.read_timeout
        if not self.head_seen:
            if now >= self.answer_due:
                self._settle(AnswerTimeoutError(f"{url} did not begin its answer within {limits.timeout:g}s"))
                return
            due = min(due, self.answer_due)
        elif not connection.reading_paused:  # while the client holds it back, the wait is the client's
            if now - connection.last_read >= limits.read_timeout:
                self._settle(StalledError(f"{url} sent nothing for {limits.read_timeout:g}s"))
                return
            due = connection.last_read + limits.read_timeout
        stalled = connection.write_paused_since
        if stalled is not None:
            if now - stalled >= limits.read_timeout:
                self._settle(StalledError(f"{url} took none of the request for {limits.read_timeout:g}s"))
                return
            due = min(due, stalled + limits.read_timeout)
        connection.watch(due)

    def request_ended(self) -> None:
        """The client finished sending the request: ``--timeout`` counts from now."""
        if self.head_seen or self.connection is None or self.settled:
            return
        self.answer_due = self.client.loop.time() + self.client.proxy.limits.timeout
        if self.answer_due < self.connection.due:
            self.connection.watch(self.answer_due)

    # -- Exchange --

    def informational(self, connection: UpstreamConnection) -> None:
        if connection.status != 100:  # Expect is answered by the proxy itself; 103 and others are relayed
            self.client.send_informational(self.request, connection.status, connection.fields)

    def head(self, connection: UpstreamConnection) -> bool:
        self.head_seen = True
        status = connection.status
        self.status = status
        request = self.request
        url = connection.backend.url
        if self.retry_statuses and status in RETRY_STATUSES:
            self._fail(DiscardedAnswerError(f"{url} answered {status}", status))
            return False
        headers = connection.fields
        client = self.client
        if status == 101:
            upgrade = connection.upgrade
            if not request.upgrade or upgrade.lower() != request.upgrade.lower():
                self._fail(UpstreamError(f"{url} switched protocols unasked"))
                return False
            request.answered = True
            client.send_head(
                request, 101, headers.plus(((b"connection", b"upgrade"), (b"upgrade", upgrade))), None, True
            )
            return True
        length = connection.length
        no_body = request.method == b"HEAD" or status in (204, 304)
        request.answered = True
        self.chunked_out = client.send_head(request, status, headers, length, no_body)
        if self.cache_base is not None and request.method == b"GET" and 200 <= status < 500:
            self.buffer = []
            self.upstream_headers = headers
        return True

    def body(self, chunk: bytes | memoryview) -> None:
        self.client.send_body(self.request, chunk, self.chunked_out)
        if self.buffer is not None:
            self.buffer.append(bytes(chunk))  # kept for the cache: a copy of a read buffer's bytes
            self.buffered += len(chunk)
            cache = self.client.proxy.cache
            if cache is not None and self.buffered > cache.max_entry:
                self.buffer = None

    def holds_body(self) -> bool:
        return self.client.holds_body()

    def read_ended(self) -> None:
        self.client.send_held()

    def complete(self, keep_alive: bool) -> None:
        self.client.send_end(self.request, self.chunked_out)
        self._settle(None)

    def switched_protocols(self, connection: UpstreamConnection, rest: bytes) -> None:
        assert self.backend is not None
        self.switched = True
        self.client.switch(self.request, connection, self.backend, rest)
        self._settle(None)

    def failed(self, error: BaseException) -> None:
        self._fail(UpstreamError(str(error) or type(error).__name__))

    def _fail(self, error: BaseException) -> None:
        self._settle(error)

    def upload_paused(self) -> None:
        self.client.upload_paused(self.request)

    def upload_resumed(self) -> None:
        self.client.upload_resumed(self.request)


def _last_error(
    reason: str, errors: list[BaseException], elapsed: float, why: str, timeout: float | None
) -> BaseException:
    """A retried request that cannot go on ends with its last attempt's error (the proxy answers for it)."""
    return errors[-1]


def log_failure(error: BaseException) -> None:
    """A bug in serving one request: logged with its traceback (it costs that connection only)."""
    _log.error("proxy_request_failed", error=describe(error), exc_info=error)


_RETRY_REASONS = {ConnectFailedError: "connect", DiscardedAnswerError: "status", UpstreamError: "upstream"}
