"""The command line: ``python -m loadbalancer`` (or ``loadbalancer``), to look at discovery from a shell.

    loadbalancer resolve dns://127.0.0.1:53/_api._tcp.example.com.
    loadbalancer watch zk://zk1:2181,zk2:2181/services/api
    loadbalancer register etcd://127.0.0.1:2379/services/api 10.0.0.5:8080 --ttl 10
    loadbalancer resolve static:///10.0.0.1:80,10.0.0.2:80 --json
    loadbalancer watch mdns:///_http._tcp.local.

A source is named by a target (``loadbalancer.targets``: the schemes are listed by
``--help``). ``resolve`` prints the current set once; ``watch`` prints changes until
interrupted; ``register`` keeps an instance registered until interrupted, then deregisters
it. Output is one instance per line, or with ``--json`` one JSON document per line. Exit
codes: 0 success (an interrupted ``watch`` or ``register`` included), 1 the source could
not be read or written, 2 a usage error (including asking for what a source cannot do).
The first syntax, ``resolve dns NAME --server IP``, still works and says what to write now.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import Any, TextIO

from . import _sources as _legacy
from . import targets
from ._arguments import seconds, whole
from ._util import describe
from .errors import DiscoveryError, ExtraNotInstalledError, InvalidInstanceError, InvalidTargetError
from .instance import Instance, parse_instance
from .publisher import EndpointSet, Publisher

__all__ = [
    "Command",
    "Failure",
    "UsageError",
    "build_parser",
    "describe_instance",
    "instance_document",
    "main",
    "make_publisher",
    "parse",
    "register",
    "resolve",
    "watch",
]

PROG = "loadbalancer"
SOURCES = tuple(_legacy.SOURCES)  # the first syntax's source names, still understood
# schemes whose clients take a request timeout (--timeout): the others answer from memory or the LAN
TIMED = frozenset(
    {"dns", "etcd", "zk", "zookeeper", "consul", "k8s", "kubernetes", "eureka", "httppoll+http", "httppoll+https"}
)
DEFAULT_TIMEOUT = 5.0  # seconds a source may take to answer (--timeout), where it takes one
_GRACE = 0.5  # what resolve allows past the timeout for the client to report before giving up itself
_PATIENCE = 1.0  # seconds resolve waits before saying (on a terminal) what it is waiting for


class UsageError(Exception):
    """A request the command line cannot carry out as asked (exit code 2)."""


class Failure(Exception):
    """The source could not be read or written (exit code 1)."""


def _identity(instance: str) -> str:
    return instance


@dataclass
class Command:
    """What to do: the action, the source's target and its keyword options, and how to print."""

    action: str
    target: str
    options: dict[str, Any] = field(default_factory=dict)
    args: argparse.Namespace = field(default_factory=argparse.Namespace)


# -- arguments ------------------------------------------------------------------------------


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


_HELPS = {
    "resolve": "print the current instance set once and exit",
    "watch": "print changes to the instance set as they happen, until Ctrl-C",
    "register": "register an instance and keep it registered until Ctrl-C, then deregister it",
}


def _schemes_epilog() -> str:
    rows = [f"  {scheme.example}\n      {scheme.summary}" for scheme in targets.schemes()]
    return "targets:\n" + "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``loadbalancer ACTION TARGET ...``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Client-side service discovery from the command line: look up, follow or register instances.",
        epilog="Run '%(prog)s ACTION --help' for the targets a source can be named by.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    # listed for --help; main() hands 'proxy ...' to loadbalancer.proxy, which parses goaround's flags
    actions.add_parser(
        "proxy", help="an HTTP load-balancing proxy (goaround's flags; see 'proxy --help')", add_help=False
    )
    for action, text in _HELPS.items():
        sub = actions.add_parser(
            action,
            help=text,
            description=text[0].upper() + text[1:] + ".",
            epilog=_schemes_epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("target", metavar="TARGET", help="the source, such as dns:///_api._tcp.example.")
        if action == "register":
            _registration_arguments(sub)
        _common_arguments(sub)
    return parser


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document per line, for scripts")
    parser.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        help=f"how long the source may take to answer (default: {DEFAULT_TIMEOUT:g});"
        " resolve gives up then, naming the server it waited for",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="log the library's events to stderr (-vv: more)"
    )


