"""Pick cost of every balancer against ``RoundRobin``'s pick, measured in the same run.

Goal: a pick costs at most 3x ``RoundRobin.endpoint()``. Subjects are ``lb.endpoint()`` as
a user writes it (attribute lookup included), each over the same 10-endpoint
``static.Publisher`` (weights 1..10 for the weighted balancers; no calls in flight).

``ConsistentHash`` is measured over a spread of user-id-like keys (``user-<8 digits>``),
each case taking the next key from a cycled list (``nxt()``, about 15 ns, is counted in the
subject, and its cost, measured in the same rounds, taken off for the ratio with the goal:
a key must come from somewhere, but that is not the balancer's cost; both are printed):
  warm spread   10,000 distinct keys: they fit its key cache (keys repeat: sessions, users);
  cold spread  100,000 distinct keys, cycled: each key has left the 16,384-key cache before
               it comes back, so every pick hashes (CRC-32 of the UTF-8) and inserts;
and, for information, the cold spread with the cache off (``cache_size=0``), one hot key
(str and bytes) and a first use of a table slot, as well as a call through the tracking
wrapper that the feedback balancers hand out.
"""

from __future__ import annotations

import itertools
import random
import timeit

import _harness as h

from loadbalancer import Instance, Random, RoundRobin, static
from loadbalancer.hashing import ConsistentHash
from loadbalancer.least_loaded import LeastLoaded, PeakEwma
from loadbalancer.weighted import SmoothWeightedRoundRobin, Weighted

ROUNDS = 25
GOAL = 3.0


def endpoint(address: str):  # type: ignore[no-untyped-def]
    def call(request: object) -> object:
        return request

    return call


def main() -> None:
    started = h.header("balancer picks vs RoundRobin.endpoint()")
    instances = [Instance(f"10.0.0.{i}", 8080, weight=i) for i in range(1, 11)]
    publisher = static.Publisher(instances, endpoint)
    rr = RoundRobin(publisher)
    subjects = {
        "Random": Random(publisher, seed=1),
        "Weighted": Weighted(publisher, seed=1),
        "SmoothWeightedRoundRobin": SmoothWeightedRoundRobin(publisher),
        "LeastLoaded": LeastLoaded(publisher, seed=1),
        "PeakEwma": PeakEwma(publisher, seed=1),
    }
    rng = random.Random(1)
    names = rng.sample(range(10**7, 10**8), 110_000)
    warm_keys = [f"user-{n}" for n in names[:10_000]]
    cold_keys = [f"user-{n}" for n in names[10_000:]]
    # One balancer a case (they must not evict each other's keys, and a cache holding str
    # and bytes keys looks up slower than one holding str keys only), every table slot used
    # beforehand, so that a pick hashes or finds its key in the cache, nothing else.
    warm, cold, uncached = ConsistentHash(publisher), ConsistentHash(publisher), ConsistentHash(publisher, cache_size=0)
    hot_bytes = ConsistentHash(publisher)
    for key in cold_keys:
        cold.endpoint(key=key)
        uncached.endpoint(key=key)
    for key in ["user-12345", *warm_keys]:
        warm.endpoint(key=key)
    hot_bytes.endpoint(key=b"user-12345")

    cases = {"baseline": h.stmt_sampler("lb.endpoint()", lb=rr)}
    for name, lb in subjects.items():
        cases[name] = h.stmt_sampler("lb.endpoint()", lb=lb)
    hashed = {
        "ConsistentHash warm spread": (warm, warm_keys),
        "ConsistentHash cold spread": (cold, cold_keys),
        "ConsistentHash cold, cache_size=0": (uncached, cold_keys),
    }
    for name, (lb, keys) in hashed.items():
        cases[name] = h.stmt_sampler("lb.endpoint(key=nxt())", lb=lb, nxt=itertools.cycle(keys).__next__)
    cases["ConsistentHash hot str key"] = h.stmt_sampler("lb.endpoint(key='user-12345')", lb=warm)
    cases["ConsistentHash hot bytes key"] = h.stmt_sampler("lb.endpoint(key=b'user-12345')", lb=hot_bytes)
    cases["nxt()"] = h.stmt_sampler("nxt()", nxt=itertools.cycle(cold_keys).__next__)
    samples = h.interleave(cases, ROUNDS)

    base = samples.pop("baseline")
    key_fetch = samples.pop("nxt()")
    informational = ("cold, cache_size=0", "hot ")
    verdicts = {}
    for name, subject in samples.items():
        info = any(part in name for part in informational)
        label = f"lb.endpoint({'key=...' if name.startswith('Consistent') else ''})  [{name}]"
        spread = "spread" in name or "cache_size=0" in name
        if spread:  # the pick alone: the same round's nxt() taken off
            label = f"lb.endpoint(key=nxt()) - nxt()  [{name.removeprefix('ConsistentHash ')}]"
            net = [s - k for s, k in zip(subject, key_fetch, strict=True)]
        c = h.report(
            f"{name} pick, 10 endpoints",
            "lb.endpoint()  [RoundRobin]",
            base,
            label,
            net if spread else subject,
            goal=None if info else GOAL,
            width=56,
        )
        if spread:
            gross = h.Comparison(base, subject)
            print(
                f"    info      nxt() {h.fmt(min(key_fetch)).strip()} counted in: {gross.ratio:.3g}x"
                f" (range {gross.low:.3g}-{gross.high:.3g})"
            )
        if not info:
            verdicts[name] = c.ratio

    # Information: a first use of a hashing slot (the rendezvous over 10 endpoints), and a
    # call through a feedback balancer's wrapper against a call of the raw endpoint.
    first = ConsistentHash(publisher)
    keys = [f"cold-{i}".encode() for i in range(20_000)]
    slots = len({hash(k) for k in keys})
    seconds = timeit.timeit(lambda: [first.endpoint(key=k) for k in keys], number=1) / slots
    print(f"ConsistentHash first use of a slot (10 endpoints): ~{h.fmt(seconds).strip()} a pick (information)")
    tracked_ll = subjects["LeastLoaded"].endpoint()
    tracked_ewma = subjects["PeakEwma"].endpoint()
    raw = tracked_ll.endpoint
    wrap = h.interleave(
        {
            "raw": h.stmt_sampler("ep(1)", ep=raw),
            "ll": h.stmt_sampler("ep(1)", ep=tracked_ll),
            "ewma": h.stmt_sampler("ep(1)", ep=tracked_ewma),
        },
        ROUNDS,
    )
    h.report("call through LeastLoaded's wrapper", "ep(1)  [raw endpoint]", wrap["raw"], "ep(1)  [wrapper]", wrap["ll"])
    h.report("call through PeakEwma's wrapper", "ep(1)  [raw endpoint]", wrap["raw"], "ep(1)  [wrapper]", wrap["ewma"])

    print("summary (median ratio to RoundRobin.endpoint(), goal <= 3x):")
    for name, ratio in verdicts.items():
        print(f"    {name:<26}{ratio:5.2f}x  {'PASS' if ratio <= GOAL else 'MISS'}")
    publisher.close()
    h.footer(started)


if __name__ == "__main__":
    main()
