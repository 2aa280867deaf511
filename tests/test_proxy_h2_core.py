"""The proxy's HTTP/2 core against RFC 9113's rules: raw frames in, frames and events out.

Frames are built by hand here (9-byte header, payload) and header blocks with hpack's
encoder, so the tests do not share the core's own framing; what the core sends is parsed
back the same way. A second set drives it with the h2 library's client.
"""

from __future__ import annotations

import random

import h2.config
import h2.connection
import h2.events
import pytest
from hpack import Encoder

from loadbalancer.proxy._errors import H2ProtocolError, H2StreamError
from loadbalancer.proxy._h2core import (
    CANCEL,
    COMPRESSION_ERROR,
    DATA_RECEIVED,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GONE,
    PREFACE,
    PROTOCOL_ERROR,
    REQUEST,
    STREAM_CLOSED,
    STREAM_ENDED,
    STREAM_RESET,
    WINDOW_OPENED,
    Event,
    H2Core,
)

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a")]


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload


def setting(code: int, value: int) -> bytes:
    return code.to_bytes(2, "big") + value.to_bytes(4, "big")


def parse(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """Frames as (type, flags, stream, payload)."""
    frames, start = [], 0
    while start < len(data):
        length = int.from_bytes(data[start : start + 3], "big")
        kind, flags = data[start + 3], data[start + 4]
        stream_id = int.from_bytes(data[start + 5 : start + 9], "big")
        frames.append((kind, flags, stream_id, data[start + 9 : start + 9 + length]))
        start += 9 + length
    assert start == len(data)
    return frames


class Peer:
    """A client speaking raw frames to one core."""

    def __init__(self, max_header_list_size: int = 32 * 1024) -> None:
        self.core = H2Core(max_header_list_size)
        self.core.initiate(128, max_header_list_size, 1 << 20)
        self.server_preface = parse(self.core.data_to_send())
        self.encoder = Encoder()
        self.events = self.send(PREFACE + frame(SETTINGS, 0, 0))
        assert parse(self.core.data_to_send()) == [(SETTINGS, ACK, 0, b"")]

    def send(self, data: bytes) -> list[Event]:
        return self.core.receive_data(data)

    def headers(
        self, stream_id: int, fields: list[tuple[bytes, bytes]] = GET, flags: int = END_HEADERS | END_STREAM
    ) -> list[Event]:
        return self.send(frame(HEADERS, flags, stream_id, self.encoder.encode(fields)))

    def sent(self) -> list[tuple[int, int, int, bytes]]:
        return parse(self.core.data_to_send())

    def fails(self, data: bytes, code: int) -> None:
        """The connection error ``code``: raised, and told in a GOAWAY."""
        with pytest.raises(H2ProtocolError) as raised:
            self.send(data)
        assert raised.value.code == code, raised.value
        goaway = [f for f in self.sent() if f[0] == GOAWAY]
        assert len(goaway) == 1 and int.from_bytes(goaway[0][3][4:8], "big") == code
        assert self.send(frame(PING, 0, 0, bytes(8))) == [] and self.sent() == []  # nothing more is read


def resets(frames: list[tuple[int, int, int, bytes]]) -> dict[int, int]:
    return {f[2]: int.from_bytes(f[3], "big") for f in frames if f[0] == RST_STREAM}


def kinds(events: list[Event]) -> list[tuple[int, int]]:
    return [(event.kind, event.stream_id) for event in events]


# -- the connection's start --


def test_the_server_preface_advertises_its_limits_and_opens_the_connection_window() -> None:
    peer = Peer(max_header_list_size=8192)
    (settings, window) = peer.server_preface
    assert settings[:3] == (SETTINGS, 0, 0)
    values = {int.from_bytes(settings[3][i : i + 2], "big"): int.from_bytes(settings[3][i + 2 : i + 6], "big")
              for i in range(0, len(settings[3]), 6)}  # fmt: skip
    assert values == {0x3: 128, 0x6: 8192, 0x2: 0}
    assert window[:3] == (WINDOW_UPDATE, 0, 0) and int.from_bytes(window[3], "big") == (1 << 20) - 65535


@pytest.mark.parametrize("start", [b"GET / HTTP/1.1\r\n\r\n" + bytes(16), b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"])
def test_anything_but_the_preface_is_a_protocol_error(start: bytes) -> None:
    core = H2Core(1024)
    with pytest.raises(H2ProtocolError):
        core.receive_data(start)
    assert parse(core.data_to_send())[-1][0] == GOAWAY


def test_the_first_frame_must_be_settings() -> None:
    core = H2Core(1024)
    with pytest.raises(H2ProtocolError) as raised:
        core.receive_data(PREFACE + frame(PING, 0, 0, bytes(8)))
    assert raised.value.code == PROTOCOL_ERROR


def test_frames_split_anywhere_give_the_same_events() -> None:
    encoder = Encoder()
    block = encoder.encode([*GET, (b"content-length", b"5")])
    stream = (
        PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_HEADERS, 1, block) + frame(DATA, END_STREAM, 1, b"hello")
    )
    whole = H2Core(1024)
    expected = [(e.kind, e.stream_id, e.headers, e.data, e.ended) for e in whole.receive_data(stream)]
    for seed in range(20):
        pieces, start, rng, core = [], 0, random.Random(seed), H2Core(1024)
        while start < len(stream):
            step = rng.randint(1, 12)
            pieces.append(stream[start : start + step])
            start += step
        got = [(e.kind, e.stream_id, e.headers, e.data, e.ended) for piece in pieces for e in core.receive_data(piece)]
        assert got == expected
    assert [kind for kind, *_ in expected] == [REQUEST, DATA_RECEIVED, STREAM_ENDED]


# -- frame sizes and control frames --


def test_a_frame_over_the_maximum_size_is_a_frame_size_error() -> None:
    peer = Peer()
    peer.headers(1, flags=END_HEADERS)
    peer.fails(frame(DATA, 0, 1, bytes(16385)), FRAME_SIZE_ERROR)


def test_ping_is_answered_with_its_payload() -> None:
    peer = Peer()
    assert peer.send(frame(PING, 0, 0, b"12345678") + frame(PING, ACK, 0, b"87654321")) == []
    assert peer.sent() == [(PING, ACK, 0, b"12345678")]  # an ACK is not answered
    assert peer.core.control == 3  # the client's SETTINGS and both PINGs


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(PING, 0, 0, bytes(7)), FRAME_SIZE_ERROR),
        (frame(PING, 0, 1, bytes(8)), PROTOCOL_ERROR),
        (frame(SETTINGS, ACK, 0, setting(1, 1)), FRAME_SIZE_ERROR),
        (frame(SETTINGS, 0, 0, bytes(5)), FRAME_SIZE_ERROR),
        (frame(SETTINGS, 0, 1, b""), PROTOCOL_ERROR),
        (frame(SETTINGS, 0, 0, setting(0x2, 2)), PROTOCOL_ERROR),
        (frame(SETTINGS, 0, 0, setting(0x4, 1 << 31)), FLOW_CONTROL_ERROR),
        (frame(SETTINGS, 0, 0, setting(0x5, 16383)), PROTOCOL_ERROR),
        (frame(SETTINGS, 0, 0, setting(0x5, 1 << 24)), PROTOCOL_ERROR),
        (frame(WINDOW_UPDATE, 0, 0, bytes(4)), PROTOCOL_ERROR),
        (frame(WINDOW_UPDATE, 0, 0, bytes(3)), FRAME_SIZE_ERROR),
        (frame(WINDOW_UPDATE, 0, 0, ((1 << 31) - 1).to_bytes(4, "big")), FLOW_CONTROL_ERROR),
        (frame(WINDOW_UPDATE, 0, 9, (1).to_bytes(4, "big")), PROTOCOL_ERROR),  # an idle stream
        (frame(RST_STREAM, 0, 0, bytes(4)), PROTOCOL_ERROR),
        (frame(RST_STREAM, 0, 9, bytes(4)), PROTOCOL_ERROR),  # an idle stream
        (frame(HEADERS, END_HEADERS, 3, Encoder().encode(GET)) + frame(RST_STREAM, 0, 2, bytes(4)), PROTOCOL_ERROR),
        (frame(PRIORITY, 0, 0, bytes(5)), PROTOCOL_ERROR),
        (frame(PUSH_PROMISE, END_HEADERS, 1, bytes(4)), PROTOCOL_ERROR),
        (frame(GOAWAY, 0, 1, bytes(8)), PROTOCOL_ERROR),
        (frame(GOAWAY, 0, 0, bytes(7)), FRAME_SIZE_ERROR),
        (frame(DATA, 0, 0, b"x"), PROTOCOL_ERROR),
        (frame(DATA, 0, 9, b"x"), PROTOCOL_ERROR),  # an idle stream
        (frame(HEADERS, END_HEADERS, 0, b""), PROTOCOL_ERROR),
        (frame(HEADERS, END_HEADERS | END_STREAM, 2, Encoder().encode(GET)), PROTOCOL_ERROR),  # an even stream
        (frame(CONTINUATION, END_HEADERS, 1, b""), PROTOCOL_ERROR),  # no header block is open
        (frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xff\xff\xff\xff"), COMPRESSION_ERROR),
    ],
)
def test_connection_errors_end_in_goaway_with_their_code(bad: bytes, code: int) -> None:
    Peer().fails(bad, code)


