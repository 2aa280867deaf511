"""Quick start: three HTTP backends on loopback, one of them failing, behind RoundRobin + Retry.

Run it with ``python examples/quickstart.py``; it needs nothing outside this machine.
"""

from __future__ import annotations

import collections
import http.server
import logging
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable

import loadbalancer
from loadbalancer import RoundRobin, static

Endpoint = Callable[[str], str]


class Backend(http.server.BaseHTTPRequestHandler):
    """Answers ``GET /<anything>`` with its own port, or 503 when the server is marked failing."""

    def do_GET(self) -> None:
        port = self.server.server_address[1]  # type: ignore[index]
        failing = getattr(self.server, "failing", False)
        body = f"backend {port} says hello to {self.path[1:]}".encode()
        self.send_response(503 if failing else 200)
        self.send_header("Content-Length", "0" if failing else str(len(body)))
        self.end_headers()
        if not failing:
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep the demo's output readable
        pass


def start_backend(failing: bool = False) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    server.failing = failing  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


attempts: collections.Counter[str] = collections.Counter()


def factory(instance: str) -> Endpoint:
    """Turn "host:port" into an endpoint: a function that sends one request there."""

    def call(name: str) -> str:
        attempts[instance] += 1
        # The time left before Retry's deadline becomes this request's own timeout.
        timeout = loadbalancer.remaining() or 2.0
        with urllib.request.urlopen(f"http://{instance}/{name}", timeout=timeout) as response:
            body: bytes = response.read()
            return body.decode()

    return call


def main() -> None:
    # The library logs through the standard logger "loadbalancer"; show its warnings inline.
    logging.basicConfig(level=logging.WARNING, format="  log: %(message)s", stream=sys.stdout)
    servers = [start_backend(), start_backend(), start_backend(failing=True)]
    instances = [f"127.0.0.1:{s.server_address[1]}" for s in servers]
    print("backends:", ", ".join(instances[:2]), "ok;", instances[2], "fails every request with 503")

    publisher = static.Publisher(instances, factory)
    call = loadbalancer.Retry(3, 2.0, RoundRobin(publisher), retry_on=(urllib.error.URLError, OSError))

    answers: collections.Counter[str] = collections.Counter()
    failures = 0
    for i in range(30):
        try:
            answer = call(f"request-{i}")
        except loadbalancer.RetryError as error:
            failures += 1
            print("failed:", error)
        else:
            answers[answer.split()[1]] += 1
    print(f"\n30 requests through {call!r}:")
    print(
        f"  {sum(answers.values())} answered, {failures} failed; {attempts[instances[2]]} attempts hit the failing"
        " backend and were retried on the next one"
    )
    for port, count in sorted(answers.items()):
        print(f"  backend {port} answered {count}")

    publisher.replace(instances[:2])  # e.g. a config reload drops the failing backend
    attempts.clear()
    for i in range(10):
        call(f"after-replace-{i}")
    print(f"\nafter replace() drops the failing backend: 10 requests took {sum(attempts.values())} attempts")

    publisher.close()

    # Outlier ejection: the failing backend is taken out after 3 failures in a row, so later
    # requests stop paying an attempt for it (it is let back in to try again after 30 s).
    detector = loadbalancer.OutlierDetector(static.Publisher(instances, factory), consecutive_failures=3)
    call = loadbalancer.Retry(3, 2.0, RoundRobin(detector), retry_on=(urllib.error.URLError, OSError))
    attempts.clear()
    print("\nwith OutlierDetector(consecutive_failures=3):")  # before the requests: their log line follows it
    for i in range(30):
        call(f"ejection-{i}")
    print(
        f"  {detector.ejected()} ejected;"
        f" 30 requests took {sum(attempts.values())} attempts, {attempts[instances[2]]} of them on the failing backend"
    )
    detector.close()
    for server in servers:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
