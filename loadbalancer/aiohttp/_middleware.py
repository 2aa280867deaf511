"""The aiohttp client middleware: a service's host name in, one of its instances out, retried by the HTTP rules.

aiohttp (3.12+) calls a session's middlewares with each ``ClientRequest`` and the handler
that connects and sends it. The handler opens the connection to wherever ``request.url``
points when it is called, while the Host header was fixed when the request was built: so
assigning ``request.url`` sends the request to an instance and keeps ``Host: api``.
The session's connector pools the connections (one pool per instance address), so per
instance there is only a light endpoint here: its URLs, its figures for the metrics.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp.payload import BytesPayload
from yarl import URL

from .. import _metrics
from .._engine import Attempt, Call, Verdict, adrive, summary, told
from .._httppolicy import RetryPolicy, options_of, policy_of
from .._log import get_logger
from .._route import Balancing, Route
from ..balancer import RoundRobin
from ..errors import AttemptTimeoutError, Error, NoEndpointsError, NotReadyError, RetryTimeoutError
from ..instance import Instance
from ..publisher import Publisher

__all__ = ["AnswerError", "DeadlineExceeded", "Middleware", "NoInstancesError", "middleware"]

Handler = Callable[[aiohttp.ClientRequest], Awaitable[aiohttp.ClientResponse]]
_URLS = 4096  # instance URLs remembered per instance (paths repeat); all forgotten when full
_SLACK = 0.005  # a timeout this close to the deadline is the deadline's
_SECURE = frozenset({"https", "wss"})


class NoInstancesError(aiohttp.ClientConnectionError, NoEndpointsError):
    """No instance of the service could be picked: aiohttp's ``ClientConnectionError`` and a ``NoEndpointsError``.

    ``error`` is the publisher's last refresh failure, if that is why the set is empty.
    """

    def __init__(self, message: str, *, error: BaseException | None = None) -> None:
        Exception.__init__(self, message)  # both bases' __init__ would pass only some of their arguments on
        self.error = error


class DeadlineExceeded(aiohttp.ServerTimeoutError, RetryTimeoutError):
    """The call's overall deadline passed: aiohttp's ``ServerTimeoutError`` (an ``asyncio.TimeoutError``)
    and a ``RetryTimeoutError``. ``errors`` holds each attempt's exception (a retried answer as ``AnswerError``)."""

    def __init__(self, message: str, errors: list[BaseException]) -> None:
        Exception.__init__(self, message)
        self.errors = tuple(errors)


class AnswerError(Error):
    """An attempt answered with a status that was retried (in ``DeadlineExceeded.errors``)."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"HTTP {status}")


class _FailedStatus(Exception):
    """An answer whose status counts as the instance's failure: raised through trackers, caught by the middleware."""

    def __init__(self, attempt: _Attempt) -> None:
        self.attempt = attempt
        super().__init__(f"HTTP {attempt.response.status}")


def _replayable(request: aiohttp.ClientRequest) -> bool:
    """Whether the request's body can be sent again: none, bytes, or a payload not consumed (a stream once sent is)."""
    body = request.body
    if isinstance(body, bytes | BytesPayload):
        return True
    return getattr(body, "consumed", None) is False  # an aiohttp without ``consumed``: not known, so not


class _Attempt:
    """One attempt's response, busy until its connection is released (``finish_later``).

    The latency trackers and the metrics see runs until then: until the body was read to
    its end (or the response released or closed), not only until the headers, so that an
    instance slow to send its body looks slow.
    """

    __slots__ = ("_done", "_failed", "_over", "_start", "endpoint", "response")

    def __init__(self, response: aiohttp.ClientResponse, endpoint: _Endpoint, start: float, failed: bool) -> None:
        self.response = response
        self.endpoint = endpoint
        self._start = start
        self._failed = failed
        self._done: list[Callable[[BaseException | None], None]] = []
        connection = response.connection
        self._over = connection is None
        if connection is None:  # the whole body came with the headers: the connection is back in the pool already
            endpoint.record(start, not failed)
        else:
            connection.add_callback(self._released)

    def finish_later(self, done: Callable[[BaseException | None], None]) -> None:
        if self._over:
            done(None)
        else:
            self._done.append(done)

    def _released(self) -> None:
        self._over = True
        error = self.response.content.exception()
        if type(error) is aiohttp.ClientConnectionError:
            error = None  # the caller released it before its end ("Connection closed"): not the instance's failure
        done, self._done = self._done, []
        for callback in done:
            callback(error)
        self.endpoint.record(self._start, not self._failed and error is None)


