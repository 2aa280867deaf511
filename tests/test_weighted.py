from __future__ import annotations

import asyncio
import math
import sys
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from loadbalancer import Instance, NoEndpointsError, static
from loadbalancer.weighted import SmoothWeightedRoundRobin, Weighted, _effective_weights, _smooth_cycle

PICKS = 100_000


def weighted(*specs: tuple[int, int]) -> list[Instance]:
    """Instances 10.0.0.1, .2, ... with the given (weight, priority)."""
    return [Instance(f"10.0.0.{i}", 80, weight=w, priority=p) for i, (w, p) in enumerate(specs, 1)]


def check_shares(counts: Counter[str], expected: dict[str, float], picks: int) -> None:
    assert set(counts) <= set(expected)
    for address, share in expected.items():
        sd = math.sqrt(picks * share * (1 - share)) or 1.0
        assert abs(counts[address] - picks * share) < 5 * sd, (address, counts[address], picks * share)


@pytest.fixture
def quick_thread_switches() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(previous)


# -- Weighted ----------------------------------------------------------------------------


def test_weights_are_honoured_over_100k_picks() -> None:
    instances = weighted((10, 0), (20, 0), (30, 0), (40, 0))
    lb = Weighted(static.Publisher(instances, str), seed=3)
    counts = Counter(lb.endpoint() for _ in range(PICKS))
    expected = {"10.0.0.1:80": 0.1, "10.0.0.2:80": 0.2, "10.0.0.3:80": 0.3, "10.0.0.4:80": 0.4}
    check_shares(counts, expected, PICKS)
    for address, share in expected.items():  # "within a few percent", and much closer in fact
        assert counts[address] / PICKS == pytest.approx(share, rel=0.03)


def test_only_the_lowest_priority_group_is_used_and_fails_over() -> None:
    primary = weighted((1, 0), (3, 0))
    backup = [Instance("10.0.1.1", 80, weight=1, priority=5), Instance("10.0.1.2", 80, weight=1, priority=5)]
    last = [Instance("10.0.2.1", 80, priority=9)]
    publisher = static.Publisher([*backup, *primary, *last], str)  # order does not matter
    lb = Weighted(publisher, seed=1)
    counts = Counter(lb.endpoint() for _ in range(20_000))
    check_shares(counts, {"10.0.0.1:80": 0.25, "10.0.0.2:80": 0.75}, 20_000)

    publisher.replace([*backup, *last])  # the primary group is gone: the backups take over
    counts = Counter(lb.endpoint() for _ in range(20_000))
    check_shares(counts, {"10.0.1.1:80": 0.5, "10.0.1.2:80": 0.5}, 20_000)

    publisher.replace(last)
    assert {lb.endpoint() for _ in range(100)} == {"10.0.2.1:80"}

    publisher.replace([*primary, *backup])  # the primary group is back: it takes over again
    assert {lb.endpoint() for _ in range(1000)} == {"10.0.0.1:80", "10.0.0.2:80"}


def test_weight_zero_has_a_very_small_chance_next_to_positive_weights() -> None:
    lb = Weighted(static.Publisher(weighted((1, 0), (0, 0)), str), seed=5)
    counts = Counter(lb.endpoint() for _ in range(PICKS))
    # A weight of 0 counts as 0.01: 0.01 / 1.01 of the picks, about 1%, not the RFC
    # algorithm's literal 1/(S+1) = 50%.
    check_shares(counts, {"10.0.0.1:80": 1 / 1.01, "10.0.0.2:80": 0.01 / 1.01}, PICKS)
    assert counts["10.0.0.2:80"] > 0

    lb = Weighted(static.Publisher(weighted((60, 0), (30, 0), (10, 0), (0, 0)), str), seed=5)
    counts = Counter(lb.endpoint() for _ in range(PICKS))
    assert counts["10.0.0.4:80"] < 0.001 * PICKS  # 0.01% expected


def test_all_weights_zero_share_equally() -> None:
    lb = Weighted(static.Publisher(weighted((0, 0), (0, 0), (0, 0), (0, 1)), str), seed=9)
    counts = Counter(lb.endpoint() for _ in range(PICKS))
    check_shares(counts, {f"10.0.0.{i}:80": 1 / 3 for i in (1, 2, 3)}, PICKS)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 65535), min_size=1, max_size=12))
