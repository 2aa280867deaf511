"""``loadbalancer proxy`` as a process: its port, its admin socket, its signals, what it leaves behind, recovery."""

from __future__ import annotations

import glob
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from .daemon import free_tcp_port
from .helpers import eventually
from .http_fixtures import ROOT, HttpBackend, running
from .proxy_clients import children
from .proxy_fixtures import ProxyProcess
from .servers import BindServer

pytestmark = pytest.mark.server


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=10)


def metrics_dirs(pid: int, directory: str | Path | None = None) -> list[str]:
    """The metrics directories of proxy ``pid`` in ``directory`` (its TMPDIR; default: this process's)."""
    where = tempfile.gettempdir() if directory is None else str(directory)
    return glob.glob(os.path.join(where, f"loadbalancer-proxy-metrics-{pid}-*"))


def test_a_second_proxy_on_a_port_in_use_refuses_to_start(tmp_path: Path) -> None:
    port = free_tcp_port()
    with HttpBackend() as backend:
        first = ProxyProcess(["-b", f"http://{backend.address}"], tmp_path, workers=2)
        first.command[first.command.index("-p") + 1] = str(port)
        with first:
            second = subprocess.run(
                [sys.executable, "-m", "loadbalancer", "proxy", "-p", str(port), "--bind", "127.0.0.1",
                 "-b", f"http://{backend.address}", "--socket", "none", "-prometheus-port", "0"],
                cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert second.returncode != 0
            assert f"127.0.0.1:{port}" in second.stderr and "in use" in second.stderr
            assert all(get(f"{first.url}/echo").status_code == 200 for _ in range(10))  # the first serves alone


def test_the_banner_says_whether_the_build_is_compiled(tmp_path: Path) -> None:
    # scripts/test-compiled runs these tests on the compiled build, and says so; a checkout is pure Python
    expected = os.environ.get("LOADBALANCER_EXPECT_COMPILED") == "1"
    with HttpBackend() as backend, ProxyProcess(["-b", f"http://{backend.address}"], tmp_path) as proxy:
        assert ("compiled" in proxy.banner) is expected, proxy.banner
        assert get(f"{proxy.url}/echo").status_code == 200


def test_the_admin_socket_is_private_and_takes_only_complete_lines(tmp_path: Path) -> None:
    with running(2) as (a, b), ProxyProcess(["-b", f"http://{a.address}"], tmp_path, umask=0) as proxy:
        assert stat.S_IMODE(os.stat(proxy.socket).st_mode) == 0o600  # under umask 000 too
        cut = proxy.admin(f"http://{b.address}")  # no newline: the line may have been cut short
        assert cut.startswith("error: ") and "newline" in cut
        too_long = proxy.admin("http://127.0.0.1:1," * 4000 + "\n")
        assert too_long.startswith("error: ") and "64 KiB" in too_long
        assert {get(f"{proxy.url}/echo").json()["port"] for _ in range(6)} == {a.port}  # nothing changed
        assert proxy.admin(f"http://{b.address}\n") == f"ok: http://{b.address}\n"
        eventually(lambda: {get(f"{proxy.url}/echo").json()["port"] for _ in range(6)} == {b.port}, 10, "b alone")
    with HttpBackend() as c, ProxyProcess(["-b", f"http://{c.address}", "--socket-mode", "0660"], tmp_path) as proxy:
        assert stat.S_IMODE(os.stat(proxy.socket).st_mode) == 0o660


def test_sighup_reads_the_source_again_and_never_ends_the_proxy(bind: BindServer, tmp_path: Path) -> None:
    name = "_hup._tcp"
    target = "localhost."  # the proxy connects by name, through the system's resolver
    with running(2) as (a, b):
        bind.set_srv(name, [(10, 10, a.port, target)])
        args = ["--source", f"dns://127.0.0.1:{bind.port}/{bind.name(name)}?interval=3600"]
        with ProxyProcess(args, tmp_path) as proxy:
            assert {get(f"{proxy.url}/echo").json()["port"] for _ in range(4)} == {a.port}
            workers = children(proxy.pid)
            bind.set_srv(name, [(10, 10, b.port, target)])  # polled once an hour: only SIGHUP brings it
            os.kill(proxy.pid, signal.SIGHUP)
            eventually(lambda: {get(f"{proxy.url}/echo").json()["port"] for _ in range(6)} == {b.port}, 10, "b")
            assert proxy.process is not None and proxy.process.poll() is None
            assert children(proxy.pid) == workers  # no worker was restarted either


def test_every_way_out_removes_what_the_proxy_made(tmp_path: Path) -> None:
    # A TMPDIR of this test's own: any proxy starting on the machine (another test run) removes
    # the metrics directories of dead proxies in the shared one, the SIGKILLed one's included.
    private = tmp_path / "tmp"
    private.mkdir()
    env = {"TMPDIR": str(private)}
    with HttpBackend() as backend:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            proxy = ProxyProcess(["-b", f"http://{backend.address}"], tmp_path, env=env).start()
            try:
                assert metrics_dirs(proxy.pid, private) and os.path.exists(proxy.socket)
                assert proxy.process is not None
                proxy.process.send_signal(signum)
                assert proxy.process.wait(30) == 0
                assert not metrics_dirs(proxy.pid, private) and not os.path.exists(proxy.socket), signum
            finally:
                proxy.stop()
        killed = ProxyProcess(["-b", f"http://{backend.address}"], tmp_path, env=env).start()
        pid = killed.pid
        try:
            workers = children(pid)
            os.kill(pid, signal.SIGKILL)
            killed.process.wait(10)  # type: ignore[union-attr]
            eventually(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in workers), 20, "the workers to end")
            assert metrics_dirs(pid, private)  # left behind by SIGKILL ...
        finally:
            killed.stop()
        with ProxyProcess(["-b", f"http://{backend.address}"], tmp_path, env=env):
            assert not metrics_dirs(pid, private)  # ... and removed by the next proxy to start


