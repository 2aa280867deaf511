"""The command line's ``eureka`` and ``http`` sources, against the Eureka API test server and real HTTP seeds."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest

from loadbalancer import cli
from tests.eureka_daemon import EurekaServer
from tests.seed_daemon import SeedServer
from tests.test_cli import Process, one_line_error, run


@pytest.fixture
def eureka_server() -> Iterator[EurekaServer]:
    with EurekaServer() as server:
        yield server


@pytest.fixture
def seed_servers() -> Iterator[list[SeedServer]]:
    """Two seeds, started."""
    seeds = [SeedServer(), SeedServer()]
    try:
        for seed in seeds:
            seed.start()
        yield seeds
    finally:
        for seed in seeds:
            seed.close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop(signal.SIGKILL)


def test_resolve_eureka(eureka_server: EurekaServer, capsys: pytest.CaptureFixture[str]) -> None:
    eureka_server.register("api", "a-1", "127.0.0.1", 9001, metadata={"zone": "eu"})
    eureka_server.register("api", "a-2", "127.0.0.1", 9002, status="DOWN")
    target = f"eureka://127.0.0.1:{eureka_server.port}/eureka/api"
    code, out, err = run(capsys, "resolve", target)
    assert (code, out, err) == (0, "127.0.0.1:9001  meta.zone=eu\n", "")
    code, out, _ = run(capsys, "resolve", target, "--json")
    assert json.loads(out)["metadata"] == {"zone": "eu"}


def test_resolve_eureka_unreachable_and_bad_urls(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.daemon import free_tcp_port

    code, _, err = run(capsys, "resolve", f"eureka://127.0.0.1:{free_tcp_port()}/eureka/api", "--timeout", "1")
    assert code == 1 and "failed on every server" in one_line_error(err)
    code, _, err = run(capsys, "resolve", "eureka://127.0.0.1:8761/")
    assert code == 2 and "no application" in one_line_error(err)
    code, _, err = run(capsys, "resolve", "eureka", "api", "--urls", "ftp://x")  # the first syntax
    assert code == 2 and "invalid Eureka URL 'ftp://x'" in err.splitlines()[-1]


def test_register_eureka_then_watch_it_leave(eureka_server: EurekaServer, processes: list[Process]) -> None:
    target = f"eureka://127.0.0.1:{eureka_server.port}/eureka/api"
    watcher = Process("watch", f"{target}?interval=0.1")
    processes.append(watcher)
    watcher.expect(r"= no instances")
    registrar = Process("register", target, "127.0.0.1:9001", "--ttl", "30", "--tag", "blue")
    processes.append(registrar)
    registrar.expect(r"registered 127\.0\.0\.1:9001  tags=blue as 127\.0\.0\.1:api:9001")
    watcher.expect(r"\+ 127\.0\.0\.1:9001  tags=blue")
    assert registrar.stop() == 0
    watcher.expect(r"- 127\.0\.0\.1:9001")
    assert watcher.stop() == 0


def test_resolve_and_watch_http_seeds(seed_servers: list[SeedServer], capsys: pytest.CaptureFixture[str],
                                      processes: list[Process]) -> None:  # fmt: skip
    first, second = seed_servers
    first.publish(["127.0.0.1:9001"])
    second.publish([{"id": "b", "address": "127.0.0.1", "port": 9002, "version": "2"}])
    code, out, err = run(
        capsys, "resolve", f"httppoll+http://127.0.0.1:{first.port},127.0.0.1:{second.port}/instances.json"
    )
    assert (code, out, err) == (0, "127.0.0.1:9001\n127.0.0.1:9002  meta.version=2\n", "")
    code, out, err = run(capsys, "resolve", "http", first.url(), second.url())  # the first syntax
    assert (code, out) == (0, "127.0.0.1:9001\n127.0.0.1:9002  meta.version=2\n") and "deprecated" in err
    watcher = Process("watch", f"httppoll+{first.url()}?interval=0.1")
    processes.append(watcher)
    watcher.expect(r"\+ 127\.0\.0\.1:9001")
    first.publish(["127.0.0.1:9003"])
    watcher.expect(r"\+ 127\.0\.0\.1:9003")
    assert watcher.stop() == 0


def test_register_with_http_seeds_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "register", "httppoll+http://127.0.0.1:1/x", "127.0.0.1:80")
    assert code == 2 and "each seed owns the list" in one_line_error(err)
    code, _, err = run(capsys, "register", "http", "http://127.0.0.1:1/x", "127.0.0.1:80")
    assert code == 2 and "each seed owns the list" in one_line_error(err)
    assert "eureka" in cli.SOURCES and "http" in cli.SOURCES
