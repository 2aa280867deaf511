from __future__ import annotations

import asyncio
import gc
import logging
import math
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from typing import Any

import pytest
import tenacity

import loadbalancer
from loadbalancer import Balancer, NoEndpointsError, Retry, RetryError, RetryTimeoutError, RoundRobin, static
from loadbalancer._discovery import DiscoveryPublisher
from tests.helpers import AsyncEndpoint, Endpoint, events


def balancer(*failures: BaseException | None) -> tuple[RoundRobin[Any], list[Endpoint]]:
    """A round robin over one endpoint per entry; each fails with its entry, if any."""
    publisher = static.Publisher([f"10.0.0.{i + 1}:80" for i in range(len(failures))], Endpoint)
    endpoints = list(publisher.endpoints())
    for endpoint, failure in zip(endpoints, failures, strict=True):
        endpoint.fail = failure
    return RoundRobin(publisher), endpoints


def test_first_success_is_returned() -> None:
    lb, [endpoint] = balancer(None)
    call = Retry(3, 5.0, lb)
    assert call("x") == "10.0.0.1:80:x"
    assert endpoint.calls == 1


def test_a_failure_is_retried_on_the_next_endpoint() -> None:
    lb, endpoints = balancer(ConnectionRefusedError("down"), None, None)
    call = Retry(3, 5.0, lb)
    results = [call(i) for i in range(6)]
    assert all(not r.startswith("10.0.0.1:") for r in results)
    assert endpoints[0].calls in (2, 3)  # tried in turn (where the turn started decides), each time moved on from
    assert endpoints[1].calls + endpoints[2].calls == 6


def test_giving_up_carries_every_error(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="loadbalancer")
    errors = [ConnectionRefusedError("a down"), TimeoutError("b slow"), OSError("c broken")]
    lb, _ = balancer(*errors)
    with pytest.raises(RetryError) as caught:
        Retry(3, 5.0, lb)("x")
    error = caught.value
    assert not isinstance(error, TimeoutError)
    assert sorted(map(str, error.errors)) == sorted(map(str, errors))
    assert error.final is error.errors[-1]
    assert error.__cause__ is error.final
    assert str(error).startswith("gave up after 3 attempts in ")
    assert "attempt 1: " in str(error) and "attempt 3: " in str(error)
    assert [r.getMessage().split()[0] for r in caplog.records if r.getMessage().startswith("retry_")] == [
        "retry_attempt_failed",
        "retry_attempt_failed",
        "retry_gave_up",
    ]


def test_non_retryable_errors_are_raised_at_once() -> None:
    lb, endpoints = balancer(ValueError("bad request"), None)
    call = Retry(3, 5.0, lb, retry_on=(ConnectionError, TimeoutError))
    outcomes = []
    for _ in range(2):
        try:
            outcomes.append(call("x"))
        except ValueError as error:
            outcomes.append(error)
    assert sum(isinstance(o, ValueError) for o in outcomes) == 1
    assert endpoints[0].calls == 1


def test_retry_on_a_predicate_or_a_tenacity_object() -> None:
    lb, _ = balancer(OSError(111, "refused"), None)
    only_refused = Retry(2, 5.0, lb, retry_on=lambda e: isinstance(e, OSError) and e.errno == 111)
    assert all(only_refused(i).startswith("10.0.0.2") for i in range(4))
    lb, _ = balancer(KeyError("k"), None)
    never = Retry(2, 5.0, lb, retry_on=tenacity.retry_never)
    with pytest.raises(KeyError):
        for i in range(2):
            never(i)


def test_no_endpoints_counts_as_a_failed_attempt() -> None:
    lb = RoundRobin(static.Publisher([], Endpoint))
    with pytest.raises(RetryError) as caught:
        Retry(2, 5.0, lb)("x")
    assert [type(e) for e in caught.value.errors] == [NoEndpointsError, NoEndpointsError]


def test_wait_strategy_between_attempts() -> None:
    seen: list[int] = []

    def wait(state: tenacity.RetryCallState) -> float:
        seen.append(state.attempt_number)
        assert isinstance(state.outcome.exception(), ConnectionError)  # type: ignore[union-attr]
        return 0.01

    calls = []

    def twice_failing(request: object) -> str:
        calls.append(request)
        if len(calls) <= 2:
            raise ConnectionError(f"failure {len(calls)}")
        return "ok"

    lb = RoundRobin(static.Publisher(["a:1"], lambda a: twice_failing))
    assert Retry(3, 5.0, lb, wait=wait)("x") == "ok"
    assert seen == [1, 2]


