"""``loadbalancer.eureka`` against the Eureka API test server (a separate process on loopback)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadbalancer import DiscoveryError, Instance, TLSConfig, eureka
from loadbalancer.backend import Registrar as GenericRegistrar
from tests.etcd_server import make_certs
from tests.eureka_daemon import EurekaServer
from tests.helpers import eventually
from tests.test_etcd import MISSING_HTTPX


def make_certs_or_skip(directory: Path) -> dict[str, str]:
    try:
        return make_certs(directory)
    except RuntimeError as error:
        pytest.skip(str(error))


@pytest.fixture
def eureka_server() -> Iterator[EurekaServer]:
    with EurekaServer() as server:
        yield server


def addresses(publisher: eureka.Publisher[Instance]) -> list[str]:
    return sorted(str(i) for i in publisher.endpoints())


def test_a_publisher_sees_up_instances_then_changes_through_deltas_only(eureka_server: EurekaServer) -> None:
    eureka_server.register("api", "a-1", "127.0.0.1", 9001, metadata={"zone": "eu", "weight": "5", "tags": "blue,v2"})
    eureka_server.register("api", "a-2", "127.0.0.1", 9002, status="STARTING")
    eureka_server.register("other", "o-1", "127.0.0.1", 9100)
    with eureka.Publisher("api", endpoints=eureka_server.url, interval=0.1) as publisher:
        assert publisher.wait_ready(10)
        (instance,) = publisher.endpoints()
        assert instance == Instance("127.0.0.1", 9001, weight=5, tags=("blue", "v2"), metadata={"zone": "eu"})
        eureka_server.set_status("api", "a-2", "UP")
        eventually(lambda: addresses(publisher) == ["127.0.0.1:9001", "127.0.0.1:9002"], 10, "a-2 UP")
        eureka_server.set_status("api", "a-1", "OUT_OF_SERVICE")
        eventually(lambda: addresses(publisher) == ["127.0.0.1:9002"], 10, "a-1 out of service")
        eureka_server.cancel("api", "a-2")
        eventually(lambda: addresses(publisher) == [], 10, "a-2 cancelled")
        assert not publisher.endpoints().stale
        stats = eureka_server.stats()
        assert stats["full"] == 1 and stats["delta"] >= 3  # one full fetch, then deltas that matched the hash


def test_a_delta_that_misses_a_change_fails_the_hash_check_and_a_full_fetch_repairs(
    eureka_server: EurekaServer, logs: pytest.LogCaptureFixture
) -> None:
    eureka_server.register("api", "a-1", "127.0.0.1", 9001)
    with eureka.Publisher("api", endpoints=eureka_server.url, interval=0.1) as publisher:
        assert publisher.wait_ready(10)
        eventually(lambda: eureka_server.stats().get("delta", 0) >= 1, 10, "a delta fetch")
        eureka_server.unrecorded(True)  # no delta will carry a-2, however the polls fall; the hash (UP_2_) will
        eureka_server.register("api", "a-2", "127.0.0.1", 9002)
        eureka_server.unrecorded(False)
        eventually(lambda: addresses(publisher) == ["127.0.0.1:9001", "127.0.0.1:9002"], 10, "a-2 by a full fetch")
        assert eureka_server.stats()["full"] == 2
        assert any(r.event == "eureka_hash_mismatch" for r in logs.records if hasattr(r, "event"))


def test_ports_secure_and_hostname_choices(eureka_server: EurekaServer) -> None:
    eureka_server.register(
        "api", "s-1", "127.0.0.1", 9001, hostName="api-1.internal", port={"$": 80, "@enabled": "false"},
        securePort={"$": 9443, "@enabled": "true"},
    )  # fmt: skip
    eureka_server.register("api", "p-1", "127.0.0.1", 9002)
    with eureka.Registry(eureka_server.url) as registry:
        found = registry.discover("api")
        assert [(i.port, dict(i.metadata)) for i in found] == [(9002, {}), (9443, {"eureka.secure": "true"})]
    with eureka.Registry(eureka_server.url, secure=True, address="hostname") as registry:
        assert [str(i) for i in registry.discover("api")] == ["api-1.internal:9443"]
    with eureka.Registry(eureka_server.url, secure=False) as registry:
        assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:9002"]


def test_servers_fail_over_and_the_set_goes_stale_only_when_all_fail() -> None:
    with EurekaServer() as first, EurekaServer() as second:
        for server in (first, second):
            server.register("api", "a-1", "127.0.0.1", 9001)
        with eureka.Publisher("api", endpoints=[first.url, second.url], interval=0.1, max_backoff=0.2) as publisher:
            assert publisher.wait_ready(10)
            assert publisher.server == first.url
            first.stop()
            second.register("api", "a-2", "127.0.0.1", 9002)
            eventually(lambda: len(publisher.endpoints()) == 2, 10, "a-2 from the second server")
            assert publisher.server == second.url and not publisher.endpoints().stale
            second.stop()
            eventually(lambda: publisher.endpoints().stale, 10, "the set to go stale")
            assert addresses(publisher) == ["127.0.0.1:9001", "127.0.0.1:9002"]  # stale beats empty
            second.start()  # a restarted server has forgotten everything: the hash says so
            second.register("api", "a-3", "127.0.0.1", 9003)
            eventually(lambda: addresses(publisher) == ["127.0.0.1:9003"], 15, "the restarted server's registry")
            assert not publisher.endpoints().stale


def test_the_registrar_registers_heartbeats_changes_status_and_cancels(eureka_server: EurekaServer) -> None:
    instance = Instance("127.0.0.1", 9001, weight=3, tags=("blue",), metadata={"zone": "eu"})
    registrar = eureka.Registrar("api", instance, endpoints=eureka_server.url, ttl=3)
    assert registrar.instance_id == "127.0.0.1:api:9001" and registrar.heartbeat_interval == 1.0
    with eureka.Publisher("api", endpoints=eureka_server.url, interval=0.1) as publisher, registrar:
        eventually(lambda: list(publisher.endpoints()) == [instance], 10, "the registered instance")
        record = eureka_server.get("apps/API/127.0.0.1:api:9001")["instance"]
        assert record["leaseInfo"]["durationInSecs"] == 3 and record["metadata"]["tags"] == "blue"
        eventually(lambda: eureka_server.stats().get("renew", 0) >= 2, 10, "heartbeats")  # one a second
        registrar.set_status("OUT_OF_SERVICE")
        assert registrar.status == "OUT_OF_SERVICE"
        eventually(lambda: list(publisher.endpoints()) == [], 10, "out of service")
        registrar.set_status("UP")
        eventually(lambda: list(publisher.endpoints()) == [instance], 10, "up again")
    assert eureka_server.get("apps")["applications"]["apps__hashcode"] == ""  # cancelled on close


def test_a_heartbeat_answered_404_registers_again(eureka_server: EurekaServer, logs: pytest.LogCaptureFixture) -> None:
    with eureka.Registrar("api", "127.0.0.1:9001", endpoints=eureka_server.url, ttl=3, instance_id="mine") as registrar:
        assert eureka_server.cancel("api", "mine") == 200  # the server forgets it (as after a restart)
        eventually(lambda: "API" in str(eureka_server.get("apps")), 10, "the registration again")
        assert registrar.registered
    assert any(getattr(r, "event", None) == "eureka_lease_lost" for r in logs.records)


def test_the_registry_facade(eureka_server: EurekaServer) -> None:
    with eureka.Registry(eureka_server.url, interval=0.1) as registry:
        registry.register("api", Instance("127.0.0.1", 9001, tags=("v2",)), ttl=30)
        registry.register("api", "127.0.0.1:9002", ttl=30)
        registry.register("db", "127.0.0.1:5432", ttl=30)
        assert [str(i) for i in registry.discover("api", tags=["v2"])] == ["127.0.0.1:9001"]
        assert registry.list_services() == ["API", "DB"]
        assert registry.health().healthy
        with registry.watch("db") as publisher:
            assert publisher.wait_ready(10) and [str(i) for i in publisher.endpoints()] == ["127.0.0.1:5432"]
            registry.deregister("db")
            eventually(lambda: len(publisher.endpoints()) == 0, 10, "db gone")
    assert eureka_server.get("apps")["applications"]["apps__hashcode"] == ""


def test_bad_input_is_refused_with_the_value_named() -> None:
    with pytest.raises(ValueError, match="invalid Eureka URL 'ftp://x'"):
        eureka.Publisher("api", endpoints="ftp://x")
    with pytest.raises(ValueError, match="statuses must be among"):
        eureka.Registry("http://127.0.0.1:1/eureka/", statuses=["RUNNING"])
    with pytest.raises(ValueError, match="invalid Eureka status 'GREEN'"):
        eureka.Registrar("api", "127.0.0.1:80", status="GREEN")
    with pytest.raises(ValueError, match="ttl must be at least 3 seconds"):
        eureka.Registrar("api", "127.0.0.1:80", ttl=1)
    assert eureka.parse_urls("http://h:8761") == ("http://h:8761/eureka/",)


def test_an_unreachable_server_raises_on_register_and_the_registry_is_unhealthy() -> None:
    from tests.daemon import free_tcp_port

    url = f"http://127.0.0.1:{free_tcp_port()}/eureka/"
    registrar = eureka.Registrar("api", "127.0.0.1:9001", endpoints=url, timeout=1)
    with pytest.raises(eureka.EurekaError, match="failed on every server"):
        registrar.register()
    registrar.close()
    with eureka.Registry(url, timeout=1) as registry:
        assert not registry.health().healthy
    assert isinstance(registrar, GenericRegistrar)


def test_the_old_urls_and_verify_keywords_still_work_and_warn(eureka_server: EurekaServer) -> None:
    eureka_server.register("api", "a-1", "127.0.0.1", 9001)
    with pytest.warns(DeprecationWarning, match=r"Publisher\(urls=\.\.\.\) is deprecated: write endpoints="):
        publisher = eureka.Publisher("api", urls=eureka_server.url, interval=0.1)
    with publisher:
        assert publisher.wait_ready(10) and addresses(publisher) == ["127.0.0.1:9001"]
        assert repr(publisher) == f"eureka.Publisher('api', endpoints={eureka_server.url!r})"
    with pytest.warns(DeprecationWarning, match=r"Registrar\(urls=\.\.\.\) is deprecated: write endpoints="):
        registrar = eureka.Registrar("api", "127.0.0.1:9002", urls=eureka_server.url, ttl=30)
    with pytest.warns(DeprecationWarning, match=r"Registry\(urls=\.\.\.\) is deprecated"):
        registry = eureka.Registry(urls=eureka_server.url)
    with registrar, registry:
        assert sorted(str(i) for i in registry.discover("api")) == ["127.0.0.1:9001", "127.0.0.1:9002"]
    with pytest.warns(DeprecationWarning, match=r"Client\(urls=\.\.\.\) is deprecated: write endpoints="):
        client = eureka.Client(urls=[eureka_server.url])
    assert client.servers == (eureka_server.url,)
    with pytest.warns(DeprecationWarning, match=r"verify= is deprecated: write tls="):
        registry = eureka.Registry(eureka_server.url, verify=False)
    with registry:  # verify= concerns https:// servers only; this one is http://
        assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:9001"]
    with pytest.raises(TypeError, match="both urls= and endpoints="):
        eureka.Publisher("api", urls=eureka_server.url, endpoints=eureka_server.url)


@pytest.mark.server
def test_tls_with_a_ca_and_a_client_certificate(tmp_path: Path) -> None:
    certs = make_certs_or_skip(tmp_path)
    tls = TLSConfig(ca=certs["ca"], cert=certs["client_cert"], key=certs["client_key"])
    with EurekaServer(certs=certs, client_cert_auth=True) as server:
        assert server.url.startswith("https://127.0.0.1:")
        server.register("api", "a-1", "127.0.0.1", 9001)
        with eureka.Publisher("api", endpoints=server.url, tls=tls, interval=0.1) as publisher:
            assert publisher.wait_ready(10) and addresses(publisher) == ["127.0.0.1:9001"]
        bare = server.url.removeprefix("https://")  # no scheme: https, since tls= is given
        registrar = eureka.Registrar("api", "127.0.0.1:9002", endpoints=bare, tls=tls.context(), ttl=30)
        with registrar, eureka.Registry(bare, tls=tls) as registry:
            assert registry.backend.client.servers == (server.url,)  # type: ignore[attr-defined]
            assert sorted(str(i) for i in registry.discover("api")) == ["127.0.0.1:9001", "127.0.0.1:9002"]
        with eureka.Registry(server.url, tls=TLSConfig(ca=certs["ca"]), timeout=2) as registry:
            health = registry.health()  # no client certificate: refused
            assert not health.healthy and server.url in health.detail["error"]
        with eureka.Registry(server.url, timeout=2) as registry:  # the system's CAs do not know the test CA
            assert "CERTIFICATE_VERIFY_FAILED" in registry.health().detail["error"]
        with pytest.warns(DeprecationWarning, match="verify= is deprecated"):
            publisher = eureka.Publisher("api", endpoints=server.url, verify=certs["ca"], interval=0.1, max_backoff=0.2)
        with publisher:  # verify= never could give a client certificate
            eventually(lambda: publisher.endpoints().error is not None, 10, "refused without a client certificate")


def test_server_urls_without_a_scheme() -> None:
    assert eureka.Client("10.0.0.1:8761").servers == ("http://10.0.0.1:8761/eureka/",)
    assert eureka.Client("10.0.0.1:8761,eureka.internal/eureka/v2", tls=True).servers == (
        "https://10.0.0.1:8761/eureka/",
        "https://eureka.internal/eureka/v2/",
    )
    assert eureka.Client("http://10.0.0.1:8761", tls=True).servers == ("http://10.0.0.1:8761/eureka/",)  # as written
    assert repr(eureka.Client("h:1")) == "eureka.Client('http://h:1/eureka/')"
    with pytest.raises(ValueError, match="cannot load the CA file 'missing.pem'"):
        eureka.Publisher("api", tls=TLSConfig(ca="missing.pem"))
    with pytest.raises(ValueError, match="the port is not a number"):
        eureka.Registrar("api", "127.0.0.1:80", endpoints="h:port")


def test_errors_are_discovery_errors_and_a_missing_httpx_names_the_extra() -> None:
    assert issubclass(eureka.EurekaError, DiscoveryError)
    code = MISSING_HTTPX.format(package="eureka")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip().split("|") == [
        "eureka",
        "httpx",
        "True",
        "loadbalancer.eureka needs an optional dependency (httpx): pip install 'loadbalancer[eureka]'",
    ]
