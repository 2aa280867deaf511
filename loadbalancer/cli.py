"""The command line: ``python -m loadbalancer`` (or ``loadbalancer``), to look at discovery from a shell.

    loadbalancer resolve dns _api._tcp.example.com. --server 127.0.0.1:53
    loadbalancer watch zookeeper /services/api --hosts zk1:2181,zk2:2181
    loadbalancer register etcd /services/api 10.0.0.5:8080 --endpoints http://127.0.0.1:2379 --ttl 10
    loadbalancer resolve static 10.0.0.1:80 10.0.0.2:80 --json
    loadbalancer watch mdns _http._tcp.local.

``resolve`` prints the current set once; ``watch`` prints changes until interrupted;
``register`` keeps an instance registered until interrupted, then deregisters it. Output
is one instance per line, or with ``--json`` one JSON document per line. Exit codes: 0
success (an interrupted ``watch`` or ``register`` included), 1 the source could not be
read or written, 2 a usage error (including asking for what a source cannot do).
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any, TextIO

from ._util import describe
from .errors import DiscoveryError, InvalidInstanceError
from .instance import Instance, parse_instance
from .publisher import EndpointSet, Publisher

__all__ = ["main"]

PROG = "loadbalancer"
SOURCES = ("dns", "etcd", "zookeeper", "consul", "mdns", "static", "kubernetes", "eureka", "http")
EXTRAS = {
    "etcd": "etcd",
    "zookeeper": "zookeeper",
    "consul": "consul",
    "mdns": "mdns",
    "kubernetes": "kubernetes",
    "eureka": "eureka",
    "http": "httppoll",
}  # source -> the pip extra that brings its client


class UsageError(Exception):
    """A request the command line cannot carry out as asked (exit code 2)."""


class Failure(Exception):
    """The source could not be read or written (exit code 1)."""


def _identity(instance: str) -> str:
    return instance


# -- arguments ------------------------------------------------------------------------------


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def _non_negative_int(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return int(text)


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``loadbalancer ACTION SOURCE ...``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON document per line, for scripts")
    common.add_argument(
        "--timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the source to answer (default: 10)",
    )
    common.add_argument(
        "-v", "--verbose", action="count", default=0, help="log the library's events to stderr (-vv: more)"
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Client-side service discovery from the command line: look up, follow or register instances.",
        epilog="Run '%(prog)s ACTION SOURCE --help' for a source's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    helps = {
        "resolve": "print the current instance set once and exit",
        "watch": "print changes to the instance set as they happen, until Ctrl-C",
        "register": "register an instance and keep it registered until Ctrl-C, then deregister it",
    }
    # listed for --help; main() hands 'proxy ...' to loadbalancer.proxy, which parses goaround's flags
    actions.add_parser(
        "proxy", help="an HTTP load-balancing proxy (goaround's flags; see 'proxy --help')", add_help=False
    )
    for action, text in helps.items():
        sub = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        sources = sub.add_subparsers(dest="source", metavar="SOURCE", required=True)
        registering = action == "register"

        if not registering:  # DNS SRV records belong to the zone's administrator
            dns = sources.add_parser("dns", parents=[common], help="DNS SRV records", description="DNS SRV records.")
            dns.add_argument("name", help="the SRV name, such as _api._tcp.example.com. (taken as absolute)")
            dns.add_argument(
                "--server",
                metavar="HOST:PORT",
                help="ask this nameserver (an IP address, port 53 by default) instead of the system's",
            )
            dns.add_argument(
                "--ttl", type=_positive, default=5.0, metavar="SECONDS", help="poll interval for watch (default: 5)"
            )

        etcd = sources.add_parser("etcd", parents=[common], help="keys under an etcd prefix", description="etcd.")
        etcd.add_argument("prefix", help="the key prefix, such as /services/api")
        etcd.add_argument(
            "--endpoints",
            default="http://127.0.0.1:2379",
            help="etcd connection string: http://h1:2379,h2:2379/namespace (default: http://127.0.0.1:2379)",
        )
        if registering:
            etcd.add_argument(
                "--ttl",
                type=_positive,
                default=10.0,
                metavar="SECONDS",
                help="the lease's time to live, whole seconds (default: 10)",
            )

        zookeeper = sources.add_parser(
            "zookeeper", parents=[common], help="children of a ZooKeeper path", description="ZooKeeper."
        )
        zookeeper.add_argument("path", help="the service path, such as /services/api")
        zookeeper.add_argument(
            "--hosts",
            default="127.0.0.1:2181",
            help="ZooKeeper connection string: zk1:2181,zk2:2181/chroot (default: 127.0.0.1:2181)",
        )
        zookeeper.add_argument(
            "--session-timeout",
            type=_positive,
            default=10.0,
            metavar="SECONDS",
            help="the ZooKeeper session timeout (default: 10)",
        )

        consul = sources.add_parser(
            "consul", parents=[common], help="a Consul service's passing instances", description="Consul."
        )
        consul.add_argument("service", help="the service name, such as api")
        consul.add_argument(
            "--address", help="the Consul agent: http[s]://host:port (default: $CONSUL_HTTP_ADDR or 127.0.0.1:8500)"
        )
        consul.add_argument("--token", help="the ACL token (default: $CONSUL_HTTP_TOKEN)")
        consul.add_argument("--dc", help="the datacenter (default: the agent's)")
        if registering:
            consul.add_argument(
                "--ttl", type=_positive, default=10.0, metavar="SECONDS", help="the TTL check's TTL (default: 10)"
            )
        else:
            consul.add_argument(
                "--tag", dest="tags", action="append", default=[], metavar="TAG", help="only with this tag (repeatable)"
            )
        mdns = sources.add_parser(
            "mdns", parents=[common], help="DNS-SD services on the local network (mDNS)", description="mDNS / DNS-SD."
        )
        if registering:
            mdns.add_argument("type", help="the DNS-SD service type, such as _http._tcp.local.")
            mdns.add_argument("--name", help="the instance name (default: this host's name and the port)")
            mdns.add_argument(
                "--ttl", type=_positive, default=120.0, metavar="SECONDS", help="the records' TTL (default: 120)"
            )
        else:
            mdns.add_argument("types", nargs="+", metavar="TYPE", help="DNS-SD service types, such as _http._tcp")
            mdns.add_argument("--name", help="only the instance of this name")
            mdns.add_argument(
                "--settle",
                type=_positive,
                default=1.5,
                metavar="SECONDS",
                help="how long to collect answers before the first set (default: 1.5)",
            )
        mdns.add_argument(
            "--interfaces", default="all", help="all, default, or local IP addresses, comma-separated (default: all)"
        )
        eureka = _eureka_parser(sources, common, registering)
        if not registering:  # the seeds own their lists
            _http_parser(sources, common)

        if not registering:  # a fixed list holds only what the command line gives
            static = sources.add_parser("static", parents=[common], help="a fixed list", description="A fixed list.")
            static.add_argument("instances", nargs="+", metavar="HOST:PORT")

        if not registering:  # EndpointSlices are the cluster's controllers' to write
            _kubernetes_source(sources, common)

        if registering:
            for source in (etcd, zookeeper, consul, mdns, eureka):
                source.add_argument("instance", metavar="HOST:PORT", help="the instance to register")
                source.add_argument("--weight", type=_non_negative_int, help="its weight (default: 1)")
                source.add_argument("--priority", type=_non_negative_int, help="its priority (default: 0)")
                source.add_argument(
                    "--tag", dest="tags", action="append", default=[], metavar="TAG", help="a tag (repeatable)"
                )
                source.add_argument(
                    "--meta",
                    dest="metadata",
                    action="append",
                    type=_pair,
                    default=[],
                    metavar="KEY=VALUE",
                    help="metadata (repeatable)",
                )
    return parser


def _kubernetes_source(sources: Any, common: argparse.ArgumentParser) -> None:
    k8s = sources.add_parser(
        "kubernetes", parents=[common], help="a Kubernetes Service's EndpointSlices", description="Kubernetes."
    )
    k8s.add_argument("service", help="the Service's name")
    k8s.add_argument("--namespace", "-n", help="its namespace (default: the context's, or the pod's)")
    k8s.add_argument("--port", help="a port name or number of the slices (default: the only one)")
    k8s.add_argument("--selector", "-l", dest="label_selector", help="more labels the slices must have")
    k8s.add_argument("--accept", choices=("ready", "serving", "all"), default="ready", help="which endpoints")
    k8s.add_argument("--kubeconfig", help="a kubeconfig file (default: in-cluster in a pod, else $KUBECONFIG)")
    k8s.add_argument("--context", help="the kubeconfig context (default: its current one)")


def _eureka_parser(sources: Any, common: argparse.ArgumentParser, registering: bool) -> argparse.ArgumentParser:
    eureka = sources.add_parser("eureka", parents=[common], help="a Eureka application", description="Eureka.")
    eureka.add_argument("app", help="the application name, such as api (Eureka upper-cases it)")
    eureka.add_argument(
        "--urls",
        default="http://127.0.0.1:8761/eureka/",
        help="Eureka service URLs, comma-separated (default: http://127.0.0.1:8761/eureka/)",
    )
    if registering:
        eureka.add_argument(
            "--ttl", type=_positive, default=90.0, metavar="SECONDS", help="lease duration; heartbeats every third"
        )
        eureka.add_argument("--instance-id", help="the instance id (default: host:app:port)")
    else:
        eureka.add_argument(
            "--interval", type=_positive, default=30.0, metavar="SECONDS", help="delta fetch interval (default: 30)"
        )
    return eureka  # type: ignore[no-any-return]


def _http_parser(sources: Any, common: argparse.ArgumentParser) -> None:
    http = sources.add_parser(
        "http", parents=[common], help="seed URLs answering a JSON list", description="HTTP polling."
    )
    http.add_argument("seeds", nargs="+", metavar="URL", help="seed URLs ({service} is replaced by --service)")
    http.add_argument("--service", default="default", help="the service name (default: default)")
    http.add_argument(
        "--interval", type=_positive, default=5.0, metavar="SECONDS", help="poll interval for watch (default: 5)"
    )


def _cannot_register(argv: Sequence[str]) -> str | None:
    """Why ``register SOURCE`` cannot work, for the sources ``register`` does not offer but users try."""
    if len(argv) < 2 or argv[0] != "register":
        return None
    if argv[1] == "dns":
        return (
            "cannot register with DNS SRV: the records are the DNS zone's, changed by its administrator"
            " (for example with an RFC 2136 update: nsupdate); register with etcd, zookeeper or consul instead"
        )
    if argv[1] == "http":
        return "cannot register with HTTP seeds: each seed owns the list it answers"
    if argv[1] == "static":
        return "cannot register with a static list: it holds only what is given on the command line"
    if argv[1] == "kubernetes":
        return (
            "cannot register with Kubernetes: a Service's EndpointSlices are written by the cluster's controllers;"
            " run the instance as a pod that the Service selects"
        )
    return None


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


def _import(source: str) -> Any:
    """The backend module of ``source``, or a ``Failure`` telling how to install its extra."""
    import importlib

    module = {"dns": "dnssrv", "http": "httppoll"}.get(source, source)
    try:
        return importlib.import_module(f"loadbalancer.{module}")
    except ImportError as error:
        extra = EXTRAS.get(source)
        if extra is None:
            raise
        raise Failure(
            f"the {source} source needs an optional dependency ({error.name or error}):"
            f" pip install 'loadbalancer[{extra}]'"
        ) from error


def _nameserver(text: str) -> tuple[str, int]:
    import ipaddress

    try:
        instance = parse_instance(text) if (":" in text and not _is_ip(text)) else Instance(text, 53)
    except InvalidInstanceError as error:
        raise UsageError(f"--server {text!r}: {error.reason}") from None
    try:
        ipaddress.ip_address(instance.host)
    except ValueError:
        raise UsageError(f"--server {text!r}: give the nameserver's IP address, not a name") from None
    return instance.host, instance.port


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def make_publisher(args: argparse.Namespace) -> Publisher[str]:
    """The publisher ``args`` describe, with the identity as factory."""
    try:
        return _make_publisher(args)
    except ValueError as error:  # the backend's checks of what was given: a bad name, path, list
        raise UsageError(str(error)) from None


def _make_publisher(args: argparse.Namespace) -> Publisher[str]:
    source = args.source
    module = _import(source)
    if source == "static":
        return module.Publisher(args.instances, _identity, close_delay=0)  # type: ignore[no-any-return]
    if source == "dns":
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=args.server is None)
        if args.server is not None:
            host, port = _nameserver(args.server)
            resolver.nameservers = [host]
            resolver.port = port
        resolver.timeout = min(2.0, args.timeout)
        resolver.lifetime = args.timeout
        publisher: Publisher[str] = module.Publisher(args.name, args.ttl, _identity, resolver=resolver, close_delay=0)
        return publisher
    if source == "etcd":
        return module.Publisher(  # type: ignore[no-any-return]
            args.prefix, _identity, endpoints=args.endpoints, timeout=args.timeout, close_delay=0
        )
    if source == "consul":
        return module.Publisher(  # type: ignore[no-any-return]
            args.service, _identity, address=args.address, token=args.token, datacenter=args.dc,
            tags=args.tags, timeout=args.timeout, close_delay=0,
        )  # fmt: skip
    if source == "kubernetes":
        port = int(args.port) if args.port is not None and args.port.isdigit() else args.port
        return module.Publisher(  # type: ignore[no-any-return]
            args.service,
            _identity,
            namespace=args.namespace,
            port=port,
            label_selector=args.label_selector,
            accept=args.accept,
            kubeconfig=args.kubeconfig,
            context=args.context,
            timeout=args.timeout,
            close_delay=0,
        )
    if source == "mdns":
        return module.Publisher(  # type: ignore[no-any-return]
            args.types, _identity, name=args.name, interfaces=args.interfaces, settle=args.settle, close_delay=0
        )
    if source == "eureka":
        return module.Publisher(  # type: ignore[no-any-return]
            args.app, _identity, urls=args.urls, interval=args.interval, timeout=args.timeout, close_delay=0
        )
    if source == "http":
        return module.Publisher(  # type: ignore[no-any-return]
            args.seeds, _identity, service=args.service, interval=args.interval, timeout=args.timeout, close_delay=0
        )
    return module.Publisher(  # type: ignore[no-any-return]
        args.path,
        _identity,
        hosts=args.hosts,
        session_timeout=args.session_timeout,
        timeout=args.timeout,
        close_delay=0,
    )


def _where(args: argparse.Namespace) -> str:
    source = args.source
    if source == "dns":
        return f"{args.name} at {args.server}" if args.server else str(args.name)
    if source == "etcd":
        return f"{args.prefix} at {args.endpoints}"
    if source == "zookeeper":
        return f"{args.path} at {args.hosts}"
    if source == "consul":
        return f"service {args.service!r} at {args.address or 'the Consul agent'}"
    if source == "kubernetes":
        return f"service {args.service}" + (f" in namespace {args.namespace}" if args.namespace else "")
    if source == "mdns":
        return f"{', '.join(getattr(args, 'types', None) or [args.type])} on the local network"
    if source == "eureka":
        return f"{args.app} at {args.urls}"
    if source == "http":
        return " ".join(args.seeds)
    return "the static list"


# -- actions --------------------------------------------------------------------------------


def resolve(args: argparse.Namespace, printer: _Printer) -> int:
    with make_publisher(args) as publisher:
        endpoints = publisher.refresh()
        if endpoints.error is not None:
            raise Failure(f"cannot read {_where(args)}: {_reason(endpoints.error)}")
        printer.instances(endpoints.instances)
        if not endpoints and not printer.json:
            print(f"{PROG}: no instances at {_where(args)}", file=sys.stderr)
    return 0


def watch(args: argparse.Namespace, printer: _Printer, stop: threading.Event) -> int:
    updates: queue.SimpleQueue[EndpointSet[Any]] = queue.SimpleQueue()
    watcher = _Watcher(printer)
    publisher = make_publisher(args)
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


def register(args: argparse.Namespace, printer: _Printer, stop: threading.Event) -> int:
    try:
        instance = parse_instance(
            args.instance,
            **({"weight": args.weight} if args.weight is not None else {}),
            **({"priority": args.priority} if args.priority is not None else {}),
            tags=tuple(args.tags),
            metadata=dict(args.metadata),
        )
    except InvalidInstanceError as error:
        raise UsageError(str(error)) from None
    module = _import(args.source)
    try:
        if args.source == "etcd":
            registrar = module.Registrar(
                args.prefix, instance, endpoints=args.endpoints, ttl=args.ttl, timeout=args.timeout
            )
        elif args.source == "consul":
            registrar = module.Registrar(
                args.service, instance, address=args.address, token=args.token, datacenter=args.dc, ttl=args.ttl,
                timeout=args.timeout,
            )  # fmt: skip
        elif args.source == "mdns":
            registrar = module.Registrar(args.type, instance, name=args.name, ttl=args.ttl, interfaces=args.interfaces)
        elif args.source == "eureka":
            registrar = module.Registrar(
                args.app, instance, urls=args.urls, ttl=args.ttl, instance_id=args.instance_id, timeout=args.timeout
            )
        else:
            registrar = module.Registrar(
                args.path, instance, hosts=args.hosts, session_timeout=args.session_timeout, timeout=args.timeout
            )
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        try:
            registrar.register()
        except DiscoveryError as error:
            reason = _reason(error)
            if not reason.startswith("cannot register"):
                reason = f"cannot register {instance} under {_where(args)}: {reason}"
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


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["proxy"]:
        return _proxy(argv[1:])
    parser = build_parser()
    reason = _cannot_register(argv)
    if reason is not None:
        _error(reason)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    printer = _Printer(sys.stdout, args.json, ranked=args.source == "dns")
    stop = threading.Event()
    try:
        with _logging(args.verbose), _sigterm_stops(stop):
            if args.action == "resolve":
                return resolve(args, printer)
            if args.action == "watch":
                return watch(args, printer, stop)
            return register(args, printer, stop)
    except KeyboardInterrupt:
        return 130  # interrupted before the command could finish
    except UsageError as error:
        _error(str(error))
        return 2
    except Failure as error:
        _error(str(error))
        return 1
    except DiscoveryError as error:
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
