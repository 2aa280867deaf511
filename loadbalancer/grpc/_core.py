"""What the sync and the aio channels share: the options, the route to the instances, each call's rules.

A call picks an instance's sub-channel with the balancer and is retried by the one retry
engine: a status in ``retry_codes`` goes to another instance while attempts and the call's
deadline allow; any other status is raised at once. Statuses that say the instance failed
(``FAILURE_CODES``) reach feedback balancers and outlier ejection as failures; the others
are the application's answers and count as the instance's success.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta
from typing import Any

import grpc

from .._engine import Call, Policy, summary
from .._httppolicy import RetryPolicy
from .._log import get_logger
from .._route import Balancing, Connection, Route
from .._util import seconds
from ..errors import NoEndpointsError
from ..instance import Instance
from ..publisher import Publisher
from ._errors import DeadlineExceededError, NoInstanceError

_SLACK = 0.005  # an attempt's timeout this close to the call's deadline is the deadline's

__all__ = [
    "FAILURE_CODES",
    "Core",
    "Refused",
    "Sub",
    "Tracked",
    "code_of",
    "codes",
    "engine_policy",
    "invoker",
    "resolve",
    "service_of",
]

FAILURE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Statuses that count against the instance (Envoy maps them to 5xx); the rest are the application's answers."""

Key = tuple[str, str, Any, Any, bool]  # kind, method, serializer, deserializer, registered
Extras = dict[str, Any]  # metadata, credentials, wait_for_ready, compression: passed through


class Refused:
    """An attempt that ended with an application's status: carried through the tracker as a success."""

    __slots__ = ("error",)

    def __init__(self, error: grpc.RpcError) -> None:
        self.error = error


class Tracked:
    """A call still running when its tracker returns (a stream, a future): done when ``call`` is."""

    __slots__ = ("call",)

    def __init__(self, call: Any) -> None:
        self.call = call

    def finish_later(self, done: Callable[[BaseException | None], None]) -> None:
        when_done(self.call, lambda code: done(_StatusFailure(code) if code in FAILURE_CODES else None))


_pending: set[Any] = set()  # statuses of finished aio calls being read


def when_done(call: Any, then: Callable[[grpc.StatusCode | None], None]) -> None:
    """``then(status)`` once ``call`` (a sync or an aio call) is done (``None``: cancelled)."""

    def finished(call: Any) -> None:
        if call.cancelled():
            then(None)
            return
        code = call.code()
        if not asyncio.iscoroutine(code):
            then(code)
            return

        async def read() -> None:  # an aio call's status is awaited, even once it is done
            then(await code)

        task = asyncio.ensure_future(read())
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    call.add_done_callback(finished)


class _StatusFailure(Exception):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)


class Sub(Connection):
    """One instance's sub-channel, with its callables; closed once the instance left and its last call ended."""

    def __init__(self, instance: Instance, service: str, shut: Callable[[Sub], None]) -> None:
        super().__init__(instance, service)
        self._shut_by = shut
        self.closed = False
        self.callables: dict[Key, Any] = {}

    def _shut(self) -> None:
        self._shut_by(self)

    def __repr__(self) -> str:
        return f"sub-channel({self.instance.address}, in flight={self._inflight})"


def codes(value: Collection[grpc.StatusCode], name: str) -> frozenset[grpc.StatusCode]:
    found = frozenset(value)
    wrong = [code for code in found if not isinstance(code, grpc.StatusCode) or code is grpc.StatusCode.OK]
    if wrong:
        raise ValueError(f"{name} must hold grpc.StatusCode values other than OK, got {wrong[0]!r}")
    return found


def engine_policy(
    retries: int | RetryPolicy,
    timeout: float | timedelta | None,
    attempt_timeout: float | timedelta | None,
    wait: Any,
    budget: Any,
) -> RetryPolicy:
    """``retries`` as ``http.Transport`` reads it: retries after the first attempt, or a ``RetryPolicy``."""
    if isinstance(retries, RetryPolicy):
        if timeout is not None or attempt_timeout is not None:
            raise ValueError("give timeout and attempt_timeout in the RetryPolicy, or retries as a number")
        return retries
    options: dict[str, Any] = {"wait": wait, "budget": budget}
    return RetryPolicy.of(retries, timeout, attempt_timeout, **options)


def resolve(publisher: Publisher[Any] | str, own: bool) -> tuple[Publisher[Any], bool]:
    """A publisher, or the one a target string names (made here, so closed here)."""
    if isinstance(publisher, str):
        from .. import targets

        return targets.publisher(publisher), True
    if not isinstance(publisher, Publisher):
        raise TypeError(f"a gRPC channel needs a loadbalancer.Publisher (of instances) or a target, got {publisher!r}")
    return publisher, own


