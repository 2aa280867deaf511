"""``aio.Channel``: the ``grpc.aio`` twin of ``loadbalancer.grpc.Channel``.

Calls return call objects as grpc.aio's do (awaitable, with ``code()``, metadata,
``cancel()``); a unary call's is the toolkit's, running its retries and answering with the
final attempt's status and metadata; a stream's forwards to grpc's own call on the instance
it began on. Sub-channels are made on the event loop at their first use and closed there,
even when the publisher's updates arrive on another thread. ``interceptors`` go to every
sub-channel (grpc.aio has no ``intercept_channel``).
"""

from __future__ import annotations

import asyncio
import functools
import time
import traceback
from collections.abc import AsyncIterator, Callable, Collection, Generator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

from .._engine import Attempt, adrive
from .._httppolicy import RetryPolicy
from .._route import Balancing
from ..balancer import RoundRobin
from ..errors import AttemptTimeoutError, NoEndpointsError, NotReadyError
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
    resolve,
    service_of,
    when_done,
)
from ._errors import DeadlineExceededError, NoInstanceError, RpcError
from ._screen import LoopTasks, Screen, Watcher, connectivity_task

__all__ = ["Channel", "DeadlineExceededError", "NoInstanceError", "RpcError"]

_closing: set[asyncio.Future[Any]] = set()  # sub-channel closes running in the background


class _AioSub(Sub):
    """An instance's grpc.aio channel: made on the loop at first use, closed on that loop."""

    def __init__(
        self, instance: Instance, service: str, shut: Callable[[Sub], None], make: Callable[[str], grpc.aio.Channel]
    ) -> None:
        super().__init__(instance, service, shut)
        self._make = make
        self._channel: grpc.aio.Channel | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self.loop = asyncio.get_running_loop()
            self._channel = self._make(self.instance.address)
        return self._channel

    def callable(self, key: Key) -> Any:
        found = self.callables.get(key)
        if found is None:
            kind, method, serializer, deserializer, registered = key
            found = getattr(self.channel(), kind)(method, serializer, deserializer, _registered_method=registered)
            self.callables[key] = found
        return found

    async def __call__(self, invoke: Callable[[Any], Any]) -> Any:
        start = self.acquire()
        try:
            result = await invoke(self)
        except BaseException:
            self.release(start, False)
            raise
        if type(result) is Tracked:  # a stream: in flight until it is done
            when_done(result.call, lambda code: self.release(start, code not in FAILURE_CODES))
        else:
            self.release(start, True)
        return result

    def close_channel(self, grace: float | None = None) -> None:
        """Close the channel on its loop (``grace``: seconds its calls in flight may take)."""
        channel, loop = self._channel, self.loop
        if channel is None or loop is None or loop.is_closed():
            return  # never used, or its connections went with their loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            task = loop.create_task(channel.close(grace))
            _closing.add(task)  # held until done, so that it is not collected half way
            task.add_done_callback(_closing.discard)
        elif loop.is_running():
            asyncio.run_coroutine_threadsafe(channel.close(grace), loop)


