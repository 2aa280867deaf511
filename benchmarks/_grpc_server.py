"""A grpc echo server for the gRPC benchmarks, run as a child process (not part of the library).

    python benchmarks/_grpc_server.py PORT [PORT...] [--slow PORT:SECONDS] [--delay SECONDS]

Serves ``/bench.Echo/Unary`` (bytes in, the same bytes out, no serializers) on each
``127.0.0.1:PORT``, one ``grpc.server`` per port. A port given ``--slow`` answers after that
many seconds (the "stuck" server; a call its client gave up on frees its thread at once);
the others answer after ``--delay`` seconds (default 0: at once). Prints ``ready`` once every
port listens; exits on end of stdin or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from concurrent import futures
from types import FrameType

import grpc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Unary"


def responder(delay: float) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    """The ``Unary`` handler: echo the request after ``delay`` seconds (sooner if the caller went away)."""
    if delay <= 0:

        def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
            return request

        return echo

    def slow_echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        gone = threading.Event()
        if context.add_callback(gone.set):  # False: the call has already ended
            gone.wait(delay)
        return request

    return slow_echo


def serve(port: int, delay: float, workers: int) -> grpc.Server:
    # no SO_REUSEPORT: a port that is taken must fail here, not be shared with another process
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=[("grpc.so_reuseport", 0)])
    handler = grpc.unary_unary_rpc_method_handler(responder(delay))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Unary": handler}),))
    if server.add_insecure_port(f"127.0.0.1:{port}") != port:
        raise SystemExit(f"_grpc_server: cannot listen on 127.0.0.1:{port}")
    server.start()
    return server


def slow_port(text: str) -> tuple[int, float]:
    port, _, delay = text.partition(":")
    return int(port), float(delay)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("ports", type=int, nargs="+", metavar="PORT")
    parser.add_argument("--slow", type=slow_port, action="append", default=[], metavar="PORT:SECONDS")
    parser.add_argument("--delay", type=float, default=0.0, help="service time of the other ports (seconds)")
    parser.add_argument("--workers", type=int, default=64, help="threads of each server's pool")
    args = parser.parse_args()
    slow = dict(args.slow)

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminated)
    servers: list[grpc.Server] = []
    try:
        for port in args.ports:
            servers.append(serve(port, slow.get(port, args.delay), args.workers))
        print("ready", flush=True)
        while sys.stdin.buffer.read(4096):  # until the parent closes our stdin (or dies)
            pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a SIGTERM while stopping ends the process outright
        for server in servers:
            server.stop(0)


if __name__ == "__main__":
    main()
