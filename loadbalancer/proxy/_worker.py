"""One worker process: the server on the shared port, its balancing stack, its cache and metrics."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import json
import os
import signal
import ssl
from typing import Any

from .. import static, targets
from .._log import get_logger
from ..instance import Instance
from ._cache import Cache
from ._flags import limits, server_ssl
from ._http1 import ClientConnection
from ._library import snapshot, snapshot_path, write_file
from ._limits import DEFAULT_MAX_CONNECTIONS, connections_allowed, raise_open_files
from ._metrics import Metrics
from ._proxy import Proxy
from ._sockets import listening_socket
from ._stack import Stack, build_stack
from ._status import state_path
from ._upstream import parse_backend_url

__all__ = ["serve"]

_log = get_logger(name=__name__)
_SOURCE_WAIT = 10.0  # seconds a worker waits for its source's first answer before serving anyway (503s)


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


def _source(args: argparse.Namespace, schemes: dict[str, str]) -> Any:
    if args.target is None:
        return static.Publisher(_instances(args.backends, schemes), close_delay=0, service="proxy")
    return targets.publisher(args.target, close_delay=0, **args.target_options)


def _stack(args: argparse.Namespace, source: Any, schemes: dict[str, str], index: int) -> Stack:
    return build_stack(
        source,
        loop=asyncio.get_running_loop(),
        schemes=schemes,
        limit=share(args.connections, args.workers, index),
        queue_timeout=args.queue_timeout,
        connect_timeout=args.connect_timeout,
        upstream_ssl=ssl.create_default_context() if "https" in schemes.values() else None,
        health_ssl=bool(schemes) and set(schemes.values()) == {"https"},
        health_path=None if args.health_path == "none" else args.health_path,
        health_interval=args.health_interval,
        unhealthy_interval=args.health_unhealthy_interval,
        panic_threshold=args.panic_threshold,
        eject_after=args.eject_after,
        balancer=args.balancer,
        buffer_size=args.buffer_size,
    )


async def serve(args: argparse.Namespace, port: int, control_fd: int, ready_fd: int, index: int = 0) -> int:
    """Serve until SIGTERM (or SIGINT), then drain; ``control_fd`` brings backend lists from the admin socket."""
    loop = asyncio.get_running_loop()
    metrics = Metrics()
    schemes: dict[str, str] = {}
    source = _source(args, schemes)
    stack = _stack(args, source, schemes, index)
    max_connections = args.max_connections or min(DEFAULT_MAX_CONNECTIONS, connections_allowed(raise_open_files()))
    proxy = Proxy(
        stack.balancer,
        metrics=metrics,
        cache=Cache(args.cache_size, default_ttl=args.cache_ttl or 0.0) if args.cache else None,
        attempts=args.retries + 1,
        scheme="https" if args.cacert else "http",
        limits=limits(args, max_connections),
    )
    server = await loop.create_server(
        lambda: ClientConnection(proxy),
        sock=listening_socket(args.bind, port),
        ssl=server_ssl(args) if args.cacert else None,
        ssl_handshake_timeout=proxy.limits.header_timeout if args.cacert else None,
        backlog=1024,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reresolve(stack)))
    files = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="loadbalancer-files")
    tasks = [
        loop.create_task(_follow_control(control_fd, source, schemes)),
        loop.create_task(_housekeeping(stack, metrics, stop, files)),
        loop.create_task(proxy.sweeping()),
    ]
    if not await stack.top.await_ready(_SOURCE_WAIT):  # listen with backends known, where the source answers
        _log.warning("source_not_ready", source=args.target, waited=_SOURCE_WAIT)
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
    metrics.flush()  # the last answers' counts
    stack.top.close()
    files.shutdown()
    return 0


async def _reresolve(stack: Stack) -> None:
    """SIGHUP: read the source again and check every backend now."""
    try:
        await stack.top.arefresh()
        if stack.checker is not None:
            await stack.checker.acheck_now()
    except Exception as error:  # a failed read keeps the set; it must not take the worker down
        _log.warning("reresolve_failed", error=repr(error))


async def _follow_control(control_fd: int, source: Any, schemes: dict[str, str]) -> None:
    """Backend lists from the supervisor's admin socket, a line each, checked there already."""
    loop = asyncio.get_running_loop()
    control = asyncio.StreamReader()
    pipe = os.fdopen(control_fd, "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), pipe)
    while True:
        line = await control.readline()
        if not line:
            return
        urls = [part for part in line.decode().strip().split(",") if part]
        with contextlib.suppress(ValueError, RuntimeError):
            source.replace(_instances(urls, schemes))


async def _housekeeping(
    stack: Stack, metrics: Metrics, stop: asyncio.Event, files: concurrent.futures.Executor
) -> None:
    """Once a second: the gauges, this worker's figures and backend states for the supervisor."""
    loop = asyncio.get_running_loop()
    parent = os.getppid()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # set by the supervisor
    writing: asyncio.Future[None] | None = None
    while True:
        if os.getppid() != parent:  # the supervisor is gone (killed): do not serve on alone
            stop.set()
        for backend in stack.backends.all():
            metrics.active.labels(str(backend)).set(backend.active)
        metrics.backends.set(len(stack.backends.endpoints()))
        metrics.healthy.set(len(stack.top.endpoints()))
        if directory and (writing is None or writing.done()):  # (a write still going on: this second is skipped)
            # The figures are read here, where they change; the files are written on a thread.
            # Their open, write and rename take a millisecond and more (several on a busy
            # disk), during which this loop would hold every request in flight on the worker.
            texts = [(snapshot_path(directory), snapshot()), (state_path(directory), json.dumps(stack.states()))]
            writing = loop.run_in_executor(files, _write_files, texts)
        await asyncio.sleep(1.0)


def _write_files(texts: list[tuple[str, str]]) -> None:
    with contextlib.suppress(OSError):  # a full disk costs the figures, never the serving
        for path, text in texts:
            write_file(path, text)
