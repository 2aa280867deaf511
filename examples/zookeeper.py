"""ZooKeeper discovery: instances register themselves, a client follows them with a balancer.

Run it with ``python examples/zookeeper.py``: it starts a throwaway ZooKeeper on 127.0.0.1
(it needs java and the Debian ``zookeeper`` package's jar: ``apt-get install zookeeper``).
Or point it at a ZooKeeper of your own with ``--endpoints 127.0.0.1:2181``; it then uses the
path ``/loadbalancer-example/api`` there and removes what it created.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/zk_server.py

from loadbalancer import EndpointSet, Instance, RoundRobin, zookeeper

Endpoint = Callable[[str], str]
PATH = "/loadbalancer-example/api"


def factory(instance: str) -> Endpoint:
    """``"host:port"`` -> an endpoint; a real one would hold a connection pool to the instance."""

    def call(request: str) -> str:
        return f"{instance} handled {request}"

    return call


def show(endpoints: EndpointSet[Endpoint]) -> None:
    described = ", ".join(f"{i} (weight {i.weight})" for i in endpoints.instances)
    stale = "  [stale: ZooKeeper is out of reach]" if endpoints.stale else ""
    print(f"  -> {len(endpoints)} endpoints: {described or 'none'}{stale}")


def demo(endpoints: str, restart: Callable[[], None] | None) -> None:
    # Each service instance registers itself; here three "instances" share this process.
    # Short session timeouts and reconnection waits keep the demo quick (defaults: 10 s, 5 s).
    quick = {"session_timeout": 2.0, "max_backoff": 0.5}
    app1 = zookeeper.Registrar(PATH, "127.0.0.1:8081", endpoints=endpoints, **quick)
    app2 = zookeeper.Registrar(PATH, Instance("127.0.0.1", 8082, weight=5), endpoints=endpoints, **quick)
    app1.register()
    app2.register()
    print(f"registered {app1.node}\n       and {app2.node}")

    publisher = zookeeper.Publisher(PATH, factory, endpoints=endpoints, **quick)
    balancer = RoundRobin(publisher)
    print(f"\nwatching {PATH} on {endpoints}")
    subscription = publisher.subscribe(show)
    publisher.refresh()
    print("  calls:", [balancer.endpoint()("GET /") for _ in range(2)])

    print("\nscale out: a third instance registers")
    with zookeeper.Registrar(PATH, "127.0.0.1:8083", endpoints=endpoints):
        time.sleep(0.3)
        print("and leaves again (its node is deleted at once)")
    time.sleep(0.3)

    if restart is not None:
        print("\nZooKeeper restarts: the last good set stays, marked stale, then is fresh again")
        restart()
        time.sleep(0.3)

    print("\nshutting down app1 and app2")
    app1.close()
    app2.close()
    time.sleep(0.3)
    subscription.unsubscribe()
    publisher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--endpoints", help="a ZooKeeper connection string (default: start a throwaway server)")
    args = parser.parse_args()
    # The library logs through the stdlib logger "loadbalancer": show its warnings in line.
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s", stream=sys.stdout)
    # kazoo (under the library's logger) reports every reconnection attempt
    logging.getLogger("loadbalancer.zookeeper.kazoo").setLevel(logging.ERROR)
    if args.endpoints:
        demo(args.endpoints, None)
        return

    from tests.zk_server import ZooKeeperServer, require_zookeeper_or_exit

    require_zookeeper_or_exit()
    with ZooKeeperServer() as server:

        def restart() -> None:
            server.stop()
            time.sleep(1.0)
            server.start()

        demo(server.hosts, restart)


if __name__ == "__main__":
    main()
