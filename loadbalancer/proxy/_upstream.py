"""Backends: keep-alive connection pools with a fair, bounded limit, and the upstream side of an exchange."""

from __future__ import annotations

import asyncio
import collections
import ssl as _ssl
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import httptools

from ..instance import Instance
from ._errors import ConnectFailedError, QueueTimeoutError
from ._fields import EMPTY, Fields, read_answer_head

__all__ = [
    "PARSED_BODY", "Backend", "ConnectFailedError", "QueueTimeoutError", "Relay", "UpstreamConnection",
    "parse_backend_url",
]  # fmt: skip

_MAX_IDLE = 256  # idle keep-alive connections kept per backend
# A backend connection reads into a buffer this large until a read fills it, then into buffers
# of --buffer-size: an idle connection, or one carrying small answers, holds 16 KiB, not 256.
_FIRST_READS = 16 * 1024


class Exchange(Protocol):
    """What an upstream connection reports to the request it serves."""

    def informational(self, connection: UpstreamConnection) -> None: ...
    def head(self, connection: UpstreamConnection) -> bool: ...
    def body(self, chunk: bytes | memoryview) -> None: ...
    def holds_body(self) -> bool: ...
    def read_ended(self) -> None: ...
    def deadline(self) -> None: ...
    def complete(self, keep_alive: bool) -> None: ...
    def switched_protocols(self, connection: UpstreamConnection, rest: bytes) -> None: ...
    def failed(self, error: BaseException) -> None: ...
    def upload_paused(self) -> None: ...
    def upload_resumed(self) -> None: ...


class Relay(Protocol):
    """Where a connection's bytes go once it is a tunnel (after a 101)."""

    def from_backend(self, data: bytes) -> None: ...
    def backend_paused(self) -> None: ...
    def backend_resumed(self) -> None: ...
    def backend_lost(self) -> None: ...


