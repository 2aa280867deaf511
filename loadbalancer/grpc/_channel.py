"""``Channel``: a ``grpc.Channel`` over discovered instances, one sub-channel each, balanced and retried."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc

from .._engine import Attempt, drive
from .._httppolicy import RetryPolicy
from .._route import Balancing
from ..balancer import RoundRobin
from ..errors import NoEndpointsError, NotReadyError
from ..instance import Instance
from ..publisher import Publisher
from ._core import (
    FAILURE_CODES,
    Core,
    Extras,
    Key,
    Refused,
    Sub,
    Tracked,
    engine_policy,
    invoker,
    resolve,
    service_of,
    when_done,
)
from ._future import RetryingFuture
from ._screen import Screen, Watcher, connectivity_thread

__all__ = ["Channel", "combined"]

if TYPE_CHECKING:  # generic in the type stubs only
    _UnaryUnary_ = grpc.UnaryUnaryMultiCallable[Any, Any]
    _UnaryStream_ = grpc.UnaryStreamMultiCallable[Any, Any]
    _StreamUnary_ = grpc.StreamUnaryMultiCallable[Any, Any]
    _StreamStream_ = grpc.StreamStreamMultiCallable[Any, Any]
else:
    _UnaryUnary_ = grpc.UnaryUnaryMultiCallable
    _UnaryStream_ = grpc.UnaryStreamMultiCallable
    _StreamUnary_ = grpc.StreamUnaryMultiCallable
    _StreamStream_ = grpc.StreamStreamMultiCallable

_ORDER = (  # the channel's state is its best sub-channel's (gRPC's aggregation of sub-channel states)
    grpc.ChannelConnectivity.READY,
    grpc.ChannelConnectivity.CONNECTING,
    grpc.ChannelConnectivity.IDLE,
    grpc.ChannelConnectivity.TRANSIENT_FAILURE,
    grpc.ChannelConnectivity.SHUTDOWN,
)


def combined(states: Collection[grpc.ChannelConnectivity]) -> grpc.ChannelConnectivity:
    """READY if any sub-channel is, else CONNECTING if any is, else IDLE, else TRANSIENT_FAILURE.

    >>> combined([grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.READY]).name
    'READY'
    """
    for state in _ORDER:
        if state in states:
            return state
    return grpc.ChannelConnectivity.IDLE


class _SyncSub(Sub):
    def __init__(self, instance: Instance, service: str, shut: Callable[[Sub], None], channel: grpc.Channel) -> None:
        super().__init__(instance, service, shut)
        self.channel = channel

    def callable(self, key: Key) -> Any:
        found = self.callables.get(key)
        if found is None:
            kind, method, serializer, deserializer, registered = key
            found = getattr(self.channel, kind)(method, serializer, deserializer, _registered_method=registered)
            self.callables[key] = found
        return found

    def __call__(self, invoke: Callable[[Any], Any]) -> Any:
        start = self.acquire()
        try:
            result = invoke(self)
        except BaseException:
            self.release(start, False)
            raise
        if type(result) is Tracked:  # a stream or a future: in flight until it is done
            when_done(result.call, lambda code: self.release(start, code not in FAILURE_CODES))
        else:
            self.release(start, True)
        return result


def _outcome(result: Any) -> Any:
    if type(result) is Refused:
        raise result.error
    return result


class Channel(grpc.Channel):
    """A ``grpc.Channel`` over the instances a publisher (or target string) finds: balanced, retried, health-aware.

    Generated stubs and ``channel.unary_unary(...)`` work unchanged, as does
    ``grpc.intercept_channel(channel, ...)``. One sub-channel per instance, made when it
    appears, closed when it has left and its last call ended. Each call picks an instance
    with ``balancer``; unary calls are retried on another instance for ``retry_codes``.

    - ``balancer``: a balancer class (default ``RoundRobin``), a function of a publisher, or a
      balancer over the application's instances; ``PeakEwma`` and ``LeastLoaded`` see every
      call's latency and outcome (UNAVAILABLE, UNKNOWN, INTERNAL, DEADLINE_EXCEEDED and
      DATA_LOSS count as the instance's failures); ``eject=True`` (or ``OutlierDetector``
      options) adds passive outlier ejection (default off).
    - ``retries``: retries after the first attempt, as for ``http.Transport`` (default 2; 0:
      none), or a ``RetryPolicy`` (its attempts, deadline, wait and budget); ``retry_codes``:
      statuses retried on another instance (default ``(UNAVAILABLE,)``); others are raised at
      once; ``wait``, ``budget``: the retry wait and budget, as for ``http.Transport``.
    - ``timeout``: each call's deadline when the call gives none, seconds (default ``None``:
      none); a call's own ``timeout=`` applies within it; ``attempt_timeout``: each attempt's
      (default ``None``), an attempt that runs out of it is retried within the deadline.
    - ``health_check``: watch ``grpc.health.v1`` of ``health_service`` (default ``""``, the
      server as a whole) on every instance and call none that is not serving (default False).
    - ``credentials``: ``grpc.ChannelCredentials`` for secure sub-channels (default ``None``:
      insecure); ``options``: grpc channel options for every sub-channel (default ``()``).
    - ``own``: close the publisher with the channel (default True; a target string's always).

    Streaming calls stay on the instance they began on and are not retried. Every error
    raised is a ``grpc.RpcError``: grpc's own, or ``NoInstanceError`` (UNAVAILABLE) and
    ``DeadlineExceededError`` (DEADLINE_EXCEEDED). ``close()`` (or ``with``) closes every
    sub-channel; never call it from a callback grpc runs (grpc deadlocks there).
    """

    def __init__(
        self,
        publisher: Publisher[Any] | str,
        *,
        balancer: Balancing = RoundRobin,
        retries: int | RetryPolicy = 2,
        retry_codes: Collection[grpc.StatusCode] = (grpc.StatusCode.UNAVAILABLE,),
        timeout: float | timedelta | None = None,
        attempt_timeout: float | timedelta | None = None,
        health_check: bool = False,
        health_service: str = "",
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] = (),
        eject: Any = False,
        wait: Any = None,
        budget: Any = True,
        own: bool = True,
        logger: Any = None,
    ) -> None:
        self._credentials = credentials
        self._options = tuple(options)
        self._lock = threading.Lock()
        self._delivering = threading.RLock()  # callbacks see the states in the order they came
        self._subs: set[_SyncSub] = set()
        self._states: dict[_SyncSub, grpc.ChannelConnectivity] = {}
        self._state = grpc.ChannelConnectivity.IDLE
        self._callbacks: list[Callable[[grpc.ChannelConnectivity], None]] = []
        self._watches: dict[_SyncSub, Callable[[grpc.ChannelConnectivity], None]] = {}
        self._connect_now = False
        self._closing = False
        publisher, own = resolve(publisher, own)
        self._service = service_of(publisher)
        policy = engine_policy(retries, timeout, attempt_timeout, wait, budget)
        watchers: dict[str, Watcher] = {"connectivity": connectivity_thread}
        if health_check:
            from ._health import watch_thread

            watchers["health"] = watch_thread(health_service, logger)
        screen = functools.partial(Screen, watchers=watchers, logger=logger)
        self._core = Core(
            publisher, self._connect, balancer=balancer, policy=policy, retry_codes=retry_codes, eject=eject,
            screen=screen, own=own, logger=logger,
        )  # fmt: skip

    # -- sub-channels ---------------------------------------------------------------------------

    def _connect(self, instance: Instance) -> _SyncSub:
        address = instance.address
        if self._credentials is not None:
            channel = grpc.secure_channel(address, self._credentials, options=self._options)
        else:
            channel = grpc.insecure_channel(address, options=self._options)
        sub = _SyncSub(instance, self._service, self._shut, channel)
        with self._lock:
            self._subs.add(sub)
            watched = bool(self._callbacks)
        if watched:
            self._watch(sub, self._connect_now)
        return sub

    def _watch(self, sub: _SyncSub, try_to_connect: bool) -> None:
        watch = self._watches[sub] = functools.partial(self._on_state, sub)
        sub.channel.subscribe(watch, try_to_connect=try_to_connect)

    def _shut(self, sub: Sub) -> None:
        assert isinstance(sub, _SyncSub)
        with self._lock:
            if sub.closed:
                return
            sub.closed = True
            self._subs.discard(sub)
            self._states.pop(sub, None)
            self._watches.pop(sub, None)
            inline = self._closing
        if inline:
            sub.channel.close()
        else:  # maybe on a thread grpc runs callbacks on, where closing a channel deadlocks
            threading.Thread(target=sub.channel.close, name="loadbalancer-grpc-close", daemon=True).start()
        self._update()

    # -- connectivity ---------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False) -> None:
        """Call ``callback`` with the combined state of the sub-channels now and at every change."""
        with self._delivering:  # its first state before any change, and changes in their order
            with self._lock:
                first = not self._callbacks
                self._callbacks.append(callback)
                poke = try_to_connect and not self._connect_now
                self._connect_now = self._connect_now or try_to_connect
                subs = list(self._subs)
                state = self._state
            callback(state)
        for sub in subs:
            if first:
                self._watch(sub, try_to_connect)
            elif poke:
                sub.channel.subscribe(_ignore, try_to_connect=True)
                sub.channel.unsubscribe(_ignore)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
            watches = {}
            if not self._callbacks:
                watches, self._watches = self._watches, {}
                self._states.clear()
                self._state = grpc.ChannelConnectivity.IDLE
        for sub, watch in watches.items():
            sub.channel.unsubscribe(watch)

    def _on_state(self, sub: _SyncSub, state: grpc.ChannelConnectivity) -> None:
        with self._lock:
            if sub.closed or not self._callbacks:
                return
            self._states[sub] = state
        self._update()

    def _update(self) -> None:
        with self._delivering:
            with self._lock:
                state = combined(self._states.values())
                if state == self._state:
                    return
                self._state = state
                callbacks = list(self._callbacks)
            for callback in callbacks:
                callback(state)

    # -- calls ----------------------------------------------------------------------------------

    def unary_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.UnaryUnaryMultiCallable[Any, Any]:  # fmt: skip
        """A unary method: each call picks an instance, retried on another for ``retry_codes`` (grpc's signature)."""
        key: Key = ("unary_unary", method, request_serializer, response_deserializer, _registered_method)
        return _UnaryUnary(self, key)

    def unary_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.UnaryStreamMultiCallable[Any, Any]:  # fmt: skip
        """A server-streaming method: each call stays on the instance it picked (grpc's signature)."""
        return _UnaryStream(
            self, ("unary_stream", method, request_serializer, response_deserializer, _registered_method)
        )

    def stream_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.StreamUnaryMultiCallable[Any, Any]:  # fmt: skip
        """A client-streaming method: each call stays on the instance it picked (grpc's signature)."""
        return _StreamUnary(
            self, ("stream_unary", method, request_serializer, response_deserializer, _registered_method)
        )

    def stream_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        _registered_method: bool = False,
    ) -> grpc.StreamStreamMultiCallable[Any, Any]:  # fmt: skip
        """A bidirectional-streaming method: each call stays on the instance it picked (grpc's signature)."""
        key: Key = ("stream_stream", method, request_serializer, response_deserializer, _registered_method)
        return _StreamStream(self, key)

    def pick(self, method: str, end: float) -> Any:
        """The balancer's pick for a call's first attempt, after the publisher's first answer if need be."""
        route = self._core.route
        try:
            try:
                return route.choose()
            except NotReadyError:
                route.publisher.wait_ready(self._core.left(end))
            return route.choose()
        except NoEndpointsError as error:
            raise self._core.no_instance(method, error) from None

    def unary(self, key: Key, request: Any, timeout: float | None, extras: Extras, with_call: bool) -> Any:
        """One unary call (with its retries): the response, or ``(response, call)`` with ``with_call``."""
        core = self._core
        start = time.monotonic()
        end = core.end(start, timeout)
        core.policy.deposit()
        sub = self.pick(key[1], end)
        try:
            return _outcome(
                sub(invoker(key, request, core.left(core.first_end(start, end)), extras, with_call=with_call))
            )
        except grpc.RpcError as error:
            if core.engine.attempts == 1 or not core.retryable(error, end):
                raise
            first = error
        call = core.call(key[1], start, end)
        step = call.after_first(sub, first, time.monotonic())

        def run(attempt: Attempt) -> Any:
            left = core.left(attempt.deadline)
            return _outcome(attempt.endpoint(invoker(key, request, left, extras, with_call=with_call)))

        try:
            return drive(call, step, run, ready=core.route.publisher.wait_ready)
        except NoEndpointsError as error:
            raise core.no_instance(key[1], error) from None

    def started(self, key: Key, request: Any, timeout: float | None, extras: Extras, future: bool = False) -> Any:
        """A call that runs on after this returns (a stream, a future) on one instance: grpc's own call object."""
        core = self._core
        end = core.end(time.monotonic(), timeout)
        sub = self.pick(key[1], end)
        left = core.left(end)

        def invoke(sub: Any) -> Tracked:
            callable_ = sub.callable(key)
            start = callable_.future if future else callable_
            return Tracked(start(request, timeout=left, **extras))

        return sub(invoke).call

    def retrying_future(self, key: Key, request: Any, timeout: float | None, extras: Extras) -> RetryingFuture:
        return RetryingFuture(self._core, key, request, timeout, extras)

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close every sub-channel (and the publisher, when owned). Not from a callback grpc runs."""
        with self._lock:
            self._closing = True
        self._core.route.close()
        with self._lock:
            left = list(self._subs)
        for sub in left:
            self._shut(sub)

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<loadbalancer.grpc.Channel {self._service!r}: {len(self._subs)} instances, {self._state.name}>"


def _ignore(state: grpc.ChannelConnectivity) -> None:
    pass


def _extras(metadata: Any, credentials: Any, wait_for_ready: Any, compression: Any) -> Extras:
    return {
        "metadata": metadata,
        "credentials": credentials,
        "wait_for_ready": wait_for_ready,
        "compression": compression,
    }


class _UnaryUnary(_UnaryUnary_):
    def __init__(self, channel: Channel, key: Key) -> None:
        self._channel = channel
        self._key = key

    def __call__(
        self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None,
        wait_for_ready: bool | None = None, compression: Any = None,
    ) -> Any:  # fmt: skip
        extras = _extras(metadata, credentials, wait_for_ready, compression)
        return self._channel.unary(self._key, request, timeout, extras, False)

    def with_call(
        self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None,
        wait_for_ready: bool | None = None, compression: Any = None,
    ) -> Any:  # fmt: skip
        extras = _extras(metadata, credentials, wait_for_ready, compression)
        return self._channel.unary(self._key, request, timeout, extras, True)

    def future(
        self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None,
        wait_for_ready: bool | None = None, compression: Any = None,
    ) -> Any:  # fmt: skip
        extras = _extras(metadata, credentials, wait_for_ready, compression)
        return self._channel.retrying_future(self._key, request, timeout, extras)


class _UnaryStream(_UnaryStream_):
    def __init__(self, channel: Channel, key: Key) -> None:
        self._channel = channel
        self._key = key

    def __call__(
        self, request: Any, timeout: float | None = None, metadata: Any = None, credentials: Any = None,
        wait_for_ready: bool | None = None, compression: Any = None,
    ) -> Any:  # fmt: skip
        extras = _extras(metadata, credentials, wait_for_ready, compression)
        return self._channel.started(self._key, request, timeout, extras)


class _StreamUnary(_StreamUnary_):
    def __init__(self, channel: Channel, key: Key) -> None:
        self._channel = channel
        self._key = key

    def __call__(
        self, request_iterator: Iterator[Any], timeout: float | None = None, metadata: Any = None,
        credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None,
    ) -> Any:  # fmt: skip
        return self.with_call(request_iterator, timeout, metadata, credentials, wait_for_ready, compression)[0]

    def with_call(
        self, request_iterator: Iterator[Any], timeout: float | None = None, metadata: Any = None,
        credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None,
    ) -> Any:  # fmt: skip
        extras = _extras(metadata, credentials, wait_for_ready, compression)
        future = self._channel.started(self._key, request_iterator, timeout, extras, future=True)
        return future.result(), future

    def future(
        self, request_iterator: Iterator[Any], timeout: float | None = None, metadata: Any = None,
        credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None,
    ) -> Any:  # fmt: skip
        extras = _extras(metadata, credentials, wait_for_ready, compression)
        return self._channel.started(self._key, request_iterator, timeout, extras, future=True)


class _StreamStream(_StreamStream_):
    def __init__(self, channel: Channel, key: Key) -> None:
        self._channel = channel
        self._key = key

    def __call__(
        self, request_iterator: Iterator[Any], timeout: float | None = None, metadata: Any = None,
        credentials: Any = None, wait_for_ready: bool | None = None, compression: Any = None,
    ) -> Any:  # fmt: skip
        extras = _extras(metadata, credentials, wait_for_ready, compression)
        return self._channel.started(self._key, request_iterator, timeout, extras)
