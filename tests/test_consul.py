"""consul.Publisher, Registrar and Registry against the Consul API test server (a separate process on loopback)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from loadbalancer import Instance, RoundRobin, TLSConfig, consul
from loadbalancer.backend import Registry as GenericRegistry
from loadbalancer.consul._client import go_duration
from loadbalancer.consul._connection import parse_address
from tests.consul_fixtures import ConsulServer, unset_consul_variables
from tests.etcd_server import make_certs
from tests.helpers import Factory, events, eventually

QUICK: dict[str, Any] = {"wait": 5.0, "max_backoff": 0.3, "close_delay": 0, "timeout": 2.0}


@pytest.fixture(autouse=True)
def no_consul_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    unset_consul_variables(monkeypatch)  # each test sets the variables it needs


def publisher(server: ConsulServer, service: str = "api", factory: Any = None, **options: Any) -> consul.Publisher[Any]:
    return consul.Publisher(service, factory, endpoints=server.url, token=server.token, **{**QUICK, **options})


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
        consul.Publisher("", endpoints="127.0.0.1:1")
    with pytest.raises(ValueError, match="'not-a-url'"):
        consul.Registrar("api", "127.0.0.1:80", endpoints="127.0.0.1:1", http_check="not-a-url")
    with pytest.raises(ValueError, match="wait"):
        consul.Publisher("api", endpoints="127.0.0.1:1", wait=601)
    with pytest.raises(ValueError, match="datacenter 'a/b'"):
        consul.Publisher("api", endpoints="127.0.0.1:1", datacenter="a/b")


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
    with consul.Publisher("api", endpoints=consul_acl_server.url, token="wrong", **QUICK) as bad:
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
        "api", Instance("127.0.0.1", 9001, tags=("v1",), metadata={"zone": "eu"}), endpoints=consul_server.url, ttl=1
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
    with consul.Registrar("api", "127.0.0.1:9001", endpoints=consul_server.url, ttl=1) as registrar:
        consul_server.deregister(registrar.service_id)  # as after an agent restart
        eventually(lambda: len(consul_server.health("api", "?passing=1")) == 1, timeout=10, what="re-registered")


@pytest.mark.server
def test_deregister_critical_service_after_is_sent_and_honoured(consul_server: ConsulServer) -> None:
    registrar = consul.Registrar("api", "127.0.0.1:9001", endpoints=consul_server.url, ttl=1, deregister_after=1)
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
        with consul.Registrar("api", "127.0.0.1:9001", endpoints=consul_server.url, http_check=url, check_interval=0.1):
            check = consul_server.request("GET", "/v1/agent/checks")["service:api-127.0.0.1-9001"]
            assert check["Type"] == "http"
            eventually(lambda: len(consul_server.health("api", "?passing=1")) == 1, what="the agent's HTTP check")
        assert consul_server.health("api") == []
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.server
def test_registration_refused_without_the_token_raises(consul_acl_server: ConsulServer) -> None:
    registrar = consul.Registrar("api", "127.0.0.1:9001", endpoints=consul_acl_server.url, token="wrong")
    with pytest.raises(consul.ConsulError, match="403 ACL not found"):
        registrar.register()
    registrar.close()
    with consul.Registrar("api", "127.0.0.1:9001", endpoints=consul_acl_server.url, token="root-token"):
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


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, str]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    return make_certs(tmp_path)


@pytest.fixture
def tls_server(certs: dict[str, str]) -> Iterator[ConsulServer]:
    """The Consul API test server over HTTPS, asking for a client certificate signed by the test CA."""
    with ConsulServer(tls=certs) as server:
        server.register("api", "api-1", 9001)
        yield server


def client_tls(certs: dict[str, str], **options: Any) -> TLSConfig:
    return TLSConfig(ca=certs["ca"], cert=certs["client_cert"], key=certs["client_key"], **options)


@pytest.mark.server
def test_tls_with_a_ca_and_a_client_certificate(tls_server: ConsulServer, certs: dict[str, str]) -> None:
    with publisher(tls_server, tls=client_tls(certs)) as p:
        eventually(lambda: addresses(p) == ["127.0.0.1:9001"], what="read over TLS")
    with publisher(tls_server) as untrusted:  # the system's CAs do not know the test CA
        eventually(lambda: untrusted.endpoints().stale, what="the certificate refused")
        assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.endpoints().error)


@pytest.mark.server
def test_tls_given_speaks_https_to_an_address_without_a_scheme(tls_server: ConsulServer, certs: dict[str, str]) -> None:
    address = f"127.0.0.1:{tls_server.port}"
    with consul.Publisher("api", endpoints=address, tls=client_tls(certs), **QUICK) as p:
        assert p.backend.client.address == f"https://{address}"  # type: ignore[attr-defined]
        eventually(lambda: addresses(p) == ["127.0.0.1:9001"], what="read over TLS")
    context = client_tls(certs).context()
    with consul.Registry([address], tls=context, timeout=2) as registry:  # an SSLContext, a one-element list
        assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:9001"]


@pytest.mark.server
def test_the_old_verify_and_cert_keywords_still_work_and_warn(tls_server: ConsulServer, certs: dict[str, str]) -> None:
    client_cert = (certs["client_cert"], certs["client_key"])
    with pytest.warns(DeprecationWarning, match=r"verify= is deprecated: write tls="):
        p = consul.Publisher("api", endpoints=tls_server.url, verify=certs["ca"], cert=client_cert, **QUICK)  # type: ignore[call-arg]
    with p:
        eventually(lambda: addresses(p) == ["127.0.0.1:9001"], what="read over TLS")
    with pytest.warns(DeprecationWarning, match=r"verify= is deprecated"):
        registrar = consul.Registrar("db", "127.0.0.1:5432", endpoints=tls_server.url, verify=False, cert=client_cert)  # type: ignore[call-arg]
    with registrar:  # verify=False: the test CA is not checked
        assert len(tls_server.health("db")) == 1
    with pytest.warns(DeprecationWarning, match=r"cert= is deprecated"):
        consul.Client(tls_server.url, cert=client_cert)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="tls= alone"), pytest.warns(DeprecationWarning, match="verify="):
        consul.Publisher("api", endpoints=tls_server.url, tls=True, verify=False)  # type: ignore[call-arg]


def test_the_old_verify_keyword_never_turns_a_plain_address_into_https() -> None:
    with pytest.warns(DeprecationWarning, match="verify="):
        client = consul.Client("127.0.0.1:8500", verify=False)  # type: ignore[call-arg]
    assert client.address == "http://127.0.0.1:8500"  # as before: verify= only ever applied to https://


# -- the vocabulary: endpoints=, tls=, and the old address= ------------------------------------


def test_endpoints_is_one_agent_as_a_string_or_a_one_element_sequence() -> None:
    assert consul.Client("127.0.0.1:8600").address == "http://127.0.0.1:8600"
    assert consul.Client(endpoints=["https://consul.example"]).address == "https://consul.example:443"
    assert consul.Client(endpoints=(" 127.0.0.1:8600 ",)).address == "http://127.0.0.1:8600"
    for many in ("127.0.0.1:8500,127.0.0.2:8500", ["127.0.0.1:8500", "127.0.0.2:8500"]):
        with pytest.raises(ValueError, match="names 2 addresses, but a Consul client talks to one agent"):
            consul.Publisher("api", endpoints=many)
    with pytest.raises(ValueError, match=r"invalid Consul address \[\]"):
        consul.Client([])
    with pytest.raises(TypeError, match="got 8500"):
        consul.Client(8500)  # type: ignore[arg-type]


def test_tls_true_speaks_https_and_tls_false_reads_no_tls_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert consul.Client("127.0.0.1:8501", tls=True).address == "https://127.0.0.1:8501"
    assert consul.Client("http://127.0.0.1:8501", tls=True).address == "https://127.0.0.1:8501"  # as Consul
    assert consul.Client("127.0.0.1:8500", tls=False).address == "http://127.0.0.1:8500"
    assert consul.Client("https://127.0.0.1:8501", tls=False).address == "https://127.0.0.1:8501"
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    assert consul.Client("127.0.0.1:8500", tls=False).address == "http://127.0.0.1:8500"
    with pytest.raises(TypeError, match="tls= must be"):
        consul.Client("127.0.0.1:8500", tls="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [consul.Client, consul.Registry])
def test_the_old_address_keyword_still_works_and_warns(cls: Any) -> None:
    with pytest.warns(DeprecationWarning, match=r"\(address=\.\.\.\) is deprecated: write endpoints="):
        made = cls(address="127.0.0.1:8600")
    client = made if isinstance(made, consul.Client) else made._consul.client
    assert client.address == "http://127.0.0.1:8600"
    with pytest.raises(TypeError, match="both address= and endpoints="):
        cls(address="127.0.0.1:1", endpoints="127.0.0.1:2")


def test_the_old_address_keyword_of_the_publisher_and_registrar_warns() -> None:
    with pytest.warns(DeprecationWarning, match=r"Publisher\(address=\.\.\.\)"):
        p = consul.Publisher("api", address="127.0.0.1:8600", close_delay=0)  # type: ignore[call-arg]
    assert p.backend.client.address == "http://127.0.0.1:8600"  # type: ignore[attr-defined]
    p.close()
    with pytest.warns(DeprecationWarning, match=r"Registrar\(address=\.\.\.\)"):
        registrar = consul.Registrar("api", "127.0.0.1:80", address="127.0.0.1:8600")  # type: ignore[call-arg]
    assert registrar._consul.client.address == "http://127.0.0.1:8600"
    registrar.close()


# -- Consul's environment variables ------------------------------------------------------------


def test_the_environment_is_read_where_no_argument_is_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client = consul.Client()
    assert (client.address, client.token) == ("http://127.0.0.1:8500", None)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "https://consul.example:8501")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
    client = consul.Client()
    assert (client.address, client.token) == ("https://consul.example:8501", "from-env")
    client = consul.Client("127.0.0.1:8600", token="given")  # an argument beats its variable
    assert (client.address, client.token) == ("http://127.0.0.1:8600", "given")
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(token_file))
    assert consul.Client().token == "from-file"  # the file beats CONSUL_HTTP_TOKEN, as in Consul
    assert consul.Client(token="given").token == "given"
    token_file.write_text("")
    assert consul.Client().token == "from-env"  # an empty file says nothing
    monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="CONSUL_HTTP_TOKEN_FILE=.*missing"):
        consul.Client()
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "a:1,b:2")
    with pytest.raises(ValueError, match="CONSUL_HTTP_ADDR='a:1,b:2' names 2 addresses"):
        consul.Client(token="t")


def test_consul_http_ssl_turns_https_on_even_over_an_http_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:8501")
    assert consul.Client().address == "http://127.0.0.1:8501"
    for true in ("true", "1", "T", "TRUE"):
        monkeypatch.setenv("CONSUL_HTTP_SSL", true)
        assert consul.Client().address == "https://127.0.0.1:8501"
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "http://127.0.0.1:8501")
    assert consul.Client().address == "https://127.0.0.1:8501"  # "never revert to http if TLS was requested"
    assert consul.Client("http://127.0.0.1:8500", tls=None).address == "https://127.0.0.1:8500"
    monkeypatch.setenv("CONSUL_HTTP_SSL", "false")
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "https://127.0.0.1:8501")
    assert consul.Client().address == "https://127.0.0.1:8501"  # the address's own https stays
    for name in ("CONSUL_HTTP_SSL", "CONSUL_HTTP_SSL_VERIFY"):
        monkeypatch.setenv(name, "yes")  # not one of Go's ParseBool spellings
        with pytest.raises(ValueError, match=f"invalid {name}='yes'"):
            consul.Client()
        monkeypatch.delenv(name)


def test_a_client_key_without_its_certificate_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_CLIENT_KEY", "/etc/consul/key.pem")
    with pytest.raises(ValueError, match="CONSUL_CLIENT_KEY='/etc/consul/key.pem' is set without CONSUL_CLIENT_CERT"):
        consul.Client("https://127.0.0.1:8501")


@pytest.mark.server
def test_the_agent_and_the_token_from_the_environment(
    consul_acl_server: ConsulServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    consul_acl_server.register("api", "api-1", 9001)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul_acl_server.url)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "root-token")
    with consul.Publisher("api", **QUICK) as p:
        eventually(lambda: addresses(p) == ["127.0.0.1:9001"], what="read with the agent and token of the environment")
    token_file = tmp_path / "token"
    token_file.write_text("wrong\n")
    monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(token_file))
    with consul.Registry(timeout=2) as registry, pytest.raises(consul.ConsulError, match="403 ACL not found"):
        registry.discover("api")  # the token file beats CONSUL_HTTP_TOKEN
    with consul.Registry(token="root-token", timeout=2) as registry:  # and the argument beats both
        assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:9001"]


@pytest.mark.server
def test_tls_from_the_environment(
    tls_server: ConsulServer, certs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSUL_HTTP_ADDR", f"127.0.0.1:{tls_server.port}")
    monkeypatch.setenv("CONSUL_HTTP_SSL", "true")
    monkeypatch.setenv("CONSUL_CACERT", certs["ca"])
    monkeypatch.setenv("CONSUL_CLIENT_CERT", certs["client_cert"])
    monkeypatch.setenv("CONSUL_CLIENT_KEY", certs["client_key"])
    with consul.Registry(timeout=2) as registry:
        assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:9001"]
    monkeypatch.delenv("CONSUL_CACERT")  # the test CA unknown: only CONSUL_HTTP_SSL_VERIFY=false lets it through
    with consul.Registry(timeout=2) as registry, pytest.raises(consul.ConsulError, match="CERTIFICATE_VERIFY_FAILED"):
        registry.discover("api")
    monkeypatch.setenv("CONSUL_HTTP_SSL_VERIFY", "false")
    with consul.Registry(timeout=2) as registry:
        assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:9001"]
    monkeypatch.delenv("CONSUL_CLIENT_CERT")  # the server asks for a client certificate
    monkeypatch.delenv("CONSUL_CLIENT_KEY")
    with consul.Registry(timeout=2) as registry, pytest.raises(consul.ConsulError):
        registry.discover("api")
    monkeypatch.setenv("CONSUL_CACERT", "/nonexistent/ca.pem")  # tls= beats every TLS variable
    with consul.Registry(tls=client_tls(certs), timeout=2) as registry:
        assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:9001"]
    with pytest.raises(ValueError, match="cannot load the CA file '/nonexistent/ca.pem'"):
        consul.Registry(timeout=2)


# -- the consul extra --------------------------------------------------------------------------


def test_without_httpx_the_import_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "from loadbalancer.errors import ExtraNotInstalledError\n"
        "try:\n    import loadbalancer.consul\n"
        "except ExtraNotInstalledError as error:\n    print(error.extra, error.name, error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.startswith("consul httpx ") and "pip install 'loadbalancer[consul]'" in out
