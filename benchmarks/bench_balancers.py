"""Pick cost of every balancer against ``RoundRobin``'s pick, measured in the same run.

Goal: a pick costs at most 3x ``RoundRobin.endpoint()``. Subjects are ``lb.endpoint()`` as
a user writes it (attribute lookup included), each over the same 10-endpoint
``static.Publisher`` (weights 1..10 for the weighted balancers; no calls in flight).
``ConsistentHash`` is measured with a short ``str`` key and with a ``bytes`` key, its table
warm (keys seen before); a first use of a slot costs more (printed for information), as
does calling through the tracking wrapper that the feedback balancers hand out.
"""

from __future__ import annotations

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
    hashing = ConsistentHash(publisher)
    hashing.endpoint(key="user-12345")  # warm its slot
    hashing.endpoint(key=b"user-12345")

    cases = {"baseline": h.stmt_sampler("lb.endpoint()", lb=rr)}
    for name, lb in subjects.items():
        cases[name] = h.stmt_sampler("lb.endpoint()", lb=lb)
    cases["ConsistentHash str"] = h.stmt_sampler("lb.endpoint(key='user-12345')", lb=hashing)
    cases["ConsistentHash bytes"] = h.stmt_sampler("lb.endpoint(key=b'user-12345')", lb=hashing)
    samples = h.interleave(cases, ROUNDS)

    base = samples.pop("baseline")
    verdicts = {}
    for name, subject in samples.items():
        label = f"lb.endpoint({'key=...' if name.startswith('Consistent') else ''})  [{name}]"
        c = h.report(f"{name} pick, 10 endpoints", "lb.endpoint()  [RoundRobin]", base, label, subject, goal=GOAL)
        verdicts[name] = c.ratio

    # Information: a first use of a hashing slot (the rendezvous over 10 endpoints), and a
    # call through a feedback balancer's wrapper against a call of the raw endpoint.
    cold = ConsistentHash(publisher)
    keys = [f"cold-{i}".encode() for i in range(20_000)]
    slots = len({hash(k) for k in keys})
    seconds = timeit.timeit(lambda: [cold.endpoint(key=k) for k in keys], number=1) / slots
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
