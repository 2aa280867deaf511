"""A backend that misbehaves on purpose, for the proxy's limit tests: raw sockets on 127.0.0.1, in a thread.

Paths:
- ``/echo...``: 200, JSON of what arrived (method, path, headers, body) after reading the body;
- ``/bytes/<n>``: 200 with ``n`` bytes, written as fast as the proxy takes them (``written`` counts);
- ``/cut/<n>``: a head promising ``n`` bytes, half of them, then the connection closed;
- ``/early``: ``103 Early Hints`` with a ``Link``, then ``200 ok``;
- ``/stall``: a head promising 10 bytes, 2 of them, then nothing;
- ``/held``: a head promising 5 bytes, then ``hello`` once ``release`` is set (10 s at most);
- ``/slow/<seconds>``: 200 after that long;
- ``/sink``: reads none of the body and never answers;
- ``/refuse``: answers ``413`` at once, before the body, then reads it to its end unused and closes;
- ``/ws``: a WebSocket handshake answered ``101``, then every byte sent back upper-cased;
- ``/trickle...``: reads the body slowly (16 KiB, then a pause), then answers 200 with JSON of
  its length and SHA-256: the proxy must hold what it read of the client meanwhile.
``seen`` counts requests by ``METHOD path``, ``accepted`` the connections.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import socket
import threading
import time


class RawBackend:
    """One listening socket; a thread per connection (keep-alive)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.seen: collections.Counter[str] = collections.Counter()
        self.written = 0
        self.accepted = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._closing = False
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> RawBackend:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self.listener.close()
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def count(self, key: str) -> int:
        with self._lock:
            return self.seen[key]

    def _accept(self) -> None:
        while not self._closing:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self._sockets.append(sock)
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
                lowered = {name.lower(): value for name, value in headers}
                with self._lock:
                    self.seen[f"{method} {path}"] += 1
                if path == "/sink":
                    time.sleep(3600)
                    return
                if path == "/refuse":
                    self._refuse(sock)
                    return
                length = int(lowered.get("content-length", "0"))
                trickle = path.startswith("/trickle")
                while len(buffer) < length:
                    if trickle:
                        time.sleep(0.002)
                    chunk = sock.recv(16384 if trickle else 65536)
                    if not chunk:
                        return
                    buffer += chunk
                body, buffer = buffer[:length], buffer[length:]
                if not self._answer(sock, method, path, headers, body, buffer):
                    return
        except OSError:
            return
        finally:
            sock.close()

    @staticmethod
    def _refuse(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")
        # A lingering close, as servers do: closed with the body unread, the socket would reset
        # the connection, and the reset can reach the proxy before the answer is read.
        sock.shutdown(socket.SHUT_WR)
        time.sleep(0.3)  # the proxy reads the answer while the body is still coming
        sock.settimeout(2)
        with contextlib.suppress(OSError):
            while sock.recv(1 << 20):
                pass

    def _answer(
        self, sock: socket.socket, method: str, path: str, headers: list[tuple[str, ...]], body: bytes, rest: bytes
    ) -> bool:
        """Answer one request; False when the connection is done."""
        if path.startswith("/bytes/"):
            total = int(path.rsplit("/", 1)[1])
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
            block = b"x" * (1 << 20)
            while total:
                piece = block[: min(total, len(block))]
                sock.sendall(piece)
                with self._lock:
                    self.written += len(piece)
                total -= len(piece)
            return True
        if path.startswith("/cut/"):
            total = int(path.rsplit("/", 1)[1])
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (total, b"x" * (total // 2)))
            return False
        if path == "/early":
            sock.sendall(
                b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
            )
            return True
        if path == "/dribble":  # a 103 and the final head, a byte a write: the proxy reads them in pieces
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            answer = (
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nCONNECTION: keep-alive, X-Hop\r\nX-Hop: this hop only\r\n"
                b"Keep-Alive: timeout=5\r\nX-End: to-end\r\nContent-Length: 2\r\n\r\nok"
            )
            for at in range(len(answer)):
                sock.sendall(answer[at : at + 1])
                time.sleep(0.001)
            return True
        if path.startswith("/big-head/"):
            size = int(path.rsplit("/", 1)[1])
            sock.sendall(b"HTTP/1.1 200 OK\r\nx-big: %b\r\ncontent-length: 2\r\n\r\nok" % (b"b" * size))
            return True
        if path == "/stall":
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab")
            time.sleep(3600)
            return False
        if path == "/held":
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
            self.release.wait(10)
            sock.sendall(b"hello")
            return True
        if path.startswith("/slow/"):
            time.sleep(float(path.rsplit("/", 1)[1]))
        if path.startswith("/trickle"):
            digest = json.dumps({"length": len(body), "sha256": hashlib.sha256(body).hexdigest()}).encode()
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(digest), digest))
            return True
        if path == "/ws":
            sock.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                b"sec-websocket-accept: test\r\n\r\n"
            )
            if rest:
                sock.sendall(rest.upper())
            while chunk := sock.recv(65536):
                sock.sendall(chunk.upper())
            return False
        answer = json.dumps(
            {"method": method, "path": path, "headers": [list(pair) for pair in headers], "body": body.decode()}
        ).encode()
        sock.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (len(answer), answer)
        )
        return True