def test_a_wait_past_the_deadline_gives_up_early() -> None:
    lb, [endpoint] = balancer(ConnectionError("x"))
    started = time.monotonic()
    with pytest.raises(RetryTimeoutError, match="the next attempt would start after it"):
        Retry(3, 0.5, lb, wait=tenacity.wait_fixed(30))("x")
    assert time.monotonic() - started < 10  # did not sleep 30 s
    assert endpoint.calls == 1


def test_the_sync_deadline_is_visible_to_endpoints() -> None:
    budgets: list[float | None] = []

    def endpoint(request: object) -> float | None:
        assert loadbalancer.deadline.get() is not None
        budgets.append(loadbalancer.remaining())
        return loadbalancer.deadline.get()

    lb = RoundRobin(static.Publisher(["a:1"], lambda address: endpoint))
    before = time.monotonic()
    end = Retry(1, 2.0, lb)("x")
    assert end is not None and before + 2.0 <= end <= time.monotonic() + 2.0
    assert budgets[0] is not None and 0 < budgets[0] <= 2.0
    assert loadbalancer.deadline.get() is None  # reset after the call
    assert loadbalancer.remaining() is None


def test_a_nested_retry_keeps_the_tighter_deadline() -> None:
    inner_deadlines: list[float | None] = []
    inner_lb = RoundRobin(
        static.Publisher(["a:1"], lambda a: lambda r: inner_deadlines.append(loadbalancer.deadline.get()))
    )
    inner = Retry(1, 60.0, inner_lb)
    outer_lb = RoundRobin(static.Publisher(["b:1"], lambda a: lambda r: (inner(r), loadbalancer.deadline.get())[1]))
    outer_end = Retry(1, 1.0, outer_lb)("x")
    assert inner_deadlines == [outer_end]


def test_a_sync_failure_after_the_deadline_is_a_timeout() -> None:
    def slow_failure(request: object) -> None:
        time.sleep(0.3)
        raise ConnectionError("late")

    lb = RoundRobin(static.Publisher(["a:1"], lambda a: slow_failure))
    with pytest.raises(RetryTimeoutError) as caught:
        Retry(5, 0.2, lb)("x")
    assert isinstance(caught.value, TimeoutError)
    assert len(caught.value.errors) == 1
    assert str(caught.value).startswith("deadline of 0.2s exceeded after 1 attempts")


def test_threaded_sync_attempts_return_at_the_deadline() -> None:
    release = threading.Event()
    seen_deadline: list[float | None] = []

    def hangs(request: object) -> str:
        seen_deadline.append(loadbalancer.remaining())
        release.wait(30)
        return "late"

    lb = RoundRobin(static.Publisher(["a:1"], lambda a: hangs))
    started = time.monotonic()
    try:
        with pytest.raises(RetryTimeoutError, match="still running at the deadline"):
            Retry(3, 0.2, lb, threaded=True)("x")
        assert time.monotonic() - started < 10  # returned long before the endpoint
    finally:
        release.set()
    assert seen_deadline and seen_deadline[0] is not None and seen_deadline[0] <= 0.2
    ok = RoundRobin(static.Publisher(["a:1"], Endpoint))
    assert Retry(2, 5.0, ok, threaded=True)("y") == "a:1:y"
    flaky, _ = balancer(ConnectionError("x"), None)
    assert Retry(2, 5.0, flaky, threaded=True)("z").startswith("10.0.0.2")


