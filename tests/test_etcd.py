"""etcd.Publisher against a real etcd member on loopback; endpoint and value parsing.

Every request goes to 127.0.0.1: the servers come from ``tests/etcd_server.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadbalancer import EndpointSet, Instance, InvalidInstanceError, NoEndpointsError, RoundRobin, TLSConfig, etcd
from loadbalancer.etcd._connection import key_prefix, parse_endpoints
from tests.etcd_server import EtcdServer, TcpProxy, free_tcp_port, make_certs, require_etcd, unique_prefix
from tests.helpers import Factory, aeventually, events, eventually

QUICK: dict[str, Any] = {"timeout": 1.0, "keepalive": 0.5, "max_backoff": 0.3, "close_delay": 0}


@pytest.fixture(scope="module")
def server() -> Iterator[EtcdServer]:
    """One etcd member for this module; each test uses a key prefix of its own."""
    require_etcd()
    with EtcdServer(progress_notify=0.5) as etcd_server:
        yield etcd_server


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


def publisher(server: EtcdServer, prefix: str, factory: Any = None, **options: Any) -> etcd.Publisher[Any]:
    return etcd.Publisher(prefix, factory or Factory(), endpoints=server.endpoints, **{**QUICK, **options})


def addresses(p: etcd.Publisher[Any]) -> list[str]:
    return [str(instance) for instance in p.endpoints().instances]


# -- publishing ------------------------------------------------------------------------------


def test_publishes_the_instances_under_the_prefix_in_key_order(server: EtcdServer, prefix: str) -> None:
    server.put(f"{prefix}/b", "127.0.0.1:8002")
    server.put(f"{prefix}/a", "127.0.0.1:8001")
    server.put(f"{prefix}x/c", "127.0.0.1:8003")  # a sibling prefix, not ours
    server.put(prefix, "127.0.0.1:8004")  # the prefix itself is not an instance
    factory = Factory()
    with publisher(server, prefix, factory) as p:
        eventually(lambda: addresses(p) == ["127.0.0.1:8001", "127.0.0.1:8002"], what="initial read")
        assert p.prefix == f"{prefix}/"
        assert not p.endpoints().stale
        assert p.revision >= server.revision() - 1
        assert [e.address for e in p.endpoints()] == ["127.0.0.1:8001", "127.0.0.1:8002"]
        assert factory.calls == {"127.0.0.1:8001": 1, "127.0.0.1:8002": 1}


def test_follows_puts_updates_and_deletes(server: EtcdServer, prefix: str) -> None:
    factory = Factory()
    seen: list[list[str]] = []
    with publisher(server, prefix, factory) as p:
        p.subscribe(lambda endpoints: seen.append([str(i) for i in endpoints.instances]))
        eventually(lambda: seen == [[]], what="the empty prefix published")
        server.put(f"{prefix}/a", "127.0.0.1:9001")
        eventually(lambda: addresses(p) == ["127.0.0.1:9001"], what="put")
        first = p.endpoints()[0]
        server.put(f"{prefix}/b", "127.0.0.1:9002")
        eventually(lambda: addresses(p) == ["127.0.0.1:9001", "127.0.0.1:9002"], what="second put")
        assert p.endpoints()[0] is first  # unchanged instance, same endpoint
        server.put(f"{prefix}/a", "127.0.0.1:9003")  # a changes address
        eventually(lambda: addresses(p) == ["127.0.0.1:9003", "127.0.0.1:9002"], what="update")
        eventually(lambda: first.closed, what="the replaced endpoint closed")
        server.delete(f"{prefix}/b")
        eventually(lambda: addresses(p) == ["127.0.0.1:9003"], what="delete")
        revision = server.delete(f"{prefix}/a")
        eventually(lambda: addresses(p) == [] and p.revision >= revision, what="last delete")
        assert not p.endpoints().stale  # a deleted key is authoritative: empty, not stale
    assert seen[-1] == []
    assert factory.calls == {"127.0.0.1:9001": 1, "127.0.0.1:9002": 1, "127.0.0.1:9003": 1}


def test_reads_json_values_with_their_attributes(server: EtcdServer, prefix: str) -> None:
    document = {
        "name": "api",
        "host": "127.0.0.1",
        "port": 7001,
        "weight": 10,
        "priority": 2,
        "tags": ["blue", "canary"],
        "metadata": {"zone": "z1"},
    }
    server.put(f"{prefix}/a", json.dumps(document))
    server.put(f"{prefix}/b", json.dumps({"host": "::1", "port": "7002"}))
    with publisher(server, prefix) as p:
        eventually(lambda: len(p.endpoints()) == 2, what="both read")
        a, b = p.endpoints().instances
        assert a == Instance("127.0.0.1", 7001, weight=10, priority=2, tags=("blue", "canary"), metadata={"zone": "z1"})
        assert (b.host, b.port, b.weight, b.priority, str(b)) == ("::1", 7002, 1, 0, "[::1]:7002")
        server.put(f"{prefix}/a", json.dumps({**document, "weight": 20}))  # same address, new weight
        eventually(lambda: p.endpoints().instances[0].weight == 20, what="weight change published")


def test_a_malformed_value_is_skipped_and_logged_with_its_key_and_value(
    server: EtcdServer, prefix: str, logs: pytest.LogCaptureFixture
) -> None:
    server.put(f"{prefix}/good", "127.0.0.1:6001")
    server.put(f"{prefix}/bad1", "not an address")
    with publisher(server, prefix) as p:
        eventually(lambda: addresses(p) == ["127.0.0.1:6001"], what="good one read")
        for value in ['{"host": "127.0.0.1"}', "{broken json", "127.0.0.1:99999", b"\xff\xfe", "[1, 2]"]:
            server.put(f"{prefix}/bad2", value)
        server.put(f"{prefix}/later", "127.0.0.1:6002")
        eventually(lambda: addresses(p) == ["127.0.0.1:6001", "127.0.0.1:6002"], what="the watch goes on")
        server.put(f"{prefix}/bad1", "127.0.0.1:6003")  # fixed
        eventually(lambda: addresses(p) == ["127.0.0.1:6003", "127.0.0.1:6001", "127.0.0.1:6002"], what="fixed")
        server.delete(f"{prefix}/bad2")  # deleting a malformed key is no change
        server.put(f"{prefix}/last", "127.0.0.1:6004")
        eventually(lambda: "127.0.0.1:6004" in addresses(p), what="after the delete")
    bad = events(logs, "etcd_value_invalid")
    assert [(r.key, r.value) for r in bad] == [
        (f"{prefix}/bad1", "not an address"),
        (f"{prefix}/bad2", '{"host": "127.0.0.1"}'),
        (f"{prefix}/bad2", "{broken json"),
        (f"{prefix}/bad2", "127.0.0.1:99999"),
        (f"{prefix}/bad2", "\\xff\\xfe"),
        (f"{prefix}/bad2", "[1, 2]"),
    ]
    assert all(r.levelno == logging.ERROR for r in bad)
    assert "port" in bad[1].error and "port 99999" in bad[3].error


def test_an_expired_lease_removes_its_instance(server: EtcdServer, prefix: str) -> None:
    lease = server.grant(1)
    server.put(f"{prefix}/leased", "127.0.0.1:5001", lease=lease)
    server.put(f"{prefix}/kept", "127.0.0.1:5002")
    with publisher(server, prefix) as p:
        eventually(lambda: len(p.endpoints()) == 2, what="both read")
        eventually(lambda: addresses(p) == ["127.0.0.1:5002"], timeout=10, what="the leased key expired")
        assert not p.endpoints().stale


def test_refresh_reads_now(server: EtcdServer, prefix: str) -> None:
    server.put(f"{prefix}/a", "127.0.0.1:4001")
    with publisher(server, prefix) as p:
        assert [str(i) for i in p.refresh().instances] == ["127.0.0.1:4001"]
        server.put(f"{prefix}/b", "127.0.0.1:4002")
        refreshed = p.refresh()
        assert [str(i) for i in refreshed.instances] == ["127.0.0.1:4001", "127.0.0.1:4002"]
        assert p.revision >= server.revision() - 1
        assert not refreshed.stale


def test_a_namespace_goes_before_every_key(server: EtcdServer, prefix: str) -> None:
    server.put(f"/ns1{prefix}/a", "127.0.0.1:3001")
    server.put(f"/ns2{prefix}/a", "127.0.0.1:3002")
    server.put(f"{prefix}/a", "127.0.0.1:3003")
    connection = f"{server.url},127.0.0.1:{free_tcp_port()}/ns1/"
    with etcd.Publisher(prefix, str, endpoints=connection, **QUICK) as p:
        assert p.prefix == f"/ns1{prefix}/"
        eventually(lambda: list(p.endpoints()) == ["127.0.0.1:3001"], what="only the namespaced key")
    with etcd.Publisher(prefix.lstrip("/"), str, endpoints=server.endpoints, namespace="ns2", **QUICK) as p:
        assert p.prefix == f"/ns2{prefix}/"
        eventually(lambda: list(p.endpoints()) == ["127.0.0.1:3002"], what="namespace= works too")


def test_a_dead_first_member_is_skipped(server: EtcdServer, prefix: str) -> None:
    server.put(f"{prefix}/a", "127.0.0.1:2001")
    dead = f"http://127.0.0.1:{free_tcp_port()}"
    with etcd.Publisher(prefix, str, endpoints=[dead, server.url], **QUICK) as p:
        eventually(lambda: list(p.endpoints()) == ["127.0.0.1:2001"], what="read from the second member")
        assert p.member == server.url
        server.put(f"{prefix}/b", "127.0.0.1:2002")
        eventually(lambda: len(p.endpoints()) == 2, what="watching the second member")


def test_no_server_keeps_an_empty_stale_set_that_names_the_member(prefix: str) -> None:
    dead = f"http://127.0.0.1:{free_tcp_port()}"
    with etcd.Publisher(prefix, str, endpoints=dead, **QUICK) as p:
        eventually(lambda: p.last_error is not None, what="the failure recorded")
        error = p.last_error
        assert isinstance(error, etcd.EtcdError)
        assert error.member == dead and error.key == f"{prefix}/"
        assert dead in str(error) and f"{prefix}/" in str(error)
        assert p.endpoints().stale and len(p.endpoints()) == 0
        with pytest.raises(NoEndpointsError):
            RoundRobin(p).endpoint()


@pytest.mark.server
def test_a_stopped_server_keeps_the_stale_set_and_recovery_brings_missed_changes(
    prefix: str, logs: pytest.LogCaptureFixture
) -> None:
    require_etcd()
    with EtcdServer() as server:
        server.put(f"{prefix}/a", "127.0.0.1:1101")
        with publisher(server, prefix) as p:
            eventually(lambda: addresses(p) == ["127.0.0.1:1101"], what="initial read")
            server.stop()
            eventually(lambda: p.endpoints().stale, what="stale after the server went")
            assert addresses(p) == ["127.0.0.1:1101"]  # stale beats empty
            assert isinstance(p.last_error, etcd.EtcdError) and p.last_error.member == server.url
            server.start()
            server.put(f"{prefix}/b", "127.0.0.1:1102")
            eventually(
                lambda: addresses(p) == ["127.0.0.1:1101", "127.0.0.1:1102"] and not p.endpoints().stale,
                what="fresh again, with the change",
            )
            assert p.last_error is None
    assert not events(logs, "etcd_resync")  # resumed from its revision, not read again


# -- compaction ----------------------------------------------------------------------------


def test_a_watch_resumed_past_compacted_history_reads_the_prefix_again(
    server: EtcdServer, prefix: str, logs: pytest.LogCaptureFixture
) -> None:
    # The publisher talks to a proxy that can be cut; while it is cut, changes happen and the
    # history is compacted, so the watch cannot resume from the revision it had reached.
    server.put(f"{prefix}/a", "127.0.0.1:1201")
    server.put(f"{prefix}/b", "127.0.0.1:1202")
    with TcpProxy(server.member.client_port) as proxy, etcd.Publisher(prefix, str, endpoints=proxy.url, **QUICK) as p:
        eventually(lambda: len(p.endpoints()) == 2, what="initial read")
        proxy.cut()
        eventually(lambda: p.endpoints().stale, what="stale while cut off")
        server.delete(f"{prefix}/a")
        server.put(f"{prefix}/c", "127.0.0.1:1203")
        server.put(f"{prefix}/b", "127.0.0.1:1204")
        compacted = server.compact()
        proxy.restore()
        eventually(
            lambda: list(p.endpoints()) == ["127.0.0.1:1204", "127.0.0.1:1203"] and not p.endpoints().stale,
            what="the new state read again",
        )
        assert p.revision >= compacted
    resyncs = events(logs, "etcd_resync")
    assert len(resyncs) == 1 and "compacted" in resyncs[0].reason


# -- async and threads ---------------------------------------------------------------------


async def test_async_use(server: EtcdServer, prefix: str) -> None:
    server.put(f"{prefix}/a", "127.0.0.1:1301")
    async with etcd.Publisher(prefix, str, endpoints=server.url, **QUICK) as p:
        refreshed = await p.arefresh()
        assert list(refreshed) == ["127.0.0.1:1301"]
        seen: list[list[str]] = []

        async def follow() -> None:
            async for endpoints in p.updates():
                seen.append(list(endpoints))
                if len(endpoints) == 2:
                    return

        follower = asyncio.create_task(follow())
        await aeventually(lambda: bool(seen), what="the current set")
        await asyncio.to_thread(server.put, f"{prefix}/b", "127.0.0.1:1302")
        await asyncio.wait_for(follower, 10)
        assert seen[0] == ["127.0.0.1:1301"] and seen[-1] == ["127.0.0.1:1301", "127.0.0.1:1302"]


def test_picks_from_threads_while_changes_stream(server: EtcdServer, prefix: str) -> None:
    # Busy pickers hold the GIL for 5 ms at a time by default; the thread making changes and
    # the runtime's thread wait for it at every system call: switch sooner to keep this short.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        _picks_while_changes_stream(server, prefix)
    finally:
        sys.setswitchinterval(previous)


def _picks_while_changes_stream(server: EtcdServer, prefix: str) -> None:
    stable = [f"127.0.0.1:{port}" for port in (1401, 1402, 1403)]
    for i, address in enumerate(stable):
        server.put(f"{prefix}/stable{i}", address)
    factory = Factory()
    with publisher(server, prefix, factory, close_delay=1.0) as p:
        eventually(lambda: len(p.endpoints()) == 3, what="initial read")
        balancer = RoundRobin(p)
        stop = threading.Event()
        errors: list[BaseException] = []
        picks = [0] * 4

        def pick(slot: int) -> None:
            try:
                while not stop.is_set():
                    balancer.endpoint()("ping")
                    picks[slot] += 1
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=pick, args=(slot,)) for slot in range(len(picks))]
        for thread in threads:
            thread.start()
        try:
            for n in range(150):
                key = f"{prefix}/churn{n % 10}"
                if n % 3 == 2:
                    server.delete(key)
                else:
                    server.put(key, f"127.0.0.1:{2000 + n}")
            final = server.keys(f"{prefix}/")
            expected = [final[key] for key in sorted(final)]
            eventually(lambda: addresses(p) == expected, timeout=10, what="the final state")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not errors
        assert all(count > 0 for count in picks)
        assert not any(endpoint.called_after_close for endpoint in factory.made)
        assert all(count == 1 for count in factory.calls.values())  # one endpoint per address entering


# -- authentication and TLS ----------------------------------------------------------------


@pytest.mark.server
def test_user_and_password_with_tokens_that_expire(prefix: str, logs: pytest.LogCaptureFixture) -> None:
    require_etcd()
    with EtcdServer(auth_token_ttl=1) as server:
        server.enable_auth("s3cret")
        server.put(f"{prefix}/a", "127.0.0.1:1501")
        options = {**QUICK, "endpoints": server.url, "username": "root"}
        registrar = etcd.Registrar(prefix, "127.0.0.1:1502", endpoints=server.url, username="root", password="s3cret")
        registrar.register()
        # No idle probes (each use of a token keeps it alive): the token can expire.
        with etcd.Publisher(prefix, str, password="s3cret", **{**options, "keepalive": 60}) as p:
            eventually(lambda: len(p.endpoints()) == 2, what="read with a token")
            server.put(f"{prefix}/b", "127.0.0.1:1503")
            eventually(lambda: len(p.endpoints()) == 3, what="watched with a token")
            tokens = {"publisher": p._client._tokens[server.url], "registrar": registrar._client._tokens[server.url]}
            time.sleep(2.5)  # a token lives 1 s after its last use (lease keep-alives do not check it)
            server.put(f"{prefix}/c", "127.0.0.1:1504")
            refreshed = p.refresh()  # a range with the expired token: authenticates again
            assert not refreshed.stale and len(refreshed) == 4
            assert p._client._tokens[server.url] != tokens["publisher"]
            registrar.close()  # revoking the lease checks the token: authenticates again
            assert server.get(registrar.key) is None
            assert registrar._client._tokens[server.url] != tokens["registrar"]
            server.stop()  # a restarted member knows no token
            server.start()
            server.put(f"{prefix}/d", "127.0.0.1:1505")
            eventually(lambda: len(p.endpoints()) == 4 and not p.endpoints().stale, what="watching again")
            assert [r.member for r in events(logs, "etcd_token_refused")] == [server.url]  # then a new one
        with etcd.Publisher(prefix, str, password="wrong", **options) as p:
            eventually(lambda: p.last_error is not None, what="refused")
            assert "authentication failed" in str(p.last_error) and server.url in str(p.last_error)
            assert len(p.endpoints()) == 0


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    try:
        return make_certs(tmp_path_factory.mktemp("certs"))
    except RuntimeError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def tls_server(certs: dict[str, str]) -> Iterator[EtcdServer]:
    """One etcd member serving clients over TLS only, asking them for a certificate signed by the test CA."""
    require_etcd()
    with EtcdServer(tls=(certs["server_cert"], certs["server_key"], certs["ca"]), client_cert_auth=True) as server:
        assert server.url.startswith("https://127.0.0.1:")
        yield server


def client_tls(certs: dict[str, str]) -> TLSConfig:
    return TLSConfig(ca=certs["ca"], cert=certs["client_cert"], key=certs["client_key"])


@pytest.mark.server
def test_tls_with_a_client_certificate(tls_server: EtcdServer, certs: dict[str, str], prefix: str) -> None:
    server = tls_server
    server.put(f"{prefix}/a", "127.0.0.1:1601")
    with etcd.Publisher(prefix, str, endpoints=server.url, tls=client_tls(certs), **QUICK) as p:
        eventually(lambda: list(p.endpoints()) == ["127.0.0.1:1601"], what="read over TLS")
        server.put(f"{prefix}/b", "127.0.0.1:1602")
        eventually(lambda: len(p.endpoints()) == 2, what="watched over TLS")
    with etcd.Publisher(prefix, str, endpoints=server.url, tls=TLSConfig(ca=certs["ca"]), **QUICK) as p:
        eventually(lambda: p.last_error is not None, what="refused without a client certificate")
        assert len(p.endpoints()) == 0
    untrusted = TLSConfig(cert=certs["client_cert"], key=certs["client_key"])
    with etcd.Publisher(prefix, str, endpoints=server.url, tls=untrusted, **QUICK) as p:
        eventually(lambda: p.last_error is not None, what="the test CA is not trusted by default")
        assert "CERTIFICATE_VERIFY_FAILED" in str(p.last_error)
    with etcd.Publisher(prefix, str, endpoints=server.url, **QUICK) as p:  # https:// without tls=: the system's CAs
        eventually(lambda: p.last_error is not None, what="the test CA is not trusted by default")
        assert "CERTIFICATE_VERIFY_FAILED" in str(p.last_error)


@pytest.mark.server
def test_tls_makes_members_without_a_scheme_https(
    tls_server: EtcdServer, certs: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    server = tls_server
    server.put(f"{prefix}/a", "127.0.0.1:1611")
    bare = f"127.0.0.1:{server.member.client_port}"
    context = client_tls(certs).context()
    for tls in (client_tls(certs), context):
        with etcd.Publisher(prefix, str, endpoints=bare, tls=tls, **QUICK) as p:
            assert p.member == server.url  # https://
            eventually(lambda: list(p.endpoints()) == ["127.0.0.1:1611"], what="read over TLS")
    registrar = etcd.Registrar(prefix, "127.0.0.1:1612", endpoints=bare, tls=context, ttl=5)
    with etcd.Registry(f"{bare}/ns", tls=context) as registry:
        with registrar:
            assert server.get(f"{prefix}/127.0.0.1:1612") is not None
        registry.join("api", "127.0.0.1:1613")
        assert [str(i) for i in registry.list("api")] == ["127.0.0.1:1613"]
        with registry.publisher("api", str, **QUICK) as p:
            eventually(lambda: list(p.endpoints()) == ["127.0.0.1:1613"], what="the registry's publisher over TLS")


async def test_the_client_in_async_code_and_under_a_backend(server: EtcdServer, prefix: str) -> None:
    from loadbalancer.backend import Publisher as GenericPublisher

    await asyncio.to_thread(server.put, f"{prefix}/a", "127.0.0.1:1631")
    dead = f"127.0.0.1:{free_tcp_port()}"
    async with etcd.Client([f"http://{dead}", server.url], timeout=1) as client:
        status = await client.call("/v3/maintenance/status", {})  # the dead member first: moved on
        assert "version" in status and client.member == server.url
        with pytest.raises(etcd.EtcdError, match=r"range '/nothing' failed") as caught:
            await client.call("/v3/kv/range", {"key": "not base64!"}, key="/nothing")
        assert caught.value.member == server.url
    client = etcd.Client(server.url, timeout=1)
    assert repr(client) == f"etcd.Client({server.url!r})"
    async with GenericPublisher(etcd.Backend(client), f"{prefix}/", str, own=True) as p:
        await p.await_ready(10)
        assert list(p.endpoints()) == ["127.0.0.1:1631"]


@pytest.mark.server
def test_the_old_verify_and_cert_keywords_still_work_and_warn(
    tls_server: EtcdServer, certs: dict[str, str], prefix: str
) -> None:
    server = tls_server
    server.put(f"{prefix}/a", "127.0.0.1:1621")
    client_cert = (certs["client_cert"], certs["client_key"])
    with pytest.warns(DeprecationWarning, match=r"verify= is deprecated: write tls="):
        p = etcd.Publisher(prefix, str, endpoints=server.url, verify=certs["ca"], cert=client_cert, **QUICK)
    with p:
        eventually(lambda: list(p.endpoints()) == ["127.0.0.1:1621"], what="read over TLS")
    with pytest.warns(DeprecationWarning, match=r"cert= is deprecated: write tls="):
        registrar = etcd.Registrar(prefix, "127.0.0.1:1622", endpoints=server.url, cert=client_cert, ttl=5)
    with pytest.raises(etcd.EtcdError, match="CERTIFICATE_VERIFY_FAILED"):
        registrar.register()  # cert= alone: the system's CAs, which do not know the test CA
    registrar.close()
    with pytest.warns(DeprecationWarning, match=r"verify= is deprecated"):
        registry = etcd.Registry(server.url, verify=certs["ca"], cert=client_cert)
    with registry:
        registry.join("api", "127.0.0.1:1623")
        assert [str(i) for i in registry.list("api")] == ["127.0.0.1:1623"]
    with pytest.warns(DeprecationWarning, match=r"verify= is deprecated"):
        client = etcd.Client(server.url, verify=False)
    assert client.members == (server.url,)
    with pytest.raises(TypeError, match="tls= alone"), pytest.warns(DeprecationWarning, match="verify="):
        etcd.Publisher(prefix, str, endpoints=server.url, verify=False, tls=True)


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoints", "members", "namespace"),
    [
        ("127.0.0.1:2379", ("http://127.0.0.1:2379",), ""),
        ("127.0.0.1", ("http://127.0.0.1:2379",), ""),
        ("http://h1:2379,h2:2380/namespace", ("http://h1:2379", "http://h2:2380"), "/namespace"),
        ("https://h1,h2:1/a/b/", ("https://h1:2379", "https://h2:1"), "/a/b"),
        ("http://h1:1,https://h2:2,h3:3", ("http://h1:1", "https://h2:2", "https://h3:3"), ""),
        ("[::1]:2379/ns", ("http://[::1]:2379",), "/ns"),
        (["http://127.0.0.1:1", "http://127.0.0.1:2"], ("http://127.0.0.1:1", "http://127.0.0.1:2"), ""),
        ("HTTP://Etcd-1.internal:2379/", ("http://Etcd-1.internal:2379",), ""),
    ],
)
def test_connection_strings(endpoints: Any, members: tuple[str, ...], namespace: str) -> None:
    connection = parse_endpoints(endpoints)
    assert connection.members == members
    assert connection.namespace == namespace


@pytest.mark.parametrize(
    ("endpoints", "reason"),
    [
        ("", "no member given"),
        ("h1:2379,,h2:2379", "empty member"),
        ("ftp://h1:2379", "scheme 'ftp'"),
        ("http://:2379", "has no host"),
        ("h1:port", "port 'port'"),
        ("h1:70000", "port '70000'"),
        ("h1:", "port ''"),
        ("h1/a,h2/b", "different namespaces"),
        ("[::g]:1", "not an IPv6 address"),
        ("user@h1:2379", "is not [scheme://]host"),
        ("h1:1,h1:1", "named twice"),
        ("bad host:1", "not a host name"),
    ],
)
def test_bad_connection_strings_raise_value_errors_quoting_them(endpoints: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as caught:
        etcd.Publisher("/services/api", str, endpoints=endpoints)
    assert repr(endpoints) in str(caught.value)


def test_members_without_a_scheme_take_https_when_tls_is_given() -> None:
    assert parse_endpoints("h1,h2:2380/ns", scheme="https").members == ("https://h1:2379", "https://h2:2380")
    assert etcd.Client("h1,h2").members == ("http://h1:2379", "http://h2:2379")
    assert etcd.Client("h1,h2", tls=True).members == ("https://h1:2379", "https://h2:2379")
    assert etcd.Client("h1", tls=False).members == ("http://h1:2379",)
    assert etcd.Client("http://h1,h2", tls=True).members == ("http://h1:2379", "http://h2:2379")  # as written
    client = etcd.Client("h1:1/ns", tls=TLSConfig(verify=False), username="u", password="p", timeout=2)
    assert (client.members, client.namespace, client.timeout) == (("https://h1:1",), "/ns", 2.0)
    assert repr(client) == "etcd.Client('https://h1:1', namespace='/ns')"
    assert etcd.Publisher("/services/api", str, endpoints="h1", tls=True).member == "https://h1:2379"
    assert etcd.Registry("h1/prod", tls=True).prefix("api") == "/prod/services/api/"
    assert etcd.Registry("h1", namespace="prod", prefix="/svc").prefix("api") == "/prod/svc/api/"
    with pytest.raises(TypeError, match="tls= must be a loadbalancer.TLSConfig"):
        etcd.Client("h1", tls="ca.pem")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot load the CA file 'missing.pem'"):
        etcd.Registrar("/services/api", "127.0.0.1:80", endpoints="h1", tls=TLSConfig(ca="missing.pem"))
    with pytest.raises(ValueError, match="username= and password="):
        etcd.Client("h1", username="root")


def test_the_registrys_old_connection_keyword_still_works_and_warns() -> None:
    with pytest.warns(DeprecationWarning, match=r"Registry\(connection=\.\.\.\) is deprecated: write endpoints="):
        registry = etcd.Registry(connection="http://h1:2379,h2/prod")
    with registry:
        assert registry.prefix("api") == "/prod/services/api/"
        assert registry.backend.client.members == ("http://h1:2379", "http://h2:2379")  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="both connection= and endpoints="):
        etcd.Registry(connection="h1", endpoints="h2")


MISSING_HTTPX = """
import sys
sys.modules["httpx"] = None  # as if it were not installed
from loadbalancer.errors import ExtraNotInstalledError
try:
    import loadbalancer.{package}
