"""HTTP/2 to clients over TLS (ALPN ``h2``), with the h2 library: each stream is a request served like HTTP/1.1's."""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from ._server import ClientConnection, Proxy, Request

__all__ = ["H2Connection"]

_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
_HIGH_WATER = 256 * 1024  # bytes of an answer waiting for the client's window before the backend is paused


class _Stream:
    __slots__ = ("ending", "pending", "pending_bytes", "request", "task")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.ending = False
        self.task: asyncio.Task[None] | None = None


class H2Connection(ClientConnection):
    """One HTTP/2 client connection: a task per stream, answers framed by h2 within the flow-control windows."""

    def __init__(self, proxy: Proxy) -> None:
        super().__init__(proxy)
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        self.streams: dict[int, _Stream] = {}

    @property
    def idle(self) -> bool:
        return not self.streams

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._request(event.stream_id, event.headers, event.stream_ended is not None)
            elif isinstance(event, h2.events.DataReceived):
                self._data(event.stream_id, event.data, event.flow_controlled_length)
            elif isinstance(event, h2.events.StreamEnded):
                self._ended(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._reset(event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                self._window_opened(event.stream_id)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.close()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for stream in list(self.streams.values()):
            if stream.task is not None:
                stream.task.cancel()
        self.streams.clear()
        super().connection_lost(exc)

    # -- streams --

    def _request(self, stream_id: int, headers: Any, ended: bool) -> None:
        request = Request()
        request.version = b"2"
        request.keep_alive = True
        length = None
        for name, value in headers:
            if name == b":method":
                request.method = value
            elif name == b":path":
                request.url = value
            elif name == b":authority":
                request.host = value
            elif not name.startswith(b":"):
                if name == b"host" and not request.host:
                    request.host = value
                elif name == b"content-length":
                    length = value
                request.headers.append((name, value))
        request.has_body = not ended and length != b"0"
        request.chunked = request.has_body and length is None  # to the backend: chunked framing
        request.body_done = ended
        stream = self.streams[stream_id] = _Stream(request)
        stream.task = self.loop.create_task(self._serve_stream(stream_id, stream))

    async def _serve_stream(self, stream_id: int, stream: _Stream) -> None:
        try:
            await self._handle(stream.request)
        except Exception:  # a bug costs this stream only
            self._reset_stream(stream_id)
        finally:
            stream.task = None
            if not stream.request.body_done:
                self._reset_stream(stream_id)  # answered before the body was read: refuse the rest
            if not stream.ending and stream_id in self.streams:
                self._reset_stream(stream_id)
            self._flush()

    def _data(self, stream_id: int, data: bytes, flow_controlled: int) -> None:
        with_stream = self.streams.get(stream_id)
        self.h2.acknowledge_received_data(flow_controlled, stream_id)
        if with_stream is None or not data:
            return
        request = with_stream.request
        upstream = request.upstream
        if upstream is not None:
            upstream.write(b"%x\r\n%b\r\n" % (len(data), data) if request.chunked else data)
        else:
            request.pending.append(data)
            request.pending_bytes += len(data)

    def _ended(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        request = stream.request
        request.body_done = True
        if request.upstream is not None and request.chunked:
            request.upstream.write(b"0\r\n\r\n")

    def _reset(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None and stream.task is not None:
            stream.task.cancel()  # the client gave up on it: release the backend connection

    def _reset_stream(self, stream_id: int) -> None:
        if self.streams.pop(stream_id, None) is not None:
            try:
                self.h2.reset_stream(stream_id)
            except h2.exceptions.H2Error:
                pass

    # -- the answer's framing --

    def send_head(
        self, request: Request, status: int, headers: list[tuple[bytes, bytes]], length: bytes | None, no_body: bool
    ) -> bool:
        stream_id = self._id(request)
        if stream_id is None:
            return False
        fields = [(b":status", b"%d" % status)]
        fields += [(name.lower(), value) for name, value in headers if name.lower() not in _CONNECTION_SPECIFIC]
        if length is not None:
            fields.append((b"content-length", length))
        try:
            self.h2.send_headers(stream_id, fields, end_stream=no_body)
        except h2.exceptions.H2Error:
            self._reset_stream(stream_id)
        if no_body:
            self._finished(stream_id)
        self._flush()
        return False

    def send_body(self, request: Request, chunk: bytes, chunked: bool) -> None:
        stream_id = self._id(request)
        if stream_id is None:
            return
        stream = self.streams[stream_id]
        stream.pending.append(chunk)
        stream.pending_bytes += len(chunk)
        self._send_pending(stream_id, stream)
        if stream.pending_bytes > _HIGH_WATER and request.upstream is not None:
            transport = request.upstream.transport
            if transport is not None:
                transport.pause_reading()  # resumed when the client's window opens
        self._flush()

    def send_end(self, request: Request, chunked: bool) -> None:
        stream_id = self._id(request)
        if stream_id is None:
            return
        stream = self.streams[stream_id]
        stream.ending = True
        self._send_pending(stream_id, stream)
        self._flush()

    def _id(self, request: Request) -> int | None:
        for stream_id, stream in self.streams.items():
            if stream.request is request:
                return stream_id
        return None

    def _send_pending(self, stream_id: int, stream: _Stream) -> None:
        h2conn = self.h2
        try:
            while stream.pending:
                window = min(h2conn.local_flow_control_window(stream_id), h2conn.max_outbound_frame_size)
                if window <= 0:
                    return
                chunk = stream.pending[0]
                if len(chunk) > window:
                    stream.pending[0] = chunk[window:]
                    chunk = chunk[:window]
                else:
                    stream.pending.pop(0)
                stream.pending_bytes -= len(chunk)
                h2conn.send_data(stream_id, chunk)
            upstream = stream.request.upstream
            if upstream is not None and upstream.transport is not None and not upstream.closed:
                upstream.transport.resume_reading()
            if stream.ending:
                h2conn.end_stream(stream_id)
                self._finished(stream_id)
        except h2.exceptions.H2Error:
            self._reset_stream(stream_id)

    def _finished(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        if self.proxy.draining and not self.streams:
            self.h2.close_connection()
            self._flush()
            self.close()

    def _window_opened(self, stream_id: int) -> None:
        targets = list(self.streams.items()) if stream_id == 0 else [(stream_id, self.streams.get(stream_id))]
        for target_id, stream in targets:
            if stream is not None and (stream.pending or stream.ending):
                self._send_pending(target_id, stream)

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.write(data)
