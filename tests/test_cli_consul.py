"""The command line's consul source: resolve, watch and register against the Consul API test server."""

from __future__ import annotations

import json
import signal

import pytest

from loadbalancer import cli
from tests.consul_fixtures import ConsulServer
from tests.daemon import free_tcp_port
from tests.test_cli import TIME, Process, one_line_error, run


@pytest.fixture
def processes() -> list[Process]:
    started: list[Process] = []
    yield started  # type: ignore[misc]
    for process in started:
        process.stop(signal.SIGKILL)


def test_resolve_consul_prints_the_passing_instances_with_tags(
    capsys: pytest.CaptureFixture[str], consul_server: ConsulServer
) -> None:
    consul_server.register("api", "api-1", 9001, Tags=["v2"], Meta={"zone": "a"})
    consul_server.register("api", "api-2", 9002)
    consul_server.register("api", "api-3", 9003, Check={"TTL": "1h"})  # critical: left out
    target = f"consul://{consul_server.url.removeprefix('http://')}/api"
    code, out, _ = run(capsys, "resolve", target)
    assert code == 0 and out.splitlines() == ["127.0.0.1:9001  tags=v2 meta.zone=a", "127.0.0.1:9002"]
    code, out, _ = run(capsys, "resolve", f"{target}?tag=v2", "--json")
    assert code == 0 and [json.loads(line)["address"] for line in out.splitlines()] == ["127.0.0.1:9001"]


def test_resolve_consul_failures_are_one_line(
    capsys: pytest.CaptureFixture[str], consul_acl_server: ConsulServer
) -> None:
    code, _, err = run(capsys, "resolve", f"consul://{consul_acl_server.url.removeprefix('http://')}/api?token=bad")
    assert code == 1 and "403 ACL not found" in one_line_error(err)
    address = f"127.0.0.1:{free_tcp_port()}"
    code, _, err = run(capsys, "resolve", f"consul://{address}/api", "--timeout", "1")
    assert code == 1 and f"consul://{address}/api" in one_line_error(err)
    code, _, err = run(capsys, "resolve", "consul", "api", "--address", "ftp://x")  # the first syntax
    assert code == 2 and "'ftp://x'" in err.splitlines()[-1]
    assert "consul" in cli.SOURCES


def test_register_consul_until_ctrl_c_and_watch_it(consul_server: ConsulServer, processes: list[Process]) -> None:
    target = f"consul://{consul_server.url.removeprefix('http://')}/api"
    watcher = Process("watch", target)
    processes.append(watcher)
    registrar = Process("register", target, "127.0.0.1:8080", "--ttl", "2", "--tag", "blue")
    processes.append(registrar)
    registrar.expect(rf"^{TIME}  registered 127\.0\.0\.1:8080  tags=blue as api-127\.0\.0\.1-8080$")
    watcher.expect(r"127\.0\.0\.1:8080")
    assert [e["Service"]["Tags"] for e in consul_server.health("api", "?passing=1")] == [["blue"]]
    assert registrar.stop(signal.SIGINT) == 0
    assert any(
        line.endswith("deregistered 127.0.0.1:8080  tags=blue as api-127.0.0.1-8080") for line in registrar.rest()
    )
    assert consul_server.health("api") == []
    assert watcher.stop(signal.SIGINT) == 0
