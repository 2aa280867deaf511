"""``loadbalancer proxy`` started as a user would, in front of real backend processes on loopback."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .daemon import free_tcp_port
from .helpers import eventually
from .http_fixtures import HttpBackend, running, under_load
from .proxy_fixtures import ProxyProcess, certificate

pytestmark = pytest.mark.server


def urls(backends: list[HttpBackend]) -> list[str]:
    return [arg for backend in backends for arg in ("-b", f"http://{backend.address}")]


@pytest.fixture(scope="module")
def two() -> Iterator[list[HttpBackend]]:
    with running(2) as backends:
        yield backends


@pytest.fixture(scope="module")
def proxy(two: list[HttpBackend], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    with ProxyProcess([*urls(two), "-cache"], tmp_path_factory.mktemp("proxy")) as running_proxy:
        yield running_proxy


def get(url: str, **kwargs: object) -> requests.Response:
    return requests.get(url, timeout=10, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def restored(proxy: ProxyProcess, two: list[HttpBackend]) -> Iterator[None]:
    """For a test that gives the module's proxy other backends: its two again after it (tests run in any order)."""
    yield
    assert proxy.admin(",".join(f"http://{backend.address}" for backend in two) + "\n").startswith("ok")
    eventually(
        lambda: {get(f"{proxy.url}/echo").json()["port"] for _ in range(8)} == {b.port for b in two}, 20, "both back"
    )


def test_balances_over_the_backends_and_forwards_what_a_proxy_should(
    proxy: ProxyProcess, two: list[HttpBackend]
) -> None:
    ports = {get(f"{proxy.url}/echo/{n}?q={n}").json()["port"] for n in range(20)}
    assert ports == {backend.port for backend in two}

    answer = requests.post(
        f"{proxy.url}/echo/post?x=1",
        data=b"a body",
        headers={"Connection": "keep-alive, X-Secret", "X-Secret": "hop", "X-Forwarded-For": "10.1.1.1"},
        timeout=10,
    ).json()
    assert answer["method"] == "POST" and answer["body"] == "a body" and answer["path"] == "/echo/post?x=1"
    assert answer["host"] == f"127.0.0.1:{proxy.port}"  # the client's Host is kept


@pytest.mark.usefixtures("restored")
def test_forwarded_headers_and_hop_by_hop(proxy: ProxyProcess) -> None:
    seen: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.update({key.lower(): value for key, value in self.headers.items()})
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.send_header("Keep-Alive", "timeout=5")
            self.send_header("Connection", "keep-alive, X-Hop")  # names a hop-by-hop field of its own
            self.send_header("X-Hop", "this hop only")
            self.send_header("X-End", "to-end")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"http://127.0.0.1:{server.server_address[1]}"
        assert proxy.admin(address + "\n").startswith("ok: ")
        eventually(lambda: get(f"{proxy.url}/x").text == "ok", 10, "the new backend")
        response = get(
            f"{proxy.url}/x",
            headers={"Connection": "X-Secret", "X-Secret": "1", "X-Forwarded-For": "10.1.1.1", "TE": "trailers"},
        )
        assert seen["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
        assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"
        assert "x-secret" not in seen and "te" not in seen
        assert response.headers["X-End"] == "to-end" and "Keep-Alive" not in response.headers
        assert "X-Hop" not in response.headers
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_count_requests_by_backend_method_and_class(proxy: ProxyProcess, two: list[HttpBackend]) -> None:
    proxy.admin(",".join(f"http://{backend.address}" for backend in two) + "\n")
    for _ in range(4):
        get(f"{proxy.url}/status/404")

    def text() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{proxy.metrics_port}/metrics", timeout=10) as answer:
            return str(answer.read().decode())

    eventually(lambda: "loadbalancer_proxy_healthy_backends 2.0" in text(), 10, "the healthy gauge")

    def answered_404() -> float:  # the workers write their tallies at each sweep, a second apart at most
        return sum(
            sample.value
            for family in text_string_to_metric_families(text())
            for sample in family.samples
            if sample.name == "loadbalancer_proxy_requests_total" and sample.labels.get("status") == "4xx"
        )

    eventually(lambda: answered_404() == 4, 10, "the four 404s counted, across the workers")
    body = text()
    assert 'loadbalancer_proxy_requests_total{backend="' in body and 'status="4xx"' in body
    assert "loadbalancer_proxy_upstream_latency_seconds_bucket" in body
    assert "loadbalancer_proxy_active_connections" in body and "loadbalancer_proxy_cache_total" in body

    # the library's own figures from both workers' stacks, merged: gauges not doubled, counters summed
    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text())
            for sample in family.samples
        }

    checks = ("loadbalancer_health_checks_total", (("service", "proxy"),))
    eventually(lambda: samples().get(checks, 0) >= 2, 10, "the library's figures")
    found = samples()
    assert found[("loadbalancer_publisher_instances", (("publisher", "static.Publisher"), ("service", "proxy")))] == 2
    assert found[checks] >= 2
    assert found[("loadbalancer_ejected", (("service", "proxy"),))] == 0