def test_threaded_attempts_run_on_a_bounded_set_of_threads_and_the_rest_wait_their_turn() -> None:
    release = threading.Event()

    def endpoint(request: str) -> str:
        if request == "hang":
            release.wait(60)
        return request

    call = Retry(1, 0.5, RoundRobin(static.Publisher(["a:1"], lambda a: endpoint)), threaded=True, threads=4)
    timeouts: list[RetryTimeoutError] = []

    def hang() -> None:
        with pytest.raises(RetryTimeoutError) as caught:
            call("hang")
        timeouts.append(caught.value)

    def attempt_threads() -> int:
        return sum(thread.name.startswith("loadbalancer-attempt") for thread in threading.enumerate())

    before = attempt_threads()
    callers = [threading.Thread(target=hang) for _ in range(10)]
    try:
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(30)
        assert len(timeouts) == 10  # 4 abandoned at the deadline, 6 waited for a thread in vain
        assert sum("none of the 4 threads came free" in str(error) for error in timeouts) == 6
        assert attempt_threads() - before <= 4  # hung attempts did not make more threads
        with pytest.raises(RetryTimeoutError):
            call("ok")  # every thread still holds a hung attempt: it waits its turn, within its deadline
    finally:
        release.set()
    assert call("ok") == "ok"  # the threads came back once the endpoint returned


def test_an_abandoned_threaded_attempt_does_not_hold_interpreter_exit() -> None:
    program = textwrap.dedent(
        """
        import time
        from loadbalancer import Retry, RetryTimeoutError, RoundRobin, static

        publisher = static.Publisher(["a:1"], lambda a: lambda request: time.sleep(20))
        try:
            Retry(1, 0.2, RoundRobin(publisher), threaded=True)("x")
        except RetryTimeoutError:
            print("gave up at the deadline")
        """
    )
    # the timeout is a hang guard: before, the interpreter waited 20 s for the attempt at exit
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (0, "gave up at the deadline\n", "")


def test_a_threaded_endpoints_own_timeout_error_is_a_failed_attempt_not_the_deadline() -> None:
    publisher = static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], Endpoint)
    slow, fine = publisher.endpoints()
    slow.fail = TimeoutError("read timed out")
    call = Retry(2, 5.0, _Offers(publisher, [0, 1]), threaded=True, wait=tenacity.wait_none())
    assert call("x") == "10.0.0.2:80:x"
    assert (slow.calls, fine.calls) == (1, 1)


async def test_async_endpoints_use_the_same_spelling() -> None:
    async def endpoint(request: str) -> str:
        await asyncio.sleep(0)
        assert loadbalancer.remaining() is not None
        return request.upper()

    call = Retry(3, 5.0, RoundRobin(static.Publisher(["a:1"], lambda a: endpoint)))
    assert await call("ping") == "PING"
    assert loadbalancer.deadline.get() is None


async def test_async_failure_is_retried_on_another_endpoint() -> None:
    async def failing(request: object) -> str:
        await asyncio.sleep(0)
        raise ConnectionResetError("reset")

    async def working(request: object) -> str:
        return "ok"

    publisher = static.Publisher(["a:1", "b:2"], lambda a: failing if a == "a:1" else working)
    call = Retry(2, 5.0, RoundRobin(publisher))
    assert [await call(i) for i in range(4)] == ["ok"] * 4
    with pytest.raises(RetryError) as caught:
        await Retry(2, 5.0, RoundRobin(static.Publisher(["a:1"], lambda a: failing)))("x")
    assert [type(e) for e in caught.value.errors] == [ConnectionResetError, ConnectionResetError]


async def test_async_deadline_cancels_a_hanging_endpoint() -> None:
    cancelled = asyncio.Event()

    async def hangs(request: object) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    call = Retry(3, 0.2, RoundRobin(static.Publisher(["a:1"], lambda a: hangs)))
    started = time.monotonic()
    with pytest.raises(RetryTimeoutError) as caught:
        await call("x")
    elapsed = time.monotonic() - started
    assert elapsed < 10  # the 30 s sleep was cut short
    assert cancelled.is_set()
    assert isinstance(caught.value, TimeoutError)
    assert "cancelled at the deadline" in str(caught.value)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancellation was taken back


