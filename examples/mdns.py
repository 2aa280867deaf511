"""mDNS / DNS-SD discovery: no registry at all; instances announce themselves on the local network.

Three small HTTP servers on 127.0.0.1 play the instances of a service ``_lbdemo._tcp``:
each announces itself with an ``mdns.Registrar`` (TXT properties carry a version and a
tag). A client follows the service type with an ``mdns.Publisher``, keeps only the
instances tagged ``v2``, and calls them through ``RoundRobin`` and ``Retry`` while one
instance leaves (its goodbye packets remove it at once).

The announcements go to every host on your local network. To keep them on this machine,
run it inside a network namespace of its own (as root)::

    ip netns add lbdemo && ip -n lbdemo link set lo up
    ip -n lbdemo route add 224.0.0.0/4 dev lo src 127.0.0.1
    ip netns exec lbdemo python examples/mdns.py
    ip netns del lbdemo
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.request import urlopen

from loadbalancer import EndpointSet, Instance, Retry, RoundRobin, mdns

SERVICE = "_lbdemo._tcp.local."
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


def factory(instance: Instance) -> Endpoint:
    """An endpoint for one instance; the Instance carries what its TXT record said."""

    def call(path: str) -> str:
        with urlopen(f"http://{instance}{path}", timeout=1.0) as response:
            return str(response.read().decode())

    return call


def show(endpoints: EndpointSet[Endpoint]) -> None:
    listed = ", ".join(f"{i} version={i.metadata.get('version')}" for i in endpoints.instances) or "none"
    print(f"  -> {len(endpoints)} endpoints: {listed}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s", stream=sys.stdout)
    servers = {name: serve(name) for name in ("api-1", "api-2", "api-old")}
    registrars = [
        mdns.Registrar(
            SERVICE,
            Instance("127.0.0.1", server.server_address[1], tags=("v1",) if name == "api-old" else ("v2",)),
            name=name,
            properties={"version": "1" if name == "api-old" else "2"},
        )
        for name, server in servers.items()
    ]
    for registrar in registrars:
        registrar.register()  # probes for the name, then announces it
    print(f"announced {', '.join(r.key for r in registrars)}")

    publisher = mdns.Publisher(SERVICE, factory, tags=["v2"])
    call = Retry(3, 5.0, RoundRobin(publisher))
    with publisher:
        publisher.wait_ready(10)
        with publisher.subscribe(show):
            print("  calls:", sorted(call("/hello") for _ in range(4)))

            print("\napi-1 shuts down cleanly: its goodbye packets remove it")
            gone = threading.Event()
            with publisher.subscribe(lambda endpoints: len(endpoints) == 1 and gone.set()):
                registrars[0].close()
                servers["api-1"].shutdown()
                gone.wait(10)
            print("  calls:", [call("/hello") for _ in range(2)])

    for registrar in registrars:
        registrar.close()
    for server in servers.values():
        server.shutdown()


if __name__ == "__main__":
    main()
