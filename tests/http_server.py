"""An HTTP/1.1 backend for the HTTP client tests, run as a child process: ``python -m tests.http_server PORT``.

Paths (any method):
- ``/echo...``: 200, JSON ``{"port", "method", "path", "body", "host"}``;
- ``/status/<code>``: that status;
- ``/retry-after/<seconds>``: 503 with ``Retry-After: <seconds>`` (always);
- ``/flaky/<n>``: 503 for this server's first ``n`` requests to that path, then 200;
- ``/slow/<seconds>``: 200 after a delay;
- ``/stream/<chunks>/<seconds>``: 200, chunked, a chunk every ``seconds``;
- ``/cache?cc=<Cache-Control>&vary=<Vary>``: 200 with those headers, ``X-Backend: kept`` and a
  body counting this server's answers on that full path (so a cached answer shows an old count);
- ``/health``: 200 (``echo``) until ``/admin/health/<status>/<state>`` sets its answer: that
  status with the body ``{"state": "<state>", "message": ""}`` (state ``none``: a plain body);
- ``/admin/counts``: JSON of requests seen per ``METHOD path``; ``/admin/mode/<mode>``: ``ok``,
  ``down`` (503 to all), ``hang`` (never answers).
It prints ``ready`` on stdout once it listens.
"""

from __future__ import annotations

import collections
import http.server
import json
import sys
import threading
import time
import urllib.parse


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.counts: collections.Counter[str] = collections.Counter()
        self.flaky: collections.Counter[str] = collections.Counter()
        self.mode = "ok"
        self.health: tuple[int, str] | None = None
        self.lock = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path
        server = self.server
        if path.startswith("/admin/"):
            if path == "/admin/counts":
                with server.lock:
                    self._send(200, json.dumps(dict(server.counts)).encode())
            elif path.startswith("/admin/health/"):
                _, _, _, status, state = path.split("/")
                server.health = (int(status), state)
                self._send(200, b"ok")
            elif path.startswith("/admin/mode/"):
                server.mode = path.rsplit("/", 1)[1]
                self._send(200, b"ok")
            return
        with server.lock:
            server.counts[f"{self.command} {path}"] += 1
        if server.mode == "hang":
            time.sleep(3600)
            return
        if server.mode == "down":
            self._send(503, b"down")
            return
        parts = path.strip("/").split("/")
        head = parts[0]
        if path == "/health" and server.health is not None:
            status, state = server.health
            said = b"no" if state == "none" else json.dumps({"state": state, "message": ""}).encode()
            self._send(status, said)
        elif head.startswith("cache"):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
            headers = {"X-Backend": "kept"}
            if "cc" in query:
                headers["Cache-Control"] = query["cc"][0]
            if "vary" in query:
                headers["Vary"] = query["vary"][0]
            with server.lock:
                seen = server.counts[f"{self.command} {path}"]
            self._send(200, f"{self.command} {path} answer {seen}".encode(), headers)
        elif head == "status":
            self._send(int(parts[1]), b"status")
        elif head == "retry-after":
            self._send(503, b"busy", {"Retry-After": parts[1]})
        elif head == "flaky":
            with server.lock:
                server.flaky[path] += 1
                seen = server.flaky[path]
            self._send(503 if seen <= int(parts[1]) else 200, str(server.server_address[1]).encode())
        elif head == "slow":
            time.sleep(float(parts[1]))
            self._send(200, str(server.server_address[1]).encode())
        elif head == "stream":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for n in range(int(parts[1])):
                chunk = f"chunk {n}\n".encode()
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
                time.sleep(float(parts[2]))
            self.wfile.write(b"0\r\n\r\n")
        else:
            answer = {
                "port": server.server_address[1],
                "method": self.command,
                "path": path,
                "body": body.decode(errors="replace"),
                "host": self.headers.get("Host"),
            }
            self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = _Server(int(sys.argv[1]))
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