@pytest.mark.usefixtures("restored")
def test_cache_keys_on_the_full_url_keeps_headers_and_never_stores_post(
    proxy: ProxyProcess, two: list[HttpBackend]
) -> None:
    proxy.admin(f"http://{two[0].address}\n")  # one backend: the counts in the bodies are its own
    eventually(lambda: get(f"{proxy.url}/echo").json()["port"] == two[0].port, 10, "one backend")
    for _ in range(4):  # one worker may not have seen the change yet: settle on one
        get(f"{proxy.url}/echo")
    first = get(f"{proxy.url}/cache-a?cc=max-age%3D60&q=1", headers={"Connection": "close"})
    # the proxy has two workers, each with its cache, and the kernel gives each new connection to
    # either: ask until both have answered (eight asks all went to one worker once in 256)
    answers: set[str] = set()
    for _ in range(64):
        answers.add(get(f"{proxy.url}/cache-a?cc=max-age%3D60&q=1").text)
        if len(answers) >= 2 and first.text in answers:
            break
    assert len(answers) <= 2 and first.text in answers
    hits: list[requests.Response] = []
    eventually(
        lambda: hits.append(get(f"{proxy.url}/cache-a?cc=max-age%3D60&q=1")) or hits[-1].headers.get("X-Cache"),
        10,
        "a hit",
    )
    assert hits[-1].headers["X-Backend"] == "kept" and hits[-1].headers["Cache-Control"] == "max-age=60"
    assert hits[-1].text in answers
    heads: list[requests.Response] = []
    eventually(
        lambda: (
            heads.append(requests.head(f"{proxy.url}/cache-a?cc=max-age%3D60&q=1", timeout=10))
            or heads[-1].headers.get("X-Cache")
        ),
        10,
        "a HEAD answered from the GET's entry",
    )
    assert heads[-1].headers["Content-Length"] == str(len(hits[-1].content)) and heads[-1].content == b""
    other_query = get(f"{proxy.url}/cache-a?cc=max-age%3D60&q=2")
    assert other_query.text.startswith("GET /cache-a?cc=max-age%3D60&q=2 answer")  # the query is in the key

    posted = [requests.post(f"{proxy.url}/cache-p?cc=max-age%3D60", timeout=10).text for _ in range(3)]
    assert len(set(posted)) == 3  # never stored
    assert not get(f"{proxy.url}/cache-p?cc=max-age%3D60").text.startswith("POST")

    no_store = {get(f"{proxy.url}/cache-n?cc=no-store").text for _ in range(4)}
    assert len(no_store) == 4
    private = {get(f"{proxy.url}/cache-v?cc=private%2C%20max-age%3D60").text for _ in range(4)}
    assert len(private) == 4

    short = f"{proxy.url}/cache-e?cc=max-age%3D3"
    for _ in range(4):
        get(short)
    seen = {get(short).text for _ in range(4)}
    assert len(seen) <= 2  # cached
    eventually(lambda: get(short).text not in seen, 10, "the entry to expire")