async def test_an_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    started = asyncio.Event()

    async def hangs(request: object) -> None:
        started.set()
        await asyncio.sleep(30)

    call = Retry(3, 10.0, RoundRobin(static.Publisher(["a:1"], lambda a: hangs)))
    task = asyncio.create_task(call("x"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_async_deadline_across_waits() -> None:
    async def failing(request: object) -> None:
        raise ConnectionError("nope")

    call = Retry(100, 0.3, RoundRobin(static.Publisher(["a:1"], lambda a: failing)), wait=tenacity.wait_fixed(0.05))
    with pytest.raises(RetryTimeoutError) as caught:
        await call("x")
    assert 2 <= len(caught.value.errors) < 100


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((0, 1.0), {}, ValueError, "max_attempts must be a positive integer, got 0"),
        ((True, 1.0), {}, TypeError, "max_attempts must be a positive integer .*, got bool True"),
        ((1, -1), {}, ValueError, "timeout must be positive, got -1.0"),
        ((1, 0), {}, ValueError, "timeout must be positive, got 0.0"),
        ((1, "5s"), {}, TypeError, "timeout must be a number of seconds or a timedelta, got '5s'"),
        ((1, 1.0), {"retry_on": "ConnectionError"}, TypeError, "retry_on must be an exception type"),
        ((1, 1.0), {"retry_on": ()}, TypeError, "retry_on must be an exception type"),
        ((None, 1.0), {}, TypeError, "max_attempts is required: give a positive integer .*, got None"),
        ((3, None), {}, TypeError, "timeout is required: give a positive number of seconds .*, got None"),
        ((3, math.inf), {}, ValueError, "timeout must be finite, got inf"),
        ((3, math.nan), {}, ValueError, "timeout must be a number of seconds, got nan"),
        ((3, 1.0), {"wait": 5}, TypeError, r"wait must be a tenacity wait strategy \(such as .*, got 5$"),
        ((3, 1.0), {"wait": tenacity.wait_fixed}, TypeError, "got the class tenacity.wait.wait_fixed: call it"),
        ((3, 1.0), {"wait": lambda: 0.1}, TypeError, "wait must be .*which cannot be called with one"),
        ((3, 1.0), {"stop": 3}, TypeError, r"stop must be a tenacity stop strategy \(such as .*, got 3$"),
    ],
)
def test_bad_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    lb, _ = balancer(None)
    with pytest.raises(error, match=message):
        Retry(*args, lb, **kwargs)


def test_wait_and_stop_may_be_plain_callables() -> None:
    lb, _ = balancer(ConnectionError("down"), None)
    stops: list[int] = []

    def stop(state: tenacity.RetryCallState) -> bool:
        stops.append(state.attempt_number)
        return False

    call = Retry(3, 5.0, lb, wait=lambda state: 0, stop=stop)
    assert [call(i).startswith("10.0.0.2") for i in range(2)] == [True, True]
    assert stops and set(stops) == {1}  # asked after each first attempt that failed


def test_lb_must_be_a_balancer() -> None:
    with pytest.raises(TypeError, match="lb must be a loadbalancer.Balancer"):
        Retry(1, 1.0, lambda: None)  # type: ignore[arg-type]


def test_timedelta_timeout() -> None:
    from datetime import timedelta

    lb, _ = balancer(None)
    assert repr(Retry(2, timedelta(milliseconds=1500), lb)).startswith("Retry(2, 1.5, RoundRobin(")


class _Offers(loadbalancer.Balancer[Any]):
    """Offers the endpoints in the scripted order (index into the publisher's set)."""

    def __init__(self, publisher: static.Publisher[Any], order: list[int]) -> None:
        self._order = iter(order)
        super().__init__(publisher)

    def _update(self, endpoints: Any) -> None:
        self._endpoints = list(endpoints)

    def endpoint(self) -> Any:
        return self._endpoints[next(self._order)]


@pytest.mark.parametrize("kind", ["sync", "async", "threaded"])
async def test_a_retry_asks_again_rather_than_return_to_an_endpoint_that_failed(kind: str) -> None:
    # As concurrent calls sharing a round robin can make happen: the balancer offers the
    # endpoint that just failed again; Retry asks for another before trying it twice.
    publisher = static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], AsyncEndpoint if kind == "async" else Endpoint)
    bad, good = publisher.endpoints()
    bad.fail = ConnectionRefusedError("refused")
    call = Retry(2, 5.0, _Offers(publisher, [0, 0, 0, 1]), wait=tenacity.wait_none(), threaded=kind == "threaded")
    result = await call("ping") if kind == "async" else call("ping")
    assert result == "10.0.0.2:80:ping" and bad.calls == 1 and good.calls == 1


