"""zookeeper.Publisher, Registrar, Registry and Backend against a real ZooKeeper on 127.0.0.1.

Nodes are changed the way other processes would change them, through a kazoo client of the
test's own (``zk_client``). Sessions are short (about a second) where a test waits for one
to end; waits have generous limits and no test measures wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl

from loadbalancer import (
    DiscoveryError,
    EndpointSet,
    Error,
    Instance,
    InvalidInstanceError,
    NoEndpointsError,
    RoundRobin,
    TLSConfig,
    backend,
    zookeeper,
)
from loadbalancer._runtime import RUNTIME
from loadbalancer.errors import ExtraNotInstalledError
from loadbalancer.zookeeper._nodes import InvalidNodeError, encode_instance, parse_node
from loadbalancer.zookeeper._paths import check_endpoints
from tests.daemon import free_tcp_port
from tests.helpers import Factory, aeventually, events, eventually
from tests.zk_server import ZooKeeperServer

pytest_plugins = ["tests.zk_fixtures"]

ROOT = Path(__file__).resolve().parent.parent


def addresses(endpoints: EndpointSet[Any]) -> list[str]:
    return [str(instance) for instance in endpoints.instances]


def publisher(server: ZooKeeperServer, path: str, factory: Any = None, **options: Any) -> zookeeper.Publisher[Any]:
    options.setdefault("close_delay", 0)
    options.setdefault("session_timeout", 2.0)
    options.setdefault("max_backoff", 0.2)
    return zookeeper.Publisher(path, factory or Factory(), endpoints=server.hosts, **options)


def registrar(server: ZooKeeperServer, path: str, instance: Instance | str, **options: Any) -> zookeeper.Registrar:
    options.setdefault("session_timeout", 2.0)
    options.setdefault("max_backoff", 0.2)
    return zookeeper.Registrar(path, instance, endpoints=server.hosts, **options)


def children(client: KazooClient, path: str) -> list[str]:
    return sorted(client.get_children(path)) if client.exists(path) else []


# -- node data, paths, arguments (no server) -------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"10.0.0.1:80", Instance("10.0.0.1", 80)),
        (b"  api.internal:8080\n", Instance("api.internal", 8080)),
        (b"[::1]:80", Instance("::1", 80)),
        (b'{"host": "10.0.0.1", "port": 80}', Instance("10.0.0.1", 80)),
        (b'{"address": "10.0.0.1", "port": "80", "name": "api"}', Instance("10.0.0.1", 80)),
        (b'{"host": "::1", "port": 80}', Instance("::1", 80)),
        (
            b'{"host": "a", "port": 1, "weight": 5, "priority": 2, "tags": ["x"], "metadata": {"zone": "z"}}',
            Instance("a", 1, weight=5, priority=2, tags=("x",), metadata={"zone": "z"}),
        ),
    ],
)
def test_node_data_forms(data: bytes, expected: Instance) -> None:
    instance = parse_node(data)
    assert instance == expected
    assert (instance.weight, instance.priority, instance.tags, dict(instance.metadata)) == (
        expected.weight,
        expected.priority,
        expected.tags,
        dict(expected.metadata),
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "no data"),
        (b"", "no data"),
        (b"\xff\xfe", "not UTF-8"),
        (b"nope", "missing ':port'"),
        (b"host:99999", "out of range"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not an IPv6 address"),
        (b'"10.0.0.1:80"', "not a valid IPv4 address"),
        (b"{}", "'host' is missing"),
        (b'{"host": "a"}', "'port' is missing"),
        (b'{"host": "a", "port": true}', "'port' is missing or not a number"),
        (b'{"host": "a", "port": 1, "weight": -1}', "'weight' must be a non-negative integer"),
        (b'{"host": "a", "port": 1, "tags": "x"}', "'tags' must be a list of strings"),
        (b'{"host": "a", "port": 1, "metadata": {"k": 1}}', "'metadata' must be an object"),
        (b'{"host": "bad host", "port": 1}', "not a valid host name"),
    ],
)
def test_malformed_node_data_says_why(data: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidNodeError, match=reason):
        parse_node(data)


@pytest.mark.parametrize(
    "instance",
    [
        Instance("10.0.0.1", 80),
        Instance("::1", 80),
        Instance("api.internal", 443, weight=7, priority=1, tags=("a", "b"), metadata={"zone": "z"}),
    ],
)
def test_registrar_data_reads_back_as_the_same_instance(instance: Instance) -> None:
    data = encode_instance(instance)
    plain = instance.weight == 1 and not instance.tags
    assert (data == instance.address.encode()) is plain  # plain host:port when that says it all
    again = parse_node(data)
    assert (again, again.weight, again.priority, again.tags, dict(again.metadata)) == (
        instance,
        instance.weight,
        instance.priority,
        instance.tags,
        dict(instance.metadata),
    )


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("services/api", "must start with '/'"),
        ("/services/api/", "must not end with '/'"),
        ("/services//api", "empty component"),
        ("/services/../api", "'..' is not allowed"),
        ("/services/./api", "'.' is not allowed"),
        ("/services/a\x00pi", "not allowed"),
        ("", "must start with '/'"),
    ],
)
def test_a_bad_path_is_a_value_error_quoting_it(path: str, reason: str) -> None:
    for make in (
        lambda: zookeeper.Publisher(path, Factory()),
        lambda: zookeeper.Registrar(path, "127.0.0.1:80"),
    ):
        with pytest.raises(ValueError, match=reason) as caught:
            make()
        assert repr(path) in str(caught.value)


@pytest.mark.parametrize(
    ("endpoints", "reason"),
    [
        ("", "a server is missing"),
        ("127.0.0.1:2181,", "a server is missing"),
        ("127.0.0.1:notaport", "127.0.0.1:notaport"),
        ("127.0.0.1:99999", "127.0.0.1:99999"),
        ("127.0.0.1:2181/apps//x", "chroot"),
    ],
)
def test_bad_endpoints_are_value_errors(endpoints: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        zookeeper.Publisher("/s", Factory(), endpoints=endpoints)
    assert repr(endpoints) in str(caught.value)


def test_good_connection_strings() -> None:
    for endpoints in ("127.0.0.1:2181", "127.0.0.1", "127.0.0.1:1,127.0.0.1:2/apps/x", "[::1]:2181", "zk1,zk2:2182/c"):
        assert check_endpoints(endpoints) == endpoints


def test_argument_errors() -> None:
    client = KazooClient(hosts="127.0.0.1:1")
    with pytest.raises(TypeError, match="not both"):
        zookeeper.Publisher("/s", Factory(), endpoints="127.0.0.1:2", client=client)
    with pytest.raises(TypeError, match="not both"):
        zookeeper.Registrar("/s", "127.0.0.1:80", endpoints="127.0.0.1:2", client=client)
    with pytest.raises(TypeError, match="KazooClient"):
        zookeeper.Publisher("/s", Factory(), client="127.0.0.1:2181")
    with pytest.raises(ValueError, match="session_timeout must be positive"):
        zookeeper.Publisher("/s", Factory(), session_timeout=0)
    with pytest.raises(InvalidInstanceError, match="port is not a number"):
        zookeeper.Registrar("/s", "127.0.0.1:http")
    with pytest.raises(ValueError, match="prefix"):
        zookeeper.Registrar("/s", "127.0.0.1:80", prefix="a/b")
    with pytest.raises(TypeError, match="data must be bytes or str"):
        zookeeper.Registrar("/s", "127.0.0.1:80", data=5)  # type: ignore[arg-type]


# -- the publisher against a real server ---------------------------------------------------


def test_publishes_the_children_in_node_order(zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str) -> None:
    zk_client.create(f"{zk_path}/b", b"127.0.0.2:80", makepath=True)
    zk_client.create(f"{zk_path}/a", b"127.0.0.1:80")
    zk_client.create(f"{zk_path}/c", json.dumps({"host": "127.0.0.3", "port": 81, "weight": 5}).encode())
    factory = Factory()
    with publisher(zookeeper_server, zk_path, factory) as p:
        endpoints = p.refresh()
        assert addresses(endpoints) == ["127.0.0.1:80", "127.0.0.2:80", "127.0.0.3:81"]
        assert [e.address for e in endpoints] == ["127.0.0.1:80", "127.0.0.2:80", "127.0.0.3:81"]
        assert endpoints.instances[2].weight == 5
        assert not endpoints.stale
        assert factory.calls == {"127.0.0.1:80": 1, "127.0.0.2:80": 1, "127.0.0.3:81": 1}


def test_follows_nodes_added_removed_and_changed(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    zk_client.create(f"{zk_path}/a", b"127.0.0.1:80", makepath=True)
    factory = Factory()
    seen: list[list[str]] = []
    with publisher(zookeeper_server, zk_path, factory) as p:
        p.subscribe(lambda endpoints: seen.append(addresses(endpoints)))
        eventually(lambda: seen and seen[-1] == ["127.0.0.1:80"], what="first set")
        zk_client.create(f"{zk_path}/b", b"127.0.0.2:80")
        eventually(lambda: seen[-1] == ["127.0.0.1:80", "127.0.0.2:80"], what="node added")
        first = p.endpoints()[0]
        zk_client.delete(f"{zk_path}/a")
        eventually(lambda: seen[-1] == ["127.0.0.2:80"], what="node removed")
        eventually(lambda: first.closed, what="the removed instance's endpoint closed")
        zk_client.set(f"{zk_path}/b", b'{"host": "127.0.0.2", "port": 80, "weight": 9}')
        eventually(lambda: p.endpoints().instances[0].weight == 9, what="data change")
        zk_client.set(f"{zk_path}/b", b"127.0.0.9:90")
        eventually(lambda: seen[-1] == ["127.0.0.9:90"], what="node moved to another address")
        # the factory ran once per instance, never again for an unchanged one
        assert factory.calls == {"127.0.0.1:80": 1, "127.0.0.2:80": 1, "127.0.0.9:90": 1}


def test_malformed_nodes_are_skipped_and_logged_with_node_and_data(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str, logs: pytest.LogCaptureFixture
) -> None:
    zk_client.create(f"{zk_path}/good", b"127.0.0.1:80", makepath=True)
    zk_client.create(f"{zk_path}/bad", b"not-an-instance")
    zk_client.create(f"{zk_path}/empty", b"")
    with publisher(zookeeper_server, zk_path) as p:
        assert addresses(p.refresh()) == ["127.0.0.1:80"]
        assert not p.endpoints().stale
        invalid = [r for r in logs.records if getattr(r, "event", None) == "zookeeper_node_invalid"]
        assert {r.node for r in invalid} == {f"{zk_path}/bad", f"{zk_path}/empty"}  # type: ignore[attr-defined]
        bad = next(r for r in invalid if r.node.endswith("/bad"))  # type: ignore[attr-defined]
        assert bad.data == "not-an-instance" and "missing ':port'" in bad.error  # type: ignore[attr-defined]
        assert bad.levelno == logging.ERROR
        assert f"{zk_path}/bad" in bad.getMessage() and "not-an-instance" in bad.getMessage()
        # a node fixed in place is picked up (its data is watched)
        zk_client.set(f"{zk_path}/empty", b"127.0.0.2:80")
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.2:80", "127.0.0.1:80"], what="fixed node")


def test_a_missing_path_is_an_empty_set_that_fills_when_created(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    with publisher(zookeeper_server, zk_path) as p:
        endpoints = p.refresh()
        assert len(endpoints) == 0 and not endpoints.stale  # authoritative: nothing there
        zk_client.ensure_path(zk_path)
        zk_client.create(f"{zk_path}/a", b"127.0.0.1:80")
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.1:80"], what="path created later")
        zk_client.delete(zk_path, recursive=True)
        eventually(lambda: len(p.endpoints()) == 0, what="path deleted")
        assert not p.endpoints().stale
        zk_client.create(f"{zk_path}/b", b"127.0.0.2:80", makepath=True)
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.2:80"], what="path created again")


def test_chroot_in_the_connection_string(zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str) -> None:
    zk_client.create(f"/chroot{zk_path}/a", b"127.0.0.1:80", makepath=True)
    hosts = f"{zookeeper_server.hosts}/chroot"
    with zookeeper.Publisher(zk_path, Factory(), endpoints=hosts, close_delay=0) as p:
        assert addresses(p.refresh()) == ["127.0.0.1:80"]
        with zookeeper.Registrar(zk_path, "127.0.0.2:80", endpoints=hosts) as r:
            assert r.node is not None and r.node.startswith(f"{zk_path}/")
            assert zk_client.exists(f"/chroot{r.node}")  # within the chroot
            eventually(lambda: addresses(p.endpoints()) == ["127.0.0.1:80", "127.0.0.2:80"], what="registered")


def test_several_hosts_one_of_them_down(zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str) -> None:
    zk_client.create(f"{zk_path}/a", b"127.0.0.1:80", makepath=True)
    hosts = f"127.0.0.1:{free_tcp_port()},{zookeeper_server.hosts}"
    with zookeeper.Publisher(zk_path, Factory(), endpoints=hosts, max_backoff=0.2) as p:
        assert addresses(p.refresh()) == ["127.0.0.1:80"]
        assert hosts in repr(p)


def test_many_publishers_share_one_client(zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str) -> None:
    shared = zookeeper_server.client()
    try:
        for i in range(20):
            zk_client.create(f"{zk_path}/{i}/n", f"127.0.0.1:{1000 + i}".encode(), makepath=True)
        threads = threading.active_count()
        publishers = [zookeeper.Publisher(f"{zk_path}/{i}", Factory(), client=shared) for i in range(20)]
        for i, p in enumerate(publishers):
            assert addresses(p.refresh()) == [f"127.0.0.1:{1000 + i}"]
        assert threading.active_count() <= threads + 1  # the runtime thread at most: no thread per publisher
        zk_client.create(f"{zk_path}/7/m", b"127.0.0.2:7")
        eventually(lambda: len(publishers[7].endpoints()) == 2, what="change seen through the shared client")
        listeners = len(shared.state_listeners)
        for p in publishers:
            p.close()
        assert len(shared.state_listeners) == listeners - 20  # each took its listener away
        assert shared.connected  # the application's client is the application's to stop
    finally:
        shared.stop()
        shared.close()


def test_a_client_not_yet_started_is_waited_for(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    zk_client.create(f"{zk_path}/a", b"127.0.0.1:80", makepath=True)
    client = KazooClient(hosts=zookeeper_server.hosts)
    p = zookeeper.Publisher(zk_path, Factory(), client=client)
    try:
        time.sleep(0.1)
        assert len(p.endpoints()) == 0
        client.start(timeout=10)
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.1:80"], what="set after the client started")
    finally:
        p.close()
        client.stop()
        client.close()


def test_close_stops_the_own_client_and_its_threads(zookeeper_server: ZooKeeperServer, zk_path: str) -> None:
    before = {t.ident for t in threading.enumerate()}
    p = publisher(zookeeper_server, zk_path)
    p.refresh()
    started = [t for t in threading.enumerate() if t.ident not in before and t.name != "loadbalancer-runtime"]
    assert len(started) == 3  # kazoo's connection thread and two callback workers
    client = p.client
    seen: list[EndpointSet[Any]] = []
    p.subscribe(seen.append)
    p.close()
    assert not client.connected
    assert all(not t.is_alive() for t in started)
    assert seen[-1] == () and p.closed
    p.close()  # idempotent


def test_refresh_without_a_server_returns_a_stale_set_naming_the_hosts() -> None:
    hosts = f"127.0.0.1:{free_tcp_port()}"
    with zookeeper.Publisher("/s", Factory(), endpoints=hosts, timeout=0.3, max_backoff=0.1) as p:
        endpoints = p.refresh()
        assert len(endpoints) == 0 and endpoints.stale
        assert isinstance(p.last_error, DiscoveryError)
        assert hosts in str(p.last_error) and "no connection" in str(p.last_error)
        with pytest.raises(NoEndpointsError):
            RoundRobin(p).endpoint()


def test_a_server_never_reached_is_reported_and_a_later_connection_makes_the_set_fresh(
    unstarted_zookeeper: ZooKeeperServer, logs: pytest.LogCaptureFixture
) -> None:
    server = unstarted_zookeeper  # nothing listens on its port yet
    seen: list[EndpointSet[Any]] = []
    with publisher(server, "/svc", timeout=0.3) as p:  # no refresh(): the publisher must tell by itself
        p.subscribe(seen.append)
        eventually(lambda: p.endpoints().stale, timeout=15, what="a stale set without a connection")
        assert len(p.endpoints()) == 0 and seen[-1].stale
        assert isinstance(p.last_error, DiscoveryError)
        assert server.hosts in str(p.last_error) and "no connection" in str(p.last_error)
        (warning,) = [r for r in events(logs, "refresh_failed") if r.levelno == logging.WARNING]  # once
        assert server.hosts in warning.getMessage()
        with pytest.raises(NoEndpointsError):
            RoundRobin(p).endpoint()
        server.start()  # kazoo kept trying
        other = server.client()
        try:
            other.create("/svc/a", b"127.0.0.1:80", makepath=True)
            eventually(
                lambda: addresses(p.endpoints()) == ["127.0.0.1:80"] and not p.endpoints().stale,
                timeout=15,
                what="a fresh set once connected",
            )
            assert p.last_error is None
        finally:
            other.stop()
            other.close()


def test_watch_on_the_command_line_reports_a_server_never_reached() -> None:
    hosts = f"127.0.0.1:{free_tcp_port()}"
    command = [sys.executable, "-m", "loadbalancer", "watch", "zookeeper", "/svc", "--hosts", hosts, "--timeout", "0.3"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    reader = threading.Thread(target=lambda: lines.put(process.stdout.readline() if process.stdout else ""))
    reader.start()
    try:
        try:
            line = lines.get(timeout=30)  # a hang guard: the watch prints once the timeout has passed
        except queue.Empty:
            pytest.fail("the watch printed nothing")
        assert "! stale:" in line and "no connection to ZooKeeper" in line and hosts in line, line
    finally:
        process.send_signal(signal.SIGINT)  # the way to end a watch
        _, err = process.communicate(timeout=30)
        reader.join(30)
    assert process.returncode == 0, err


def test_refresh_on_the_runtime_thread_says_what_to_do(zookeeper_server: ZooKeeperServer, zk_path: str) -> None:
    with publisher(zookeeper_server, zk_path) as p:

        async def on_runtime() -> str:
            try:
                p.refresh()
            except RuntimeError as error:
                return str(error)
            return "no error"

        assert "arefresh" in RUNTIME.submit(on_runtime()).result()


async def test_arefresh_and_updates_from_another_loop(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    zk_client.create(f"{zk_path}/a", b"127.0.0.1:80", makepath=True)
    async with publisher(zookeeper_server, zk_path) as p:
        assert addresses(await p.arefresh()) == ["127.0.0.1:80"]
        sets: list[list[str]] = []

        async def follow() -> None:
            async for endpoints in p.updates():
                sets.append(addresses(endpoints))

        task = asyncio.create_task(follow())
        await aeventually(lambda: sets == [["127.0.0.1:80"]], what="current set")
        await asyncio.to_thread(zk_client.create, f"{zk_path}/b", b"127.0.0.2:80")
        await aeventually(lambda: sets[-1] == ["127.0.0.1:80", "127.0.0.2:80"], what="update")
    await asyncio.wait_for(task, 5)  # updates() ends when the publisher closes


def test_a_read_refused_by_an_acl_is_a_stale_set_and_is_retried(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str, logs: pytest.LogCaptureFixture
) -> None:
    zk_client.add_auth("digest", "owner:secret")
    zk_client.create(f"{zk_path}/a", b"127.0.0.1:80", makepath=True)
    zk_client.set_acls(zk_path, [make_digest_acl("owner", "secret", all=True)])
    with publisher(zookeeper_server, zk_path, max_backoff=0.1) as p:
        endpoints = p.refresh()
        assert endpoints.stale and "NoAuth" in str(p.last_error)
        assert zookeeper_server.hosts in str(p.last_error)
        from kazoo.security import OPEN_ACL_UNSAFE

        zk_client.set_acls(zk_path, OPEN_ACL_UNSAFE)  # the publisher retries on its own
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.1:80"], what="read once allowed")
        assert not p.endpoints().stale
        failures = [r for r in logs.records if getattr(r, "event", None) == "zookeeper_read_failed"]
        assert failures


def test_picks_from_threads_while_the_set_changes(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    zk_client.create(f"{zk_path}/stable", b"127.0.0.1:1", makepath=True)
    factory = Factory()
    with publisher(zookeeper_server, zk_path, factory, close_delay=1.0) as p:
        balancer = RoundRobin(p)
        p.refresh()
        stop = threading.Event()
        errors: list[BaseException] = []
        picks = [0] * 4

        def pick(slot: int) -> None:
            while not stop.is_set():
                try:
                    endpoint = balancer.endpoint()
                    endpoint("ping")
                    picks[slot] += 1
                    time.sleep(0.0001)  # let kazoo's threads have the GIL too
                except BaseException as error:
                    errors.append(error)
                    return

        threads = [threading.Thread(target=pick, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for round_ in range(20):
            zk_client.create(f"{zk_path}/n{round_}", f"127.0.0.2:{100 + round_}".encode())
            if round_ >= 2:
                zk_client.delete(f"{zk_path}/n{round_ - 2}")
            eventually(lambda round_=round_: f"127.0.0.2:{100 + round_}" in addresses(p.endpoints()), what="change")
        stop.set()
        for thread in threads:
            thread.join(5)
        assert errors == []
        assert all(picks)
        assert not any(endpoint.called_after_close for endpoint in factory.made)
        final = ["127.0.0.2:118", "127.0.0.2:119", "127.0.0.1:1"]  # in node name order: n18, n19, stable
        eventually(lambda: addresses(p.endpoints()) == final, what="the last set")


def test_stopped_server_keeps_the_stale_set_and_recovery_after_restart(
    private_zookeeper: ZooKeeperServer, logs: pytest.LogCaptureFixture
) -> None:
    server = private_zookeeper
    other = server.client(session_timeout=10.0)
    other.create("/svc/a", b"127.0.0.1:80", makepath=True)
    other.create("/svc/b", b"127.0.0.2:80")
    with publisher(server, "/svc", session_timeout=10.0) as p:
        balancer = RoundRobin(p)
        assert addresses(p.refresh()) == ["127.0.0.1:80", "127.0.0.2:80"]
        server.stop()
        eventually(lambda: p.endpoints().stale, what="stale after the server stopped")
        assert addresses(p.endpoints()) == ["127.0.0.1:80", "127.0.0.2:80"]  # stale beats empty
        assert isinstance(p.last_error, DiscoveryError) and server.hosts in str(p.last_error)
        assert balancer.endpoint().address in ("127.0.0.1:80", "127.0.0.2:80")
        assert any(getattr(r, "event", None) == "refresh_failed" for r in logs.records)

        server.start()  # same port, same data directory
        eventually(lambda: not p.endpoints().stale, timeout=15, what="recovered after the restart")
        assert addresses(p.endpoints()) == ["127.0.0.1:80", "127.0.0.2:80"]
        eventually(lambda: other.connected, timeout=15, what="the other client reconnected")
        other.set("/svc/b", b"127.0.0.2:81")  # a data watch, set again after the reconnection
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.1:80", "127.0.0.2:81"], what="data change")
        other.delete("/svc/a")
        other.create("/svc/c", b"127.0.0.3:80")
        eventually(
            lambda: addresses(p.endpoints()) == ["127.0.0.2:81", "127.0.0.3:80"],
            what="changes after the restart (the watches were set again)",
        )
    other.stop()
    other.close()


def test_session_expiry_rereads_everything(private_zookeeper: ZooKeeperServer) -> None:
    server = private_zookeeper
    other = server.client()
    other.create("/svc/a", b"127.0.0.1:80", makepath=True)
    with publisher(server, "/svc") as p:
        assert addresses(p.refresh()) == ["127.0.0.1:80"]
        session = p.client.client_id
        server.expire(p.client)
        # what changes while the publisher has no session must show once it has a new one
        other.set("/svc/a", b"127.0.0.1:81")
        other.create("/svc/b", b"127.0.0.2:80")
        eventually(lambda: p.client.client_id not in (None, session), timeout=15, what="a new session")
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.1:81", "127.0.0.2:80"], what="full re-read")
        assert not p.endpoints().stale
        other.delete("/svc/b")  # and the new session's watches work
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.1:81"], what="change after expiry")
    other.stop()
    other.close()


# -- the registrar -----------------------------------------------------------------------------


def test_register_creates_an_ephemeral_sequential_node_and_close_removes_it_at_once(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    # A long session: the node can only go this soon because close() deletes it.
    r = registrar(zookeeper_server, zk_path, "127.0.0.1:8080", session_timeout=30.0)
    assert r.node is None and not r.registered
    with publisher(zookeeper_server, zk_path) as p:
        r.register()
        node = r.node
        assert node is not None and r.registered
        name = node.rpartition("/")[2]
        assert name.startswith("instance-") and name[-10:].isdigit()  # the sequence number
        data, stat = zk_client.get(node)
        assert data == b"127.0.0.1:8080"
        assert stat.ephemeralOwner == r.client.client_id[0]
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.1:8080"], what="registered instance seen")
        r.register()  # idempotent
        assert r.node == node and children(zk_client, zk_path) == [name]
        r.close()
        assert not zk_client.exists(node)
        eventually(lambda: len(p.endpoints()) == 0, what="deregistered instance gone")
        assert not r.client.connected  # its own client stopped
        r.close()  # idempotent


def test_register_deregister_register_again_and_json_data(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    instance = Instance("127.0.0.1", 8080, weight=3, tags=("blue",), metadata={"zone": "a"})
    with registrar(zookeeper_server, zk_path, instance) as r:
        first = r.node
        assert first is not None
        document = json.loads(zk_client.get(first)[0])
        assert document == {"host": "127.0.0.1", "port": 8080, "weight": 3, "tags": ["blue"], "metadata": {"zone": "a"}}
        r.deregister()
        assert r.node is None and not zk_client.exists(first)
        r.deregister()  # idempotent
        r.register()
        assert r.node not in (None, first) and zk_client.exists(r.node)
    assert children(zk_client, zk_path) == []


def test_custom_data_and_prefix(zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str) -> None:
    with registrar(zookeeper_server, zk_path, "127.0.0.1:80", data="custom", prefix="member_") as r:
        assert r.node is not None and r.node.rpartition("/")[2].startswith("member_")
        assert zk_client.get(r.node)[0] == b"custom"


def test_register_without_a_server_is_a_discovery_error() -> None:
    r = zookeeper.Registrar("/svc", "127.0.0.1:80", endpoints=f"127.0.0.1:{free_tcp_port()}", timeout=0.3)
    with pytest.raises(DiscoveryError, match="no connection to ZooKeeper") as caught:
        r.register()
    assert "127.0.0.1:80" in str(caught.value) and "/svc" in str(caught.value)
    assert not r.registered
    r.close()


def _threads_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since ``before`` and still alive, less the library's runtime and its executor's workers."""
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.name != "loadbalancer-runtime" and not t.name.startswith("asyncio_")
    ]