def test_unknown_frames_and_settings_are_ignored_but_counted() -> None:
    peer = Peer()
    assert peer.send(frame(0xFA, 0xFF, 0, b"whatever") + frame(SETTINGS, 0, 0, setting(0x99, 7))) == []
    assert peer.sent() == [(SETTINGS, ACK, 0, b"")]
    assert peer.core.control == 3


def test_priority_is_read_and_ignored_but_a_stream_depending_on_itself_is_reset() -> None:
    peer = Peer()
    assert peer.send(frame(PRIORITY, 0, 3, (1).to_bytes(4, "big") + b"\x10")) == []  # on an idle stream: fine
    assert peer.send(frame(PRIORITY, 0, 5, (5).to_bytes(4, "big") + b"\x10")) == []
    assert resets(peer.sent()) == {5: PROTOCOL_ERROR}
    assert peer.send(frame(PRIORITY, 0, 7, bytes(4))) == []  # 4 bytes, not 5: that stream only
    assert resets(peer.sent()) == {7: FRAME_SIZE_ERROR}
    block = peer.encoder.encode(GET)
    events = peer.send(
        frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 9, (9).to_bytes(4, "big") + b"\x10" + block)
    )
    assert events == [] and resets(peer.sent()) == {9: PROTOCOL_ERROR}
    events = peer.send(
        frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY_FLAG, 11, (1).to_bytes(4, "big") + b"\x10" + block)
    )
    assert kinds(events) == [(REQUEST, 11)] and events[0].headers == GET


