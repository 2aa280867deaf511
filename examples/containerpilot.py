"""go-piloted in Python: an application asks ContainerPilot's Consul for its backends.

A ContainerPilot 3 configuration (JSON5, rendered as a template first) declares the
backends the application depends on as ``watches``; ``piloted.config()`` reads it (the path,
or ``$CONTAINERPILOT``) and ``piloted.service(name)`` hands out one endpoint at a time,
round robin, as go-piloted's ``Config`` and ``Service`` do:

    Go (go-piloted)                            Python (loadbalancer.piloted)
    err := piloted.Config("")                  piloted.config("")
    ep, err := piloted.Service("db")           ep = piloted.service("db")
    addr := fmt.Sprintf("%s:%d", ep.Address, ep.Port)   addr = f"{ep.address}:{ep.port}"

Run it with ``--throwaway`` to start the Consul API test server of this repository on a
free loopback port, or with ``--consul host:port`` against a Consul agent (it registers two
``db`` instances there and removes them at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from loadbalancer import consul, piloted

CONFIG = """{
  consul: "{{ .CONSUL | default "localhost:8500" }}",
  jobs: [{name: "app", exec: "python app.py"}],
  watches: [
    {name: "db", interval: {{ .DB_POLL | default "5" }}},
    {name: "cache", interval: 5, tag: "primary"},
  ],
}
"""


@contextlib.contextmanager
def agent(args: argparse.Namespace) -> Iterator[str]:
    if not args.throwaway:
        yield args.consul
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/consul_fixtures.py
    from tests.consul_fixtures import ConsulServer

    with ConsulServer() as server:
        yield f"127.0.0.1:{server.port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--consul", default="localhost:8500", help="the Consul agent, host:port")
    parser.add_argument("--throwaway", action="store_true", help="start the Consul API test server on loopback")
    args = parser.parse_args()

    with agent(args) as address, tempfile.TemporaryDirectory() as directory:
        db = [consul.Registrar("db", f"127.0.0.1:{port}", endpoints=address, ttl=5) for port in (5432, 5433)]
        for registrar in db:
            registrar.register()
        path = Path(directory) / "containerpilot.json5"
        path.write_text(CONFIG)
        os.environ.update(CONTAINERPILOT=str(path), CONSUL=address)

        piloted.config("")  # "" -> $CONTAINERPILOT, as in go-piloted
        for _ in range(3):
            ep = piloted.service("db")
            print(f"db -> {ep.address}:{ep.port}")
        try:
            piloted.service("cache")
        except piloted.NoHealthyInstanceError as error:
            print(f"cache -> {type(error).__name__}: {error}")
        try:
            piloted.service("search")
        except piloted.ServiceNotConfiguredError as error:
            print(f"search -> {type(error).__name__}: {error}")

        print("one db instance leaves; SIGHUP refreshes every backend at once")
        db[0].close()
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.2)  # the demo lets the refresh start; service() waits for it to finish
        print(f"db -> {piloted.service('db')}")
        db[1].close()


if __name__ == "__main__":
    main()