def test_a_failed_with_stops_the_registrars_own_client_and_register_starts_it_again(
    unstarted_zookeeper: ZooKeeperServer,
) -> None:
    server = unstarted_zookeeper  # nothing listens on its port yet
    before = set(threading.enumerate())
    r = registrar(server, "/svc", "127.0.0.1:80", timeout=0.3)
    with pytest.raises(DiscoveryError, match="no connection to ZooKeeper"), r:
        pytest.fail("the body of a with that could not register ran")
    # no __exit__ ran, and nothing is registered: the client's three threads must not go on
    # reconnecting for ever
    eventually(lambda: _threads_since(before) == [], what="the registrar's own client stopped")
    assert not r.client.connected and not r.registered
    server.start()
    r.register()  # starts its client again
    try:
        assert r.registered and r.node is not None and r.client.connected
    finally:
        r.close()
    eventually(lambda: _threads_since(before) == [], what="the client stopped by close()")


async def test_a_failed_async_with_stops_the_registrars_own_client() -> None:
    before = set(threading.enumerate())
    r = zookeeper.Registrar("/svc", "127.0.0.1:80", endpoints=f"127.0.0.1:{free_tcp_port()}", timeout=0.3)
    with pytest.raises(DiscoveryError, match="no connection to ZooKeeper"):
        async with r:
            pytest.fail("the body of an async with that could not register ran")
    await aeventually(lambda: _threads_since(before) == [], what="the registrar's own client stopped")