class _Endpoint:
    """One instance as the balancer sees it: it points a request there and sends it.

    ``records_calls``: its attempts are counted here for the metrics (with metrics on), so
    that trackers need not count them again. Nothing to close: the session's connector
    owns the connections.
    """

    records_calls = True
    __slots__ = ("__weakref__", "_failures", "_stats", "_urls", "instance")

    def __init__(self, instance: Instance, failures: Any, service: str) -> None:
        self.instance = instance
        self._failures = failures
        self._stats = _metrics.stats(service, instance.address) if _metrics.enabled() else None
        self._urls: dict[URL, URL] = {}

    def url(self, original: URL) -> URL:
        """``original`` pointed at this instance (remembered: building a URL costs more than the lookup)."""
        url = self._urls.get(original)
        if url is None:
            if len(self._urls) >= _URLS:
                self._urls.clear()
            url = self._urls[original] = original.with_host(self.instance.host).with_port(self.instance.port)
        return url

    async def __call__(self, request: aiohttp.ClientRequest, handler: Handler, original: URL) -> _Attempt:
        request.url = self.url(original)
        start = time.monotonic()
        try:
            response = await handler(request)
        except BaseException:
            self.record(start, False)
            raise
        failed = response.status in self._failures
        attempt = _Attempt(response, self, start, failed)
        if failed:
            raise _FailedStatus(attempt)
        return attempt

    def record(self, start: float, ok: bool) -> None:
        if self._stats is not None:
            self._stats.record(time.monotonic() - start, ok)

    def __str__(self) -> str:
        return self.instance.address

    def __repr__(self) -> str:
        return f"endpoint({self.instance.address})"


def _publisher_of(target: str) -> Publisher[Any]:
    from .. import targets  # lazily: only mappings that hold target strings need the parsers

    return targets.publisher(target)


def _routes(
    services: Mapping[str, Publisher[Any] | str], failures: Any, balancer: Balancing, eject: Any, own: bool, log: Any
) -> dict[str, Route]:
    if not isinstance(services, Mapping) or not services:
        raise TypeError(
            f"services must be a mapping of host names to publishers, like {{'api': publisher}}, got {services!r}"
        )
    for name, publisher in services.items():  # all checked before any is built: nothing to undo
        if not isinstance(name, str) or not name:
            raise TypeError(f"services: a host name must be a non-empty string, got {name!r}")
        if sum(other.lower() == name.lower() for other in services if isinstance(other, str)) > 1:
            raise ValueError(f"services: host names are not case-sensitive, and {name!r} is given twice")
        if not isinstance(publisher, Publisher | str):
            raise TypeError(
                f"services[{name!r}] must be a loadbalancer.Publisher (of instances) or a target string,"
                f" got {publisher!r}"
            )
    routes: dict[str, Route] = {}
    for name, publisher in services.items():
        made = _publisher_of(publisher) if isinstance(publisher, str) else publisher
        own_it = own or isinstance(publisher, str)  # a publisher made here is closed here

        def factory(instance: Instance, service: str = name) -> _Endpoint:
            return _Endpoint(instance, failures, service)

        routes[name.lower()] = Route(name, made, factory, balancer, eject, own_it, log.bind(service=name))
    return routes