def _registration_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("instance", metavar="HOST:PORT", help="the instance to register")
    parser.add_argument(
        "--ttl", type=seconds, metavar="SECONDS", help="the lease's time to live (default: the source's)"
    )
    parser.add_argument("--weight", type=whole, help="its weight (default: 1)")
    parser.add_argument("--priority", type=whole, help="its priority (default: 0)")
    parser.add_argument("--tag", dest="tags", action="append", default=[], metavar="TAG", help="a tag (repeatable)")
    parser.add_argument(
        "--meta", dest="metadata", action="append", type=_pair, default=[], metavar="KEY=VALUE",
        help="metadata (repeatable)",
    )  # fmt: skip


def parse(argv: Sequence[str]) -> Command:
    """The command ``argv`` asks for; the first syntax (``resolve dns NAME ...``) is read as its target."""
    legacy = None
    argv = list(argv)
    if len(argv) >= 2 and argv[0] in _HELPS and argv[1] in _legacy.SOURCES:
        if argv[0] == "register" and argv[1] not in _legacy.REGISTERING:
            scheme = targets.parse(f"{argv[1]}:x").scheme
            raise UsageError(_cannot_register(scheme))
        try:
            legacy, left = _legacy.parse_source(argv[0], argv[1:])
        except InvalidTargetError as error:
            raise UsageError(str(error)) from None
        argv = [argv[0], legacy.target, *left]
    args = build_parser().parse_args(argv)
    try:
        targets.parse(args.target)
    except InvalidTargetError as error:
        raise UsageError(f"argument TARGET: {error}") from None
    command = Command(args.action, args.target, dict(legacy.options) if legacy else {}, args)
    if legacy is not None:
        _error(f"note: the 'SOURCE ARGUMENT --option' syntax is deprecated; name the source as {legacy.target}"
               + (" (with the options as ?key=value, see --help)" if legacy.options else ""), "")  # fmt: skip
    return command


def _cannot_register(scheme: str) -> str:
    known = {s.name: s for s in targets.schemes()}
    name = {"zookeeper": "zk", "kubernetes": "k8s", "http": "httppoll+http"}.get(scheme, scheme)
    return known[name].why_not_register if name in known else f"cannot register with {scheme}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("loadbalancer")
    except PackageNotFoundError:
        return "(not installed)"


# -- output ---------------------------------------------------------------------------------


def instance_document(instance: Instance) -> dict[str, Any]:
    """An instance as JSON-ready data."""
    document: dict[str, Any] = {
        "address": instance.address,
        "host": instance.host,
        "port": instance.port,
        "weight": instance.weight,
        "priority": instance.priority,
        "tags": list(instance.tags),
        "metadata": dict(instance.metadata),
    }
    if instance.ttl is not None:
        document["ttl"] = instance.ttl
    return document


def describe_instance(instance: Instance, *, ranked: bool = False) -> str:
    """``host:port`` and what else is known: ``10.0.0.1:80  priority=10 weight=5 tags=a,b zone=eu``.

    ``ranked``: the source always gives priority and weight (DNS SRV), so show them even
    when they are the defaults.
    """
    parts = [instance.address]
    if ranked or instance.priority != 0:
        parts.append(f"priority={instance.priority}")
    if ranked or instance.weight != 1:
        parts.append(f"weight={instance.weight}")
    if instance.ttl is not None:
        parts.append(f"ttl={instance.ttl:g}")
    if instance.tags:
        parts.append("tags=" + ",".join(instance.tags))
    parts.extend(f"meta.{key}={value}" for key, value in sorted(instance.metadata.items()))
    address, *details = parts
    return f"{address}  {' '.join(details)}" if details else address


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