class Channel(grpc.aio.Channel):
    """A ``grpc.aio.Channel`` over the instances a publisher (or target string) finds.

    The options are ``loadbalancer.grpc.Channel``'s (``balancer``, ``retries``,
    ``retry_codes``, ``timeout``, ``attempt_timeout``, ``health_check``, ``health_service``,
    ``credentials``, ``options``, ``eject``, ``wait``, ``budget``, ``own``, ``logger``), and
    ``interceptors``: grpc.aio client interceptors for every sub-channel (default ``()``).
    Make it on the event loop it serves; ``async with`` or ``await close()`` closes it.
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
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        eject: Any = False,
        wait: Any = None,
        budget: Any = True,
        own: bool = True,
        logger: Any = None,
    ) -> None:
        self._credentials = credentials
        self._options = tuple(options)
        self._interceptors = list(interceptors)
        self._subs: set[_AioSub] = set()
        self._loop = asyncio.get_running_loop()
        publisher, own = resolve(publisher, own)
        self._service = service_of(publisher)
        policy = engine_policy(retries, timeout, attempt_timeout, wait, budget)
        self._tasks = LoopTasks(self._loop)
        watchers: dict[str, Watcher] = {"connectivity": connectivity_task(self._tasks)}
        if health_check:
            from ._health import watch_task

            watchers["health"] = watch_task(health_service, logger, self._tasks)
        screen = functools.partial(Screen, watchers=watchers, logger=logger)
        self._core = Core(
            publisher, self._connect, balancer=balancer, policy=policy, retry_codes=retry_codes, eject=eject,
            screen=screen, own=own, logger=logger,
        )  # fmt: skip

    def _make(self, address: str) -> grpc.aio.Channel:
        interceptors = self._interceptors or None
        if self._credentials is not None:
            return grpc.aio.secure_channel(address, self._credentials, self._options, interceptors=interceptors)
        return grpc.aio.insecure_channel(address, self._options, interceptors=interceptors)

    def _connect(self, instance: Instance) -> _AioSub:
        sub = _AioSub(instance, self._service, self._shut, self._make)
        self._subs.add(sub)
        return sub

    def _shut(self, sub: Sub) -> None:
        assert isinstance(sub, _AioSub)
        if sub.closed:
            return
        sub.closed = True
        self._subs.discard(sub)
        sub.close_channel()

    # -- calls ----------------------------------------------------------------------------------

    def unary_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:  # fmt: skip
        """A unary method: each call picks an instance, retried on another for ``retry_codes`` (grpc's signature)."""
        key: Key = ("unary_unary", method, request_serializer, response_deserializer, bool(_registered_method))
        return _Callable(self, key)

    def unary_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:  # fmt: skip
        """A server-streaming method: each call stays on the instance it picked (grpc's signature)."""
        key: Key = ("unary_stream", method, request_serializer, response_deserializer, bool(_registered_method))
        return _Callable(self, key)

    def stream_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:  # fmt: skip
        """A client-streaming method: each call stays on the instance it picked (grpc's signature)."""
        key: Key = ("stream_unary", method, request_serializer, response_deserializer, bool(_registered_method))
        return _Callable(self, key)

    def stream_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
        _registered_method: bool | None = False,
    ) -> Any:  # fmt: skip
        """A bidirectional-streaming method: each call stays on the instance it picked (grpc's signature)."""
        key: Key = ("stream_stream", method, request_serializer, response_deserializer, bool(_registered_method))
        return _Callable(self, key)

    async def pick(self, method: str, end: float) -> Any:
        route = self._core.route
        try:
            try:
                return route.choose()
            except NotReadyError:
                await route.publisher.await_ready(self._core.left(end))
            return route.choose()
        except NoEndpointsError as error:
            raise self._core.no_instance(method, error) from None

    async def unary(self, key: Key, request: Any, limit: float | None, extras: Extras, box: list[Any]) -> Any:
        """One unary call with its retries; ``box`` receives each attempt's grpc call (the last one ends it)."""
        core = self._core
        start = time.monotonic()
        end = core.end(start, limit)
        core.policy.deposit()
        sub = await self.pick(key[1], end)
        try:
            return await _attempt(sub, _invoker(key, request, core.left(core.first_end(start, end)), extras, box))
        except grpc.RpcError as error:
            if core.engine.attempts == 1 or not core.retryable(error, end):
                raise
            first = error
        call = core.call(key[1], start, end)
        step = call.after_first(sub, first, time.monotonic())

        def run(attempt: Attempt) -> Any:
            return _attempt(attempt.endpoint, _invoker(key, request, core.left(attempt.deadline), extras, box))

        try:
            return await adrive(call, step, run, ready=core.route.publisher.await_ready)
        except NoEndpointsError as error:
            raise core.no_instance(key[1], error) from None
        except AttemptTimeoutError as error:
            raise core.deadline_error(key[1], [error]) from error
        finally:
            # The failed attempts' tracebacks hold their frames, and these the grpc calls, in
            # cycles: freed by the collector at any later time, on whatever loop runs then,
            # grpc's calls would reach for their own loop, closed by then. Broken here.
            for failure in call.errors:
                traceback.clear_frames(failure.__traceback__)
            del first, call, step

    async def started(self, key: Key, request: Any, limit: float | None, extras: Extras) -> Any:
        """A call on one instance, not retried (a stream): grpc's own call object."""
        core = self._core
        end = core.end(time.monotonic(), limit)
        sub = await self.pick(key[1], end)
        left = core.left(end)

        async def invoke(sub: Any) -> Tracked:
            callable_ = sub.callable(key)
            if request is None:  # a client stream written with call.write()
                return Tracked(callable_(timeout=left, **extras))
            return Tracked(callable_(request, timeout=left, **extras))

        return (await sub(invoke)).call

    # -- the rest of grpc.aio.Channel -----------------------------------------------------------

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """The best state of the sub-channels (READY if any is; IDLE with none)."""
        from ._channel import combined

        return combined([sub.channel().get_state(try_to_connect) for sub in list(self._subs)])

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        """Return once ``get_state()`` differs from ``last_observed_state``."""
        while self.get_state() == last_observed_state:
            channels = [sub.channel() for sub in list(self._subs)]
            waits = [asyncio.ensure_future(c.wait_for_state_change(c.get_state())) for c in channels]
            # a sub-channel's change, or a look again at the set, which changes without an event here
            await asyncio.wait(waits or [asyncio.ensure_future(asyncio.sleep(0.1))], timeout=0.1)
            for wait in waits:
                wait.cancel()

    async def channel_ready(self) -> None:
        """Return once a sub-channel is READY (connecting them as need be)."""
        state = self.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            await self.wait_for_state_change(state)
            state = self.get_state(try_to_connect=True)

    async def close(self, grace: float | None = None) -> None:
        """Close every sub-channel (and the publisher, when owned)."""
        await self._core.route.aclose()
        loop = asyncio.get_running_loop()
        for sub in list(self._subs):
            sub.closed = True
            self._subs.discard(sub)
            sub.close_channel(grace)
        mine = [task for task in _closing if task.get_loop() is loop]
        await asyncio.gather(*mine, return_exceptions=True)  # the closes begun by the route's and here
        await self._tasks.aclose()

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<loadbalancer.grpc.aio.Channel {self._service!r}: {len(self._subs)} instances>"


