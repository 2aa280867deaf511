"""httpx transports that balance, retry and learn: ``Transport`` and ``AsyncTransport``.

The URL's host names a service; its publisher's instances each get a connection pool of
their own (httpx's transport), made when the instance appears and closed when it has left
and its last response is closed. A request picks an instance, is sent there with the
attempt's timeout, and is retried by the rules of ``RetryPolicy``. Each attempt's outcome
(a response, a failure status, a connection error, its latency up to the body's close)
reaches feedback balancers and outlier ejection through the tracker of its pool.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any, Generic, TypeVar

import httpx

from .._engine import Attempt, Call, Verdict, adrive, drive, summary, told
from .._httppolicy import RetryPolicy, options_of, policy_of
from .._log import get_logger
from .._route import Balancing, Connection, Route, instance_of
from ..balancer import RoundRobin
from ..errors import AttemptTimeoutError, Error, NoEndpointsError, NotReadyError, RetryTimeoutError
from ..instance import Instance
from ..publisher import Publisher
from ._policy import publisher_of

__all__ = [
    "AsyncTransport",
    "DeadlineExceeded",
    "NoInstancesError",
    "Transport",
    "UnknownServiceError",
]

P = TypeVar("P")  # a pool: sync or async
_URLS = 4096  # instance URLs remembered
_SLACK = 0.005  # a timeout this close to the deadline is the deadline's
_closing: set[asyncio.Future[Any]] = set()  # closes running in the background


class NoInstancesError(httpx.ConnectError, NoEndpointsError):
    """No instance of the service could be picked: an httpx ``ConnectError`` that is also a ``NoEndpointsError``."""

    def __init__(self, message: str, *, request: httpx.Request, error: BaseException | None = None) -> None:
        httpx.ConnectError.__init__(self, message, request=request)
        self.error = error


class UnknownServiceError(httpx.ConnectError, Error, LookupError):
    """The URL's host is not a service of the transport (and it was told to refuse others)."""


class DeadlineExceeded(httpx.TimeoutException, RetryTimeoutError):
    """The call's overall deadline passed: an httpx ``TimeoutException`` and a ``RetryTimeoutError``.

    ``errors`` holds each attempt's exception (a failed answer counts as its status).
    """

    def __init__(self, message: str, *, request: httpx.Request, errors: list[BaseException]) -> None:
        Exception.__init__(self, message)  # both bases' __init__ would pass only some of their arguments on
        self._request = request
        self.errors = tuple(errors)


class _FailedStatus(Exception):
    """An answer whose status counts as the instance's failure: raised through trackers, caught by the loop."""

    def __init__(self, attempt: _Attempt) -> None:
        self.attempt = attempt
        super().__init__(f"HTTP {attempt.response.status_code}")


class _Attempt:
    """One attempt's response; its body's close ends the call for the trackers (``finish_later``)."""

    __slots__ = ("_done", "_failed", "_start", "pool", "response")

    def __init__(self, response: httpx.Response, pool: _PoolBase[Any], start: float, failed: bool) -> None:
        self.response = response
        self.pool = pool
        self._start = start
        self._failed = failed
        self._done: list[Callable[[BaseException | None], None]] = []

    def finish_later(self, done: Callable[[BaseException | None], None]) -> None:
        self._done.append(done)

    def closed(self, error: BaseException | None) -> None:
        done, self._done = self._done, []
        for callback in done:
            callback(error)
        self.pool.release(self._start, not self._failed and error is None)


class _SyncStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, attempt: _Attempt) -> None:
        self._inner = inner
        self._attempt: _Attempt | None = attempt
        self._error: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except BaseException as error:
            self._error = error
            raise

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            attempt, self._attempt = self._attempt, None
            if attempt is not None:
                attempt.closed(self._error)


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, attempt: _Attempt) -> None:
        self._inner = inner
        self._attempt: _Attempt | None = attempt
        self._error: BaseException | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except BaseException as error:
            self._error = error
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            attempt, self._attempt = self._attempt, None
            if attempt is not None:
                attempt.closed(self._error)


class _PoolBase(Connection, Generic[P]):
    """One instance's connection pool; closed once the instance has left and its last response is closed."""

    def __init__(self, instance: Instance, transport: P, failures: Any, service: str) -> None:
        super().__init__(instance, service)
        self.transport = transport
        self._failures = failures

    def _answer(self, response: httpx.Response, stream: type[Any], start: float) -> _Attempt:
        failed = response.status_code in self._failures
        attempt = _Attempt(response, self, start, failed)
        response.stream = stream(response.stream, attempt)
        if failed:
            raise _FailedStatus(attempt)
        return attempt

    def __repr__(self) -> str:
        return f"pool({self.instance.address}, in flight={self._inflight})"