def parse_backend_url(text: str) -> tuple[str, Instance]:
    """``http://host:port`` -> (scheme, Instance); a ValueError naming ``text`` otherwise."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as error:
        raise ValueError(f"backend URL {text!r}: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"backend URL {text!r}: give http://HOST:PORT or https://HOST:PORT")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"backend URL {text!r}: a backend is a scheme, host and port, without a path")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.scheme, Instance(parts.hostname, port)


PARSED_BODY = 64 * 1024  # bodies up to this long go through the parser (one read or two: no gain past it)
_SHORT = len(str(PARSED_BODY)) - 1  # a Content-Length of no more digits is not past PARSED_BODY (no calls to see)


class UpstreamConnection(asyncio.BufferedProtocol):
    """One keep-alive HTTP/1.1 connection to a backend; its answer goes to the current ``Exchange``.

    1xx answers before the final one are passed on as such; a 101 the exchange asked for makes
    the connection a tunnel (``relay``), no longer parsed. Reads land in a buffer of its own
    (a buffered protocol): a large body's bytes go on to an HTTP/1.1 client from there, with
    no copy, and the buffer is used again unless the client's transport still holds them. ``last_read`` and
    ``write_paused_since`` (the loop's clock) let the exchange time the backend out.
    """

    __slots__ = (
        "backend", "closed", "connection", "due", "exchange", "fields", "head", "head_request", "informational",
        "keep_alive", "last_read", "left", "length", "lent", "loop", "parser", "read_size", "reading_paused",
        "relay", "reusable", "status", "switching", "timer", "transport", "until_close", "upgrade", "view",
        "write_paused_since",
    )  # fmt: skip

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.relay: Relay | None = None
        self.fields: Fields = EMPTY  # the answer's end-to-end fields
        self.head: bytes | bytearray | None = None  # the answer's bytes since its head began, until it is complete
        self.length: bytes | None = None  # Content-Length
        self.left = 0  # bytes of a Content-Length body still to come, relayed past the parser (0: none)
        self.keep_alive = False  # the answer's, read at its head (for a body relayed past the parser)
        self.view: memoryview | None = None  # the read buffer
        self.read_size = min(_FIRST_READS, backend.buffer_size)  # its size: small until a read fills it
        self.lent = False  # its bytes were handed on and may still be held: the next read needs another
        self.connection = b""  # Connection (the headers it names are hop-by-hop)
        self.upgrade = b""
        self.status = 0
        self.head_request = False
        self.informational = False  # parsing a 1xx answer: its end is not the exchange's
        self.switching = False  # a 101 was relayed: the bytes after its head are the tunnel's
        self.closed = False
        self.reusable = False
        self.until_close = False
        self.reading_paused = False  # held back by the client's backpressure
        self.last_read = 0.0
        self.write_paused_since: float | None = None  # the backend takes no more of the request
        self.loop = asyncio.get_running_loop()
        self.due = 0.0  # when the exchange's deadline() is due (the loop's clock)
        self.timer: asyncio.TimerHandle | None = None  # fires at or before ``due``

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limit = self.backend.buffer_size
        self.transport.set_write_buffer_limits(high=limit, low=limit // 4)  # type: ignore[union-attr]

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self.view
        if view is None or self.lent or len(view) != self.read_size:
            view = self.view = memoryview(bytearray(self.read_size))
            self.lent = False
        return view

    def buffer_updated(self, nbytes: int) -> None:
        view = self.view
        assert view is not None
        read = view[:nbytes]
        if nbytes == self.read_size < self.backend.buffer_size:
            # A read filled the first, small buffer: a large body is coming, the next reads get the full size.
            self.read_size = self.backend.buffer_size
        if self.left and self.relay is None:
            self.last_read = self.backend.clock()
            rest = self._body_past_parser(read)
            if rest:
                self.data_received(bytes(rest))
            return
        self.data_received(read.tobytes())  # a head, a small body, a tunnel's bytes: as a Protocol gets them

    def data_received(self, data: bytes) -> None:
        relay = self.relay
        if relay is not None:
            relay.from_backend(data)
            return
        self.last_read = self.backend.clock()
        if self.left:
            data = bytes(self._body_past_parser(data))
            if not data:
                return
        head = self.head
        if head is not None:  # the head is read off these bytes once the parser has checked it
            if not head:
                self.head = head = data  # nearly always the whole head, in one read
            else:
                if type(head) is bytes:
                    self.head = head = bytearray(head)  # added to in place: linear in the bytes, however split
                head += data
            if len(head) > self.backend.buffer_size:
                limit = self.backend.buffer_size
                self._fail(
                    ConnectionError(f"{self.backend.url} sent an answer head over --buffer-size ({limit} bytes)")
                )
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if not self.switching or self.exchange is None:
                self._fail(ConnectionError(f"{self.backend.url} switched protocols unasked"))
                return
            switched, self.exchange = self.exchange, None
            switched.switched_protocols(self, data[upgrade.args[0] :])
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"{self.backend.url} sent a malformed answer: {error}"))
            return
        exchange = self.exchange
        if exchange is not None:
            exchange.read_ended()  # a head held to go out with its body's first bytes goes now

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.backend.lost(self)
        if self.relay is not None:
            self.relay.backend_lost()
        elif self.exchange is not None:
            if self.until_close and self.status:
                self._complete(False)  # a body without a length ends with the connection
            else:
                self._fail(exc or ConnectionResetError(f"{self.backend.url} closed the connection"))

    def pause_writing(self) -> None:
        if self.relay is not None:
            self.relay.backend_paused()
            return
        self.write_paused_since = self.backend.clock()
        if self.exchange is not None:
            self.exchange.upload_paused()

    def resume_writing(self) -> None:
        if self.relay is not None:
            self.relay.backend_resumed()
            return
        self.write_paused_since = None
        if self.exchange is not None:
            self.exchange.upload_resumed()

    # -- httptools callbacks --

    # No on_header: the parser checks the head's fields and calls no Python for each; they are
    # read off the head's bytes at its end (``read_answer_head``), a few C calls for any number.

    def on_headers_complete(self) -> None:
        status = self.status = self.parser.get_status_code()
        exchange = self.exchange
        head = self.head
        if head is None:  # bytes nobody asked for
            self.close()
            return
        end = head.find(b"\r\n\r\n")
        block = head[: end + 2]  # (bytes, nearly always: a bytearray only for a head read in parts)
        self.fields, self.length, chunked, self.connection, self.upgrade = read_answer_head(
            block if type(block) is bytes else bytes(block)
        )
        if 100 <= status < 200 and status != 101:
            self.head = head[end + 4 :]  # the final answer's head follows
            self.informational = True
            if exchange is not None:
                exchange.informational(self)
            return
        self.head = None
        self.until_close = self.length is None and not chunked
        if exchange is None or not exchange.head(self):
            self.exchange = None  # discarded (to be retried elsewhere): this connection is spent
            self.close()
            return
        if status == 101:
            self.switching = True
        elif self.head_request or status in (204, 304):
            self.parser = httptools.HttpResponseParser(self)  # no body follows, whatever the headers say
            self._complete(True)
        elif (
            self.length is not None
            and len(self.length) > _SHORT
            and self.length.isdigit()
            and int(self.length) > PARSED_BODY
        ):
            # A large body of known length goes to the client as read, past the parser, which
            # would copy every chunk into a new bytes object first (its on_body).
            self.left = int(self.length)
            self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, chunk: bytes) -> None:
        if self.left:
            self.left -= len(chunk)  # the first bytes of a body, read with its head
        if self.exchange is not None:
            self.exchange.body(chunk)

    def _body_past_parser(self, data: bytes | memoryview) -> bytes | memoryview:
        """Relay the next bytes of a known-length body unparsed; the bytes after it, for the parser."""
        left = self.left
        chunk: bytes | memoryview = data
        rest: bytes | memoryview = b""
        if len(data) > left:
            chunk, rest = data[:left], data[left:]
        self.left = left - len(chunk)
        exchange = self.exchange
        if exchange is not None:
            exchange.body(chunk)  # from the read buffer, uncopied
            if type(chunk) is memoryview:
                self.lent = exchange.holds_body()  # then the next read goes to a new buffer
        if not self.left:  # its end: the parser, which never saw the rest of it, starts afresh
            self.parser = httptools.HttpResponseParser(self)
            if self.exchange is not None and not self.switching:
                self._complete(self.keep_alive)
        return rest

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False  # the final answer follows on the same parser
        elif self.exchange is not None and not self.switching:
            self._complete(self.parser.should_keep_alive())

    # -- use --

    def start(self, exchange: Exchange, data: bytes, head_request: bool) -> None:
        self.exchange = exchange
        self.left = 0
        self.head = b""
        self.fields = EMPTY
        self.length = None
        self.connection = self.upgrade = b""
        self.until_close = True  # unless it says how long it is
        self.status = 0
        self.head_request = head_request
        self.last_read = self.backend.clock()
        if self.reading_paused:  # held back by the last client (its last write crossed the mark)
            self.resume_reading()
        assert self.transport is not None
        self.transport.write(data)

    def write(self, data: bytes | memoryview) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def holds(self) -> bool:
        """Whether the transport holds bytes the socket did not take (by reference, until it does)."""
        return self.transport is not None and self.transport.get_write_buffer_size() > 0

    def watch(self, due: float) -> None:
        """Call the exchange's ``deadline()`` at ``due`` (the loop's clock) or a little after.

        One timer per connection, kept from one exchange to the next: an attempt that ends in
        time, as nearly all do, costs no timer of its own. One due later than the timer's waits
        for it to fire and moves on from there; an earlier one sets the timer anew.
        """
        self.due = due
        timer = self.timer
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()
        self.timer = self.loop.call_at(due, self._expire)

    def _expire(self) -> None:
        self.timer = None
        exchange = self.exchange
        if exchange is None:
            return  # idle, or a tunnel's: nothing to time
        if self.loop.time() < self.due:
            self.timer = self.loop.call_at(self.due, self._expire)
            return
        exchange.deadline()

    def pause_reading(self) -> None:
        """Hold the backend's answer back (the client is not taking it)."""
        if not self.reading_paused and not self.closed and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.last_read = self.backend.clock()  # the idle wait starts again now
            if not self.closed and self.transport is not None:
                self.transport.resume_reading()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def _complete(self, keep_alive: bool) -> None:
        exchange = self.exchange
        self.exchange = None
        if self.reading_paused:
            self.resume_reading()
        self.reusable = keep_alive and not self.closed
        if exchange is not None:
            exchange.complete(keep_alive)

    def _fail(self, error: BaseException) -> None:
        exchange = self.exchange
        self.exchange = None
        self.close()
        if exchange is not None:
            exchange.failed(error)


