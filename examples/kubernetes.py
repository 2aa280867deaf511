"""Kubernetes discovery: a client follows a Service's EndpointSlices as pods come, drain and go.

Run it with ``python examples/kubernetes.py`` to start the project's Kubernetes API test
server on a free loopback port (no cluster needed), or with ``--kubeconfig PATH`` and
``--namespace NS --service NAME`` to follow a real Service read-only (in a pod, give
``--in-cluster``). Against the test server, the example plays the EndpointSlice controller:
it writes the Service's slices as pods start, turn ready, terminate and are deleted.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from loadbalancer import EndpointSet, Instance, RoundRobin, kubernetes

shown = threading.Event()


def show(endpoints: EndpointSet[Instance]) -> None:
    listed = ", ".join(f"{i} ({i.metadata.get('zone', '-')})" for i in endpoints.instances) or "none"
    print(f"  -> {len(endpoints)} endpoints: {listed}{'  [stale]' if endpoints.stale else ''}")
    shown.set()


def step(text: str, action: object = None) -> None:
    shown.clear()
    print(text)
    if callable(action):
        action()
        shown.wait(30)


def read(publisher: kubernetes.Publisher[Instance], written: dict[str, Any]) -> None:
    """Wait until ``publisher`` has read the ``written`` slice: its set stands at that resourceVersion."""
    version = int(written["metadata"]["resourceVersion"])
    end = time.monotonic() + 30
    while int(publisher.resource_version or 0) < version and time.monotonic() < end:
        time.sleep(0.01)


def demo() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/k8s_api_server.py
    from tests.k8s_api_server import K8sApiServer, endpoint, endpoint_slice

    with K8sApiServer(token="example-token") as server:
        print(f"Kubernetes API test server at {server.url}; Service 'web' in namespace 'shop'")
        pods = [endpoint("10.1.0.5", zone="eu-1a", pod="web-1"), endpoint("10.1.0.6", zone="eu-1b", pod="web-2")]
        server.apply(endpoint_slice("web-x7k2p", "web", pods), "shop")
        config = kubernetes.Config(server.url, token=kubernetes.TokenSource("example-token"))
        publisher = kubernetes.Publisher("web", namespace="shop", port="http", config=config, close_delay=0)
        lb = RoundRobin(publisher)
        with publisher, publisher.subscribe(show):
            publisher.wait_ready(5)
            shown.wait(30)  # ready, and shown: the subscriber runs on the thread that published, after
            print("  picks:", [str(lb.endpoint()) for _ in range(3)])

            starting = endpoint("10.1.0.7", ready=False, zone="eu-1a", pod="web-3")
            step("\nweb-3 starts (not ready yet): not published")
            read(publisher, server.apply(endpoint_slice("web-x7k2p", "web", [*pods, starting]), "shop"))
            ready = endpoint("10.1.0.7", zone="eu-1a", pod="web-3")
            step("web-3 turns ready", lambda: server.apply(endpoint_slice("web-x7k2p", "web", [*pods, ready]), "shop"))

            draining = endpoint("10.1.0.5", ready=False, serving=True, terminating=True, zone="eu-1a", pod="web-1")
            drained = endpoint_slice("web-x7k2p", "web", [draining, pods[1], ready])
            step("\nweb-1 terminates (still serving while it drains): ready endpoints only",
                 lambda: server.apply(drained, "shop"))  # fmt: skip
            print("  picks:", [str(lb.endpoint()) for _ in range(3)])

            step("\nthe watch's history is compacted (410 Gone): the publisher lists again, nothing lost",
                 lambda: (server.control("compact"), server.control("expire"),
                          server.apply(endpoint_slice("web-b2m9q", "web", [endpoint("10.1.0.8", zone="eu-1c")]),
                                       "shop")))  # fmt: skip

            print("\nthe same, by Service name, with the registry facade:")
            with kubernetes.Registry(namespace="shop", config=config) as registry:
                print("  list_services():", registry.list_services())
                print("  discover('web'):", [str(i) for i in registry.discover("web")])


def follow(args: argparse.Namespace) -> None:
    config = kubernetes.Config.in_cluster() if args.in_cluster else None
    publisher = kubernetes.Publisher(
        args.service, namespace=args.namespace, port=args.port, config=config,
        kubeconfig=None if config else args.kubeconfig,
    )  # fmt: skip
    with publisher, publisher.subscribe(show):
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kubeconfig", help="follow a real cluster's Service (read-only)")
    parser.add_argument("--in-cluster", action="store_true", help="in a pod: the service account's configuration")
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--service", default="web")
    parser.add_argument("--port", default=None)
    args = parser.parse_args()
    if args.kubeconfig or args.in_cluster:
        follow(args)
    else:
        demo()


if __name__ == "__main__":
    main()