class _SyncPool(_PoolBase[httpx.BaseTransport]):
    def __call__(self, request: httpx.Request) -> _Attempt:
        start = self.acquire()
        try:
            response = self.transport.handle_request(request)
        except BaseException:
            self.release(start, False)
            raise
        return self._answer(response, _SyncStream, start)

    def _shut(self) -> None:
        self.transport.close()


class _AsyncPool(_PoolBase[httpx.AsyncBaseTransport]):
    """An instance's async pool: its connections belong to the loop they were opened on, and close there."""

    loop: asyncio.AbstractEventLoop | None = None  # the loop of its connections (the first to use it)

    async def __call__(self, request: httpx.Request) -> _Attempt:
        start = self.acquire()
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        try:
            response = await self.transport.handle_async_request(request)
        except BaseException:
            self.release(start, False)
            raise
        return self._answer(response, _AsyncStream, start)

    async def aclose(self) -> None:
        """The instance left, or the transport closes: in its own loop, its connections closed before this returns."""
        if not self._leave():
            return  # shut when its last call ends
        if self.loop is not None and self.loop is asyncio.get_running_loop():
            await self.transport.aclose()
        else:
            self._shut()

    def _shut(self) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return  # never used, or its connections went with their loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(self.transport.aclose())
            _closing.add(task)  # held until done, so that it is not collected half way
            task.add_done_callback(_closing.discard)
        elif loop.is_running():  # closed from another thread or loop: on its own loop all the same
            asyncio.run_coroutine_threadsafe(self.transport.aclose(), loop)