def service_of(publisher: Publisher[Any]) -> str:
    return str(publisher.service or "grpc")


class Core:
    """The route, the policy and the rules of one channel (sync or aio)."""

    def __init__(
        self,
        publisher: Publisher[Any],
        connect: Callable[[Instance], Sub],
        *,
        balancer: Balancing,
        policy: RetryPolicy,
        retry_codes: Collection[grpc.StatusCode],
        eject: Any,
        screen: Callable[[Publisher[Any]], Publisher[Any]] | None,
        own: bool,
        logger: Any,
    ) -> None:
        self.policy = policy
        self.engine: Policy = policy.engine()
        self.retry_codes = codes(retry_codes, "retry_codes")
        self.log = get_logger(logger, name="loadbalancer.grpc").bind(service=publisher.service)
        self.route = Route(
            service_of(publisher),
            publisher,
            connect,
            balancer,
            eject,
            own,
            self.log,
            screen=screen,
        )  # fmt: skip

    def end(self, start: float, timeout: float | None) -> float:
        """A call's deadline: its own ``timeout`` argument, within the channel's."""
        end = self.engine.end(start)
        if timeout is not None:
            end = min(end, start + seconds(timeout, "timeout", allow_zero=True))
        return end

    def first_end(self, start: float, end: float) -> float:
        """The first attempt's deadline: its own timeout, within the call's."""
        limit = self.engine.attempt_timeout
        return end if limit is None else min(end, start + limit)

    def retryable(self, error: BaseException, end: float) -> bool:
        """A retry code; or an attempt that ran out of its own timeout while the call's deadline is not spent.

        A call the server cancelled counts as UNAVAILABLE: grpc servers cancel the calls that
        reach them while they shut down (a client's own cancellation never gets here).
        """
        code = code_of(error)
        if code in self.retry_codes:
            return True
        if code is grpc.StatusCode.CANCELLED:
            return grpc.StatusCode.UNAVAILABLE in self.retry_codes
        return (
            code is grpc.StatusCode.DEADLINE_EXCEEDED
            and self.engine.attempt_timeout is not None
            and time.monotonic() < end - _SLACK
        )

    def call(self, method: str, start: float, end: float) -> Call:
        """The retry engine's call for one RPC: the retry codes go to another instance."""

        def retryable(error: BaseException) -> bool:
            return self.retryable(error, end)

        def conclude(reason: str, errors: list[BaseException], *_: Any) -> BaseException:
            if reason == "deadline":
                return self.deadline_error(method, errors)
            return errors[-1]

        return Call(
            self.engine,
            self.route.choose,
            start=start,
            end=end,
            candidates=self.route.candidates,
            retryable=retryable,
            conclude=conclude,
            log=self.route.log,
            events="grpc",
        )

    def deadline_error(self, method: str, errors: Sequence[BaseException]) -> DeadlineExceededError:
        timeout = self.policy.timeout
        limit = f" of {timeout:g}s" if timeout is not None else ""
        listed = f": {summary(errors)}" if errors else ""
        return DeadlineExceededError(
            f"{method}: deadline{limit} exceeded after {len(errors)} attempts{listed}", list(errors), method=method
        )

    def no_instance(self, method: str, error: NoEndpointsError) -> NoInstanceError:
        failure = NoInstanceError(f"{method}: no instance of {self.route.name!r} to call: {error}", method=method)
        failure.error = error.error
        failure.__cause__ = error
        return failure

    def left(self, end: float) -> float | None:
        """Seconds an attempt may take, for grpc's ``timeout=``."""
        return None if end == math.inf else max(0.0, end - time.monotonic())


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(error, "code", None)
    return code() if callable(code) else None


def code_of(error: BaseException) -> grpc.StatusCode | None:
    """The status of a failed call (``None``: not an RPC's error)."""
    return _code(error) if isinstance(error, grpc.RpcError) else None


def invoker(key: Key, request: Any, timeout: float | None, extras: Extras, *, with_call: bool) -> Callable[[Sub], Any]:
    """What a tracked attempt does on a sub-channel: the unary call, an application's status as ``Refused``."""

    def invoke(sub: Any) -> Any:
        callable_ = sub.callable(key)
        try:
            if with_call:
                return callable_.with_call(request, timeout=timeout, **extras)
            return callable_(request, timeout=timeout, **extras)
        except grpc.RpcError as error:
            if _code(error) in FAILURE_CODES:
                raise
            return Refused(error)

    return invoke