def test_goaway_from_the_client_is_reported() -> None:
    assert kinds(Peer().send(frame(GOAWAY, 0, 0, bytes(8)))) == [(GONE, 0)]


# -- streams --


def test_a_request_with_its_body_its_padding_and_its_end() -> None:
    peer = Peer()
    (request,) = peer.headers(1, [*GET, (b"content-length", b"5")], flags=END_HEADERS)
    assert (request.kind, request.stream_id, request.headers, request.ended) == (
        REQUEST,
        1,
        [*GET, (b"content-length", b"5")],
        False,
    )
    padded = frame(DATA, PADDED, 1, b"\x03" + b"hel" + bytes(3))
    events = peer.send(padded + frame(DATA, END_STREAM, 1, b"lo"))
    assert [(e.kind, e.data, e.size, e.ended) for e in events] == [
        (DATA_RECEIVED, b"hel", 7, False), (DATA_RECEIVED, b"lo", 2, True), (STREAM_ENDED, b"", 0, False),
    ]  # fmt: skip


def test_padding_as_long_as_the_frame_is_a_protocol_error() -> None:
    peer = Peer()
    peer.headers(1, flags=END_HEADERS)
    assert peer.send(frame(DATA, PADDED, 1, b"\x03abc")) != []  # 3 bytes of padding in 4: no data, but fine
    peer.fails(frame(DATA, PADDED, 1, b"\x04abc"), PROTOCOL_ERROR)


