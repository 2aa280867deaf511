"""Errors that say what to do: the argument, the value, what was expected; the server waited for; every attempt."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dns.resolver
import httpx
import pytest
import requests

import loadbalancer
from loadbalancer import Retry, RoundRobin, cli, dnssrv, static
from loadbalancer.http import AsyncTransport, RequestsAdapter, Transport
from loadbalancer.instance import Instance
from tests.helpers import events, eventually
from tests.servers import BindServer, BlackHole

REPO = Path(__file__).resolve().parent.parent


def dead_ports(count: int) -> list[int]:
    """Loopback ports nothing listens on (connections are refused)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def resolver(port: int, *, timeout: float = 1.0, lifetime: float = 2.0) -> dns.resolver.Resolver:
    made = dns.resolver.Resolver(configure=False)
    made.nameservers = ["127.0.0.1"]
    made.port = port
    made.timeout, made.lifetime = timeout, lifetime
    return made


# -- NXDOMAIN: a failure of its own, not an empty set -----------------------------------------


def test_nxdomain_is_a_name_not_found_error_that_keeps_the_last_set(
    bind: BindServer, srv_name: str, logs: pytest.LogCaptureFixture
) -> None:
    bind.set_srv(srv_name, [(10, 1, 80, "a")])
    name = bind.name(srv_name)
    with dnssrv.Publisher(name, 0.05, str, resolver=resolver(bind.port)) as publisher:
        eventually(lambda: len(publisher.endpoints()) == 1, what="the first set")
        bind.delete_name(srv_name)
        eventually(lambda: publisher.endpoints().stale, what="stale")
        assert [i.port for i in publisher.endpoints().instances] == [80]  # stale beats empty
        error = publisher.last_error
        assert isinstance(error, dnssrv.NameNotFoundError)
        assert isinstance(error, dnssrv.DnsError) and isinstance(error, loadbalancer.DiscoveryError)
        assert error.name == name and f"127.0.0.1@{bind.port}" in error.servers
        assert f"SRV name {name} does not exist" in str(error) and "NXDOMAIN" in str(error)
        time.sleep(0.3)  # several polls
        warned = events(logs, "srv_name_not_found")
        assert len(warned) == 1 and warned[0].levelname == "WARNING"  # once, when it goes missing
        bind.set_srv(srv_name, [(10, 1, 81, "a")])
        eventually(lambda: [i.port for i in publisher.endpoints().instances] == [81], what="back")
        assert publisher.last_error is None


def test_an_existing_name_without_records_is_still_an_empty_set(bind: BindServer, srv_name: str) -> None:
    bind.set_records(srv_name, "TXT", ['"no SRV here"'])
    with dnssrv.Publisher(bind.name(srv_name), 60, str, resolver=resolver(bind.port)) as publisher:
        endpoints = publisher.refresh()
        assert len(endpoints) == 0 and not endpoints.stale and publisher.last_error is None


def test_a_lookup_ends_within_its_timeout_and_names_the_server() -> None:
    # dnspython's own lifetime check lets its backoff sleeps run past the lifetime
    with BlackHole() as hole:
        with dnssrv.Publisher(
            "_a._tcp.example.", 60, str, resolver=resolver(hole.port, timeout=0.2), timeout=1.0
        ) as publisher:
            start = time.monotonic()
            endpoints = publisher.refresh()
            took = time.monotonic() - start
        assert took < 1.4, took
        assert isinstance(endpoints.error, dnssrv.DnsError)
        assert f"127.0.0.1@{hole.port}" in str(endpoints.error)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_says_a_name_does_not_exist_and_exits_1(capsys: pytest.CaptureFixture[str], bind: BindServer) -> None:
    name = bind.name("_nosuch._tcp")
    code, out, err = run_cli(capsys, "resolve", f"dns://127.0.0.1:{bind.port}/{name}")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and f"SRV name {name} does not exist" in err and "no instances" not in err


def test_the_cli_says_no_instances_for_a_name_without_records(
    capsys: pytest.CaptureFixture[str], bind: BindServer, srv_name: str
) -> None:
    bind.set_records(srv_name, "TXT", ['"no SRV here"'])
    code, out, err = run_cli(capsys, "resolve", f"dns://127.0.0.1:{bind.port}/{bind.name(srv_name)}")
    assert (code, out) == (0, "") and "no instances" in err and "does not exist" not in err


# -- the CLI's deadlines -------------------------------------------------------------------------