def _invoker(key: Key, request: Any, timeout: float | None, extras: Extras, box: list[Any]) -> Callable[[Any], Any]:
    """What an attempt does on a sub-channel: the call (kept in ``box``), an application's status as ``Refused``."""

    async def invoke(sub: Any) -> Any:
        call = sub.callable(key)(request, timeout=timeout, **extras)
        box.append(call)
        try:
            return await call
        except grpc.RpcError as error:
            if error.code() in FAILURE_CODES:
                raise
            return Refused(error)

    return invoke


async def _attempt(endpoint: Any, invoke: Callable[[Any], Any]) -> Any:
    """One attempt through the endpoint (a sub-channel, or its tracker): the response, or the status raised."""
    result = await endpoint(invoke)
    if type(result) is Refused:
        raise result.error
    return result


def _extras(metadata: Any, credentials: Any, wait_for_ready: Any, compression: Any) -> Extras:
    return {
        "metadata": metadata, "credentials": credentials, "wait_for_ready": wait_for_ready, "compression": compression
    }  # fmt: skip


class _Callable:
    """A method of the channel: calling it starts a call and returns its call object at once, as grpc.aio's do."""

    def __init__(self, channel: Channel, key: Key) -> None:
        self._channel = channel
        self._key = key

    def __call__(
        self, request: Any = None, *, timeout: float | None = None, metadata: Any = None, credentials: Any = None,
        wait_for_ready: bool | None = None, compression: Any = None,
    ) -> Any:  # fmt: skip
        extras = _extras(metadata, credentials, wait_for_ready, compression)
        kind = self._key[0]
        if kind == "unary_unary":
            return _UnaryCall(self._channel, self._key, request, timeout, extras)
        started = asyncio.get_running_loop().create_task(self._channel.started(self._key, request, timeout, extras))
        return _KINDS[kind](started)


class _Retrying:
    """A unary call running its attempts; its status and metadata are those of the attempt that ended it."""

    def __init__(self, channel: Channel, key: Key, request: Any, timeout: float | None, extras: Extras) -> None:
        self._box: list[Any] = []
        self._task = asyncio.get_running_loop().create_task(channel.unary(key, request, timeout, extras, self._box))
        self._end = time.monotonic() + timeout if timeout is not None else None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._task.__await__()

    async def _last(self) -> Any:
        await asyncio.wait((self._task,))
        error = None if self._task.cancelled() else self._task.exception()
        if isinstance(error, RpcError) or not self._box:
            return _Ended(error)
        return self._box[-1]

    async def code(self) -> grpc.StatusCode:
        return await (await self._last()).code()  # type: ignore[no-any-return]

    async def details(self) -> str:
        return await (await self._last()).details()  # type: ignore[no-any-return]

    async def initial_metadata(self) -> Any:
        return await (await self._last()).initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await (await self._last()).trailing_metadata()

    async def wait_for_connection(self) -> None:
        if self._box:
            await self._box[-1].wait_for_connection()
        else:  # not sent yet (waiting for an instance): its end is when it is known
            await asyncio.wait((self._task,))

    def cancel(self) -> bool:
        return self._task.cancel()

    def cancelled(self) -> bool:
        return self._task.cancelled()

    def done(self) -> bool:
        return self._task.done()

    def time_remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - time.monotonic())

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._task.add_done_callback(lambda _: callback(self))


