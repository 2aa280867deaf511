"""``loadbalancer proxy`` facing careless and hostile HTTP/1.1 clients: every wait ends, every buffer is bounded.

The proxy runs as a user runs it (a child process, one worker so that its memory can be
read); the backend (``tests.raw_backend``) misbehaves on purpose; the clients are raw sockets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from loadbalancer.proxy._limits import raise_open_files

from .daemon import missing
from .helpers import eventually
from .proxy_clients import ask, children, connect, read_until, read_until_closed, rss, settled, status_of
from .proxy_fixtures import ProxyProcess, certificate
from .raw_backend import RawBackend

pytestmark = pytest.mark.server

MIB = 1 << 20
STRICT = [
    "--header-timeout", "1", "--body-timeout", "1", "--send-timeout", "1", "--read-timeout", "2", "--timeout", "1",
    "--max-header-size", "8k", "--max-headers", "20", "--health-path", "none",
]  # fmt: skip


@pytest.fixture(scope="module")
def backend() -> Iterator[RawBackend]:
    with RawBackend() as running:
        yield running


@pytest.fixture(scope="module")
def strict(backend: RawBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    """A proxy with short waits and an 8 KiB head limit."""
    args = ["-b", f"http://{backend.address}", *STRICT]
    with ProxyProcess(args, tmp_path_factory.mktemp("strict"), workers=1) as proxy:
        yield proxy


def worker(proxy: ProxyProcess) -> int:
    assert proxy.process is not None
    (pid,) = children(proxy.process.pid)
    return pid


def get(path: str, host: bytes = b"a") -> bytes:
    return b"GET %b HTTP/1.1\r\nHost: %b\r\nConnection: close\r\n\r\n" % (path.encode(), host)


def body_of(answer: bytes) -> dict[str, object]:
    document: dict[str, object] = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return document


# -- the head -----------------------------------------------------------------------------------


def test_request_line_and_head_over_the_limits_are_refused_unforwarded(
    strict: ProxyProcess, backend: RawBackend
) -> None:
    long_path = "/echo/" + "a" * 9000
    assert status_of(ask(strict.port, get(long_path))) == 414
    big_header = b"GET /echo/big HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    assert status_of(ask(strict.port, big_header)) == 431
    many = b"GET /echo/many HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(25)) + b"\r\n"
    assert status_of(ask(strict.port, many)) == 431
    both = b"GET /echo/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    assert status_of(ask(strict.port, both)) == 414  # the line is judged first
    split_line = connect(strict.port)  # a line trickled in pieces is measured the same way
    with split_line:
        for _ in range(12):
            split_line.sendall(b"GET /echo/" + b"a" * 800)
        assert status_of(read_until_closed(split_line)) == 414
    assert backend.count(f"GET {long_path}") == backend.count("GET /echo/big") == backend.count("GET /echo/many") == 0
    assert status_of(ask(strict.port, get("/echo/fine"))) == 200


def test_an_endless_header_is_cut_off_and_costs_no_memory(strict: ProxyProcess) -> None:
    pid = worker(strict)
    before = rss(pid)
    with connect(strict.port) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Endless: ")
        sent = 0
        try:
            while sent < 256 * MIB:  # the proxy answers and closes long before
                sock.sendall(b"x" * 65536)
                sent += 65536
        except OSError:
            pass
        answer = read_until_closed(sock)
    assert status_of(answer) == 431 and sent < 64 * MIB
    assert rss(pid) - before < 16 * MIB
    assert status_of(ask(strict.port, get("/echo/after"))) == 200


def test_host_is_checked_and_an_absolute_target_rewritten(strict: ProxyProcess, backend: RawBackend) -> None:
    for head in (
        b"GET /echo/h1 HTTP/1.1\r\nHost: evil/x\r\n\r\n",
        b"GET /echo/h1 HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /echo/h1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /echo/h1 HTTP/1.1\r\n\r\n",
        b"GET echo/h1 HTTP/1.1\r\nHost: a\r\n\r\n",
    ):
        assert status_of(ask(strict.port, head)) == 400, head
    assert backend.count("GET /echo/h1") == 0
    old = ask(strict.port, b"GET /echo/h10 HTTP/1.0\r\n\r\n")  # HTTP/1.0 may go without a Host
    assert status_of(old) == 200
    absolute = ask(
        strict.port, b"GET http://Example.COM:8080/echo/abs?q=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n"
    )
    seen = body_of(absolute)
    headers = {name.lower(): value for name, value in seen["headers"]}  # type: ignore[union-attr]
    assert seen["path"] == "/echo/abs?q=1" and headers["host"] == "Example.COM:8080"


def test_the_version_is_read_right_wherever_the_request_line_lies(strict: ProxyProcess) -> None:
    """HTTP/1.1 is read off the request line's bytes where a read begins with it: never wrongly.

    An HTTP/1.0 request may come without a Host and an HTTP/1.1 one may not, so the status
    shows which version the proxy read.
    """
    ok, no_host = b"GET /echo/a HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /echo/b HTTP/1.1\r\n\r\n"
    for sent, statuses in (
        (b"GET /echo/v HTTP/1.0\r\n\r\n", [200]),
        (b"\r\nGET /echo/v HTTP/1.0\r\n\r\n", [200]),  # a blank line before the request
        (b"\r\nGET /echo/v HTTP/1.1\r\n\r\n", [400]),
        (ok + b"GET /echo/b HTTP/1.0\r\n\r\n", [200, 200]),  # pipelined in one read
        (ok + no_host, [200, 400]),
    ):
        answers = ask(strict.port, sent)
        assert [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)] == statuses, sent
    # A head begun in one read and ended in the next: its second read, at the offset where its
    # version would lie had the read begun the request, holds "HTTP/1.1\r\n" (a field's value).
    with connect(strict.port) as sock:
        sock.sendall(ok + b"GET /echo/b HT")
        assert read_until(sock, b"\r\n\r\n").startswith(b"HTTP/1.1 200")
        rest = b"TP/1.0\r\nXY: HTTP/1.1\r\n\r\n"
        assert rest[len(b"GET /echo/b ") :].startswith(b"HTTP/1.1\r\n")
        sock.sendall(rest)
        assert b"HTTP/1.1 200" in read_until_closed(sock)


# -- upgrades -------------------------------------------------------------------------------------


def test_connect_and_refused_upgrades_never_reach_a_backend(strict: ProxyProcess, backend: RawBackend) -> None:
    connect_answer = ask(strict.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert status_of(connect_answer) == 405
    for _ in range(10):
        refused = ask(
            strict.port,
            b"DELETE /echo/ws-delete HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        assert status_of(refused) == 400
    assert backend.count("DELETE /echo/ws-delete") == 0 and backend.count("CONNECT example.com:443") == 0


def test_an_h2c_upgrade_is_served_as_plain_http1(strict: ProxyProcess, backend: RawBackend) -> None:
    upgrade = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
    for n in range(10):
        answer = ask(
            strict.port, b"DELETE /echo/h2c-%d HTTP/1.1\r\nHost: a\r\n%bConnection: close\r\n\r\n" % (n, upgrade)
        )
        assert status_of(answer) == 200
    assert sum(backend.count(f"DELETE /echo/h2c-{n}") for n in range(10)) == 10
    with connect(strict.port) as sock:  # a body after the head, then a pipelined request: both served
        sock.sendall(
            b"POST /echo/h2c-post HTTP/1.1\r\nHost: a\r\n%bContent-Length: 5\r\n\r\nhello" % upgrade
            + b"GET /echo/next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        answers = read_until_closed(sock)
    assert answers.count(b"HTTP/1.1 200") == 2 and b'"body": "hello"' in answers and b"/echo/next" in answers


def test_a_websocket_is_relayed_both_ways_and_closed_when_idle(strict: ProxyProcess) -> None:
    handshake = (
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with connect(strict.port) as sock:
        sock.sendall(handshake + b"early")  # bytes right after the handshake wait for the backend's 101
        head = read_until(sock, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101") and b"upgrade: websocket" in head.lower()
        got = head.split(b"\r\n\r\n", 1)[1]
        while len(got) < 5:
            got += sock.recv(100)
        assert got == b"EARLY"
        for word in (b"hello", b"again"):
            sock.sendall(word)
            assert read_until(sock, word.upper()) == word.upper()
        started = time.monotonic()
        assert read_until_closed(sock) == b""  # --read-timeout 2: nothing moved, the tunnel closes
        assert time.monotonic() - started < 10


# -- waits -----------------------------------------------------------------------------------------


def test_a_partial_head_gets_408_and_a_silent_connection_is_closed(strict: ProxyProcess) -> None:
    with connect(strict.port) as sock:
        sock.sendall(b"GET /echo/slow-head HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        for _ in range(40):  # one byte every 0.1 s: the head never ends within --header-timeout 1
            try:
                sock.sendall(b"x")
            except OSError:
                break
            time.sleep(0.1)
        answer = read_until_closed(sock)
    assert status_of(answer) == 408
    with connect(strict.port) as silent:
        assert read_until_closed(silent) == b""


def test_a_body_that_stops_gets_408(strict: ProxyProcess, backend: RawBackend) -> None:
    with connect(strict.port) as sock:
        sock.sendall(b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        answer = read_until_closed(sock)
    assert status_of(answer) == 408


def test_the_timeout_counts_from_the_end_of_the_request(strict: ProxyProcess) -> None:
    with connect(strict.port) as sock:  # 2 s of upload under --timeout 1: served
        sock.sendall(b"POST /echo/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
        for piece in (b"01", b"23", b"45", b"67", b"89"):
            time.sleep(0.4)
            sock.sendall(piece)
        answer = read_until_closed(sock)
    assert status_of(answer) == 200 and body_of(answer)["body"] == "0123456789"
    assert status_of(ask(strict.port, get("/slow/3"))) == 504


def test_a_backend_that_stalls_after_its_head_is_given_up(strict: ProxyProcess) -> None:
    started = time.monotonic()
    answer = ask(strict.port, get("/stall"))
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\nab")  # cut: 2 of 10 bytes
    assert time.monotonic() - started < 15


def test_a_head_goes_out_before_a_body_the_backend_holds_back(strict: ProxyProcess, backend: RawBackend) -> None:
    # The proxy holds an answer's head to write it with the first of its body: one system call,
    # not two. A head read alone must still go out at once (a client may act on it).
    backend.release.clear()
    try:
        with connect(strict.port) as sock:
            sock.sendall(get("/held"))
            head = read_until(sock, b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"content-length: 5" in head.lower()
            assert not backend.release.is_set()  # the body is still withheld
            backend.release.set()
            assert read_until_closed(sock).endswith(b"hello")
    finally:
        backend.release.set()


def test_a_client_that_reads_nothing_is_closed_and_its_backend_connection_freed(
    backend: RawBackend, tmp_path: Path
) -> None:
    args = ["-b", f"http://{backend.address}", "-n", "1", "--send-timeout", "1", "--health-path", "none"]
    with ProxyProcess(args, tmp_path, workers=1) as proxy:
        with connect(proxy.port) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(get("/bytes/268435456"))
            assert read_until_closed_slowly(sock) < 268435456  # closed by the proxy, unread
        assert status_of(ask(proxy.port, get("/echo/after-send-timeout"))) == 200  # -n 1: the slot came back


def read_until_closed_slowly(sock: socket.socket) -> int:
    """Wait, reading nothing, for the proxy to close; then count what had arrived."""
    eventually(lambda: _tcp_state(sock) in (_TCP_CLOSE, _TCP_CLOSE_WAIT), 30, "the proxy to close the connection")
    total = 0
    sock.settimeout(5)
    try:
        while chunk := sock.recv(MIB):
            total += len(chunk)
    except OSError:
        pass
    return total


_TCP_CLOSE, _TCP_CLOSE_WAIT = 7, 8


def _tcp_state(sock: socket.socket) -> int:
    """The socket's TCP state (Linux ``tcp_info.tcpi_state``): the peer's FIN or RST shows without a read."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


