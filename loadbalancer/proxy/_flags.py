"""The proxy's flags: goaround's, each with a ``--long`` spelling, and the proxy's own; and their checks."""

from __future__ import annotations

import argparse
import os
import shlex
import ssl
import sys
from collections.abc import Sequence
from typing import Any

from .. import _sources as _legacy
from .. import targets
from .._arguments import positive, seconds, whole
from ..errors import InvalidTargetError
from ._limits import Limits
from ._upstream import parse_backend_url

__all__ = ["DEFAULT_SOCKET", "UsageError", "build_parser", "check", "limits", "server_ssl"]

DEFAULT_SOCKET = "/tmp/goaround.sock"  # goaround's fixed path
DEFAULTS = Limits()


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return int(text)


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
    """A backend URL (``http://HOST:PORT``, comma-separated ones), or a target naming where backends are found."""
    text = text.strip()
    if _is_target(text):
        return text
    for part in text.split(","):
        if part.strip():
            try:
                parse_backend_url(part)
            except ValueError as error:
                raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _is_target(text: str) -> bool:
    scheme = text.partition(":")[0].lower()
    return scheme not in ("http", "https") and scheme.isascii() and scheme[:1].isalpha() and ":" in text


def _source(text: str) -> str:
    _name, sep, rest = text.partition(":")
    if not sep or not rest:
        known = ", ".join(sorted(scheme.name for scheme in targets.schemes()))
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a target: give one such as dns:///_api._tcp.example. (schemes: {known})"
        )
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
    _goaround_flags(parser.add_argument)
    _discovery_flags(parser.add_argument)
    _limit_flags(parser)
    _process_flags(parser.add_argument)
    return parser


Add = Any  # argparse's add_argument


def _goaround_flags(add: Add) -> None:
    add("-p", "--port", type=_port, default=3000, help="the port to listen on (default: 3000)")
    add("--bind", default="0.0.0.0", metavar="ADDRESS", help="the address to listen on (default: all)")
    add(
        "-b", "--backend", dest="backends", action="append", type=_url, default=[], metavar="URL",
        help="a backend, http://HOST:PORT (repeatable; or a comma-separated list), or one target naming where"
        " the backends are found, as --source takes it",
    )  # fmt: skip
    add(
        "-n", "--connections", type=positive, metavar="N",
        help="at most N concurrent connections per backend, shared out between the workers (no more workers"
        " than N); more requests wait in turn, then get 503 (default: no limit)",
    )  # fmt: skip
    add("-cacert", "--cacert", metavar="FILE", help="the server certificate (PEM) for TLS; needs -privkey")
    add("-privkey", "--privkey", metavar="FILE", help="the private key (PEM) of -cacert")
    add("-cache", "--cache", action="store_true", help="cache GET/HEAD answers as Cache-Control and Expires allow")
    add("--cache-size", type=positive, default=64 << 20, metavar="BYTES", help="cache bound (default: 64 MiB)")
    add(
        "--cache-ttl", type=seconds, metavar="SECONDS",
        help="keep answers that say nothing about caching this long (default: do not store them)",
    )  # fmt: skip
    add(
        "-prometheus-port", "--prometheus-port", type=_port, default=8080, metavar="PORT",
        help="serve Prometheus metrics on /metrics at this port (default: 8080; 0: none)",
    )  # fmt: skip


