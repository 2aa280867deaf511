"""An HTTP/2 stream's life in one worker, in process: what it leaves behind once it ended.

The proxy's HTTP/2 side runs against in-memory transports (an h2 client on one side, a
backend connection fed an answer on the other), with the garbage collector off: whatever a
finished stream leaves alive is then still there to count.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from loadbalancer import RoundRobin, static
from loadbalancer.instance import Instance
from loadbalancer.proxy._h2 import H2Connection
from loadbalancer.proxy._metrics import Metrics
from loadbalancer.proxy._proxy import Proxy
from loadbalancer.proxy._request import Request
from loadbalancer.proxy._upstream import Backend, UpstreamConnection

from .proxy_fixtures import fresh_metrics

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    with fresh_metrics() as made:
        yield made


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def requests_alive() -> int:
    return sum(1 for thing in gc.get_objects() if isinstance(thing, Request))


async def serve(
    metrics: Metrics, count: int, *, body: bytes = b"", authority: bytes = b"a"
) -> tuple[H2Connection, h2.connection.H2Connection, list[h2.events.Event]]:
    """``count`` requests, one after the other, over one connection: the proxy's side, the client, its events."""
    loop = asyncio.get_running_loop()
    instance = Instance("127.0.0.1", 9)
    backend = Backend(instance, loop=loop)
    upstream = UpstreamConnection(backend)
    upstream_transport = Transport()
    upstream.connection_made(upstream_transport)  # type: ignore[arg-type]
    backend.idle.append(upstream)
    balancer = RoundRobin(static.Publisher([instance], lambda _: backend, close_delay=0))
    proxy = Proxy(balancer, metrics=metrics)
    server = H2Connection(proxy)
    server_transport = Transport()
    server.connection_made(server_transport)  # type: ignore[arg-type]
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    events: list[h2.events.Event] = []

    async def exchange() -> None:
        for _ in range(200):  # until neither side has anything more to say
            await asyncio.sleep(0)
            if upstream_transport.out:
                upstream_transport.out.clear()
                upstream.data_received(ANSWER)
            data = client.data_to_send()
            if data:
                server.data_received(data)
            for chunk in server_transport.out:
                events.extend(client.receive_data(chunk))
            server_transport.out.clear()

    for _ in range(count):
        stream_id = client.get_next_available_stream_id()
        method = b"POST" if body else b"GET"
        headers = [(b":method", method), (b":path", b"/x"), (b":scheme", b"https"), (b":authority", authority)]
        if body:
            headers.append((b"content-length", b"%d" % len(body)))
        client.send_headers(stream_id, headers, end_stream=not body)
        for start in range(0, len(body), 15000):  # frames under the 16 KiB maximum
            client.send_data(stream_id, body[start : start + 15000], end_stream=start + 15000 >= len(body))
        await exchange()
        assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == stream_id for e in events), events
    return server, client, events


@pytest.mark.usefixtures("collector_off")
def test_an_answered_stream_leaves_no_request_behind_for_the_collector(metrics: Metrics) -> None:
    async def main() -> None:
        before = requests_alive()
        server, _, events = await serve(metrics, 20)
        answered = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert len(answered) == 20
        assert all(dict(e.headers)[b":status"] == b"200" for e in answered)
        assert not server.streams
        assert requests_alive() - before <= 1  # the backend connection's last exchange may hold one

    asyncio.run(main())


@pytest.mark.usefixtures("collector_off")
def test_a_refused_upload_leaves_no_request_behind_and_gives_its_window_back(metrics: Metrics) -> None:
    async def main() -> None:
        before = requests_alive()
        # 40 x 30,000 body bytes the proxy never passes on, more than the connection's 1 MiB
        # window: the client could not send the last of them unless they were acknowledged
        _, client, events = await serve(metrics, 40, body=b"x" * 30000, authority=b"bad host")
        refused = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert len(refused) == 40
        assert all(dict(e.headers)[b":status"] == b"400" for e in refused)
        assert requests_alive() == before
        assert client.outbound_flow_control_window >= 1 << 19  # h2 gives it back in halves of the window

    asyncio.run(main())
