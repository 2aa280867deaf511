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

from ._limits import Limits
from ._upstream import parse_backend_url

__all__ = ["build_parser", "main"]

DEFAULT_SOCKET = "/tmp/goaround.sock"  # goaround's fixed path
DEFAULTS = Limits()


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


def _size(text: str) -> int:
    """Bytes: a whole number, or with k or m (KiB, MiB): ``32k``."""
    number, scale = text.strip().lower(), 1
    if number[-1:] in ("k", "m"):
        number, scale = number[:-1], 1024 if number[-1] == "k" else 1024 * 1024
    if not number.isascii() or not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size in bytes (such as 65536, 64k or 1m)")
    return int(number) * scale


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal file mode such as 0600") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a file mode (0000-0777)")
    return mode


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage from 0 to 100")
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
    add("--connect-timeout", type=_seconds, default=2.0, metavar="SECONDS", help="per connect (default: 2)")
    add("--queue-timeout", type=_seconds, default=5.0, metavar="SECONDS",
        help="how long a request waits for a connection under -n before 503 (default: 5)")  # fmt: skip
    add("--health-unhealthy-interval", type=_seconds, default=1.0, metavar="SECONDS",
        help="between checks of a backend that is down, so that it serves again soon after it is back"
        " (default: 1)")  # fmt: skip
    add("--panic-threshold", type=_percent, metavar="PERCENT",
        help="when fewer than this share of the backends is healthy, send to all of them anyway, as Envoy's"
        " healthy_panic_threshold does; 0: never, answer 503 (default: only when none is healthy)")  # fmt: skip
    group = parser.add_argument_group(
        "limits", "what one client can cost the proxy: every wait ends, every buffer is bounded"
    )
    bound = group.add_argument
    bound("--timeout", type=_seconds, default=DEFAULTS.timeout, metavar="SECONDS",
          help="from the end of the request, wait this long for the backend's answer to begin, then 504"
          f" (default: {DEFAULTS.timeout:g})")  # fmt: skip
    bound("--read-timeout", type=_seconds, default=DEFAULTS.read_timeout, metavar="SECONDS",
          help="a backend that sends nothing (after its answer's head), or takes none of the body, for this long"
          f" is given up on; also the idle limit of a WebSocket (default: {DEFAULTS.read_timeout:g})")  # fmt: skip
    bound("--header-timeout", type=_seconds, default=DEFAULTS.header_timeout, metavar="SECONDS",
          help="the whole request head must arrive within this, else 408 and close"
          f" (default: {DEFAULTS.header_timeout:g})")  # fmt: skip
    bound("--body-timeout", type=_seconds, default=DEFAULTS.body_timeout, metavar="SECONDS",
          help="between two reads of a request body, else 408 (or the connection closes)"
          f" (default: {DEFAULTS.body_timeout:g})")  # fmt: skip
    bound("--send-timeout", type=_seconds, default=DEFAULTS.send_timeout, metavar="SECONDS",
          help="a client that takes none of its answer for this long is closed and the backend connection"
          f" released (default: {DEFAULTS.send_timeout:g})")  # fmt: skip
    bound(
        "--keepalive-timeout",
        type=_seconds,
        default=DEFAULTS.keepalive_timeout,
        metavar="SECONDS",
        help=f"close an idle client connection after this long (default: {DEFAULTS.keepalive_timeout:g})",
    )
    bound("--max-header-size", type=_size, default=DEFAULTS.max_header_size, metavar="BYTES",
          help="the largest request head: a request line over it is answered 414, a head over it 431"
          f" (default: {DEFAULTS.max_header_size // 1024}k)")  # fmt: skip
    bound(
        "--max-headers",
        type=_positive_int,
        default=DEFAULTS.max_headers,
        metavar="N",
        help=f"header fields in one request, else 431 (default: {DEFAULTS.max_headers})",
    )
    bound("--max-connections", type=_positive_int, metavar="N",
          help="client connections per worker; past it the one longest in its head is shed (then the longest"
          f" idle), else the newcomer gets 503 (default: {DEFAULTS.max_connections:,}, or what the open-files"
          " limit allows at two descriptors a connection)")  # fmt: skip
    bound("--buffer-size", type=_size, default=DEFAULTS.buffer_size, metavar="BYTES",
          help="bytes held for one direction of a connection before its sender is paused"
          f" (default: {DEFAULTS.buffer_size // 1024}k)")  # fmt: skip
    bound("--h2-max-streams", type=_positive_int, default=DEFAULTS.h2_max_streams, metavar="N",
          help="concurrent HTTP/2 streams per connection; more are refused one by one"
          f" (default: {DEFAULTS.h2_max_streams})")  # fmt: skip
    add("--socket", default=DEFAULT_SOCKET, metavar="PATH",
        help="the admin socket: write a comma-separated list of URLs and a newline to replace the backends"
        f" (default: {DEFAULT_SOCKET}; 'none': no socket)")  # fmt: skip
    add(
        "--socket-mode",
        type=_mode,
        default=0o600,
        metavar="MODE",
        help="the admin socket's file mode, whatever the umask (default: 0600: its owner only)",
    )
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


def limits(args: argparse.Namespace, max_connections: int) -> Limits:
    """The ``Limits`` the flags ask for."""
    return Limits(
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        send_timeout=args.send_timeout,
        read_timeout=args.read_timeout,
        timeout=args.timeout,
        keepalive_timeout=args.keepalive_timeout,
        max_header_size=args.max_header_size,
        max_headers=args.max_headers,
        max_connections=max_connections,
        buffer_size=args.buffer_size,
        h2_max_streams=args.h2_max_streams,
    )


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def claim_port(host: str, port: int) -> socket.socket:
    """Hold ``host:port`` for this proxy's workers alone; ``OSError`` (EADDRINUSE) if anything listens there.

    A probe bound without ``SO_REUSEPORT`` fails if any socket is bound to the address, a
    running proxy's included, where a ``SO_REUSEPORT`` socket would silently join it and take
    part of its traffic. The holder, bound next with ``SO_REUSEPORT`` only, keeps the port
    while the workers (same user, ``SO_REUSEPORT``) listen beside it, and makes the probe of
    any later proxy fail: a socket bound without ``SO_REUSEADDR`` conflicts with it.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        probe.bind((host, port))
        port = probe.getsockname()[1]
    holder = socket.socket(_family(host), socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError:
        holder.close()
        raise
    return holder


def listening_socket(host: str, port: int) -> socket.socket:
    """A worker's own listening socket on the port its supervisor holds (the kernel spreads connections)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
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
