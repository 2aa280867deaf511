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
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any, Generic, TypeVar

import httpx

from .. import _metrics
from .._log import get_logger
from .._util import describe, seconds
from ..balancer import Balancer, RoundRobin
from ..endpointer import Endpointer
from ..errors import NoEndpointsError, NotReadyError, RetryTimeoutError
from ..instance import Instance
from ..outlier import OutlierDetector
from ..publisher import Publisher
from ._policy import RetryPolicy

__all__ = [
    "AsyncTransport",
    "DeadlineExceeded",
    "NoInstancesError",
    "Transport",
    "UnknownServiceError",
]

P = TypeVar("P")  # a pool: sync or async
_URLS = 4096  # instance URLs remembered
_REPICKS = 3  # asks for another endpoint than those that failed this request
_SLACK = 0.005  # a timeout this close to the deadline is the deadline's
_closing: set[asyncio.Future[Any]] = set()  # closes running in the background


class NoInstancesError(httpx.ConnectError, NoEndpointsError):
    """No instance of the service could be picked: an httpx ``ConnectError`` that is also a ``NoEndpointsError``."""

    def __init__(self, message: str, *, request: httpx.Request, error: BaseException | None = None) -> None:
        httpx.ConnectError.__init__(self, message, request=request)
        self.error = error


class UnknownServiceError(httpx.ConnectError, LookupError):
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


class _PoolBase(Generic[P]):
    """One instance's connection pool; closed once the instance has left and its last response is closed."""

    records_calls = True  # its attempts are counted here (metrics): trackers need not count them again

    def __init__(self, instance: Instance, transport: P, failures: Any, service: str) -> None:
        self.instance = instance
        self.transport = transport
        self._failures = failures
        self._stats = _metrics.stats(service, instance.address) if _metrics.enabled() else None
        self._lock = threading.Lock()
        self._inflight = 0
        self._leaving = False

    def _acquire(self) -> float:
        with self._lock:
            self._inflight += 1
        return time.monotonic()

    def release(self, start: float, ok: bool) -> None:
        """An attempt has ended (its body closed, or it failed): count it, and close a leaving pool after its last."""
        if self._stats is not None:
            self._stats.record(time.monotonic() - start, ok)
        with self._lock:
            self._inflight -= 1
            last = self._leaving and self._inflight == 0
        if last:
            self._shut()

    def _answer(self, response: httpx.Response, stream: type[Any], start: float) -> _Attempt:
        failed = response.status_code in self._failures
        attempt = _Attempt(response, self, start, failed)
        response.stream = stream(response.stream, attempt)
        if failed:
            raise _FailedStatus(attempt)
        return attempt

    def close(self) -> None:
        """The instance left: close the pool now, or when its last response is closed."""
        with self._lock:
            self._leaving = True
            idle = self._inflight == 0
        if idle:
            self._shut()

    def _shut(self) -> None:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.instance.address

    def __repr__(self) -> str:
        return f"pool({self.instance.address}, in flight={self._inflight})"


class _SyncPool(_PoolBase[httpx.BaseTransport]):
    def __call__(self, request: httpx.Request) -> _Attempt:
        start = self._acquire()
        try:
            response = self.transport.handle_request(request)
        except BaseException:
            self.release(start, False)
            raise
        return self._answer(response, _SyncStream, start)

    def _shut(self) -> None:
        self.transport.close()


class _AsyncPool(_PoolBase[httpx.AsyncBaseTransport]):
    async def __call__(self, request: httpx.Request) -> _Attempt:
        start = self._acquire()
        try:
            response = await self.transport.handle_async_request(request)
        except BaseException:
            self.release(start, False)
            raise
        return self._answer(response, _AsyncStream, start)

    def _shut(self) -> None:
        transport = self.transport
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(transport.aclose())  # no loop here (closing at exit): close it in one of its own
        else:
            task = loop.create_task(transport.aclose())
            _closing.add(task)  # held until done, so that it is not collected half way
            task.add_done_callback(_closing.discard)


Balancing = type[Balancer[Any]] | Callable[[Publisher[Any]], Balancer[Any]] | Balancer[Any]


