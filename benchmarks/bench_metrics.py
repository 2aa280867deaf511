"""Metrics cost: what turning Prometheus metrics on costs a pick, a Retry call and a tracked call.

The same balancers and Retry are built twice in one process: before metrics are on, and
after ``loadbalancer.metrics.prometheus()`` (a collector in a registry of its own, so per-call
figures are kept). Goals: a RoundRobin pick and a Retry call that succeeds at once cost
the same either way (<= 1.05x: neither path records anything; what metrics read, they read
when scraped); a tracked call (LeastLoaded) costs at most 1.5 us more with metrics on.

    .venv/bin/python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import _harness as h

from loadbalancer import LeastLoaded, Retry, RoundRobin, static
from loadbalancer import metrics as lbmetrics

ROUNDS = 15
ADDRESSES = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]


def endpoint(address: str):
    return lambda request: request


def build():
    publisher = static.Publisher(ADDRESSES, endpoint, service="bench")
    return RoundRobin(publisher), Retry(3, 5.0, RoundRobin(publisher)), LeastLoaded(publisher)


def main() -> None:
    started = h.header("metrics: off (built before) vs on (built after metrics.prometheus())")
    off = build()
    from prometheus_client import CollectorRegistry

    collector = lbmetrics.prometheus(CollectorRegistry())
    on = build()
    pick_off, pick_on = off[0].endpoint, on[0].endpoint
    call_off, call_on = off[1], on[1]
    lb_off, lb_on = off[2], on[2]
    samples = h.interleave(
        {
            "pick off": h.stmt_sampler("pick()", pick=pick_off),
            "pick on": h.stmt_sampler("pick()", pick=pick_on),
            "retry off": h.stmt_sampler("call(1)", call=call_off),
            "retry on": h.stmt_sampler("call(1)", call=call_on),
            "tracked off": h.stmt_sampler("lb.endpoint()(1)", lb=lb_off),
            "tracked on": h.stmt_sampler("lb.endpoint()(1)", lb=lb_on),
        },
        ROUNDS,
    )
    h.report("1. RoundRobin.endpoint()", "metrics off", samples["pick off"], "metrics on", samples["pick on"], 1.05)
    h.report("2. Retry(3, 5.0, lb)(req), first try", "metrics off", samples["retry off"], "metrics on",
             samples["retry on"], 1.05)  # fmt: skip
    c = h.report("3. LeastLoaded tracked call", "metrics off", samples["tracked off"], "metrics on",
                 samples["tracked on"])  # fmt: skip
    extra = (c.subject - c.baseline) * 1e6
    print(f"    difference {extra:.2f} us per tracked call   goal <= 1.5 us   {'PASS' if extra <= 1.5 else 'MISS'}")
    del collector
    lbmetrics.disable()
    h.footer(started)


if __name__ == "__main__":
    main()
