"""DNS SRV discovery: a publisher follows a real BIND 9 whose records change while it runs.

Run it with ``python examples/dnssrv.py``. It starts a throwaway BIND on 127.0.0.1 (it needs
``named``: ``apt-get install bind9``), changes the SRV records of ``_api._tcp.example.test.``
with dynamic updates, as a deployment would, and shows what the publisher and a
``RoundRobin`` balancer see. Nothing leaves this machine.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/servers.py

from loadbalancer import EndpointSet, RoundRobin, dnssrv
from tests.servers import BindServer, require_named_or_exit

Endpoint = Callable[[str], str]


def factory(instance: str) -> Endpoint:
    """``"host:port"`` -> an endpoint; a real one would hold a connection pool to the instance."""

    def call(request: str) -> str:
        return f"{instance} handled {request}"

    return call


def show(endpoints: EndpointSet[Endpoint]) -> None:
    described = ", ".join(f"{i} (priority {i.priority}, weight {i.weight})" for i in endpoints.instances)
    stale = "  [stale: the last lookup failed]" if endpoints.stale else ""
    print(f"  -> {len(endpoints)} endpoints: {described or 'none'}{stale}")


def main() -> None:
    require_named_or_exit()
    # The library logs through the stdlib logger "loadbalancer": show its warnings in line.
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s", stream=sys.stdout)
    with BindServer() as bind:
        name = bind.name("_api._tcp")
        bind.set_srv("_api._tcp", [(10, 5, 8080, "app-1"), (10, 5, 8080, "app-2")])

        # The resolver names the throwaway server; by default the system's resolver is used.
        # go-kit's form, Publisher(name, interval, factory): a lookup every 0.1 s, each allowed
        # 0.4 s in all (timeout=), the resolver asking again after 0.2 s without an answer.
        resolver = bind.resolver(timeout=0.2)
        publisher = dnssrv.Publisher(name, 0.1, factory, resolver=resolver, timeout=0.4, max_backoff=0.5)
        balancer = RoundRobin(publisher)
        print(f"polling {name} every 0.1 s via 127.0.0.1@{bind.port}")
        subscription = publisher.subscribe(show)
        time.sleep(0.3)
        print("  a call:", balancer.endpoint()("GET /"))

        print("\nscale out: app-3 joins with a higher weight")
        bind.add_srv("_api._tcp", [(10, 20, 8080, "app-3")])
        time.sleep(0.5)
        print("app-1 leaves (its endpoint is closed a second later)")
        bind.delete_srv("_api._tcp", [(10, 5, 8080, "app-1")])
        time.sleep(0.5)

        print("\nthe DNS server goes away: the last good set stays, marked stale")
        bind.stop()
        time.sleep(1.0)
        print("  a call still works:", balancer.endpoint()("GET /"))
        print("the server comes back on the same port: the set is fresh again")
        bind.start()
        time.sleep(1.0)

        print("\nthe service is withdrawn (its name is deleted: NXDOMAIN): NameNotFoundError, the last set kept")
        bind.delete_name("_api._tcp")
        time.sleep(0.5)

        print("\nit is back; a publisher that polls hourly sees it at once on SIGHUP (as ContainerPilot sends)")
        hourly = dnssrv.Publisher(name, interval=3600, factory=factory, resolver=resolver)
        print("  hourly publisher, before:", [str(i) for i in hourly.refresh().instances])
        bind.set_srv("_api._tcp", [(10, 5, 9090, "app-4")])
        with dnssrv.refresh_on_signal(hourly, publisher):
            signal.raise_signal(signal.SIGHUP)
            time.sleep(0.2)
        print("  hourly publisher, after SIGHUP:", [str(i) for i in hourly.endpoints().instances])
        subscription.unsubscribe()
        hourly.close()
        publisher.close()


if __name__ == "__main__":
    main()