class _Route:
    """A service: its instances' pools, the optional ejection, and the balancer over them."""

    def __init__(
        self,
        name: str,
        publisher: Publisher[Any],
        make_pool: Callable[[str], Callable[[Instance], Any]],
        balancer: Balancing,
        eject: bool | Mapping[str, Any],
        own: bool,
        log: Any,
    ) -> None:
        if not isinstance(publisher, Publisher):
            raise TypeError(f"service {name!r}: expected a loadbalancer.Publisher (of instances), got {publisher!r}")
        self.name = name
        self.publisher = publisher
        self.pools: Endpointer[Any] = Endpointer(
            publisher, make_pool(name), close_delay=0, own=own, logger=log, service=name
        )
        top: Publisher[Any] = self.pools
        self.detector: OutlierDetector[Any] | None = None
        if eject:
            options = dict(eject) if isinstance(eject, Mapping) else {}
            self.detector = OutlierDetector(self.pools, own=False, logger=log, **options)
            top = self.detector
        self.by_instance: Balancer[Any] | None = None
        if isinstance(balancer, Balancer):
            self.by_instance = balancer  # picks instances of the application's publisher: mapped to pools
            self.balancer: Balancer[Any] = RoundRobin(top)
        elif callable(balancer):
            self.balancer = balancer(top)
            if not isinstance(self.balancer, Balancer):
                raise TypeError(f"balancer must make a loadbalancer.Balancer, got {self.balancer!r}")
        else:
            raise TypeError(
                f"balancer must be a Balancer class, a function of a publisher or a Balancer, got {balancer!r}"
            )
        self._pick = self.balancer.endpoint
        self._index: tuple[object, dict[str, Any]] = ((), {})

    def pick(self, request: httpx.Request, failed: list[Any] | None = None) -> Any:
        """An endpoint (a pool, or its tracker) for the next attempt.

        One that already failed this request is passed over, while the balancer offers
        others (a few asks): concurrent requests share a round robin's turn, and a P2C pick
        may choose the same endpoint again.
        """
        endpoint = self._choose()
        if failed:
            for _ in range(_REPICKS):
                if not any(endpoint is f for f in failed):
                    break
                endpoint = self._choose()
        return endpoint

    def _choose(self) -> Any:
        if self.by_instance is None:
            return self._pick()
        instance = self.by_instance.endpoint()
        current = self.pools.endpoints()
        if self._index[0] is not current:
            self._index = (current, {str(i): e for i, e in zip(current.instances, current, strict=True)})
        pool = self._index[1].get(str(instance))
        if pool is None:
            raise NoEndpointsError(f"no connection pool for {instance} of service {self.name!r} yet")
        return pool

    def close(self) -> None:
        if self.detector is not None:
            self.detector.close()
        self.pools.close()

    async def aclose(self) -> None:
        if self.detector is not None:
            await self.detector.aclose()
        await self.pools.aclose()


