"""Target 3: replacing a 10,000-instance set in which one instance changed.

``static.Publisher.replace(list_of_strings)`` with ``close_delay=0``: exactly one factory call
(counted), at most 20x the cost of building a ``set`` of the 10,000 instance strings, and
100,000 instances cost at most 12x what 10,000 do. Each timed replace swaps one instance
(the list alternates between two versions that differ in one entry). Also reported: the
caller passing ``Instance`` objects (the same objects each time, or equal but new ones, as
a discovery source that builds them afresh would), and the 10,000 case with the garbage
collector left on.
"""

from __future__ import annotations

import time

import _harness as h

from loadbalancer import Instance, static

ROUNDS = 9


class Counter:
    def __init__(self) -> None:
        self.made = 0
        self.closed = 0

    def factory(self, address: str) -> Endpoint:
        self.made += 1
        return Endpoint(self)


class Endpoint:
    __slots__ = ("counter",)

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    def __call__(self, request: object) -> object:
        return request

    def close(self) -> None:
        self.counter.closed += 1


def addresses(n: int) -> list[str]:
    return [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:{8000 + i % 100}" for i in range(n)]


def two_versions(n: int) -> tuple[list[str], list[str]]:
    a = addresses(n)
    b = list(a)
    b[n // 2] = "10.255.255.255:9999"  # one instance changed, in the middle
    return a, b


def replace_sampler(a: list, b: list, counter: Counter, stats: dict[str, list[int]], name: str) -> h.Sampler:
    """Each call of the sampler's ``run`` alternates the publisher between ``b`` and ``a``."""
    publisher = static.Publisher(a, counter.factory, close_delay=0)
    versions = (a, b)
    done = [0]  # replaces so far: the next one publishes versions[(done + 1) % 2]

    def run(n: int) -> float:
        made = counter.made
        elapsed = 0.0
        for _ in range(n):
            done[0] += 1
            version = versions[done[0] % 2]
            start = time.perf_counter()
            publisher.replace(version)
            elapsed += time.perf_counter() - start
        totals = stats.setdefault(name, [0, 0])
        totals[0] += counter.made - made
        totals[1] += n
        return elapsed / n

    return run


def set_sampler(strings: list[str]) -> h.Sampler:
    return h.stmt_sampler("set(strings)", unroll=1, strings=strings)


def check_one_replace(n: int) -> tuple[int, int]:
    counter = Counter()
    a, b = two_versions(n)
    publisher = static.Publisher(a, counter.factory, close_delay=0)
    made, closed = counter.made, counter.closed
    publisher.replace(b)
    assert len(publisher.endpoints()) == n
    return counter.made - made, counter.closed - closed


def main() -> None:
    started = h.header("target 3: replace a set with one instance changed (close_delay=0)")
    made, closed = check_one_replace(10_000)
    print(
        f"3a. one replace of 10,000 strings: factory calls {made}, endpoints closed {closed}   "
        f"goal exactly 1   {'PASS' if made == 1 else 'MISS'}"
    )

    counter = Counter()
    stats: dict[str, list[int]] = {}
    a10, b10 = two_versions(10_000)
    a100, b100 = two_versions(100_000)
    ia10 = [Instance.parse(s) for s in a10]
    ib10 = list(ia10)
    ib10[5_000] = Instance.parse(b10[5_000])
    ib10_fresh = [Instance.parse(s) for s in b10]  # equal to ia10's but new objects
    cases = {
        "set 10k": set_sampler(a10),
        "replace 10k": replace_sampler(a10, b10, counter, stats, "replace 10k"),
        "replace 10k gc": replace_sampler(a10, b10, counter, stats, "replace 10k gc"),
        "instances 10k same": replace_sampler(ia10, ib10, counter, stats, "instances 10k same"),
        "instances 10k fresh": replace_sampler(ia10, ib10_fresh, counter, stats, "instances 10k fresh"),
        "set 100k": set_sampler(a100),
        "replace 100k": replace_sampler(a100, b100, counter, stats, "replace 100k"),
    }
    samples = h.interleave(cases, ROUNDS, seconds=0.05, keep_gc=("replace 10k gc",))
    calls = {name: made / n for name, (made, n) in stats.items()}
    exact = all(value == 1 for value in calls.values())
    print(
        f"    factory calls per timed replace: {', '.join(f'{k} {v:g}' for k, v in calls.items())}   "
        f"{'PASS' if exact else 'MISS'}"
    )
    base = samples["set 10k"]
    h.report(
        "3b. replace(10,000 strings), one changed",
        "set(strings)  [10,000 strings]",
        base,
        "publisher.replace(strings)",
        samples["replace 10k"],
        goal=20,
    )
    h.report(
        "3c. linear: 100,000 vs 10,000 strings",
        "publisher.replace(10,000 strings)",
        samples["replace 10k"],
        "publisher.replace(100,000 strings)",
        samples["replace 100k"],
        goal=12,
    )
    h.report("    for scale: set() itself", "set(10,000 strings)", base, "set(100,000 strings)", samples["set 100k"])
    h.report(
        "    for scale: replace vs set() at 100,000",
        "set(100,000 strings)",
        samples["set 100k"],
        "publisher.replace(100,000 strings)",
        samples["replace 100k"],
    )
    h.report(
        "    Instance objects, the same ones each time",
        "set(strings)  [10,000 strings]",
        base,
        "publisher.replace(instances)",
        samples["instances 10k same"],
    )
    h.report(
        "    Instance objects, equal but new ones",
        "set(strings)  [10,000 strings]",
        base,
        "publisher.replace(instances)",
        samples["instances 10k fresh"],
    )
    h.report(
        "    strings, garbage collector on",
        "set(strings)  [10,000 strings]",
        base,
        "publisher.replace(strings)",
        samples["replace 10k gc"],
    )
    h.footer(started)


if __name__ == "__main__":
    main()
