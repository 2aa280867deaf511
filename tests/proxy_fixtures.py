"""``loadbalancer proxy`` as a user runs it: a child process on free loopback ports (and its metrics, in process)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY

from loadbalancer.proxy._metrics import Metrics

from .daemon import free_tcp_port, missing
from .http_fixtures import ROOT


@contextlib.contextmanager
def fresh_metrics() -> Iterator[Metrics]:
    """The proxy's metrics for one test, taken out of prometheus' registry after it (names are unique there)."""
    made = Metrics()
    try:
        yield made
    finally:
        for collector in made.collectors():
            REGISTRY.unregister(collector)


_LISTENING = re.compile(r"listening on (\w+)://[^:]+:(\d+)")


class ProxyProcess:
    """``python -m loadbalancer proxy ARGS`` on 127.0.0.1 (its port chosen by the system)."""

    def __init__(
        self,
        args: list[str],
        directory: Path,
        *,
        workers: int = 2,
        metrics: bool = True,
        env: dict[str, str] | None = None,
        umask: int = -1,
    ) -> None:
        self.env = None if env is None else {**os.environ, **env}
        self.umask = umask
        self.socket = str(directory / f"proxy-{id(self)}.sock")
        self.metrics_port = free_tcp_port() if metrics else 0
        self.command = [
            sys.executable, "-m", "loadbalancer", "proxy", "-p", "0", "--bind", "127.0.0.1",
            "-prometheus-port", str(self.metrics_port), "--socket", self.socket, "--workers", str(workers), *args,
        ]  # fmt: skip
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.scheme = "http"
        self.stderr: list[str] = []
        self.banner = ""  # its first line: where it listens, its workers, whether it is the compiled build

    def start(self) -> ProxyProcess:
        self.process = subprocess.Popen(
            self.command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            umask=self.umask,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True).start()
        line = self.banner = self.process.stdout.readline()
        found = _LISTENING.search(line)
        if found is None:
            self.process.wait(10)
            raise RuntimeError(f"the proxy did not start: {line!r} {''.join(self.stderr)[-3000:]}")
        self.scheme, self.port = found.group(1), int(found.group(2))
        return self

    def _drain(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.stderr.append(line)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def admin(self, text: str) -> str:
        """Write ``text`` to the admin socket; the proxy's answer line."""
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(self.socket)
            sock.sendall(text.encode())
            sock.shutdown(socket.SHUT_WR)  # as `printf ... | nc -U` does: the proxy sees where the input ends
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            return answer.decode()

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by openssl."""
    if shutil.which("openssl") is None:
        missing("openssl is not installed (Debian: openssl)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
