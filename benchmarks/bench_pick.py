"""Target 1: a pick costs at most 2x ``itertools.cycle(endpoints).__next__``.

Subject: ``lb.endpoint()`` as a user writes it (attribute lookup included), ``lb`` a
``RoundRobin`` over a 10-endpoint ``static.Publisher``. ``Random.endpoint()`` is measured
against the same baseline for information.
"""

from __future__ import annotations

import itertools

import _harness as h

from loadbalancer import Random, RoundRobin, static

ROUNDS = 25


def main() -> None:
    started = h.header("target 1: balancer pick")
    publisher = static.Publisher([f"10.0.0.{i}:8080" for i in range(1, 11)], lambda address: address)
    lb = RoundRobin(publisher)
    rnd = Random(publisher, seed=1)
    nxt = itertools.cycle(list(publisher.endpoints())).__next__
    assert sorted(lb.endpoint() for _ in range(10)) == sorted(publisher.endpoints())

    samples = h.interleave(
        {
            "baseline": h.stmt_sampler("nxt()", nxt=nxt),
            "roundrobin": h.stmt_sampler("lb.endpoint()", lb=lb),
            "random": h.stmt_sampler("lb.endpoint()", lb=rnd),
            "bound": h.stmt_sampler("pick()", pick=lb.endpoint),
        },
        ROUNDS,
    )
    base = samples["baseline"]
    h.report(
        "1. RoundRobin.endpoint(), 10 endpoints",
        "nxt()  [nxt = itertools.cycle(eps).__next__]",
        base,
        "lb.endpoint()  [lb = RoundRobin(publisher)]",
        samples["roundrobin"],
        goal=2,
    )
    bound = h.Comparison(base, samples["bound"])
    print(
        f"    info      without the attribute lookup (pick = lb.endpoint; pick()): {h.fmt(bound.subject).strip()},"
        f" {bound.ratio:.2f}x"
    )
    h.report(
        "   Random.endpoint(), same publisher",
        "nxt()",
        base,
        "lb.endpoint()  [lb = Random(publisher)]",
        samples["random"],
    )
    publisher.close()
    h.footer(started)


if __name__ == "__main__":
    main()
