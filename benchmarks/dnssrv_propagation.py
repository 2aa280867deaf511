"""Propagation: from a DNS update to a subscriber being called, with ``interval=0.2``.

Starts its own BIND on loopback, makes 50 changes to an SRV record with RFC 2136 updates,
each at a random point of the publisher's polling cycle, and times each one from just
before the update is sent to the moment the subscriber sees the new set. The bound is
``interval`` + 100 ms: a poll every ``interval`` (jitter only shortens the wait), then a lookup.

    .venv/bin/python benchmarks/dnssrv_propagation.py [--changes 50] [--interval 0.2]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadbalancer import EndpointSet, dnssrv
from tests.servers import BindServer, require_named_or_exit


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.2)
    args = parser.parse_args()
    require_named_or_exit()
    bound = args.interval + 0.1

    with BindServer() as bind:
        bind.set_srv("_api._tcp", [(10, 1, 1000, "app")])
        seen: dict[int, float] = {}
        arrived = threading.Condition()

        def on_update(endpoints: EndpointSet[Any]) -> None:
            now = time.monotonic()
            with arrived:
                for instance in endpoints.instances:
                    seen.setdefault(instance.port, now)
                arrived.notify_all()

        publisher = dnssrv.Publisher(bind.name("_api._tcp"), args.interval, str, resolver=bind.resolver())
        publisher.subscribe(on_update)
        latencies: list[float] = []
        for change in range(args.changes):
            time.sleep(random.uniform(0, args.interval))  # a random point of the polling cycle
            port = 1001 + change
            sent = time.monotonic()
            bind.set_srv("_api._tcp", [(10, 1, port, "app")])
            with arrived:
                if not arrived.wait_for(lambda port=port: port in seen, timeout=10):  # type: ignore[misc]
                    sys.exit(f"change {change} was not seen within 10 s")
            latencies.append(seen[port] - sent)
        publisher.close()

    latencies.sort()
    median, worst = statistics.median(latencies), latencies[-1]
    p90 = latencies[int(0.9 * (len(latencies) - 1))]
    within = sum(1 for latency in latencies if latency <= bound)
    print(
        f"dnssrv propagation: {len(latencies)} changes, interval={args.interval:g} s,"
        f" bound interval + 100 ms = {bound * 1e3:.0f} ms"
    )
    print(f"  median {median * 1e3:6.1f} ms   ({median / bound:.2f} of the bound)")
    print(f"  p90    {p90 * 1e3:6.1f} ms")
    print(f"  max    {worst * 1e3:6.1f} ms   ({worst / bound:.2f} of the bound)")
    print(f"  within the bound: {within}/{len(latencies)}")


if __name__ == "__main__":
    main()
