"""HTTP seeds (``tests/seed_server.py``) as child processes on loopback."""

from __future__ import annotations

import json
import os
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import httpx

from tests.daemon import Server, free_tcp_port

ROOT = Path(__file__).resolve().parent.parent


class SeedServer(Server):
    """One seed: ``publish(name, document)`` writes what ``url(name)`` answers.

    ``certs`` (the files of ``tests.etcd_server.make_certs``): serve HTTPS, and with
    ``client_cert_auth`` require a client certificate signed by the test CA.
    """

    def __init__(self, *, certs: dict[str, str] | None = None, client_cert_auth: bool = False) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="seed-")), "seed.log")
        self.files = self.dir / "files"
        self.files.mkdir()
        self.port = free_tcp_port()
        self.base = f"{'https' if certs else 'http'}://127.0.0.1:{self.port}/"
        self._tls: list[str] = []
        verify: ssl.SSLContext | bool = True
        if certs is not None:
            self._tls = ["--cert", certs["server_cert"], "--key", certs["server_key"]]
            if client_cert_auth:
                self._tls += ["--client-ca", certs["ca"]]
            verify = ssl.create_default_context(cafile=certs["ca"])
            verify.load_cert_chain(certs["client_cert"], certs["client_key"])
        self._http = httpx.Client(verify=verify, timeout=5.0)

    def url(self, name: str = "instances.json") -> str:
        return self.base + name

    def publish(self, document: Any, name: str = "instances.json") -> None:
        temporary = self.files / f".{name}.tmp"
        temporary.write_text(json.dumps(document))
        os.replace(temporary, self.files / name)

    def start(self) -> Self:
        self.spawn([sys.executable, str(ROOT / "tests" / "seed_server.py"), "--port", str(self.port),
                    "--dir", str(self.files), *self._tls])  # fmt: skip
        end = time.monotonic() + 20
        while True:
            self.exited("the seed server")
            try:
                self._http.get(self.base + "_stats", timeout=1.0)
                return self
            except httpx.HTTPError:
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError(f"the seed server did not answer:\n{self.log_tail()}") from None
                time.sleep(0.05)

    def stats(self) -> dict[str, int]:
        return dict(self._http.get(self.base + "_stats").json())

    def close(self) -> None:
        super().close()
        self._http.close()
