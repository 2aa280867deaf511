"""``loadbalancer proxy``: goaround's flags, a supervisor with worker processes sharing the port."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import socket
import ssl
import sys
from collections.abc import Sequence

from ._upstream import parse_backend_url

__all__ = ["build_parser", "main"]

DEFAULT_SOCKET = "/tmp/goaround.sock"  # goaround's fixed path


def _positive_int(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _count(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def _url(text: str) -> str:
    try:
        parse_backend_url(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.strip()


def _source(text: str) -> str:
    _name, sep, rest = text.partition(":")
    if not sep or not rest:
        raise argparse.ArgumentTypeError(f"{text!r}: give SOURCE:ARGUMENT, such as dns:_api._tcp.example.")
    return text


def build_parser() -> argparse.ArgumentParser:
    """goaround's single-dash flags, each with a ``--long`` spelling, and the proxy's own options."""
    parser = argparse.ArgumentParser(
        prog="loadbalancer proxy",
        description="An HTTP load-balancing proxy (goaround's flags): balances requests over backends given"
        " with -b or found by a discovery source, with health checks, outlier ejection, a response cache"
        " and Prometheus metrics.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("-p", "--port", type=_port, default=3000, help="the port to listen on (default: 3000)")
    add("--bind", default="0.0.0.0", metavar="ADDRESS", help="the address to listen on (default: all)")
    add(
        "-b", "--backend", dest="backends", action="append", type=_url, default=[], metavar="URL",
        help="a backend, http://HOST:PORT (repeatable; or a comma-separated list)",
    )  # fmt: skip
    add(
        "-n", "--connections", type=_positive_int, metavar="N",
        help="at most N concurrent connections per backend, shared out between the workers (no more workers"
        " than N); more requests wait in turn, then get 503 (default: no limit)",
    )  # fmt: skip
    add("-cacert", "--cacert", metavar="FILE", help="the server certificate (PEM) for TLS; needs -privkey")
    add("-privkey", "--privkey", metavar="FILE", help="the private key (PEM) of -cacert")
    add("-cache", "--cache", action="store_true", help="cache GET/HEAD answers as Cache-Control and Expires allow")
    add("--cache-size", type=_positive_int, default=64 << 20, metavar="BYTES", help="cache bound (default: 64 MiB)")
    add(
        "--cache-ttl", type=_seconds, metavar="SECONDS",
        help="keep answers that say nothing about caching this long (default: do not store them)",
    )  # fmt: skip
    add(
        "-prometheus-port", "--prometheus-port", type=_port, default=8080, metavar="PORT",
        help="serve Prometheus metrics on /metrics at this port (default: 8080; 0: none)",
    )  # fmt: skip
    add(
        "--source", type=_source, metavar="SOURCE:ARG",
        help="find backends with a discovery source instead of -b: dns:_api._tcp.example., etcd:/services/api,"
        " zookeeper:/services/api, consul:api, kubernetes:api, mdns:_http._tcp, eureka:APP, http:SEEDS",
    )  # fmt: skip
    add(
        "--source-option", dest="source_options", action="append", default=[], metavar="OPTION",
        help="an option of the source, as 'loadbalancer watch SOURCE --help' lists it (repeatable),"
        " such as --source-option='--endpoints http://10.0.0.1:2379'",
    )  # fmt: skip
    add("--balancer", choices=["round-robin", "peak-ewma", "least-loaded", "weighted", "random"],
        default="round-robin", help="how to pick a backend (default: round-robin)")  # fmt: skip
    add("--health-path", default="/health", metavar="PATH",
        help="checked on each backend: healthy on 200 or a body {\"state\": \"healthy\"} (default: /health;"
        " 'none': no checks)")  # fmt: skip
    add("--health-interval", type=_seconds, default=10.0, metavar="SECONDS", help="between checks (default: 10)")
    add("--eject-after", type=_count, default=5, metavar="N",
        help="eject a backend for a while after N failures in a row (default: 5; 0: never)")  # fmt: skip
    add("--retries", type=_count, default=2, metavar="N",
        help="try up to N other backends after a failed connect, or for an idempotent request after a"
        " failed or 502/503/504/429 answer (default: 2)")  # fmt: skip
    add("--timeout", type=_seconds, default=30.0, metavar="SECONDS",
        help="wait this long for a backend's answer to begin, then 504 (default: 30)")  # fmt: skip
    add("--connect-timeout", type=_seconds, default=2.0, metavar="SECONDS", help="per connect (default: 2)")
    add("--queue-timeout", type=_seconds, default=5.0, metavar="SECONDS",
        help="how long a request waits for a connection under -n before 503 (default: 5)")  # fmt: skip
    add("--keepalive-timeout", type=_seconds, default=75.0, metavar="SECONDS",
        help="close an idle client connection after this long (default: 75)")  # fmt: skip
    add("--socket", default=DEFAULT_SOCKET, metavar="PATH",
        help="the admin socket: write a comma-separated list of URLs to replace the backends"
        f" (default: {DEFAULT_SOCKET}; 'none': no socket)")  # fmt: skip
    add("--workers", type=_positive_int, default=os.cpu_count() or 1, metavar="N",
        help="worker processes sharing the port (default: the number of cores)")  # fmt: skip
    add("--shutdown-timeout", type=_seconds, default=10.0, metavar="SECONDS",
        help="on SIGTERM, finish requests in flight for at most this long (default: 10)")  # fmt: skip
    add("-v", "--verbose", action="count", default=0, help="log events to stderr (-vv: more)")
    return parser


class UsageError(Exception):
    pass


def _split_backends(values: Sequence[str]) -> list[str]:
    urls: list[str] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                parse_backend_url(part)
                urls.append(part.strip())
    return urls


def source_args(spec: str, options: Sequence[str]) -> argparse.Namespace:
    """The ``loadbalancer watch`` arguments for ``--source NAME:ARG`` and its ``--source-option``s."""
    from .. import cli

    name, _, argument = spec.partition(":")
    argv = ["watch", name, argument]
    for option in options:
        argv += shlex.split(option)
    parser = cli.build_parser()
    with contextlib.redirect_stderr(sys.stderr):
        try:
            return parser.parse_args(argv)
        except SystemExit:
            raise UsageError(
                f"--source {spec!r} {' '.join(options)}: not a source the toolkit knows as given"
            ) from None


def check(args: argparse.Namespace) -> None:
    """Refuse, naming the value, what cannot work."""
    args.backends = _split_backends(args.backends)
    if args.source is None and not args.backends:
        raise UsageError("give at least one backend with -b URL, or --source")
    if args.source is not None and args.backends:
        raise UsageError("give backends with -b or with --source, not both")
    if bool(args.cacert) != bool(args.privkey):
        raise UsageError("-cacert and -privkey go together")
    if args.cacert:
        server_ssl(args)  # a readable certificate and key, now rather than in each worker
    if args.health_path != "none" and not args.health_path.startswith("/"):
        raise UsageError(f"--health-path {args.health_path!r}: give an absolute path such as /health, or 'none'")
    if args.source is not None:
        args.source_namespace = source_args(args.source, args.source_options)


def server_ssl(args: argparse.Namespace) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.cacert, args.privkey)
    except (OSError, ssl.SSLError) as error:
        raise UsageError(f"-cacert {args.cacert!r} -privkey {args.privkey!r}: {error}") from None
    context.set_alpn_protocols(["h2", "http/1.1"])  # HTTP/2 when the client offers it
    return context


def listening_socket(host: str, port: int, *, listen: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(1024)
        sock.setblocking(False)
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loadbalancer proxy`` with ``argv``; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        check(args)
    except (UsageError, ValueError) as error:
        print(f"loadbalancer proxy: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(process)d %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    from ._supervisor import supervise

    try:
        return supervise(args)
    except KeyboardInterrupt:
        return 130
