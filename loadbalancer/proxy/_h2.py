"""HTTP/2 clients (ALPN ``h2``, or h2c with prior knowledge), over the protocol core of ``_h2core``.

Bounded as HTTP/1.1 is, and against HTTP/2's own abuses:

- at most ``--h2-max-streams`` streams at once (advertised in SETTINGS); a stream beyond
  them is refused alone (REFUSED_STREAM), the connection lives on;
- request bodies are flow-controlled: a stream's data is acknowledged only once the backend
  took it, so a client can have at most its stream window (64 KiB) unread per stream and
  the connection window (1 MiB) in all;
- answers are held at most ``--buffer-size`` per connection: past it (or while the client
  takes nothing), the backends feeding it are not read; a stream whose window stays shut for
  ``--send-timeout`` is reset, as is the connection whose socket stays full;
- floods end in GOAWAY (ENHANCE_YOUR_CALM): frames that cost work but carry no request
  (PING, SETTINGS, WINDOW_UPDATE, PRIORITY, empty DATA, refused streams) beyond an allowance
  that grows with the useful frames sent and with time, and streams the client resets
  before their answer (rapid reset, CVE-2023-44487) once they are over half of at least 100.
"""

from __future__ import annotations

import asyncio
import collections

from ._errors import H2Error, H2ProtocolError
from ._exchange import Downstream, log_failure
from ._fields import Fields, LoweredLines
from ._h2core import (
    CANCEL,
    DATA_RECEIVED,
    ENHANCE_YOUR_CALM,
    GONE,
    INTERNAL_ERROR,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    REQUEST,
    STREAM_ENDED,
    STREAM_RESET,
    WINDOW_OPENED,
    Event,
    H2Core,
)
from ._h2fields import malformed
from ._proxy import Proxy, reset
from ._request import Request, check
from ._upstream import Backend, UpstreamConnection

__all__ = ["H2Connection"]

_CONNECTION_WINDOW = 1 << 20  # request body bytes a client may have in flight on one connection
_STREAM_HIGH = 64 * 1024  # answer bytes held for one stream before its backend is paused
_FLOOD_FLOOR = 200  # control frames allowed before any useful work
_FLOOD_PER_SECOND = 20
_RESET_FLOOR = 100  # premature resets tolerated before their share counts


class _Stream:
    __slots__ = (
        "blocked_since", "due", "ending", "id", "last_read", "pending", "pending_bytes", "request", "unacked",
        "upload_paused",
    )  # fmt: skip

    def __init__(self, stream_id: int, request: Request, now: float) -> None:
        self.id = stream_id
        self.request = request
        self.pending: collections.deque[memoryview] = collections.deque()  # answer bytes not yet framed
        self.pending_bytes = 0
        self.ending = False  # the answer is complete once ``pending`` is sent
        self.due = False  # in the connection's ``due``: framed at the next flush
        self.unacked = 0  # request body bytes received but not yet acknowledged to the client
        self.upload_paused = False
        self.last_read = now
        self.blocked_since: float | None = None  # the client's window stayed shut since then