class _Base:
    """What the sync and async transports share: routing, policy, request rewriting."""

    def __init__(
        self,
        services: Mapping[str, Publisher[Any] | str] | Publisher[Any] | str,
        make_pool: Callable[[str], Callable[[Instance], Any]],
        *,
        balancer: Balancing,
        eject: bool | Mapping[str, Any],
        unknown: str,
        own: bool,
        logger: Any,
        policy: RetryPolicy,
    ) -> None:
        self._policy = policy
        if unknown not in ("pass", "error"):
            raise ValueError(f"unknown must be 'pass' (to the inner transport) or 'error', got {unknown!r}")
        self._unknown = unknown
        self._log = get_logger(logger, name=__name__)
        if isinstance(services, Publisher | str):
            services = {"*": services}
        elif not isinstance(services, Mapping) or not services:
            raise TypeError(f"services must map host names to publishers (or be one publisher), got {services!r}")
        self._routes = {
            name.lower(): Route(
                name,
                publisher_of(publisher) if isinstance(publisher, str) else publisher,
                make_pool(name),
                balancer,
                eject,
                own or isinstance(publisher, str),  # a publisher made here is closed here
                self._log.bind(service=name),
            )
            for name, publisher in services.items()
        }
        self._any = self._routes.get("*")
        self._urls: dict[tuple[bytes, str, str], httpx.URL] = {}

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    def route(self, request: httpx.Request) -> Route | None:
        route = self._routes.get(request.url.host)
        if route is None:
            route = self._any
        if route is None and self._unknown == "error":
            raise UnknownServiceError(
                f"{request.url.host!r} is none of this transport's services ({', '.join(sorted(self._routes))})",
                request=request,
            )
        return route

    def outgoing(self, request: httpx.Request, instance: Instance, end: float) -> httpx.Request:
        """The request as sent to ``instance``: its URL there, the attempt's timeouts (the Host header stays)."""
        # Building an httpx.URL costs some 10 us, more than the rest of a call's own work:
        # remember the last few thousand (paths repeat), forgetting all when full.
        source = request.url
        key = (source.raw_path, instance.address, source.scheme)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) >= _URLS:
                self._urls.clear()
            url = self._urls[key] = source.copy_with(host=instance.host, port=instance.port)
        limit = self._policy.attempt_limit(end)
        extensions = request.extensions
        if limit is not None:
            given = extensions.get("timeout", {})
            timeout = {name: min(limit, value) if value is not None else limit for name, value in given.items()}
            for name in ("connect", "read", "write", "pool"):
                timeout.setdefault(name, limit)
            extensions = {**extensions, "timeout": timeout}
        return httpx.Request(request.method, url, headers=request.headers, stream=request.stream, extensions=extensions)

    # -- one request, and its retries by the engine --

    def call(self, request: httpx.Request, route: Route, start: float, end: float, *, hedge: bool = False) -> Call:
        """The retry engine's call for ``request`` (its policy's rules: what is worth another attempt)."""
        method = request.method
        replayable = isinstance(request.stream, httpx.ByteStream)
        policy = self._policy

        def retryable(error: BaseException) -> bool:
            if isinstance(error, NoEndpointsError) or not isinstance(error, httpx.TransportError | AttemptTimeoutError):
                return False  # no instance to pick, or not the network's doing
            return policy.failure(method, replayable, isinstance(error, httpx.ConnectError | httpx.ConnectTimeout))

        return Call(
            policy.engine(hedge),
            route.choose,
            start=start,
            end=end,
            candidates=route.candidates,
            retryable=retryable,
            conclude=lambda reason, errors, *_: (
                self.deadline_error(request, errors) if reason == "deadline" else errors[-1]
            ),
            log=route.log,
            events="http",
            discard=self.discard,
            request=request,
        )

    def judge(self, request: httpx.Request, result: Any) -> httpx.Response:
        """An attempt's answer: returned, or raised as the engine's ``Verdict`` when it is worth asking again."""
        response: httpx.Response = result.response
        wait = self._policy.answer(
            request.method,
            isinstance(request.stream, httpx.ByteStream),
            response.status_code,
            response.headers.get("retry-after"),
        )
        if wait is None:
            return response
        raise Verdict(AnswerError(response.status_code), retry=True, answer=response, at_least=wait)

    def discard(self, response: httpx.Response) -> None:
        """An answer a later attempt replaced: released."""
        raise NotImplementedError

    def failed(self, request: httpx.Request, route: Route, end: float, error: BaseException) -> BaseException:
        """What the caller sees of ``error``, the error the call ended with."""
        if isinstance(error, NoEndpointsError):
            return self.no_instances(request, route, error)
        late = time.monotonic() >= end - _SLACK  # a timeout this close to the deadline is the deadline's
        timeout = isinstance(error, httpx.TimeoutException | AttemptTimeoutError)
        if timeout and not isinstance(error, DeadlineExceeded) and late:
            failure = self.deadline_error(request, [error])
            failure.__cause__ = error
            return failure
        return error

    def gave_up(self, request: httpx.Request, route: Route, call: Call, error: BaseException) -> BaseException:
        """The last attempt's ``error`` (its type kept) telling the service and each instance tried with its error.

        Timeouts and "no instance" are the deadline's and the publisher's: told by ``failed()``.
        """
        if isinstance(error, NoEndpointsError | httpx.TimeoutException):
            return error
        return told(error, call, f"{request.method} {request.url}: service {route.name!r}")

    def deadline_error(self, request: httpx.Request, errors: list[BaseException]) -> DeadlineExceeded:
        timeout = self._policy.timeout or 0.0
        return DeadlineExceeded(
            f"{request.method} {request.url}: deadline of {timeout:g}s exceeded after {len(errors)} attempts"
            + (f": {summary(errors)}" if errors else ""),
            request=request,
            errors=errors,
        )

    def no_instances(self, request: httpx.Request, route: Route, error: NoEndpointsError) -> NoInstancesError:
        failure = NoInstancesError(
            f"{request.method} {request.url}: no instance of service {route.name!r}: {error}",
            request=request,
            error=error.error,
        )
        failure.__cause__ = error
        return failure


def _pool_factory(
    pool: type[_PoolBase[Any]], make: Callable[[Instance], Any], failures: Any
) -> Callable[[str], Callable[[Instance], _PoolBase[Any]]]:
    """Per service: a factory of its instances' pools."""

    def for_service(service: str) -> Callable[[Instance], _PoolBase[Any]]:
        def factory(instance: Instance) -> _PoolBase[Any]:
            return pool(instance, make(instance), failures, service)

        return factory

    return for_service