def test_a_failed_register_leaves_an_application_client_running(unstarted_zookeeper: ZooKeeperServer) -> None:
    server = unstarted_zookeeper
    client = KazooClient(hosts=server.hosts, connection_retry={"max_tries": -1, "delay": 0.05, "max_delay": 0.2})
    client.start_async()
    try:
        r = zookeeper.Registrar("/svc", "127.0.0.1:80", client=client, timeout=0.3)
        with pytest.raises(DiscoveryError, match="no connection to ZooKeeper"):
            r.register()
        server.start()  # the application's client, still trying, connects: it was not stopped
        eventually(lambda: client.connected, timeout=15, what="the application's client connected")
        r.close()
    finally:
        client.stop()
        client.close()


def _run_script(script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env, timeout=60
    )


def test_kazoo_prints_nothing_unasked_and_logs_into_the_librarys_logger() -> None:
    hosts = f"127.0.0.1:{free_tcp_port()}"  # nothing listens: kazoo warns on every attempt
    attempt = f"""
        from loadbalancer import DiscoveryError, zookeeper
        r = zookeeper.Registrar("/svc", "127.0.0.1:80", endpoints={hosts!r}, timeout=1.0, max_backoff=0.1)
        try:
            r.register()
        except DiscoveryError as error:
            print("not registered:", error)
        """
    quiet = _run_script(attempt)
    assert quiet.returncode == 0 and "not registered" in quiet.stdout, quiet.stderr
    assert quiet.stderr == ""  # no logging configured: a library prints nothing
    configured = _run_script(
        'import logging; logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")\n'
        + textwrap.dedent(attempt)
    )
    assert configured.returncode == 0, configured.stderr
    # once the application configures logging it sees kazoo's warnings, under the library's logger
    assert "loadbalancer.zookeeper.kazoo: Connection dropped" in configured.stderr
    assert not any(line.startswith("kazoo.") for line in configured.stderr.splitlines())


