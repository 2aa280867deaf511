"""``loadbalancer.grpc.aio.Channel`` against real grpcio servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import grpc.aio
import pytest

from loadbalancer import NoEndpointsError, PeakEwma, memory, static
from loadbalancer import grpc as lbgrpc
from tests.grpc_fixtures import EchoServer
from tests.helpers import aeventually

UNARY = "/test.Echo/Unary"


@pytest.fixture
def servers() -> Iterator[list[EchoServer]]:
    started = [EchoServer().start() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


def port_of(answer: bytes) -> int:
    return int(answer.rpartition(b"@")[2])


def channel(servers: list[EchoServer], **options: Any) -> lbgrpc.aio.Channel:
    return lbgrpc.aio.Channel(static.Publisher([s.address for s in servers]), **options)


async def test_calls_spread_and_return_call_objects_with_status_and_metadata(servers: list[EchoServer]) -> None:
    async with channel(servers) as ch:
        assert isinstance(ch, grpc.aio.Channel)
        unary = ch.unary_unary(UNARY)
        ports = collections.Counter([port_of(await unary(b"x")) for _ in range(30)])
        assert ports == {s.port: 10 for s in servers}
        call = unary(b"m", metadata=(("x-test", "42"),), timeout=5)
        assert isinstance(call, grpc.aio.UnaryUnaryCall)
        assert (await call).startswith(b"m@")
        assert await call.code() is grpc.StatusCode.OK and call.done()
        assert ("x-test", "42") in list(await call.trailing_metadata())


async def test_unavailable_is_retried_and_other_statuses_raised_once(servers: list[EchoServer]) -> None:
    servers[0].mode = "unavailable"
    async with channel(servers, retries=2) as ch:
        unary = ch.unary_unary(UNARY)
        answers = [await unary(b"x") for _ in range(12)]
        assert servers[0].port not in {port_of(a) for a in answers}
        for server in servers:
            server.mode, server.calls = "not_found", 0
        call = unary(b"n")
        with pytest.raises(grpc.RpcError) as raised:
            await call
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND
        assert await call.code() is grpc.StatusCode.NOT_FOUND and "nothing at" in await call.details()
        assert sum(s.calls for s in servers) == 1


async def test_no_failed_call_while_a_server_stops_mid_run(servers: list[EchoServer]) -> None:
    failures: list[BaseException] = []
    answered = collections.Counter[int]()
    async with channel(servers, retries=2, timeout=10) as ch:
        unary = ch.unary_unary(UNARY)

        async def caller() -> None:
            for _ in range(100):
                try:
                    answered[port_of(await unary(b"x"))] += 1
                except Exception as error:
                    failures.append(error)

        tasks = [asyncio.create_task(caller()) for _ in range(8)]
        await aeventually(lambda: sum(answered.values()) >= 100, timeout=30)
        await asyncio.to_thread(servers[1].stop, 2.0)  # its calls in flight finish, as in a deploy
        await asyncio.gather(*tasks)
    assert failures == [] and sum(answered.values()) == 800


async def test_the_deadline_bounds_the_call_and_no_attempt_starts_past_it(servers: list[EchoServer]) -> None:
    for server in servers:
        server.mode, server.delay = "slow", 0.6
    async with channel(servers, retries=5, attempt_timeout=0.15, timeout=0.4) as ch:
        with pytest.raises(grpc.RpcError) as raised:
            await ch.unary_unary(UNARY)(b"x")
        calls = sum(s.calls for s in servers)
        await asyncio.sleep(0.5)
        assert sum(s.calls for s in servers) == calls, "an attempt started after the call's deadline"
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert 2 <= calls <= 3


async def test_cancelling_a_call_cancels_its_attempt(servers: list[EchoServer]) -> None:
    servers[0].mode, servers[0].delay = "slow", 2.0
    async with channel(servers[:1]) as ch:
        call = ch.unary_unary(UNARY)(b"x")
        await asyncio.sleep(0.2)
        assert call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert call.cancelled() and await call.code() is grpc.StatusCode.CANCELLED


async def test_no_instance_is_an_rpc_error_and_the_toolkits() -> None:
    async with lbgrpc.aio.Channel(static.Publisher([])) as ch:
        call = ch.unary_unary(UNARY)(b"x")
        with pytest.raises(lbgrpc.NoInstanceError) as raised:
            await call
        assert isinstance(raised.value, grpc.RpcError) and isinstance(raised.value, NoEndpointsError)
        assert await call.code() is grpc.StatusCode.UNAVAILABLE


async def test_streams_stay_on_their_instance(servers: list[EchoServer]) -> None:
    async with channel(servers) as ch:
        call = ch.unary_stream("/test.Echo/Stream")(b"s")
        answers = [a async for a in call]
        assert len(answers) == 3 and len({port_of(a) for a in answers}) == 1
        assert await call.code() is grpc.StatusCode.OK
        assert (await ch.stream_unary("/test.Echo/Collect")(iter([b"a", b"b"]))).startswith(b"a+b@")
        chat = ch.stream_stream("/test.Echo/Chat")()
        await chat.write(b"one")
        first = await chat.read()
        await chat.write(b"two")
        await chat.done_writing()
        second = await chat.read()
        assert await chat.read() is grpc.aio.EOF
        assert first.startswith(b"one@") and port_of(second) == port_of(first)


async def test_interceptors_go_to_every_sub_channel(servers: list[EchoServer]) -> None:
    class Tag(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            metadata = grpc.aio.Metadata(*(details.metadata or ()), ("x-test", "intercepted"))
            return await continuation(details._replace(metadata=metadata), request)

    async with channel(servers, interceptors=[Tag()]) as ch:
        for _ in range(3):
            call = ch.unary_unary(UNARY)(b"i")
            await call
            assert ("x-test", "intercepted") in list(await call.trailing_metadata())
        await asyncio.wait_for(ch.channel_ready(), 10)
        assert ch.get_state() is grpc.ChannelConnectivity.READY


async def test_sub_channels_are_made_and_closed_on_the_loop_when_updates_come_from_another_thread(
    servers: list[EchoServer],
) -> None:
    loop = asyncio.get_running_loop()
    with memory.Registry() as registry:
        registry.register("echo", servers[0].address)
        async with lbgrpc.aio.Channel(registry.watch("echo")) as ch:
            unary = ch.unary_unary(UNARY)
            assert port_of(await unary(b"x")) == servers[0].port
            (first,) = ch._subs
            # from a thread of the application's, not the loop's
            await asyncio.to_thread(registry.register, "echo", servers[1].address)
            await aeventually(lambda: len(ch._subs) == 2)
            await asyncio.to_thread(registry.deregister, "echo", servers[0].address)
            await aeventually(lambda: first.closed)
            assert first.loop is loop and threading.current_thread() is threading.main_thread()
            await aeventually(lambda: first._channel.get_state() is grpc.ChannelConnectivity.SHUTDOWN)
            assert {port_of(await unary(b"y")) for _ in range(4)} == {servers[1].port}


async def test_health_not_serving_and_back(servers: list[EchoServer]) -> None:
    async with channel(servers, health_check=True) as ch:
        unary = ch.unary_unary(UNARY)

        async def ports(n: int) -> set[int]:
            return {port_of(await unary(b"x")) for _ in range(n)}

        await aeventually(lambda: len(ch._subs) == 3)
        await asyncio.sleep(0.1)  # the watches open
        servers[2].serving(False)
        for _ in range(100):
            if servers[2].port not in await ports(6):
                break
            await asyncio.sleep(0.05)
        assert servers[2].port not in await ports(12)
        servers[2].serving(True)
        for _ in range(100):
            if servers[2].port in await ports(6):
                break
            await asyncio.sleep(0.05)
        assert servers[2].port in await ports(6)


async def test_peak_ewma_sees_the_slow_instance(servers: list[EchoServer]) -> None:
    servers[0].mode, servers[0].delay = "slow", 0.05
    async with channel(servers, balancer=PeakEwma) as ch:
        unary = ch.unary_unary(UNARY)
        ports = collections.Counter([port_of(await unary(b"x")) for _ in range(150)])
    assert ports[servers[0].port] < 25


async def test_a_target_string_and_a_stub_style_call(servers: list[EchoServer]) -> None:
    target = "static:///" + ",".join(s.address for s in servers)
    async with lbgrpc.aio.Channel(target) as ch:
        method = ch.unary_unary(UNARY, request_serializer=None, response_deserializer=None, _registered_method=True)
        assert {port_of(await method(b"t")) for _ in range(6)} == {s.port for s in servers}
