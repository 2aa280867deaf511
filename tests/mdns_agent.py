"""Runs ``loadbalancer.mdns`` inside a test's network namespace and reports on stdout, one JSON document a line.

    python -m tests.mdns_agent watch TYPE [TYPE ...] [--name N] [--recheck S] [--tag T]
        {"set": [instance documents], "stale": false, "t": monotonic} on every change of the set
    python -m tests.mdns_agent register TYPE HOST:PORT --name N [--ttl S] [--meta K=V] [--tag T]
        {"registered": "full name", "t": ...}; stdin closing or SIGTERM: deregister, {"deregistered": ...}
        (--exit-without-close: just exit, the library withdraws it at interpreter exit)
    python -m tests.mdns_agent services | discover TYPE [--tag T]
        one document with the registry's answer

Library events (``mdns_*``, ``endpoints_updated``, ...) are reported as {"log": event, ...fields}.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from typing import Any

from loadbalancer import EndpointSet, Instance, mdns

_lock = threading.Lock()


def say(**document: Any) -> None:
    with _lock:
        sys.stdout.write(json.dumps({**document, "t": time.monotonic()}, default=str) + "\n")
        sys.stdout.flush()


def doc(instance: Instance) -> dict[str, Any]:
    return {
        "address": instance.address,
        "port": instance.port,
        "weight": instance.weight,
        "priority": instance.priority,
        "tags": list(instance.tags),
        "metadata": dict(instance.metadata),
    }


class _Events(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if event:
            fields = {k: v for k, v in vars(record).items() if k in _FIELDS}
            say(log=event, level=record.levelname, **fields)


_FIELDS = {"instance_name", "requested", "registered", "reason", "error", "service"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["watch", "register", "services", "discover"])
    parser.add_argument("args", nargs="*")
    parser.add_argument("--name")
    parser.add_argument("--recheck", type=float, default=10.0)
    parser.add_argument("--ttl", type=float, default=120.0)
    parser.add_argument("--meta", action="append", default=[])
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--exit-without-close", action="store_true", help="leave the goodbye to interpreter exit")
    args = parser.parse_args()
    logger = logging.getLogger("loadbalancer")
    logger.setLevel(logging.INFO)
    logger.addHandler(_Events())

    if args.action == "watch":
        publisher: mdns.Publisher[Instance] = mdns.Publisher(args.args, name=args.name, interval=args.recheck)

        def show(endpoints: EndpointSet[Instance]) -> None:
            say(set=[doc(i) for i in endpoints.instances], stale=endpoints.stale)

        with publisher, publisher.subscribe(show):
            sys.stdin.read()  # until the test closes stdin or stops the process
        return 0

    if args.action == "register":
        service_type, address = args.args
        instance = Instance.parse(address)
        instance = Instance(
            instance.host, instance.port, tags=tuple(args.tag), metadata=dict(m.split("=", 1) for m in args.meta)
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        registrar = mdns.Registrar(service_type, instance, name=args.name, ttl=args.ttl)
        registrar.register()
        say(registered=registrar.key)
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        stop.wait()
        if args.exit_without_close:
            say(exiting=registrar.key)
            return 0
        key = registrar.key
        registrar.close()
        say(deregistered=key)
        return 0

    with mdns.Registry(settle=2.0) as registry:
        if args.action == "services":
            say(services=registry.list_services())
        else:
            say(instances=[doc(i) for i in registry.discover(args.args[0], tags=args.tag or None)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