def test_a_header_block_in_continuation_frames() -> None:
    peer = Peer()
    fields = [*GET, (b"x-long", b"v" * 3000)]
    block = peer.encoder.encode(fields)
    data = frame(HEADERS, END_STREAM, 1, block[:10]) + frame(CONTINUATION, 0, 1, block[10:20])
    assert peer.send(data) == []
    (request,) = peer.send(frame(CONTINUATION, END_HEADERS, 1, block[20:]))
    assert request.kind == REQUEST and request.headers == fields and request.ended


@pytest.mark.parametrize("between", [frame(PING, 0, 0, bytes(8)), frame(CONTINUATION, END_HEADERS, 3, b"")])
def test_nothing_may_come_between_a_header_blocks_frames(between: bytes) -> None:
    peer = Peer()
    block = peer.encoder.encode(GET)
    peer.fails(frame(HEADERS, END_STREAM, 1, block[:3]) + between, PROTOCOL_ERROR)


def test_an_endless_header_block_is_cut_short() -> None:
    peer = Peer(max_header_list_size=4096)
    data = frame(HEADERS, END_STREAM, 1, b"") + frame(CONTINUATION, 0, 1, bytes(16384)) * 2
    peer.fails(data, ENHANCE_YOUR_CALM)


def test_a_header_list_over_the_advertised_size_is_refused() -> None:
    peer = Peer(max_header_list_size=4096)
    peer.fails(
        frame(HEADERS, END_HEADERS | END_STREAM, 1, Encoder().encode([*GET, (b"x-big", b"v" * 5000)])),
        ENHANCE_YOUR_CALM,
    )


def test_streams_must_open_in_order() -> None:
    peer = Peer()
    assert kinds(peer.headers(5)) == [(REQUEST, 5)]
    peer.fails(frame(HEADERS, END_HEADERS | END_STREAM, 3, Encoder().encode(GET)), STREAM_CLOSED)


def test_trailers_end_the_body_and_a_second_head_without_end_is_reset() -> None:
    peer = Peer()
    peer.headers(1, flags=END_HEADERS)
    events = peer.send(
        frame(DATA, 0, 1, b"x") + frame(HEADERS, END_HEADERS | END_STREAM, 1, peer.encoder.encode([(b"x-sum", b"1")]))
    )
    assert kinds(events) == [(DATA_RECEIVED, 1), (STREAM_ENDED, 1)]
    peer.headers(3, flags=END_HEADERS)
    events = peer.headers(3, [(b"x-sum", b"1")], flags=END_HEADERS)
    assert kinds(events) == [(STREAM_RESET, 3)] and resets(peer.sent()) == {3: PROTOCOL_ERROR}


def test_a_body_other_than_its_content_length_resets_the_stream() -> None:
    peer = Peer()
    peer.headers(1, [*GET, (b"content-length", b"3")], flags=END_HEADERS)
    assert kinds(peer.send(frame(DATA, 0, 1, b"abcd"))) == [(STREAM_RESET, 1)]  # more than it said
    peer.headers(3, [*GET, (b"content-length", b"3")], flags=END_HEADERS)
    assert kinds(peer.send(frame(DATA, END_STREAM, 3, b"ab"))) == [(STREAM_RESET, 3)]  # less
    assert peer.headers(5, [*GET, (b"content-length", b"3")]) == []  # none at all: never reported
    assert resets(peer.sent()) == {1: PROTOCOL_ERROR, 3: PROTOCOL_ERROR, 5: PROTOCOL_ERROR}