def test_503_with_no_healthy_backend_and_the_health_json_rule_both_ways(tmp_path: Path) -> None:
    with running(2) as (a, b):
        a_health = urllib.request.urlopen(f"http://{a.address}/admin/health/503/healthy", timeout=5)
        a_health.read()
        args = [*urls([a, b]), "--health-interval", "0.2", "--panic-threshold", "0"]
        with ProxyProcess(args, tmp_path, workers=1) as proxy:
            assert get(f"{proxy.url}/echo").status_code == 200
            urllib.request.urlopen(f"http://{b.address}/admin/health/200/draining", timeout=5).read()
            # a: 503 but says healthy, stays; b: 200 but says draining, leaves
            eventually(lambda: {get(f"{proxy.url}/echo").json()["port"] for _ in range(6)} == {a.port}, 10, "b out")
            urllib.request.urlopen(f"http://{a.address}/admin/health/500/none", timeout=5).read()
            eventually(lambda: get(f"{proxy.url}/echo").status_code == 503, 10, "no backend left")
            response = get(f"{proxy.url}/echo")
            assert response.status_code == 503 and response.text == "no backend available\n"
            urllib.request.urlopen(f"http://{b.address}/admin/health/200/healthy", timeout=5).read()
            eventually(lambda: get(f"{proxy.url}/echo").status_code == 200, 10, "b back")


def test_socket_replacement_under_load_loses_no_request_and_bad_input_changes_nothing(tmp_path: Path) -> None:
    with running(3) as (a, b, c), ProxyProcess(urls([a]), tmp_path) as proxy:
        session_local = threading.local()

        def request() -> None:
            session = getattr(session_local, "session", None) or requests.Session()
            session_local.session = session
            response = session.get(f"{proxy.url}/echo", timeout=10)
            assert response.status_code == 200, response.status_code

        with under_load(request) as load:
            eventually(lambda: load.done > 50, 20, "load")
            assert proxy.admin(f"http://{b.address},http://{c.address}\n") == (
                f"ok: http://{b.address},http://{c.address}\n"
            )
            eventually(lambda: {get(f"{proxy.url}/echo").json()["port"] for _ in range(10)} == {b.port, c.port}, 10)
            done = load.done
            eventually(lambda: load.done > done + 50, 20, "more load")
        assert load.failures == []
        answer = proxy.admin("http://ok:1,nonsense://x:y\n")
        assert answer.startswith("error: ") and "nonsense://x:y" in answer
        assert proxy.admin("\n").startswith("error: no backend URLs")
        assert {get(f"{proxy.url}/echo").json()["port"] for _ in range(10)} == {b.port, c.port}


def test_connection_limit_queues_then_503(tmp_path: Path) -> None:
    with (
        HttpBackend() as backend,
        ProxyProcess(
            [*urls([backend]), "-n", "1", "--queue-timeout", "0.3", "--health-path", "none"], tmp_path, workers=1
        ) as proxy,
    ):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            slow = pool.submit(get, f"{proxy.url}/slow/1.5")
            eventually(lambda: backend.counts().get("GET /slow/1.5") == 1, 10, "the slow request")
            waiting = pool.submit(get, f"{proxy.url}/echo")
            assert waiting.result().status_code == 503  # -n 1: it waited its bounded time
            assert slow.result().status_code == 200
        assert get(f"{proxy.url}/echo").status_code == 200  # the slot came back


