"""``RequestsAdapter``: requests' transport adapter over discovered instances, balanced, retried, learning.

    session = requests.Session()
    session.mount("http://api", http.RequestsAdapter(static.Publisher(["127.0.0.1:8001", "127.0.0.1:8002"])))
    session.get("http://api/users/1")

Each instance gets a ``requests.adapters.HTTPAdapter`` of its own (urllib3's pool inside).
The rules are ``RetryPolicy``'s, as for the httpx transports.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

try:
    import requests
    import requests.adapters
    import requests.exceptions
    import urllib3.exceptions
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "loadbalancer.http.RequestsAdapter needs requests, which is not installed: pip install requests"
    ) from error

from .._engine import Attempt, Call, Verdict, drive, summary, told
from .._httppolicy import RetryPolicy
from .._log import get_logger
from .._route import Connection
from ..balancer import Balancer, RoundRobin
from ..endpointer import Endpointer
from ..errors import NoEndpointsError, RetryTimeoutError
from ..instance import Instance
from ..outlier import OutlierDetector
from ..publisher import Publisher
from ._policy import publisher_of

__all__ = ["RequestsAdapter", "RequestsDeadlineExceeded", "RequestsNoInstancesError"]


class RequestsNoInstancesError(requests.exceptions.ConnectionError, NoEndpointsError):
    """No instance could be picked: a requests ``ConnectionError`` that is also a ``NoEndpointsError``."""


class RequestsDeadlineExceeded(requests.exceptions.Timeout, RetryTimeoutError):
    """The call's overall deadline passed: a requests ``Timeout`` and a ``RetryTimeoutError``."""

    def __init__(self, message: str, errors: list[BaseException], request: Any) -> None:
        IOError.__init__(self, message)  # both bases' __init__ would pass only some of their arguments on
        self.request = request
        self.response = None
        self.errors = tuple(errors)


class _Failed(Exception):
    """An answer whose status counts as the instance's failure (raised through trackers, caught by ``send``)."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        super().__init__(f"HTTP {response.status_code}")


class _Answered:
    """One attempt's response, its body read: the call is over."""

    __slots__ = ("response",)

    def __init__(self, response: requests.Response) -> None:
        self.response = response


class _Call:
    """One attempt's streamed response: its close ends the call for the trackers."""

    __slots__ = ("_done", "response")

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self._done: list[Callable[[BaseException | None], None]] = []

    def finish_later(self, done: Callable[[BaseException | None], None]) -> None:
        self._done.append(done)

    def finish(self) -> None:
        done, self._done = self._done, []
        for callback in done:
            callback(None)


class _Pool(Connection):
    """One instance's ``HTTPAdapter``; closed once the instance has left and its last response is closed."""

    def __init__(self, instance: Instance, maxsize: int, failures: Any, service: str) -> None:
        super().__init__(instance, service)
        self.adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=maxsize, max_retries=0)
        self._failures = failures

    def __call__(self, request: requests.PreparedRequest, stream: bool, **options: Any) -> _Call | _Answered:
        start = self.acquire()
        try:
            response = self.adapter.send(request, stream=stream, **options)
            if not stream:
                response.content  # noqa: B018 - read the body now: the call lasts until it is in
        except BaseException:
            self.release(start, False)
            raise
        ok = response.status_code not in self._failures
        call: _Call | _Answered
        if stream:
            call = streamed = _Call(response)
            close = response.close

            def closing() -> None:
                try:
                    close()
                finally:
                    streamed.finish()
                    self.release(start, ok)

            response.close = closing  # type: ignore[method-assign]
        else:
            call = _Answered(response)
            self.release(start, ok)
        if not ok:
            raise _Failed(response)
        return call

    def _shut(self) -> None:
        self.adapter.close()


