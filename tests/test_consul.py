"""consul.Publisher, Registrar and Registry against the Consul API test server (a separate process on loopback)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from loadbalancer import Instance, RoundRobin, consul
from loadbalancer.backend import Registry as GenericRegistry
from loadbalancer.consul._client import go_duration, parse_address
from tests.consul_fixtures import ConsulServer
from tests.helpers import Factory, events, eventually

QUICK: dict[str, Any] = {"wait": 5.0, "max_backoff": 0.3, "close_delay": 0, "timeout": 2.0}


def publisher(server: ConsulServer, service: str = "api", factory: Any = None, **options: Any) -> consul.Publisher[Any]:
    return consul.Publisher(service, factory, address=server.url, token=server.token, **{**QUICK, **options})


def addresses(p: consul.Publisher[Any]) -> list[str]:
    return [str(instance) for instance in p.endpoints().instances]


# -- unit: addresses, durations, entries -----------------------------------------------------


def test_addresses_take_a_scheme_and_default_port_and_bad_ones_are_named() -> None:
    assert parse_address("127.0.0.1") == "http://127.0.0.1:8500"
    assert parse_address("https://consul.example:8501") == "https://consul.example:8501"
    assert parse_address("[::1]:8500") == "http://[::1]:8500"
    with pytest.raises(ValueError, match="'ftp://x'"):
        parse_address("ftp://x")
    with pytest.raises(ValueError, match="port is not a number"):
        parse_address("127.0.0.1:http")
    assert go_duration(2.5) == "2.5s" and go_duration(10) == "10s"


def test_an_entry_becomes_an_instance_with_node_address_fallback_weights_tags_and_meta() -> None:
    entry = {
        "Node": {"Node": "n1", "Address": "10.0.0.9"},
        "Service": {"ID": "a", "Address": "", "Port": 80, "Tags": ["x"], "Meta": {"zone": "eu"},
                    "Weights": {"Passing": 5, "Warning": 2}},
        "Checks": [{"Status": "passing"}, {"Status": "warning"}],
    }  # fmt: skip
    instance = consul.instance_of(entry)
    assert instance == Instance("10.0.0.9", 80, weight=2, tags=("x",), metadata={"zone": "eu"})
    entry["Checks"] = [{"Status": "passing"}]
    entry["Service"]["Address"] = "10.0.0.1"
    assert consul.instance_of(entry) == Instance("10.0.0.1", 80, weight=5, tags=("x",), metadata={"zone": "eu"})


def test_bad_arguments_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="''"):
        consul.Publisher("", address="127.0.0.1:1")
    with pytest.raises(ValueError, match="'not-a-url'"):
        consul.Registrar("api", "127.0.0.1:80", address="127.0.0.1:1", http_check="not-a-url")
    with pytest.raises(ValueError, match="wait"):
        consul.Publisher("api", address="127.0.0.1:1", wait=601)
    with pytest.raises(ValueError, match="datacenter 'a/b'"):
        consul.Publisher("api", address="127.0.0.1:1", datacenter="a/b")


# -- publishing ------------------------------------------------------------------------------


@pytest.mark.server
def test_instances_joining_and_leaving_under_a_watch(consul_server: ConsulServer) -> None:
    consul_server.register("api", "api-2", 9002)
    factory = Factory()
    with publisher(consul_server, factory=factory) as p:
        eventually(lambda: addresses(p) == ["127.0.0.1:9002"], what="initial read")
        consul_server.register("api", "api-1", 9001)
        eventually(lambda: addresses(p) == ["127.0.0.1:9001", "127.0.0.1:9002"], what="join")
        kept = p.endpoints()[1]
        consul_server.deregister("api-1")
        eventually(lambda: addresses(p) == ["127.0.0.1:9002"], what="leave")
        assert p.endpoints()[0] is kept  # unchanged instance, same endpoint
        gone = [e for e in factory.made if e.address == "127.0.0.1:9001"]
        eventually(lambda: gone[0].closed, what="the endpoint of the instance that left closed")
        assert p.index > 0
        consul_server.deregister("api-2")
        eventually(lambda: addresses(p) == [], what="authoritative empty")
        assert not p.endpoints().stale


@pytest.mark.server
def test_a_change_arrives_by_the_blocking_query_not_by_polling(consul_server: ConsulServer) -> None:
    consul_server.register("api", "api-1", 9001)
    with publisher(consul_server, wait=600.0) as p:  # no answer would come for ten minutes without a change
        eventually(lambda: addresses(p) == ["127.0.0.1:9001"], what="initial read")
        consul_server.register("api", "api-2", 9002)
        eventually(lambda: len(addresses(p)) == 2, timeout=10, what="the change through the blocking query")


@pytest.mark.server
def test_health_flipping_to_critical_drops_the_instance_and_back(consul_server: ConsulServer) -> None:
    consul_server.register("api", "api-1", 9001)
    consul_server.register("api", "api-2", 9002)
    with publisher(consul_server) as p, publisher(consul_server, passing_only=False) as everyone:
        eventually(lambda: len(addresses(p)) == 2, what="both passing")
        consul_server.check("fail", "service:api-1")
        eventually(lambda: addresses(p) == ["127.0.0.1:9002"], what="critical dropped")
        eventually(lambda: len(addresses(everyone)) == 2, what="passing_only=False keeps it")
        consul_server.check("pass", "service:api-1")
        eventually(lambda: len(addresses(p)) == 2, what="passing again")


@pytest.mark.server
def test_tags_weights_meta_and_the_node_address(consul_server: ConsulServer) -> None:
    consul_server.register("api", "api-1", 9001, Tags=["v2", "eu"], Meta={"zone": "eu-1"},
                           Weights={"Passing": 7, "Warning": 1})  # fmt: skip
    consul_server.register("api", "api-2", 9002, Tags=["v2"])
    consul_server.register("api", "api-3", 9003, Tags=["eu"], Address="")
    with publisher(consul_server, tags=["v2", "eu"]) as both, publisher(consul_server, tags="eu") as eu:
        eventually(lambda: addresses(both) == ["127.0.0.1:9001"], what="every tag must match")
        instance = both.endpoints().instances[0]
        assert instance.weight == 7 and instance.metadata == {"zone": "eu-1"} and set(instance.tags) == {"v2", "eu"}
        eventually(lambda: len(addresses(eu)) == 2, what="one tag")
        consul_server.request("PUT", "/_test/node-address/127.0.0.2")
        eventually(lambda: addresses(eu) == ["127.0.0.1:9001", "127.0.0.2:9003"], what="node address fallback")


@pytest.mark.server
def test_the_agent_killed_keeps_the_stale_set_and_recovers_after_a_restart(
    consul_server: ConsulServer, logs: pytest.LogCaptureFixture
) -> None:
    consul_server.register("api", "api-1", 9001)
    with publisher(consul_server) as p:
        eventually(lambda: addresses(p) == ["127.0.0.1:9001"], what="initial read")
        consul_server.kill()
        eventually(lambda: p.endpoints().stale, timeout=10, what="stale")
        assert addresses(p) == ["127.0.0.1:9001"]  # stale beats empty
        consul_server.start()  # a fresh agent: its index starts lower, the service is gone until registered
        consul_server.register("api", "api-2", 9002)
        eventually(lambda: addresses(p) == ["127.0.0.1:9002"], timeout=15, what="recovered")
        assert not p.endpoints().stale
    assert events(logs, "consul_watch_failed")


@pytest.mark.server
def test_an_index_going_backwards_lists_afresh(consul_server: ConsulServer, logs: pytest.LogCaptureFixture) -> None:
    consul_server.register("api", "api-1", 9001)
    with publisher(consul_server) as p:
        eventually(lambda: addresses(p) == ["127.0.0.1:9001"], what="initial read")
        before = p.index
        consul_server.request("PUT", "/_test/index/2")  # a snapshot restore: the index goes back
        eventually(lambda: p.index < before, timeout=10, what="the index reset")
        consul_server.register("api", "api-2", 9002)
        eventually(lambda: len(addresses(p)) == 2, timeout=10, what="changes seen after the reset")
    assert events(logs, "consul_resync")


@pytest.mark.server
def test_an_index_not_above_zero_does_not_spin(consul_server: ConsulServer, logs: pytest.LogCaptureFixture) -> None:
    consul_server.register("api", "api-1", 9001)
    with publisher(consul_server) as p:
        eventually(lambda: addresses(p) == ["127.0.0.1:9001"], what="initial read")
        consul_server.request("PUT", "/_test/index/0")
        consul_server.register("api", "api-2", 9002)  # index 1: the watch goes on from there
        eventually(lambda: len(addresses(p)) == 2, timeout=10, what="a change after the index reset")
        assert p.index >= 1


@pytest.mark.server
def test_acl_token_is_sent_and_a_wrong_one_is_an_error_that_keeps_the_set(consul_acl_server: ConsulServer) -> None:
    consul_acl_server.register("api", "api-1", 9001)
    with publisher(consul_acl_server) as p:
        eventually(lambda: addresses(p) == ["127.0.0.1:9001"], what="read with the token")
    with consul.Publisher("api", address=consul_acl_server.url, token="wrong", **QUICK) as bad:
        eventually(lambda: bad.endpoints().stale, what="the refusal recorded")
        error = bad.endpoints().error
        assert isinstance(error, consul.ConsulError) and error.denied and "ACL not found" in str(error)


@pytest.mark.server
def test_a_balancer_over_the_publisher(consul_server: ConsulServer) -> None:
    consul_server.register("api", "api-1", 9001)
    consul_server.register("api", "api-2", 9002)
    with publisher(consul_server, factory=str) as p:
        eventually(lambda: len(addresses(p)) == 2, what="both")
        lb = RoundRobin(p)
        assert sorted(lb.endpoint() for _ in range(2)) == ["127.0.0.1:9001", "127.0.0.1:9002"]


# -- registering -----------------------------------------------------------------------------


@pytest.mark.server
def test_the_registrar_keeps_its_ttl_alive_past_several_ttls_and_removes_the_service_on_close(
    consul_server: ConsulServer,
) -> None:
    registrar = consul.Registrar(
        "api", Instance("127.0.0.1", 9001, tags=("v1",), metadata={"zone": "eu"}), address=consul_server.url, ttl=1
    )
    with registrar:
        entries = consul_server.health("api", "?passing=1")
        assert [e["Service"]["ID"] for e in entries] == ["api-127.0.0.1-9001"]  # passing at once
        assert entries[0]["Service"]["Tags"] == ["v1"] and entries[0]["Service"]["Meta"] == {"zone": "eu"}
        passes = []
        for _ in range(4):  # four TTLs: it would be critical after one without the keep-alive
            done = threading.Event()
            done.wait(1.0)
            passes.append(len(consul_server.health("api", "?passing=1")))
        assert passes == [1, 1, 1, 1]
    assert consul_server.health("api") == []
    assert "api-127.0.0.1-9001" not in consul_server.request("GET", "/v1/agent/services")


@pytest.mark.server
def test_the_registrar_registers_again_when_the_agent_forgets_it(consul_server: ConsulServer) -> None:
    with consul.Registrar("api", "127.0.0.1:9001", address=consul_server.url, ttl=1) as registrar:
        consul_server.deregister(registrar.service_id)  # as after an agent restart
        eventually(lambda: len(consul_server.health("api", "?passing=1")) == 1, timeout=10, what="re-registered")


@pytest.mark.server
def test_deregister_critical_service_after_is_sent_and_honoured(consul_server: ConsulServer) -> None:
    registrar = consul.Registrar("api", "127.0.0.1:9001", address=consul_server.url, ttl=1, deregister_after=1)
    registrar.register()
    check = consul_server.request("GET", "/v1/agent/checks")["service:api-127.0.0.1-9001"]
    assert check["Type"] == "ttl"
    # a process that stops passing its check (it hangs): the agent reaps the service
    keeper = registrar._keeper
    assert keeper is not None
    from loadbalancer._runtime import RUNTIME

    RUNTIME.call_soon(keeper.cancel)
    eventually(lambda: consul_server.health("api") == [], timeout=15, what="reaped after the TTL and 1 s critical")
    registrar.close()  # the service is gone already: closing is quiet


@pytest.mark.server
def test_an_http_check_registration(consul_server: ConsulServer) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/health"
    try:
        with consul.Registrar("api", "127.0.0.1:9001", address=consul_server.url, http_check=url, check_interval=0.1):
            check = consul_server.request("GET", "/v1/agent/checks")["service:api-127.0.0.1-9001"]
            assert check["Type"] == "http"
            eventually(lambda: len(consul_server.health("api", "?passing=1")) == 1, what="the agent's HTTP check")
        assert consul_server.health("api") == []
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.server
def test_registration_refused_without_the_token_raises(consul_acl_server: ConsulServer) -> None:
    registrar = consul.Registrar("api", "127.0.0.1:9001", address=consul_acl_server.url, token="wrong")
    with pytest.raises(consul.ConsulError, match="403 ACL not found"):
        registrar.register()
    registrar.close()
    with consul.Registrar("api", "127.0.0.1:9001", address=consul_acl_server.url, token="root-token"):
        assert len(consul_acl_server.health("api")) == 1


# -- the registry facade ---------------------------------------------------------------------


@pytest.fixture
def registry(consul_server: ConsulServer) -> Iterator[consul.Registry]:
    with consul.Registry(consul_server.url, ttl=2, wait=5) as reg:
        yield reg


@pytest.mark.server
def test_registry_register_discover_watch_list_services_and_health(
    registry: consul.Registry, consul_server: ConsulServer
) -> None:
    assert isinstance(registry, GenericRegistry)
    registry.register("api", Instance("127.0.0.1", 9001, tags=("v2",)))
    registry.register("api", "127.0.0.1:9002")
    registry.register("db", "127.0.0.1:5432")
    assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:9001", "127.0.0.1:9002"]
    assert [str(i) for i in registry.discover("api", tags=["v2"])] == ["127.0.0.1:9001"]
    assert registry.list_services() == ["api", "consul", "db"]
    health = registry.health()
    assert health.healthy and health.detail["leader"]
    with registry.watch("api") as watched:
        eventually(lambda: len(watched.endpoints()) == 2, what="watch")
        registry.deregister("api", "127.0.0.1:9001")
        eventually(lambda: [str(i) for i in watched.endpoints().instances] == ["127.0.0.1:9002"], what="deregistered")
    registry.close()
    assert consul_server.health("api") == [] and consul_server.health("db") == []


def test_registry_health_reports_an_unreachable_agent() -> None:
    from tests.daemon import free_tcp_port

    with consul.Registry(f"127.0.0.1:{free_tcp_port()}", timeout=1) as reg:
        health = reg.health()
        assert not health.healthy and "ConnectError" in health.detail["error"]


def test_logs_are_quiet_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="loadbalancer")
    assert consul.Backend.name == "consul"


# -- the blocking-query loop's rate limit (a stub agent that answers at once) --------------------


_real_sleep = asyncio.sleep


class _InstantAgent:
    """Answers every query at once with index 5: either the same set (a spin) or a new one each time."""

    address = "http://stub"

    def __init__(self, changing: bool) -> None:
        self.changing = changing
        self.queries = 0

    async def get(self, path: str, params: Any = None, *, wait: float | None = None) -> tuple[Any, int]:
        self.queries += 1
        await _real_sleep(0)  # a real agent's answer comes through the loop
        port = 9000 + (self.queries % 2 if self.changing else 0)
        return [{"Node": {"Node": "n", "Address": "127.0.0.1"}, "Service": {"ID": "a", "Port": port}}], 5


@pytest.mark.parametrize("changing", [False, True])
async def test_answers_that_change_nothing_are_rate_limited_and_changes_are_not(
    changing: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any) -> Any:
        slept.append(delay)
        return await real_sleep(0)

    agent = _InstantAgent(changing)
    backend = consul.Backend(agent, rate=10, burst=3)  # type: ignore[arg-type]
    listing = await backend.list("api")
    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    stream = backend.watch("api", listing.cursor)

    async def consume() -> None:
        async for _ in stream:
            pass

    task = asyncio.ensure_future(consume())
    while agent.queries < 12 and not task.done():
        await real_sleep(0.001)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if changing:
        assert slept == []  # every answer brought a change: followed at once
    else:
        # after the burst of 3, each further query waits for a token: about 1/rate seconds each
        assert len(slept) >= 8 and all(delay > 0.05 for delay in slept)


@pytest.mark.server
def test_tls_with_a_ca_and_a_client_certificate(tmp_path: Any) -> None:
    import shutil

    from tests.etcd_server import make_certs

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    certs = make_certs(tmp_path)
    with ConsulServer(tls=certs) as server:
        server.register("api", "api-1", 9001)
        client_cert = (certs["client_cert"], certs["client_key"])
        with publisher(server, verify=certs["ca"], cert=client_cert) as p:
            eventually(lambda: addresses(p) == ["127.0.0.1:9001"], what="read over TLS")
        with publisher(server) as untrusted:  # the system's CAs do not know the test CA
            eventually(lambda: untrusted.endpoints().stale, what="the certificate refused")
            assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.endpoints().error)
