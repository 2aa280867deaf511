"""Propagation: from a ZooKeeper node change to a subscriber being called.

Starts its own ZooKeeper on loopback and makes 200 changes under one path (a node created,
then deleted, in turn), each from a separate kazoo client, as another process would. Each
change is timed from just before the request is sent until the subscriber of a
``zookeeper.Publisher`` sees the new set. The baseline, measured for the same changes in the
same run, is a bare kazoo ``ChildrenWatch`` on a client of its own: the time ZooKeeper and
kazoo alone take to report a change. The publisher's extra cost is a data read per new node
and the hand-over to the library's runtime thread.

    .venv/bin/python benchmarks/bench_zookeeper.py [--changes 200]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadbalancer import EndpointSet, zookeeper
from tests.zk_server import ZooKeeperServer, require_zookeeper_or_exit

PATH = "/bench/api"


class Arrivals:
    """When each watched set (as a frozenset of ports) was first seen, by one observer."""

    def __init__(self) -> None:
        self.seen: dict[frozenset[int], float] = {}
        self.changed = threading.Condition()

    def saw(self, ports: frozenset[int]) -> None:
        now = time.perf_counter()
        with self.changed:
            self.seen.setdefault(ports, now)
            self.changed.notify_all()

    def reset(self) -> None:
        with self.changed:
            self.seen.clear()

    def wait(self, ports: frozenset[int], since: float) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: self.seen.get(ports, 0.0) >= since, timeout=10):
                sys.exit(f"set {sorted(ports)} not seen within 10 s")
            return self.seen[ports] - since


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    require_zookeeper_or_exit()
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)  # reconnection chatter at teardown

    with ZooKeeperServer() as server:
        writer, watcher = server.client(), server.client()
        writer.create(f"{PATH}/base", b"127.0.0.1:1000", makepath=True)
        ours, bare = Arrivals(), Arrivals()

        def on_children(children: list[str]) -> None:
            # what a bare watch knows: node names; map them to ports as the test writes them
            bare.saw(frozenset(1000 if name == "base" else int(name[1:]) for name in children))

        watcher.ChildrenWatch(PATH, on_children)

        def on_update(endpoints: EndpointSet[Any]) -> None:
            ours.saw(frozenset(instance.port for instance in endpoints.instances))

        publisher = zookeeper.Publisher(PATH, str, endpoints=server.hosts, close_delay=0)
        publisher.refresh()
        publisher.subscribe(on_update)

        latencies: dict[str, list[float]] = {"publisher": [], "bare": []}
        for change in range(args.changes):
            port = 2000 + change // 2
            created = change % 2 == 0
            expected = frozenset({1000, port} if created else {1000})
            time.sleep(0.005)  # let the last change settle everywhere
            ours.reset()
            bare.reset()
            sent = time.perf_counter()
            if created:
                writer.create(f"{PATH}/n{port}", f"127.0.0.1:{port}".encode())
            else:
                writer.delete(f"{PATH}/n{port}")
            latencies["publisher"].append(ours.wait(expected, sent))
            latencies["bare"].append(bare.wait(expected, sent))
        publisher.close()
        for client in (writer, watcher):
            client.stop()
            client.close()

    print(f"zookeeper propagation: {args.changes} changes (a node created or deleted), change -> callback")
    for name, values in (
        ("bare kazoo ChildrenWatch (baseline)", latencies["bare"]),
        ("zookeeper.Publisher", latencies["publisher"]),
    ):
        print(
            f"  {name:36} median {statistics.median(values) * 1e3:6.2f} ms"
            f"   p99 {percentile(values, 0.99) * 1e3:6.2f} ms   max {max(values) * 1e3:6.2f} ms"
        )
    ratio = statistics.median(latencies["publisher"]) / statistics.median(latencies["bare"])
    print(f"  ratio of medians (publisher / baseline): {ratio:.2f}")


if __name__ == "__main__":
    main()
