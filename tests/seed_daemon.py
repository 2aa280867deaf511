"""HTTP seeds (``tests/seed_server.py``) as child processes on loopback."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import httpx

from tests.daemon import Server, free_tcp_port

ROOT = Path(__file__).resolve().parent.parent


class SeedServer(Server):
    """One seed: ``publish(name, document)`` writes what ``url(name)`` answers."""

    def __init__(self) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="seed-")), "seed.log")
        self.files = self.dir / "files"
        self.files.mkdir()
        self.port = free_tcp_port()
        self.base = f"http://127.0.0.1:{self.port}/"

    def url(self, name: str = "instances.json") -> str:
        return self.base + name

    def publish(self, document: Any, name: str = "instances.json") -> None:
        temporary = self.files / f".{name}.tmp"
        temporary.write_text(json.dumps(document))
        os.replace(temporary, self.files / name)

    def start(self) -> Self:
        self.spawn([sys.executable, str(ROOT / "tests" / "seed_server.py"), "--port", str(self.port),
                    "--dir", str(self.files)])  # fmt: skip
        end = time.monotonic() + 20
        while True:
            self.exited("the seed server")
            try:
                httpx.get(self.base + "_stats", timeout=1.0)
                return self
            except httpx.HTTPError:
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError(f"the seed server did not answer:\n{self.log_tail()}") from None
                time.sleep(0.05)

    def stats(self) -> dict[str, int]:
        return dict(httpx.get(self.base + "_stats", timeout=5).json())
