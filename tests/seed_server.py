"""A seed for HTTP polling discovery, for tests: ``python tests/seed_server.py --port P --dir D``.

A plain ``http.server`` that serves the files of ``D`` as JSON, with an ``ETag`` (a hash
of the content) and ``Last-Modified``; a request whose ``If-None-Match`` matches gets
``304 Not Modified``. A missing file is 404. ``GET /_stats`` counts the answers by status.
With ``--cert``/``--key`` it speaks HTTPS (and with ``--client-ca`` asks for a client
certificate).
"""

from __future__ import annotations

import argparse
import collections
import email.utils
import hashlib
import json
import os
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


class Handler(BaseHTTPRequestHandler):
    root: Path
    stats: collections.Counter[str]
    lock: threading.Lock
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        with self.lock:
            self.stats[str(status)] += 1
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path).lstrip("/")
        if path == "_stats":
            with self.lock:
                body = json.dumps(dict(self.stats)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        file = self.root / path
        if "/" in path or not file.is_file():
            self._answer(404)
            return
        body = file.read_bytes()
        etag = '"' + hashlib.sha1(body).hexdigest() + '"'
        modified = email.utils.formatdate(os.stat(file).st_mtime, usegmt=True)
        if self.headers.get("If-None-Match") == etag:
            self._answer(304, headers={"ETag": etag})
            return
        self._answer(200, body, {"Content-Type": "application/json", "ETag": etag, "Last-Modified": modified})


def main() -> None:
    parser = argparse.ArgumentParser(description="a JSON seed with ETags, for tests")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--cert", help="serve HTTPS with this certificate (PEM) and --key")
    parser.add_argument("--key", help="the key of --cert (PEM)")
    parser.add_argument("--client-ca", help="with --cert: require a client certificate signed by this CA (PEM)")
    args = parser.parse_args()
    handler = type(
        "SeedHandler", (Handler,), {"root": args.dir, "stats": collections.Counter(), "lock": threading.Lock()}
    )
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    scheme = "http"
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        if args.client_ca:
            context.load_verify_locations(args.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    print(f"seed on {scheme}://127.0.0.1:{args.port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
