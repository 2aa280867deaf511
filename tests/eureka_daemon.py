"""The Eureka API test server (``tests/eureka_api_server.py``) as a child process."""

from __future__ import annotations

import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import httpx

from tests.daemon import Server, free_tcp_port

ROOT = Path(__file__).resolve().parent.parent


class EurekaServer(Server):
    """``tests/eureka_api_server.py`` on a free 127.0.0.1 port; ``url`` is its service URL.

    ``certs`` (the files of ``tests.etcd_server.make_certs``): serve HTTPS, and with
    ``client_cert_auth`` require a client certificate signed by the test CA.
    """

    def __init__(
        self,
        *,
        retention: float = 180.0,
        eviction_interval: float = 0.2,
        port: int | None = None,
        certs: dict[str, str] | None = None,
        client_cert_auth: bool = False,
    ) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="eureka-")), "eureka.log")
        self.port = port or free_tcp_port()
        scheme = "https" if certs else "http"
        self.root = f"{scheme}://127.0.0.1:{self.port}/"
        self.url = f"{self.root}eureka/"
        self._args = ["--retention", str(retention), "--eviction-interval", str(eviction_interval)]
        verify: ssl.SSLContext | bool = True
        if certs is not None:
            self._args += ["--cert", certs["server_cert"], "--key", certs["server_key"]]
            if client_cert_auth:
                self._args += ["--client-ca", certs["ca"]]
            verify = ssl.create_default_context(cafile=certs["ca"])
            verify.load_cert_chain(certs["client_cert"], certs["client_key"])
        self._http = httpx.Client(verify=verify, timeout=5.0)

    def start(self) -> Self:
        self.spawn(
            [sys.executable, str(ROOT / "tests" / "eureka_api_server.py"), "--port", str(self.port), *self._args]
        )
        end = time.monotonic() + 20
        while True:
            self.exited("the Eureka API server")
            try:
                self._http.get(f"{self.root}_test/stats", timeout=1.0)
                return self
            except httpx.HTTPError:
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError(f"the Eureka API server did not answer:\n{self.log_tail()}") from None
                time.sleep(0.05)

    # helpers for tests: the REST API as a plain client
    def get(self, path: str) -> Any:
        return self._http.get(self.url + path, headers={"Accept": "application/json"}).json()

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
        self._http.post(self.url + f"apps/{app.upper()}", json={"instance": record}).raise_for_status()

    def cancel(self, app: str, instance_id: str) -> int:
        return self._http.delete(self.url + f"apps/{app.upper()}/{instance_id}").status_code

    def set_status(self, app: str, instance_id: str, status: str) -> None:
        self._http.put(self.url + f"apps/{app.upper()}/{instance_id}/status?value={status}").raise_for_status()

    def forget_deltas(self) -> None:
        self._http.post(f"{self.root}_test/forget-deltas").raise_for_status()

    def unrecorded(self, on: bool) -> None:
        """While on, changes stay out of the deltas (only a hash check can tell them)."""
        which = "on" if on else "off"
        self._http.post(f"{self.root}_test/unrecorded/{which}").raise_for_status()

    def stats(self) -> dict[str, int]:
        reply = self._http.get(f"{self.root}_test/stats", headers={"Accept": "application/json"})
        return dict(reply.json()["stats"])

    def close(self) -> None:
        self.stop()
        self._http.close()
        shutil.rmtree(self.dir, ignore_errors=True)