class Backend:
    """A backend: the endpoint the balancer hands out, with its pool and its ``-n`` limit.

    Calling it (``await backend(attempt)``) runs one attempt of a request on it: the call is
    what the toolkit's trackers see (outstanding calls, latency, failures for ejection).
    """

    def __init__(
        self,
        instance: Instance,
        *,
        scheme: str = "http",
        limit: int | None = None,
        queue_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        ssl: _ssl.SSLContext | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        buffer_size: int = 256 * 1024,
    ) -> None:
        self.loop = loop  # the proxy's loop: the publisher's thread closes us through it
        self.clock = loop.time if loop is not None else time.monotonic
        self.buffer_size = buffer_size
        self.instance = instance
        self.name = instance.address  # its metrics label, read per answer
        self.scheme = scheme
        self.url = f"{scheme}://{instance.address}"
        self.host_header = instance.address.encode("latin-1")
        self.limit = limit
        self.queue_timeout = queue_timeout
        self.connect_timeout = connect_timeout
        self.ssl = ssl if scheme == "https" else None
        self.idle: collections.deque[UpstreamConnection] = collections.deque()
        self.waiters: collections.deque[asyncio.Future[UpstreamConnection | None]] = collections.deque()
        self.busy = 0  # connections handed out (or being opened)
        self.closing = False

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Backend({self.url!r})"

    async def __call__(self, attempt: Any) -> Any:
        return await attempt.run(self)

    def take(self) -> UpstreamConnection | None:
        """An idle kept-alive connection, now, if there is one (its slot taken); else None."""
        idle = self.idle
        while idle:
            connection = idle.pop()
            if not connection.closed:
                self.busy += 1
                return connection
        return None

    async def acquire(self) -> UpstreamConnection:
        """A connection to this backend: an idle one, a new one, or (at the limit) the next freed, in turn."""
        connection = self.take()
        if connection is not None:
            return connection
        if self.limit is not None and self.busy >= self.limit:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[UpstreamConnection | None] = loop.create_future()
            self.waiters.append(waiter)
            timer = loop.call_later(self.queue_timeout, _expire, waiter)
            try:
                handed = await waiter  # a freed slot: a connection, or None (open one in its place)
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._give_back(waiter.result())  # handed to us just as we left
                elif waiter in self.waiters:
                    self.waiters.remove(waiter)
                raise
            finally:
                timer.cancel()
            if handed is not None:
                return handed  # the slot came with it (busy unchanged)
        else:
            self.busy += 1
        try:
            return await self._open()
        except BaseException:
            self._free_slot()
            raise

    async def _open(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        host, port = self.instance.host, self.instance.port
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: UpstreamConnection(self),
                    host,
                    port,
                    ssl=self.ssl,
                    server_hostname=host if self.ssl else None,
                )
        except (OSError, TimeoutError) as error:
            reason = "timed out" if isinstance(error, TimeoutError) else str(error) or type(error).__name__
            raise ConnectFailedError(f"cannot connect to {self.url}: {reason}") from error
        return connection

    def release(self, connection: UpstreamConnection) -> None:
        """Give a connection back: kept for reuse when it may be, else closed; its slot goes to the next waiter."""
        if connection.reusable and not connection.closed and not self.closing:
            self._give_back(connection)
        else:
            connection.close()
            self._free_slot()

    def _give_back(self, connection: UpstreamConnection | None) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self.busy -= 1
        if connection is not None:
            if len(self.idle) < _MAX_IDLE:
                self.idle.append(connection)
            else:
                connection.close()

    def _free_slot(self) -> None:
        self._give_back(None)

    def lost(self, connection: UpstreamConnection) -> None:
        """A connection closed (by either side): an idle one leaves the pool."""
        try:
            self.idle.remove(connection)
        except ValueError:
            pass

    def close(self) -> None:
        """The backend left the set: close its idle connections; busy ones close when released."""
        if self.loop is not None and not self.loop.is_closed():
            try:
                if asyncio.get_running_loop() is self.loop:
                    self._close()
                    return
            except RuntimeError:
                pass
            self.loop.call_soon_threadsafe(self._close)

    def _close(self) -> None:
        self.closing = True
        while self.idle:
            self.idle.pop().close()

    @property
    def active(self) -> int:
        return self.busy


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(QueueTimeoutError("no connection to the backend became free in time"))