async def test_async_twins(zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str) -> None:
    async with registrar(zookeeper_server, zk_path, "127.0.0.1:80") as r:
        node = r.node
        assert node is not None and await asyncio.to_thread(zk_client.exists, node)
        await r.aderegister()
        assert not await asyncio.to_thread(zk_client.exists, node)
        await r.aregister()
        node = r.node
        assert node is not None
    assert not await asyncio.to_thread(zk_client.exists, node)
    r2 = registrar(zookeeper_server, zk_path, "127.0.0.1:81")
    await r2.aregister()
    await r2.aclose()
    assert await asyncio.to_thread(children, zk_client, zk_path) == []


def test_many_registrars_share_one_client(zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str) -> None:
    shared = zookeeper_server.client()
    try:
        registrars = [zookeeper.Registrar(zk_path, f"127.0.0.1:{2000 + i}", client=shared) for i in range(5)]
        for r in registrars:
            r.register()
        with publisher(zookeeper_server, zk_path) as p:
            eventually(lambda: len(p.endpoints()) == 5, what="five registered")
            registrars[0].close()
            eventually(lambda: len(p.endpoints()) == 4, what="one closed")
            assert shared.connected  # closing one registrar leaves the shared client alone
        for r in registrars[1:]:
            r.close()
        assert children(zk_client, zk_path) == []
    finally:
        shared.stop()
        shared.close()