def test_effective_weights_keep_proportions(weights: list[int]) -> None:
    instances = [Instance(f"10.0.0.{i}", 80, weight=w) for i, w in enumerate(weights, 1)]
    result = _effective_weights(instances)
    assert all(w >= 1 for w in result)
    assert math.gcd(*result) == 1
    if not any(weights):
        assert set(result) == {1}
    else:
        real = [w if w else 0.01 for w in weights]
        for a, b in zip(real, result, strict=True):
            assert a * result[0] == pytest.approx(b * real[0])


def test_seed_makes_picks_reproducible() -> None:
    publisher = static.Publisher(weighted((1, 0), (2, 0), (3, 0)), str)
    a, b, c = Weighted(publisher, seed=42), Weighted(publisher, seed=42), Weighted(publisher, seed=43)
    picks = [a.endpoint() for _ in range(300)]
    assert picks == [b.endpoint() for _ in range(300)]
    assert picks != [c.endpoint() for _ in range(300)]


@pytest.mark.parametrize("kind", [Weighted, SmoothWeightedRoundRobin])
def test_empty_sets_raise_no_endpoints_and_refill(kind: type[Weighted[str]]) -> None:
    publisher = static.Publisher([], str)
    lb = kind(publisher)
    pick = lb.endpoint  # a cached bound pick follows updates too
    for _ in range(3):
        with pytest.raises(NoEndpointsError, match=r"no endpoints available from static.Publisher\(0 instances\)"):
            pick()
    publisher.replace(["a:1"])
    assert pick() == "a:1"
    publisher.replace([])
    with pytest.raises(NoEndpointsError):
        pick()
    publisher.replace(["b:2"])
    assert pick() == "b:2"
    publisher.close()
    with pytest.raises(NoEndpointsError, match="the publisher is closed"):
        pick()


# -- SmoothWeightedRoundRobin ------------------------------------------------------------


