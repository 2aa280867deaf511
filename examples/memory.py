"""An in-process service registry: instances register with TTL leases, a client follows the tagged ones.

Run it with ``python examples/memory.py``; it needs nothing outside this process. The same
calls work on etcd (``etcd.Registry``), ZooKeeper (``zookeeper.Registry``) and the other
registries: they all stand on ``loadbalancer.backend``.
"""

from __future__ import annotations

import time

from loadbalancer import Instance, Retry, RoundRobin, memory


class Client:
    """The endpoint for one instance (here it answers by itself; it would hold a connection pool)."""

    def __init__(self, instance: Instance) -> None:  # annotated Instance: it gets the whole Instance
        self.instance = instance

    def __call__(self, request: str) -> str:
        return f"{self.instance.address} (zone {self.instance.metadata.get('zone', '?')}) answers {request!r}"

    def close(self) -> None:
        print(f"  closed the client of {self.instance.address}")


def main() -> None:
    backend = memory.Backend()
    with memory.Registry(backend) as registry:
        registry.register("api", Instance("127.0.0.1", 9001, tags=("v2",), metadata={"zone": "a"}))
        registry.register("api", Instance("127.0.0.1", 9002, tags=("v2",), metadata={"zone": "b"}))
        registry.register("api", Instance("127.0.0.1", 9003, tags=("v1",)))  # an old version: not for us
        print("services:", registry.list_services())
        print("api, v2:", [str(i) for i in registry.discover("api", tags=["v2"])])

        publisher = registry.watch("api", Client, tags=["v2"], close_delay=0)
        call = Retry(3, 2.0, RoundRobin(publisher))
        for n in range(4):
            print(" ", call(f"request {n}"))

        # A registration lives under a TTL lease that its registrar renews; closing it
        # deregisters at once (a process that dies instead drops out when its lease runs out).
        with memory.Registrar(backend, "api", Instance("127.0.0.1", 9004, tags=("v2",)), ttl=0.5) as registrar:
            while len(publisher.endpoints()) < 3:
                time.sleep(0.01)
            print("joined, and kept past its TTL:", end=" ")
            while registrar.renewals < 3:  # renewed every half TTL: three renewals outlast the TTL
                time.sleep(0.01)
            print([str(i) for i in publisher.endpoints().instances])
        while len(publisher.endpoints()) > 2:
            time.sleep(0.01)
        print("left ->", [str(i) for i in publisher.endpoints().instances])
        publisher.close()


if __name__ == "__main__":
    main()
