from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbalancer import Balancer, NoEndpointsError, Random, RoundRobin, static


def addresses(n: int, base: int = 0) -> list[str]:
    return [f"10.0.{(base + i) // 250}.{(base + i) % 250 + 1}:80" for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), rounds=st.integers(1, 5), warmup=st.integers(0, 40))
def test_round_robin_is_fair_for_any_set_size(n: int, rounds: int, warmup: int) -> None:
    lb = RoundRobin(static.Publisher(addresses(n), str))
    for _ in range(warmup):
        lb.endpoint()
    counts = Counter(lb.endpoint() for _ in range(rounds * n))
    assert set(counts) == set(addresses(n))
    assert set(counts.values()) == {rounds}


def test_round_robin_takes_turns_in_order() -> None:
    names = addresses(5)
    lb = RoundRobin(static.Publisher(names, str))
    first = lb.endpoint()
    start = names.index(first)
    assert [first] + [lb.endpoint() for _ in range(9)] == (names[start:] + names[:start]) * 2


def test_round_robin_never_returns_a_replaced_endpoint() -> None:
    publisher = static.Publisher(addresses(7), str)
    lb = RoundRobin(publisher)
    pick = lb.endpoint  # a cached bound pick must follow updates too
    pick()
    pick()
    publisher.replace(addresses(3, base=100))
    assert {pick() for _ in range(30)} == set(addresses(3, base=100))


def test_round_robin_empty_then_filled() -> None:
    publisher = static.Publisher([], str)
    lb = RoundRobin(publisher)
    pick = lb.endpoint
    for _ in range(3):  # raising repeatedly must not break the pick
        with pytest.raises(NoEndpointsError, match=r"no endpoints available from static.Publisher\(0 instances\)"):
            pick()
    publisher.replace(["a:1", "b:2"])
    assert sorted(pick() for _ in range(4)) == ["a:1", "a:1", "b:2", "b:2"]
    publisher.replace([])
    with pytest.raises(NoEndpointsError):
        pick()
    publisher.replace(["c:3"])
    assert pick() == "c:3"


def test_round_robin_start_is_spread_across_clients() -> None:
    publisher = static.Publisher(addresses(10), str)
    firsts = {RoundRobin(publisher).endpoint() for _ in range(200)}
    assert len(firsts) > 5  # a fleet does not all start on the same endpoint


def test_random_is_reproducible_with_a_seed() -> None:
    publisher = static.Publisher(addresses(10), str)
    a, b, c = Random(publisher, seed=42), Random(publisher, seed=42), Random(publisher, seed=43)
    picks_a = [a.endpoint() for _ in range(200)]
    assert picks_a == [b.endpoint() for _ in range(200)]
    assert picks_a != [c.endpoint() for _ in range(200)]


def test_random_is_roughly_uniform() -> None:
    names = addresses(10)
    lb = Random(static.Publisher(names, str), seed=1)
    counts = Counter(lb.endpoint() for _ in range(100_000))
    assert set(counts) == set(names)
    for count in counts.values():
        assert abs(count - 10_000) < 500  # ~5 standard deviations


@pytest.mark.parametrize("n", [3, 7, 256, 257, 1000])
def test_random_is_uniform_for_small_and_large_sets(n: int) -> None:
    # Up to 256 endpoints a pick indexes a table (shares off by at most n / 65536 of
    # themselves); larger sets pick exactly. Both must look uniform.
    names = addresses(n)
    lb = Random(static.Publisher(names, str), seed=n)
    picks = 200 * n
    counts = Counter(lb.endpoint() for _ in range(picks))
    assert set(counts) == set(names)
    expected = picks / n
    chi_square = sum((counts[name] - expected) ** 2 / expected for name in names)
    assert chi_square < n + 6 * (2 * n) ** 0.5  # about 6 standard deviations above n - 1


def test_random_follows_updates_and_raises_when_empty() -> None:
    publisher = static.Publisher(["a:1"], str)
    lb = Random(publisher)
    assert lb.endpoint() == "a:1"
    publisher.replace([])
    with pytest.raises(NoEndpointsError):
        lb.endpoint()
    publisher.replace(["b:2"])
    assert lb.endpoint() == "b:2"


def test_balancers_need_a_publisher() -> None:
    with pytest.raises(TypeError, match=r"a balancer needs a loadbalancer.Publisher, got \['a:1'\]"):
        RoundRobin(["a:1"])  # type: ignore[arg-type]
    lb = RoundRobin(static.Publisher(["a:1"], str))
    assert isinstance(lb, Balancer)
    assert repr(lb) == "RoundRobin(static.Publisher(1 instances))"
