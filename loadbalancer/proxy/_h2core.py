"""The server end of an HTTP/2 connection (RFC 9113), as the proxy needs it: frames, stream
states, flow control both ways and the protocol's error rules, with HPACK from ``_hpack``.

It replaces the h2 library on the proxy's hot path: h2's state machines, frame objects and
events, all interpreted Python, were two thirds of an HTTP/2 worker's time, where this module,
compiled with the others, reads a frame's header straight from the bytes. It speaks only the
server's part: no push, no priorities (read, checked and ignored, as RFC 9113 deprecates
them), no extensions (unknown frames are ignored, as 5.5 requires).

What the client does is reported as events (``Event``: a request, its body's data and end, a
reset, a window that opened, the client going away), in the order its frames came. A
connection error queues a GOAWAY with its code and raises ``H2ProtocolError``; a stream error
queues an RST_STREAM and reports the stream reset. What the proxy sends is framed into
``data_to_send()``, written once per turn of its loop.

Frames that cost work without carrying a request (PING, SETTINGS, WINDOW_UPDATE, PRIORITY,
CONTINUATION, empty or late DATA, unknown types) are counted in ``control``: the proxy's
flood rules weigh it against the useful work done.
"""

from __future__ import annotations

from typing import Final, NoReturn

from ._errors import H2ProtocolError, H2StreamError
from ._hpack import DecodeCache, FieldCache, OversizedHeaderListError, UndecodableBlockErrors

__all__ = [
    "CANCEL", "COMPRESSION_ERROR", "DATA_RECEIVED", "ENHANCE_YOUR_CALM", "FLOW_CONTROL_ERROR", "FRAME_SIZE_ERROR",
    "GONE", "INTERNAL_ERROR", "NO_ERROR", "PROTOCOL_ERROR", "REFUSED_STREAM", "REQUEST", "STREAM_CLOSED",
    "STREAM_ENDED", "STREAM_RESET", "WINDOW_OPENED", "Event", "H2Core",
]  # fmt: skip

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (6)
_DATA: Final = 0
_HEADERS: Final = 1
_PRIORITY: Final = 2
_RST_STREAM: Final = 3
_SETTINGS: Final = 4
_PUSH_PROMISE: Final = 5
_PING: Final = 6
_GOAWAY: Final = 7
_WINDOW_UPDATE: Final = 8
_CONTINUATION: Final = 9

# flags
_END_STREAM: Final = 0x1
_ACK: Final = 0x1
_END_HEADERS: Final = 0x4
_PADDED: Final = 0x8
_PRIORITY_FLAG: Final = 0x20

# error codes (7)
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB

# settings (6.5.2)
_HEADER_TABLE_SIZE: Final = 0x1
_ENABLE_PUSH: Final = 0x2
_MAX_CONCURRENT_STREAMS: Final = 0x3
_INITIAL_WINDOW_SIZE: Final = 0x4
_MAX_FRAME_SIZE: Final = 0x5
_MAX_HEADER_LIST_SIZE: Final = 0x6

# event kinds
REQUEST: Final = 1  # a stream opened: ``headers``, ``ended`` when the request has no body
DATA_RECEIVED: Final = 2  # body bytes: ``data``; ``size`` counts against the windows (padding too)
STREAM_ENDED: Final = 3  # the request's body ended (END_STREAM on DATA or trailers)
STREAM_RESET: Final = 4  # the stream is gone: reset by the client, or by a stream error of its making
WINDOW_OPENED: Final = 5  # the client opened a window: the stream's, or the connection's (stream 0)
GONE: Final = 6  # the client sent GOAWAY

_MAX_WINDOW: Final = (1 << 31) - 1
_DEFAULT_WINDOW: Final = 65535
_MAX_FRAME_IN: Final = 16384  # SETTINGS_MAX_FRAME_SIZE, left at its default
_RESETS_KEPT: Final = 1024  # streams reset by this end whose late frames are still taken quietly (5.4.2)
_NO_PRIORITY: Final = 0