except ExtraNotInstalledError as error:
    print(error.extra, error.name, isinstance(error, ImportError), error, sep="|")
"""


def test_a_missing_httpx_names_the_extra() -> None:
    import subprocess

    code = MISSING_HTTPX.format(package="etcd")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip().split("|") == [
        "etcd",
        "httpx",
        "True",
        "loadbalancer.etcd needs an optional dependency (httpx): pip install 'loadbalancer[etcd]'",
    ]


def test_prefixes_and_namespaces() -> None:
    assert key_prefix("", "/services/api") == "/services/api/"
    assert key_prefix("", "/services/api/") == "/services/api/"
    assert key_prefix("/ns", "services/api") == "/ns/services/api/"
    assert key_prefix("", "/") == "/"
    with pytest.raises(ValueError, match="invalid etcd key prefix ''"):
        key_prefix("", "")
    with pytest.raises(ValueError, match="differs from namespace="):
        parse_endpoints("h1/a", namespace="b")
    assert parse_endpoints("h1/a", namespace="/a/").namespace == "/a"
    with pytest.raises(ValueError, match="positive"):
        etcd.Publisher("/x", str, keepalive=0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"10.0.0.1:80", Instance("10.0.0.1", 80)),
        (b"  api.internal:443\n", Instance("api.internal", 443)),
        (b"[::1]:80", Instance("::1", 80)),
        (b'{"host": "[::1]", "port": 80}', Instance("::1", 80)),
        (b'{"host": "a", "port": 1, "weight": 0, "tags": [], "extra": {"x": 1}}', Instance("a", 1, weight=0)),
    ],
)
def test_values(raw: bytes, expected: Instance) -> None:
    assert etcd.parse_value(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"host", "missing ':port'"),
        (b"{", "not valid JSON"),
        (b'"a:1"', "is not a valid host name"),  # a JSON string is not a document
        (b'{"port": 1}', "'host'"),
        (b'{"host": "a", "port": true}', "'port'"),
        (b'{"host": "a", "port": 1, "weight": -1}', "'weight'"),
        (b'{"host": "a", "port": 1, "tags": "x"}', "'tags'"),
        (b'{"host": "a", "port": 1, "metadata": {"n": 1}}', "'metadata'"),
        (b'{"host": "a b", "port": 1}', "not a valid host name"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_malformed_values(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidInstanceError, match=reason):
        etcd.parse_value(raw)


def test_encoded_values_read_back() -> None:
    instance = Instance("10.0.0.1", 80, weight=5, priority=1, tags=("a",), metadata={"k": "v"})
    encoded = etcd.encode_value(instance, "api")
    assert json.loads(encoded)["name"] == "api"
    assert etcd.parse_value(encoded.encode()) == instance
    assert etcd.encode_value(Instance("10.0.0.1", 80)) == '{"host":"10.0.0.1","port":80}'


def test_endpoint_set_type(server: EtcdServer, prefix: str) -> None:
    with publisher(server, prefix) as p:
        eventually(lambda: p.revision > 0, what="read")
        assert isinstance(p.endpoints(), EndpointSet)
        assert repr(p).startswith(f"etcd.Publisher('{prefix}/'")