def test_session_expiry_re_registers(private_zookeeper: ZooKeeperServer) -> None:
    server = private_zookeeper
    watcher = server.client()
    with registrar(server, "/svc", "127.0.0.1:80") as r, publisher(server, "/svc") as p:
        first = r.node
        assert first is not None
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.1:80"], what="registered")
        server.expire(r.client)
        eventually(lambda: r.node not in (None, first), timeout=15, what="a new node after expiry")
        assert not watcher.exists(first)  # the old session's node went with it
        assert watcher.exists(r.node)
        eventually(lambda: addresses(p.endpoints()) == ["127.0.0.1:80"], what="seen again")
    assert watcher.get_children("/svc") == []
    watcher.stop()
    watcher.close()


def test_a_registration_survives_a_server_restart(private_zookeeper: ZooKeeperServer) -> None:
    server = private_zookeeper
    # The session must outlive the restart, however slow a loaded machine makes it: the
    # server's longest session (60 s) is longer than the start's own limit (30 s) plus the
    # wait for the reconnection, so an expiry here is a bug, not the machine's load.
    # ZooKeeper 3.8 leaves a connection made while it starts open and unanswered (its close
    # of it fails on a NullPointerException: "this.zkDb" is null), and kazoo waits for the
    # answer the session timeout divided by the number of servers it was given. Naming the
    # one server twice halves that wait to 30 s: the next try, on the other name, comes
    # within the session.
    endpoints = f"{server.hosts},localhost:{server.port}"
    with zookeeper.Registrar("/svc", "127.0.0.1:80", endpoints=endpoints, session_timeout=60.0, max_backoff=0.2) as r:
        node = r.node
        session = r.client.client_id
        server.stop()
        server.start()
        watcher = server.client()
        try:
            eventually(lambda: r.client.connected, timeout=45, what="reconnected")
        except AssertionError as error:  # say what the server was doing
            raise AssertionError(f"{error}; kazoo: {r.client.state}; the server log:\n{server.log_tail(80)}") from None
        assert r.client.client_id == session  # the same session, not a new one
        assert watcher.exists(node)  # so the same node
        assert watcher.get(node)[1].ephemeralOwner == session[0]
        assert r.node == node
    assert not watcher.exists(node)
    watcher.stop()
    watcher.close()


