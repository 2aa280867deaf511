"""``loadbalancer.grpc.Channel`` against real grpcio servers on 127.0.0.1 (the aio twin: test_grpc_aio.py)."""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from loadbalancer import NoEndpointsError, PeakEwma, RetryTimeoutError, memory, static
from loadbalancer import grpc as lbgrpc
from tests.grpc_fixtures import EchoServer
from tests.helpers import events, eventually

UNARY = "/test.Echo/Unary"


@pytest.fixture
def servers() -> Iterator[list[EchoServer]]:
    started = [EchoServer().start() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


def port_of(answer: bytes) -> int:
    return int(answer.rpartition(b"@")[2])


def channel(servers: list[EchoServer], **options: Any) -> lbgrpc.Channel:
    return lbgrpc.Channel(static.Publisher([s.address for s in servers]), **options)


def test_calls_spread_over_every_instance_and_metadata_passes_both_ways(servers: list[EchoServer]) -> None:
    with channel(servers) as ch:
        assert isinstance(ch, grpc.Channel)
        unary = ch.unary_unary(UNARY)
        ports = collections.Counter(port_of(unary(b"x")) for _ in range(30))
        assert ports == {s.port: 10 for s in servers}
        answer, call = unary.with_call(b"m", metadata=(("x-test", "42"),), timeout=5)
        assert answer.startswith(b"m@") and call.code() is grpc.StatusCode.OK
        assert ("x-test", "42") in [(m.key, m.value) for m in call.trailing_metadata()]
        # grpc's own signature, positionally and by keyword, _registered_method included
        same = ch.unary_unary(UNARY, None, None, True)
        assert port_of(same(b"y", 5)) in {s.port for s in servers}
        keyword = ch.unary_unary(
            method=UNARY, request_serializer=None, response_deserializer=None, _registered_method=False
        )
        assert port_of(keyword(request=b"z", timeout=5)) in {s.port for s in servers}


def test_a_target_string_names_the_instances(servers: list[EchoServer]) -> None:
    target = "static:///" + ",".join(s.address for s in servers)
    with lbgrpc.Channel(target) as ch:
        ports = {port_of(ch.unary_unary(UNARY)(b"t")) for _ in range(6)}
    assert ports == {s.port for s in servers}


def test_unavailable_is_retried_on_another_instance(servers: list[EchoServer]) -> None:
    servers[0].mode = "unavailable"
    with channel(servers, retries=2) as ch:
        answers = [ch.unary_unary(UNARY)(b"x") for _ in range(12)]
    assert servers[0].port not in {port_of(a) for a in answers}
    assert 1 <= servers[0].calls <= 12


def test_retries_end_with_the_last_status_after_every_attempt(servers: list[EchoServer]) -> None:
    for server in servers:
        server.mode = "unavailable"
    with channel(servers, retries=2) as ch, pytest.raises(grpc.RpcError) as raised:
        ch.unary_unary(UNARY)(b"x")
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert sorted(s.calls for s in servers) == [1, 1, 1]  # three attempts, each on an instance not tried


def test_retries_zero_means_one_attempt(servers: list[EchoServer]) -> None:
    servers[0].mode = "unavailable"
    with channel(servers[:1], retries=0) as ch, pytest.raises(grpc.RpcError):
        ch.unary_unary(UNARY)(b"x")
    assert servers[0].calls == 1


def test_a_status_not_retried_is_raised_at_once(servers: list[EchoServer]) -> None:
    for server in servers:
        server.mode = "not_found"
    with channel(servers, retries=2) as ch, pytest.raises(grpc.RpcError) as raised:
        ch.unary_unary(UNARY)(b"x")
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert "nothing at" in raised.value.details()
    assert sum(s.calls for s in servers) == 1


def test_no_failed_call_while_a_server_stops_mid_run(servers: list[EchoServer]) -> None:
    failures: list[BaseException] = []
    done = collections.Counter[int]()
    stop = threading.Event()

    with channel(servers, retries=2, timeout=10) as ch:
        unary = ch.unary_unary(UNARY)

        def caller() -> None:
            while not stop.is_set():
                try:
                    done[port_of(unary(b"x"))] += 1
                except Exception as error:
                    failures.append(error)

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for thread in threads:
            thread.start()
        eventually(lambda: sum(done.values()) >= 200, timeout=30)
        servers[1].stop()  # at once: its calls in flight end CANCELLED, retried as UNAVAILABLE is
        before = done[servers[1].port]
        eventually(lambda: sum(done.values()) >= 800, timeout=60)
        stop.set()
        for thread in threads:
            thread.join(30)
    assert failures == []
    assert done[servers[1].port] <= before + 4  # at most the calls already in flight on it


def test_the_deadline_bounds_the_call_and_no_attempt_starts_past_it(servers: list[EchoServer]) -> None:
    for server in servers:
        server.mode, server.delay = "slow", 0.6
    with channel(servers, retries=5, attempt_timeout=0.15, timeout=0.4) as ch:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            ch.unary_unary(UNARY)(b"x")
        took = time.monotonic() - started
        calls = sum(s.calls for s in servers)
        time.sleep(0.5)
        assert sum(s.calls for s in servers) == calls, "an attempt started after the call's deadline"
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert 2 <= calls <= 3  # attempts of 0.15 s each (and the waits between them) within 0.4 s
    assert took < 5  # a hang guard, not a timing


def test_a_calls_own_timeout_applies_within_the_channels(servers: list[EchoServer]) -> None:
    servers[0].mode, servers[0].delay = "slow", 1.0
    with channel(servers[:1], retries=0, timeout=30) as ch, pytest.raises(grpc.RpcError) as raised:
        ch.unary_unary(UNARY)(b"x", timeout=0.2)
    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


def test_no_instance_is_an_rpc_error_and_the_toolkits() -> None:
    with lbgrpc.Channel(static.Publisher([])) as ch, pytest.raises(lbgrpc.NoInstanceError) as raised:
        ch.unary_unary(UNARY)(b"x")
    error = raised.value
    assert isinstance(error, grpc.RpcError) and isinstance(error, NoEndpointsError)
    assert error.code() is grpc.StatusCode.UNAVAILABLE and UNARY in error.details()


def test_deadline_spent_between_attempts_is_deadline_exceeded_with_every_attempt(servers: list[EchoServer]) -> None:
    for server in servers:
        server.mode = "unavailable"
    wait = lambda state: 1.0  # noqa: E731 - a retry wait longer than what is left of the deadline
    with (
        channel(servers, retries=3, timeout=0.5, wait=wait) as ch,
        pytest.raises(lbgrpc.DeadlineExceededError) as raised,
    ):
        ch.unary_unary(UNARY)(b"x")
    assert isinstance(raised.value, RetryTimeoutError) and raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(raised.value.errors) == 1 and sum(s.calls for s in servers) == 1


def test_streams_stay_on_the_instance_they_began_on(servers: list[EchoServer]) -> None:
    with channel(servers) as ch:
        for _ in range(3):
            answers = list(ch.unary_stream("/test.Echo/Stream")(b"s", timeout=5))
            assert len(answers) == 3 and len({port_of(a) for a in answers}) == 1
        chat = list(ch.stream_stream("/test.Echo/Chat")(iter([b"a", b"b", b"c"])))
        assert [a.partition(b"@")[0] for a in chat] == [b"a", b"b", b"c"] and len({port_of(a) for a in chat}) == 1
        assert ch.stream_unary("/test.Echo/Collect")(iter([b"a", b"b"])).startswith(b"a+b@")
        answer, call = ch.stream_unary("/test.Echo/Collect").with_call(iter([b"c"]))
        assert answer.startswith(b"c@") and call.code() is grpc.StatusCode.OK
        assert ch.stream_unary("/test.Echo/Collect").future(iter([b"d"])).result(5).startswith(b"d@")


def test_a_future_is_retried_and_answers_with_the_final_attempts_call(servers: list[EchoServer]) -> None:
    servers[0].mode = "unavailable"
    with channel(servers, retries=2) as ch:
        futures = [ch.unary_unary(UNARY).future(b"f", metadata=(("x-test", "7"),)) for _ in range(6)]
        answers = [f.result(10) for f in futures]
        assert servers[0].port not in {port_of(a) for a in answers}
        assert all(f.code() is grpc.StatusCode.OK and f.done() and not f.cancelled() for f in futures)
        assert ("x-test", "7") in [(m.key, m.value) for m in futures[0].trailing_metadata()]
        seen: list[Any] = []
        futures[0].add_done_callback(seen.append)
        assert seen == [futures[0]]
        for server in servers:
            server.mode, server.delay = "slow", 2.0
        slow = ch.unary_unary(UNARY).future(b"s")
        assert slow.cancel() and slow.cancelled()
        with pytest.raises(grpc.FutureCancelledError):
            slow.result(5)
        for server in servers:
            server.mode = "not_found"
        failed = ch.unary_unary(UNARY).future(b"n")
        assert failed.exception(5) is not None and failed.code() is grpc.StatusCode.NOT_FOUND


def test_interceptors_over_the_channel_and_channel_ready_future(servers: list[EchoServer]) -> None:
    class Tag(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            details = details._replace(metadata=[*(details.metadata or ()), ("x-test", "intercepted")])
            return continuation(details, request)

    with channel(servers) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        intercepted = grpc.intercept_channel(ch, Tag())
        answer, call = intercepted.unary_unary(UNARY).with_call(b"i")
        assert answer.startswith(b"i@")
        assert ("x-test", "intercepted") in [(m.key, m.value) for m in call.trailing_metadata()]
        assert intercepted.unary_unary(UNARY)(b"j").startswith(b"j@")


def test_connectivity_is_the_best_of_the_sub_channels(servers: list[EchoServer]) -> None:
    states: list[grpc.ChannelConnectivity] = []
    with channel(servers) as ch:
        ch.subscribe(states.append, try_to_connect=True)
        eventually(lambda: states[-1] is grpc.ChannelConnectivity.READY, timeout=10)
        for server in servers:
            server.stop()
        eventually(lambda: states[-1] is not grpc.ChannelConnectivity.READY, timeout=20)
        ch.unsubscribe(states.append)


def test_membership_changes_make_and_close_sub_channels(servers: list[EchoServer]) -> None:
    with memory.Registry() as registry:
        for server in servers[:2]:
            registry.register("echo", server.address)
        publisher = registry.watch("echo")
        with lbgrpc.Channel(publisher) as ch:
            unary = ch.unary_unary(UNARY)
            eventually(lambda: {port_of(unary(b"x")) for _ in range(4)} == {servers[0].port, servers[1].port})
            first = {sub.instance.address: sub for sub in ch._subs}
            registry.register("echo", servers[2].address)
            eventually(lambda: len(ch._subs) == 3)
            registry.deregister("echo", servers[0].address)
            eventually(lambda: first[servers[0].address].closed)
            assert servers[0].port not in {port_of(unary(b"y")) for _ in range(9)}
            assert not first[servers[1].address].closed  # an unchanged instance keeps its sub-channel
        assert all(sub.closed for sub in first.values())


def test_calls_from_many_threads_while_the_set_changes(servers: list[EchoServer]) -> None:
    failures: list[BaseException] = []
    answered = collections.Counter[int]()
    with memory.Registry() as registry:
        registry.register("echo", servers[0].address)
        with lbgrpc.Channel(registry.watch("echo"), retries=2, timeout=10) as ch:
            unary = ch.unary_unary(UNARY)

            def caller() -> None:
                for _ in range(150):
                    try:
                        answered[port_of(unary(b"c"))] += 1
                    except Exception as error:
                        failures.append(error)

            threads = [threading.Thread(target=caller) for _ in range(6)]
            for thread in threads:
                thread.start()
            for n in range(20):
                server = servers[1 + n % 2]
                registry.register("echo", server.address)
                time.sleep(0.01)
                registry.deregister("echo", server.address)
            for thread in threads:
                thread.join(60)
    assert failures == [] and sum(answered.values()) == 900


def test_health_not_serving_takes_an_instance_out_and_serving_back_in(servers: list[EchoServer]) -> None:
    with channel(servers, health_check=True) as ch:
        unary = ch.unary_unary(UNARY)
        servers[0].serving(False)
        eventually(lambda: servers[0].port not in {port_of(unary(b"x")) for _ in range(6)}, timeout=10)
        calls = servers[0].calls
        assert servers[0].port not in {port_of(unary(b"x")) for _ in range(12)}
        assert servers[0].calls == calls
        servers[0].serving(True)
        eventually(lambda: servers[0].port in {port_of(unary(b"x")) for _ in range(6)}, timeout=10)


def test_health_of_a_named_service_and_all_not_serving_is_no_instance(servers: list[EchoServer]) -> None:
    for server in servers:
        server.serving(True, "echo")
    with channel(servers, health_check=True, health_service="echo", retries=0) as ch:
        unary = ch.unary_unary(UNARY)
        eventually(lambda: len({port_of(unary(b"x")) for _ in range(6)}) == 3, timeout=10)
        for server in servers:
            server.serving(False, "echo")

        def refused() -> bool:
            try:
                unary(b"x")
            except lbgrpc.NoInstanceError:
                return True
            return False

        eventually(refused, timeout=10)


def test_a_server_without_the_health_service_counts_as_healthy_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with (
        EchoServer(with_health=False) as bare,
        lbgrpc.Channel(static.Publisher([bare.address]), health_check=True) as ch,
    ):
        eventually(lambda: events(caplog, "health_service_unimplemented"), timeout=10)
        assert port_of(ch.unary_unary(UNARY)(b"x")) == bare.port
    (warned,) = events(caplog, "health_service_unimplemented")
    assert warned.levelno == logging.WARNING and bare.address in warned.getMessage()


def test_peak_ewma_learns_that_an_instance_is_slow(servers: list[EchoServer]) -> None:
    servers[0].mode, servers[0].delay = "slow", 0.05
    with channel(servers, balancer=PeakEwma) as ch:
        unary = ch.unary_unary(UNARY)
        ports = collections.Counter(port_of(unary(b"x")) for _ in range(150))
    assert ports[servers[0].port] < 25  # a third would be 50


def test_application_statuses_are_not_the_instances_failures(servers: list[EchoServer]) -> None:
    servers[0].mode = "not_found"
    with channel(servers, eject={"consecutive_failures": 2}, retries=0) as ch:
        unary = ch.unary_unary(UNARY)
        codes = collections.Counter[Any]()
        for _ in range(12):
            try:
                unary(b"x")
            except grpc.RpcError as error:
                codes[error.code()] += 1
        assert codes == {grpc.StatusCode.NOT_FOUND: 4}
        assert ch._core.route.detector is not None and ch._core.route.detector.excluded() == {}
        servers[0].mode = "unavailable"
        for _ in range(9):
            try:
                unary(b"x")
            except grpc.RpcError:
                pass
        eventually(lambda: servers[0].address in ch._core.route.detector.excluded(), timeout=5)


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(TypeError, match="Publisher"):
        lbgrpc.Channel(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retries"):
        lbgrpc.Channel(static.Publisher([]), retries=-1)
    with pytest.raises(ValueError, match="retry_codes"):
        lbgrpc.Channel(static.Publisher([]), retry_codes=[grpc.StatusCode.OK])


def test_generated_stubs_work_unchanged(tmp_path: Path, servers: list[EchoServer]) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    (tmp_path / "echo.proto").write_text(
        'syntax = "proto3";\npackage test;\n'
        "message Text { string text = 1; }\n"
        "service Greeter { rpc Hello (Text) returns (Text); }\n"
    )
    assert (
        protoc.main(
            ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}", "echo.proto"]
        )
        == 0
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import echo_pb2
        import echo_pb2_grpc
    finally:
        sys.path.remove(str(tmp_path))

    class Greeter(echo_pb2_grpc.GreeterServicer):  # type: ignore[misc]
        def Hello(self, request: Any, context: Any) -> Any:
            return echo_pb2.Text(text=f"hello {request.text}")

    server = grpc.server(__import__("concurrent.futures").futures.ThreadPoolExecutor(4))
    echo_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with lbgrpc.Channel(static.Publisher([f"127.0.0.1:{port}"])) as ch:
            assert echo_pb2_grpc.GreeterStub(ch).Hello(echo_pb2.Text(text="stub"), timeout=5).text == "hello stub"
    finally:
        server.stop(0)


def test_a_stopped_server_is_left_out_until_it_is_back(servers: list[EchoServer]) -> None:
    with channel(servers, retries=2) as ch:
        unary = ch.unary_unary(UNARY)
        assert {port_of(unary(b"x")) for _ in range(6)} == {s.port for s in servers}
        servers[0].stop()
        for _ in range(6):
            unary(b"x")  # the first to reach it fail over, and its sub-channel goes TRANSIENT_FAILURE
        eventually(lambda: servers[0].address in ch._core.route.screen.excluded(), timeout=10)
        restarted = EchoServer(servers[0].port).start()
        try:
            eventually(lambda: restarted.port in {port_of(unary(b"y")) for _ in range(6)}, timeout=30)
        finally:
            restarted.stop()


def test_the_readmes_grpc_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parent.parent / "docs" / "grpc.md").read_text()
    section = readme[readme.index("# gRPC: `loadbalancer.grpc`") :]
    block = section[section.index("```python\n") + len("```python\n") : section.index("```\n")]
    exec(compile(block, "README.md (gRPC)", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.splitlines() == ["3 False"]


def test_each_attempt_is_recorded_for_metrics(servers: list[EchoServer]) -> None:
    from loadbalancer import metrics as lbmetrics

    lbmetrics.enable()
    try:
        servers[0].mode = "unavailable"
        publisher = static.Publisher([s.address for s in servers[:2]], service="echo")
        with lbgrpc.Channel(publisher, retries=1) as ch:
            for _ in range(10):
                ch.unary_unary(UNARY)(b"x")
            figures = {  # read while the instances are in a current set (only those are reported)
                (dict(row.labels)["instance"], dict(row.labels)["outcome"]): row.value
                for row in lbmetrics.rows()
                if dict(row.labels).get("service") == "echo" and row.name == "loadbalancer_requests"
            }
    finally:
        lbmetrics.disable()
    assert figures[(servers[1].address, "success")] == 10
    assert figures[(servers[0].address, "failure")] == servers[0].calls >= 1  # every attempt, once