class Transport(_Base, httpx.BaseTransport):
    """An httpx transport over discovered instances: balanced, retried, learning; sync.

    ``services`` maps the host names of URLs to publishers of their instances (a publisher
    made without a factory), or is one publisher serving every host. A host not in the
    mapping goes to ``inner`` (a plain ``httpx.HTTPTransport`` by default), or raises
    ``UnknownServiceError`` with ``unknown="error"``.

    - ``balancer``: a balancer class (default ``RoundRobin``), a function of a publisher
      that makes one, or a balancer over the application's publisher of instances;
      ``eject=True`` (or ``OutlierDetector`` options) adds passive outlier ejection. The
      outcome of every attempt reaches them: 5xx answers (``failure_statuses``) and
      connection errors count as failures, the latency runs until the body is closed.
    - ``policy``: a ``RetryPolicy``, built once and shared by any number of clients; or its
      shorthands: ``retries`` (retries after the first attempt, default 2; 0: none),
      ``timeout`` (the overall deadline), ``attempt_timeout`` (each attempt's), and
      ``retry_methods``, ``retry_statuses``, ``retry_after``, ``failure_statuses``, ``wait``,
      ``budget``, ``hedge_after`` (async) as ``RetryPolicy``'s fields.
    - ``limits``, ``verify``, ``cert``, ``http2``: for each instance's connection pool
      (httpx's ``HTTPTransport``); ``make_transport(instance)`` replaces that outright.

    >>> import httpx
    >>> from loadbalancer import static
    >>> client = httpx.Client(transport=Transport({"api": static.Publisher(["127.0.0.1:8001"])}))
    >>> client.close()
    """

    def __init__(
        self,
        services: Mapping[str, Publisher[Any] | str] | Publisher[Any] | str,
        *,
        balancer: Balancing = RoundRobin,
        eject: bool | Mapping[str, Any] = False,
        policy: RetryPolicy | None = None,
        retries: int | RetryPolicy | None = 2,
        timeout: float | timedelta | None = None,
        attempt_timeout: float | timedelta | None = None,
        retry_methods: Any = None,
        retry_statuses: Any = None,
        retry_after: bool = True,
        failure_statuses: Any = None,
        wait: Any = None,
        budget: Any = True,
        inner: httpx.BaseTransport | None = None,
        unknown: str = "pass",
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),  # noqa: B008
        verify: Any = True,
        cert: Any = None,
        http2: bool = False,
        make_transport: Callable[[Instance], httpx.BaseTransport] | None = None,
        own: bool = True,
        logger: Any = None,
    ) -> None:
        make = make_transport or (
            lambda instance: httpx.HTTPTransport(limits=limits, verify=verify, cert=cert, http2=http2, trust_env=False)
        )
        policy = policy_of(
            policy, retries, timeout, attempt_timeout,
            options_of(retry_methods, retry_statuses, retry_after, failure_statuses, wait, budget),
        )  # fmt: skip
        super().__init__(
            services,
            _pool_factory(_SyncPool, make, policy.failure_statuses),
            balancer=balancer,
            eject=eject,
            unknown=unknown,
            own=own,
            logger=logger,
            policy=policy,
        )
        self._inner = inner if inner is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        route = self.route(request)
        if route is None:
            return self._inner.handle_request(request)
        policy = self._policy
        policy.deposit()
        start = time.monotonic()
        end = policy.deadline(start)
        try:
            try:
                endpoint = route.choose()
            except NotReadyError:
                route.publisher.wait_ready(None if end == math.inf else max(0.0, end - time.monotonic()))
                endpoint = route.choose()
            try:
                return self._send(request, endpoint, end)  # the first attempt: the engine only after a failure
            except (Verdict, httpx.TransportError) as error:
                first: BaseException = error
            call = self.call(request, route, start, end)
            step = call.after_first(endpoint, first, time.monotonic())

            def run(attempt: Attempt) -> httpx.Response:
                return self._send(request, attempt.endpoint, attempt.deadline)

            try:
                response: httpx.Response = drive(call, step, run, ready=route.publisher.wait_ready)
            except httpx.TransportError as error:
                raise self.gave_up(request, route, call, error) from error.__cause__
            return response
        except (NoEndpointsError, httpx.TimeoutException, AttemptTimeoutError) as error:
            raise self.failed(request, route, end, error) from error.__cause__

    def _send(self, request: httpx.Request, endpoint: Any, end: float) -> httpx.Response:
        try:
            result = endpoint(self.outgoing(request, instance_of(endpoint), end))
        except _FailedStatus as failed:
            result = failed.attempt
        return self.judge(request, result)

    def discard(self, response: httpx.Response) -> None:
        response.close()

    def close(self) -> None:
        for route in self._routes.values():
            route.close()
        self._inner.close()


