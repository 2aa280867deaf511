"""The in-process registry on the backend protocol, and the generic publisher, registrar and facade."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from loadbalancer import Instance, RoundRobin, memory
from loadbalancer.backend import Backend, Batch, Change, CursorExpiredError, Listing, Publisher
from tests.helpers import Factory, events, eventually


def addresses(publisher: Any) -> list[str]:
    return [str(i) for i in publisher.endpoints().instances]


def test_register_discover_watch_and_deregister() -> None:
    with memory.Registry() as registry:
        a = registry.register("api", "10.0.0.1:80")
        registry.register("api", Instance("10.0.0.2", 80, tags=("blue",)))
        registry.register("db", "10.0.0.9:5432")
        assert [str(i) for i in registry.discover("api")] == ["10.0.0.1:80", "10.0.0.2:80"]
        assert [str(i) for i in registry.discover("api", tags=["blue"])] == ["10.0.0.2:80"]
        assert registry.list_services() == ["api", "db"]
        assert registry.health().healthy
        publisher = registry.watch("api")
        assert publisher.wait_ready(5)
        assert addresses(publisher) == ["10.0.0.1:80", "10.0.0.2:80"]
        endpoint = RoundRobin(publisher).endpoint()
        assert isinstance(endpoint, Instance)  # no factory: the instances themselves
        registry.register("api", "10.0.0.3:80")
        eventually(lambda: addresses(publisher) == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"])
        a.close()
        eventually(lambda: addresses(publisher) == ["10.0.0.2:80", "10.0.0.3:80"])
        registry.deregister("api", "10.0.0.2:80")
        eventually(lambda: addresses(publisher) == ["10.0.0.3:80"])
        assert registry.lookup("api") == Instance("10.0.0.3", 80)
        assert registry.lookup("nothing") is None
        publisher.close()


def test_ttl_leases_expire_unless_kept_alive() -> None:
    backend = memory.Backend()
    with memory.Registry(backend) as registry, registry.watch("api") as publisher:
        kept = memory.Registrar(backend, "api", "10.0.0.1:80", ttl=0.3)
        kept.register()
        # a registration whose keep-alive stops: its lease runs out
        lapsing = memory.Registrar(backend, "api", "10.0.0.2:80", ttl=0.3)
        lapsing.register()
        eventually(lambda: addresses(publisher) == ["10.0.0.1:80", "10.0.0.2:80"])
        assert lapsing._keeper is not None
        lapsing._keeper.get_loop().call_soon_threadsafe(lapsing._keeper.cancel)
        eventually(lambda: addresses(publisher) == ["10.0.0.1:80"], timeout=10)
        assert registry.discover("api") == [Instance("10.0.0.1", 80)]  # kept alive past its TTL
        kept.close()
        eventually(lambda: addresses(publisher) == [])


def test_tags_filter_and_factory_sees_the_instance() -> None:
    made: list[Instance] = []

    def factory(instance: Instance) -> str:  # annotated Instance: it receives the Instance
        made.append(instance)
        return f"client for {instance.address} zone={instance.metadata.get('zone')}"

    with memory.Registry() as registry:
        registry.register("api", Instance("10.0.0.1", 80, tags=("blue", "v2"), metadata={"zone": "a"}))
        registry.register("api", Instance("10.0.0.2", 80, tags=("green",)))
        with registry.watch("api", factory, tags=["blue"]) as publisher:
            assert publisher.wait_ready(5)
            assert list(publisher.endpoints()) == ["client for 10.0.0.1:80 zone=a"]
            assert made == [Instance("10.0.0.1", 80, tags=("blue", "v2"), metadata={"zone": "a"})]


def test_one_change_costs_one_factory_call_and_endpoints_are_reused() -> None:
    factory = Factory()
    with memory.Registry() as registry:
        for n in range(1, 51):
            registry.register("api", f"10.0.0.{n}:80")
        with registry.watch("api", factory, close_delay=0) as publisher:
            assert publisher.wait_ready(5)
            before = list(publisher.endpoints())
            registry.register("api", "10.0.1.1:80")
            eventually(lambda: len(publisher.endpoints()) == 51)
            after = list(publisher.endpoints())
            assert after[:50] == before
            assert sum(factory.calls.values()) == 51


def test_the_same_address_twice_is_one_endpoint_until_both_go() -> None:
    factory = Factory()
    with memory.Registry() as registry:
        first = registry.register("api", "10.0.0.1:80")
        with registry.watch("api", factory, close_delay=0) as publisher:
            assert publisher.wait_ready(5)
            second = registry.register("api", "10.0.0.1:80")
            registry.register("api", "10.0.0.2:80")
            eventually(lambda: addresses(publisher) == ["10.0.0.1:80", "10.0.0.2:80"])
            first.close()
            registry.register("api", "10.0.0.3:80")
            eventually(lambda: len(publisher.endpoints()) == 3)
            assert addresses(publisher) == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]  # the second key took over
            second.close()
            eventually(lambda: addresses(publisher) == ["10.0.0.2:80", "10.0.0.3:80"])
            assert factory.calls["10.0.0.1:80"] == 1


class Flaky(Backend):
    """A backend that fails while ``down`` is set, and whose cursor can expire."""

    name = "flaky"

    def __init__(self) -> None:
        self.down = threading.Event()
        self.instances: dict[Any, Instance] = {1: Instance("10.0.0.1", 80)}
        self.revision = 1
        self.lists = 0
        self.queue: asyncio.Queue[Batch | None] | None = None
        self.expire = False

    async def list(self, service: str) -> Listing:
        self.lists += 1
        if self.down.is_set():
            raise ConnectionRefusedError("registry down")
        return Listing(dict(self.instances), self.revision)

    async def watch(self, service: str, cursor: Any) -> Any:  # type: ignore[override]
        if self.expire:
            self.expire = False
            raise CursorExpiredError("compacted")
        if self.down.is_set():
            raise ConnectionRefusedError("registry down")
        self.queue = asyncio.Queue()
        yield Batch()  # established
        while True:
            batch = await self.queue.get()
            if batch is None:
                raise ConnectionResetError("watch broken")
            yield batch


def test_generic_publisher_keeps_stale_set_resumes_and_relists_on_expired_cursor() -> None:
    backend = Flaky()
    with Publisher(backend, "api", max_backoff=0.05) as publisher:
        assert publisher.wait_ready(5)
        eventually(lambda: backend.queue is not None)
        queue = backend.queue
        assert queue is not None
        from loadbalancer._runtime import RUNTIME

        RUNTIME.call_soon(queue.put_nowait, Batch([Change(2, Instance("10.0.0.2", 80))], 2))
        eventually(lambda: addresses(publisher) == ["10.0.0.1:80", "10.0.0.2:80"])
        assert publisher.cursor == 2
        lists = backend.lists
        backend.down.set()
        RUNTIME.call_soon(queue.put_nowait, None)  # the watch breaks; the registry is down
        eventually(lambda: publisher.endpoints().stale)
        assert addresses(publisher) == ["10.0.0.1:80", "10.0.0.2:80"]  # stale beats empty
        backend.down.clear()
        eventually(lambda: not publisher.endpoints().stale, timeout=10)
        assert backend.lists == lists  # resumed from the cursor, not listed again
        backend.expire = True
        RUNTIME.call_soon(backend.queue.put_nowait, None)  # type: ignore[union-attr]
        eventually(lambda: backend.lists == lists + 1, timeout=10)  # the cursor was gone: listed again


@pytest.mark.asyncio
async def test_async_registrar_and_registry() -> None:
    backend = memory.Backend()
    async with memory.Registry(backend) as registry:
        async with memory.Registrar(backend, "api", "10.0.0.1:80", ttl=5) as registrar:
            assert registrar.registered
            assert await registry.adiscover("api") == [Instance("10.0.0.1", 80)]
            assert await registry.alist_services() == ["api"]
        assert await registry.adiscover("api") == []
        await registry.aregister("api", "10.0.0.2:80")
        assert await registry.alookup("api") == Instance("10.0.0.2", 80)
    assert await memory.Registry(backend).adiscover("api") == []  # closing deregistered it


def test_a_lost_lease_is_registered_again(logs: pytest.LogCaptureFixture) -> None:
    backend = memory.Backend()
    with memory.Registry(backend) as registry, registry.watch("api") as publisher:
        registrar = registry.register("api", "10.0.0.1:80", ttl=0.3)
        eventually(lambda: addresses(publisher) == ["10.0.0.1:80"])
        lease = registrar._lease
        assert lease is not None
        from loadbalancer._runtime import RUNTIME

        RUNTIME.submit(backend.deregister(lease)).result()  # revoked behind the registrar's back
        eventually(lambda: addresses(publisher) == [])
        eventually(lambda: addresses(publisher) == ["10.0.0.1:80"], timeout=10)  # at its next keep-alive
        assert events(logs, "memory_lease_lost") and events(logs, "memory_reregistered")


class Refusing(memory.Backend):
    def __init__(self) -> None:
        super().__init__()
        self.refuse = False

    async def register(self, service: str, instance: Instance, ttl: float) -> Any:
        if self.refuse:
            raise ConnectionRefusedError("registry down")
        return await super().register(service, instance, ttl)

    async def deregister(self, lease: Any) -> None:
        if self.refuse:
            raise ConnectionRefusedError("registry down")
        await super().deregister(lease)


def test_register_and_deregister_raise_close_logs(logs: pytest.LogCaptureFixture) -> None:
    backend = Refusing()
    backend.refuse = True
    with pytest.raises(ConnectionRefusedError), memory.Registrar(backend, "api", "10.0.0.1:80"):
        pass
    registrar = memory.Registrar(backend, "api", "10.0.0.2:80")
    backend.refuse = False
    registrar.register()
    backend.refuse = True
    with pytest.raises(ConnectionRefusedError):
        registrar.deregister()
    assert events(logs, "memory_deregister_failed")[0].note == "it lapses with its lease (10s)"
    backend.refuse = False
    registrar.register()
    backend.refuse = True
    registrar.close()  # logged, not raised
    assert events(logs, "memory_close_incomplete")
    with pytest.raises(RuntimeError, match="is closed"):
        registrar.register()


def test_watch_returns_once_the_first_answer_is_in_so_a_pick_follows_at_once() -> None:
    with memory.Registry() as registry:
        registry.register("api", "10.0.0.1:80")
        for _ in range(20):  # the first pick right after watch(): never "not answered yet"
            with registry.watch("api") as publisher:
                assert RoundRobin(publisher).endpoint() == Instance("10.0.0.1", 80)
        quick = registry.watch("api", ready_timeout=None)  # at once, as a plain publisher
        assert quick.wait_ready(5)
        quick.close()


async def test_awatch_waits_without_blocking_the_loop() -> None:
    async with memory.Registry() as registry:
        await registry.aregister("api", "10.0.0.1:80")
        publisher = await registry.awatch("api")
        assert RoundRobin(publisher).endpoint() == Instance("10.0.0.1", 80)
        await publisher.aclose()
