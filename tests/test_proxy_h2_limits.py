"""``loadbalancer proxy`` facing abusive HTTP/2 clients (raw frames from the h2 library, over TLS and h2c),
and nghttp2's own clients."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from .daemon import missing
from .helpers import eventually
from .proxy_clients import children, rss, settled
from .proxy_fixtures import ProxyProcess, certificate
from .raw_backend import RawBackend

pytestmark = pytest.mark.server

MIB = 1 << 20


class H2Client:
    """A raw HTTP/2 client: the frames it is told to send, and every event the proxy's frames make."""

    def __init__(self, port: int, cert: Path | None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=20)
        if cert is None:
            self.sock: socket.socket = raw
        else:
            context = ssl.create_default_context(cafile=str(cert))
            context.set_alpn_protocols(["h2"])
            self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            assert self.sock.selected_alpn_protocol() == "h2"  # type: ignore[attr-defined]
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path: str, *, end: bool = True) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        headers = [(b":method", b"GET"), (b":path", path.encode()), (b":scheme", b"https"), (b":authority", b"a")]
        self.h2.send_headers(stream_id, headers, end_stream=end)
        return stream_id

    def read(self) -> bool:
        """One read's events; False when the proxy closed."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return False
        if not data:
            return False
        for event in self.h2.receive_data(data):
            self.events.append(event)
            if isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        with contextlib.suppress(OSError):
            self.flush()
        return True

    def until(self, done: Callable[[], bool]) -> None:
        while not done():
            if not self.read():
                return

    def of(self, kind: type[h2.events.Event]) -> list[h2.events.Event]:
        return [event for event in self.events if isinstance(event, kind)]

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        found = self.of(h2.events.ConnectionTerminated)
        return found[0] if found else None  # type: ignore[return-value]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def backend() -> Iterator[RawBackend]:
    with RawBackend() as running:
        yield running


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return certificate(tmp_path_factory.mktemp("cert"))


@pytest.fixture
def proxy(backend: RawBackend, cert: tuple[Path, Path], tmp_path: Path) -> Iterator[ProxyProcess]:
    args = ["-b", f"http://{backend.address}", "--health-path", "none", "--h2-max-streams", "4",
            "-cacert", str(cert[0]), "-privkey", str(cert[1])]  # fmt: skip
    with ProxyProcess(args, tmp_path, workers=1) as running:
        yield running


def client(proxy: ProxyProcess, cert: tuple[Path, Path]) -> H2Client:
    return H2Client(proxy.port, cert[0])


def worker(proxy: ProxyProcess) -> int:
    (pid,) = children(proxy.pid)
    return pid


def test_streams_past_the_advertised_limit_are_refused_one_by_one(proxy: ProxyProcess, cert: tuple[Path, Path]) -> None:
    c = client(proxy, cert)
    c.until(lambda: bool(c.of(h2.events.RemoteSettingsChanged)))
    settings = c.of(h2.events.RemoteSettingsChanged)[0].changed_settings  # type: ignore[attr-defined]
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 4
    c.h2.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 100  # a client that ignores it
    c.h2.remote_settings.acknowledge()
    streams = [c.request("/slow/0.5") for _ in range(8)]
    c.flush()

    def settled_all() -> bool:
        done = {event.stream_id for event in c.of(h2.events.StreamEnded)}  # type: ignore[attr-defined]
        reset = {event.stream_id for event in c.of(h2.events.StreamReset)}  # type: ignore[attr-defined]
        return set(streams) <= done | reset

    c.until(settled_all)
    refused = [e for e in c.of(h2.events.StreamReset) if e.error_code == h2.errors.ErrorCodes.REFUSED_STREAM]  # type: ignore[attr-defined]
    answered = c.of(h2.events.StreamEnded)
    assert len(refused) == 4 and len(answered) == 4 and c.goaway() is None
    again = c.request("/echo/after")  # the connection lives on
    c.flush()
    c.until(lambda: any(e.stream_id == again for e in c.of(h2.events.StreamEnded)))  # type: ignore[attr-defined]
    c.close()


def test_malformed_requests_are_reset_unforwarded_and_the_connection_lives_on(
    proxy: ProxyProcess, cert: tuple[Path, Path], backend: RawBackend
) -> None:
    c = client(proxy, cert)
    c.h2.config.validate_outbound_headers = False  # a client that sends what it should not
    c.h2.config.normalize_outbound_headers = False
    bad = {
        "uppercase name": [(b"X-Upper", b"1")],
        "newline in a value": [(b"x-split", b"a\r\nx-injected: 1")],
        "connection-specific": [(b"connection", b"close")],
        "TE": [(b"te", b"gzip")],
    }
    streams = {}
    for why, extra in bad.items():
        stream_id = c.h2.get_next_available_stream_id()
        path = b"/echo/malformed/" + why.replace(" ", "-").encode()
        headers = [(b":method", b"GET"), (b":path", path), (b":scheme", b"https"), (b":authority", b"a"), *extra]
        c.h2.send_headers(stream_id, headers, end_stream=True)
        streams[stream_id] = why
    c.flush()
    c.until(lambda: len(c.of(h2.events.StreamReset)) >= len(bad))
    reset = {e.stream_id: e.error_code for e in c.of(h2.events.StreamReset)}  # type: ignore[attr-defined]
    assert {reset.get(stream_id) for stream_id in streams} == {h2.errors.ErrorCodes.PROTOCOL_ERROR}, reset
    assert not any(key.startswith("GET /echo/malformed/") for key in backend.seen)  # none forwarded
    good = c.request("/echo/well-formed")  # the connection lives on
    c.flush()
    c.until(lambda: any(e.stream_id == good for e in c.of(h2.events.StreamEnded)))  # type: ignore[attr-defined]
    assert c.goaway() is None
    c.close()


def test_rapid_reset_ends_in_goaway_enhance_your_calm(
    proxy: ProxyProcess, cert: tuple[Path, Path], backend: RawBackend
) -> None:
    before = backend.count("GET /slow/2")
    c = client(proxy, cert)
    try:
        for _ in range(1000):
            stream_id = c.request("/slow/2", end=True)
            c.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            c.flush()
    except OSError:
        pass  # closed by the proxy mid-flood
    c.until(lambda: c.goaway() is not None)
    goaway = c.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert backend.count("GET /slow/2") - before < 300  # what reached the backend before the GOAWAY
    c.close()


@pytest.mark.parametrize("flood", ["ping", "settings", "window_update", "empty_data"])
def test_control_frame_floods_end_in_goaway_with_bounded_memory(
    proxy: ProxyProcess, cert: tuple[Path, Path], flood: str
) -> None:
    pid = worker(proxy)
    before = rss(pid)
    c = client(proxy, cert)
    stream_id = c.request("/sink", end=False)
    c.flush()

    def one() -> None:
        if flood == "ping":
            c.h2.ping(b"12345678")
        elif flood == "settings":
            c.h2.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
        elif flood == "window_update":
            c.h2.increment_flow_control_window(1)
        else:
            c.h2.send_data(stream_id, b"")

    def send() -> None:  # never reading: the proxy's answers (PING ACKs) pile up on its side
        with contextlib.suppress(OSError):
            for _ in range(200):
                for _ in range(500):
                    one()
                c.flush()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    sender.join(60)
    assert rss(pid) - before < 32 * MIB
    c.until(lambda: c.goaway() is not None)
    goaway = c.goaway()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    c.close()


def test_a_stalled_h2_reader_costs_the_proxy_a_bounded_buffer(
    proxy: ProxyProcess, cert: tuple[Path, Path], backend: RawBackend
) -> None:
    pid = worker(proxy)
    c = client(proxy, cert)
    huge = 2**31 - 1
    c.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: huge})
    c.h2.increment_flow_control_window(huge - 65535)
    c.request("/echo/warm")
    c.flush()
    c.until(lambda: bool(c.of(h2.events.StreamEnded)))
    before = rss(pid)
    start = backend.written
    c.request(f"/bytes/{400 * MIB}")
    c.flush()  # and read nothing: the windows are open, only TCP holds the proxy back
    sent = settled(lambda: backend.written) - start
    assert sent < 64 * MIB, sent
    # what the burst before the backpressure took is given back within the worker's next sweeps
    eventually(lambda: rss(pid) - before < 16 * MIB, 10, "the worker's memory back under 16 MiB more")
    c.close()


def test_h2c_with_prior_knowledge_is_served(backend: RawBackend, tmp_path: Path) -> None:
    with ProxyProcess(["-b", f"http://{backend.address}", "--health-path", "none"], tmp_path, workers=1) as proxy:
        c = H2Client(proxy.port, None)
        stream_id = c.request("/echo/h2c")
        c.flush()
        c.until(lambda: bool(c.of(h2.events.StreamEnded)))
        (response,) = c.of(h2.events.ResponseReceived)
        assert dict(response.headers)[b":status"] == b"200"  # type: ignore[attr-defined]
        body = b"".join(e.data for e in c.of(h2.events.DataReceived) if e.stream_id == stream_id)  # type: ignore[attr-defined]
        assert b'"path": "/echo/h2c"' in body
        c.close()


def test_early_hints_reach_an_h2_client_before_the_answer(proxy: ProxyProcess, cert: tuple[Path, Path]) -> None:
    c = client(proxy, cert)
    c.request("/early")
    c.flush()
    c.until(lambda: bool(c.of(h2.events.StreamEnded)))
    (hint,) = c.of(h2.events.InformationalResponseReceived)
    (final,) = c.of(h2.events.ResponseReceived)
    assert dict(hint.headers)[b":status"] == b"103" and dict(final.headers)[b":status"] == b"200"  # type: ignore[attr-defined]
    assert c.events.index(hint) < c.events.index(final)
    c.close()


def test_an_h2_client_gets_the_end_to_end_fields_of_an_answer_read_in_pieces(
    proxy: ProxyProcess, cert: tuple[Path, Path]
) -> None:
    c = client(proxy, cert)
    c.request("/dribble")  # CONNECTION: keep-alive, X-Hop; X-Hop; Keep-Alive; X-End; Content-Length
    c.flush()
    c.until(lambda: bool(c.of(h2.events.StreamEnded)))
    (hint,) = c.of(h2.events.InformationalResponseReceived)
    (final,) = c.of(h2.events.ResponseReceived)
    assert hint.headers == [(b":status", b"103"), (b"link", b"</a.css>; rel=preload")]  # type: ignore[attr-defined]
    assert final.headers == [(b":status", b"200"), (b"x-end", b"to-end"), (b"content-length", b"2")]  # type: ignore[attr-defined]
    assert b"".join(e.data for e in c.of(h2.events.DataReceived)) == b"ok"  # type: ignore[attr-defined]
    c.close()


def nghttp2_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing(f"{name} is not installed (Debian: nghttp2-client)")
    return found


def test_nghttp2s_client_through_small_windows_with_uploads_and_a_large_head(
    proxy: ProxyProcess, cert: tuple[Path, Path], backend: RawBackend, tmp_path: Path
) -> None:
    """nghttp (the C library most HTTP/2 software uses): 4 KiB stream windows, 64 KiB for the
    connection, four uploads of 300 KB at once (the limit here) and a 20 KB header (CONTINUATION frames)."""
    body = tmp_path / "body"
    body.write_bytes(b"u" * 300_000)
    before = backend.count("POST /echo/nghttp")
    out = subprocess.run(
        [nghttp2_tool("nghttp"), "-y", "-n", "-s", "-m", "4", "-w", "12", "-W", "16", "-d", str(body),
         "-H", "x-pad: " + "p" * 20_000, f"https://127.0.0.1:{proxy.port}/echo/nghttp"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    # the statistics: a line a request, with its status and its answer's size (the echoed body and head)
    answered = re.findall(r" 200 +(\d+)K /echo/nghttp", out)
    assert len(answered) == 4 and all(int(size) > 300 for size in answered), out
    assert backend.count("POST /echo/nghttp") - before == 4


def test_h2load_gets_every_answer(proxy: ProxyProcess, cert: tuple[Path, Path]) -> None:
    out = subprocess.run(
        [nghttp2_tool("h2load"), "-n", "3000", "-c", "4", "-m", "4", f"https://127.0.0.1:{proxy.port}/echo/h2load"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert "3000 succeeded, 0 failed, 0 errored" in out and "3000 2xx" in out, out