class AsyncTransport(_Base, httpx.AsyncBaseTransport):
    """The async twin of ``Transport`` (``httpx.AsyncClient(transport=AsyncTransport(...))``).

    Also: ``hedge_after=`` seconds (or ``RetryPolicy.hedge_after``) sends a second attempt of
    an idempotent request to an instance not tried yet when the first has not answered by
    then (the first answer wins, the other is cancelled, as both are when the caller gives up
    the request; hedges spend the retry budget).
    """

    def __init__(
        self,
        services: Mapping[str, Publisher[Any] | str] | Publisher[Any] | str,
        *,
        balancer: Balancing = RoundRobin,
        eject: bool | Mapping[str, Any] = False,
        policy: RetryPolicy | None = None,
        retries: int | RetryPolicy | None = 2,
        timeout: float | timedelta | None = None,
        attempt_timeout: float | timedelta | None = None,
        retry_methods: Any = None,
        retry_statuses: Any = None,
        retry_after: bool = True,
        failure_statuses: Any = None,
        wait: Any = None,
        budget: Any = True,
        hedge_after: float | timedelta | None = None,
        inner: httpx.AsyncBaseTransport | None = None,
        unknown: str = "pass",
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),  # noqa: B008
        verify: Any = True,
        cert: Any = None,
        http2: bool = False,
        make_transport: Callable[[Instance], httpx.AsyncBaseTransport] | None = None,
        own: bool = True,
        logger: Any = None,
    ) -> None:
        make = make_transport or (
            lambda instance: httpx.AsyncHTTPTransport(
                limits=limits, verify=verify, cert=cert, http2=http2, trust_env=False
            )
        )
        policy = policy_of(
            policy, retries, timeout, attempt_timeout,
            options_of(retry_methods, retry_statuses, retry_after, failure_statuses, wait, budget, hedge_after),
        )  # fmt: skip
        super().__init__(
            services,
            _pool_factory(_AsyncPool, make, policy.failure_statuses),
            balancer=balancer,
            eject=eject,
            unknown=unknown,
            own=own,
            logger=logger,
            policy=policy,
        )
        self._inner = inner if inner is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        route = self.route(request)
        if route is None:
            return await self._inner.handle_async_request(request)
        policy = self._policy
        policy.deposit()
        start = time.monotonic()
        end = policy.deadline(start)

        def run(attempt: Attempt) -> Awaitable[httpx.Response]:
            return self._send(request, attempt.endpoint, attempt.deadline)

        try:
            if policy.hedge_after is not None and policy.resendable(
                request.method, isinstance(request.stream, httpx.ByteStream)
            ):
                call = self.call(request, route, start, end, hedge=True)
                step = call.begin(start)
            else:
                endpoint = await self._pick(route, end)
                try:
                    if end == math.inf:
                        return await self._send(request, endpoint, end)  # the first attempt: no engine, no task
                    async with asyncio.timeout(max(0.0, end - time.monotonic())):
                        return await self._send(request, endpoint, end)
                except (Verdict, httpx.TransportError) as error:
                    first: BaseException = error
                except TimeoutError as error:
                    first = AttemptTimeoutError("attempt 1 cancelled at the deadline")
                    first.__cause__ = error
                call = self.call(request, route, start, end)
                step = call.after_first(endpoint, first, time.monotonic())
            try:
                response: httpx.Response = await adrive(
                    call, step, run, ready=route.publisher.await_ready, discard=self.discard
                )
            except httpx.TransportError as error:
                raise self.gave_up(request, route, call, error) from error.__cause__
            return response
        except (NoEndpointsError, httpx.TimeoutException, AttemptTimeoutError) as error:
            raise self.failed(request, route, end, error) from error.__cause__

    async def _pick(self, route: Route, end: float) -> Any:
        try:
            return route.choose()
        except NotReadyError:
            await route.publisher.await_ready(None if end == math.inf else max(0.0, end - time.monotonic()))
        return route.choose()

    async def _send(self, request: httpx.Request, endpoint: Any, end: float) -> httpx.Response:
        try:
            result = await endpoint(self.outgoing(request, instance_of(endpoint), end))
        except _FailedStatus as failed:
            result = failed.attempt
        return self.judge(request, result)

    def discard(self, response: httpx.Response) -> None:
        task = asyncio.ensure_future(response.aclose())
        _closing.add(task)  # held until done, so that it is not collected half way
        task.add_done_callback(_closing.discard)

    async def aclose(self) -> None:
        for route in self._routes.values():
            await route.aclose()
        await self._inner.aclose()


class AnswerError(Error):
    """An attempt answered with a status that was retried (in ``DeadlineExceeded.errors``)."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        super().__init__(f"HTTP {status}")
