"""HTTP/1.1 clients: an asyncio protocol with httptools' parser, bounded in bytes and in time.

A request head is held here until it is complete (its blank line seen) and only then given to
the parser, in one piece: parsing stays linear in the bytes received however the client
splits them, and a head over ``--max-header-size`` is refused (414 for the request line, 431
for the head) before the parser holds any of it. A request is forwarded only once its head
passed every check (``_request.check``); what the proxy refuses is answered in turn, after
the answers to the requests before it, and ends the connection. Requests on one connection
are served one at a time, in order (pipelining); reading stops while the backend cannot take
the body, and the backend is not read while the client cannot take the answer.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Final

import httptools

from ._exchange import REASONS, Downstream, log_failure
from ._fields import Fields
from ._h2 import H2Connection
from ._proxy import Proxy, reset
from ._request import Refusal, Request, check
from ._tunnel import Tunnel
from ._upstream import PARSED_BODY, Backend, UpstreamConnection

__all__ = ["ClientConnection"]

_HEAD_END = b"\r\n\r\n"
_H2_PREFACE = b"PRI * HTTP/2.0\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TOO_LARGE = (431, b"request head too large\n")
_JOINED = 16 * 1024  # a body chunk up to this long is joined to a held head (a copy); a longer one, not
_NOTED = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade"})

# Why reading from the client is paused (a bit each): reading resumes when no reason is left.
_PENDING = 1  # a body is waiting for a backend connection
_UPLOAD = 2  # the backend is not taking the body
_EARLY = 4  # bytes after an upgrade request, held until the backend switches
# Each known status's line, made once (formatting one costs more than the rest of the head).
_STATUS_LINES: Final = {status: b"HTTP/1.1 %d %b\r\n" % (status, reason) for status, reason in REASONS.items()}


class _BodyReader(asyncio.BufferedProtocol):
    """The client's protocol while a large Content-Length body is read: into a buffer of its own.

    Each read lands in the buffer and goes on to the backend from there, uncopied (a plain
    protocol gets every read as a new bytes object, a copy of the loop's buffer). The buffer is
    used again unless the backend's transport still holds the last read; a read never asks for
    more than the body has left, so the next request's bytes stay in the socket for the client
    connection, which takes its protocol back at the body's end. Everything else the transport
    says goes to the client connection.
    """

    __slots__ = ("client", "lent", "size", "view")

    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.size = 0  # the buffer's size: the proxy's buffer size, or less for a shorter body
        self.view: memoryview | None = None  # the buffer (None between bodies: idle connections hold none)
        self.lent = False  # the last read may still be held (by the backend's transport): the next needs another

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self.view
        if view is None or self.lent:
            view = self.view = memoryview(bytearray(self.size))
            self.lent = False
        left = self.client.body_left
        return view if left >= len(view) else view[:left]

    def buffer_updated(self, nbytes: int) -> None:
        view = self.view
        assert view is not None
        self.client.body_read(self, view[:nbytes])

    def eof_received(self) -> bool | None:
        return self.client.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.connection_lost(exc)

    def pause_writing(self) -> None:
        self.client.pause_writing()

    def resume_writing(self) -> None:
        self.client.resume_writing()


class _Stop(Exception):
    """Raised in a parser callback: the request is refused (``ClientConnection.refusal`` says how)."""


def _head_ends(data: bytes | bytearray, start: int = 0) -> bool:
    return data.find(_HEAD_END, start) >= 0 or data.find(b"\n\n", start) >= 0


class ClientConnection(Downstream, asyncio.Protocol):
    """One HTTP/1.1 client connection (or the start of an HTTP/2 one, which it hands over)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.limits = proxy.limits
        self.max_head = proxy.limits.max_header_size
        self.max_headers = proxy.limits.max_headers
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = b""
        self.queue: collections.deque[Request] = collections.deque()
        self.parsing: Request | None = None
        self.current: Request | None = None  # the request being served (the first in ``queue``)
        self.closing = False  # closed or being closed: nothing more is served or written
        self.divert: Callable[[bytes], None] | None = None  # where bytes go when not to the parser
        self.in_head = True  # the next bytes are a request head's (not a body's)
        self.mid_head = False  # the parser holds the start of a head
        self.fresh = True  # no head parsed yet: an HTTP/2 preface is looked for
        self.head_buffer = bytearray()
        self.tail = b""  # the last bytes given to the parser (a head's end may straddle two reads)
        self.head_size = 0
        self.starts = b""  # the read being parsed, when it begins with a request's first byte
        self.known_host = b"\0"  # the Host of the last request found valid
        self.refusal: Refusal | None = None
        self.refused = False  # a refusal is queued: the rest of the input is not read
        self.manual_body = 0  # body bytes of a request whose upgrade was declined, read past the parser
        self.body_left = 0  # bytes of a large Content-Length body still to come, relayed past the parser
        self.reader: _BodyReader | None = None  # the transport's protocol while such a body is read
        self.upgrading = False  # an upgrade request is out: later bytes wait in ``early``
        self.early = bytearray()
        self.tunnel: Tunnel | None = None
        self.write_paused = False
        self.blocked_since: float | None = None  # the client took none of the answer since then
        self.blocked_size = 0
        self.feeding: UpstreamConnection | None = None  # the backend connection whose answer we relay
        self.read_pauses = 0
        self.last_read = 0.0
        self.held = b""  # an answer's head not yet written: it goes out with the first of its body

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._hand_over(transport, b"")  # type: ignore[arg-type]
            return
        self.transport = transport  # type: ignore[assignment]
        limit = self.limits.buffer_size
        self.transport.set_write_buffer_limits(high=limit, low=limit // 4)  # type: ignore[union-attr]
        peer = transport.get_extra_info("peername")
        self.client_ip = (peer[0] if isinstance(peer, tuple) else "unknown").encode()
        if not self.proxy.admit(self):
            self.closing = True
            self.divert = self._ignore
            body = b"too many connections\n"
            transport.write(  # type: ignore[attr-defined]
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%b"
                % (len(body), body)
            )
            transport.close()
            return
        self.proxy.heads[self] = self.last_read = self.proxy.now

    def _hand_over(self, transport: asyncio.Transport, data: bytes) -> None:
        """The client speaks HTTP/2 (ALPN h2, or h2c with prior knowledge): its own protocol takes over."""
        self.proxy.gone(self)
        self.closing = True
        self.divert = self._ignore
        connection = H2Connection(self.proxy)
        transport.set_protocol(connection)
        connection.connection_made(transport)
        if data:
            connection.data_received(data)

    def data_received(self, data: bytes) -> None:
        divert = self.divert
        if divert is not None:
            divert(data)
            return
        if self.in_head:
            # find(), not `in`: `bytes in bytes` first tries the operand as an int, an exception dearer than the search
            if self.head_buffer or (data.find(_HEAD_END) < 0 and data.find(b"\n\n") < 0):
                proxy = self.proxy
                if self not in proxy.heads:
                    proxy.heads[self] = proxy.now
                whole = self._gather_head(data)
                if whole is None:
                    return
                data = whole
            if self.fresh and data.startswith(_H2_PREFACE) and self.transport is not None:
                self._hand_over(self.transport, data)
                return
            self.proxy.idle.pop(self, None)
            if not self.mid_head:
                self.starts = data
        else:
            self.last_read = self.proxy.now
            if self.body_left:
                rest = self._body_past_parser(data)
                if rest:
                    self.data_received(rest)  # the next request's head, read with the body's end
                elif self.body_left:
                    self._read_body()
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._after_upgrade(data[upgrade.args[0] :])
        except httptools.HttpParserError:
            refusal = self.refusal or (400, b"malformed request\n")
            if self.in_head:
                self._refuse(refusal)
            else:
                self.abort()  # a malformed body: the request is cut, as if the client had gone
        self.starts = b""  # (a head cut short must not be matched against this read later)
        if self.mid_head:  # the next head began in this read: its wait begins
            self.tail = data[-3:]
            if self not in self.proxy.heads:
                self.proxy.heads[self] = self.proxy.now
        if self.current is None and self.queue:
            self._dispatch()  # after the parser returned: a body read with its head is in the request
        if self.body_left:
            self._read_body()

    def _gather_head(self, data: bytes) -> bytes | None:
        """Hold a head's bytes until its end is seen: the head then, whole (None until then)."""
        buffer = self.head_buffer
        if not buffer and self.mid_head and _head_ends(self.tail + data[:3]):
            return data  # the end straddles this read and the one the parser has
        seen = len(buffer)
        buffer += data
        if not _head_ends(buffer, max(0, seen - 3)):
            self._check_head_size()
            return None
        whole = bytes(buffer)
        buffer.clear()
        return whole

    # -- where bytes go when not to the parser (``divert``) --

    def _ignore(self, data: bytes) -> None:
        """Closing, or refused: the rest of the input is not read."""

    def _early(self, data: bytes) -> None:
        """After a WebSocket handshake: held until the backend switches protocols."""
        self.early += data
        if len(self.early) > self.limits.buffer_size:
            self._pause(_EARLY)

    def _declined_body(self, data: bytes) -> None:
        """The body of a request whose upgrade was declined (the parser skipped it)."""
        rest = self._manual_body(data)
        if rest:
            self.data_received(rest)

    def _stop_reading(self) -> None:
        self.divert = self._ignore

    def _check_head_size(self) -> None:
        buffer = self.head_buffer
        limit = self.limits.max_header_size
        if len(buffer) <= limit:
            return
        line_end = buffer.find(b"\n")
        too_long_line = not self.mid_head and (line_end < 0 or line_end > limit)
        self._refuse((414, b"request line too long\n") if too_long_line else _TOO_LARGE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.divert = self._ignore
        self.proxy.gone(self)
        if self.tunnel is not None:
            self.tunnel.client_lost()
        self._give_up()  # releases the backend connection and slot it held
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.tunnel is not None:
            self.tunnel.client_paused()
        elif self.feeding is not None:
            self.feeding.pause_reading()
        if self.transport is not None:
            self.blocked_since = self.loop.time()
            self.blocked_size = self.transport.get_write_buffer_size()
            self.proxy.watched[self] = None

    def resume_writing(self) -> None:
        self.write_paused = False
        self.blocked_since = None
        if self.tunnel is not None:
            self.tunnel.client_resumed()
        elif self.feeding is not None:
            self.feeding.resume_reading()

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        self.parsing = Request()
        self.mid_head = True
        self.head_size = 0

    def on_url(self, url: bytes) -> None:
        request = self.parsing
        assert request is not None
        request.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Sizes are judged at the head's end: a head reaches the parser whole, so one read bounds it.
        request = self.parsing
        assert request is not None
        self.head_size += len(name) + len(value)
        lowered = name.lower()
        request.headers.append((lowered, value))
        if lowered in _NOTED:
            if lowered == b"host":
                request.host = value
                request.hosts += 1
            elif lowered == b"content-length":
                request.has_body = value.strip() not in (b"0", b"")
            elif lowered == b"transfer-encoding":
                request.chunked = request.has_body = True
            elif lowered == b"connection":
                request.connection = value if not request.connection else request.connection + b"," + value
            elif lowered == b"upgrade":
                request.upgrade = value  # kept only if the parser sees an upgrade asked for (_upgrade)
            else:
                request.expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        request = self.parsing
        assert request is not None
        count = len(request.headers)
        if count > self.max_headers or self.head_size + 4 * count + len(request.url) > self.max_head:
            self.refusal = (414, b"request line too long\n") if len(request.url) > self.max_head else _TOO_LARGE
            raise _Stop
        parser = self.parser
        method = request.method = parser.get_method()
        # HTTP/1.1 is read off the request line where the read holds it whole from its first
        # byte: the parser's get_http_version() formats a new str ("{}.{}") on every call. The
        # ten bytes after "METHOD SP URL SP" can only be "HTTP/1.1\r\n" if that is the version;
        # otherwise (leading blank lines, a pipelined head, another version), the parser says.
        starts, self.starts = self.starts, b""
        at = len(method) + len(request.url) + 2
        if starts[at : at + 10] != b"HTTP/1.1\r\n":
            version = parser.get_http_version()
            if version != "1.1":
                request.version = version.encode()
        request.keep_alive = parser.should_keep_alive()
        if request.host == self.known_host and request.hosts == 1 and request.url[:1] == b"/":
            refusal = None  # as the last request on this connection, which passed (CONNECT has no such target)
        else:
            refusal = check(request)
            if refusal is None and request.url[:1] == b"/":
                self.known_host = request.host
        if request.upgrade and refusal is None:
            if parser.should_upgrade():
                refusal = self._upgrade(request)
            else:
                request.upgrade = b""  # an Upgrade header without "Connection: upgrade" asks for nothing
        if refusal is not None:
            self.refusal = refusal
            raise _Stop
        self.in_head = self.mid_head = self.fresh = False
        proxy = self.proxy
        proxy.heads.pop(self, None)
        self.queue.append(request)  # served once the parser returns (data_received)
        if request.has_body:
            proxy.watched[self] = None  # the body's reads are timed
            if not request.chunked and not self.manual_body:
                length = next(value for name, value in request.headers if name == b"content-length").strip()
                if length.isdigit() and int(length) > PARSED_BODY:
                    # a large body goes to the backend as read, past the parser (which copies each chunk)
                    self.body_left = int(length)

    def _upgrade(self, request: Request) -> Refusal | None:
        """An upgrade request: WebSocket is relayed once the backend switches; any other is declined."""
        value = request.upgrade
        tokens = [token.strip().lower() for token in value.split(b",")]
        if b"websocket" in tokens:
            if request.method != b"GET" or request.version != b"1.1" or request.has_body:
                return 400, b"a WebSocket handshake is a GET without a body\n"
            request.upgrade = value.strip()
            request.keep_alive = False  # the connection becomes a tunnel, or ends after the answer
            return None
        request.upgrade = b""  # h2c or another protocol: served as plain HTTP/1.1, the parser's pause notwithstanding
        if request.chunked:
            return 501, b"a chunked body with an Upgrade header is not served\n"
        if request.has_body:
            length = next(value for name, value in request.headers if name == b"content-length")
            self.manual_body = -int(length)  # negative: armed once the parser stops after the head
        return None

    def on_body(self, chunk: bytes) -> None:
        if self.body_left:
            self.body_left -= len(chunk)  # the first bytes of a large body, read with its head
        self._body(chunk)

    def _body_past_parser(self, data: bytes) -> bytes:
        """Pass on the next bytes of a large Content-Length body unparsed; the bytes after it."""
        left = self.body_left
        if len(data) <= left:
            chunk, rest = data, b""
        else:
            chunk, rest = data[:left], data[left:]
        self.body_left = left - len(chunk)
        self._body(chunk)
        if not self.body_left:
            self._body_ended()
        return rest

    def _body_ended(self) -> None:
        """A body read past the parser is whole: the parser, which never saw it, starts afresh."""
        self.parser = httptools.HttpRequestParser(self)
        self.on_message_complete()

    def _read_body(self) -> None:
        """Read the rest of a large body with a ``_BodyReader`` (once the transport reads, if paused)."""
        transport = self.transport
        if transport is None or self.closing or self.divert is not None or self.reader is not None:
            return
        reader = self.reader = _BodyReader(self)
        reader.size = min(self.limits.buffer_size, self.body_left)
        self._switch_protocol(transport, reader)

    def _switch_protocol(self, transport: asyncio.Transport, protocol: asyncio.BaseProtocol) -> None:
        transport.set_protocol(protocol)
        if transport.is_reading():  # the loop picks a protocol's kind of read when reading starts
            transport.pause_reading()
            transport.resume_reading()

    def body_read(self, reader: _BodyReader, chunk: memoryview) -> None:
        """A read of ``reader``: the body's next bytes, in its buffer."""
        if self.divert is not None or not self.body_left:  # refused or closing meanwhile: as any read
            self.data_received(bytes(chunk))
            return
        self.last_read = self.proxy.now
        request = self.parsing
        assert request is not None
        upstream = request.upstream
        self.body_left -= len(chunk)
        if upstream is not None:
            upstream.write(chunk)  # from the reader's buffer, uncopied
            reader.lent = upstream.holds()
        else:
            self._body(bytes(chunk))  # held until a backend takes it (and kept for a retry)
        if not self.body_left:
            self.reader = None  # and its buffer with it
            if self.transport is not None and not self.closing:
                self._switch_protocol(self.transport, self)
            self._body_ended()

    def _body(self, chunk: bytes) -> None:
        request = self.parsing
        assert request is not None
        upstream = request.upstream
        if upstream is not None:
            upstream.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if request.chunked else chunk)
            return
        request.pending.append(chunk)
        request.pending_bytes += len(chunk)
        if request.pending_bytes > self.limits.buffer_size:
            self._pause(_PENDING)  # resumed when a backend takes the body

    def on_message_complete(self) -> None:
        if self.manual_body < 0:
            self.manual_body = -self.manual_body  # the body follows, unparsed: read in _manual_body
            return
        request = self.parsing
        assert request is not None
        request.body_done = True
        self.parsing = None
        self.in_head = True
        if request.upstream is not None and request.chunked:
            request.upstream.write(b"0\r\n\r\n")
        if request.attempt is not None:
            request.attempt.request_ended()

    def _manual_body(self, data: bytes) -> bytes:
        """The body of a request whose upgrade was declined (the parser skipped it); the bytes after it."""
        taken = min(self.manual_body, len(data))
        if taken:
            self.on_body(data[:taken])
        self.manual_body -= taken
        if not self.manual_body:
            if self.divert == self._declined_body:
                self.divert = None
            self.on_message_complete()
        return data[taken:]

    def _after_upgrade(self, rest: bytes) -> None:
        request = self.queue[-1] if self.queue else None
        if request is not None and request.upgrade:
            self.upgrading = True  # bytes after the handshake wait for the backend's 101
            self.divert = self._early
            self.early += rest
            return
        if self.manual_body > 0:
            self.divert = self._declined_body
            rest = self._manual_body(rest)
        if rest:
            self.data_received(rest)

    # -- refusing, and the client's waits --

    def _refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` after the requests before it, then close; nothing more is read."""
        self.refused = True
        self.divert = self._ignore
        self.proxy.heads.pop(self, None)
        self.head_buffer = bytearray()
        if self.transport is not None:
            self.transport.pause_reading()
        request = Request()
        request.refusal = refusal
        request.keep_alive = False
        request.body_done = True
        self.parsing = None
        self.queue.append(request)
        if self.current is None:
            self._dispatch()

    def head_timed_out(self) -> None:
        if self.closing or self.refused:
            return
        self.proxy.metrics.timeouts.labels("header").inc()
        if self.head_buffer or self.mid_head:
            self._refuse((408, b"the request head did not arrive in time\n"))
        else:
            self.close()  # a connection that sent nothing: nothing to answer

    def expire(self, now: float) -> bool:
        limits = self.limits
        watching = False
        if self.blocked_since is not None:
            if now - self.blocked_since >= limits.send_timeout:
                size = self.transport.get_write_buffer_size() if self.transport is not None else 0
                if size >= self.blocked_size:
                    self.proxy.metrics.timeouts.labels("send").inc()
                    self.abort()
                    return False
                self.blocked_since, self.blocked_size = now, size  # it took some: a new wait begins
            watching = True
        if self.tunnel is not None:
            if self.tunnel.expired(now):
                self.proxy.metrics.timeouts.labels("tunnel").inc()
                return False
            return True
        request = self.parsing
        if request is not None and not self.in_head and not request.body_done:
            if not self.read_pauses and now - self.last_read >= limits.body_timeout:
                self._body_timed_out(request)
                return False
            watching = True
        return watching

    def _body_timed_out(self, request: Request) -> None:
        self.proxy.metrics.timeouts.labels("body").inc()
        if request.answered or not self.queue or self.queue[0] is not request:
            self.abort()
            return
        self._give_up()  # the attempt, if any, lets its backend connection go
        self.queue.clear()
        self.refused = True
        self.divert = self._ignore
        request.keep_alive = False
        self.answer(request, 408, b"the request body did not arrive in time\n")
        self.close()

    def _pause(self, reason: int) -> None:
        if not self.read_pauses and self.transport is not None:
            self.transport.pause_reading()
        self.read_pauses |= reason

    def _resume(self, reason: int) -> None:
        if self.read_pauses & reason:
            self.read_pauses &= ~reason
            if not self.read_pauses and self.transport is not None and not self.refused and not self.closing:
                self.last_read = self.proxy.now  # the body's idle wait starts again now
                self.transport.resume_reading()

    # -- serving --

    def _dispatch(self) -> None:
        """Serve the queued requests in turn, until one is forwarded (``served`` goes on from there)."""
        while self.queue and self.current is None and not self.closing:
            request = self.current = self.queue[0]
            try:
                if not self.handle(request):
                    return  # forwarded: served() follows, maybe already has
            except Exception as error:
                self.current = None
                self.broken(request, error)
                return
            self.current = None
            if not self._carry_on(request):
                return
        self._rest()

    def served(self, request: Request) -> None:
        if self.current is not request:
            return  # given up meanwhile
        self.current = None
        if not self._carry_on(request):
            return
        if self.queue:
            # pipelined: served on the next turn of the loop, not inside the backend's read callback
            self.loop.call_soon(self._dispatch)
        else:
            self._rest()

    def broken(self, request: Request, error: Exception) -> None:
        log_failure(error)  # a bug costs this connection only, never a slot or a hang
        self.abort()

    def _carry_on(self, request: Request) -> bool:
        """After ``request``'s answer: whether the connection goes on to the next request."""
        if not request.keep_alive or not request.body_done or self.proxy.draining:
            if self.tunnel is None:
                self.close()  # (a body not read to its end leaves the stream out of step)
            return False
        if self.queue and self.queue[0] is request:
            self.queue.popleft()
        return True

    def _rest(self) -> None:
        """Nothing to serve: a connection between requests waits as an idle one."""
        if self.in_head and not self.mid_head and self.divert is None and not self.head_buffer and not self.closing:
            self.proxy.idle[self] = self.proxy.now

    def _give_up(self) -> None:
        """Cancel the request being served: its backend connection and slot are let go."""
        request, self.current = self.current, None
        if request is not None and request.serving is not None:
            serving, request.serving = request.serving, None
            serving.cancel()

    # -- Downstream --

    def attach(self, request: Request, connection: UpstreamConnection) -> None:
        self.feeding = connection
        if self.write_paused:
            connection.pause_reading()
        if request.expect and request.version == b"1.1" and not request.body_done and not request.pending_bytes:
            request.expect = False
            self.write(_CONTINUE)  # in turn: the answers before this one are complete
        if self.read_pauses & _PENDING:
            self._resume(_PENDING)

    def detach(self, request: Request) -> None:
        self.feeding = None
        if self.read_pauses & _UPLOAD:
            self._resume(_UPLOAD)

    def upload_paused(self, request: Request) -> None:
        self._pause(_UPLOAD)

    def upload_resumed(self, request: Request) -> None:
        self._resume(_UPLOAD)

    def switch(self, request: Request, connection: UpstreamConnection, backend: Backend, rest: bytes) -> None:
        assert self.transport is not None
        tunnel = self.tunnel = Tunnel(self.transport, connection, backend, self.loop, self.limits.read_timeout)
        self.divert = tunnel.from_client
        self.feeding = None
        self.upgrading = False
        if rest:
            tunnel.from_backend(rest)
        if self.early:
            tunnel.from_client(bytes(self.early))
            self.early = bytearray()
        self.read_pauses = 0
        if not self.refused:
            self.transport.resume_reading()
        self.queue.clear()
        self.proxy.watched[self] = None  # the tunnel's idle wait

    def send_head(self, request: Request, status: int, headers: Fields, length: bytes | None, no_body: bool) -> bool:
        request.answered = True
        status_line = _STATUS_LINES.get(status)
        if status_line is None:
            status_line = b"HTTP/1.1 %d %b\r\n" % (status, REASONS.get(status, b"Unknown"))
        lines = [status_line, headers.block]
        chunked = False
        if status != 101:
            if length is not None:
                lines.append(b"content-length: %b\r\n" % length)
            elif not no_body:
                if request.version == b"1.1":
                    lines.append(b"transfer-encoding: chunked\r\n")
                    chunked = True
                else:
                    request.keep_alive = False  # the end of the body is the end of the connection
            if not request.keep_alive or self.proxy.draining:
                lines.append(b"connection: close\r\n")
            elif request.version == b"1.0":
                lines.append(b"connection: keep-alive\r\n")  # else an HTTP/1.0 client waits for the close
        lines.append(b"\r\n")
        if status == 101:
            self.write(b"".join(lines))
        elif not self.closing:
            # held until the body's first bytes (or the end of the backend's read): one write, not two
            self.held = b"".join(lines)
        return chunked

    def send_informational(self, request: Request, status: int, headers: Fields) -> None:
        if request.version == b"1.1":
            reason = REASONS.get(status, b"Informational")
            self.write(b"HTTP/1.1 %d %b\r\n%b\r\n" % (status, reason, headers.block))

    def send_body(self, request: Request, chunk: bytes | memoryview, chunked: bool) -> None:
        self.write(b"%x\r\n%b\r\n" % (len(chunk), bytes(chunk)) if chunked else chunk)

    def holds_body(self) -> bool:
        # what the socket did not take at once, the transport holds (by reference) until it does
        return self.transport is not None and self.transport.get_write_buffer_size() > 0

    def send_end(self, request: Request, chunked: bool) -> None:
        if chunked:
            self.write(b"0\r\n\r\n")
        elif self.held:
            self.send_held()

    def send_held(self) -> None:
        held, self.held = self.held, b""
        if held and not self.closing and self.transport is not None:
            self.transport.write(held)

    def write(self, data: bytes | memoryview) -> None:
        if not self.closing and self.transport is not None:
            held = self.held
            if not held:
                self.transport.write(data)
                return
            self.held = b""
            if len(data) <= _JOINED:
                self.transport.write(held + data)
            else:
                self.transport.writelines((held, data))  # one writev, the body's bytes uncopied

    def close(self) -> None:
        if not self.closing and self.transport is not None:
            self.send_held()
            self.closing = True
            self.divert = self._ignore
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        self.divert = self._ignore
        if self.transport is not None:
            reset(self.transport)
