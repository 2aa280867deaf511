"""A backend connection reads into a small buffer until a read fills it, then into buffers of ``--buffer-size``."""

from __future__ import annotations

import asyncio

from loadbalancer.instance import Instance
from loadbalancer.proxy._upstream import Backend, UpstreamConnection

SMALL = 16 * 1024
FULL = 256 * 1024


class Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


class Exchange:
    """Takes the answer as an upstream connection hands it on."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.completed = False
        self.status = 0

    def informational(self, connection: UpstreamConnection) -> None:
        pass

    def head(self, connection: UpstreamConnection) -> bool:
        self.status = connection.status
        return True

    def body(self, chunk: bytes | memoryview) -> None:
        self.received += chunk

    def holds_body(self) -> bool:
        return False  # what it was given is copied: the read buffer may be used again

    def read_ended(self) -> None:
        pass

    def complete(self, keep_alive: bool) -> None:
        self.completed = True


def feed(connection: UpstreamConnection, data: bytes) -> list[int]:
    """Deliver ``data`` as the event loop does, read by read; the size of each buffer offered."""
    sizes = []
    while data:
        buffer = connection.get_buffer(-1)
        sizes.append(len(buffer))
        taken = data[: len(buffer)]
        buffer[: len(taken)] = taken
        data = data[len(taken) :]
        connection.buffer_updated(len(taken))
    return sizes


def test_small_answers_use_a_small_buffer_and_a_large_body_the_full_size() -> None:
    async def run() -> None:
        backend = Backend(Instance("127.0.0.1", 9), loop=asyncio.get_running_loop(), buffer_size=FULL)
        connection = UpstreamConnection(backend)
        connection.connection_made(Transport())  # type: ignore[arg-type]

        small = Exchange()
        connection.start(small, b"GET /a HTTP/1.1\r\n\r\n", False)  # type: ignore[arg-type]
        small_answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        assert feed(connection, small_answer) == [SMALL]
        assert small.completed and bytes(small.received) == b"hello"

        large = Exchange()
        connection.start(large, b"GET /b HTTP/1.1\r\n\r\n", False)  # type: ignore[arg-type]
        body = bytes(range(256)) * 4096  # 1 MiB, every byte's place checkable
        sizes = feed(connection, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert sizes[0] == SMALL and set(sizes[1:]) == {FULL}  # the first read filled the small one
        assert large.completed and large.status == 200 and bytes(large.received) == body

    asyncio.run(run())
