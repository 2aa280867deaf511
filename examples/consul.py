"""Consul discovery: instances register with the agent under a TTL check, a client follows them with blocking queries.

Run it with ``python examples/consul.py`` against a Consul agent on ``http://127.0.0.1:8500``
(or ``$CONSUL_HTTP_ADDR``, or name another with ``--endpoints``), or with ``--throwaway`` to
start the Consul API test server of this repository on a free loopback port.

Three small HTTP servers on 127.0.0.1 play the instances of a service ``api``; each one
registers itself with a ``consul.Registrar`` (a 2 s TTL check, passed in the background).
A client follows ``api`` with a ``consul.Publisher`` and calls them through ``RoundRobin``
and ``Retry`` while instances come and go.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from loadbalancer import EndpointSet, Instance, Retry, RoundRobin, consul

Endpoint = Callable[[str], str]


def serve(name: str) -> ThreadingHTTPServer:
    """An HTTP server on a free 127.0.0.1 port that answers with its name."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{name} handled {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def factory(instance: str) -> Endpoint:
    client = httpx.Client(base_url=f"http://{instance}", timeout=1.0)

    def call(path: str) -> str:
        return client.get(path).raise_for_status().text

    call.close = client.close  # type: ignore[attr-defined]  # closed when the instance goes
    return call


def show(endpoints: EndpointSet[Endpoint]) -> None:
    listed = ", ".join(f"{i} (weight {i.weight})" for i in endpoints.instances) or "none"
    print(f"  -> {len(endpoints)} endpoints: {listed}{'  [stale]' if endpoints.stale else ''}")


@contextlib.contextmanager
def agent(args: argparse.Namespace) -> Iterator[str]:
    if not args.throwaway:
        yield args.endpoints
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/consul_fixtures.py
    from tests.consul_fixtures import ConsulServer

    with ConsulServer() as server:
        yield server.url


def settle() -> None:
    time.sleep(0.3)  # a demo: give the change time to show before calling


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--endpoints",
        default=os.environ.get("CONSUL_HTTP_ADDR") or "http://127.0.0.1:8500",
        help="the Consul agent's HTTP address (default: $CONSUL_HTTP_ADDR or http://127.0.0.1:8500)",
    )
    parser.add_argument("--throwaway", action="store_true", help="start the Consul API test server on loopback")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s", stream=sys.stdout)

    with agent(args) as address:
        servers = [serve(f"api-{n}") for n in (1, 2, 3)]
        registrars = [
            consul.Registrar("api", Instance("127.0.0.1", s.server_address[1], weight=n), endpoints=address, ttl=2)
            for n, s in enumerate(servers, 1)
        ]
        print(f"Consul at {address}; instances register as service 'api'")
        try:
            registrars[0].register()
        except consul.ConsulError as error:
            raise SystemExit(f"{error}\n(is a Consul agent running there? --throwaway starts a test server)") from None
        registrars[1].register()

        publisher = consul.Publisher("api", factory, endpoints=address)
        call = Retry(3, 2.0, RoundRobin(publisher))
        with publisher, publisher.subscribe(show):
            publisher.refresh()
            print("  calls:", [call("/hello") for _ in range(2)])

            print("\napi-3 starts and registers itself")
            registrars[2].register()
            settle()
            print("  calls:", [call("/hello") for _ in range(3)])

            print("\napi-1 shuts down cleanly: it deregisters")
            registrars[0].close()
            servers[0].shutdown()
            settle()
            print("  calls:", [call("/hello") for _ in range(2)])

            print("\nthe same, by service name, with the registry facade:")
            with consul.Registry(address) as registry:
                print("  discover('api'):", [str(i) for i in registry.discover("api")])
                print("  list_services():", registry.list_services())

        for registrar in registrars:
            registrar.close()
        for server in servers:
            server.shutdown()


if __name__ == "__main__":
    main()