class Event:
    """What the client did, one frame's worth."""

    __slots__ = ("data", "ended", "headers", "kind", "size", "stream_id")

    def __init__(
        self,
        kind: int,
        stream_id: int,
        headers: list[tuple[bytes, bytes]] | None = None,
        data: bytes = b"",
        size: int = 0,
        ended: bool = False,
    ) -> None:
        self.kind = kind
        self.stream_id = stream_id
        self.headers = headers
        self.data = data
        self.size = size
        self.ended = ended

    def __repr__(self) -> str:
        return f"Event({self.kind}, stream {self.stream_id}, {len(self.data)} bytes, ended={self.ended})"


class _Stream:
    __slots__ = ("expected", "id", "local_open", "received", "recv_window", "remote_open", "send_window", "unacked")

    def __init__(self, stream_id: int, send_window: int, remote_open: bool, expected: int) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.recv_window = _DEFAULT_WINDOW
        self.unacked = 0  # body bytes consumed but not yet given back to the client's window
        self.remote_open = remote_open  # the client may still send on it
        self.local_open = True  # the answer has not ended
        self.expected = expected  # the request's content-length, or -1
        self.received = 0  # body bytes so far


class H2Core:
    """One HTTP/2 connection's protocol state, server side; no I/O of its own."""

    def __init__(self, max_header_list_size: int) -> None:
        self.decoder = DecodeCache(max_header_list_size)
        self.encoder = FieldCache()
        self.max_block = max_header_list_size + _MAX_FRAME_IN  # an HPACK block's bytes, all fragments
        self.streams: dict[int, _Stream] = {}
        self.reset_ids: dict[int, None] = {}  # recently reset by this end, oldest first
        self.highest = 0  # the highest stream the client opened
        self.out: list[bytes | memoryview] = []
        self.buffer = b""
        self.preface = False  # the client's preface arrived
        self.settled = False  # its first SETTINGS arrived
        self.failed = False  # a connection error ended it
        self.going_away = False  # a GOAWAY was sent: no new stream is opened
        self.announced = False  # the dynamic table size update (to 0) went out with the first block
        self.send_window = _DEFAULT_WINDOW  # the connection's, the client's to open
        self.recv_window = _DEFAULT_WINDOW  # the connection's, this end's to open
        self.recv_target = _DEFAULT_WINDOW  # what the connection's receive window is kept at
        self.unacked = 0  # connection-level bytes consumed but not yet given back
        self.initial_window = _DEFAULT_WINDOW  # the client's SETTINGS_INITIAL_WINDOW_SIZE
        self.max_outbound_frame_size = _MAX_FRAME_IN  # the client's SETTINGS_MAX_FRAME_SIZE
        self.control = 0  # frames that cost work but carried no request
        self.block_stream = 0  # a header block is open on this stream (awaiting CONTINUATION)
        self.block_flags = 0
        self.block_priority = 0  # the stream its HEADERS named as its dependency
        self.block: list[bytes] = []
        self.block_size = 0

    # -- what this end says --

    def initiate(self, max_streams: int, max_header_list_size: int, connection_window: int) -> None:
        """The server's preface (SETTINGS) and the connection's receive window opened to ``connection_window``."""
        payload = (
            _MAX_CONCURRENT_STREAMS.to_bytes(2, "big") + max_streams.to_bytes(4, "big")
            + _MAX_HEADER_LIST_SIZE.to_bytes(2, "big") + max_header_list_size.to_bytes(4, "big")
            + _ENABLE_PUSH.to_bytes(2, "big") + b"\x00\x00\x00\x00"
        )  # fmt: skip
        self.out.append(_header(len(payload), _SETTINGS, 0, 0) + payload)
        if connection_window > _DEFAULT_WINDOW:
            self._window_update(0, connection_window - _DEFAULT_WINDOW)
            self.recv_window = self.recv_target = connection_window

    def send_headers(self, stream_id: int, fields: list[tuple[bytes, bytes]], end_stream: bool = False) -> None:
        """A header block (an answer's head, or an informational one) on an open stream."""
        stream = self._sending(stream_id)
        block = self.encoder.encode(fields)
        if not self.announced:  # the table this end encodes against is empty: say so once (RFC 7541, 4.2)
            self.announced = True
            block = b"\x20" + block
        end = _END_STREAM if end_stream else 0
        limit = self.max_outbound_frame_size
        if len(block) <= limit:
            self.out.append(_header(len(block), _HEADERS, _END_HEADERS | end, stream_id) + block)
        else:
            self.out.append(_header(limit, _HEADERS, end, stream_id) + block[:limit])
            for start in range(limit, len(block), limit):
                piece = block[start : start + limit]
                last = _END_HEADERS if start + limit >= len(block) else 0
                self.out.append(_header(len(piece), _CONTINUATION, last, stream_id) + piece)
        if end_stream:
            self._local_end(stream)

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False) -> None:
        """One DATA frame: within the windows and the client's frame size (``local_flow_control_window``)."""
        stream = self._sending(stream_id)
        size = len(data)
        if size > self.send_window or size > stream.send_window or size > self.max_outbound_frame_size:
            raise H2StreamError(stream_id, FLOW_CONTROL_ERROR, f"{size} bytes over the window or frame size")
        self.send_window -= size
        stream.send_window -= size
        self.out.append(_header(size, _DATA, _END_STREAM if end_stream else 0, stream_id))
        if size:
            self.out.append(data)
        if end_stream:
            self._local_end(stream)

    def end_stream(self, stream_id: int) -> None:
        """End the answer with an empty DATA frame."""
        self.send_data(stream_id, b"", end_stream=True)

    def local_flow_control_window(self, stream_id: int) -> int:
        """How many bytes may be sent on the stream now: the smaller of its window and the connection's."""
        stream = self._sending(stream_id)
        return min(self.send_window, stream.send_window)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """RST_STREAM: the stream ends here; frames the client sent before it knew are taken quietly."""
        if self.streams.pop(stream_id, None) is None:
            return  # closed already: nothing to reset
        self.out.append(_header(4, _RST_STREAM, 0, stream_id) + error_code.to_bytes(4, "big"))
        self._remember_reset(stream_id)

    def acknowledge_received_data(self, size: int, stream_id: int) -> None:
        """Body bytes consumed: given back to the client's windows, in halves of them (one WINDOW_UPDATE
        per half rather than one per frame)."""
        if size <= 0:
            return
        self.unacked += size
        if self.unacked >= self.recv_target // 2:
            self._window_update(0, self.unacked)
            self.recv_window += self.unacked
            self.unacked = 0
        stream = self.streams.get(stream_id)
        if stream is not None and stream.remote_open:
            stream.unacked += size
            if stream.unacked >= _DEFAULT_WINDOW // 2:
                self._window_update(stream_id, stream.unacked)
                stream.recv_window += stream.unacked
                stream.unacked = 0

    def close_connection(self, error_code: int = NO_ERROR) -> None:
        """GOAWAY: no stream past the last one opened will be served."""
        if not self.going_away:
            self.going_away = True
            self.out.append(_goaway(self.highest, error_code))

    def data_to_send(self) -> bytes:
        """The frames prepared since the last call, as one piece of bytes."""
        if not self.out:
            return b""
        data = b"".join(self.out)
        self.out.clear()
        return data

    # -- what the client says --

    def receive_data(self, data: bytes) -> list[Event]:
        """The events of what the client sent; raises ``H2ProtocolError`` (its GOAWAY queued) on a connection error."""
        events: list[Event] = []
        if self.failed:
            return events
        buffer = self.buffer + data if self.buffer else data
        start = 0
        if not self.preface:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(buffer):
                    self._fail(PROTOCOL_ERROR, "not the HTTP/2 connection preface")
                self.buffer = buffer
                return events
            if buffer[: len(PREFACE)] != PREFACE:
                self._fail(PROTOCOL_ERROR, "not the HTTP/2 connection preface")
            self.preface = True
            start = len(PREFACE)
        end = len(buffer)
        while end - start >= 9:
            length = (buffer[start] << 16) | (buffer[start + 1] << 8) | buffer[start + 2]
            if length > _MAX_FRAME_IN:
                self._fail(FRAME_SIZE_ERROR, f"a frame of {length} bytes, over {_MAX_FRAME_IN}")
            if end - start - 9 < length:
                break
            kind = buffer[start + 3]
            flags = buffer[start + 4]
            stream_id = int.from_bytes(buffer[start + 5 : start + 9], "big") & _MAX_WINDOW
            payload = buffer[start + 9 : start + 9 + length]
            start += 9 + length
            self._frame(kind, flags, stream_id, payload, events)
        self.buffer = buffer[start:] if start < end else b""
        return events

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not self.settled:
            if kind != _SETTINGS or flags & _ACK:
                self._fail(PROTOCOL_ERROR, "the client's preface did not start with SETTINGS")
            self.settled = True
        if self.block_stream and (kind != _CONTINUATION or stream_id != self.block_stream):
            self._fail(PROTOCOL_ERROR, "a frame inside a header block")
        if kind == _DATA:
            self._data(flags, stream_id, payload, events)
        elif kind == _HEADERS:
            self._headers(flags, stream_id, payload, events)
        elif kind == _WINDOW_UPDATE:
            self._window(stream_id, payload, events)
        elif kind == _RST_STREAM:
            self._rst_stream(stream_id, payload, events)
        elif kind == _SETTINGS:
            self._settings(flags, stream_id, payload, events)
        elif kind == _PING:
            self.control += 1
            if stream_id or len(payload) != 8:
                self._fail(PROTOCOL_ERROR if stream_id else FRAME_SIZE_ERROR, "a malformed PING")
            if not flags & _ACK:
                self.out.append(_header(8, _PING, _ACK, 0) + payload)
        elif kind == _PRIORITY:
            self.control += 1
            if not stream_id:
                self._fail(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                self._stream_error(stream_id, FRAME_SIZE_ERROR, events)
            elif int.from_bytes(payload[:4], "big") & _MAX_WINDOW == stream_id:
                self._stream_error(stream_id, PROTOCOL_ERROR, events)  # depends on itself (5.3.1)
        elif kind == _CONTINUATION:
            self.control += 1
            if not self.block_stream:
                self._fail(PROTOCOL_ERROR, "CONTINUATION outside a header block")
            self._fragment(payload)
            if flags & _END_HEADERS:
                stream_id, self.block_stream = self.block_stream, 0
                block, self.block = b"".join(self.block), []
                self.block_size = 0
                self._block(stream_id, self.block_flags, self.block_priority, block, events)
        elif kind == _GOAWAY:
            if stream_id or len(payload) < 8:
                self._fail(PROTOCOL_ERROR if stream_id else FRAME_SIZE_ERROR, "a malformed GOAWAY")
            events.append(Event(GONE, 0))
        elif kind == _PUSH_PROMISE:
            self._fail(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        else:
            self.control += 1  # an unknown type: ignored (5.5)

    def _data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not stream_id:
            self._fail(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        data = self._unpadded(payload) if flags & _PADDED else payload
        self.recv_window -= size
        if self.recv_window < 0:
            self._fail(FLOW_CONTROL_ERROR, "DATA over the connection's window")
        ended = bool(flags & _END_STREAM)
        if not data and not ended:
            self.control += 1  # an empty DATA frame does nothing but cost
        stream = self.streams.get(stream_id)
        if stream is None or not stream.remote_open:
            self.control += 1
            self.acknowledge_received_data(size, 0)  # never consumed: the connection's window gets it back
            if self._idle(stream_id):
                self._fail(PROTOCOL_ERROR, f"DATA on stream {stream_id}, never opened")
            if stream is not None or stream_id not in self.reset_ids:
                self._stream_error(stream_id, STREAM_CLOSED, events)
            return
        stream.recv_window -= size
        if stream.recv_window < 0:
            self._fail(FLOW_CONTROL_ERROR, f"DATA over stream {stream_id}'s window")
        stream.received += len(data)
        expected = stream.expected
        if expected >= 0 and (stream.received > expected or (ended and stream.received != expected)):
            self.acknowledge_received_data(size, stream_id)
            self._stream_error(stream_id, PROTOCOL_ERROR, events)  # a body other than its content-length (8.1.1)
            return
        events.append(Event(DATA_RECEIVED, stream_id, None, data, size, ended))
        if ended:
            stream.remote_open = False
            events.append(Event(STREAM_ENDED, stream_id))
            if not stream.local_open:
                del self.streams[stream_id]

    def _headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not stream_id:
            self._fail(PROTOCOL_ERROR, "HEADERS on stream 0")
        fragment = self._unpadded(payload) if flags & _PADDED else payload
        priority = _NO_PRIORITY
        if flags & _PRIORITY_FLAG:
            if len(fragment) < 5:
                self._fail(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            priority = int.from_bytes(fragment[:4], "big") & _MAX_WINDOW
            fragment = fragment[5:]
        if flags & _END_HEADERS:
            self._block(stream_id, flags, priority, fragment, events)
            return
        self.block_stream = stream_id
        self.block_flags = flags
        self.block_priority = priority
        self._fragment(fragment)

    def _fragment(self, fragment: bytes) -> None:
        self.block_size += len(fragment)
        if self.block_size > self.max_block:
            self._fail(ENHANCE_YOUR_CALM, f"a header block over {self.max_block} bytes")
        self.block.append(fragment)

    def _block(self, stream_id: int, flags: int, priority: int, block: bytes, events: list[Event]) -> None:
        """A whole header block: decoded whatever becomes of its stream (HPACK's state is the connection's)."""
        try:
            headers = self.decoder.decode_fields(block)
        except OversizedHeaderListError:
            self._fail(ENHANCE_YOUR_CALM, "a header list over SETTINGS_MAX_HEADER_LIST_SIZE")
        except UndecodableBlockErrors as error:
            self._fail(COMPRESSION_ERROR, f"an undecodable header block: {error}")
        ended = bool(flags & _END_STREAM)
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers
            if not stream.remote_open:
                self._stream_error(stream_id, STREAM_CLOSED, events)
            elif not ended:
                self._stream_error(stream_id, PROTOCOL_ERROR, events)  # a second head without END_STREAM
            elif stream.expected >= 0 and stream.received != stream.expected:
                self._stream_error(stream_id, PROTOCOL_ERROR, events)
            else:
                stream.remote_open = False  # (the proxy relays no trailers)
                events.append(Event(STREAM_ENDED, stream_id))
                if not stream.local_open:
                    del self.streams[stream_id]
            return
        if stream_id <= self.highest:
            if stream_id in self.reset_ids:
                self.control += 1
                return  # sent before our RST_STREAM arrived
            self._fail(STREAM_CLOSED, f"HEADERS on stream {stream_id}, closed")
        if not stream_id % 2:
            self._fail(PROTOCOL_ERROR, f"a client opening stream {stream_id}, an even one")
        self.highest = stream_id
        if self.going_away:
            return  # past the GOAWAY's last stream: never served (6.8)
        expected = _content_length(headers)
        self.streams[stream_id] = _Stream(stream_id, self.initial_window, not ended, expected)
        if priority == stream_id:
            self._stream_error(stream_id, PROTOCOL_ERROR, events, report=False)  # depends on itself (5.3.1)
            return
        if ended and expected > 0:
            self._stream_error(stream_id, PROTOCOL_ERROR, events, report=False)  # a body promised, none sent
            return
        events.append(Event(REQUEST, stream_id, headers, b"", 0, ended))

    def _window(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        self.control += 1
        if len(payload) != 4:
            self._fail(FRAME_SIZE_ERROR, "a WINDOW_UPDATE not of 4 bytes")
        increment = int.from_bytes(payload, "big") & _MAX_WINDOW
        if not stream_id:
            if not increment:
                self._fail(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > _MAX_WINDOW:
                self._fail(FLOW_CONTROL_ERROR, "the connection's window over 2^31-1")
            events.append(Event(WINDOW_OPENED, 0))
            return
        if self._idle(stream_id):
            self._fail(PROTOCOL_ERROR, f"WINDOW_UPDATE on stream {stream_id}, never opened")
        stream = self.streams.get(stream_id)
        if stream is None:
            return  # closed: taken quietly (6.9)
        if not increment:
            self._stream_error(stream_id, PROTOCOL_ERROR, events)
            return
        stream.send_window += increment
        if stream.send_window > _MAX_WINDOW:
            self._stream_error(stream_id, FLOW_CONTROL_ERROR, events)
            return
        events.append(Event(WINDOW_OPENED, stream_id))

    def _rst_stream(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if not stream_id:
            self._fail(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            self._fail(FRAME_SIZE_ERROR, "an RST_STREAM not of 4 bytes")
        if self._idle(stream_id):
            self._fail(PROTOCOL_ERROR, f"RST_STREAM on stream {stream_id}, never opened")
        if self.streams.pop(stream_id, None) is not None:
            events.append(Event(STREAM_RESET, stream_id))

    def _settings(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        self.control += 1
        if stream_id:
            self._fail(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & _ACK:
            if payload:
                self._fail(FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            self._fail(FRAME_SIZE_ERROR, "a SETTINGS payload not of 6-byte entries")
        opened = False
        for start in range(0, len(payload), 6):
            setting = (payload[start] << 8) | payload[start + 1]
            value = int.from_bytes(payload[start + 2 : start + 6], "big")
            if setting == _ENABLE_PUSH and value > 1:
                self._fail(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH other than 0 or 1")
            elif setting == _INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    self._fail(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                delta = value - self.initial_window
                self.initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > _MAX_WINDOW:
                        self._fail(FLOW_CONTROL_ERROR, "a stream's window over 2^31-1")
                opened = opened or delta > 0
            elif setting == _MAX_FRAME_SIZE:
                if not _MAX_FRAME_IN <= value <= (1 << 24) - 1:
                    self._fail(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.max_outbound_frame_size = value
            # SETTINGS_HEADER_TABLE_SIZE needs nothing: this end's table stays empty (``announced``);
            # the others, and unknown ones (6.5.2), do not concern a server that never pushes.
        self.out.append(_header(0, _SETTINGS, _ACK, 0))
        if opened:
            events.append(Event(WINDOW_OPENED, 0))

    # -- helpers --

    def _sending(self, stream_id: int) -> _Stream:
        stream = self.streams.get(stream_id)
        if stream is None or not stream.local_open:
            raise H2StreamError(stream_id, STREAM_CLOSED, f"stream {stream_id} is closed")
        return stream

    def _idle(self, stream_id: int) -> bool:
        """Whether the stream was never opened: past the client's last, or one of the server's (even)."""
        return stream_id > self.highest or not stream_id % 2

    def _local_end(self, stream: _Stream) -> None:
        stream.local_open = False
        if not stream.remote_open:
            del self.streams[stream.id]

    def _stream_error(self, stream_id: int, code: int, events: list[Event], report: bool = True) -> None:
        """RST_STREAM of this end's making; a stream the proxy knows of is reported reset
        (``report``: not one opened by the very frame at fault, which it never heard of)."""
        if self.streams.pop(stream_id, None) is not None and report:
            events.append(Event(STREAM_RESET, stream_id))
        self.out.append(_header(4, _RST_STREAM, 0, stream_id) + code.to_bytes(4, "big"))
        self._remember_reset(stream_id)

    def _remember_reset(self, stream_id: int) -> None:
        reset_ids = self.reset_ids
        if len(reset_ids) >= _RESETS_KEPT:
            del reset_ids[next(iter(reset_ids))]
        reset_ids[stream_id] = None

    def _window_update(self, stream_id: int, increment: int) -> None:
        self.out.append(_header(4, _WINDOW_UPDATE, 0, stream_id) + increment.to_bytes(4, "big"))

    def _unpadded(self, payload: bytes) -> bytes:
        """A padded frame's content (6.1): its first byte says how much padding ends it."""
        if not payload or payload[0] >= len(payload):
            self._fail(PROTOCOL_ERROR, "padding as long as the frame")
        return payload[1 : len(payload) - payload[0]]

    def _fail(self, code: int, why: str) -> NoReturn:
        """A connection error: GOAWAY with ``code``, and nothing more is read."""
        self.failed = True
        self.going_away = True
        self.out.append(_goaway(self.highest, code))
        raise H2ProtocolError(code, why)


def _header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    """A frame's 9-byte header (4.1)."""
    return (length << 48 | kind << 40 | flags << 32 | stream_id).to_bytes(9, "big")


def _goaway(last_stream: int, code: int) -> bytes:
    return _header(8, _GOAWAY, 0, 0) + last_stream.to_bytes(4, "big") + code.to_bytes(4, "big")


def _content_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The request's content-length, or -1 (none, or one the proxy refuses as malformed anyway)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() and len(value) <= 18 else -1
    return -1