# -- framing ---------------------------------------------------------------------------------------


def test_pipelined_answers_come_in_order_and_each_complete(strict: ProxyProcess) -> None:
    broken = ask(strict.port, b"GET /slow/0.3 HTTP/1.1\r\nHost: a\r\n\r\nNOT HTTP AT ALL\r\n\r\n")
    first = broken.partition(b"\r\n\r\n")[0]
    assert first.startswith(b"HTTP/1.1 200") and b"content-length: 0" not in first.lower()
    assert broken.count(b"HTTP/1.1 ") == 2 and broken.index(b"HTTP/1.1 400") > broken.index(b"HTTP/1.1 200")
    with connect(strict.port) as sock:
        sock.sendall(
            b"GET /slow/0.3 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /echo/continued HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n"
            b"Connection: close\r\n\r\n"
        )
        before = read_until(sock, b"100 Continue\r\n\r\n")
        assert before.index(b"HTTP/1.1 200") < before.index(b"HTTP/1.1 100")  # not inside the first answer
        sock.sendall(b"body")
        rest = read_until_closed(sock)
    assert status_of(rest) == 200 and b'"body": "body"' in rest
    old = ask(
        strict.port, b"POST /echo/old HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody"
    )
    assert b"100 Continue" not in old and status_of(old) == 200