def test_data_after_the_clients_end_is_a_stream_error_and_late_data_after_a_reset_is_taken_quietly() -> None:
    peer = Peer()
    peer.headers(1)  # ended: half-closed (remote)
    assert kinds(peer.send(frame(DATA, 0, 1, b"x"))) == [(STREAM_RESET, 1)]
    assert resets(peer.sent()) == {1: STREAM_CLOSED}
    peer.headers(3, flags=END_HEADERS)
    peer.core.reset_stream(3, CANCEL)
    assert resets(peer.sent()) == {3: CANCEL}
    before = peer.core.recv_window + peer.core.unacked
    assert peer.send(frame(DATA, 0, 3, bytes(16000)) + frame(RST_STREAM, 0, 3, bytes(4))) == []
    assert resets(peer.sent()) == {}  # in flight when the reset went: no answer
    assert peer.core.unacked >= 16000  # never to be consumed: counted as consumed, to go back to the client
    assert peer.core.recv_window + peer.core.unacked == before


def test_the_client_resets_a_stream() -> None:
    peer = Peer()
    peer.headers(1, flags=END_HEADERS)
    assert kinds(peer.send(frame(RST_STREAM, 0, 1, CANCEL.to_bytes(4, "big")))) == [(STREAM_RESET, 1)]
    assert peer.send(frame(RST_STREAM, 0, 1, bytes(4))) == []  # again: closed, nothing to report
    peer.fails(frame(RST_STREAM, 0, 1, bytes(3)), FRAME_SIZE_ERROR)


def test_after_goaway_new_streams_are_ignored() -> None:
    peer = Peer()
    peer.headers(1)
    peer.core.close_connection()
    (goaway,) = peer.sent()
    assert goaway[0] == GOAWAY and int.from_bytes(goaway[3][:4], "big") == 1
    assert peer.headers(3) == []


# -- flow control --


def test_the_client_must_keep_within_the_windows() -> None:
    peer = Peer()
    peer.headers(1, flags=END_HEADERS)
    data = frame(DATA, 0, 1, bytes(16384)) * 4  # 65,536: one byte over the stream's window
    peer.fails(data, FLOW_CONTROL_ERROR)


def test_consumed_data_reopens_the_windows_in_halves() -> None:
    peer = Peer()
    peer.headers(1, flags=END_HEADERS)
    peer.send(frame(DATA, 0, 1, bytes(16384)) * 2)
    peer.core.acknowledge_received_data(16384, 1)
    assert peer.sent() == []  # under half of either window: nothing yet
    peer.core.acknowledge_received_data(16384, 1)
    assert peer.sent() == [(WINDOW_UPDATE, 0, 1, (32768).to_bytes(4, "big"))]
    assert peer.core.streams[1].recv_window == 65535


def test_sending_keeps_within_the_clients_windows_and_frame_size() -> None:
    peer = Peer()
    peer.send(frame(SETTINGS, 0, 0, setting(0x4, 10)))
    peer.sent()
    peer.headers(1)
    peer.core.send_headers(1, [(b":status", b"200")])
    assert peer.core.local_flow_control_window(1) == 10
    peer.core.send_data(1, b"0123456789")
    with pytest.raises(H2StreamError):
        peer.core.send_data(1, b"x")
    assert kinds(peer.send(frame(SETTINGS, 0, 0, setting(0x4, 20)))) == [(WINDOW_OPENED, 0)]  # the delta applies
    assert peer.core.local_flow_control_window(1) == 10
    assert kinds(peer.send(frame(WINDOW_UPDATE, 0, 1, (5).to_bytes(4, "big")))) == [(WINDOW_OPENED, 1)]
    peer.core.send_data(1, bytes(15), end_stream=True)
    frames = peer.sent()
    assert [(f[0], f[1], len(f[3])) for f in frames][1:] == [(DATA, 0, 10), (SETTINGS, ACK, 0), (DATA, END_STREAM, 15)]
    assert 1 not in peer.core.streams  # both ends ended: the stream is gone
    with pytest.raises(H2StreamError):
        peer.core.send_data(1, b"")


