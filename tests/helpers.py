"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

import pytest


def eventually(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait until ``condition()`` is true; fail after ``timeout`` seconds (a bound, not a measurement)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.005)


async def aeventually(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.005)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    """The records of the library's event ``name`` (the structlog event travels as ``record.event``)."""
    return [record for record in caplog.records if getattr(record, "event", None) == name]


class Endpoint:
    """A sync endpoint that records its calls and whether it was called after being closed."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.calls = 0
        self.closed = False
        self.called_after_close = False
        self.fail: BaseException | None = None
        self._lock = threading.Lock()

    def __call__(self, request: object) -> str:
        with self._lock:
            self.calls += 1
            if self.closed:
                self.called_after_close = True
        if self.fail is not None:
            raise self.fail
        return f"{self.address}:{request}"

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"Endpoint({self.address!r})"


class AsyncEndpoint(Endpoint):
    """The async twin: ``await endpoint(request)``, closed with ``aclose()``."""

    async def __call__(self, request: object) -> str:  # type: ignore[override]
        await asyncio.sleep(0)
        return Endpoint.__call__(self, request)

    async def aclose(self) -> None:
        await asyncio.sleep(0)
        self.closed = True


class Factory:
    """Counts calls per instance and keeps every endpoint it made."""

    def __init__(self, kind: type[Endpoint] = Endpoint) -> None:
        self.kind = kind
        self.made: list[Endpoint] = []
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, address: str) -> Endpoint:
        endpoint = self.kind(address)
        with self._lock:
            self.calls[address] = self.calls.get(address, 0) + 1
            self.made.append(endpoint)
        return endpoint


def connections_to(ports: set[int]) -> int:
    """This process's open TCP connections (IPv4 and IPv6) to any of ``ports`` on the other end.

    Counted from the kernel's tables, not from the number of open files: a file another part of
    the process opens or closes meanwhile (a socket left for the collector, say) does not count.
    """
    own = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            own.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as file:
                rows = file.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            remote_port, state, inode = int(fields[2].rsplit(":", 1)[1], 16), fields[3], fields[9]
            if inode in own and remote_port in ports and state == "01":  # ESTABLISHED
                count += 1
    return count