@dataclass
class _Printer:
    out: TextIO
    json: bool
    ranked: bool

    def line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def document(self, document: dict[str, Any]) -> None:
        self.line(json.dumps(document, separators=(",", ":"), ensure_ascii=False))

    def instances(self, instances: Sequence[Instance]) -> None:
        for instance in instances:
            if self.json:
                self.document(instance_document(instance))
            else:
                self.line(describe_instance(instance, ranked=self.ranked))


class _Watcher:
    """Turns a publisher's successive sets into lines: what was added, removed, or went stale."""

    def __init__(self, printer: _Printer) -> None:
        self._printer = printer
        self._previous: tuple[Instance, ...] | None = None
        self._stale = False

    def show(self, endpoints: EndpointSet[Any]) -> None:
        now, printer = _now(), self._printer
        current = endpoints.instances
        before = self._previous or ()
        added = [i for i in current if not _contains(before, i)]
        removed = [i for i in before if not _contains(current, i)]
        error = None if endpoints.error is None else _reason(endpoints.error)
        was_stale, self._stale = self._stale, endpoints.stale
        first = self._previous is None
        self._previous = current
        if printer.json:
            printer.document(
                {
                    "time": now,
                    "event": "stale" if endpoints.stale else "update",
                    "instances": [instance_document(i) for i in current],
                    "added": [instance_document(i) for i in added],
                    "removed": [instance_document(i) for i in removed],
                    "stale": endpoints.stale,
                    "error": error,
                }
            )
            return
        for instance in removed:
            printer.line(f"{now}  - {describe_instance(instance, ranked=printer.ranked)}")
        for instance in added:
            printer.line(f"{now}  + {describe_instance(instance, ranked=printer.ranked)}")
        if endpoints.stale and not was_stale:
            printer.line(f"{now}  ! stale: {error} (keeping {_count(current)})")
        elif was_stale and not endpoints.stale:
            printer.line(f"{now}  = fresh again: {_count(current)}")
        elif not current and (first or removed):
            printer.line(f"{now}  = no instances")


def _contains(instances: Sequence[Instance], instance: Instance) -> bool:
    # Instance equality covers host, port and attributes; a re-weighted instance is "removed and added"
    return any(other == instance and other.metadata == instance.metadata for other in instances)


def _count(instances: Sequence[Instance]) -> str:
    return f"{len(instances)} instance" + ("" if len(instances) == 1 else "s")


# -- sources --------------------------------------------------------------------------------


def _options(command: Command) -> dict[str, Any]:
    """The keyword options for the target: the command's, and ``--timeout`` where the scheme takes one."""
    options = dict(command.options)
    target = targets.parse(command.target)
    if target.scheme in TIMED and "timeout" not in target.options:
        options.setdefault("timeout", _timeout(command))
    return options


def _timeout(command: Command) -> float:
    """Seconds the source may take: ``--timeout``, else the target's ``?timeout=``, else ``DEFAULT_TIMEOUT``."""
    if command.args.timeout is not None:
        return float(command.args.timeout)
    given = targets.parse(command.target).options.get("timeout")
    try:
        return float(given) if given is not None else float(command.options.get("timeout") or DEFAULT_TIMEOUT)
    except ValueError:
        return DEFAULT_TIMEOUT  # the target's own check has refused it already


def make_publisher(command: Command) -> Publisher[str]:
    """The publisher ``command`` names, with the identity as factory."""
    try:
        return targets.publisher(command.target, _identity, close_delay=0, **_options(command))
    except ExtraNotInstalledError as error:
        raise Failure(str(error)) from None
    except InvalidTargetError as error:
        raise UsageError(f"argument TARGET: {error}") from None
    except (ValueError, TypeError) as error:  # the target, or the backend's checks of what was given
        raise UsageError(str(error)) from None


