"""The supervisor: holds the port, forks the workers, serves the admin socket and /metrics, stops them all."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import glob
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

from .._log import get_logger
from . import _heap as heap
from . import _http1
from ._limits import raise_open_files
from ._sockets import claim_port
from ._status import BackendStates, forget_state
from ._upstream import parse_backend_url

__all__ = ["supervise"]

_log = get_logger(name=__name__)


class _Worker:
    def __init__(self, pid: int, control: int) -> None:
        self.pid = pid
        self.control = control  # write end of the worker's control pipe


def compiled() -> bool:
    """Whether this is the compiled build (``LOADBALANCER_COMPILE=1`` at install): its per-request modules are C."""
    return not _http1.__file__.endswith(".py")


def _fork_worker(args: argparse.Namespace, port: int, index: int) -> tuple[_Worker, int]:
    control_read, control_write = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            # Forked from the supervisor's running loop (a replacement) or before it: drop its
            # signal wiring, or a SIGTERM before the worker's own handlers would go to the supervisor.
            signal.set_wakeup_fd(-1)
            for signum in (*_STOP_SIGNALS, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            asyncio.events._set_running_loop(None)
            os.close(control_write)
            os.close(ready_read)
            heap.keep()
            import uvloop

            from ._worker import serve

            code = uvloop.run(serve(args, port, control_read, ready_write, index))
        except BaseException as error:  # report, then leave without running the supervisor's code
            print(f"loadbalancer proxy: worker {os.getpid()} failed: {error!r}", file=sys.stderr)
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(control_read)
    os.close(ready_write)
    return _Worker(pid, control_write), ready_read


def _wait_ready(fds: list[int], timeout: float) -> bool:
    import select

    deadline = time.monotonic() + timeout
    pending = set(fds)
    ok = True
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            ok = False
            break
        readable, _, _ = select.select(list(pending), [], [], left)
        for fd in readable:
            if not os.read(fd, 1):
                ok = False  # the worker died before it was ready
            pending.discard(fd)
    for fd in fds:
        os.close(fd)
    return ok


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
_METRICS_PREFIX = "loadbalancer-proxy-metrics-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clear_stale_metrics_dirs() -> None:
    """Remove the metrics directories of proxies that were killed (SIGKILL leaves them behind)."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{_METRICS_PREFIX}*-*")):
        owner = os.path.basename(path)[len(_METRICS_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def _process_id() -> int:
    return _pid[0]


def _metrics_dir() -> str:
    _clear_stale_metrics_dirs()
    directory = tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import values

    # Each worker writes its own file; /metrics sums them. The pid names the file: read once per
    # process (at fork), not by a getpid() system call on every increment, prometheus' default.
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)  # type: ignore[no-untyped-call]
    return directory


def supervise(args: argparse.Namespace) -> int:
    """Run the proxy: the workers, the admin socket, /metrics; until SIGTERM, SIGINT or SIGQUIT.

    Whatever ends it, the workers are stopped and what it made (the metrics directory, the
    admin socket) is removed. SIGHUP makes every worker read its source and check its
    backends again; it never ends the proxy.
    """
    early: list[int] = []  # signals that came before the event loop could take them
    for signum in (*_STOP_SIGNALS, signal.SIGHUP):
        signal.signal(signum, lambda number, frame: early.append(number))
    raise_open_files()  # the workers inherit it
    try:
        holder = claim_port(args.bind, args.port)
    except OSError as error:
        reason = "the address is in use (is another proxy running?)" if error.errno == errno.EADDRINUSE else error
        print(f"loadbalancer proxy: error: cannot listen on {args.bind}:{args.port}: {reason}", file=sys.stderr)
        return 1
    port = holder.getsockname()[1]
    directory = _metrics_dir()
    if args.connections is not None and args.connections < args.workers:
        args.workers = args.connections  # -n is shared out between the workers: one connection each at least
    workers: list[_Worker] = []
    try:
        ready: list[int] = []
        for index in range(args.workers):
            worker, ready_fd = _fork_worker(args, port, index)
            workers.append(worker)
            ready.append(ready_fd)
        if not _wait_ready(ready, 60.0):
            print("loadbalancer proxy: error: a worker failed to start", file=sys.stderr)
            return 1
        if any(signum in _STOP_SIGNALS for signum in early):
            return 0
        return asyncio.run(_run(args, port, workers))
    finally:
        _stop_workers(workers, args.shutdown_timeout + 5.0)
        holder.close()
        shutil.rmtree(directory, ignore_errors=True)


def _stop_workers(workers: list[_Worker], timeout: float) -> None:
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for worker in workers:
        while True:
            try:
                pid, _ = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(worker.pid, 0)
                break
            time.sleep(0.05)


async def _run(args: argparse.Namespace, port: int, workers: list[_Worker]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _signal_workers, workers, signal.SIGHUP)
    states = BackendStates(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    servers: list[asyncio.Server] = []
    socket_path = None if args.socket == "none" else args.socket
    made_socket = False
    try:
        if args.prometheus_port:
            servers.append(
                await asyncio.start_server(lambda r, w: _metrics_handler(r, w, states), args.bind, args.prometheus_port)
            )
        if socket_path is not None:
            _free_socket_path(socket_path)
            try:
                servers.append(await _admin_server(args, workers, socket_path))
            except OSError as error:
                raise OSError(f"cannot make the admin socket --socket {socket_path}: {error.strerror or error}"
                              " (give another --socket PATH, or 'none')") from error  # fmt: skip
            made_socket = True
    except OSError as error:
        print(f"loadbalancer proxy: error: {error}", file=sys.stderr)
        return 1
    try:
        scheme = "https" if args.cacert else "http"
        where = f"{scheme}://{args.bind}:{port}"
        extras = [f"{len(workers)} worker{'s' if len(workers) != 1 else ''}"]
        if compiled():
            extras.append("compiled")
        if args.prometheus_port:
            extras.append(f"metrics on :{servers[0].sockets[0].getsockname()[1]}/metrics")
        if socket_path is not None:
            extras.append(f"admin socket {socket_path}")
        print(f"loadbalancer proxy: listening on {where} ({', '.join(extras)})", flush=True)
        tasks = [loop.create_task(_watch_workers(args, port, workers, stop)), loop.create_task(_follow(states))]
        await stop.wait()
        for task in tasks:
            task.cancel()
        for server in servers:
            server.close()
        await loop.run_in_executor(None, _stop_workers, workers, args.shutdown_timeout + 5.0)
        return 0
    finally:
        if made_socket and socket_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(socket_path)


def _signal_workers(workers: list[_Worker], signum: int) -> None:
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signum)


async def _follow(states: BackendStates) -> None:
    """Merge the workers' views of the backends once a second (ejections are counted here)."""
    while True:
        states.refresh()
        await asyncio.sleep(1.0)


async def _watch_workers(args: argparse.Namespace, port: int, workers: list[_Worker], stop: asyncio.Event) -> None:
    """Replace a worker that died on its own (the others keep serving meanwhile)."""
    from prometheus_client import multiprocess

    from ._library import forget

    while not stop.is_set():
        await asyncio.sleep(0.5)
        for index, worker in enumerate(workers):
            pid = _reaped(worker.pid)
            if pid and not stop.is_set():
                multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
                forget(os.environ["PROMETHEUS_MULTIPROC_DIR"], pid)
                forget_state(os.environ["PROMETHEUS_MULTIPROC_DIR"], pid)
                os.close(worker.control)
                replacement, ready_fd = _fork_worker(args, port, index)
                workers[index] = replacement
                await asyncio.get_running_loop().run_in_executor(None, _wait_ready, [ready_fd], 60.0)


def _reaped(pid: int) -> int:
    """``pid`` if that child has exited (now reaped), else 0 (never blocks)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0]
    except ChildProcessError:
        return pid


def _free_socket_path(path: str) -> None:
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # left over from a proxy that is gone
    else:
        raise OSError(f"the admin socket {path} is in use by another process (give --socket PATH)")
    finally:
        probe.close()


_ADMIN_LINE = 64 * 1024  # the longest line the admin socket takes
# Seconds between reads of the workers' figures for one scrape, after a read that failed; when
# the last read fails too, the scrape is answered 500.
_FIGURES_PAUSES = (0.02, 0.05, 0.1)


async def _admin_server(args: argparse.Namespace, workers: list[_Worker], path: str) -> asyncio.Server:
    """The admin socket, made owner-only whatever the umask, then given ``--socket-mode``."""
    mask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(lambda r, w: _admin(r, w, args, workers), path, limit=_ADMIN_LINE)
    finally:
        os.umask(mask)
    os.chmod(path, args.socket_mode)
    return server


async def _admin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args: argparse.Namespace,
                 workers: list[_Worker]) -> None:  # fmt: skip
    """A comma-separated list of URLs and a newline replaces the backends; the answer says what is used now.

    Only a complete line is applied: one cut short (no newline before the end, or past 64 KiB)
    changes nothing.
    """
    try:
        try:
            async with asyncio.timeout(2.0):
                line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            answer = f"error: the line is longer than {_ADMIN_LINE // 1024} KiB; nothing changed\n"
        except asyncio.IncompleteReadError:
            answer = "error: the line did not end with a newline; nothing changed\n"
        except TimeoutError:
            answer = "error: no complete line (ending with a newline) within 2 s; nothing changed\n"
        else:
            answer = _replace(line, args, workers)
        writer.write(answer.encode())
        await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


def _replace(data: bytes, args: argparse.Namespace, workers: list[_Worker]) -> str:
    if args.target is not None:
        return f"error: the backends come from {args.target}; the socket cannot replace them\n"
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "error: not UTF-8 text; nothing changed\n"
    urls = [part.strip() for part in text.split(",") if part.strip()]
    if not urls:
        return "error: no backend URLs given (write http://HOST:PORT,...); nothing changed\n"
    try:
        for url in urls:
            parse_backend_url(url)
    except ValueError as error:
        return f"error: {error}; nothing changed\n"
    args.backends = urls  # for workers started later
    line = (",".join(urls) + "\n").encode()
    for worker in workers:
        with contextlib.suppress(OSError):
            os.write(worker.control, line)
    return "ok: " + ",".join(urls) + "\n"


async def _metrics_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, states: BackendStates) -> None:
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    from ._library import LibraryCollector
    from ._status import PAGE
    from ._status import status as _status

    try:
        async with asyncio.timeout(5.0):
            head = await reader.readuntil(b"\r\n\r\n")
        path = (head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b"").split(b"?")[0]
        status = b"200 OK"
        if path == b"/status":
            body, kind = PAGE, b"text/html; charset=utf-8"
        elif path not in (b"/metrics", b"/status.json"):
            body, status = b"not found: /metrics serves the metrics, /status a page of them\n", b"404 Not Found"
            kind = b"text/plain"
        else:

            def figures() -> bytes:
                registry = CollectorRegistry()
                multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
                registry.register(LibraryCollector(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
                merged = states.refresh()
                registry.register(states)
                return _status(registry, merged) if path == b"/status.json" else generate_latest(registry)

            kind = b"application/json" if path == b"/status.json" else b"text/plain; version=0.0.4; charset=utf-8"
            for pause in (*_FIGURES_PAUSES, None):
                try:
                    body = figures()
                    break
                except Exception as error:  # any: a scrape gets an answer, never a dropped connection
                    # A worker creating a metrics file leaves it empty for an instant, and
                    # prometheus-client's reader fails on it (struct.error): read again.
                    if pause is not None:
                        await asyncio.sleep(pause)
                        continue
                    kind_of = type(error)
                    why = f"{kind_of.__module__}.{kind_of.__qualname__}: {error}".removeprefix("builtins.")
                    _log.warning("figures_unreadable", path=path.decode("latin-1"), error=why)
                    status, kind = b"500 Internal Server Error", b"text/plain"
                    body = f"the workers' figures could not be read: {why}\n".encode()
        writer.write(
            b"HTTP/1.1 %b\r\ncontent-type: %b\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%b"
            % (status, kind, len(body), body)
        )
        await writer.drain()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()