class Middleware:
    """A client middleware for ``aiohttp.ClientSession(middlewares=(mw,))``: see ``middleware()``.

    Close it (``await mw.aclose()``, or ``async with mw:``) once its sessions are done with it.
    """

    def __init__(
        self,
        services: Mapping[str, Publisher[Any] | str],
        *,
        balancer: Balancing,
        eject: bool | Mapping[str, Any],
        policy: RetryPolicy,
        own: bool,
        logger: Any,
    ) -> None:
        self._policy = policy
        self._statuses = policy.statuses
        self._log = get_logger(logger, name=__name__)
        self._routes = _routes(services, policy.failure_statuses, balancer, eject, own, self._log)

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy in force."""
        return self._policy

    @property
    def services(self) -> list[str]:
        """The host names it sends to instances (lower case)."""
        return list(self._routes)

    async def __call__(self, request: aiohttp.ClientRequest, handler: Handler) -> aiohttp.ClientResponse:
        original = request.url
        route = self._routes.get(original.raw_host or "")
        if route is None:
            return await handler(request)  # not a service: untouched
        if request.server_hostname is None and original.scheme in _SECURE:
            request.server_hostname = original.raw_host  # SNI and the certificate check: the service's name
        policy = self._policy
        policy.deposit()
        start = time.monotonic()
        end = policy.deadline(start)
        try:
            try:
                endpoint = route.choose()
            except NotReadyError:
                endpoint = await self._ready(route, end)
            try:
                if end == math.inf and policy.attempt_timeout is None:
                    return await self._send(request, handler, endpoint, original)  # no engine, no timer: most calls
                return await self._first(request, handler, endpoint, original, start, end)
            except (Verdict, aiohttp.ClientConnectionError, AttemptTimeoutError) as error:
                first: BaseException = error
            call = self._call(request, original, route, start, end)
            step = call.after_first(endpoint, first, time.monotonic())

            def run(attempt: Attempt) -> Awaitable[aiohttp.ClientResponse]:
                return self._send(request, handler, attempt.endpoint, original)

            try:
                response: aiohttp.ClientResponse = await adrive(
                    call, step, run, ready=route.publisher.await_ready, discard=_discard
                )
            except aiohttp.ClientError as error:  # the last attempt's, its type kept, telling every attempt
                if isinstance(error, NoEndpointsError | TimeoutError):
                    raise
                raise told(error, call, f"{request.method} {original}: service {route.name!r}") from error.__cause__
            return response
        except (NoEndpointsError, TimeoutError) as error:
            raise self._failed(request, original, route, end, error) from error.__cause__

    async def _ready(self, route: Route, end: float) -> Any:
        """The pick once the publisher has first answered (within the deadline)."""
        await route.publisher.await_ready(None if end == math.inf else max(0.0, end - time.monotonic()))
        return route.choose()

    async def _first(
        self, request: aiohttp.ClientRequest, handler: Handler, endpoint: Any, original: URL, start: float, end: float
    ) -> aiohttp.ClientResponse:
        """The first attempt within its time, made here: the retry engine only after a failure."""
        limit = self._policy.attempt_timeout
        until = end if limit is None else min(end, start + limit)
        scope = asyncio.timeout(max(0.0, until - time.monotonic()))
        try:
            async with scope:
                return await self._send(request, handler, endpoint, original)
        except TimeoutError as error:
            if not scope.expired():
                raise  # aiohttp's own timeout (a ServerTimeoutError is retried), or the session's total
            why = f"ran out of its {limit:g}s" if until < end and limit is not None else "cancelled at the deadline"
            raise AttemptTimeoutError(f"attempt 1 {why}") from error

    async def _send(
        self, request: aiohttp.ClientRequest, handler: Handler, endpoint: Any, original: URL
    ) -> aiohttp.ClientResponse:
        if type(endpoint) is _Endpoint and endpoint._stats is None:
            # No tracker and no metrics watch this call: nothing to report when it ends, so no _Attempt.
            request.url = endpoint.url(original)
            return self._judge(request, await handler(request))
        try:
            attempt = await endpoint(request, handler, original)
        except _FailedStatus as failed:
            attempt = failed.attempt
        return self._judge(request, attempt.response)

    def _judge(self, request: aiohttp.ClientRequest, response: aiohttp.ClientResponse) -> aiohttp.ClientResponse:
        """An attempt's answer: returned, or raised as the engine's ``Verdict`` when it is worth asking again."""
        status = response.status
        if status not in self._statuses:
            return response
        wait = self._policy.answer(request.method, _replayable(request), status, response.headers.get("Retry-After"))
        if wait is None:
            return response
        raise Verdict(AnswerError(status), retry=True, answer=response, at_least=wait)

    def _call(self, request: aiohttp.ClientRequest, original: URL, route: Route, start: float, end: float) -> Call:
        """The retry engine's call for ``request``, after its first attempt failed."""
        method = request.method
        policy = self._policy

        def retryable(error: BaseException) -> bool:
            if isinstance(error, NoEndpointsError) or not isinstance(
                error, aiohttp.ClientConnectionError | AttemptTimeoutError
            ):
                return False  # no instance to pick, or not the network's doing
            # never sent: the connection could not be made (refused, connect timeout)
            unsent = isinstance(error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
            return policy.failure(method, _replayable(request), unsent)

        return Call(
            policy.engine(),
            route.choose,
            start=start,
            end=end,
            candidates=route.candidates,
            retryable=retryable,
            conclude=lambda reason, errors, *_: (
                self._deadline_error(request, original, errors) if reason == "deadline" else errors[-1]
            ),
            log=route.log,
            events="http",
            discard=_discard,
            request=request,
        )

    def _failed(
        self, request: aiohttp.ClientRequest, original: URL, route: Route, end: float, error: BaseException
    ) -> BaseException:
        """What the caller sees of ``error``, the error the call ended with."""
        if isinstance(error, NoEndpointsError) and not isinstance(error, NoInstancesError):
            failure: BaseException = NoInstancesError(
                f"{request.method} {original}: no instance of service {route.name!r}: {error}", error=error.error
            )
        elif (
            isinstance(error, AttemptTimeoutError | aiohttp.ServerTimeoutError)
            and not isinstance(error, DeadlineExceeded)
            and time.monotonic() >= end - _SLACK
        ):
            failure = self._deadline_error(request, original, [error])
        else:
            return error
        failure.__cause__ = error
        return failure

    def _deadline_error(
        self, request: aiohttp.ClientRequest, original: URL, errors: list[BaseException]
    ) -> DeadlineExceeded:
        timeout = self._policy.timeout or 0.0
        return DeadlineExceeded(
            f"{request.method} {original}: deadline of {timeout:g}s exceeded after {len(errors)} attempts"
            + (f": {summary(errors)}" if errors else ""),
            errors,
        )

    async def aclose(self) -> None:
        """Stop following discovery: close the publishers it made (target strings), and the others if it owns them."""
        for route in self._routes.values():
            await route.aclose()

    def close(self) -> None:
        """Sync form of ``aclose()``."""
        for route in self._routes.values():
            route.close()

    async def __aenter__(self) -> Middleware:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<loadbalancer.aiohttp.Middleware {sorted(self._routes)}>"


def _discard(response: aiohttp.ClientResponse) -> None:
    """An answer a later attempt replaced: its connection back to the pool (or closed, if its body is unread)."""
    response.release()


def middleware(
    services: Mapping[str, Publisher[Any] | str],
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
    own: bool = True,
    logger: Any = None,
) -> Middleware:
    """A client middleware that sends ``http://api/...`` to the instances of service ``api``, balanced and retried.

    ``services`` maps host names (``"api"``) to publishers of their instances (made without
    a factory) or target strings (``"static:///127.0.0.1:8001,127.0.0.1:8002"``,
    ``"dns:///_api._tcp.example."``). Requests to other hosts pass through untouched. The
    Host header stays the service's name; for ``https://api`` the TLS server name (SNI and
    the certificate check) is ``api`` too, unless the request gave its own ``server_hostname``.

    - ``balancer`` (default ``RoundRobin``): a balancer class, a function of a publisher that
      makes one, or a balancer over the application's publisher of instances. Feedback
      balancers (``LeastLoaded``, ``PeakEwma``) and ``eject=True`` (default ``False``; or
      ``OutlierDetector`` options) see every attempt: 5xx answers (``failure_statuses``) and
      connection errors as failures, its latency until the response's connection is
      released (its body read to the end, or the response released or closed).
    - ``policy`` (default ``None``): a ``RetryPolicy``, or its shorthands: ``retries`` (retries
      after the first attempt, default 2; 0: none; or a ``RetryPolicy``), ``timeout`` (the
      overall deadline, seconds, default ``None``: none), ``attempt_timeout`` (each
      attempt's, default ``None``), ``retry_methods`` (default: the idempotent methods),
      ``retry_statuses`` (default 502, 503, 504, 429), ``retry_after`` (default ``True``:
      honour it within the deadline), ``failure_statuses`` (default 5xx), ``wait`` (default
      full jitter from 10 ms up to 1 s), ``budget`` (default ``True``: a ``RetryBudget`` of
      its own; ``None``: no limit).
    - ``own`` (default ``True``): ``aclose()`` closes the publishers given too (those made
      from target strings are closed always); ``logger`` (default: the library's,
      stdlib ``loadbalancer.aiohttp``): a structlog-style logger for retry events.

    Retries follow the HTTP rules: a request that never left (refused connection, connect
    timeout) goes to another instance whatever its method; one that was sent, and a 502,
    503, 504 or 429 answer, only when its method is idempotent and its body can be sent
    again; a retry avoids the instance that just failed. Errors: ``NoInstancesError`` (no
    instance to pick), ``DeadlineExceeded`` (the deadline passed); aiohttp's own otherwise.
    ``TypeError`` or ``ValueError`` for a bad argument.

    >>> from loadbalancer import static
    >>> mw = middleware({"api": static.Publisher(["127.0.0.1:8001"])}, retries=1, timeout=5.0)
    >>> mw.policy.attempts, mw.services
    (2, ['api'])
    >>> mw.close()
    """
    options = options_of(retry_methods, retry_statuses, retry_after, failure_statuses, wait, budget)
    chosen = policy_of(policy, retries, timeout, attempt_timeout, options)
    return Middleware(services, balancer=balancer, eject=eject, policy=chosen, own=own, logger=logger)