def test_the_cli_timeout_defaults_to_a_few_seconds_and_reaches_the_client() -> None:
    assert cli.DEFAULT_TIMEOUT == 5.0
    command = cli.parse(["resolve", "zk://127.0.0.1:1/services/api"])
    assert cli._options(command)["timeout"] == 5.0
    command = cli.parse(["resolve", "zk://127.0.0.1:1/services/api", "--timeout", "2"])
    assert cli._options(command)["timeout"] == 2.0
    command = cli.parse(["resolve", "static:///127.0.0.1:1"])
    assert "timeout" not in cli._options(command)  # answers from memory


def test_resolve_against_a_dead_dns_server_honours_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    with BlackHole() as hole:
        start = time.monotonic()
        code, out, err = run_cli(capsys, "resolve", f"dns://127.0.0.1:{hole.port}/_a._tcp.example.", "--timeout", "1")
        took = time.monotonic() - start
    assert (code, out) == (1, "")
    assert took < 1.6, took
    assert f"127.0.0.1@{hole.port}" in err and "within 1s" in err


def test_resolve_against_a_dead_zookeeper_honours_the_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("kazoo")
    (port,) = dead_ports(1)
    start = time.monotonic()
    code, out, err = run_cli(capsys, "resolve", f"zk://127.0.0.1:{port}/services/api", "--timeout", "1")
    took = time.monotonic() - start
    assert (code, out) == (1, "")
    assert took < 2.0, took
    assert f"127.0.0.1:{port}" in err


def test_resolve_gives_up_itself_naming_the_server_when_the_client_overruns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Stuck:
        def __enter__(self) -> Stuck:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def refresh(self) -> object:
            time.sleep(30)
            raise AssertionError("not given up")

    monkeypatch.setattr(loadbalancer.cli, "make_publisher", lambda command: Stuck())
    start = time.monotonic()
    code, _, err = run_cli(capsys, "resolve", "etcd://127.0.0.1:2/services/api", "--timeout", "0.5")
    assert time.monotonic() - start < 2.0
    assert code == 1 and "no answer from the server at 127.0.0.1:2 within 0.5s" in err and "--timeout" in err


# -- bad arguments: the argument, the value, what was expected -----------------------------------


def test_a_static_publisher_of_none_names_the_argument_and_the_value() -> None:
    with pytest.raises(TypeError, match=r"^instances must be a list of 'host:port' strings .*got NoneType None$"):
        static.Publisher(None)  # type: ignore[arg-type]


def test_a_negative_port_is_out_of_range_not_not_a_number() -> None:
    with pytest.raises(loadbalancer.InvalidInstanceError, match=r"^invalid instance 'host:-1': port -1 is out of"):
        Instance.parse("host:-1")
    with pytest.raises(loadbalancer.InvalidInstanceError, match="port is not a number"):
        Instance.parse("host:-x")


def test_retry_with_a_string_max_attempts_is_a_type_error_naming_it() -> None:
    lb = RoundRobin(static.Publisher(["127.0.0.1:1"], lambda address: address))
    with pytest.raises(TypeError, match=r"^max_attempts must be a positive integer \(an int, such as 3\), got str '3'"):
        Retry("3", 1.0, lb)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_attempts must be a positive integer, got 0: give 1 or more"):
        Retry(0, 1.0, lb)


def test_the_first_syntax_missing_its_argument_is_one_line_without_an_internal_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "resolve", "dns")
    assert (code, out) == (2, "")
    assert err == "loadbalancer: error: invalid target 'dns': missing name\n"


def test_an_unknown_scheme_names_the_argument_and_the_known_schemes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "resolve", "bogus:x")
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith("loadbalancer: error: argument TARGET: invalid target 'bogus:x': unknown scheme 'bogus'")
    assert "(known: consul, dns, etcd," in err