def _where(command: Command) -> str:
    servers = command.options.get("endpoints")
    if servers:
        return f"{command.target} at {servers if isinstance(servers, str) else ','.join(servers)}"
    return command.target


# -- actions --------------------------------------------------------------------------------


def _servers(command: Command) -> str:
    """The servers the command waits for, as named in the target or its options ("" where not named)."""
    servers = command.options.get("endpoints")
    if servers:
        return servers if isinstance(servers, str) else ",".join(servers)
    return ",".join(targets.parse(command.target).hosts)


def _refresh_within(publisher: Publisher[str], command: Command) -> EndpointSet[Any]:
    """``publisher.refresh()``, given up (``Failure`` naming the server) once the command's timeout is past."""
    if targets.parse(command.target).scheme not in TIMED:
        return publisher.refresh()  # from memory, or the LAN's own wait
    limit = _timeout(command)
    answers: queue.SimpleQueue[tuple[EndpointSet[Any] | None, BaseException | None]] = queue.SimpleQueue()

    def read() -> None:
        try:
            answers.put((publisher.refresh(), None))
        except BaseException as error:  # handed to the main thread
            answers.put((None, error))

    threading.Thread(target=read, name="loadbalancer-resolve", daemon=True).start()
    end = time.monotonic() + limit + _GRACE
    servers = _servers(command)
    try:
        found, error = answers.get(timeout=min(_PATIENCE, limit + _GRACE))
    except queue.Empty:
        if sys.stderr.isatty():
            waiting = f"{servers} for {command.target}" if servers else command.target
            print(f"{PROG}: waiting for {waiting} (up to {limit:g}s, --timeout) ...", file=sys.stderr)
        try:
            found, error = answers.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            at = f" at {servers}" if servers else ""
            raise Failure(
                f"cannot read {command.target}: no answer from the server{at} within {limit:g}s"
                " (is it running and reachable? --timeout SECONDS waits longer)"
            ) from None
    if error is not None:
        raise error
    assert found is not None
    return found


def resolve(command: Command, printer: _Printer, stop: threading.Event) -> int:
    """Print the current set once."""
    with make_publisher(command) as publisher:
        endpoints = _refresh_within(publisher, command)
        if endpoints.error is not None:
            raise Failure(f"cannot read {_where(command)}: {_reason(endpoints.error)}")
        printer.instances(endpoints.instances)
        if not endpoints and not printer.json:
            print(f"{PROG}: no instances at {_where(command)}", file=sys.stderr)
    return 0


def watch(command: Command, printer: _Printer, stop: threading.Event) -> int:
    """Print the changes until interrupted."""
    updates: queue.SimpleQueue[EndpointSet[Any]] = queue.SimpleQueue()
    watcher = _Watcher(printer)
    publisher = make_publisher(command)
    try:
        subscription = publisher.subscribe(updates.put)
        try:
            while not stop.is_set():
                # a short wait keeps Ctrl-C and SIGTERM prompt on every platform
                with contextlib.suppress(queue.Empty):
                    watcher.show(updates.get(timeout=0.2))
        except KeyboardInterrupt:
            pass  # the way to end a watch
        finally:
            subscription.unsubscribe()  # before close(): its empty "last word" is not a change to show
    finally:
        publisher.close()
    return 0


def _instance(args: argparse.Namespace) -> Instance:
    try:
        return parse_instance(
            args.instance,
            **({"weight": args.weight} if args.weight is not None else {}),
            **({"priority": args.priority} if args.priority is not None else {}),
            tags=tuple(args.tags),
            metadata=dict(args.metadata),
        )
    except InvalidInstanceError as error:
        raise UsageError(str(error)) from None


def _registrar(command: Command, instance: Instance) -> Any:
    options = _options(command)
    if command.args.ttl is not None:
        options["ttl"] = command.args.ttl
    try:
        return targets.registrar(command.target, instance, **options)
    except ExtraNotInstalledError as error:
        raise Failure(str(error)) from None
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None


