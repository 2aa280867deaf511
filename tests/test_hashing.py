from __future__ import annotations

import asyncio
import math
import os
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbalancer import Instance, NoEndpointsError, static
from loadbalancer.hashing import ConsistentHash

KEYS = [f"user-{i}" for i in range(3000)]


def addresses(n: int, base: int = 0) -> list[str]:
    return [f"10.0.{(base + i) // 250}.{(base + i) % 250 + 1}:80" for i in range(n)]


def owners(lb: ConsistentHash[str], keys: list[str] = KEYS) -> dict[str, str]:
    return {key: lb.endpoint(key=key) for key in keys}


@pytest.fixture
def quick_thread_switches() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(previous)


def test_a_key_sticks_to_its_endpoint() -> None:
    lb = ConsistentHash(static.Publisher(addresses(5), str))
    first = owners(lb)
    assert owners(lb) == first
    assert len(set(first.values())) == 5
    assert lb.endpoint(key="user-7") == lb.endpoint(key=b"user-7") == lb.endpoint(key=memoryview(b"user-7"))
    # Another balancer (another client) over the same set agrees, whatever the set's order.
    other = ConsistentHash(static.Publisher(list(reversed(addresses(5))), str))
    assert owners(other) == first


def test_owners_are_the_same_in_every_process() -> None:
    # Fixed values: the mapping must not depend on PYTHONHASHSEED, the process, or the
    # Python version (a fleet of clients must agree), so a change here is a breaking one.
    lb = ConsistentHash(static.Publisher(addresses(5), str))
    expected = [lb.endpoint(key=f"user-{i}") for i in range(8)]
    assert expected == GOLDEN
    script = (
        "from loadbalancer import static; from loadbalancer.hashing import ConsistentHash;"
        f"lb = ConsistentHash(static.Publisher({addresses(5)!r}, str));"
        "print(','.join(lb.endpoint(key=f'user-{i}') for i in range(8)))"
    )
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip().split(",") == expected


GOLDEN = [
    "10.0.0.5:80",
    "10.0.0.4:80",
    "10.0.0.3:80",
    "10.0.0.2:80",
    "10.0.0.1:80",
    "10.0.0.3:80",
    "10.0.0.2:80",
    "10.0.0.4:80",
]


def test_removing_an_endpoint_moves_only_its_keys() -> None:
    publisher = static.Publisher(addresses(10), str)
    lb = ConsistentHash(publisher)
    before = owners(lb)
    publisher.replace(addresses(10)[:4] + addresses(10)[5:])  # 10.0.0.5 leaves
    after = owners(lb)
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == "10.0.0.5:80"}
    assert len(moved) / len(KEYS) == pytest.approx(1 / 10, abs=0.03)
    assert Counter(after[k] for k in moved).keys() <= set(addresses(10)) - {"10.0.0.5:80"}
    publisher.replace(addresses(10))  # and when it comes back, exactly those keys return
    assert owners(lb) == before


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), change=st.sampled_from(["add", "remove"]), which=st.integers(0, 19), seed=st.integers())
def test_one_endpoint_more_or_less_moves_about_1_over_n_keys(n: int, change: str, which: int, seed: int) -> None:
    pool = addresses(n, base=random.Random(seed).randrange(5000))
    if change == "remove" and n == 1:
        return
    publisher = static.Publisher(pool, str)
    lb = ConsistentHash(publisher)
    before = owners(lb)
    if change == "add":
        changed = addresses(1, base=6000)[0]
        members = [*pool[: which % (n + 1)], changed, *pool[which % (n + 1) :]]
        share = 1 / (n + 1)
    else:
        changed = pool[which % n]
        members = [a for a in pool if a != changed]
        share = 1 / n
    publisher.replace(members)
    after = owners(lb)
    moved = [key for key in KEYS if before[key] != after[key]]
    # Only keys of the endpoint that changed move: to it when it joins, from it when it leaves.
    assert all(changed in (before[key], after[key]) for key in moved)
    # And there are about 1/n of them (a binomial count: 5 standard deviations of slack).
    sd = math.sqrt(len(KEYS) * share * (1 - share))
    assert abs(len(moved) - len(KEYS) * share) < 5 * sd + 1