class H2Connection(Downstream, asyncio.Protocol):
    """One HTTP/2 client connection: streams served as they open, answers framed within the windows."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.limits = proxy.limits
        self.loop = asyncio.get_running_loop()
        # What the proxy sends it has built itself: names lowered, hop-by-hop fields dropped, values
        # as httptools read them. What clients send is checked in full (``_h2fields``).
        self.core = H2Core(proxy.limits.max_header_size)
        self.lowered = LoweredLines()  # answers' field lines as HTTP/2 pairs, each line read once
        self.streams: dict[int, _Stream] = {}
        self.opened_now: list[_Stream] = []  # streams opened in this read, served once it is all read
        self.due: list[_Stream] = []  # streams with answer bytes (or their end) to frame at the flush
        self.transport: asyncio.Transport | None = None
        self.client_ip = b""
        self.closing = False
        self.flush_due = False  # a write of what the core prepared is scheduled for the end of this turn of the loop
        self.write_paused = False
        self.blocked_since: float | None = None
        self.blocked_size = 0
        self.buffered = 0  # answer bytes held for all streams
        self.held: set[_Stream] = set()  # streams whose backend is not being read
        self.started = 0.0
        self.opened = 0  # streams the client opened
        self.premature = 0  # streams the client reset before their answer ended
        self.control = 0  # streams refused or malformed (the core counts the frames that cost work)
        self.useful = 0  # HEADERS and DATA frames sent

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limits = self.limits
        self.transport.set_write_buffer_limits(high=limits.buffer_size, low=limits.buffer_size // 4)  # type: ignore[union-attr]
        peer = transport.get_extra_info("peername")
        self.client_ip = (peer[0] if isinstance(peer, tuple) else "unknown").encode()
        if not self.proxy.admit(self):
            self.closing = True
            transport.close()
            return
        now = self.started = self.loop.time()
        # The stream limit is enforced per stream (REFUSED_STREAM), the connection lives on.
        self.core.initiate(limits.h2_max_streams, limits.max_header_size, _CONNECTION_WINDOW)
        self._flush()
        self.proxy.idle[self] = now

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            events = self.core.receive_data(data)
        except H2ProtocolError:
            self.due.clear()  # nothing more is framed: the GOAWAY the core prepared goes last
            self._flush_now()
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            kind = event.kind
            if kind == DATA_RECEIVED:
                self._data(event)
            elif kind == REQUEST:
                self._request(event.stream_id, event.headers or [], event.ended)
            elif kind == STREAM_ENDED:
                self._ended(event.stream_id)
            elif kind == WINDOW_OPENED:
                self._window_opened(event.stream_id)
            elif kind == STREAM_RESET:
                self._reset(event.stream_id)
            elif kind == GONE:
                self.close()
                return
        if self._flooding():
            self._calm()
            return
        opened, self.opened_now = self.opened_now, []
        for stream in opened:  # served after the flood check: a stream reset in the same read never is
            if self.streams.get(stream.id) is stream:
                self._serve(stream)
        self._flush()

    def _flooding(self) -> bool:
        allowance = _FLOOD_FLOOR + self.useful + 4 * self.opened
        if self.control + self.core.control > allowance + _FLOOD_PER_SECOND * (self.loop.time() - self.started):
            return True
        return self.premature > _RESET_FLOOR and 2 * self.premature > self.opened

    def _calm(self) -> None:
        """GOAWAY (ENHANCE_YOUR_CALM) to a client that floods, and close."""
        self.proxy.metrics.refused.labels("h2_flood").inc()
        for stream in list(self.streams.values()):
            _give_up(stream)
        self.streams.clear()
        self.due.clear()
        self.core.close_connection(ENHANCE_YOUR_CALM)
        self._flush_now()
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        for stream in list(self.streams.values()):
            _give_up(stream)
        self.streams.clear()
        self.proxy.gone(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        transport = self.transport
        if transport is not None:
            self.blocked_since = self.loop.time()
            self.blocked_size = transport.get_write_buffer_size()
            self.proxy.watched[self] = None
            transport.pause_reading()  # a client that takes nothing gets nothing more done
        for stream in self.streams.values():
            self._pause_upstream(stream)

    def resume_writing(self) -> None:
        self.write_paused = False
        self.blocked_since = None
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()
        for stream in list(self.streams.values()):
            self._send_pending(stream)
        self._release_held()
        self._flush()

    # -- streams --

    def _request(self, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.opened += 1
        limits = self.limits
        if len(self.streams) >= limits.h2_max_streams or self.proxy.draining:
            self.control += 1
            self.core.reset_stream(stream_id, REFUSED_STREAM)
            return
        if malformed(headers) is not None:  # never forwarded (RFC 9113, 8.1.1)
            self.control += 1
            self.core.reset_stream(stream_id, PROTOCOL_ERROR)
            return
        request = _request_from(headers, limits.max_headers)
        request.has_body = not ended and request.has_body
        request.chunked = request.has_body and request.chunked  # to the backend: chunked framing
        request.body_done = ended
        if request.refusal is None:
            request.refusal = check(request)
        now = self.loop.time()
        stream = request.stream = self.streams[stream_id] = _Stream(stream_id, request, now)
        self.proxy.idle.pop(self, None)
        self.proxy.watched[self] = None
        self.opened_now.append(stream)

    def _serve(self, stream: _Stream) -> None:
        request = stream.request
        try:
            answered = self.handle(request)
        except Exception as error:
            self.broken(request, error)
            return
        if answered:
            self.served(request)

    def served(self, request: Request) -> None:
        stream: _Stream | None = request.stream
        if stream is not None and self.streams.get(stream.id) is stream and not stream.ending:
            self._reset_stream(stream, INTERNAL_ERROR)  # ended without a whole answer
        self._flush()

    def broken(self, request: Request, error: Exception) -> None:
        log_failure(error)  # a bug costs this stream only
        if request.stream is not None:
            self._reset_stream(request.stream, INTERNAL_ERROR)
        self._flush()

    def _data(self, event: Event) -> None:
        stream_id = event.stream_id
        stream = self.streams.get(stream_id)
        data = event.data
        size = event.size
        if stream is None or stream.request.body_done:
            self._acknowledge(size, stream_id)
            return
        stream.last_read = self.loop.time()
        request = stream.request
        upstream = request.upstream
        if upstream is not None:
            upstream.write(b"%x\r\n%b\r\n" % (len(data), data) if request.chunked else data)
            if stream.upload_paused:
                stream.unacked += size
            else:
                self._acknowledge(size, stream_id)
            return
        if data:
            request.pending.append(data)
            request.pending_bytes += len(data)
        stream.unacked += size  # acknowledged when a backend takes the body

    def _acknowledge(self, size: int, stream_id: int) -> None:
        self.core.acknowledge_received_data(size, stream_id)

    def _ended(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        request = stream.request
        request.body_done = True
        if request.upstream is not None and request.chunked:
            request.upstream.write(b"0\r\n\r\n")
        if request.attempt is not None:
            request.attempt.request_ended()

    def _reset(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        self.premature += 1
        self._forget(stream)
        _give_up(stream)  # the client gave up on it: release the backend connection

    def _reset_stream(self, stream: _Stream, code: int) -> None:
        if self.streams.get(stream.id) is not stream:
            return
        self.core.reset_stream(stream.id, code)
        self._forget(stream)
        _give_up(stream)
        self._maybe_idle()

    def _forget(self, stream: _Stream) -> None:
        """Take an ended or reset stream out of the connection (after any RST_STREAM of its own)."""
        del self.streams[stream.id]
        self.buffered -= stream.pending_bytes
        self.held.discard(stream)
        if stream.unacked:  # body bytes it will never pass on: the connection's window gets them back
            self._acknowledge(stream.unacked, stream.id)
            stream.unacked = 0
        # The request may outlive its stream (in an attempt's hands): without its way back, the two
        # are no cycle, freed as soon as they are let go, not left to the garbage collector.
        stream.request.stream = None

    # -- the waits --

    def head_timed_out(self) -> None:
        self.close()

    def expire(self, now: float) -> bool:
        limits = self.limits
        if self.blocked_since is not None and now - self.blocked_since >= limits.send_timeout:
            size = self.transport.get_write_buffer_size() if self.transport is not None else 0
            if size >= self.blocked_size:
                self.proxy.metrics.timeouts.labels("send").inc()
                self.abort()
                return False
            self.blocked_since, self.blocked_size = now, size
        for stream in list(self.streams.values()):
            request = stream.request
            if stream.blocked_since is not None and now - stream.blocked_since >= limits.send_timeout:
                self.proxy.metrics.timeouts.labels("send").inc()
                self._reset_stream(stream, CANCEL)
            elif not request.body_done and not stream.upload_paused and now - stream.last_read >= limits.body_timeout:
                self.proxy.metrics.timeouts.labels("body").inc()
                if request.answered:
                    self._reset_stream(stream, CANCEL)
                else:
                    _give_up(stream)
                    self.answer(request, 408, b"the request body did not arrive in time\n")
        self._flush()
        return bool(self.streams) or self.blocked_since is not None

    # -- Downstream --

    def attach(self, request: Request, connection: UpstreamConnection) -> None:
        stream = request.stream
        if stream is None:
            return
        if self.write_paused or stream.pending_bytes > _STREAM_HIGH or self.buffered > self.limits.buffer_size:
            self._pause_upstream(stream)
        if stream.unacked and not stream.upload_paused:
            self._acknowledge(stream.unacked, stream.id)  # the body received so far went to the backend
            stream.unacked = 0
            self._flush()

    def detach(self, request: Request) -> None:
        stream = request.stream
        if stream is not None:
            self.held.discard(stream)
            self.upload_resumed(request)

    def upload_paused(self, request: Request) -> None:
        if request.stream is not None:
            request.stream.upload_paused = True

    def upload_resumed(self, request: Request) -> None:
        stream = request.stream
        if stream is not None and stream.upload_paused:
            stream.upload_paused = False
            stream.last_read = self.loop.time()
            if stream.unacked:
                self._acknowledge(stream.unacked, stream.id)
                stream.unacked = 0
                self._flush()

    def switch(self, request: Request, connection: UpstreamConnection, backend: Backend, rest: bytes) -> None:
        raise AssertionError("HTTP/2 requests never ask to switch protocols")

    def send_head(self, request: Request, status: int, headers: Fields, length: bytes | None, no_body: bool) -> bool:
        request.answered = True
        stream = self._live(request)
        if stream is None:
            return False
        fields = [(b":status", b"%d" % status)]
        fields += self.lowered.pairs(headers)  # (end-to-end by construction: no connection-specific field)
        if length is not None:
            fields.append((b"content-length", length))
        try:
            self.core.send_headers(stream.id, fields, end_stream=no_body)
            self.useful += 1
        except H2Error:
            self._reset_stream(stream, INTERNAL_ERROR)
            return False
        if no_body:
            stream.ending = True
            self._finished(stream)
        self._flush()
        return False

    def send_informational(self, request: Request, status: int, headers: Fields) -> None:
        stream = self._live(request)
        if stream is None:
            return
        fields = [(b":status", b"%d" % status)]
        fields += self.lowered.pairs(headers)  # (end-to-end by construction: no connection-specific field)
        try:
            self.core.send_headers(stream.id, fields)
        except H2Error:
            return
        self._flush()

    def send_body(self, request: Request, chunk: bytes | memoryview, chunked: bool) -> None:
        stream = self._live(request)
        if stream is None or not chunk:
            return
        stream.pending.append(memoryview(chunk))
        stream.pending_bytes += len(chunk)
        self.buffered += len(chunk)
        if self.write_paused or self.buffered > self.limits.buffer_size:
            self._pause_upstream(stream)  # (a stream over its own mark is paused once framed: _send_due)
        # Framed at the flush, the end of this turn of the loop: an answer read whole goes out as
        # HEADERS and one DATA frame carrying END_STREAM, not an empty DATA frame more.
        self._due(stream)

    def send_end(self, request: Request, chunked: bool) -> None:
        stream = self._live(request)
        if stream is None:
            return
        stream.ending = True
        self._due(stream)

    def _due(self, stream: _Stream) -> None:
        if not stream.due:
            stream.due = True
            self.due.append(stream)
        self._flush()

    def _send_due(self) -> None:
        due, self.due = self.due, []
        for stream in due:
            stream.due = False
            self._send_pending(stream)
            if stream.pending_bytes > _STREAM_HIGH and self.streams.get(stream.id) is stream:
                self._pause_upstream(stream)  # what its window did not take: its backend waits

    def _live(self, request: Request) -> _Stream | None:
        """The request's stream, unless it ended or was reset."""
        stream: _Stream | None = request.stream
        if stream is None or self.streams.get(stream.id) is not stream:
            return None
        return stream

    # -- framing within the windows --

    def _send_pending(self, stream: _Stream) -> None:
        if self.write_paused or self.streams.get(stream.id) is not stream:
            return
        connection = self.core
        pending = stream.pending
        try:
            while pending:
                window = min(connection.local_flow_control_window(stream.id), connection.max_outbound_frame_size)
                if window <= 0:
                    if stream.blocked_since is None:
                        stream.blocked_since = self.loop.time()
                    return
                chunk = pending[0]
                if len(chunk) > window:
                    pending[0] = chunk[window:]
                    chunk = chunk[:window]
                else:
                    pending.popleft()
                stream.pending_bytes -= len(chunk)
                self.buffered -= len(chunk)
                last = stream.ending and not pending
                connection.send_data(stream.id, chunk, end_stream=last)
                self.useful += 1
                if last:
                    stream.blocked_since = None
                    self._finished(stream)
                    break
            else:
                stream.blocked_since = None
                if stream.ending:
                    connection.end_stream(stream.id)
                    self._finished(stream)
        except H2Error:
            self._reset_stream(stream, INTERNAL_ERROR)
        self._release_held()

    def _pause_upstream(self, stream: _Stream) -> None:
        attempt = stream.request.attempt
        if attempt is not None and attempt.connection is not None:
            attempt.connection.pause_reading()
            self.held.add(stream)

    def _release_held(self) -> None:
        """Read the held backends again, those whose streams are below their mark, once the connection is."""
        if not self.held or self.write_paused or self.buffered > self.limits.buffer_size // 2:
            return
        for stream in list(self.held):
            if stream.pending_bytes <= _STREAM_HIGH // 2 or self.streams.get(stream.id) is not stream:
                self.held.discard(stream)
                attempt = stream.request.attempt
                if attempt is not None and attempt.connection is not None:
                    attempt.connection.resume_reading()

    def _finished(self, stream: _Stream) -> None:
        if self.streams.get(stream.id) is not stream:
            return
        if not stream.request.body_done:  # answered before the body ended: the client may stop sending it
            self.core.reset_stream(stream.id, NO_ERROR)
        self._forget(stream)
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self.streams or self.closing:
            return
        if self.proxy.draining:
            self.close()
        else:
            self.proxy.idle[self] = self.loop.time()

    def _window_opened(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None and (stream.pending or stream.ending):
                self._send_pending(stream)
            return
        for stream in list(self.streams.values()):
            if stream.pending or stream.ending:
                self._send_pending(stream)

    def _flush(self) -> None:
        """Write what the core prepared, at the end of this turn of the loop: the frames of every stream
        served in it then go out in one write (one TLS record, one system call), not one each."""
        if not self.flush_due:
            self.flush_due = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self.flush_due = False
        if self.due:
            self._send_due()
        data = self.core.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Close gracefully: GOAWAY first, then the socket once what was written is sent."""
        if self.closing or self.transport is None:
            return
        self._send_due()  # the answers framed before the GOAWAY
        self.core.close_connection()
        self._flush_now()
        self.closing = True
        self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            reset(self.transport)


def _give_up(stream: _Stream) -> None:
    """Cancel what forwards the stream's request (its backend connection and slot are let go)."""
    request = stream.request
    serving = request.serving
    if serving is not None and serving is not asyncio.current_task():
        request.serving = None
        serving.cancel()


def _request_from(headers: list[tuple[bytes, bytes]], max_headers: int) -> Request:
    """A ``Request`` from a stream's header block; an invalid one carries its refusal."""
    request = Request()
    request.version = b"2"
    request.has_body = True
    length = None
    authority = None
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                request.method = value
            elif name == b":path":
                request.url = value
            elif name == b":authority":
                authority = value
            elif name == b":protocol":
                request.refusal = (501, b"extended CONNECT is not served by this proxy\n")
            continue
        if name == b"host":
            request.hosts += 1
            request.host = value
        elif name == b"content-length":
            length = value
        request.headers.append((name, value))
    if len(request.headers) > max_headers:
        request.refusal = (431, b"request head too large\n")
    if authority is not None:
        if request.hosts and request.host != authority:
            request.refusal = (400, b"the Host header and :authority differ\n")
        request.host = authority
        request.hosts = 1 if not request.hosts else request.hosts
    request.has_body = length != b"0"
    request.chunked = length is None
    return request