def test_a_retry_goes_back_to_a_failed_endpoint_when_the_balancer_offers_nothing_else() -> None:
    publisher = static.Publisher(["10.0.0.1:80"], Endpoint)
    (only,) = publisher.endpoints()
    only.fail = ConnectionRefusedError("refused")
    with pytest.raises(RetryError):
        Retry(3, 5.0, RoundRobin(publisher), wait=tenacity.wait_none(), budget=None)("ping")
    assert only.calls == 3


class _CountingTimers:
    """Counts the timers scheduled on a loop (``call_at`` is what ``call_later`` goes through)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        call_at = loop.call_at

        def counting(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            self.count += 1
            return call_at(*args, **kwargs)

        monkeypatch.setattr(loop, "call_at", counting)


async def test_async_calls_share_their_deadline_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    # One timer per millisecond of deadline, shared by the calls that end in it, not one a call.
    async def at_once(request: str) -> str:
        assert loadbalancer.remaining() is not None
        return request

    async def suspends(request: str) -> str:
        await asyncio.sleep(0)
        assert loadbalancer.remaining() is not None
        return request

    timers = _CountingTimers(asyncio.get_running_loop(), monkeypatch)
    fast = Retry(3, 5.0, RoundRobin(static.Publisher(["a:1"], lambda a: at_once)))
    slow = Retry(3, 5.0, RoundRobin(static.Publisher(["a:1"], lambda a: suspends)))
    answers = await asyncio.gather(*(fast(i) for i in range(100)), *(slow(i) for i in range(100)))
    assert answers == [*range(100), *range(100)]
    assert timers.count < 20
    assert loadbalancer.deadline.get() is None


async def test_an_attempt_failing_before_it_suspends_is_retried_under_the_deadline() -> None:
    calls: list[str] = []

    async def fails_at_once(request: str) -> str:
        calls.append("fail")
        raise ConnectionRefusedError("refused")

    async def hangs(request: str) -> str:
        calls.append("hang")
        await asyncio.sleep(30)
        return "late"

    publisher = static.Publisher(["a:1", "b:2"], lambda a: fails_at_once if a == "a:1" else hangs)
    call = Retry(3, 0.2, _Offers(publisher, [0, 1]), wait=tenacity.wait_none())
    started = time.monotonic()
    with pytest.raises(RetryTimeoutError, match="cancelled at the deadline") as caught:
        await call("x")
    assert time.monotonic() - started < 10
    assert calls == ["fail", "hang"]
    assert type(caught.value.errors[0]) is ConnectionRefusedError
    assert isinstance(caught.value.errors[1], TimeoutError)


async def test_nested_async_retries_keep_the_tighter_deadline() -> None:
    seen: list[float | None] = []
    cancelled = asyncio.Event()

    async def hangs(request: str) -> str:
        seen.append(loadbalancer.deadline.get())
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    inner = Retry(1, 60.0, RoundRobin(static.Publisher(["a:1"], lambda a: hangs)))

    async def through_inner(request: str) -> str:
        seen.append(loadbalancer.deadline.get())
        return await inner(request)

    outer = Retry(1, 0.2, RoundRobin(static.Publisher(["b:1"], lambda a: through_inner)))
    started = time.monotonic()
    with pytest.raises(RetryTimeoutError):
        await outer("x")
    assert time.monotonic() - started < 10  # the outer 0.2 s deadline, not the inner 60 s one
    assert cancelled.is_set()
    assert len(seen) == 2 and seen[0] is not None and seen[0] == seen[1]
    assert loadbalancer.deadline.get() is None


class _Ask:
    """An awaitable that yields a question to whatever drives the coroutine and returns the reply."""

    def __await__(self) -> Any:
        reply = yield "question"
        return reply


async def test_a_suspended_attempt_gets_what_its_driver_sends_throws_and_closes() -> None:
    # asyncio's task only ever sends None; other drivers send values, throw and close: the
    # call passes each on to the attempt as a plain ``await`` would.
    events: list[str] = []

    async def asks(request: str) -> str:
        try:
            return f"{request}:{await _Ask()}"
        except ValueError as error:
            events.append(f"thrown {error}")
            return f"{request}:{await _Ask()}"
        finally:
            events.append("finally")

    call = Retry(3, 5.0, RoundRobin(static.Publisher(["a:1"], lambda a: asks)))
    coro: Any = call("x")
    assert coro.send(None) == "question"
    with pytest.raises(StopIteration) as stopped:
        coro.send("answer")
    assert stopped.value.value == "x:answer"
    coro = call("y")
    assert coro.send(None) == "question"
    assert coro.throw(ValueError("v")) == "question"
    with pytest.raises(StopIteration) as stopped:
        coro.send("again")
    assert stopped.value.value == "y:again"
    coro = call("z")
    assert coro.send(None) == "question"
    coro.close()
    assert events == ["finally", "thrown v", "finally", "finally"]
    assert loadbalancer.deadline.get() is None


def test_a_failed_call_logs_at_info_naming_service_and_instance(logs: pytest.LogCaptureFixture) -> None:
    # The caller gets the exception; the log is for whoever looks, not a warning per call.
    lb, _ = balancer(ConnectionRefusedError("a down"), ConnectionRefusedError("b down"))
    with pytest.raises(RetryError):
        Retry(2, 5.0, lb, wait=tenacity.wait_none())("x")
    failed, gave_up = events(logs, "retry_attempt_failed"), events(logs, "retry_gave_up")
    assert len(failed) == 1 and len(gave_up) == 1
    assert {r.levelno for r in failed + gave_up} == {logging.INFO}
    assert {r.service for r in failed + gave_up} == {"static"}  # type: ignore[attr-defined]
    first, last = failed[0].instance, gave_up[0].instance  # type: ignore[attr-defined]
    assert {first, last} == {"10.0.0.1:80", "10.0.0.2:80"}
    assert f"instance='{last}'" in gave_up[0].getMessage()


def test_a_deadline_is_logged_at_info_with_the_instance(logs: pytest.LogCaptureFixture) -> None:
    def slow_failure(request: object) -> None:
        time.sleep(0.3)
        raise ConnectionError("late")

    lb = RoundRobin(static.Publisher(["10.0.0.9:80"], lambda a: slow_failure))
    with pytest.raises(RetryTimeoutError):
        Retry(5, 0.2, lb)("x")
    [record] = events(logs, "retry_deadline_exceeded")
    assert record.levelno == logging.INFO
    assert (record.service, record.instance) == ("static", "10.0.0.9:80")  # type: ignore[attr-defined]


def test_a_tracked_endpoint_is_named_by_its_address(logs: pytest.LogCaptureFixture) -> None:
    from loadbalancer.least_loaded import LeastLoaded

    publisher = static.Publisher(["10.0.0.5:80"], Endpoint)
    publisher.endpoints()[0].fail = ConnectionResetError("reset")
    with pytest.raises(RetryError):
        Retry(2, 5.0, LeastLoaded(publisher), wait=tenacity.wait_none(), budget=None)("x")
    assert [r.instance for r in events(logs, "retry_gave_up")] == ["10.0.0.5:80"]  # type: ignore[attr-defined]


def test_a_spent_budget_warns_once_per_window_and_then_informs(logs: pytest.LogCaptureFixture) -> None:
    lb, _ = balancer(ConnectionRefusedError("down"))
    budget = loadbalancer.RetryBudget(ratio=0, min_per_second=0, window=60)  # never a retry
    call = Retry(3, 5.0, lb, wait=tenacity.wait_none(), budget=budget)
    for _ in range(3):
        with pytest.raises(loadbalancer.RetryBudgetExhaustedError):
            call("x")
    records = events(logs, "retry_budget_exhausted")
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO, logging.INFO]
    assert [r.refused for r in records] == [1, 2, 3]  # type: ignore[attr-defined]
    assert {r.instance for r in records} == {"10.0.0.1:80"}  # type: ignore[attr-defined]


def test_an_application_without_logging_setup_sees_nothing_of_a_failed_call() -> None:
    # Python's last-resort handler prints WARNING and above to stderr when nothing is set up.
    program = textwrap.dedent(
        """
        from loadbalancer import Retry, RetryError, RoundRobin, static
        import tenacity

        def down(request):
            raise ConnectionRefusedError("down")

        call = Retry(2, 5.0, RoundRobin(static.Publisher(["10.0.0.1:80"], lambda a: down)), wait=tenacity.wait_none())
        try:
            call("x")
        except RetryError:
            print("raised")
        """
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "raised\n", "")


def test_a_sync_call_over_async_endpoints_says_to_await_it() -> None:
    call = Retry(3, 5.0, RoundRobin(static.Publisher(["a:1"], AsyncEndpoint)))
    pending = call("x")  # no event loop runs here: nothing can run the async endpoint
    with pytest.raises(AttributeError, match=r"not the response: the endpoints are async.*`await call\(request\)`"):
        pending.upper()
    assert "call.acall(request)" in repr(pending)
    gc.collect()  # what earlier tests left for the collector warns now, not in the record below
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del pending
        gc.collect()
    # one warning that says what to do, not Python's two "coroutine ... was never awaited"
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert [str(w.message).split(":")[0] for w in runtime] == ["a Retry call was never run"]
    assert "`await call(request)`" in str(runtime[0].message)


def test_a_call_made_outside_a_loop_still_runs_when_handed_to_asyncio() -> None:
    call = Retry(3, 5.0, RoundRobin(static.Publisher(["a:1"], AsyncEndpoint)))
    assert asyncio.run(call("x")) == "a:1:x"  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(call("y")) == "a:1:y"  # type: ignore[arg-type]
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        assert asyncio.run_coroutine_threadsafe(call("z"), loop).result(10) == "a:1:z"  # type: ignore[arg-type]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("kind", [Endpoint, AsyncEndpoint])
async def test_acall_takes_sync_and_async_endpoints_alike(kind: type[Endpoint]) -> None:
    publisher = static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], kind)
    publisher.endpoints()[0].fail = ConnectionRefusedError("refused")
    call = Retry(2, 5.0, _Offers(publisher, [0, 1]), wait=tenacity.wait_none())
    assert await call.acall("x") == "10.0.0.2:80:x"


async def test_awaiting_a_sync_call_is_pythons_type_error() -> None:
    # Over sync endpoints call(request) is the response itself; Python refuses to await it,
    # and nothing can intercept that without taxing every call: acall() is the way (above).
    call = Retry(2, 5.0, RoundRobin(static.Publisher(["a:1"], Endpoint)))
    with pytest.raises(TypeError, match="can't be used in 'await' expression"):
        await call("x")  # type: ignore[misc]


async def test_a_call_made_on_one_loop_and_awaited_on_another_times_out_there() -> None:
    async def hangs(request: object) -> None:
        await asyncio.sleep(30)

    call = Retry(1, 0.2, RoundRobin(static.Publisher(["a:1"], lambda a: hangs)))
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        made_here = call("x")  # made while this loop runs, awaited on the other one
        future = asyncio.run_coroutine_threadsafe(made_here, other)  # type: ignore[arg-type]
        with pytest.raises(RetryTimeoutError):
            await asyncio.wrap_future(future)
        await asyncio.sleep(0)  # this task was not the one cancelled at the deadline
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(10)
        other.close()


class _Late(DiscoveryPublisher[Any]):
    """A publisher whose source answers when the test says so (as a slow DNS server would)."""

    def answer(self, *instances: str) -> None:
        self._publish(instances)


def test_the_first_call_waits_for_the_first_answer_within_its_deadline() -> None:
    publisher = _Late(lambda address: lambda request: f"{address} got {request}", service="late")
    call = Retry(3, 5.0, RoundRobin(publisher))
    threading.Timer(0.05, publisher.answer, ["10.0.0.1:80"]).start()
    assert call("ping") == "10.0.0.1:80 got ping"  # not a failed attempt: the set was not read yet
    never = _Late(lambda address: lambda request: request, service="never")
    with pytest.raises(RetryTimeoutError, match="has not answered yet"):
        Retry(3, 0.1, RoundRobin(never))("ping")


async def test_acall_waits_for_the_first_answer_without_blocking_the_loop() -> None:
    async def echo(request: str) -> str:
        return request

    publisher = _Late(lambda address: echo, service="late")
    call = Retry(3, 5.0, RoundRobin(publisher))
    asyncio.get_running_loop().call_later(0.05, publisher.answer, "10.0.0.1:80")  # needs the loop free
    assert await call.acall("ping") == "ping"


def test_a_closed_publisher_is_not_retried() -> None:
    publisher = static.Publisher(["10.0.0.1:80"], lambda address: lambda request: request)
    call = Retry(5, 5.0, RoundRobin(publisher))
    publisher.close()
    with pytest.raises(loadbalancer.PublisherClosedError):
        call("ping")


class _Ordered(Balancer[Any]):
    """Offers the endpoints in order, over and over (a deterministic round robin for tests)."""

    def __init__(self, publisher: Any) -> None:
        self._set: Any = ()
        self._n = 0
        super().__init__(publisher)

    def _update(self, endpoints: Any) -> None:
        self._set = endpoints

    def endpoint(self) -> Any:
        picked = self._set[self._n % len(self._set)]
        self._n += 1
        return picked


async def test_attempt_timeout_cancels_a_slow_async_attempt_and_moves_on() -> None:
    async def slow(request: str) -> str:
        await asyncio.sleep(30)
        return "slow"

    async def fast(request: str) -> str:
        return "fast"

    publisher = static.Publisher(["a:1", "b:2"], lambda a: slow if a == "a:1" else fast)
    call = Retry(3, 5.0, _Ordered(publisher), attempt_timeout=0.1, wait=tenacity.wait_none())
    assert await call("x") == "fast"
    with pytest.raises(RetryTimeoutError):  # the deadline still bounds it all
        await Retry(3, 0.2, _Ordered(static.Publisher(["a:1"], lambda a: slow)), attempt_timeout=1.0)("x")


def test_attempt_timeout_is_what_a_sync_attempt_sees_and_abandons_a_threaded_one() -> None:
    seen: list[float] = []

    def honouring(request: str) -> str:
        left = loadbalancer.remaining()
        assert left is not None
        seen.append(left)
        time.sleep(min(left, 1.0))
        raise TimeoutError("no answer within the time given")

    def hanging(request: str) -> str:
        time.sleep(5)
        return "late"

    publisher = static.Publisher(["a:1", "b:2"], lambda a: honouring if a == "a:1" else (lambda r: "fast"))
    call = Retry(3, 5.0, _Ordered(publisher), attempt_timeout=0.1, wait=tenacity.wait_none())
    assert call("x") == "fast"
    assert seen and seen[0] <= 0.1  # the attempt's time, not the call's 5 s
    hung = static.Publisher(["a:1", "b:2"], lambda a: hanging if a == "a:1" else (lambda r: "fast"))
    threaded = Retry(3, 5.0, _Ordered(hung), attempt_timeout=0.1, threaded=True, wait=tenacity.wait_none())
    assert threaded("x") == "fast"  # the hung attempt was left behind at its own timeout
    with pytest.raises(ValueError, match="attempt_timeout must be positive"):
        Retry(3, 5.0, _Ordered(publisher), attempt_timeout=0)


async def test_acall_over_sync_endpoints_never_blocks_the_loop_while_it_waits() -> None:
    publisher = static.Publisher(["10.0.0.1:80", "10.0.0.2:80"], Endpoint)
    publisher.endpoints()[0].fail = ConnectionRefusedError("refused")
    call = Retry(2, 5.0, _Offers(publisher, [0, 1]), wait=tenacity.wait_fixed(0.3))
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    try:
        assert await call.acall("x") == "10.0.0.2:80:x"
    finally:
        ticker.cancel()
    assert ticks >= 10  # the loop ran on through the 0.3 s wait between the attempts


@pytest.mark.parametrize("options", [{"threaded": True}, {"attempt_timeout": 1.0}])
def test_threaded_and_attempt_timeout_calls_wait_for_the_first_answer_too(options: dict[str, Any]) -> None:
    publisher = _Late(lambda address: lambda request: f"{address} got {request}", service="late")
    call = Retry(3, 5.0, RoundRobin(publisher), **options)
    threading.Timer(0.05, publisher.answer, ["10.0.0.1:80"]).start()
    assert call("ping") == "10.0.0.1:80 got ping"


def test_a_retry_finds_the_endpoint_not_tried_even_when_the_balancer_keeps_offering_a_failed_one() -> None:
    publisher = static.Publisher(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"], Endpoint)
    first, second, third = publisher.endpoints()
    first.fail = second.fail = ConnectionRefusedError("refused")
    call = Retry(3, 5.0, _Offers(publisher, [0] * 5 + [1] * 5 + [1] * 5), wait=tenacity.wait_none())
    assert call("x") == "10.0.0.3:80:x"  # the balancer never offered it: the set did
    assert (first.calls, second.calls, third.calls) == (1, 1, 1)