def register(command: Command, printer: _Printer, stop: threading.Event) -> int:
    """Keep an instance registered until interrupted, then deregister it."""
    instance = _instance(command.args)
    registrar = _registrar(command, instance)
    try:
        try:
            registrar.register()
        except DiscoveryError as error:
            reason = _reason(error)
            if not reason.startswith("cannot register"):
                reason = f"cannot register {instance} under {_where(command)}: {reason}"
            raise Failure(reason) from error
        where = _registered_as(registrar)
        _announce(printer, "registered", instance, where)
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass  # the way to end a registration
        registrar.deregister()
        _announce(printer, "deregistered", instance, where)
    finally:
        registrar.close()
    return 0


def _registered_as(registrar: Any) -> str | None:
    """The etcd key, ZooKeeper node, Consul service ID, DNS-SD name or Eureka instance id of the registration."""
    for name in ("key", "node", "service_id", "instance_id"):
        value = getattr(registrar, name, None)
        if isinstance(value, str):
            return value
    return None


def _announce(printer: _Printer, event: str, instance: Instance, where: str | None) -> None:
    if printer.json:
        printer.document({"time": _now(), "event": event, "instance": instance_document(instance), "key": where})
    else:
        printer.line(f"{_now()}  {event} {describe_instance(instance)}" + (f" as {where}" if where else ""))


# -- main -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _logging(verbosity: int) -> Iterator[None]:
    """Library events to stderr while the command runs: errors only, or more with ``-v``.

    Each line names the logger it comes from (``loadbalancer.etcd``, ``loadbalancer.zookeeper.kazoo``
    for the kazoo clients the library makes, ``httpx``).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    levels = {
        "loadbalancer": (logging.ERROR, logging.INFO, logging.DEBUG)[min(verbosity, 2)],
        # kazoo and httpx report each reconnection attempt; the commands report the outcome
        "loadbalancer.zookeeper.kazoo": (logging.CRITICAL, logging.WARNING, logging.DEBUG)[min(verbosity, 2)],
        "httpx": (logging.CRITICAL, logging.WARNING, logging.DEBUG)[min(verbosity, 2)],
    }
    saved: list[tuple[logging.Logger, int, bool]] = []
    for name, level in levels.items():
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(level)
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


@contextlib.contextmanager
def _sigterm_stops(stop: threading.Event) -> Iterator[None]:
    """SIGTERM ends ``watch`` and ``register`` as Ctrl-C does (signals can be set on the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _reason(error: BaseException) -> str:
    # The library's own errors say what happened in their message; others need their type.
    return str(error) if isinstance(error, DiscoveryError) and str(error) else describe(error)


def _error(message: str, prefix: str = "error: ") -> None:
    print(f"{PROG}: {prefix}{message}", file=sys.stderr)


ACTIONS = {"resolve": resolve, "watch": watch, "register": register}


def _run(command: Command) -> int:
    printer = _Printer(sys.stdout, command.args.json, ranked=targets.parse(command.target).scheme == "dns")
    stop = threading.Event()
    with _logging(command.args.verbose), _sigterm_stops(stop):
        return ACTIONS[command.action](command, printer, stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["proxy"]:
        return _proxy(argv[1:])
    try:
        command = parse(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    except UsageError as error:
        _error(str(error))
        return 2
    try:
        return _run(command)
    except KeyboardInterrupt:
        return 130  # interrupted before the command could finish
    except UsageError as error:
        _error(str(error))
        return 2
    except (Failure, DiscoveryError) as error:
        _error(str(error))
        return 1
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except OSError as error:
        _error(describe(error))
        return 1


def _proxy(argv: list[str]) -> int:
    try:
        from . import proxy
    except ImportError as error:
        _error(f"the proxy needs an optional dependency ({error.name or error}): pip install 'loadbalancer[proxy]'")
        return 1
    return proxy.main(argv)


def _quiet_stdout() -> None:
    # The reader went away (``| head``): point stdout at /dev/null so the final flush is quiet.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