def test_the_proxy_names_source_and_the_known_schemes(capsys: pytest.CaptureFixture[str]) -> None:
    proxy = pytest.importorskip("loadbalancer.proxy")
    assert proxy.main(["--source", "bogus:x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("loadbalancer proxy: error: argument --source: invalid target 'bogus:x': unknown scheme")
    assert "(known: consul, dns, etcd," in err
    assert proxy.main(["--source", "bogus"]) == 2
    assert "'bogus' is not a target" in capsys.readouterr().err


def test_the_proxy_admin_socket_in_a_missing_directory_names_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy = pytest.importorskip("loadbalancer.proxy")
    path = tmp_path / "missing" / "admin.sock"
    assert proxy.main(["-b", "http://127.0.0.1:1", "--socket", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"--socket '{path}': the directory {path.parent} does not exist" in err


# -- the transports' final error: the service, and each instance with its error -------------------


def check_told(error: BaseException, service: str, ports: list[int]) -> None:
    text = str(error)
    assert f"service {service!r}" in text and "attempts failed" in text, text
    for port in ports:
        assert f"127.0.0.1:{port}: " in text, text
    tried = getattr(error, "tried", ())
    assert {address for address, _ in tried} == {f"127.0.0.1:{port}" for port in ports}


def test_the_transports_final_error_names_the_service_and_every_instance() -> None:
    ports = dead_ports(2)
    publisher = static.Publisher([f"127.0.0.1:{port}" for port in ports])
    with (
        httpx.Client(transport=Transport({"api": publisher}, budget=False)) as client,
        pytest.raises(httpx.ConnectError) as caught,
    ):
        client.get("http://api/x")
    assert type(caught.value).__name__ == "ConnectError"
    assert str(caught.value).startswith("GET http://api/x: service 'api': 3 attempts failed: ")
    check_told(caught.value, "api", ports)


async def test_the_async_transports_final_error_names_the_service_and_every_instance() -> None:
    ports = dead_ports(2)
    publisher = static.Publisher([f"127.0.0.1:{port}" for port in ports])
    async with httpx.AsyncClient(transport=AsyncTransport({"api": publisher}, budget=False)) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get("http://api/x")
    check_told(caught.value, "api", ports)


def test_the_requests_adapters_final_error_names_the_service_and_every_instance() -> None:
    ports = dead_ports(2)
    publisher = static.Publisher([f"127.0.0.1:{port}" for port in ports], service="api")
    with requests.Session() as session:
        session.mount("http://api", RequestsAdapter(publisher, budget=False))
        with pytest.raises(requests.ConnectionError) as caught:
            session.get("http://api/x", timeout=5)
    check_told(caught.value, "api", ports)


async def test_the_aiohttp_middlewares_final_error_names_the_service_and_every_instance() -> None:
    aiohttp = pytest.importorskip("aiohttp")
    from loadbalancer import aiohttp as lbaiohttp

    ports = dead_ports(2)
    mw = lbaiohttp.middleware({"api": static.Publisher([f"127.0.0.1:{port}" for port in ports])}, budget=False)
    async with mw, aiohttp.ClientSession(middlewares=(mw,)) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get("http://api/x")
    assert caught.value.os_error is not None  # the last attempt's own error, its attributes kept
    check_told(caught.value, "api", ports)


# -- one event vocabulary: <source>_<thing>_invalid ----------------------------------------------


def test_skipped_entries_are_named_alike_in_every_source(caplog: pytest.LogCaptureFixture) -> None:
    from loadbalancer._discovery import DiscoveryPublisher

    class Source(DiscoveryPublisher[str]):
        def found(self, *items: str) -> None:
            self._publish(items)

    source = Source(lambda address: address, service="s")
    source.found("127.0.0.1:1", "oops")
    assert [r.instance for r in events(caplog, "instance_invalid")] == ["oops"]  # type: ignore[attr-defined]
    source.close()
    vocabulary = {
        "invalid_node": "zookeeper_node_invalid",
        "invalid_instance": "instance_invalid",
        "invalid_srv_target": "srv_target_invalid",
    }
    package = REPO / "loadbalancer"
    text = "\n".join(path.read_text() for path in package.rglob("*.py"))
    for old, new in vocabulary.items():
        assert f'"{old}"' not in text and f'"{new}"' in text, old


# -- editable installs that type-check -------------------------------------------------------------


USER_PROGRAM = """
from loadbalancer import RoundRobin, static
from loadbalancer.instance import Instance

publisher: static.Publisher[str] = static.Publisher(["127.0.0.1:8080"], lambda instance: str(instance))
balancer: RoundRobin[str] = RoundRobin(publisher)
first: Instance = Instance.parse("127.0.0.1:80")
"""


@pytest.mark.server  # slow: mypy over the package
@pytest.mark.timeout(300)
def test_a_user_program_outside_the_repo_type_checks_against_the_installed_package(tmp_path: Path) -> None:
    pytest.importorskip("mypy")

    def mypy(source: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / "user.py").write_text(textwrap.dedent(source))
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "user.py"],
            capture_output=True, text=True, check=False, cwd=tmp_path,
        )  # fmt: skip

    good = mypy(USER_PROGRAM)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = mypy(USER_PROGRAM + "wrong: int = publisher\n")
    assert bad.returncode == 1 and 'variable has type "int"' in bad.stdout, bad.stdout + bad.stderr
    assert "import-not-found" not in bad.stdout