def test_shares_follow_weights_and_priority() -> None:
    instances = [
        Instance("10.0.0.1", 80, weight=1),
        Instance("10.0.0.2", 80, weight=2),
        Instance("10.0.0.3", 80, weight=5),
        Instance("10.0.9.9", 80, weight=100, priority=1),  # a backup
    ]
    publisher = static.Publisher(instances, str)
    lb = ConsistentHash(publisher)
    keys = [f"k{i}".encode() for i in range(40_000)]
    counts = Counter(lb.endpoint(key=k) for k in keys)
    assert counts.keys() == {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
    for address, share in (("10.0.0.1:80", 1 / 8), ("10.0.0.2:80", 2 / 8), ("10.0.0.3:80", 5 / 8)):
        assert counts[address] / len(keys) == pytest.approx(share, rel=0.05)
    publisher.replace(instances[3:])  # the group is gone: the backup takes every key
    assert {lb.endpoint(key=k) for k in keys[:100]} == {"10.0.9.9:80"}


def test_equal_weights_share_keys_evenly() -> None:
    lb = ConsistentHash(static.Publisher(addresses(10), str))
    keys = [f"session-{i}" for i in range(100_000)]
    counts = Counter(lb.endpoint(key=k) for k in keys)
    for count in counts.values():
        assert count / len(keys) == pytest.approx(1 / 10, rel=0.05)


def test_keys_are_str_or_bytes() -> None:
    lb = ConsistentHash(static.Publisher(addresses(2), str))
    with pytest.raises(TypeError, match=r"ConsistentHash picks by key: call endpoint\(key=...\)"):
        lb.endpoint()
    with pytest.raises(TypeError, match="a ConsistentHash key must be str or bytes, got int"):
        lb.endpoint(key=42)  # type: ignore[arg-type]
    assert lb.endpoint(key=bytearray(b"abc")) == lb.endpoint(key=b"abc")


def test_empty_sets_raise_no_endpoints() -> None:
    publisher = static.Publisher([], str)
    lb = ConsistentHash(publisher)
    with pytest.raises(NoEndpointsError, match=r"no endpoints available from static.Publisher\(0 instances\)"):
        lb.endpoint(key="a")
    with pytest.raises(TypeError):  # a missing key is a bug, reported first
        lb.endpoint()
    publisher.replace(["a:1"])
    assert lb.endpoint(key="a") == "a:1"
    publisher.replace([])
    with pytest.raises(NoEndpointsError):
        lb.endpoint(key="a")


def test_a_new_endpoint_object_for_the_same_address_is_handed_out() -> None:
    made: list[list[str]] = []

    def factory(address: str) -> list[str]:
        made.append([address])
        return made[-1]

    publisher = static.Publisher(addresses(3), factory)
    lb = ConsistentHash(publisher)
    first = owners(lb)
    publisher.replace(addresses(3)[:2])
    publisher.replace(addresses(3))  # the third comes back with a new endpoint object
    again = owners(lb)
    assert {key: e[0] for key, e in again.items()} == {key: e[0] for key, e in first.items()}
    assert all(any(e is m for m in made[-1:]) for e in again.values() if e[0] == addresses(3)[2])


@pytest.mark.usefixtures("quick_thread_switches")
def test_picks_from_threads_while_the_set_changes() -> None:
    publisher = static.Publisher(addresses(6), str)
    lb = ConsistentHash(publisher)
    stable = owners(ConsistentHash(static.Publisher(addresses(6), str)), KEYS[:200])
    valid = set(addresses(6))
    stop = threading.Event()
    problems: list[object] = []

    def worker(index: int) -> None:
        rng = random.Random(index)
        while not stop.is_set():
            key = rng.choice(KEYS[:200])
            try:
                endpoint = lb.endpoint(key=key)
            except BaseException as error:
                problems.append(error)
                return
            if endpoint not in valid:
                problems.append(endpoint)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    rng = random.Random(1)
    for _ in range(300):
        publisher.replace(rng.sample(addresses(6), rng.randint(1, 6)))
    stop.set()
    for thread in threads:
        thread.join(10)
    assert problems == []
    publisher.replace(addresses(6))
    assert owners(lb, KEYS[:200]) == stable  # tables filled during the churn hold no stale owner


async def test_picks_from_tasks_while_the_set_changes() -> None:
    publisher = static.Publisher(addresses(6), str)
    lb = ConsistentHash(publisher)
    stable = owners(lb, KEYS[:20])
    stop = asyncio.Event()
    seen: Counter[str] = Counter()

    async def task(index: int) -> None:
        while not stop.is_set():
            seen[lb.endpoint(key=KEYS[index])] += 1
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(task(i)) for i in range(20)]
    rng = random.Random(2)
    for _ in range(100):  # between the tasks' steps (threads: see the test above)
        publisher.replace(rng.sample(addresses(6), rng.randint(1, 6)))
        await asyncio.sleep(0)
    publisher.replace(addresses(6))
    stop.set()
    await asyncio.gather(*tasks)
    assert set(seen) <= set(addresses(6))
    assert owners(lb, KEYS[:20]) == stable