def test_a_stream_window_overflow_resets_that_stream() -> None:
    peer = Peer()
    peer.headers(1)
    events = peer.send(frame(WINDOW_UPDATE, 0, 1, ((1 << 31) - 1).to_bytes(4, "big")))
    assert kinds(events) == [(STREAM_RESET, 1)] and resets(peer.sent()) == {1: FLOW_CONTROL_ERROR}
    peer.headers(3)
    assert kinds(peer.send(frame(WINDOW_UPDATE, 0, 3, bytes(4)))) == [(STREAM_RESET, 3)]
    assert resets(peer.sent()) == {3: PROTOCOL_ERROR}


def test_a_long_answer_head_goes_out_in_continuation_frames() -> None:
    peer = Peer()
    peer.headers(1)
    peer.core.send_headers(1, [(b":status", b"200"), (b"x-big", bytes(range(256)) * 200)], end_stream=True)
    frames = peer.sent()
    assert [(f[0], f[1]) for f in frames] == [
        (HEADERS, END_STREAM),
        (CONTINUATION, 0),
        (CONTINUATION, 0),
        (CONTINUATION, END_HEADERS),
    ]
    assert all(len(f[3]) <= 16384 for f in frames)


# -- against the h2 library's client --


def exchange(client: h2.connection.H2Connection, core: H2Core) -> list[h2.events.Event]:
    events = []
    for _ in range(50):
        data = client.data_to_send()
        for event in core.receive_data(data) if data else []:
            if event.kind == DATA_RECEIVED:
                core.acknowledge_received_data(event.size, event.stream_id)
        answer = core.data_to_send()
        if not data and not answer:
            break
        for event in client.receive_data(answer):
            events.append(event)
            if isinstance(event, h2.events.DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
    return events


@pytest.mark.parametrize("seed", range(8))
def test_h2s_client_gets_every_answer_whole_through_small_windows(seed: int) -> None:
    rng = random.Random(seed)
    core = H2Core(65536)
    core.initiate(100, 65536, 1 << 20)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: rng.randint(1, 3000)})
    exchange(client, core)
    bodies = {}
    for _ in range(6):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, GET, end_stream=True)
        bodies[stream_id] = rng.randbytes(rng.randint(0, 40000))
    exchange(client, core)
    got: dict[int, bytes] = {}
    ended = set()
    pending = dict(bodies)
    for stream_id in pending:
        core.send_headers(stream_id, [(b":status", b"200"), (b"x-seed", b"%d" % seed)])
    for _ in range(2000):
        for stream_id, rest in list(pending.items()):
            window = min(core.local_flow_control_window(stream_id), core.max_outbound_frame_size)
            if window <= 0:
                continue
            chunk, pending[stream_id] = rest[:window], rest[window:]
            core.send_data(stream_id, chunk, end_stream=not pending[stream_id])
            if not pending[stream_id]:
                del pending[stream_id]
        for event in exchange(client, core):
            if isinstance(event, h2.events.DataReceived):
                got[event.stream_id] = got.get(event.stream_id, b"") + event.data
            elif isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
            elif isinstance(event, h2.events.ResponseReceived):
                assert dict(event.headers)[b"x-seed"] == b"%d" % seed
        if not pending:
            break
    assert ended == set(bodies)
    assert {k: got.get(k, b"") for k in bodies} == bodies
    assert not core.streams and core.highest == max(bodies)


def test_the_first_answer_block_says_the_table_is_empty_and_later_ones_do_not() -> None:
    peer = Peer()
    peer.headers(1)
    peer.headers(3)
    peer.core.send_headers(1, [(b":status", b"200")], end_stream=True)
    peer.core.send_headers(3, [(b":status", b"200")], end_stream=True)
    first, second = peer.sent()
    assert first[3][:1] == b"\x20" and second[3][:1] != b"\x20"  # a dynamic table size update to 0, once


def test_headers_on_a_stream_reset_here_are_taken_quietly_but_counted() -> None:
    peer = Peer()
    peer.headers(1, flags=END_HEADERS)
    peer.core.reset_stream(1, CANCEL)
    peer.sent()
    before = peer.core.control
    assert peer.headers(1, [(b"x-trailer", b"1")]) == [] and peer.sent() == []
    assert peer.core.control == before + 1
