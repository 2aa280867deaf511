"""One worker process: the server on the shared port, its balancing stack, its cache and metrics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import ssl
from typing import Any

from .. import static
from ..instance import Instance
from ._cache import Cache
from ._library import write_snapshot
from ._main import listening_socket, server_ssl
from ._metrics import Metrics
from ._server import ClientConnection, Proxy
from ._stack import build_stack
from ._upstream import parse_backend_url

__all__ = ["serve"]


def _instances(urls: list[str], schemes: dict[str, str]) -> list[Instance]:
    instances = []
    for url in urls:
        scheme, instance = parse_backend_url(url)
        schemes[instance.address] = scheme
        instances.append(instance)
    return instances


def share(total: int | None, workers: int, index: int) -> int | None:
    """Worker ``index``'s part of ``-n total``: the parts add up to ``total`` exactly."""
    if total is None:
        return None
    return total // workers + (1 if index < total % workers else 0)


async def serve(args: argparse.Namespace, port: int, control_fd: int, ready_fd: int, index: int = 0) -> int:
    """Serve until SIGTERM (or SIGINT), then drain; ``control_fd`` brings backend lists from the admin socket."""
    loop = asyncio.get_running_loop()
    metrics = Metrics()
    schemes: dict[str, str] = {}
    source: Any
    if args.source is None:
        source = static.Publisher(_instances(args.backends, schemes), close_delay=0, service="proxy")
    else:
        from .. import cli

        source = cli.make_publisher(args.source_namespace)
    balancer, backends, top, detector = build_stack(
        source,
        loop=loop,
        schemes=schemes,
        limit=share(args.connections, args.workers, index),
        queue_timeout=args.queue_timeout,
        connect_timeout=args.connect_timeout,
        upstream_ssl=ssl.create_default_context() if "https" in schemes.values() else None,
        health_ssl=bool(schemes) and set(schemes.values()) == {"https"},
        health_path=None if args.health_path == "none" else args.health_path,
        health_interval=args.health_interval,
        eject_after=args.eject_after,
        balancer=args.balancer,
    )
    cache = Cache(args.cache_size, default_ttl=args.cache_ttl or 0.0) if args.cache else None
    proxy = Proxy(
        balancer,
        metrics=metrics,
        cache=cache,
        attempts=args.retries + 1,
        timeout=args.timeout,
        scheme="https" if args.cacert else "http",
        keepalive_timeout=args.keepalive_timeout,
    )
    sock = listening_socket(args.bind, port, listen=True)
    server = await loop.create_server(
        lambda: ClientConnection(proxy),
        sock=sock,
        ssl=server_ssl(args) if args.cacert else None,
        backlog=1024,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    control = asyncio.StreamReader()
    pipe = os.fdopen(control_fd, "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), pipe)

    async def follow_control() -> None:
        while True:
            line = await control.readline()
            if not line:
                return
            urls = [part for part in line.decode().strip().split(",") if part]
            with contextlib.suppress(ValueError, RuntimeError):  # checked by the supervisor already
                source.replace(_instances(urls, schemes))

    ejections = 0
    parent = os.getppid()
    snapshots = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # set by the supervisor

    async def housekeeping() -> None:
        nonlocal ejections
        while True:
            if os.getppid() != parent:  # the supervisor is gone (killed): do not serve on alone
                stop.set()
            proxy.sweep()
            for backend in backends.all():
                metrics.active.labels(str(backend)).set(backend.active)
            metrics.backends.set(len(backends.endpoints()))
            metrics.healthy.set(len(top.endpoints()))
            if detector is not None and detector.ejections != ejections:
                metrics.ejections.inc(detector.ejections - ejections)
                ejections = detector.ejections
            if snapshots:
                with contextlib.suppress(OSError):  # a full disk costs the figures, never the serving
                    write_snapshot(snapshots)
            await asyncio.sleep(1.0)

    tasks = [loop.create_task(follow_control()), loop.create_task(housekeeping())]
    gc.freeze()  # what was built to start is never garbage: keep the collector off it
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    await stop.wait()

    # Graceful: stop accepting, close idle connections, let requests in flight finish (bounded).
    proxy.draining = True
    server.close()
    proxy.close_idle()
    if proxy.connections:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proxy.drained.wait(), args.shutdown_timeout)
    for connection in list(proxy.connections):
        connection.abort()
    for task in tasks:
        task.cancel()
    top.close()
    return 0