def _run_registrar_process(
    server: ZooKeeperServer, path: str, session_timeout: float, then: str
) -> subprocess.Popen[str]:
    script = textwrap.dedent(
        f"""
        import sys, time
        from loadbalancer import zookeeper
        r = zookeeper.Registrar(
            {path!r}, "127.0.0.1:9000", endpoints={server.hosts!r}, session_timeout={session_timeout}
        )
        r.register()
        print(r.node, flush=True)
        {then}
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_a_killed_process_node_goes_after_its_session_timeout(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    process = _run_registrar_process(zookeeper_server, zk_path, 2.0, "time.sleep(60)")
    try:
        assert process.stdout is not None
        node = process.stdout.readline().strip()
        assert node.startswith(f"{zk_path}/"), process.stderr.read() if process.stderr else ""
        assert zk_client.exists(node)
        process.send_signal(signal.SIGKILL)
        process.wait(5)
        assert zk_client.exists(node)  # no goodbye: the session (2 s) still holds it
        eventually(lambda: not zk_client.exists(node), timeout=15, what="node gone after the session timeout")
    finally:
        process.kill()
        process.wait()


def test_a_process_that_exits_without_closing_removes_its_node(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    # A 60 s session: the node can only go soon because the exit hook closes the registrar.
    process = _run_registrar_process(zookeeper_server, zk_path, 60.0, "")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    node = out.strip()
    assert node.startswith(f"{zk_path}/")
    assert not zk_client.exists(node)


def test_close_waits_for_a_connection_on_its_way_back(private_zookeeper: ZooKeeperServer) -> None:
    server = private_zookeeper
    r = registrar(server, "/svc", "127.0.0.1:80", session_timeout=30.0, timeout=20.0)
    r.register()
    node = r.node
    server.stop()
    eventually(lambda: not r.client.connected, what="disconnected")
    restart = threading.Timer(0.5, server.start)
    restart.start()
    r.close()  # waits for the reconnection, then deletes the node
    restart.join()
    watcher = server.client()
    assert not watcher.exists(node)  # deleted, not left to a 30 s session timeout
    watcher.stop()
    watcher.close()


def test_deregister_without_a_connection_is_deferred_until_it_is_back(
    private_zookeeper: ZooKeeperServer, logs: pytest.LogCaptureFixture
) -> None:
    server = private_zookeeper
    r = registrar(server, "/svc", "127.0.0.1:80", session_timeout=30.0, timeout=0.3)
    r.register()
    node = r.node
    server.stop()
    eventually(lambda: not r.client.connected, what="disconnected")
    r.deregister()  # no error: logged, and done later
    assert not r.registered and r.node is None
    assert any(getattr(record, "event", None) == "deregister_deferred" for record in logs.records)
    server.start()
    watcher = server.client()
    # kazoo waits up to session_timeout / len(hosts) (30 s) for a handshake's answer before it tries
    # again: a bound under that fails on one attempt lost to the restart, which kazoo itself recovers
    eventually(lambda: r.client.connected, timeout=70, what="reconnected")
    eventually(lambda: not watcher.exists(node), what="node deleted once the connection is back")
    r.close()
    watcher.stop()
    watcher.close()


def test_a_missing_zookeeper_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.zk_server as zk_server

    monkeypatch.setattr(zk_server, "MISSING", "ZooKeeper is not installed")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        zk_server.require_zookeeper()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        zk_server.require_zookeeper()


# -- the registry facade on the backend protocol ---------------------------------------------


def test_registry_register_discover_watch_and_session_loss(zookeeper_server: ZooKeeperServer, zk_client: Any) -> None:
    root = f"/registry-{uuid.uuid4().hex[:8]}"
    with zookeeper.Registry(zookeeper_server.hosts, root=root, ttl=0.4, session_timeout=2.0) as registry:
        assert registry.discover("api") == [] and registry.list_services() == []
        registry.register("api", Instance("127.0.0.1", 9001, tags=("blue",)))
        registry.register("api", "127.0.0.1:9002")
        registry.register("web", "127.0.0.1:9003")
        assert sorted(str(i) for i in registry.discover("api")) == ["127.0.0.1:9001", "127.0.0.1:9002"]
        assert [str(i) for i in registry.discover("api", tags=["blue"])] == ["127.0.0.1:9001"]
        assert registry.list_services() == ["api", "web"]
        assert registry.health().healthy
        with registry.watch("api", close_delay=0) as watched:  # the event-driven zookeeper.Publisher
            assert isinstance(watched, zookeeper.Publisher)
            eventually(lambda: len(watched.endpoints()) == 2, what="both registrations")
            # a node deleted behind the registrar's back (as a session expiry does) comes back
            for name in zk_client.get_children(f"{root}/web"):
                zk_client.delete(f"{root}/web/{name}")
            eventually(lambda: [str(i) for i in registry.discover("web")] == ["127.0.0.1:9003"], timeout=10)
            registry.deregister("api", "127.0.0.1:9002")
            eventually(lambda: [str(i) for i in watched.endpoints().instances] == ["127.0.0.1:9001"])
    assert zk_client.get_children(f"{root}/api") == []  # closing deregistered the rest


# -- the backend protocol: cursor, generic publisher and registrar ------------------------------


def test_a_watch_starts_from_its_listing_and_reports_only_what_changed_since(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    for name, data in (("a", b"127.0.0.1:1"), ("b", b"127.0.0.1:2"), ("same", b"127.0.0.1:3"), ("bad", b"nope")):
        zk_client.create(f"{zk_path}/{name}", data, makepath=True)
    zk = zookeeper.Backend(zookeeper_server.hosts, root=None)
    try:
        listing = RUNTIME.submit(zk.list(zk_path)).result()
        assert sorted(map(str, listing.instances)) == ["a", "b", "same"]  # "bad" is logged, not listed
        zk_client.set(f"{zk_path}/a", b"127.0.0.1:11")  # changed after the listing
        zk_client.delete(f"{zk_path}/b")
        zk_client.create(f"{zk_path}/c", b"127.0.0.1:4")

        async def first_batch() -> backend.Batch:
            async with contextlib.aclosing(zk.watch(zk_path, listing.cursor)) as stream:  # type: ignore[type-var]
                return await anext(stream)

        batch = RUNTIME.submit(first_batch()).result()
        # what changed since the listing, and nothing else ("same" and "bad" are only watched)
        assert {c.key: c.instance for c in batch.changes} == {
            "a": Instance("127.0.0.1", 11),
            "b": None,
            "c": Instance("127.0.0.1", 4),
        }
    finally:
        zk.close()


def test_the_generic_registrar_and_publisher_over_a_zookeeper_backend(
    zookeeper_server: ZooKeeperServer, zk_client: Any
) -> None:
    root = f"/generic-{uuid.uuid4().hex[:8]}"
    zk = zookeeper.Backend(zookeeper_server.hosts, root=root, session_timeout=2.0)
    try:
        with backend.Publisher(zk, "api", close_delay=0) as p, backend.Registrar(zk, "api", "127.0.0.1:80", ttl=2):
            eventually(lambda: addresses(p.endpoints()) == ["127.0.0.1:80"], what="registered, seen by its watch")
            (name,) = zk_client.get_children(f"{root}/api")
            assert name.startswith("instance-")
        eventually(lambda: zk_client.get_children(f"{root}/api") == [], what="deregistered on close")
    finally:
        zk.close()


def test_re_registration_after_a_session_expiry_waits_for_no_timer(private_zookeeper: ZooKeeperServer) -> None:
    server = private_zookeeper
    # a 30 s session: the node is checked every 15 s; a new session must bring it back sooner
    with registrar(server, "/svc", "127.0.0.1:80", session_timeout=30.0) as r:
        first = r.node
        assert r.ttl == 30.0
        server.expire(r.client)
        eventually(lambda: r.node not in (None, first), timeout=10, what="a new node on the new session")
        watcher = server.client()
        try:
            assert watcher.get_children("/svc") == [r.node.rpartition("/")[2]]  # type: ignore[union-attr]
        finally:
            watcher.stop()
            watcher.close()
    assert r.leases_lost == 1 and r.registrations == 1


# -- one vocabulary: endpoints=, tls=, errors, the extra ------------------------------------------


def test_the_old_hosts_keyword_still_works_and_warns(
    zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str
) -> None:
    hosts = zookeeper_server.hosts
    warned = r"\(hosts=\.\.\.\) is deprecated: write endpoints="
    with pytest.warns(DeprecationWarning, match="Registrar" + warned):
        r = zookeeper.Registrar(zk_path, "127.0.0.1:80", hosts=hosts)  # type: ignore[call-arg]
    with pytest.warns(DeprecationWarning, match="Publisher" + warned):
        p = zookeeper.Publisher(zk_path, hosts=hosts, close_delay=0)  # type: ignore[call-arg]
    with r, p:
        assert addresses(p.refresh()) == ["127.0.0.1:80"]
    root = f"/old-{uuid.uuid4().hex[:8]}"
    with pytest.warns(DeprecationWarning, match="Registry" + warned):
        registry = zookeeper.Registry(hosts=hosts, root=root)  # type: ignore[call-arg]
    with registry:
        registry.register("api", "127.0.0.1:81")
        assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:81"]
    with pytest.warns(DeprecationWarning, match="Backend" + warned):
        zk = zookeeper.Backend(hosts=hosts, root=root)  # type: ignore[call-arg]
    with backend.Registry(zk) as generic:
        assert generic.list_services() == ["api"]
    with pytest.raises(TypeError, match="both hosts= and endpoints="):
        zookeeper.Publisher(zk_path, hosts=hosts, endpoints=hosts)  # type: ignore[call-arg]


def test_endpoints_as_a_sequence_of_servers(zookeeper_server: ZooKeeperServer, zk_client: Any, zk_path: str) -> None:
    zk_client.create(f"{zk_path}/a", b"127.0.0.1:80", makepath=True)
    servers = [f"127.0.0.1:{free_tcp_port()}", zookeeper_server.hosts]
    with zookeeper.Publisher(zk_path, endpoints=servers, max_backoff=0.2, close_delay=0) as p:
        assert addresses(p.refresh()) == ["127.0.0.1:80"]
        assert ",".join(servers) in repr(p)
    with pytest.raises(TypeError, match="endpoints must be strings"):
        zookeeper.Publisher(zk_path, endpoints=["127.0.0.1:2181", 2181])  # type: ignore[list-item]


@pytest.mark.server
def test_tls_with_a_client_certificate(tls_zookeeper: ZooKeeperServer) -> None:
    certs = tls_zookeeper.certs
    tls = TLSConfig(ca=certs["ca"], cert=certs["client_cert"], key=certs["client_key"])
    path = f"/tls-{uuid.uuid4().hex[:8]}/api"
    with zookeeper.Registrar(path, "127.0.0.1:80", endpoints=tls_zookeeper.tls_hosts, tls=tls) as r:
        assert r.client.use_ssl and r.client.check_hostname  # kazoo checks the certificate and its name
        with zookeeper.Publisher(path, endpoints=tls_zookeeper.tls_hosts, tls=tls, close_delay=0) as p:
            assert addresses(p.refresh()) == ["127.0.0.1:80"] and not p.endpoints().stale
    # a client that does not trust the server's CA (tls=True: the system's) gets nothing: stale, not empty
    with zookeeper.Publisher(path, endpoints=tls_zookeeper.tls_hosts, tls=True, timeout=0.5, max_backoff=0.1) as p:
        endpoints = p.refresh()
        assert endpoints.stale and "no connection to ZooKeeper" in str(p.last_error)
    # nor does one without a client certificate (the server requires one)
    anonymous = TLSConfig(ca=certs["ca"])
    with zookeeper.Publisher(path, endpoints=tls_zookeeper.tls_hosts, tls=anonymous, timeout=0.5) as p:
        assert p.refresh().stale


def test_tls_settings_that_kazoo_cannot_take_are_type_errors(tmp_path: Path) -> None:
    import ssl

    with pytest.raises(TypeError, match=r"cannot use an ssl.SSLContext: give tls=loadbalancer.TLSConfig"):
        zookeeper.Publisher("/s", tls=ssl.create_default_context())
    with pytest.raises(TypeError, match="not both"):
        zookeeper.Registrar("/s", "127.0.0.1:80", client=KazooClient(hosts="127.0.0.1:1"), tls=True)
    with pytest.raises(TypeError, match="TLSConfig"):
        zookeeper.Backend(tls="ca.pem")  # type: ignore[arg-type]
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="missing.pem"):  # said now, not retried by kazoo for ever
        zookeeper.Registry(tls=TLSConfig(ca=missing))


def test_errors_belong_to_the_librarys_hierarchy() -> None:
    assert issubclass(zookeeper.InvalidNodeError, DiscoveryError) and issubclass(zookeeper.InvalidNodeError, Error)
    assert issubclass(zookeeper.InvalidNodeError, ValueError)
    with pytest.raises(zookeeper.InvalidNodeError):
        parse_node(b"nope")


def test_without_kazoo_the_import_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.startswith("loadbalancer.zookeeper")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "kazoo.client", None)  # as if kazoo were not installed
    with pytest.raises(ExtraNotInstalledError, match=r"pip install 'loadbalancer\[zookeeper\]'") as caught:
        importlib.import_module("loadbalancer.zookeeper")
    assert isinstance(caught.value, ImportError) and caught.value.name == "kazoo"