class RequestsAdapter(requests.adapters.BaseAdapter):
    """A requests transport adapter over ``publisher``'s instances (mount it for the service's URL prefix).

    ``balancer``, ``eject``, ``retries``, ``timeout``, ``attempt_timeout`` and the retry
    options as for ``loadbalancer.http.Transport``; ``pool_maxsize``: connections kept per
    instance. A request's own ``timeout=`` bounds each attempt too.
    """

    def __init__(
        self,
        publisher: Publisher[Any] | str,
        *,
        balancer: type[Balancer[Any]] | Callable[[Publisher[Any]], Balancer[Any]] = RoundRobin,
        eject: bool | Mapping[str, Any] = False,
        retries: int | RetryPolicy | None = 2,
        timeout: float | timedelta | None = None,
        attempt_timeout: float | timedelta | None = None,
        pool_maxsize: int = 10,
        own: bool = True,
        logger: Any = None,
        **policy_options: Any,
    ) -> None:
        super().__init__()
        if isinstance(publisher, str):
            publisher, own = publisher_of(publisher), True  # made here, so closed here
        if not isinstance(publisher, Publisher):
            raise TypeError(f"RequestsAdapter needs a loadbalancer.Publisher (of instances), got {publisher!r}")
        self._policy = RetryPolicy.of(retries, timeout, attempt_timeout, **policy_options)
        self._publisher = publisher
        self._log = get_logger(logger, name=__name__, service=publisher.service)
        failures = self._policy.failure_statuses

        def pool(instance: Instance) -> _Pool:
            return _Pool(instance, pool_maxsize, failures, publisher.service)

        self._pools: Endpointer[_Pool] = Endpointer(
            publisher,
            pool,
            close_delay=0,
            own=own,
            logger=logger,
        )
        top: Publisher[Any] = self._pools
        self._detector: OutlierDetector[Any] | None = None
        if eject:
            options = dict(eject) if isinstance(eject, Mapping) else {}
            self._detector = OutlierDetector(self._pools, own=False, logger=logger, **options)
            top = self._detector
        self._balancer = balancer(top)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        policy = self._policy
        policy.deposit()
        start = time.monotonic()
        end = policy.deadline(start)
        method = (request.method or "GET").upper()
        replayable = request.body is None or isinstance(request.body, bytes | str)

        run = self._runner(
            request, method, replayable, stream, timeout, {"verify": verify, "cert": cert, "proxies": proxies}
        )
        call = Call(
            policy.engine(),
            self._balancer.endpoint,
            start=start,
            end=end,
            candidates=self._balancer.candidates,
            retryable=lambda error: False,
            conclude=lambda reason, errors, *_: (
                self._deadline(request, method, errors) if reason == "deadline" else errors[-1]
            ),
            log=self._log,
            events="http",
            discard=lambda response: response.close(),
            request=request,
        )
        try:
            response: requests.Response = drive(call, call.begin(start), run, ready=self._publisher.wait_ready)
            return response
        except NoEndpointsError as error:
            raise RequestsNoInstancesError(
                f"{request.method} {request.url}: no instance of {self._publisher!r}: {error}", request=request
            ) from error
        except requests.exceptions.Timeout as error:
            if isinstance(error, RequestsDeadlineExceeded):
                raise
            if time.monotonic() < end - 0.005:
                told(error, call, f"{method} {request.url}: service {self._publisher.service!r}")
                raise
            raise self._deadline(request, method, [error]) from error
        except requests.exceptions.RequestException as error:  # the last attempt's, telling every attempt
            told(error, call, f"{method} {request.url}: service {self._publisher.service!r}")
            raise

    def _runner(
        self,
        request: requests.PreparedRequest,
        method: str,
        replayable: bool,
        stream: bool,
        timeout: Any,
        options: dict[str, Any],
    ) -> Callable[[Attempt], requests.Response]:
        """One attempt: send ``request`` to the attempt's instance; a failure or an answer to retry is a ``Verdict``."""
        policy = self._policy

        def run(attempt: Attempt) -> requests.Response:
            endpoint = attempt.endpoint
            limit = policy.attempt_limit(attempt.deadline)
            response: requests.Response
            try:
                call = endpoint(self._outgoing(request, endpoint.instance), stream, timeout=_timeout(timeout, limit),
                                **options)  # fmt: skip
                response = call.response
            except _Failed as failed:
                response = failed.response
            except requests.exceptions.RequestException as error:
                raise Verdict(error, retry=policy.failure(method, replayable, _unsent(error))) from error
            response.request = request  # what the caller asked for, not the instance's URL
            wait = policy.answer(method, replayable, response.status_code, response.headers.get("Retry-After"))
            if wait is None:
                return response
            raise Verdict(_Failed(response), retry=True, answer=response, at_least=wait)

        return run

    def _deadline(
        self, request: requests.PreparedRequest, method: str, errors: list[BaseException]
    ) -> RequestsDeadlineExceeded:
        return RequestsDeadlineExceeded(
            f"{method} {request.url}: deadline exceeded after {len(errors)} attempts: {summary(errors)}",
            errors,
            request,
        )

    @staticmethod
    def _outgoing(request: requests.PreparedRequest, instance: Instance) -> requests.PreparedRequest:
        sent = request.copy()
        parts = urllib.parse.urlsplit(request.url or "")
        sent.url = urllib.parse.urlunsplit(parts._replace(netloc=instance.address))
        if "Host" not in sent.headers:
            sent.headers["Host"] = parts.netloc  # the service's name stays the Host, as the caller wrote it
        return sent

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
        self._pools.close()


def _unsent(error: BaseException) -> bool:
    """Whether a requests error means the connection could not be made (the request never left)."""
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(error, requests.exceptions.ConnectionError) and error.args:
        reason = getattr(error.args[0], "reason", error.args[0])
        return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)
    return False


def _timeout(given: Any, limit: float | None) -> Any:
    if limit is None:
        return given
    if given is None:
        return limit
    if isinstance(given, tuple):
        return tuple(limit if part is None else min(part, limit) for part in given)
    return min(float(given), limit)