def test_early_hints_are_relayed_and_the_final_answer_kept(strict: ProxyProcess) -> None:
    answer = ask(strict.port, get("/early"))
    assert answer.startswith(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200")
    assert answer.endswith(b"ok")
    old = ask(strict.port, b"GET /early HTTP/1.0\r\nHost: a\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 200") and old.endswith(b"ok")  # 1xx is not for HTTP/1.0


def test_an_answer_head_read_in_pieces_loses_its_hop_by_hop_fields(strict: ProxyProcess) -> None:
    answer = ask(strict.port, get("/dribble"))
    hints, final = answer.split(b"\r\n\r\n", 1)
    assert hints == b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload"
    head, body = final.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK" and body == b"ok"
    assert sorted(lines[1:]) == [b"X-End: to-end", b"connection: close", b"content-length: 2"]


def test_an_answer_head_over_the_buffer_size_is_refused(strict: ProxyProcess) -> None:
    assert status_of(ask(strict.port, get(f"/big-head/{200 * 1024}"))) == 200
    assert status_of(ask(strict.port, get(f"/big-head/{300 * 1024}"))) == 502  # over --buffer-size (256k)
    assert status_of(ask(strict.port, get("/echo"))) == 200


def test_a_large_answer_passes_whole_and_its_backend_connection_serves_the_next(
    strict: ProxyProcess, backend: RawBackend
) -> None:
    size = 3 * MIB + 7  # past the parser: relayed as read
    with connect(strict.port) as sock:
        sock.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)
        data = read_until(sock, b"\r\n\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        assert status_of(head) == 200 and b"content-length: %d" % size in head.lower()
        while len(body) < size:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {len(body)} of {size} bytes"
            body += chunk
        assert body == b"x" * size  # nothing more, nothing less
        accepted = backend.accepted
        sock.sendall(get("/echo/after"))
        after = read_until_closed(sock)
    assert status_of(after) == 200 and body_of(after)["path"] == "/echo/after"
    assert backend.accepted == accepted, "the backend connection was not kept after a body relayed past the parser"


def test_a_large_upload_passes_whole_and_the_next_request_on_the_connection_is_served(strict: ProxyProcess) -> None:
    size = 2 * MIB + 3  # past the parser: relayed as read
    body = b"0123456789abcdef" * (size // 16) + b"xyz"  # ASCII: the backend answers it back in JSON
    with connect(strict.port) as sock:
        # the body's end and the next head in one write: the parser starts afresh after the body
        sock.sendall(
            b"POST /echo/up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%b" % (size, body) + get("/echo/next")
        )
        answers = read_until_closed(sock)
    first, second = answers.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200") and json.loads(first.split(b"\r\n\r\n", 1)[1])["body"].encode() == body
    assert second.startswith(b"200") and b'"path": "/echo/next"' in second


def _upload_to_a_slow_backend(sock: socket.socket, size: int, seed: int) -> None:
    """A large upload to ``/trickle``, then a request, on ``sock``: the body arrives intact, the next is served."""
    body = random.Random(seed).randbytes(size)  # no two reads alike: a read buffer used too soon would show
    head = b"POST /trickle/%d HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (seed, size)
    sock.sendall(head + body + get("/echo/next"))  # the next head right after the body's end
    answers = read_until_closed(sock)
    first, second = answers.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200"), first[:200]
    assert json.loads(first.split(b"\r\n\r\n", 1)[1]) == {"length": size, "sha256": hashlib.sha256(body).hexdigest()}
    assert second.startswith(b"200") and b'"path": "/echo/next"' in second


def test_large_uploads_to_a_slow_backend_arrive_intact(strict: ProxyProcess) -> None:
    # The backend reads slower than the clients write: the proxy's read buffers are held by the
    # backend's transport (and must not be read into again) while new reads go to others.
    failures: list[BaseException] = []

    def one(seed: int) -> None:
        try:
            with connect(strict.port, timeout=30) as sock:
                _upload_to_a_slow_backend(sock, 6 * MIB + seed, seed)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures


def test_a_large_upload_over_tls_arrives_intact(backend: RawBackend, tmp_path: Path) -> None:
    cert, key = certificate(tmp_path)
    args = ["-b", f"http://{backend.address}", "--health-path", "none", "-cacert", str(cert), "-privkey", str(key)]
    with ProxyProcess(args, tmp_path, workers=1) as proxy:
        context = ssl.create_default_context(cafile=str(cert))
        with connect(proxy.port, timeout=30) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            _upload_to_a_slow_backend(sock, 12 * MIB + 5, 7)


def test_a_large_body_that_stops_gets_408_and_the_proxy_serves_on(strict: ProxyProcess) -> None:
    with connect(strict.port) as sock:
        sock.sendall(b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % MIB + b"x" * 300_000)
        answer = read_until_closed(sock)
    assert status_of(answer) == 408
    with connect(strict.port) as sock:  # a client gone in the middle of a large body costs nothing more
        sock.sendall(b"POST /trickle HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % MIB + b"x" * 300_000)
    assert status_of(ask(strict.port, get("/echo/after"))) == 200


def test_a_backend_that_refuses_a_large_upload_at_once_is_heard_and_the_proxy_serves_on(
    strict: ProxyProcess,
) -> None:
    with connect(strict.port, timeout=30) as sock:
        # (Connection: close: should the whole body be relayed before the answer is read, the proxy closes all the same)
        head = b"POST /refuse HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % (8 * MIB)
        sock.sendall(head)
        with contextlib.suppress(OSError):  # the proxy may stop reading, and close, before all of it is sent
            for _ in range(8):
                sock.sendall(b"x" * MIB)
        answer = read_until_closed(sock)
    assert status_of(answer) == 413 and answer.endswith(b"big!")
    assert status_of(ask(strict.port, get("/echo/after"))) == 200


def test_a_large_answer_cut_short_is_cut_short_for_the_client(strict: ProxyProcess) -> None:
    size = 3 * MIB
    answer = ask(strict.port, b"GET /cut/%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status_of(head) == 200 and b"content-length: %d" % size in head.lower()
    assert len(body) <= size // 2  # at most what the backend sent, then the connection cut: never a whole answer


# -- memory and connections ------------------------------------------------------------------------


def test_a_stalled_reader_costs_the_proxy_a_bounded_buffer(backend: RawBackend, tmp_path: Path) -> None:
    with ProxyProcess(["-b", f"http://{backend.address}", "--health-path", "none"], tmp_path, workers=1) as proxy:
        pid = worker(proxy)
        assert status_of(ask(proxy.port, get("/echo/warm"))) == 200
        before = rss(pid)
        start = backend.written
        total = 400 * MIB
        with connect(proxy.port, timeout=60) as sock:
            sock.sendall(get(f"/bytes/{total}"))
            sent = settled(lambda: backend.written) - start  # the backend blocked: the proxy stopped reading it
            grown = rss(pid) - before
            assert sent < 64 * MIB, sent  # only the sockets' buffers hold the rest
            assert grown < 16 * MIB, grown
            received = 0
            while received < total + 30:
                chunk = sock.recv(4 * MIB)
                if not chunk:
                    break
                received += len(chunk)
        assert received > total  # head + every byte, once the client read


def test_past_max_connections_partial_heads_are_shed_first(backend: RawBackend, tmp_path: Path) -> None:
    args = ["-b", f"http://{backend.address}", "--health-path", "none", "--max-connections", "20"]
    with ProxyProcess(args, tmp_path, workers=1) as proxy:
        idle = [connect(proxy.port) for _ in range(5)]
        for n, sock in enumerate(idle):
            sock.sendall(b"GET /echo/idle-%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
            read_until(sock, b"}")
        slow = [connect(proxy.port) for _ in range(40)]
        for sock in slow:
            with contextlib.suppress(OSError):  # already shed, as a newer one came in
                sock.sendall(b"GET /echo/slow HTTP/1.1\r\nHost: a\r\nX-Never: ")
        assert status_of(ask(proxy.port, get("/echo/newcomer"))) == 200
        for n, sock in enumerate(idle):  # kept: the partial heads went first
            sock.sendall(b"GET /echo/idle-again-%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
            assert read_until(sock, b"}").startswith(b"HTTP/1.1 200")
        eventually(lambda: sum(_tcp_state(sock) in (_TCP_CLOSE, _TCP_CLOSE_WAIT) for sock in slow) >= 20, 10, "shed")
        for sock in idle + slow:
            sock.close()


def test_slowloris_connections_do_not_starve_other_clients(backend: RawBackend, tmp_path: Path) -> None:
    args = ["-b", f"http://{backend.address}", "--health-path", "none", "--header-timeout", "2"]
    if raise_open_files() < 1200:
        missing("this test's 1,000 connections need a hard open-files limit over 1,200 (ulimit -Hn)")
    with ProxyProcess(args, tmp_path, workers=1) as proxy:
        sockets = []
        for _ in range(1000):
            sock = connect(proxy.port)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            sockets.append(sock)
        served = 0
        for n in range(20):  # others are served while they hang on
            served += requests.get(f"{proxy.url}/echo/normal-{n}", timeout=10).status_code == 200
        assert served == 20
        for sock in sockets:  # --header-timeout 2: every one of them is answered 408 and closed
            sock.settimeout(20)
            assert status_of(read_until_closed(sock)) == 408
            sock.close()