def _discovery_flags(add: Add) -> None:
    add(
        "--source", type=_source, metavar="TARGET",
        help="find backends with a discovery source instead of -b, named by a target: dns:///_api._tcp.example.,"
        " etcd://10.0.0.1:2379/services/api, zk://10.0.0.1:2181/services/api, consul://127.0.0.1:8500/api,"
        " k8s:///api.default:http, mdns:///_http._tcp.local., eureka://10.0.0.1:8761/eureka/API, ..."
        " ('loadbalancer resolve --help' lists them all)",
    )  # fmt: skip
    add(
        "--source-option", dest="source_options", action="append", default=[], metavar="OPTION",
        help="deprecated, with the first --source syntax (SOURCE:ARG): an option of that source,"
        " such as --source-option='--endpoints http://10.0.0.1:2379'",
    )  # fmt: skip
    add("--balancer", choices=["round-robin", "peak-ewma", "least-loaded", "weighted", "random"],
        default="round-robin", help="how to pick a backend (default: round-robin)")  # fmt: skip
    add("--health-path", default="/health", metavar="PATH",
        help="checked on each backend: healthy on 200 or a body {\"state\": \"healthy\"} (default: /health;"
        " 'none': no checks)")  # fmt: skip
    add("--health-interval", type=seconds, default=10.0, metavar="SECONDS", help="between checks (default: 10)")
    add("--eject-after", type=whole, default=5, metavar="N",
        help="eject a backend for a while after N failures in a row (default: 5; 0: never)")  # fmt: skip
    add("--retries", type=whole, default=2, metavar="N",
        help="try up to N other backends after a failed connect, or for an idempotent request after a"
        " failed or 502/503/504/429 answer (default: 2)")  # fmt: skip
    add("--connect-timeout", type=seconds, default=2.0, metavar="SECONDS", help="per connect (default: 2)")
    add("--queue-timeout", type=seconds, default=5.0, metavar="SECONDS",
        help="how long a request waits for a connection under -n before 503 (default: 5)")  # fmt: skip
    add("--health-unhealthy-interval", type=seconds, default=1.0, metavar="SECONDS",
        help="between checks of a backend that is down, so that it serves again soon after it is back"
        " (default: 1)")  # fmt: skip
    add("--panic-threshold", type=_percent, metavar="PERCENT",
        help="when fewer than this share of the backends is healthy, send to all of them anyway, as Envoy's"
        " healthy_panic_threshold does; 0: never, answer 503 (default: only when none is healthy)")  # fmt: skip


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "limits", "what one client can cost the proxy: every wait ends, every buffer is bounded"
    )
    bound = group.add_argument
    bound("--timeout", type=seconds, default=DEFAULTS.timeout, metavar="SECONDS",
          help="from the end of the request, wait this long for the backend's answer to begin, then 504"
          f" (default: {DEFAULTS.timeout:g})")  # fmt: skip
    bound("--read-timeout", type=seconds, default=DEFAULTS.read_timeout, metavar="SECONDS",
          help="a backend that sends nothing (after its answer's head), or takes none of the body, for this long"
          f" is given up on; also the idle limit of a WebSocket (default: {DEFAULTS.read_timeout:g})")  # fmt: skip
    bound("--header-timeout", type=seconds, default=DEFAULTS.header_timeout, metavar="SECONDS",
          help="the whole request head must arrive within this, else 408 and close"
          f" (default: {DEFAULTS.header_timeout:g})")  # fmt: skip
    bound("--body-timeout", type=seconds, default=DEFAULTS.body_timeout, metavar="SECONDS",
          help="between two reads of a request body, else 408 (or the connection closes)"
          f" (default: {DEFAULTS.body_timeout:g})")  # fmt: skip
    bound("--send-timeout", type=seconds, default=DEFAULTS.send_timeout, metavar="SECONDS",
          help="a client that takes none of its answer for this long is closed and the backend connection"
          f" released (default: {DEFAULTS.send_timeout:g})")  # fmt: skip
    bound(
        "--keepalive-timeout",
        type=seconds,
        default=DEFAULTS.keepalive_timeout,
        metavar="SECONDS",
        help=f"close an idle client connection after this long (default: {DEFAULTS.keepalive_timeout:g})",
    )
    bound("--max-header-size", type=_size, default=DEFAULTS.max_header_size, metavar="BYTES",
          help="the largest request head: a request line over it is answered 414, a head over it 431"
          f" (default: {DEFAULTS.max_header_size // 1024}k)")  # fmt: skip
    bound(
        "--max-headers",
        type=positive,
        default=DEFAULTS.max_headers,
        metavar="N",
        help=f"header fields in one request, else 431 (default: {DEFAULTS.max_headers})",
    )
    bound("--max-connections", type=positive, metavar="N",
          help="client connections per worker; past it the one longest in its head is shed (then the longest"
          f" idle), else the newcomer gets 503 (default: {DEFAULTS.max_connections:,}, or what the open-files"
          " limit allows at two descriptors a connection)")  # fmt: skip
    bound("--buffer-size", type=_size, default=DEFAULTS.buffer_size, metavar="BYTES",
          help="bytes held for one direction of a connection before its sender is paused"
          f" (default: {DEFAULTS.buffer_size // 1024}k)")  # fmt: skip
    bound("--h2-max-streams", type=positive, default=DEFAULTS.h2_max_streams, metavar="N",
          help="concurrent HTTP/2 streams per connection; more are refused one by one"
          f" (default: {DEFAULTS.h2_max_streams})")  # fmt: skip