class _Ended:
    """The status of a call that the toolkit ended (no instance, deadline), or that was cancelled."""

    def __init__(self, error: BaseException | None) -> None:
        self._error = error

    async def code(self) -> grpc.StatusCode:
        return self._error.code() if isinstance(self._error, RpcError) else grpc.StatusCode.CANCELLED

    async def details(self) -> str:
        return self._error.details() if isinstance(self._error, RpcError) else "cancelled"

    async def initial_metadata(self) -> Any:
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> Any:
        return grpc.aio.Metadata()


class _Deferred:
    """A stream: grpc's own call on one instance, once picked (after the publisher's first answer)."""

    def __init__(self, started: asyncio.Task[Any]) -> None:
        self._started = started

    async def _call(self) -> Any:
        return await self._started

    def __await__(self) -> Generator[Any, None, Any]:  # a client stream's single answer
        return self._answer().__await__()

    async def _answer(self) -> Any:
        return await (await self._started)

    async def _responses(self) -> AsyncIterator[Any]:
        async for response in await self._started:
            yield response

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses()

    async def read(self) -> Any:
        return await (await self._started).read()

    async def write(self, request: Any) -> None:
        await (await self._started).write(request)

    async def done_writing(self) -> None:
        await (await self._started).done_writing()

    async def code(self) -> grpc.StatusCode:
        return await (await self._started).code()  # type: ignore[no-any-return]

    async def details(self) -> str:
        return await (await self._started).details()  # type: ignore[no-any-return]

    async def initial_metadata(self) -> Any:
        return await (await self._started).initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await (await self._started).trailing_metadata()

    async def wait_for_connection(self) -> None:
        await (await self._started).wait_for_connection()

    def cancel(self) -> bool:
        if not self._started.done():
            return self._started.cancel()
        if self._started.cancelled() or self._started.exception() is not None:
            return False
        return bool(self._started.result().cancel())

    def cancelled(self) -> bool:
        if not self._started.done():
            return False
        if self._started.cancelled():
            return True
        return self._started.exception() is None and bool(self._started.result().cancelled())

    def done(self) -> bool:
        if not self._started.done():
            return False
        return self._started.cancelled() or self._started.exception() is not None or self._started.result().done()

    def time_remaining(self) -> float | None:
        if self._started.done() and not self._started.cancelled() and self._started.exception() is None:
            return self._started.result().time_remaining()  # type: ignore[no-any-return]
        return None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        def started(task: asyncio.Task[Any]) -> None:
            if task.cancelled() or task.exception() is not None:
                callback(self)
            else:
                task.result().add_done_callback(lambda _: callback(self))

        self._started.add_done_callback(started)


if TYPE_CHECKING:  # generic in the type stubs only
    _UnaryUnaryBase = grpc.aio.UnaryUnaryCall[Any, Any]
    _UnaryStreamBase = grpc.aio.UnaryStreamCall[Any, Any]
    _StreamUnaryBase = grpc.aio.StreamUnaryCall[Any, Any]
    _StreamStreamBase = grpc.aio.StreamStreamCall[Any, Any]
else:
    _UnaryUnaryBase = grpc.aio.UnaryUnaryCall
    _UnaryStreamBase = grpc.aio.UnaryStreamCall
    _StreamUnaryBase = grpc.aio.StreamUnaryCall
    _StreamStreamBase = grpc.aio.StreamStreamCall


class _UnaryCall(_Retrying, _UnaryUnaryBase):
    pass


class _UnaryStreamCall(_Deferred, _UnaryStreamBase):
    pass


class _StreamUnaryCall(_Deferred, _StreamUnaryBase):
    pass


class _StreamStreamCall(_Deferred, _StreamStreamBase):
    pass


_KINDS: dict[str, Callable[[asyncio.Task[Any]], Any]] = {
    "unary_stream": _UnaryStreamCall,
    "stream_unary": _StreamUnaryCall,
    "stream_stream": _StreamStreamCall,
}
