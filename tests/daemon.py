"""What every real server the tests run has in common: a child process, its log, free ports,
and the rule for a server that is not installed (skip locally, fail under ``CI=true``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import NoReturn, Self

_ports_lock = threading.Lock()
_ports_given: set[int] = set()  # handed out but perhaps not bound yet: never hand out twice


def missing(message: str) -> NoReturn:
    """A server the test needs is not installed: skip the test, or fail it when ``CI=true``."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1, never handed out before in this process."""
    with _ports_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


class Daemon:
    """One server process with its output in ``log``: spawn, stop, kill, pause, read the log."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        """Start ``command`` (unless running), its output appended to the log."""
        if self._process is None or self._process.poll() is not None:
            with self.log.open("ab") as log:
                self._process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
        return self._process

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if self.paused:
            process.send_signal(signal.SIGCONT)
            self.paused = False
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: the server disappears at once, as in a crash."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets open but answers nothing (a hung server)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self._process is not None and self.paused:
            self._process.send_signal(signal.SIGCONT)
            self.paused = False

    def exited(self, what: str) -> None:
        """Raise, with the log's tail, if the process has ended (while waiting for it to be ready)."""
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"{what} exited with {self._process.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Server(Daemon):
    """A daemon with a directory of its own: ``with`` starts it, and stops it and removes the directory."""

    def __init__(self, directory: Path, log_name: str) -> None:
        self.dir = directory
        super().__init__(directory / log_name)

    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
