"""Eureka discovery: instances register themselves with Eureka, a client follows them by application name.

Run it with ``python examples/eureka.py`` against a Eureka server at
``http://127.0.0.1:8761/eureka/`` (or name others with ``--endpoints``), or with ``--throwaway``
to start this project's Eureka API test server on a free loopback port.

Two small HTTP servers on 127.0.0.1 play application ``api``: each registers with an
``eureka.Registrar``. A client follows ``api`` with an ``eureka.Publisher`` (a full fetch,
then a delta every 0.5 s) and calls the instances through ``RoundRobin`` and ``Retry``;
one instance is taken out of service, then leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from loadbalancer import Retry, RoundRobin, eureka


def serve(name: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def factory(instance: str) -> Callable[[object], str]:
    """``"host:port"`` -> an endpoint that GETs ``/`` there."""

    def call(request: object) -> str:
        return httpx.get(f"http://{instance}/", timeout=1.0).raise_for_status().text

    return call


@contextlib.contextmanager
def eureka_servers(args: argparse.Namespace) -> Iterator[str]:
    if not args.throwaway:
        yield args.endpoints
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/eureka_daemon.py
    from tests.eureka_daemon import EurekaServer

    with EurekaServer() as server:
        yield server.url


def wait_for(publisher: eureka.Publisher[Any], count: int) -> None:
    for _ in range(100):
        if len(publisher.endpoints()) == count:
            return
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--endpoints", default="http://127.0.0.1:8761/eureka/", help="Eureka service URLs, comma-separated"
    )
    parser.add_argument("--throwaway", action="store_true", help="start a Eureka API test server on loopback")
    args = parser.parse_args()
    with eureka_servers(args) as endpoints:
        servers = [serve(f"api-{n}") for n in (1, 2)]
        registrars = [
            eureka.Registrar("api", f"127.0.0.1:{s.server_address[1]}", endpoints=endpoints, instance_id=f"api-{n}")
            for n, s in enumerate(servers, 1)
        ]
        for registrar in registrars:
            registrar.register()
        print(f"registered api-1 and api-2 with {endpoints}")
        with eureka.Publisher("api", factory, endpoints=endpoints, interval=0.5) as publisher:
            publisher.wait_ready(10)
            balanced = Retry(3, 2.0, RoundRobin(publisher))
            wait_for(publisher, 2)
            print("calls:", sorted(balanced(None) for _ in range(2)))

            registrars[0].set_status("OUT_OF_SERVICE")
            wait_for(publisher, 1)
            print("api-1 out of service; calls:", [balanced(None) for _ in range(2)])

            registrars[0].set_status("UP")
            wait_for(publisher, 2)
            print("api-1 up again; instances:", len(publisher.endpoints()))

            registrars[1].close()
            wait_for(publisher, 1)
            print("api-2 cancelled; calls:", [balanced(None) for _ in range(2)])
        for registrar in registrars:
            registrar.close()
        for server in servers:
            server.shutdown()


if __name__ == "__main__":
    main()
