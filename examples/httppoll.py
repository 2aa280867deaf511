"""HTTP polling discovery: two seeds say which instances they know; a client merges and follows them.

Run it with ``python examples/httppoll.py``: it serves two seed files from 127.0.0.1 with
Python's ``http.server`` (which answers ``If-Modified-Since`` with ``304``), and follows
them with ``httppoll.Publisher``, polling every 0.2 s. One seed's list changes, then that
seed goes away: its last answer is kept while the other still answers.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from loadbalancer import Instance, httppoll


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def seed(directory: Path) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def write(directory: Path, instances: list[object]) -> None:
    (directory / "peers.json").write_text(json.dumps(instances))


def show(publisher: httppoll.Publisher[Instance], what: str) -> None:
    time.sleep(1.5)  # a few polls (and http.server's Last-Modified has one-second resolution)
    listed = ", ".join(
        f"{i}{' v' + i.metadata['version'] if 'version' in i.metadata else ''}" for i in publisher.endpoints()
    )
    print(f"{what}: {listed}{'  [stale]' if publisher.endpoints().stale else ''}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s", stream=sys.stdout)
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        first, second = Path(one), Path(two)
        write(first, ["127.0.0.1:9001", {"id": "b", "address": "127.0.0.1", "port": 9002, "version": "1.4"}])
        c = {"id": "c", "name": "api", "address": "127.0.0.1", "port": 9003, "status": "passing"}
        d = {"id": "d", "name": "api", "address": "127.0.0.1", "port": 9004, "status": "critical"}  # left out
        write(second, [c, d])
        servers = [seed(first), seed(second)]
        seeds = [f"http://127.0.0.1:{s.server_address[1]}/peers.json" for s in servers]
        with httppoll.Publisher(seeds, service="api", interval=0.2) as publisher:
            publisher.wait_ready(10)
            show(publisher, "merged")
            write(first, ["127.0.0.1:9001", {"id": "b", "address": "127.0.0.1", "port": 9005, "version": "1.5"}])
            show(publisher, "b moved")
            servers[0].shutdown()
            servers[0].server_close()  # connections refused from now on
            show(publisher, "first seed down, its last answer kept")
            requests = publisher.requests
            print(f"requests: {requests['200']} read, {'most' if requests['304'] > 10 else 'few'} not modified")
        servers[1].shutdown()


if __name__ == "__main__":
    main()
