"""Real grpcio servers on 127.0.0.1 for the gRPC channel tests: generic handlers and grpc's health servicer.

Methods (bytes in, bytes out): ``/test.Echo/Unary`` answers ``<request>@<port>`` and sends
the ``x-test`` metadata it got back as trailing metadata; ``/test.Echo/Stream`` answers three
messages; ``/test.Echo/Collect`` joins the requests it is sent; ``/test.Echo/Chat`` echoes
each. ``mode`` makes ``Unary`` misbehave: ``"unavailable"``, ``"not_found"`` (aborting with
that status) or ``"slow"`` (answering after ``delay`` seconds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .daemon import free_tcp_port

__all__ = ["EchoServer"]


class EchoServer:
    """One grpc server on 127.0.0.1; ``stop()`` it, ``start()`` it again on the same port."""

    def __init__(self, port: int | None = None, *, with_health: bool = True) -> None:
        self.port = port or free_tcp_port()
        self.address = f"127.0.0.1:{self.port}"
        self.mode = "ok"
        self.delay = 0.5
        self.calls = 0
        self.with_health = with_health
        self.health: health.HealthServicer | None = None
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None

    def start(self) -> EchoServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "Stream": grpc.unary_stream_rpc_method_handler(self._stream),
            "Collect": grpc.stream_unary_rpc_method_handler(self._collect),
            "Chat": grpc.stream_stream_rpc_method_handler(self._chat),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
        if self.with_health:
            self.health = health.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if server.add_insecure_port(self.address) != self.port:
            raise RuntimeError(f"grpc server could not bind {self.address}")
        server.start()
        self._server = server
        return self

    def serving(self, serving: bool, service: str = "") -> None:
        assert self.health is not None
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(service, status)

    def stop(self, grace: float | None = None) -> None:
        """Stop serving: at once (calls in flight end CANCELLED), or letting them finish within ``grace``."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait(5 + (grace or 0))

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- handlers ---------------------------------------------------------------------------------

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.calls += 1
        if self.mode == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.address} is unavailable")
        if self.mode == "not_found":
            context.abort(grpc.StatusCode.NOT_FOUND, f"nothing at {self.address}")
        if self.mode == "slow":
            time.sleep(self.delay)
        metadata = dict(context.invocation_metadata())
        if "x-test" in metadata:
            context.set_trailing_metadata((("x-test", str(metadata["x-test"])),))
        return request + b"@" + str(self.port).encode()

    def _stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        with self._lock:
            self.calls += 1
        for n in range(3):
            yield request + f"#{n}@{self.port}".encode()

    def _collect(self, requests: Iterator[bytes], context: Any) -> bytes:
        with self._lock:
            self.calls += 1
        return b"+".join(requests) + b"@" + str(self.port).encode()

    def _chat(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        with self._lock:
            self.calls += 1
        for request in requests:
            yield request + b"@" + str(self.port).encode()
