from __future__ import annotations

import threading

import pytest
import tenacity

from loadbalancer import (
    NoEndpointsError,
    Retry,
    RetryBudget,
    RetryBudgetExhaustedError,
    RetryError,
    RoundRobin,
    retryable,
    static,
)
from loadbalancer._engine import DEFAULT_WAIT as _DEFAULT_WAIT


def always_failing(error: BaseException) -> tuple[RoundRobin[object], list[int]]:
    attempts = [0]

    def endpoint(request: object) -> None:
        attempts[0] += 1
        raise error

    return RoundRobin(static.Publisher(["a:1", "b:2"], lambda address: endpoint)), attempts


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError("refused"), True),
        (TimeoutError("slow"), True),
        (OSError("broken pipe"), True),
        (NoEndpointsError("none yet"), True),
        (RuntimeError("server said 503"), True),
        (TypeError("bad call"), False),
        (ValueError("bad value"), False),
        (KeyError("k"), False),
        (AttributeError("a"), False),
    ],
)
def test_default_classification(error: BaseException, expected: bool) -> None:
    assert retryable(error) is expected


def test_programming_errors_are_not_retried_by_default() -> None:
    lb, attempts = always_failing(KeyError("missing"))
    with pytest.raises(KeyError):
        Retry(3, 5.0, lb)("x")
    assert attempts[0] == 1
    lb, attempts = always_failing(ConnectionResetError("reset"))
    with pytest.raises(RetryError):
        Retry(3, 5.0, lb, wait=tenacity.wait_none())("x")
    assert attempts[0] == 3


def test_default_backoff_is_full_jitter_within_bounds() -> None:
    for attempt, high in [(1, 0.01), (2, 0.02), (4, 0.08), (20, 1.0)]:
        state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        state.attempt_number = attempt
        waits = [_DEFAULT_WAIT(state) for _ in range(500)]
        assert all(0 <= w <= high for w in waits)
        assert max(waits) > high * 0.8  # spread over the whole range
        assert min(waits) < high * 0.2


def test_budget_caps_retries_during_an_outage() -> None:
    lb, attempts = always_failing(ConnectionRefusedError("down"))
    call = Retry(3, 5.0, lb, wait=tenacity.wait_none(), budget=RetryBudget(ratio=0.2, min_per_second=0))
    outcomes: list[type[BaseException]] = []
    for i in range(200):
        with pytest.raises(RetryError) as caught:
            call(i)
        outcomes.append(type(caught.value))
    # without the budget: 600 attempts; with it, 200 requests and about 20% more
    assert 200 + 30 <= attempts[0] <= 200 + 41
    assert outcomes.count(RetryBudgetExhaustedError) >= 150


def test_exhaustion_is_a_clear_error_carrying_the_attempts() -> None:
    lb, attempts = always_failing(ConnectionRefusedError("down"))
    budget = RetryBudget(ratio=0, min_per_second=0)
    with pytest.raises(
        RetryBudgetExhaustedError, match=r"retry budget exhausted after 1 attempts \(RetryBudget\("
    ) as e:
        Retry(3, 5.0, lb, budget=budget)("x")
    assert isinstance(e.value, RetryError)
    assert [type(x) for x in e.value.errors] == [ConnectionRefusedError]
    assert e.value.__cause__ is e.value.errors[0]
    assert attempts[0] == 1
    assert budget.refused == 1


def test_the_floor_allows_retries_with_little_traffic() -> None:
    budget = RetryBudget(ratio=0, min_per_second=1, window=5)
    assert [budget.withdraw() for _ in range(6)] == [True] * 5 + [False]


def test_a_budget_shared_by_threads_stays_within_its_limit() -> None:
    budget = RetryBudget(ratio=0.5, min_per_second=0)
    granted: list[bool] = []

    def worker() -> None:
        for _ in range(1000):
            budget.deposit()
            granted.append(budget.withdraw())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1900 <= sum(granted) <= 2000  # half of 4,000 requests


def test_no_budget_and_bad_budgets() -> None:
    lb, attempts = always_failing(ConnectionRefusedError("down"))
    call = Retry(3, 5.0, lb, wait=tenacity.wait_none(), budget=None)
    for i in range(50):
        with pytest.raises(RetryError):
            call(i)
    assert attempts[0] == 150
    with pytest.raises(TypeError, match="budget must be a RetryBudget"):
        Retry(3, 5.0, lb, budget=0.2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ratio must be a number from 0 to 1000, got -1"):
        RetryBudget(ratio=-1)
    with pytest.raises(ValueError, match="window must be positive"):
        RetryBudget(window=0)
