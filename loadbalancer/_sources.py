"""The command line's first source syntax (``resolve dns NAME --server IP``), read as the target it stands for.

``loadbalancer resolve dns NAME --server 10.0.0.53`` now reads ``loadbalancer resolve
dns://10.0.0.53/NAME``; the proxy's ``--source dns:NAME --source-option='--server ...'``
likewise. ``parse_source(action, argv)`` reads the old form and returns the target and the
keyword options it stands for.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ._arguments import seconds
from .errors import InvalidTargetError

__all__ = ["REGISTERING", "SOURCES", "Legacy", "parse_source"]


@dataclass(frozen=True)
class Legacy:
    """What an old-style source stands for: a target and the keyword options that go with it."""

    target: str
    options: dict[str, Any]


def _dns(p: argparse.ArgumentParser, registering: bool) -> None:
    p.add_argument("name")
    p.add_argument("--server", metavar="IP[:PORT]")
    p.add_argument("--ttl", type=seconds, metavar="SECONDS")


def _dns_target(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    return f"dns://{a.server or ''}/{a.name}", {"interval": a.ttl}


def _etcd(p: argparse.ArgumentParser, registering: bool) -> None:
    p.add_argument("prefix")
    p.add_argument("--endpoints", default="http://127.0.0.1:2379")
    if registering:
        p.add_argument("--ttl", type=seconds, metavar="SECONDS")


def _etcd_target(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    return f"etcd://{_slashed(a.prefix)}", {"endpoints": a.endpoints, "ttl": getattr(a, "ttl", None)}


def _zookeeper(p: argparse.ArgumentParser, registering: bool) -> None:
    p.add_argument("path")
    p.add_argument("--hosts", default="127.0.0.1:2181")
    p.add_argument("--session-timeout", type=seconds, metavar="SECONDS")


def _zookeeper_target(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    return f"zk://{_slashed(a.path)}", {"endpoints": a.hosts, "session_timeout": a.session_timeout}


def _consul(p: argparse.ArgumentParser, registering: bool) -> None:
    p.add_argument("service")
    p.add_argument("--address")
    p.add_argument("--token")
    p.add_argument("--dc")
    if registering:
        p.add_argument("--ttl", type=seconds, metavar="SECONDS")
    else:
        p.add_argument("--tag", dest="tags", action="append", default=[])


def _consul_target(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    options = {"endpoints": a.address, "token": a.token, "datacenter": a.dc, "ttl": getattr(a, "ttl", None)}
    return f"consul:///{a.service}", {**options, "tags": getattr(a, "tags", None) or None}


def _mdns(p: argparse.ArgumentParser, registering: bool) -> None:
    p.add_argument("types", nargs=1 if registering else "+")
    p.add_argument("--name")
    p.add_argument("--ttl" if registering else "--settle", type=seconds, metavar="SECONDS")
    p.add_argument("--interfaces")


def _mdns_target(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    options = {"name": a.name, "interfaces": a.interfaces}
    options.update({"ttl": a.ttl} if "ttl" in a else {"settle": a.settle})
    return f"mdns:///{','.join(a.types)}", options


def _eureka(p: argparse.ArgumentParser, registering: bool) -> None:
    p.add_argument("app")
    p.add_argument("--urls", default="http://127.0.0.1:8761/eureka/")
    if registering:
        p.add_argument("--ttl", type=seconds, metavar="SECONDS")
        p.add_argument("--instance-id")
    else:
        p.add_argument("--interval", type=seconds, metavar="SECONDS")


def _eureka_target(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    extra = {"ttl": a.ttl, "instance_id": a.instance_id} if "ttl" in a else {"interval": a.interval}
    return f"eureka:///eureka/{a.app}", {"endpoints": a.urls, **extra}


def _http(p: argparse.ArgumentParser, registering: bool) -> None:
    p.add_argument("seeds", nargs="+")
    p.add_argument("--service")
    p.add_argument("--interval", type=seconds, metavar="SECONDS")


def _http_target(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    first = a.seeds[0]
    if not first.startswith(("http://", "https://")):
        raise InvalidTargetError(first, "a seed is an http:// or https:// URL")
    options = {"endpoints": a.seeds if len(a.seeds) > 1 else None, "service": a.service, "interval": a.interval}
    return f"httppoll+{first}", options


def _static(p: argparse.ArgumentParser, registering: bool) -> None:
    p.add_argument("instances", nargs="+")


def _static_target(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    return f"static:///{','.join(a.instances)}", {}


def _kubernetes(p: argparse.ArgumentParser, registering: bool) -> None:
    p.add_argument("service")
    p.add_argument("--namespace", "-n")
    p.add_argument("--port")
    p.add_argument("--selector", "-l", dest="label_selector")
    p.add_argument("--accept", choices=("ready", "serving", "all"))
    p.add_argument("--kubeconfig")
    p.add_argument("--context")


def _kubernetes_target(a: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    port = f":{a.port}" if a.port else ""
    namespace = f".{a.namespace}" if a.namespace else ""
    options = {"label_selector": a.label_selector, "accept": a.accept, "kubeconfig": a.kubeconfig, "context": a.context}
    return f"k8s:///{a.service}{namespace}{port}", options


def _slashed(path: str) -> str:
    return path if path.startswith("/") else f"/{path}"  # a relative path is refused by the backend, named


Define = Callable[[argparse.ArgumentParser, bool], None]
Translate = Callable[[argparse.Namespace], tuple[str, dict[str, Any]]]

SOURCES: dict[str, tuple[Define, Translate]] = {
    "dns": (_dns, _dns_target),
    "etcd": (_etcd, _etcd_target),
    "zookeeper": (_zookeeper, _zookeeper_target),
    "consul": (_consul, _consul_target),
    "mdns": (_mdns, _mdns_target),
    "static": (_static, _static_target),
    "kubernetes": (_kubernetes, _kubernetes_target),
    "eureka": (_eureka, _eureka_target),
    "http": (_http, _http_target),
}
REGISTERING = ("etcd", "zookeeper", "consul", "mdns", "eureka")


class _Parser(argparse.ArgumentParser):
    """A parser whose errors are raised as they are, without its usage line or its ``prog: error:``."""

    def error(self, message: str) -> NoReturn:
        missing = message.partition("the following arguments are required: ")[2]
        raise argparse.ArgumentError(None, f"missing {missing}" if missing else message)


def parse_source(action: str, argv: Sequence[str]) -> tuple[Legacy, list[str]]:
    """Read ``SOURCE ARG... [--source-options]`` of ``action``; return it and the arguments it left."""
    name, *rest = argv
    define, translate = SOURCES[name]
    parser = _Parser(prog=f"loadbalancer {action} {name}", add_help=False, exit_on_error=False)
    define(parser, action == "register")
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args, left = parser.parse_known_args(rest)
    except (argparse.ArgumentError, SystemExit) as error:
        reason = str(error) if isinstance(error, argparse.ArgumentError) else errors.getvalue().strip()
        last = reason.splitlines()[-1] if reason else "not as the source takes it"
        raise InvalidTargetError(" ".join(argv), last) from None
    target, options = translate(args)
    return Legacy(target, {key: value for key, value in options.items() if value is not None}), left
