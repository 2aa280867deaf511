"""The command line, in-process (``main(argv)``) and as ``python -m loadbalancer`` for watch and register.

Sources are real servers on loopback: BIND for DNS SRV, ZooKeeper, and etcd when its
backend and fixtures are present.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadbalancer import cli, targets
from tests.servers import BindServer, free_port
from tests.zk_server import ZooKeeperServer, free_tcp_port

pytest_plugins = ["tests.zk_fixtures"]

try:
    from tests.etcd_server import EtcdServer, require_etcd, unique_prefix
except ImportError:  # the etcd backend's fixtures are not there
    EtcdServer = None  # type: ignore[assignment,misc]

ROOT = Path(__file__).resolve().parent.parent
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The error message, checked to be one line without a traceback."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("loadbalancer: error: ")
    return lines[0]


class Process:
    """``python -m loadbalancer ARGS`` with its output read line by line."""

    def __init__(self, *argv: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loadbalancer", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.seen: list[str] = []
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._stderr.extend(self.process.stderr)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait for an output line matching ``pattern`` (a regular expression searched in the line)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = ""
            if line is None or remaining <= 0:
                self.stop(signal.SIGKILL)
                raise AssertionError(f"no line matching {pattern!r}; output: {self.seen}; stderr: {self.stderr}")
            if line:
                self.seen.append(line)
                match = re.search(pattern, line)
                if match:
                    return match

    def stop(self, signum: int = signal.SIGINT, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(5)
        return self.process.returncode

    def rest(self) -> list[str]:
        """Lines printed after the last ``expect`` (call after ``stop``)."""
        rest: list[str] = []
        while (line := self.lines.get(timeout=5)) is not None:
            rest.append(line)
        return rest


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop(signal.SIGKILL)


# -- arguments and static ---------------------------------------------------------------------


def test_resolve_static(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "resolve", "static:///127.0.0.2:80,[::1]:81,127.0.0.1:82")
    assert (code, err) == (0, "")
    assert out.splitlines() == ["127.0.0.2:80", "[::1]:81", "127.0.0.1:82"]


def test_resolve_static_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "resolve", "static:///127.0.0.1:80,[::1]:81", "--json")
    assert code == 0
    documents = [json.loads(line) for line in out.splitlines()]
    assert documents == [
        {
            "address": "127.0.0.1:80",
            "host": "127.0.0.1",
            "port": 80,
            "weight": 1,
            "priority": 0,
            "tags": [],
            "metadata": {},
        },
        {"address": "[::1]:81", "host": "::1", "port": 81, "weight": 1, "priority": 0, "tags": [], "metadata": {}},
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["resolve", "static:///nope"], "invalid instance 'nope': missing ':port'"),
        (["register", "dns:///_api._tcp.example.test.", "127.0.0.1:80"], "cannot register with DNS SRV"),
        (["register", "static:///127.0.0.1:80", "127.0.0.1:80"], "cannot register with a static list"),
        (["resolve", "zk:services/api"], "invalid ZooKeeper path 'services/api'"),
        (["resolve", "zk://127.0.0.1:x/s"], "'127.0.0.1:x'"),
        (["resolve", "dns:///a..b."], "invalid SRV name 'a..b.'"),
        (["resolve", "dns://ns.example/_a._tcp.example.test."], "IP address"),
        (["register", "zk:///s", "127.0.0.1:http"], "port is not a number"),
        (["resolve", "nosuch:///x"], "unknown scheme 'nosuch' (known: consul, dns, etcd,"),
        (["resolve", "static:///127.0.0.1:80?bogus=1"], "unknown option bogus"),
        (["resolve", "_api._tcp.example."], "no scheme"),
        # the first syntax, still understood
        (["register", "dns", "_api._tcp.example.test.", "127.0.0.1:80"], "cannot register with DNS SRV"),
        (["register", "static", "127.0.0.1:80"], "cannot register with a static list"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in one_line_error(err)


def test_argparse_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["resolve"], ["register", "etcd:///s"], ["resolve", "dns:///x.", "--timeout", "0"]):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert "usage:" in err and "Traceback" not in err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and re.fullmatch(r"loadbalancer \S+\n", out)
    code, out, _ = run(capsys, "register", "--help")
    assert code == 0 and "--ttl" in out and "--weight" in out and "zk://" in out


def test_help_lists_every_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("resolve", "watch", "register"):
        code, out, _ = run(capsys, action, "--help")
        assert code == 0
        assert all(scheme.example in out for scheme in targets.schemes()), out


def test_the_first_syntax_still_works_and_says_what_to_write(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "resolve", "static", "127.0.0.1:80", "127.0.0.1:81", "--json")
    assert code == 0 and [json.loads(line)["address"] for line in out.splitlines()] == ["127.0.0.1:80", "127.0.0.1:81"]
    assert err == (
        "loadbalancer: note: the 'SOURCE ARGUMENT --option' syntax is deprecated;"
        " name the source as static:///127.0.0.1:80,127.0.0.1:81\n"
    )
    code, _, err = run(capsys, "resolve", "zookeeper", "/s", "--hosts", "127.0.0.1:1", "--timeout", "0.3")
    assert code == 1 and "zk:///s at 127.0.0.1:1" in err  # the options it had become keyword options
    for argv, message in [
        (["resolve", "dns", "_a._tcp.example.test.", "--server", "ns.example"], "give an IP address, not a name"),
        (["resolve", "dns", "x", "--ttl", "0"], "argument --ttl: '0' must be more than 0 seconds"),
        (["resolve", "dns"], "missing name"),
    ]:
        code, out, err = run(capsys, *argv)
        assert (code, out) == (2, "") and message in err.splitlines()[-1], argv


def test_verbose_lines_name_the_logger_they_come_from(capsys: pytest.CaptureFixture[str]) -> None:
    # nothing listens on the port: kazoo logs its failed connections, the library its failed refresh
    hosts = f"127.0.0.1:{free_tcp_port()}"
    code, _, err = run(capsys, "resolve", f"zk://{hosts}/s", "--timeout", "0.5", "-v")
    assert code == 1
    labels = {line.split(":", 1)[0] for line in err.splitlines()}
    assert "loadbalancer.zookeeper.kazoo" in labels, err  # kazoo's records, under the library's logger
    assert "loadbalancer.zookeeper" in labels, err
    kazoo_lines = [line for line in err.splitlines() if line.startswith("loadbalancer.zookeeper.kazoo")]
    assert all(re.match(r"loadbalancer\.zookeeper\.kazoo: WARNING: ", line) for line in kazoo_lines), err


@pytest.mark.parametrize(
    ("scheme", "source", "module", "extra"),
    [("zk", "zookeeper", "kazoo.client", "zookeeper"), ("etcd", "etcd", "httpx", "etcd")],
)
def test_a_missing_optional_dependency_says_what_to_install(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    scheme: str,
    source: str,
    module: str,
    extra: str,
) -> None:
    for name in [
        name
        for name in sys.modules
        if name == f"loadbalancer.{source}"
        or name.startswith((f"loadbalancer.{source}.", f"loadbalancer.targets._{source}"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    import loadbalancer

    monkeypatch.delattr(loadbalancer, source, raising=False)  # else "from .. import etcd" finds it there
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    code, out, err = run(capsys, "resolve", f"{scheme}://127.0.0.1:1/services/api", "--timeout", "0.5")
    assert code == 1 and out == ""
    assert f"pip install 'loadbalancer[{extra}]'" in one_line_error(err)


def test_watch_static_until_sigterm(processes: list[Process]) -> None:
    process = Process("watch", "static:///127.0.0.1:80,127.0.0.1:81")
    processes.append(process)
    process.expect(rf"^{TIME}  \+ 127\.0\.0\.1:80$")
    process.expect(rf"^{TIME}  \+ 127\.0\.0\.1:81$")
    assert process.stop(signal.SIGTERM) == 0
    assert "Traceback" not in process.stderr


# -- DNS SRV (BIND) -----------------------------------------------------------------------------


def test_resolve_dns(capsys: pytest.CaptureFixture[str], bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 5, 8080, "a"), (20, 1, 8081, "b")])
    target = f"dns://127.0.0.1:{bind.port}/{bind.name(srv_name)}"
    code, out, err = run(capsys, "resolve", target)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "a.example.test:8080  priority=10 weight=5 ttl=0",
        "b.example.test:8081  priority=20 weight=1 ttl=0",  # the SRV record's weight, shown though it is 1
    ]
    code, out, _ = run(capsys, "resolve", target, "--json")
    assert [(d["host"], d["port"], d["priority"], d["weight"]) for d in map(json.loads, out.splitlines())] == [
        ("a.example.test", 8080, 10, 5),
        ("b.example.test", 8081, 20, 1),
    ]


def test_resolve_dns_nxdomain_is_an_error(capsys: pytest.CaptureFixture[str], bind: BindServer) -> None:
    code, out, err = run(capsys, "resolve", f"dns://127.0.0.1:{bind.port}/{bind.name('_nothing._tcp')}")
    assert code == 1 and out == ""
    assert "does not exist" in err


def test_resolve_dns_without_an_answer_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, out, err = run(capsys, "resolve", f"dns://127.0.0.1:{port}/_a._tcp.example.test.", "--timeout", "0.3")
    assert code == 1 and out == ""
    line = one_line_error(err)
    assert "_a._tcp.example.test." in line and f"127.0.0.1:{port}" in line


def test_watch_dns(bind: BindServer, srv_name: str, processes: list[Process]) -> None:
    bind.set_srv(srv_name, [(10, 5, 8080, "a")])
    process = Process("watch", f"dns://127.0.0.1:{bind.port}/{bind.name(srv_name)}?interval=0.1")
    processes.append(process)
    process.expect(rf"^{TIME}  \+ a\.example\.test:8080  priority=10 weight=5")
    bind.set_srv(srv_name, [(10, 5, 8080, "a"), (10, 5, 8080, "b")])
    process.expect(r"  \+ b\.example\.test:8080 ")
    bind.delete_srv(srv_name, [(10, 5, 8080, "a")])
    process.expect(r"  - a\.example\.test:8080 ")
    assert process.stop() == 0


# -- ZooKeeper ----------------------------------------------------------------------------------


def test_resolve_zookeeper(
    capsys: pytest.CaptureFixture[str], zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    zk_client.create(f"{zk_path}/a", b"127.0.0.1:80", makepath=True)
    zk_client.create(f"{zk_path}/b", b'{"host": "127.0.0.2", "port": 81, "weight": 7, "tags": ["blue"]}')
    code, out, err = run(capsys, "resolve", f"zk://{zookeeper_server.hosts}{zk_path}")
    assert (code, err) == (0, "")
    assert out.splitlines() == ["127.0.0.1:80", "127.0.0.2:81  weight=7 tags=blue"]


def test_resolve_zookeeper_missing_path_and_chroot(
    capsys: pytest.CaptureFixture[str], zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    code, out, err = run(capsys, "resolve", f"zk://{zookeeper_server.hosts}{zk_path}")
    assert code == 0 and out == "" and "no instances" in err
    zk_client.create(f"/apps{zk_path}/a", b"127.0.0.1:80", makepath=True)
    code, out, _ = run(capsys, "resolve", f"zk://{zookeeper_server.hosts}{zk_path}?chroot=/apps", "--json")
    assert code == 0 and [json.loads(line)["address"] for line in out.splitlines()] == ["127.0.0.1:80"]


def test_zookeeper_unreachable_exits_1_naming_the_hosts(capsys: pytest.CaptureFixture[str]) -> None:
    hosts = f"127.0.0.1:{free_tcp_port()}"
    code, out, err = run(capsys, "resolve", f"zk://{hosts}/s", "--timeout", "0.3")
    assert code == 1 and out == ""
    assert hosts in one_line_error(err)
    code, out, err = run(capsys, "register", f"zk://{hosts}/s", "127.0.0.1:80", "--timeout", "0.3")
    assert code == 1 and out == ""
    assert "cannot register 127.0.0.1:80" in one_line_error(err)


def test_watch_zookeeper(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str, processes: list[Process]
) -> None:
    zk_client.create(f"{zk_path}/a", b"127.0.0.1:80", makepath=True)
    process = Process("watch", f"zk://{zookeeper_server.hosts}{zk_path}")
    processes.append(process)
    process.expect(rf"^{TIME}  \+ 127\.0\.0\.1:80$")
    zk_client.create(f"{zk_path}/b", b'{"host": "127.0.0.2", "port": 80, "weight": 3}')
    process.expect(rf"^{TIME}  \+ 127\.0\.0\.2:80  weight=3$")
    zk_client.delete(f"{zk_path}/a")
    process.expect(rf"^{TIME}  - 127\.0\.0\.1:80$")
    zk_client.delete(f"{zk_path}/b")
    process.expect(rf"^{TIME}  - 127\.0\.0\.2:80  weight=3$")
    process.expect(rf"^{TIME}  = no instances$")
    assert process.stop() == 0  # Ctrl-C ends a watch normally
    assert "Traceback" not in process.stderr


def test_watch_zookeeper_json_through_a_restart(private_zookeeper: ZooKeeperServer, processes: list[Process]) -> None:
    server = private_zookeeper
    client = server.client(session_timeout=10.0)
    client.create("/svc/a", b"127.0.0.1:80", makepath=True)
    process = Process("watch", f"zk://{server.hosts}/svc", "--json")
    processes.append(process)
    first = json.loads(process.expect(r'"event":"update"').string)
    assert [d["address"] for d in first["instances"]] == ["127.0.0.1:80"]
    assert [d["address"] for d in first["added"]] == ["127.0.0.1:80"] and first["removed"] == []
    assert first["stale"] is False and first["error"] is None and re.fullmatch(TIME, first["time"])
    server.stop()
    stale = json.loads(process.expect(r'"event":"stale"').string)
    assert stale["stale"] is True and server.hosts in stale["error"]
    assert [d["address"] for d in stale["instances"]] == ["127.0.0.1:80"]  # kept
    server.start()
    fresh = json.loads(process.expect(r'"event":"update"').string)
    assert fresh["stale"] is False and fresh["added"] == fresh["removed"] == []
    client.stop()
    client.close()
    assert process.stop(signal.SIGTERM) == 0


def test_register_zookeeper_until_ctrl_c(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str, processes: list[Process]
) -> None:
    process = Process(
        "register", f"zk://{zookeeper_server.hosts}{zk_path}", "127.0.0.1:8080",
        "--weight", "5", "--tag", "blue", "--meta", "zone=a",
    )  # fmt: skip
    processes.append(process)
    match = process.expect(rf"^{TIME}  registered 127\.0\.0\.1:8080  weight=5 tags=blue meta\.zone=a as (\S+)$")
    node = match.group(1)
    assert node.startswith(f"{zk_path}/instance-")
    document = json.loads(zk_client.get(node)[0])
    assert document == {"host": "127.0.0.1", "port": 8080, "weight": 5, "tags": ["blue"], "metadata": {"zone": "a"}}
    assert zk_client.get(node)[1].ephemeralOwner != 0
    assert process.stop(signal.SIGINT) == 0
    assert any(
        line.endswith(f"deregistered 127.0.0.1:8080  weight=5 tags=blue meta.zone=a as {node}")
        for line in process.rest()
    )
    assert not zk_client.exists(node)  # deleted at once, not left to the session timeout


def test_register_zookeeper_json_until_sigterm(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str, processes: list[Process]
) -> None:
    process = Process("register", f"zk://{zookeeper_server.hosts}{zk_path}", "127.0.0.1:8080", "--json")
    processes.append(process)
    registered = json.loads(process.expect(r'"event":"registered"').string)
    assert registered["instance"]["address"] == "127.0.0.1:8080"
    assert zk_client.get(registered["key"])[0] == b"127.0.0.1:8080"
    assert process.stop(signal.SIGTERM) == 0
    deregistered = [json.loads(line) for line in process.rest()]
    assert [d["event"] for d in deregistered] == ["deregistered"]
    assert not zk_client.exists(registered["key"])


# -- etcd (when its backend and fixtures are there) -----------------------------------------------


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[Any]:
    if EtcdServer is None:
        pytest.skip("the etcd test fixtures (tests/etcd_server.py) are not there")
    require_etcd()
    with EtcdServer() as server:
        yield server


def test_resolve_etcd(capsys: pytest.CaptureFixture[str], etcd_server: Any) -> None:
    prefix = unique_prefix()
    etcd_server.put(f"{prefix}/a", "127.0.0.1:80")
    etcd_server.put(f"{prefix}/b", json.dumps({"host": "127.0.0.2", "port": 81, "priority": 1}))
    code, out, err = run(capsys, "resolve", f"etcd://{etcd_server.endpoints[0].removeprefix('http://')}{prefix}")
    assert (code, err) == (0, "")
    assert sorted(out.splitlines()) == ["127.0.0.1:80", "127.0.0.2:81  priority=1"]


def test_etcd_unreachable_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    endpoints = f"127.0.0.1:{free_tcp_port()}"
    code, out, err = run(capsys, "resolve", f"etcd://{endpoints}/services/api", "--timeout", "0.3")
    assert code == 1 and out == ""
    assert endpoints in one_line_error(err)
    code, out, err = run(capsys, "resolve", "etcd", "/services/api", "--endpoints", f"http://{endpoints}")
    assert code == 1 and f"etcd:///services/api at http://{endpoints}" in err  # the first syntax, and where


def test_register_and_watch_etcd(etcd_server: Any, processes: list[Process]) -> None:
    prefix = unique_prefix()
    target = f"etcd://{etcd_server.endpoints[0].removeprefix('http://')}{prefix}"
    watcher = Process("watch", target)
    processes.append(watcher)
    watcher.expect(rf"^{TIME}  = no instances$")
    registrar = Process("register", target, "127.0.0.1:8080", "--ttl", "5")
    processes.append(registrar)
    key = registrar.expect(rf"^{TIME}  registered 127\.0\.0\.1:8080 as (\S+)$").group(1)
    value = etcd_server.get(key)  # host:port, or a JSON document
    assert value == "127.0.0.1:8080" or (json.loads(value)["host"], json.loads(value)["port"]) == ("127.0.0.1", 8080)
    watcher.expect(rf"^{TIME}  \+ 127\.0\.0\.1:8080$")
    assert registrar.stop(signal.SIGINT) == 0
    watcher.expect(rf"^{TIME}  - 127\.0\.0\.1:8080$")
    assert etcd_server.get(key) is None
    assert watcher.stop() == 0


def test_the_console_script_is_declared() -> None:
    import importlib
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["loadbalancer"].partition(":")
    assert getattr(importlib.import_module(module), function) is cli.main


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadbalancer", "resolve", "static:///127.0.0.1:80"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "127.0.0.1:80\n", "")