def test_smooth_order_is_nginx_order() -> None:
    assert _smooth_cycle([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]  # nginx's a a b a c a a
    publisher = static.Publisher(weighted((5, 0), (1, 0), (1, 0)), str)
    lb = SmoothWeightedRoundRobin(publisher)
    picks = [lb.endpoint()[7] for _ in range(14)]  # "10.0.0.N:80"[7] is N
    cycle = "1121311"
    start = "".join(picks[:7])
    assert start in cycle * 2  # the same cycle, from a random point
    assert "".join(picks) == start * 2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_smooth_cycle_counts_and_spreads(weights: list[int]) -> None:
    cycle = _smooth_cycle(weights)
    assert len(cycle) == sum(weights)
    assert Counter(cycle) == dict(enumerate(weights))
    total = sum(weights)
    # Smooth: after any prefix of length t, index i has been picked close to t * w / total
    # (within about 1; weights 5, 1, 1 in blocks, a a a a a b c, stray by up to 1.43).
    seen = [0] * len(weights)
    for t, index in enumerate(cycle, 1):
        seen[index] += 1
        for i, w in enumerate(weights):
            assert abs(seen[i] - t * w / total) < 1.2


def test_smooth_cycle_of_huge_weights_is_scaled_down() -> None:
    cycle = _smooth_cycle([65535, 65534, 1])
    assert len(cycle) <= 1 << 16
    counts = Counter(cycle)
    assert counts[2] >= 1  # every endpoint stays in
    assert counts[0] / counts[1] == pytest.approx(65535 / 65534, rel=0.01)


def test_smooth_honours_priority_and_zero_weight_deterministically() -> None:
    publisher = static.Publisher(weighted((1, 0), (0, 0), (7, 2)), str)
    lb = SmoothWeightedRoundRobin(publisher)
    counts = Counter(lb.endpoint() for _ in range(101 * 3))  # the cycle is 100 + 1 long
    assert counts == {"10.0.0.1:80": 300, "10.0.0.2:80": 3}
    publisher.replace(weighted((7, 2)))
    assert lb.endpoint() == "10.0.0.1:80"  # the only instance (a new list, numbered from 1)


def test_smooth_never_returns_a_replaced_endpoint() -> None:
    publisher = static.Publisher(weighted((3, 0), (2, 0)), str)
    lb = SmoothWeightedRoundRobin(publisher)
    pick = lb.endpoint
    pick()
    publisher.replace([Instance("10.9.0.1", 80, weight=2), Instance("10.9.0.2", 80)])
    counts = Counter(pick() for _ in range(30))
    assert counts == {"10.9.0.1:80": 20, "10.9.0.2:80": 10}


# -- concurrency -------------------------------------------------------------------------


SETS = [weighted((1, 0), (2, 0)), weighted((5, 1), (1, 0), (0, 0)), [], weighted((3, 0), (3, 0), (3, 0))]


@pytest.mark.usefixtures("quick_thread_switches")
@pytest.mark.parametrize("kind", [Weighted, SmoothWeightedRoundRobin])
def test_picks_from_threads_while_the_set_changes(kind: type[Weighted[str]]) -> None:
    publisher = static.Publisher(SETS[0], str)
    lb = kind(publisher)
    valid = {i.address for s in SETS for i in s}
    stop = threading.Event()
    problems: list[object] = []
    picks = [0] * 4

    def worker(index: int) -> None:
        while not stop.is_set():
            try:
                endpoint = lb.endpoint()
            except NoEndpointsError:
                continue
            except BaseException as error:
                problems.append(error)
                return
            if endpoint not in valid:
                problems.append(endpoint)
            picks[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for i in range(2000):
        publisher.replace(SETS[i % len(SETS)])
    stop.set()
    for thread in threads:
        thread.join(10)
    assert problems == []
    assert all(picks)
    publisher.replace(SETS[0])  # and the balancer ends on the last set
    assert {lb.endpoint() for _ in range(300)} == {"10.0.0.1:80", "10.0.0.2:80"}


@pytest.mark.parametrize("kind", [Weighted, SmoothWeightedRoundRobin])
async def test_picks_from_tasks_while_the_set_changes(kind: type[Weighted[str]]) -> None:
    publisher = static.Publisher(SETS[0], str)
    lb = kind(publisher)
    valid = {i.address for s in SETS for i in s}
    stop = asyncio.Event()
    seen: Counter[str] = Counter()

    async def task() -> None:
        while not stop.is_set():
            try:
                seen[lb.endpoint()] += 1
            except NoEndpointsError:
                pass
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(task()) for _ in range(20)]
    for i in range(1000):  # between the tasks' steps (threads: see the test above)
        publisher.replace(SETS[i % len(SETS)])
        await asyncio.sleep(0)
    stop.set()
    await asyncio.gather(*tasks)
    assert set(seen) <= valid
    assert sum(seen.values()) > 0


@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=256))
@example([1] + [1986] * 33)  # the weight-1 share is just under one slot: it once got two
@example([1] * 200 + [10_000] * 7)  # floors of one slot overfill the table by 9: taken back from the big ones
def test_pick_tables_keep_every_share_within_one_slot(weights: list[int]) -> None:
    from loadbalancer.weighted import _table_counts

    size = 1 << 16
    counts = _table_counts(weights, size)
    total = sum(weights)
    assert sum(counts) == size and min(counts) >= 1
    for count, weight in zip(counts, weights, strict=True):
        ideal = weight * size / total
        # one slot of rounding; more only where tiny weights' floor of one slot is paid for
        assert abs(count - ideal) <= max(1, ideal * 0.005), (count, ideal)
        if ideal < 1:
            assert count == 1, (count, ideal)  # a nonzero chance, and no more than that


def test_groups_larger_than_a_table_pick_exactly_by_weight() -> None:
    instances = [Instance(f"10.0.{i // 250}.{i % 250}", 80, weight=1 + (i == 0) * 299) for i in range(300)]
    lb = Weighted(static.Publisher(instances, str), seed=3)
    picks = Counter(lb.endpoint() for _ in range(60_000))
    assert 0.45 < picks["10.0.0.0:80"] / 60_000 < 0.55  # weight 300 of 599
    assert len(picks) == 300
