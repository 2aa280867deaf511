"""An HTTP/1.1 upload sink for the proxy benchmarks: reads each request's body whole, answers 200.

``python benchmarks/_sink.py PORT`` listens on 127.0.0.1:PORT, a thread per connection
(keep-alive), each body read into one 1 MiB buffer with ``recv_into`` (no copies, no
parsing past the head): it takes gigabytes a second, so that a proxy in front of it is what
is measured. Prints ``ready`` once listening.
"""

from __future__ import annotations

import socket
import sys
import threading

_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _serve(conn: socket.socket) -> None:
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    pending = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in pending:
                data = conn.recv(65536)
                if not data:
                    return
                pending += data
            head, _, rest = pending.partition(b"\r\n\r\n")
            left = _length(head) - len(rest)
            pending = rest[len(rest) + left :] if left < 0 else b""
            while left > 0:
                count = conn.recv_into(view[: min(left, len(buffer))])
                if not count:
                    return
                left -= count
            conn.sendall(_ANSWER)


def main() -> None:
    listener = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=128)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
