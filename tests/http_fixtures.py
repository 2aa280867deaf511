"""Child-process HTTP backends (``tests/http_server.py``) for the HTTP client tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from .daemon import free_tcp_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HttpBackend:
    """One ``tests.http_server`` process on 127.0.0.1; ``kill()`` it, ``start()`` it again on its port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_tcp_port()
        self.address = f"127.0.0.1:{self.port}"
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> HttpBackend:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.http_server", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if line.strip() != "ready":
            error = self._process.stderr.read() if self._process.stderr else ""
            self.kill()
            raise RuntimeError(f"HTTP backend on port {self.port} did not start: {error[-2000:]}")
        return self

    def counts(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://{self.address}/admin/counts", timeout=5) as answer:
            counts: dict[str, int] = json.load(answer)
            return counts

    def mode(self, mode: str) -> None:
        with urllib.request.urlopen(f"http://{self.address}/admin/mode/{mode}", timeout=5) as answer:
            answer.read()

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
                process.wait(5)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> HttpBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


@contextlib.contextmanager
def running(count: int) -> Iterator[list[HttpBackend]]:
    """``count`` HTTP backends (child processes), stopped on leaving."""
    started: list[HttpBackend] = []
    try:
        for _ in range(count):
            started.append(HttpBackend().start())
        yield started
    finally:
        for backend in started:
            backend.kill()


def answer(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    return data


class Load:
    """Requests sent from several threads until the ``under_load`` block ends: ``done``, ``failures``."""

    def __init__(self) -> None:
        self.done = 0
        self.failures: list[BaseException] = []


@contextlib.contextmanager
def under_load(request: Callable[[], object], threads: int = 4) -> Iterator[Load]:
    """Call ``request()`` in a loop on ``threads`` threads while the block runs; a raise is a failure."""
    load = Load()
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                request()
                load.done += 1
            except Exception as error:
                load.failures.append(error)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield load
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
