"""Clients that behave as attackers and careless clients do, and readings of a proxy worker's memory."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from .helpers import eventually


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def rss(pid: int) -> int:
    """Resident memory of ``pid``, bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything until the other side closes (a timeout is a failure)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    """Bytes up to and including ``marker``."""
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before {marker!r}: {data[-300:]!r}")
        data += chunk
    return data


def ask(port: int, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything answered until the proxy closes it."""
    with connect(port) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def settled(read: Callable[[], int], quiet: float = 0.5, timeout: float = 30.0) -> int:
    """``read()`` once it has stopped changing for ``quiet`` seconds (a writer blocked by backpressure)."""
    value, since = read(), time.monotonic()

    def still() -> bool:
        nonlocal value, since
        now = read()
        if now != value:
            value, since = now, time.monotonic()
            return False
        return time.monotonic() - since >= quiet

    eventually(still, timeout, "the writer to stop")
    return value
