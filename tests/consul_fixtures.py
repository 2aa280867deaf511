"""The Consul API test server as a child process: start, stop, kill and restart it on its port."""

from __future__ import annotations

import json
import ssl
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest

from tests.daemon import Server, free_tcp_port

ROOT = Path(__file__).resolve().parent.parent

# Consul's own variables, which consul.Client reads where an argument is not given
CONSUL_VARIABLES = (
    "CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY",
    "CONSUL_CACERT", "CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY",
)  # fmt: skip


def unset_consul_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset Consul's variables for one test, so that the machine's own do not reach it."""
    for name in CONSUL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class ConsulServer(Server):
    """``tests/consul_api_server.py`` on a free loopback port; ``url`` is its HTTP address."""

    def __init__(self, *options: str, token: str | None = None, tls: dict[str, str] | None = None) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="consul-api-")), "consul.log")
        self.port = free_tcp_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.token = token
        self.tls = tls
        self.options = list(options) + ([] if token is None else ["--acl-token", token])
        if tls is not None:
            self.options += ["--tls-cert", tls["server_cert"], "--tls-key", tls["server_key"], "--tls-ca", tls["ca"]]

    def start(self) -> Self:
        command = [
            sys.executable,
            str(ROOT / "tests" / "consul_api_server.py"),
            "--port",
            str(self.port),
            *self.options,
        ]
        self.spawn(command)
        end = time.monotonic() + 30
        while True:
            self.exited("the Consul API test server")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/status/leader", timeout=1, context=self._context()):
                    return self
            except OSError:
                if time.monotonic() > end:
                    raise RuntimeError(f"the Consul API test server did not answer:\n{self.log_tail()}") from None
                time.sleep(0.02)

    def _context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=self.tls["ca"])
        context.load_cert_chain(self.tls["client_cert"], self.tls["client_key"])
        return context

    # plain HTTP calls, as a test's own hands on the agent (not through the library)
    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if self.token is not None:
            request.add_header("X-Consul-Token", self.token)
        with urllib.request.urlopen(request, timeout=10, context=self._context()) as reply:
            text = reply.read()
        return json.loads(text) if text else None

    def register(self, name: str, service_id: str, port: int, **fields: Any) -> None:
        """Register a service on the agent (passing unless ``check=`` says otherwise)."""
        body = {"Name": name, "ID": service_id, "Port": port, "Address": "127.0.0.1", **fields}
        body.setdefault("Check", {"TTL": "1h", "Status": "passing"})
        self.request("PUT", "/v1/agent/service/register", body)

    def deregister(self, service_id: str) -> None:
        self.request("PUT", f"/v1/agent/service/deregister/{service_id}")

    def check(self, verb: str, check_id: str) -> None:
        self.request("PUT", f"/v1/agent/check/{verb}/{check_id}")

    def health(self, name: str, query: str = "") -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/v1/health/service/{name}{query}")
        return result


@pytest.fixture
def consul_server() -> Iterator[ConsulServer]:
    """A Consul API test server for one test (reaper every 0.1 s, no minimum for DeregisterCriticalServiceAfter)."""
    with ConsulServer("--reap-interval", "0.1", "--deregister-minimum", "0") as server:
        yield server


@pytest.fixture
def consul_acl_server() -> Iterator[ConsulServer]:
    """A Consul API test server whose ACLs accept only the token ``root-token``."""
    with ConsulServer(token="root-token") as server:
        yield server
