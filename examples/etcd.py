"""etcd discovery: instances register themselves under a lease, a client follows them with a watch.

Run it with ``python examples/etcd.py`` against an etcd on ``http://127.0.0.1:2379`` (or name
another cluster with ``--endpoints "http://10.0.0.1:2379,10.0.0.2:2379"``), or with
``--throwaway`` to start a temporary single-member etcd on a free loopback port (it needs the
``etcd`` binary: ``apt-get install etcd-server``). Everything it writes lives under the
namespace ``/loadbalancer-example`` and goes when it ends.

Three small HTTP servers on 127.0.0.1 play the instances of a service ``api``: each one
registers itself with an ``etcd.Registrar`` (a 2 s lease, kept alive in the background). A
client follows ``/services/api`` with an ``etcd.Publisher`` and calls them through
``RoundRobin`` and ``Retry``, while instances come and go.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from loadbalancer import EndpointSet, Retry, RoundRobin, etcd

Endpoint = Callable[[str], str]
NAMESPACE = "/loadbalancer-example"


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
    """``"host:port"`` -> an endpoint holding a connection pool to that instance."""
    client = httpx.Client(base_url=f"http://{instance}", timeout=1.0)

    def call(path: str) -> str:
        return client.get(path).raise_for_status().text

    call.close = client.close  # type: ignore[attr-defined]  # closed when the instance goes
    return call


def show(endpoints: EndpointSet[Endpoint]) -> None:
    listed = ", ".join(f"{i} (weight {i.weight})" for i in endpoints.instances) or "none"
    print(f"  -> {len(endpoints)} endpoints: {listed}{'  [stale]' if endpoints.stale else ''}")


@contextlib.contextmanager
def cluster(args: argparse.Namespace) -> Iterator[str]:
    if not args.throwaway:
        yield args.endpoints
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/etcd_server.py
    from tests.etcd_server import EtcdServer, require_etcd_or_exit

    require_etcd_or_exit()
    with EtcdServer() as server:
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--endpoints", default="http://127.0.0.1:2379", help="etcd members, comma-separated")
    parser.add_argument("--throwaway", action="store_true", help="start a temporary etcd on loopback")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s", stream=sys.stdout)

    with cluster(args) as endpoints:
        connection = f"{endpoints}{NAMESPACE}"  # the namespace goes before every key
        servers = [serve(f"api-{n}") for n in (1, 2, 3)]
        registrars = [
            etcd.Registrar("/services/api", f"127.0.0.1:{s.server_address[1]}", endpoints=connection, ttl=2)
            for s in servers
        ]
        print(f"etcd at {endpoints}; instances register under {NAMESPACE}/services/api/")
        try:
            registrars[0].register()
        except etcd.EtcdError as error:
            raise SystemExit(f"{error}\n(is etcd running there? --throwaway starts one)") from None
        registrars[1].register()

        publisher = etcd.Publisher("/services/api", factory, endpoints=connection)
        call = Retry(3, 2.0, RoundRobin(publisher))
        with publisher, publisher.subscribe(show):
            publisher.refresh()
            print("  calls:", [call("/hello") for _ in range(2)])

            print("\napi-3 starts and registers itself")
            registrars[2].register()
            time.sleep(0.3)
            print("  calls:", [call("/hello") for _ in range(3)])

            print("\napi-1 shuts down cleanly: its key goes at once")
            registrars[0].close()
            servers[0].shutdown()
            time.sleep(0.3)
            print("  calls:", [call("/hello") for _ in range(2)])

            print("\nthe same, by service name, with the etcd-registry style facade:")
            with etcd.Registry(connection) as registry:
                print("  lookup('api'):", registry.lookup("api"))
                print("  list('api'):  ", [str(i) for i in registry.list("api")])

        for registrar in registrars:
            registrar.close()
        for server in servers:
            server.shutdown()


if __name__ == "__main__":
    main()