class _Base:
    """What the sync and async transports share: routing, policy, request rewriting."""

    def __init__(
        self,
        services: Mapping[str, Publisher[Any]] | Publisher[Any],
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
        if isinstance(services, Publisher):
            services = {"*": services}
        elif not isinstance(services, Mapping) or not services:
            raise TypeError(f"services must map host names to publishers (or be one publisher), got {services!r}")
        self._routes = {
            name.lower(): _Route(name, publisher, make_pool, balancer, eject, own, self._log.bind(service=name))
            for name, publisher in services.items()
        }
        self._any = self._routes.get("*")
        self._urls: dict[tuple[bytes, str, str], httpx.URL] = {}

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    def route(self, request: httpx.Request) -> _Route | None:
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

    def decide(
        self,
        request: httpx.Request,
        attempt: int,
        response: httpx.Response | None,
        error: BaseException | None,
        end: float,
        backoff: Any,
    ) -> float | None:
        """After an attempt: ``None`` (stop: return the response or raise the error) or the wait before the next."""
        if response is not None:
            status: int | None = response.status_code
            failure = None
        else:
            status = None
            if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
                failure = "unsent"
            else:
                failure = "sent" if isinstance(error, httpx.TransportError) else "other"
        return self._policy.next_wait(
            request.method,
            isinstance(request.stream, httpx.ByteStream),
            attempt,
            status,
            failure,
            None if response is None else response.headers.get("retry-after"),
            end,
            backoff,
        )

    def after(
        self,
        request: httpx.Request,
        errors: list[BaseException],
        tried: list[Any],
        endpoint: Any,
        response: httpx.Response | None,
        failure: BaseException | None,
        end: float,
        backoff: Any,
    ) -> float | None:
        """Record an attempt that answered (``response``) or failed; the wait before the next one,
        ``None`` to return ``response``, or raise the failure (a deadline's as ``DeadlineExceeded``)."""
        errors.append(failure if failure is not None else _status(response))
        delay = self.decide(request, len(errors), response, failure, end, backoff)
        if delay is None:
            if response is not None:
                return None
            assert failure is not None
            if isinstance(failure, httpx.TimeoutException) and time.monotonic() >= end - _SLACK:
                raise self.deadline_error(request, errors) from failure
            raise failure
        self._log.info(
            "http_attempt_failed",
            attempt=len(errors),
            instance=str(endpoint),
            error=describe(errors[-1]),
            wait=round(delay, 6),
        )
        tried.append(endpoint)
        return delay

    def deadline_error(self, request: httpx.Request, errors: list[BaseException]) -> DeadlineExceeded:
        timeout = self._policy.timeout or 0.0
        summary = "; ".join(f"attempt {n}: {describe(e)}" for n, e in enumerate(errors, 1))
        return DeadlineExceeded(
            f"{request.method} {request.url}: deadline of {timeout:g}s exceeded after {len(errors)} attempts"
            + (f": {summary}" if summary else ""),
            request=request,
            errors=errors,
        )

    def no_instances(self, request: httpx.Request, route: _Route, error: NoEndpointsError) -> NoInstancesError:
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
    - ``retries``: attempts in all (default 3), or a ``RetryPolicy``; ``timeout``: the
      overall deadline; ``attempt_timeout``: each attempt's; other policy options
      (``retry_methods``, ``retry_statuses``, ``retry_after``, ``failure_statuses``,
      ``wait``, ``budget``) as ``RetryPolicy``'s.
    - ``limits``, ``verify``, ``cert``, ``http2``: for each instance's connection pool
      (httpx's ``HTTPTransport``); ``make_transport(instance)`` replaces that outright.

    >>> import httpx
    >>> from loadbalancer import static
    >>> client = httpx.Client(transport=Transport({"api": static.Publisher(["127.0.0.1:8001"])}))
    >>> client.close()
    """

    def __init__(
        self,
        services: Mapping[str, Publisher[Any]] | Publisher[Any],
        *,
        balancer: Balancing = RoundRobin,
        eject: bool | Mapping[str, Any] = False,
        retries: int | RetryPolicy | None = 3,
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
        options = _policy_options(retry_methods, retry_statuses, retry_after, failure_statuses, wait, budget)
        make = make_transport or (
            lambda instance: httpx.HTTPTransport(limits=limits, verify=verify, cert=cert, http2=http2, trust_env=False)
        )
        policy = RetryPolicy.of(retries, timeout, attempt_timeout, **options)
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
        end = policy.deadline(time.monotonic())
        backoff = policy.backoff()
        errors: list[BaseException] = []
        tried: list[Any] = []  # endpoints that failed this request
        while True:
            try:
                endpoint = route.pick(request, tried)
            except NotReadyError:
                route.publisher.wait_ready(None if end == math.inf else max(0.0, end - time.monotonic()))
                try:
                    endpoint = route.pick(request)
                except NoEndpointsError as error:
                    raise self.no_instances(request, route, error) from error
            except NoEndpointsError as error:
                raise self.no_instances(request, route, error) from error
            response: httpx.Response | None = None
            failure: BaseException | None = None
            try:
                response = endpoint(self.outgoing(request, _instance(endpoint), end)).response
            except _FailedStatus as failed:
                response = failed.attempt.response
            except httpx.TransportError as error:
                failure = error
            delay = self.after(request, errors, tried, endpoint, response, failure, end, backoff)
            if delay is None:
                assert response is not None
                return response
            if response is not None:
                response.close()
            time.sleep(delay)

    def close(self) -> None:
        for route in self._routes.values():
            route.close()
        self._inner.close()


class AsyncTransport(_Base, httpx.AsyncBaseTransport):
    """The async twin of ``Transport`` (``httpx.AsyncClient(transport=AsyncTransport(...))``).

    Also: ``hedge_after=`` seconds sends a second attempt of an idempotent request to
    another instance when the first has not answered by then (the first answer wins, the
    other is cancelled; hedges spend the retry budget).
    """

    def __init__(
        self,
        services: Mapping[str, Publisher[Any]] | Publisher[Any],
        *,
        balancer: Balancing = RoundRobin,
        eject: bool | Mapping[str, Any] = False,
        retries: int | RetryPolicy | None = 3,
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
        options = _policy_options(retry_methods, retry_statuses, retry_after, failure_statuses, wait, budget)
        make = make_transport or (
            lambda instance: httpx.AsyncHTTPTransport(
                limits=limits, verify=verify, cert=cert, http2=http2, trust_env=False
            )
        )
        policy = RetryPolicy.of(retries, timeout, attempt_timeout, **options)
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
        self._hedge_after = None if hedge_after is None else seconds(hedge_after, "hedge_after")
        self._inner = inner if inner is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        route = self.route(request)
        if route is None:
            return await self._inner.handle_async_request(request)
        policy = self._policy
        policy.deposit()
        end = policy.deadline(time.monotonic())
        backoff = policy.backoff()
        errors: list[BaseException] = []
        tried: list[Any] = []  # endpoints that failed this request
        while True:
            endpoint = await self._pick(request, route, end, tried)
            response: httpx.Response | None = None
            failure: BaseException | None = None
            try:
                if end == math.inf:
                    response = await self._attempt(request, route, endpoint, end)
                else:
                    async with asyncio.timeout(max(0.0, end - time.monotonic())):
                        response = await self._attempt(request, route, endpoint, end)
            except _FailedStatus as failed:
                response = failed.attempt.response
            except httpx.TransportError as error:
                failure = error
            except TimeoutError as error:
                errors.append(error)
                raise self.deadline_error(request, errors) from error
            delay = self.after(request, errors, tried, endpoint, response, failure, end, backoff)
            if delay is None:
                assert response is not None
                return response
            if response is not None:
                await response.aclose()
            await asyncio.sleep(delay)

    async def _pick(self, request: httpx.Request, route: _Route, end: float, tried: list[Any]) -> Any:
        try:
            return route.pick(request, tried)
        except NotReadyError:
            await route.publisher.ready_wait(None if end == math.inf else max(0.0, end - time.monotonic()))
        except NoEndpointsError as error:
            raise self.no_instances(request, route, error) from error
        try:
            return route.pick(request)
        except NoEndpointsError as error:
            raise self.no_instances(request, route, error) from error

    async def _attempt(self, request: httpx.Request, route: _Route, endpoint: Any, end: float) -> httpx.Response:
        hedge_after = self._hedge_after
        if hedge_after is None or not self._policy.resendable(
            request.method, isinstance(request.stream, httpx.ByteStream)
        ):
            result = await endpoint(self.outgoing(request, _instance(endpoint), end))  # no task: none is needed
            response: httpx.Response = result.response
            return response
        first = asyncio.ensure_future(endpoint(self.outgoing(request, _instance(endpoint), end)))
        try:
            done, _ = await asyncio.wait({first}, timeout=hedge_after)
            if done or not self._policy.withdraw():
                return await _response(first)
            try:
                other = route.pick(request)
            except NoEndpointsError:
                return await _response(first)
            if other is endpoint:
                return await _response(first)
            self._log.debug("http_hedge_sent", instance=str(other), after=hedge_after)
            second = asyncio.ensure_future(other(self.outgoing(request, _instance(other), end)))
            pending: set[asyncio.Future[Any]] = {first, second}
            while True:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for attempt in done:
                    if attempt.exception() is None or not pending:
                        for loser in pending:
                            loser.cancel()
                            loser.add_done_callback(_close_quietly)
                        return await _response(attempt)
        finally:
            if not first.done():
                first.cancel()

    async def aclose(self) -> None:
        for route in self._routes.values():
            await route.aclose()
        await self._inner.aclose()


def _close_quietly(attempt: asyncio.Future[Any]) -> None:
    """A hedge that lost: release its response, if it got one."""
    if attempt.cancelled() or attempt.exception() is not None:
        return
    task = asyncio.ensure_future(attempt.result().response.aclose())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _response(attempt: asyncio.Future[Any]) -> httpx.Response:
    result: Any = await attempt
    response: httpx.Response = result.response
    return response


def _instance(endpoint: Any) -> Instance:
    """The instance an endpoint (a pool, or a tracker of one) sends to."""
    instance: Instance = endpoint.instance
    return instance


class AnswerError(Exception):
    """An attempt answered with a status that was retried (in ``DeadlineExceeded.errors``)."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        super().__init__(f"HTTP {status}")


def _status(response: httpx.Response | None) -> BaseException:
    return AnswerError(response.status_code if response is not None else 0)


def _policy_options(
    methods: Any, statuses: Any, honour_retry_after: bool, failures: Any, wait: Any, budget: Any
) -> dict[str, Any]:
    options: dict[str, Any] = {"retry_after": honour_retry_after, "wait": wait, "budget": budget}
    if methods is not None:
        options["methods"] = methods
    if statuses is not None:
        options["statuses"] = statuses
    if failures is not None:
        options["failure_statuses"] = failures
    return options