def test_each_worker_writes_metrics_files_of_its_own(tmp_path: Path) -> None:
    # The pid naming a worker's files is read once per process, at fork: each worker's own, or
    # two workers would write one file and /metrics would lose counts.
    private = tmp_path / "tmp"
    private.mkdir()
    with (
        HttpBackend() as backend,
        ProxyProcess(["-b", f"http://{backend.address}"], tmp_path, env={"TMPDIR": str(private)}) as proxy,
    ):
        workers = children(proxy.pid)
        assert len(workers) == 2
        (directory,) = metrics_dirs(proxy.pid, private)

        def named() -> set[int]:
            return {int(name.rsplit("_", 1)[1].split(".")[0]) for name in os.listdir(directory)}

        eventually(lambda: workers <= named(), 10, "a metrics file named by each worker's pid")
        assert proxy.pid not in named()


def test_a_metrics_file_being_made_costs_a_scrape_nothing(tmp_path: Path) -> None:
    # A worker making a new metrics file leaves it empty for an instant, and prometheus-client
    # cannot read an empty one: a scrape at that instant dropped its connection unanswered.
    private = tmp_path / "tmp"
    private.mkdir()
    with (
        HttpBackend() as backend,
        ProxyProcess(["-b", f"http://{backend.address}"], tmp_path, env={"TMPDIR": str(private)}) as proxy,
    ):
        assert get(f"{proxy.url}/echo").status_code == 200
        (directory,) = metrics_dirs(proxy.pid, private)
        being_made = Path(directory) / "counter_999999.db"
        for page in ("metrics", "status.json"):
            being_made.write_bytes(b"")
            # made in full a moment later: read again, answered in full
            threading.Timer(0.005, being_made.unlink).start()
            answer = get(f"http://127.0.0.1:{proxy.metrics_port}/{page}")
            assert answer.status_code == 200, answer.text
            if page == "metrics":
                assert "loadbalancer_proxy_healthy_backends" in answer.text
            else:
                assert len(answer.json()["backends"]) == 1
            assert being_made.exists() is False
            # never made: answered 500, saying why, not a dropped connection
            being_made.write_bytes(b"")
            answer = get(f"http://127.0.0.1:{proxy.metrics_port}/{page}")
            assert answer.status_code == 500
            assert "the workers' figures could not be read" in answer.text and "struct.error" in answer.text
            being_made.unlink()
            assert get(f"http://127.0.0.1:{proxy.metrics_port}/{page}").status_code == 200
        assert "figures_unreadable" in "".join(proxy.stderr)


def test_a_restarted_backend_serves_again_within_about_a_second(tmp_path: Path) -> None:
    with HttpBackend() as backend, ProxyProcess(["-b", f"http://{backend.address}"], tmp_path, workers=1) as proxy:
        assert get(f"{proxy.url}/echo").status_code == 200
        backend.kill()
        status = f"http://127.0.0.1:{proxy.metrics_port}/status.json"
        eventually(lambda: get(status).json()["backends"][0].get("healthy") is False, 20, "the backend seen down")
        assert get(f"{proxy.url}/echo").status_code == 502  # tried anyway (no healthy one: panic), refused
        backend.start()
        restarted = time.monotonic()
        eventually(lambda: get(f"{proxy.url}/echo").status_code == 200, 10, "served again")
        assert time.monotonic() - restarted < 5  # at once: the health check (10 s) is not waited for
        eventually(lambda: get(status).json()["backends"][0].get("healthy") is True, 10, "rechecked within 1 s")


def test_the_proxy_extra_alone_runs_the_proxy(tmp_path: Path) -> None:
    """``pip install 'loadbalancer[proxy]'`` installs what the proxy imports: none of the other extras is needed."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'httpx', 'requests', 'kazoo', 'zeroconf', 'yaml', 'json5',"
        " 'opentelemetry', 'kubernetes', 'consul'}:\n"
        "            raise ImportError(f'{name} is blocked: not in loadbalancer[proxy]')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    with HttpBackend() as backend:
        env = {"PYTHONPATH": str(tmp_path)}
        with ProxyProcess(["-b", f"http://{backend.address}"], tmp_path, env=env) as proxy:
            assert all(get(f"{proxy.url}/echo").status_code == 200 for _ in range(10))
            assert "blocked" not in "".join(proxy.stderr)
        probe = subprocess.run(
            [sys.executable, "-c", "import httpx"], env={**os.environ, **env}, capture_output=True, text=True
        )
        assert "blocked" in probe.stderr  # the blocker works


def test_a_listening_socket_refused_by_the_kernel_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "loadbalancer", "proxy", "-p", str(port), "--bind", "127.0.0.1", "-b",
             "http://127.0.0.1:1", "--socket", "none", "-prometheus-port", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1 and "address is in use" in result.stderr