class _CountingCrc:
    """Stands in for the module's CRC-32 and counts the keys it hashes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import zlib

        import loadbalancer.hashing

        self.keys: list[bytes] = []

        def crc32(data: bytes) -> int:
            self.keys.append(bytes(data))
            return zlib.crc32(data)

        monkeypatch.setattr(loadbalancer.hashing, "_crc32", crc32)


def test_a_repeated_key_is_hashed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    crc = _CountingCrc(monkeypatch)
    lb = ConsistentHash(static.Publisher(addresses(5), str))
    first = [lb.endpoint(key=k) for k in ("user-1", b"user-2", "user-1", b"user-2", "user-1")]
    assert first[0] == first[2] == first[4] and first[1] == first[3]
    assert crc.keys == [b"user-1", b"user-2"]
    assert lb.endpoint(key=bytearray(b"user-2")) == first[1]  # unhashable: hashed, not cached
    assert lb.endpoint(key=bytearray(b"user-2")) == first[1]
    assert crc.keys == [b"user-1", b"user-2", b"user-2", b"user-2"]


def test_the_key_cache_is_bounded_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    crc = _CountingCrc(monkeypatch)
    lb = ConsistentHash(static.Publisher(addresses(5), str), cache_size=2)
    for key in ("a", "b", "a", "b", "c", "a", "c"):  # "c" finds the cache full: it starts again
        lb.endpoint(key=key)
    assert crc.keys == [b"a", b"b", b"c", b"a"]
    crc.keys.clear()
    off = ConsistentHash(static.Publisher(addresses(5), str), cache_size=0)
    assert [off.endpoint(key="a") for _ in range(3)] == [lb.endpoint(key="a")] * 3
    assert crc.keys == [b"a"] * 3


def test_the_key_cache_starts_again_when_the_set_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    crc = _CountingCrc(monkeypatch)
    publisher = static.Publisher(addresses(5), str)
    lb = ConsistentHash(publisher)
    before = owners(lb, KEYS[:500])
    gone = before["user-1"]
    publisher.replace([a for a in addresses(5) if a != gone])
    after = owners(lb, KEYS[:500])
    assert after["user-1"] != gone and gone not in after.values()
    assert all(after[k] == e for k, e in before.items() if e != gone)
    assert len(crc.keys) == 1000  # every key hashed again, once


@pytest.mark.parametrize("size", [-1, True, 1.5, "16"])
def test_cache_size_must_be_a_non_negative_integer(size: object) -> None:
    with pytest.raises(ValueError, match=f"cache_size must be a non-negative integer, got {size!r}"):
        ConsistentHash(static.Publisher(addresses(2), str), cache_size=size)  # type: ignore[arg-type]
