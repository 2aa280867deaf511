"""Slow start: a new instance's share ramps up over the window, for every weighted and load-aware balancer."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from loadbalancer import (
    Instance,
    LeastLoaded,
    NoEndpointsError,
    PeakEwma,
    RoundRobin,
    SlowStart,
    SmoothWeightedRoundRobin,
    Weighted,
    static,
)
from loadbalancer.balancer import Balancer

OLD = [Instance(f"10.0.0.{i}", 80) for i in range(1, 10)]  # nine warm instances
NEW = Instance("10.0.0.99", 80)
PICKS = 40_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """A callable endpoint (the feedback balancers call through) whose str() is its address."""

    def __init__(self, address: str) -> None:
        self.address = address

    def __call__(self) -> str:
        return self.address

    def __str__(self) -> str:
        return self.address


def callable_endpoint(address: str) -> Endpoint:
    return Endpoint(address)


KINDS: dict[str, Callable[..., Balancer[Any]]] = {
    "RoundRobin": RoundRobin,
    "Weighted": lambda p, **kw: Weighted(p, seed=1, **kw),
    "SmoothWeightedRoundRobin": SmoothWeightedRoundRobin,
    "LeastLoaded": lambda p, **kw: LeastLoaded(p, seed=1, **kw),
    "PeakEwma": lambda p, **kw: PeakEwma(p, seed=1, **kw),
}


def share(lb: Balancer[Any], address: str = NEW.address, picks: int = PICKS) -> float:
    counts = collections.Counter(str(lb.endpoint()) for _ in range(picks))
    return counts[address] / picks


def setup(kind: str, clock: Clock, **options: Any) -> tuple[static.Publisher[Any], Balancer[Any]]:
    publisher = static.Publisher(OLD, callable_endpoint)
    config = SlowStart(window=30.0, clock=clock, **options)
    return publisher, KINDS[kind](publisher, slow_start=config)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_new_instances_share_ramps_over_the_window(kind: str) -> None:
    clock = Clock()
    publisher, lb = setup(kind, clock)
    assert share(lb, OLD[0].address) == pytest.approx(1 / 9, rel=0.05)  # the first set does not ramp
    publisher.replace([*OLD, NEW])
    for elapsed in (0.0, 7.5, 15.0, 22.5):
        clock.now = 1000.0 + elapsed
        factor = max(elapsed / 30.0, 0.1)
        assert share(lb) == pytest.approx(factor / (9 + factor), rel=0.12, abs=0.002), elapsed
    clock.now = 1031.0
    assert share(lb) == pytest.approx(0.1, rel=0.06)  # the window is over: a full share


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_returning_instance_ramps_again(kind: str) -> None:
    clock = Clock()
    publisher, lb = setup(kind, clock)
    publisher.replace([*OLD, NEW])
    clock.now += 60.0
    assert share(lb) == pytest.approx(0.1, rel=0.06)
    publisher.replace(OLD)  # it leaves...
    assert share(lb) == 0.0
    clock.now += 5.0
    publisher.replace([*OLD, NEW])  # ...and comes back: a new ramp
    assert share(lb) == pytest.approx(0.1 / 9.1, rel=0.15)


def test_aggression_shapes_the_curve() -> None:
    config = SlowStart(window=100.0, aggression=2.0, min_weight_percent=0.0)
    assert config.factor(25.0) == pytest.approx(0.5)  # sqrt(0.25): faster at first
    assert SlowStart(window=100.0, aggression=0.5, min_weight_percent=0.0).factor(50.0) == pytest.approx(0.25)
    assert SlowStart(window=100.0).factor(50.0) == pytest.approx(0.5)  # linear
    assert config.factor(100.0) == 1.0 and config.factor(1e9) == 1.0
    clock = Clock()
    publisher, lb = setup("RoundRobin", clock, aggression=2.0, min_weight_percent=0.0)
    publisher.replace([*OLD, NEW])
    clock.now += 7.5  # a quarter of the window: factor 0.5
    assert share(lb) == pytest.approx(0.5 / 9.5, rel=0.05)


def test_the_minimum_weight_holds_from_the_start() -> None:
    assert SlowStart(window=30.0).factor(0.0) == pytest.approx(0.1)
    assert SlowStart(window=30.0, min_weight_percent=50.0).factor(3.0) == pytest.approx(0.5)
    assert SlowStart(window=30.0, min_weight_percent=0.0).factor(0.0) == pytest.approx(0.001 / 30)
    clock = Clock()
    publisher, lb = setup("Weighted", clock, min_weight_percent=50.0)
    publisher.replace([*OLD, NEW])
    assert share(lb) == pytest.approx(0.5 / 9.5, rel=0.1)


def test_weights_are_scaled_not_replaced() -> None:
    clock = Clock()
    heavy = Instance("10.0.0.50", 80, weight=9)
    publisher = static.Publisher(OLD, callable_endpoint)
    lbs = [Weighted(publisher, seed=2, slow_start=SlowStart(window=10, clock=clock)),
           SmoothWeightedRoundRobin(publisher, slow_start=SlowStart(window=10, clock=clock))]  # fmt: skip
    publisher.replace([*OLD, heavy])
    clock.now += 5.0  # half way: weight 9 x 0.5 against 9 x 1
    for lb in lbs:
        assert share(lb, heavy.address) == pytest.approx(4.5 / 13.5, rel=0.05)


def test_no_one_ramps_when_all_are_new_or_when_off() -> None:
    clock = Clock()
    publisher = static.Publisher([], callable_endpoint)
    lb = RoundRobin(publisher, slow_start=SlowStart(clock=clock))
    with pytest.raises(NoEndpointsError):
        lb.endpoint()
    publisher.replace([*OLD, NEW])  # the first set the balancer sees: nobody ramps
    assert share(lb) == pytest.approx(0.1, rel=0.05)
    plain = RoundRobin(static.Publisher([*OLD, NEW], str))
    assert not hasattr(plain, "_ramped") or plain._ramped is None


def test_options_are_checked() -> None:
    assert SlowStart(window=timedelta(minutes=1)).window == 60.0
    with pytest.raises(ValueError, match="window"):
        SlowStart(window=0)
    with pytest.raises(ValueError, match="aggression"):
        SlowStart(aggression=0)
    with pytest.raises(ValueError, match="min_weight_percent"):
        SlowStart(min_weight_percent=101)
    with pytest.raises(TypeError, match="slow_start"):
        RoundRobin(static.Publisher(OLD, str), slow_start=30)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(KINDS))
def test_picks_and_set_changes_from_many_threads(kind: str) -> None:
    clock = Clock()
    publisher, lb = setup(kind, clock)
    errors: list[BaseException] = []
    stop = threading.Event()
    seen: collections.Counter[str] = collections.Counter()

    def pick() -> None:
        try:
            while not stop.is_set():
                for _ in range(200):
                    seen[str(lb.endpoint())] += 1
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=pick) for _ in range(4)]
    for thread in threads:
        thread.start()
    for step in range(300):
        clock.now += 0.25
        publisher.replace([*OLD, NEW] if step % 3 else OLD[1:])
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(seen) <= {i.address for i in [*OLD, NEW]}
    publisher.replace(OLD)
    assert NEW.address not in {str(lb.endpoint()) for _ in range(2000)}  # no pick of a departed instance