def test_aborted_clients_lose_no_slot(tmp_path: Path) -> None:
    with (
        HttpBackend() as backend,
        ProxyProcess([*urls([backend]), "-n", "2", "--health-path", "none"], tmp_path, workers=1) as proxy,
    ):
        for n in range(6):  # each holds a backend connection when it goes away
            if n % 2:
                # a kept-alive backend connection is idle: the next request is served on callbacks, not in a task
                assert get(f"{proxy.url}/echo/warm/{n}").status_code == 200
            with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
                sock.sendall(f"GET /slow/30/{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                eventually(lambda n=n: backend.counts().get(f"GET /slow/30/{n}") == 1, 10, "the request")
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        for n in range(1000):
            connection.request("GET", f"/echo/{n}")
            response = connection.getresponse()
            assert response.status == 200, (n, response.status)
            response.read()
        connection.close()


def test_least_loaded_stops_counting_the_requests_clients_gave_up(tmp_path: Path) -> None:
    # The balancer counts each request in flight on its backend; one a client gives up must stop
    # counting, or the backend looks busy for ever and least-loaded sends it nothing.
    with (
        HttpBackend() as a,
        HttpBackend() as b,
        ProxyProcess(
            [*urls([a]), "--balancer", "least-loaded", "--eject-after", "0", "--health-path", "none"],
            tmp_path,
            workers=1,
        ) as proxy,
    ):
        for n in range(4):
            assert get(f"{proxy.url}/echo/warm/{n}").status_code == 200  # a kept-alive connection: callbacks
            with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
                sock.sendall(f"GET /slow/30/{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                eventually(lambda n=n: a.counts().get(f"GET /slow/30/{n}") == 1, 10, "the request")
        assert proxy.admin(f"http://{a.address},http://{b.address}\n").startswith("ok: ")
        eventually(lambda: get(f"{proxy.url}/echo/b").json()["port"] == b.port, 10, "the second backend")
        ports = [get(f"{proxy.url}/echo/{n}").json()["port"] for n in range(200)]
        assert ports.count(a.port) > 40, ports.count(a.port)  # one at a time: an even split, were nothing left counted


def test_a_killed_backend_under_load_fails_no_request(tmp_path: Path) -> None:
    with running(2) as (a, b), ProxyProcess(urls([a, b]), tmp_path) as proxy:

        def request() -> None:
            response = requests.get(f"{proxy.url}/echo", timeout=10)
            assert response.status_code == 200, response.status_code

        with under_load(request) as load:
            eventually(lambda: load.done > 50, 20, "load")
            a.kill()
            done = load.done
            eventually(lambda: load.done > done + 200, 30, "load after the kill")
        assert load.failures == []
        assert get(f"{proxy.url}/echo").json()["port"] == b.port


def test_graceful_shutdown_finishes_requests_in_flight(tmp_path: Path) -> None:
    with HttpBackend() as backend:
        proxy = ProxyProcess([*urls([backend]), "--health-path", "none"], tmp_path, workers=1).start()
        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                slow = pool.submit(get, f"{proxy.url}/slow/1")
                eventually(lambda: backend.counts().get("GET /slow/1") == 1, 10, "the request in flight")
                assert proxy.terminate() == 0
                answer = slow.result()
                assert answer.status_code == 200 and answer.text == str(backend.port)
            with pytest.raises(requests.ConnectionError):
                get(f"{proxy.url}/echo")
        finally:
            proxy.stop()


def test_a_failed_connect_goes_to_another_backend_and_none_reachable_is_502(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_tcp_port()}"
    with (
        HttpBackend() as backend,
        ProxyProcess(
            ["-b", dead, *urls([backend]), "--health-path", "none", "--eject-after", "0"], tmp_path, workers=1
        ) as proxy,
    ):
        assert all(get(f"{proxy.url}/echo").status_code == 200 for _ in range(6))
        assert proxy.admin(dead + "\n").startswith("ok")
        eventually(lambda: get(f"{proxy.url}/echo").status_code == 502, 10, "only the dead one")


def test_tls_termination_with_a_generated_certificate(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path)
    with (
        HttpBackend() as backend,
        ProxyProcess([*urls([backend]), "-cacert", str(cert), "-privkey", str(key)], tmp_path, workers=1) as proxy,
    ):
        assert proxy.url.startswith("https://")
        answer = requests.get(f"{proxy.url}/echo/tls", timeout=10, verify=str(cert))
        assert answer.status_code == 200 and answer.json()["path"] == "/echo/tls"
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"{proxy.url}/echo/again", timeout=10, context=context) as response:
            assert json.load(response)["port"] == backend.port
        trusting = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(http2=True, verify=trusting, timeout=10) as client:  # HTTP/2 by ALPN
            answers = [client.get(f"{proxy.url}/echo/h2/{n}") for n in range(3)]
            assert {answer.http_version for answer in answers} == {"HTTP/2"}
            assert [answer.json()["path"] for answer in answers] == [f"/echo/h2/{n}" for n in range(3)]
            big = b"0123456789abcdef" * 65536  # 1 MiB: beyond the first flow-control windows both ways
            posted = client.post(f"{proxy.url}/echo/h2-post", content=big)
            assert posted.http_version == "HTTP/2" and posted.json()["body"].encode() == big
            streamed = client.get(f"{proxy.url}/stream/3/0.01")
            assert streamed.text == "chunk 0\nchunk 1\nchunk 2\n"
            assert client.head(f"{proxy.url}/echo/h2-head").status_code == 200
        # and as an https backend of another proxy, which verifies it (health checks over TLS too)
        with ProxyProcess(
            ["-b", proxy.url, "--health-interval", "0.2"], tmp_path, workers=1, env={"SSL_CERT_FILE": str(cert)}
        ) as front:
            assert get(f"{front.url}/echo/chained").json()["path"] == "/echo/chained"
            with urllib.request.urlopen(f"http://127.0.0.1:{front.metrics_port}/metrics", timeout=10) as answer:
                assert "loadbalancer_proxy_healthy_backends" in answer.read().decode()


def test_command_line_errors_name_the_value(tmp_path: Path) -> None:
    def run_py(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loadbalancer", "proxy", *args], capture_output=True, text=True, timeout=60,
            cwd=Path(__file__).parent.parent,
        )  # fmt: skip

    helped = run_py("--help")
    assert helped.returncode == 0
    for flag in ("-p", "-b", "-n", "-cacert", "-privkey", "-cache", "-prometheus-port", "--socket", "--source"):
        assert f"{flag} " in helped.stdout or f"{flag}," in helped.stdout
    bad = run_py("-b", "ftp://x:1")
    assert bad.returncode == 2 and "ftp://x:1" in bad.stderr
    none = run_py("-p", "0")
    assert none.returncode == 2 and "-b URL" in none.stderr
    half = run_py("-b", "http://127.0.0.1:1", "-cacert", str(tmp_path / "c.pem"))
    assert half.returncode == 2 and "-privkey" in half.stderr
    listed = subprocess.run([sys.executable, "-m", "loadbalancer", "--help"], capture_output=True, text=True)
    assert "proxy" in listed.stdout


def test_goaround_command_line_unchanged(tmp_path: Path) -> None:
    with HttpBackend() as backend:
        port = free_tcp_port()
        proxy = ProxyProcess([], tmp_path, workers=1)
        proxy.command = [
            *proxy.command[: proxy.command.index("-p")],
            "-p", str(port), "-b", f"http://{backend.address}", "-n", "64", "-cache",
            "-prometheus-port", str(proxy.metrics_port), "--socket", proxy.socket, "--workers", "1",
        ]  # fmt: skip
        with proxy:
            assert proxy.port == port
            assert get(f"http://127.0.0.1:{port}/echo").json()["port"] == backend.port


def test_backends_from_a_discovery_source(tmp_path: Path) -> None:
    with running(2) as (a, b):
        target = f"static:///{a.address},{b.address}"
        for flags in (["--source", target], ["-b", target], ["--source", f"static:{a.address}", "--source-option",
                                                                b.address]):  # fmt: skip
            with ProxyProcess(flags, tmp_path, workers=1) as proxy:
                assert {get(f"{proxy.url}/echo").json()["port"] for _ in range(6)} == {a.port, b.port}, flags
                answer = proxy.admin(f"http://{a.address}\n")
                assert answer.startswith(f"error: the backends come from {target}"), answer


def test_a_bad_target_is_refused_before_the_proxy_starts(tmp_path: Path) -> None:
    def run_py(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loadbalancer", "proxy", *args], capture_output=True, text=True, timeout=60,
            cwd=Path(__file__).parent.parent,
        )  # fmt: skip

    for flags, message in [
        (["--source", "dns:///_a._tcp.example.?colour=blue"], "unknown option colour"),
        (["-b", "nosuch:///x"], "unknown scheme 'nosuch'"),
        (["-b", "static:///127.0.0.1:1", "-b", "http://127.0.0.1:2"], "a target names all the backends"),
        (["--source", "static:127.0.0.1:1", "--source-option=--bogus"], "not an option of the static source"),
    ]:
        refused = run_py(*flags)
        assert refused.returncode == 2 and message in refused.stderr, (flags, refused.stderr)


def test_bodies_stream_both_ways_and_pipelined_requests_are_answered_in_turn(proxy: ProxyProcess) -> None:
    big = b"0123456789abcdef" * 131072  # 2 MiB up
    answer = requests.put(f"{proxy.url}/echo/big", data=big, timeout=30).json()
    assert answer["method"] == "PUT" and answer["body"].encode() == big

    with requests.get(f"{proxy.url}/stream/3/0.05", stream=True, timeout=10) as streamed:
        assert streamed.headers["Transfer-Encoding"] == "chunked"
        assert list(streamed.iter_lines()) == [b"chunk 0", b"chunk 1", b"chunk 2"]

    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:  # HTTP/1.0: ends with the close
        sock.sendall(b"GET /stream/2/0 HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"chunk 0\nchunk 1\n")

    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            b"GET /echo/p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo/p2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        assert data.count(b"HTTP/1.1 200") == 2 and data.index(b"/echo/p1") < data.index(b"/echo/p2")


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def test_a_dead_worker_is_replaced_and_the_others_keep_serving(tmp_path: Path) -> None:
    with HttpBackend() as backend, ProxyProcess([*urls([backend]), "--health-path", "none"], tmp_path) as proxy:
        assert proxy.process is not None
        workers = children(proxy.process.pid)
        assert len(workers) == 2
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        eventually(lambda: len(children(proxy.process.pid) - {victim}) == 2, 20, "a new worker")  # type: ignore[union-attr]
        assert all(get(f"{proxy.url}/echo").status_code == 200 for _ in range(20))


async def test_http2_streams_the_client_resets_lose_no_slot(tmp_path: Path) -> None:
    cert, key = certificate(tmp_path)
    with (
        HttpBackend() as backend,
        ProxyProcess(
            [*urls([backend]), "-n", "2", "--health-path", "none", "-cacert", str(cert), "-privkey", str(key)],
            tmp_path,
            workers=1,
        ) as proxy,
    ):
        trusting = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(http2=True, verify=trusting, timeout=10) as client:
            # two kept-alive backend connections first: the slow requests take them on callbacks, not in tasks
            await asyncio.gather(*(client.get(f"{proxy.url}/slow/0.2/{n}") for n in range(2)))
            slow = [asyncio.ensure_future(client.get(f"{proxy.url}/slow/30/{n}")) for n in range(4)]
            await asyncio.to_thread(
                eventually, lambda: backend.counts().get("GET /slow/30/1") == 1, 10, "slow requests at the backend"
            )
            for request in slow:
                request.cancel()  # httpx resets the streams
        async with httpx.AsyncClient(http2=True, verify=trusting, timeout=10) as client:
            answers = await asyncio.gather(*(client.get(f"{proxy.url}/echo/{n}") for n in range(200)))
        assert {answer.status_code for answer in answers} == {200}
        assert {answer.http_version for answer in answers} == {"HTTP/2"}


def test_retries_spend_a_budget_so_an_outage_does_not_triple_the_load(tmp_path: Path) -> None:
    with running(2) as (a, b):
        for backend in (a, b):
            backend.mode("down")  # 503 to everything: every GET is worth retrying, until the budget says no
        with ProxyProcess([*urls([a, b]), "--health-path", "none", "--eject-after", "0"], tmp_path, workers=1) as proxy:
            session = requests.Session()
            answers = [session.get(f"{proxy.url}/echo/{n}", timeout=10).status_code for n in range(300)]
            assert set(answers) == {503}
        seen = sum(backend.counts().get(f"GET /echo/{n}", 0) for backend in (a, b) for n in range(300))
        # without a budget: 900 (3 attempts each); with one: 300 + 20% of them + 10 a second for 10 s
        assert 300 < seen <= 300 + 60 + 100 + 10
