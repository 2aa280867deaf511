"""Real HTTP backends on 127.0.0.1 that answer, fail, hang and die, and clients for them.

``Backend`` serves in a thread of the test process; ``BackendProcess`` runs the same server
in a child process, so that it can be killed for real (SIGKILL) and started again on the
same port. Both are told how to behave through ``mode`` (requests to any path but
``/health``) and ``health`` (``/health``):

- mode: ``ok`` (200, body ``"<port>"``), ``fail`` (500), ``hang`` (never answers), or
  ``slow:<seconds>`` (answers after a delay);
- health: ``ok`` (200), ``down`` (503), ``json-healthy`` (503 with ``{"state": "healthy"}``),
  ``json-draining`` (200 with ``{"state": "draining"}``), ``hang``.

The child process is steered over HTTP (``GET /admin?mode=...&health=...``).
"""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import loadbalancer

from .daemon import free_tcp_port

HOST = "127.0.0.1"


class HttpStatusError(Exception):
    """A backend answered with an error status (the instance's fault: counts as a failure)."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        path, _, query = self.path.partition("?")
        if path == "/admin":
            for key, values in urllib.parse.parse_qs(query).items():
                state[key] = values[0]
            self._answer(200, b"ok")
            return
        behaviour = state["health"] if path == "/health" else state["mode"]
        if behaviour == "hang":
            time.sleep(3600)  # until the server dies; the daemon thread goes with it
            return
        if behaviour.startswith("slow:"):
            time.sleep(float(behaviour[5:]))
            behaviour = "ok"
        if path == "/health":
            status, body = {
                "ok": (200, b"ok"),
                "down": (503, b"down"),
                "json-healthy": (503, b'{"state": "healthy"}'),
                "json-draining": (200, b'{"state": "draining"}'),
            }[behaviour]
        else:
            status, body = (200, str(self.server.server_port).encode()) if behaviour == "ok" else (500, b"failed")
        self._answer(status, body)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__((HOST, port), _Handler)
        self.state = {"mode": "ok", "health": "ok"}


class Backend:
    """An HTTP backend served by a thread of this process; ``stop()`` closes its port."""

    def __init__(self, port: int = 0) -> None:
        self._server = _Server(port)
        self.port = self._server.server_port
        self.address = f"{HOST}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def mode(self) -> str:
        return self._server.state["mode"]

    @mode.setter
    def mode(self, value: str) -> None:
        self._server.state["mode"] = value

    @property
    def health(self) -> str:
        return self._server.state["health"]

    @health.setter
    def health(self, value: str) -> None:
        self._server.state["health"] = value

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BackendProcess:
    """The same server in a child process: ``kill()`` it (SIGKILL), ``start()`` it again on its port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_tcp_port()
        self.address = f"{HOST}:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> BackendProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.backends", str(self.port)],
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return self
            except OSError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    error = self._process.stderr.read().decode() if self._process.stderr else ""
                    self.kill()
                    raise RuntimeError(f"backend on port {self.port} did not start: {error[-2000:]}") from None
                time.sleep(0.02)

    def set(self, **state: str) -> None:
        """Change ``mode`` and/or ``health`` in the child."""
        query = urllib.parse.urlencode(state)
        with urllib.request.urlopen(f"http://{self.address}/admin?{query}", timeout=5) as answer:
            answer.read()

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(5)
        if self._process is not None and self._process.stderr:
            self._process.stderr.close()
        self._process = None

    def __enter__(self) -> BackendProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


# -- clients: the factories tests give to publishers --------------------------------------------


def sync_factory(address: str) -> Any:
    """A sync endpoint: ``call(path)`` GETs it and returns the body; error statuses raise."""

    def call(path: str = "/") -> str:
        timeout = loadbalancer.remaining() or 5.0
        try:
            with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as answer:
                return str(answer.read().decode())
        except urllib.error.HTTPError as error:
            error.close()  # it holds the answer's socket, else left for the collector to report
            raise HttpStatusError(f"{address}: status {error.code}") from None

    return call


def async_factory(address: str) -> Any:
    """An async endpoint: ``await call(path)`` GETs it over a fresh connection; error statuses raise."""
    host, port = address.rsplit(":", 1)

    async def call(path: str = "/") -> str:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
            answer = await reader.read()
        finally:
            writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        if status != 200:
            raise HttpStatusError(f"{address}: status {status}")
        return body.decode()

    return call


if __name__ == "__main__":  # the child of BackendProcess
    _Server(int(sys.argv[1])).serve_forever()
