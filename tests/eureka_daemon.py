"""The Eureka API test server (``tests/eureka_api_server.py``) as a child process."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import httpx

from tests.daemon import Server, free_tcp_port

ROOT = Path(__file__).resolve().parent.parent


class EurekaServer(Server):
    """``tests/eureka_api_server.py`` on a free 127.0.0.1 port; ``url`` is its service URL."""

    def __init__(self, *, retention: float = 180.0, eviction_interval: float = 0.2, port: int | None = None) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="eureka-")), "eureka.log")
        self.port = port or free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}/eureka/"
        self._args = ["--retention", str(retention), "--eviction-interval", str(eviction_interval)]

    def start(self) -> Self:
        self.spawn(
            [sys.executable, str(ROOT / "tests" / "eureka_api_server.py"), "--port", str(self.port), *self._args]
        )
        end = time.monotonic() + 20
        while True:
            self.exited("the Eureka API server")
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/_test/stats", timeout=1.0)
                return self
            except httpx.HTTPError:
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError(f"the Eureka API server did not answer:\n{self.log_tail()}") from None
                time.sleep(0.05)

    # helpers for tests: the REST API as a plain client
    def get(self, path: str) -> Any:
        return httpx.get(self.url + path, headers={"Accept": "application/json"}, timeout=5).json()

    def register(
        self, app: str, instance_id: str, host: str, port: int, /, *, status: str = "UP", **extra: Any
    ) -> None:
        record = {
            "instanceId": instance_id,
            "hostName": host,
            "app": app.upper(),
            "ipAddr": host,
            "status": status,
            "port": {"$": port, "@enabled": "true"},
            "securePort": {"$": 443, "@enabled": "false"},
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
            "leaseInfo": {"durationInSecs": 90},
            **extra,
        }
        httpx.post(self.url + f"apps/{app.upper()}", json={"instance": record}, timeout=5).raise_for_status()

    def cancel(self, app: str, instance_id: str) -> int:
        return httpx.delete(self.url + f"apps/{app.upper()}/{instance_id}", timeout=5).status_code

    def set_status(self, app: str, instance_id: str, status: str) -> None:
        httpx.put(self.url + f"apps/{app.upper()}/{instance_id}/status?value={status}", timeout=5).raise_for_status()

    def forget_deltas(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_test/forget-deltas", timeout=5).raise_for_status()

    def unrecorded(self, on: bool) -> None:
        """While on, changes stay out of the deltas (only a hash check can tell them)."""
        which = "on" if on else "off"
        httpx.post(f"http://127.0.0.1:{self.port}/_test/unrecorded/{which}", timeout=5).raise_for_status()

    def stats(self) -> dict[str, int]:
        reply = httpx.get(f"http://127.0.0.1:{self.port}/_test/stats", headers={"Accept": "application/json"})
        return dict(reply.json()["stats"])

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