def _process_flags(add: Add) -> None:
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
    add("--workers", type=positive, default=os.cpu_count() or 1, metavar="N",
        help="worker processes sharing the port (default: the number of cores)")  # fmt: skip
    add("--shutdown-timeout", type=seconds, default=10.0, metavar="SECONDS",
        help="on SIGTERM, finish requests in flight for at most this long (default: 10)")  # fmt: skip
    add("-v", "--verbose", action="count", default=0, help="log events to stderr (-vv: more)")


class UsageError(Exception):
    pass


def _split_backends(values: Sequence[str]) -> list[str]:
    """URLs one by one (``-b a,b``); a target stays whole (``static:///a,b`` is one source)."""
    return [part.strip() for value in values for part in ([value] if _is_target(value) else value.split(","))
            if part.strip()]  # fmt: skip


def _target_of(args: argparse.Namespace) -> tuple[str, dict[str, Any]] | None:
    """The target the backends come from (``--source``, or ``-b TARGET``) and its options; ``None``: URLs."""
    targets_given = [value for value in args.backends if _is_target(value)]
    if targets_given and (len(args.backends) > 1 or args.source is not None):
        raise UsageError("a target names all the backends: give it alone (-b TARGET or --source TARGET)")
    spec = args.source if args.source is not None else (targets_given[0] if targets_given else None)
    if spec is None:
        return None
    if args.source_options or "//" not in spec.partition(":")[2][:2]:
        return _legacy_source(spec, args.source_options)
    return spec, {}


def _legacy_source(spec: str, options: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """``--source NAME:ARG`` with ``--source-option``s: the first syntax, read as the target it stands for."""
    name, _, argument = spec.partition(":")
    argv = [name, argument, *(word for option in options for word in shlex.split(option))]
    if name not in _legacy.SOURCES:
        if options:
            raise UsageError(f"--source-option goes with the first --source syntax (SOURCE:ARG), not {spec!r}")
        return spec, {}  # a target in gRPC's short form, such as dns:_api._tcp.example.
    try:
        legacy, left = _legacy.parse_source("watch", argv)
    except InvalidTargetError as error:
        raise UsageError(f"--source {spec!r} {' '.join(options)}: {error.reason}") from None
    if left:
        raise UsageError(f"--source {spec!r}: {' '.join(left)!r} is not an option of the {name} source")
    print(f"loadbalancer proxy: note: --source {name}:ARG is deprecated; write --source {legacy.target}",
          file=sys.stderr)  # fmt: skip
    return legacy.target, legacy.options


def _check_socket(path: str) -> None:
    """The admin socket's directory must be there: found now, not after the workers have started."""
    if path == "none":
        return
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(
            f"--socket {path!r}: the directory {directory} does not exist"
            " (create it, or give another --socket PATH; 'none': no admin socket)"
        )


def check(args: argparse.Namespace) -> None:
    """Refuse, naming the value, what cannot work."""
    args.backends = _split_backends(args.backends)
    if args.source is None and not args.backends:
        raise UsageError("give at least one backend with -b URL, or --source TARGET")
    if args.source is not None and args.backends and not any(_is_target(b) for b in args.backends):
        raise UsageError("give backends with -b or with --source, not both")
    found = _target_of(args)
    args.target, args.target_options = found if found is not None else (None, {})
    if args.target is not None:
        args.backends = []
        try:
            targets.check(args.target, **args.target_options)
        except (ValueError, ImportError) as error:
            flag = "--source" if args.source is not None else "-b"
            raise UsageError(f"argument {flag}: {error}") from None
    _check_socket(args.socket)
    if bool(args.cacert) != bool(args.privkey):
        raise UsageError("-cacert and -privkey go together")
    if args.cacert:
        server_ssl(args)  # a readable certificate and key, now rather than in each worker
    if args.health_path != "none" and not args.health_path.startswith("/"):
        raise UsageError(f"--health-path {args.health_path!r}: give an absolute path such as /health, or 'none'")


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
