"""etcd.Registrar and etcd.Registry against a real etcd member on loopback."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from loadbalancer import Instance, etcd
from tests.etcd_server import EtcdCluster, EtcdServer, free_tcp_port, require_etcd, unique_prefix
from tests.helpers import events, eventually

# Registers, says so, then sleeps (argv[5] == "sleep") or exits without closing.
CHILD = """
import sys, time
from loadbalancer import etcd
registrar = etcd.Registrar(sys.argv[1], sys.argv[2], endpoints=sys.argv[3], ttl=float(sys.argv[4]))
registrar.register()
print(registrar.key, flush=True)
if sys.argv[5] == "sleep":
    time.sleep(120)
"""


@pytest.fixture(scope="module")
def server() -> Iterator[EtcdServer]:
    require_etcd()
    with EtcdServer() as etcd_server:
        yield etcd_server


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


def child(server: EtcdServer, prefix: str, instance: str, ttl: float, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, prefix, instance, server.url, str(ttl), mode],
        stdout=subprocess.PIPE,
        text=True,
    )


# -- Registrar -------------------------------------------------------------------------------


def test_heartbeats_keep_the_key_past_several_ttls(server: EtcdServer, prefix: str) -> None:
    with etcd.Registrar(prefix, "127.0.0.1:8001", endpoints=server.url, ttl=1) as registrar:
        key, lease = registrar.key, registrar.lease
        assert key == f"{prefix}/127.0.0.1:8001"
        assert lease is not None and server.lease_of(key) == lease
        assert registrar.registered and registrar.ttl >= 1
        end = time.monotonic() + 3.5  # several TTLs, watching all along
        while time.monotonic() < end:
            assert server.get(key) is not None, "the key expired despite the keep-alive"
            time.sleep(0.1)
        assert registrar.lease == lease  # kept alive, never re-granted
    assert server.get(key) is None


def test_close_removes_the_key_at_once(server: EtcdServer, prefix: str, logs: pytest.LogCaptureFixture) -> None:
    registrar = etcd.Registrar(prefix, "127.0.0.1:8002", endpoints=server.url, ttl=30)
    registrar.register()
    registrar.register()  # no-op
    key, lease = registrar.key, registrar.lease
    assert server.get(key) is not None
    registrar.close()
    assert server.get(key) is None  # not 30 s later: revoked now
    assert not registrar.registered and registrar.lease is None
    registrar.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        registrar.register()
    assert [r.lease for r in events(logs, "etcd_deregistered")] == [lease]


def test_deregister_then_register_again(server: EtcdServer, prefix: str) -> None:
    with etcd.Registrar(prefix, "127.0.0.1:8003", endpoints=server.url, ttl=30) as registrar:
        first = registrar.lease
        registrar.deregister()
        assert server.get(registrar.key) is None
        registrar.deregister()  # no-op
        registrar.register()
        assert server.get(registrar.key) is not None
        assert registrar.lease != first
    assert server.get(registrar.key) is None


def test_values_and_instance_ids(server: EtcdServer, prefix: str) -> None:
    instance = Instance("127.0.0.1", 8004, weight=3, tags=("a",), metadata={"zone": "z"})
    with etcd.Registrar(prefix, instance, endpoints=server.url, ttl=30) as registrar:
        stored = server.get(registrar.key)
        assert stored is not None and etcd.parse_value(stored.encode()) == instance
    with etcd.Registrar(
        prefix, "127.0.0.1:8005", endpoints=server.url, ttl=30, value="127.0.0.1:8005", instance_id="node-1"
    ) as registrar:
        assert registrar.key == f"{prefix}/node-1"
        assert server.get(f"{prefix}/node-1") == "127.0.0.1:8005"
    with etcd.Registrar(prefix, "127.0.0.1:8006", endpoints=f"{server.url}/ns", ttl=30) as registrar:
        assert registrar.key == f"/ns{prefix}/127.0.0.1:8006"
        assert server.get(registrar.key) is not None


def test_a_publisher_follows_registrars(server: EtcdServer, prefix: str) -> None:
    options: dict[str, Any] = {"endpoints": server.url, "ttl": 30}
    with etcd.Publisher(prefix, str, endpoints=server.url, close_delay=0) as publisher:
        with etcd.Registrar(prefix, Instance("127.0.0.1", 8007, weight=7), **options):
            with etcd.Registrar(prefix, "127.0.0.1:8008", **options):
                eventually(lambda: list(publisher.endpoints()) == ["127.0.0.1:8007", "127.0.0.1:8008"], what="both")
                assert publisher.endpoints().instances[0].weight == 7
            eventually(lambda: list(publisher.endpoints()) == ["127.0.0.1:8007"], what="one closed")
        eventually(lambda: list(publisher.endpoints()) == [], what="both closed")


def test_a_revoked_lease_is_replaced_and_the_key_put_back(
    server: EtcdServer, prefix: str, logs: pytest.LogCaptureFixture
) -> None:
    with etcd.Registrar(prefix, "127.0.0.1:8009", endpoints=server.url, ttl=1) as registrar:
        lost = registrar.lease
        assert lost is not None
        server.revoke(lost)
        assert server.get(registrar.key) is None
        eventually(
            lambda: server.lease_of(registrar.key) not in (None, lost), timeout=10, what="registered again, new lease"
        )
        eventually(lambda: registrar.lease == server.lease_of(registrar.key), what="the registrar knows its lease")
    assert [r.lease for r in events(logs, "etcd_lease_lost")] == [lost]
    assert events(logs, "etcd_reregistered")


def test_the_key_of_a_killed_process_expires_with_its_lease(server: EtcdServer, prefix: str) -> None:
    process = child(server, prefix, "127.0.0.1:8010", 2, "sleep")
    try:
        assert process.stdout is not None
        key = process.stdout.readline().strip()
        assert key == f"{prefix}/127.0.0.1:8010"
        time.sleep(3)  # past its TTL: the child's keep-alive holds it
        assert server.get(key) is not None
        process.send_signal(signal.SIGKILL)
        process.wait(5)
        assert server.get(key) is not None  # no goodbye from a killed process
        eventually(lambda: server.get(key) is None, timeout=10, what="the key expired with the lease")
    finally:
        process.kill()
        process.wait()


def test_a_process_exiting_without_close_deregisters_at_exit(server: EtcdServer, prefix: str) -> None:
    process = child(server, prefix, "127.0.0.1:8011", 60, "exit")
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    key = out.strip()
    assert key == f"{prefix}/127.0.0.1:8011"
    assert server.get(key) is None  # the lease lives 60 s: the exit hook revoked it


async def test_async_use(server: EtcdServer, prefix: str) -> None:
    async with etcd.Registrar(prefix, "127.0.0.1:8012", endpoints=server.url, ttl=30) as registrar:
        assert server.get(registrar.key) is not None
        await registrar.aderegister()
        assert server.get(registrar.key) is None
        await registrar.aregister()
        assert server.get(registrar.key) is not None
    assert server.get(registrar.key) is None
    registrar = etcd.Registrar(prefix, "127.0.0.1:8013", endpoints=server.url, ttl=30)
    await registrar.aregister()
    await registrar.aclose()
    assert server.get(registrar.key) is None


@pytest.mark.parametrize("ttl", [0, -1.5])
def test_a_ttl_that_is_not_positive_is_refused(ttl: float) -> None:
    with pytest.raises(ValueError, match=f"ttl must be positive, got {float(ttl)!r}"):
        etcd.Registrar("/services/api", "127.0.0.1:80", ttl=ttl)
    with pytest.raises(ValueError, match="ttl must be positive"):
        etcd.Registry("127.0.0.1:2379", ttl=ttl)


@pytest.mark.parametrize(
    ("ttl", "message"),
    [
        (0.5, "ttl must be at least 1 second (etcd leases are whole seconds), got 0.5"),
        (timedelta(milliseconds=500), "ttl must be at least 1 second (etcd leases are whole seconds), got 0.5"),
        (1.5, "ttl must be a whole number of seconds (etcd leases are whole seconds), got 1.5"),
        (math.inf, "ttl must be finite, got inf"),
        (math.nan, "ttl must be a number of seconds, got nan"),
    ],
)
def test_a_ttl_etcd_cannot_grant_is_refused_not_rounded(ttl: float | timedelta, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        etcd.Registrar("/services/api", "127.0.0.1:80", ttl=ttl)


def test_a_whole_ttl_is_asked_for_as_given() -> None:
    assert etcd.Registrar("/services/api", "127.0.0.1:80", ttl=2.0).ttl == 2.0
    assert etcd.Registrar("/services/api", "127.0.0.1:80", ttl=timedelta(minutes=1)).ttl == 60.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="invalid etcd endpoints 'h1:2379,h2:x'"):
        etcd.Registrar("/services/api", "127.0.0.1:80", endpoints="h1:2379,h2:x")
    with pytest.raises(ValueError, match="invalid instance_id 'a/b'"):
        etcd.Registrar("/services/api", "127.0.0.1:80", instance_id="a/b")
    with pytest.raises(ValueError, match="invalid instance 'nope'"):
        etcd.Registrar("/services/api", "nope")
    with pytest.raises(ValueError, match="invalid service name 'a/b'"):
        etcd.Registry().join("a/b", "127.0.0.1:80")


def test_an_unreachable_cluster_raises_an_error_naming_member_and_key(prefix: str) -> None:
    dead = f"http://127.0.0.1:{free_tcp_port()}"
    registrar = etcd.Registrar(prefix, "127.0.0.1:8014", endpoints=dead, ttl=5, timeout=1)
    with pytest.raises(etcd.EtcdError) as caught:
        registrar.register()
    assert caught.value.member == dead and caught.value.key == f"{prefix}/127.0.0.1:8014"
    assert dead in str(caught.value) and registrar.key in str(caught.value)
    assert not registrar.registered
    registrar.close()


@pytest.mark.server
def test_keep_alive_survives_the_loss_of_its_member() -> None:
    require_etcd()
    prefix = unique_prefix()
    with EtcdCluster(3) as cluster:
        leader = cluster.leader()
        follower = next(m for m in cluster.members if m is not leader)
        endpoints = [follower.url] + [m.url for m in cluster.members if m is not follower]
        with etcd.Registrar(prefix, "127.0.0.1:8015", endpoints=endpoints, ttl=1) as registrar:
            lease = registrar.lease
            cluster.kill(follower)
            end = time.monotonic() + 3.0  # three TTLs, on the members left
            while time.monotonic() < end:
                assert cluster.get(registrar.key) is not None
                time.sleep(0.1)
            assert registrar.lease == lease
        assert cluster.get(registrar.key) is None


# -- Registry --------------------------------------------------------------------------------


def test_registry_join_lookup_list_leave(server: EtcdServer) -> None:
    namespace = unique_prefix("ns")
    with etcd.Registry(f"{server.url}/{namespace}", ttl=30) as registry:
        assert registry.list("api") == [] and registry.lookup("api") is None
        registrar = registry.join("api", "127.0.0.1:9001")
        assert registrar.key == f"/{namespace}/services/api/127.0.0.1:9001"
        stored = server.get(registrar.key)
        assert stored is not None and json.loads(stored)["name"] == "api"
        registry.join("api", Instance("127.0.0.1", 9002, weight=4))
        registry.join("web", "127.0.0.1:9003")
        assert [str(i) for i in registry.list("api")] == ["127.0.0.1:9001", "127.0.0.1:9002"]
        assert registry.list("api")[1].weight == 4
        picked = {str(registry.lookup("api")) for _ in range(50)}
        assert picked == {"127.0.0.1:9001", "127.0.0.1:9002"}  # at random, over both
        with etcd.Registry(server.url) as other:  # another namespace sees none of it
            assert other.list("api") == []
        registry.leave("api", "127.0.0.1:9001")
        assert [str(i) for i in registry.list("api")] == ["127.0.0.1:9002"]
        registry.leave("api")
        assert registry.list("api") == [] and registry.lookup("api") is None
        assert [str(i) for i in registry.list("web")] == ["127.0.0.1:9003"]
    assert server.keys(f"/{namespace}/") == {}  # close left "web" too


def test_registry_publisher(server: EtcdServer) -> None:
    namespace = unique_prefix("ns")
    registry = etcd.Registry(f"{server.url}/{namespace}", ttl=30)
    with registry, registry.publisher("api", str, close_delay=0) as publisher:
        assert publisher.prefix == f"/{namespace}/services/api/"
        registry.join("api", "127.0.0.1:9004")
        eventually(lambda: list(publisher.endpoints()) == ["127.0.0.1:9004"], what="joined")
        registry.leave("api")
        eventually(lambda: list(publisher.endpoints()) == [], what="left")


async def test_registry_async_use(server: EtcdServer) -> None:
    namespace = unique_prefix("ns")
    async with etcd.Registry(f"{server.url}/{namespace}", ttl=30) as registry:
        await registry.ajoin("api", "127.0.0.1:9005")
        await registry.ajoin("api", "127.0.0.1:9006", ttl=5)
        assert [str(i) for i in await registry.alist("api")] == ["127.0.0.1:9005", "127.0.0.1:9006"]
        assert str(await registry.alookup("api")) in {"127.0.0.1:9005", "127.0.0.1:9006"}
        await registry.aleave("api", Instance("127.0.0.1", 9005))
        assert [str(i) for i in await registry.alist("api")] == ["127.0.0.1:9006"]
    assert server.keys(f"/{namespace}/") == {}


def test_a_registry_says_at_once_that_etcd_leases_are_whole_seconds() -> None:
    with pytest.raises(ValueError, match="etcd leases are whole seconds"):
        etcd.Registry("127.0.0.1:2379", ttl=0.5)
