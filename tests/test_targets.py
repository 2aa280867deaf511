"""Target strings (``loadbalancer.targets``): parsing, errors, and each scheme against its real or test server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import loadbalancer
from loadbalancer import Instance, InvalidTargetError, RoundRobin, memory, targets
from loadbalancer.errors import ExtraNotInstalledError
from loadbalancer.targets._target import Build
from tests.consul_fixtures import ConsulServer, unset_consul_variables
from tests.etcd_server import EtcdServer, make_certs, require_etcd, unique_prefix
from tests.eureka_daemon import EurekaServer
from tests.helpers import eventually
from tests.k8s_api_server import K8sApiServer, endpoint, endpoint_slice
from tests.seed_daemon import SeedServer
from tests.servers import BindServer

pytest_plugins = ["tests.zk_fixtures"]


def addresses(publisher: Any) -> list[str]:
    return [str(instance) for instance in publisher.endpoints().instances]


def plan(target: str, **options: Any) -> Build:
    """What ``targets.publisher(target)`` would build, without building it: the mapping itself."""
    built = targets._plan(target, None, options)
    assert isinstance(built, Build)
    return built


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scheme", "authority", "path", "options"),
    [
        ("dns:///_api._tcp.example.", "dns", "", "/_api._tcp.example.", {}),
        ("dns://10.0.0.53:53/_api._tcp.example.", "dns", "10.0.0.53:53", "/_api._tcp.example.", {}),
        ("dns:_api._tcp.example.", "dns", "", "_api._tcp.example.", {}),  # gRPC's short form
        ("ETCD://h1:2379,h2:2379/services/api", "etcd", "h1:2379,h2:2379", "/services/api", {}),
        ("consul://127.0.0.1:8500/api?tag=v2&tag=v3&dc=dc1", "consul", "127.0.0.1:8500", "/api",
         {"tag": "v2,v3", "dc": "dc1"}),
        ("httppoll+https://seed/instances%20all?service=a%2Bb", "httppoll+https", "seed", "/instances all",
         {"service": "a+b"}),
    ],
)  # fmt: skip
def test_parse_takes_a_target_apart(text: str, scheme: str, authority: str, path: str, options: dict[str, str]) -> None:
    target = targets.parse(text)
    assert (target.scheme, target.authority, target.path, dict(target.options)) == (scheme, authority, path, options)
    assert str(target) == text


def test_userinfo_and_hosts() -> None:
    target = targets.parse("etcd://root:p%40ss@[::1]:2379,10.0.0.2:2379/x")
    assert target.userinfo == ("root", "p@ss")
    assert target.hosts == ["[::1]:2379", "10.0.0.2:2379"]
    assert targets.parse("etcd://h/x").userinfo is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("_api._tcp.example.", "no scheme"),
        ("9dns:///x", "is not a URI scheme"),
        ("dns:///x#frag", "no #fragment"),
        ("dns:///a b", "white space"),
        ("consul:///api?tag", "query option 'tag' is not key=value"),
        ("dsn:///x", "unknown scheme 'dsn' (known: consul, dns, etcd, eureka, httppoll+http, httppoll+https, k8s,"),
        ("static:///10.0.0.1:80?weight=2", "unknown option weight (a static: target takes tag)"),
        ("dns:///_a._tcp.example.?interval=soon", "option interval='soon': not a positive number of seconds"),
        ("dns:///_a._tcp.example.?interval=0", "option interval='0'"),
        ("consul:///api?passing=maybe", "option passing='maybe': not true or false"),
        ("static://10.0.0.1:80", "the instances go in the path: static:///10.0.0.1:80"),
        ("static:///nope", "invalid instance 'nope'"),
        ("dns://ns.example/_a._tcp.example.", "nameserver 'ns.example': give an IP address, not a name"),
        ("dns://10.0.0.1:99999/_a._tcp.example.", "the port is not a number from 1 to 65535"),
        ("dns://::1/_a._tcp.example.", "write an IPv6 address in brackets"),
        ("k8s://cluster/api", "k8s targets take no authority"),
        ("k8s:///api.:http", "write SERVICE[.NAMESPACE][:PORT]"),
        ("k8s:///api:70000", "port 70000: not a number from 1 to 65535"),
        ("etcd://127.0.0.1:2379/", "no key prefix"),
        ("consul://a:8500,b:8500/api", "a Consul client talks to one agent"),
        ("eureka://127.0.0.1:8761/", "no application"),
        ("httppoll+http:///x", "no seed"),
        ("httppoll+http://seed/x?cacert=ca.pem", "TLS options on a plain-http seed"),
        ("memory://here/api", "memory targets take no authority"),
        ("etcd://h/x?tls=false&cacert=ca.pem", "tls=false contradicts"),
        ("etcd://h/x?key=k.pem", "key= needs the certificate"),
    ],
)
def test_a_bad_target_says_which_part_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidTargetError) as caught:
        targets.check(text)
    assert message in str(caught.value)
    assert caught.value.target == text and isinstance(caught.value, ValueError | loadbalancer.Error)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("dns:///_a._tcp.example.", "the records are the zone's"),
        ("static:///10.0.0.1:80", "a static list"),
        ("k8s:///api", "EndpointSlices are written by the cluster's controllers"),
        ("httppoll+http://seed/x", "each seed owns the list"),
    ],
)
def test_registering_where_the_system_takes_no_registrations_says_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidTargetError, match="cannot register") as caught:
        targets.registrar(text, "10.0.0.1:80")
    assert reason in str(caught.value)


def test_a_missing_extra_is_named_with_its_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n.startswith(("loadbalancer.zookeeper", "loadbalancer.targets._zoo"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(loadbalancer, "zookeeper", raising=False)
    monkeypatch.setitem(sys.modules, "kazoo", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "kazoo.client", None)
    with pytest.raises(ExtraNotInstalledError, match=r"pip install 'loadbalancer\[zookeeper\]'") as caught:
        targets.publisher("zk://127.0.0.1:2181/services/api")
    assert isinstance(caught.value, ImportError) and caught.value.extra == "zookeeper"


def test_keyword_options_win_over_the_query_and_reach_the_backend() -> None:
    built = plan("dns:///_a._tcp.example.?interval=7&follow_ttl=yes", interval=3.0, close_delay=0)
    assert built.kwargs["interval"] == 3.0 and built.kwargs["follow_ttl"] is True and built.kwargs["close_delay"] == 0
    with pytest.raises(TypeError):  # an option the backend does not take is Python's own error
        targets.publisher("static:///10.0.0.1:80", colour="blue")


def test_schemes_of_ones_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(targets, "_schemes", dict(targets._schemes))  # the scheme added here leaves with the test
    made: list[tuple[str, object]] = []

    def build(target: targets.Target, factory: Any, options: dict[str, Any]) -> Any:
        made.append((target.name, factory))
        return loadbalancer.static.Publisher([target.name], factory, **options)

    targets.add_scheme("fixed", build, summary="one instance", example="fixed:///10.0.0.1:80")
    with targets.publisher("fixed:///10.0.0.1:80", close_delay=0) as publisher:
        assert addresses(publisher) == ["10.0.0.1:80"] and made == [("10.0.0.1:80", None)]
    assert any(scheme.name == "fixed" for scheme in targets.schemes())
    with pytest.raises(ValueError, match="built in"):
        targets.add_scheme("dns", build)
    with pytest.raises(InvalidTargetError, match="cannot register instances"):
        targets.registrar("fixed:///10.0.0.1:80", "10.0.0.1:80")


# -- static and memory ------------------------------------------------------------------------------


def test_static_in_the_given_order_with_a_factory() -> None:
    with targets.publisher("static:///10.0.0.2:80,[::1]:81,10.0.0.1:82", lambda a: f"endpoint {a}") as publisher:
        assert list(publisher.endpoints()) == ["endpoint 10.0.0.2:80", "endpoint [::1]:81", "endpoint 10.0.0.1:82"]
    with targets.publisher("static:10.0.0.1:80") as short:  # gRPC's short form
        assert addresses(short) == ["10.0.0.1:80"]


def test_a_memory_registrar_and_publisher_of_one_target_meet() -> None:
    with targets.publisher("memory:///targets-api", close_delay=0) as publisher:
        with targets.registrar("memory:///targets-api", "10.0.0.7:8080", ttl=5):
            eventually(lambda: addresses(publisher) == ["10.0.0.7:8080"], 5, "registered")
            assert RoundRobin(publisher).endpoint() == Instance("10.0.0.7", 8080)
        eventually(lambda: addresses(publisher) == [], 5, "deregistered")
    own = memory.Backend()
    with targets.registrar("memory:///targets-api", "10.0.0.8:80", backend=own):
        with targets.publisher("memory:///targets-api", backend=own) as elsewhere:
            eventually(lambda: addresses(elsewhere) == ["10.0.0.8:80"], 5, "in the backend passed")
        with targets.publisher("memory:///targets-api") as shared:
            shared.wait_ready(5)
            assert addresses(shared) == []  # not in the process-wide one


# -- DNS SRV (BIND) ---------------------------------------------------------------------------------


def test_dns_with_the_nameserver_in_the_target(bind: BindServer, srv_name: str) -> None:
    bind.set_srv(srv_name, [(10, 5, 8080, "a"), (20, 1, 8081, "b")])
    with targets.publisher(f"dns://127.0.0.1:{bind.port}/{bind.name(srv_name)}?interval=0.2", close_delay=0) as p:
        p.wait_ready(10)
        assert addresses(p) == ["a.example.test:8080", "b.example.test:8081"]
        bind.set_srv(srv_name, [(10, 5, 8082, "c")])
        eventually(lambda: addresses(p) == ["c.example.test:8082"], 10, "polled at the target's interval")


def test_dns_with_the_systems_resolver_or_one_passed(bind: BindServer, srv_name: str) -> None:
    import dns.resolver

    bind.set_srv(srv_name, [(10, 5, 8080, "a")])
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], bind.port
    with targets.publisher(f"dns:///{bind.name(srv_name)}", resolver=resolver, close_delay=0) as p:
        p.wait_ready(10)
        assert addresses(p) == ["a.example.test:8080"]
    assert plan("dns:///_a._tcp.example.").kwargs.get("resolver") is None  # the system's, as dnssrv does
    with pytest.raises(InvalidTargetError, match="named twice"):
        targets.check(f"dns://127.0.0.1:{bind.port}/{bind.name(srv_name)}", resolver=resolver)


# -- etcd ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def etcd_server() -> Iterator[EtcdServer]:
    require_etcd()
    with EtcdServer() as server:
        yield server


def test_etcd_registrar_and_publisher_of_one_target(etcd_server: EtcdServer) -> None:
    prefix = unique_prefix()
    target = f"etcd://{etcd_server.url.removeprefix('http://')}{prefix}"
    with targets.publisher(target, close_delay=0) as publisher:
        publisher.wait_ready(10)
        with targets.registrar(f"{target}?ttl=5", "127.0.0.1:8080"):
            eventually(lambda: addresses(publisher) == ["127.0.0.1:8080"], 10, "registered")
        eventually(lambda: addresses(publisher) == [], 10, "deregistered")


def test_etcd_reads_etcdctls_environment(etcd_server: EtcdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = unique_prefix()
    etcd_server.put(f"{prefix}/a", "127.0.0.1:80")
    monkeypatch.setenv("ETCDCTL_ENDPOINTS", etcd_server.url)
    with targets.publisher(f"etcd://{prefix}", close_delay=0) as publisher:
        publisher.wait_ready(10)
        assert addresses(publisher) == ["127.0.0.1:80"]
    monkeypatch.setenv("ETCDCTL_USER", "root:secret")
    assert {"username": "root", "password": "secret"}.items() <= plan("etcd:///x").kwargs.items()
    monkeypatch.setenv("ETCDCTL_USER", "root")
    monkeypatch.setenv("ETCDCTL_PASSWORD", "other")
    assert plan("etcd:///x").kwargs["password"] == "other"
    assert plan("etcd://admin:pw@h:2379/x").kwargs["username"] == "admin"  # the target wins


def test_etcd_over_tls_from_etcdctls_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_etcd()
    certs = make_certs(tmp_path)
    with EtcdServer(tls=(certs["server_cert"], certs["server_key"], certs["ca"]), client_cert_auth=True) as server:
        prefix = unique_prefix()
        server.put(f"{prefix}/a", "127.0.0.1:443")
        authority = server.url.removeprefix("https://")
        monkeypatch.setenv("ETCDCTL_CACERT", certs["ca"])
        monkeypatch.setenv("ETCDCTL_CERT", certs["client_cert"])
        monkeypatch.setenv("ETCDCTL_KEY", certs["client_key"])
        with targets.publisher(f"etcd://{authority}{prefix}", close_delay=0) as publisher:  # https: TLS is asked
            publisher.wait_ready(10)
            assert addresses(publisher) == ["127.0.0.1:443"] and publisher.last_error is None
        monkeypatch.delenv("ETCDCTL_CERT")
        monkeypatch.delenv("ETCDCTL_KEY")
        query = f"?cacert={certs['ca']}&cert={certs['client_cert']}&key={certs['client_key']}"
        with targets.publisher(f"etcd://{authority}{prefix}{query}", close_delay=0) as publisher:
            publisher.wait_ready(10)
            assert addresses(publisher) == ["127.0.0.1:443"]


# -- ZooKeeper ----------------------------------------------------------------------------------------


def test_zk_registrar_and_publisher_of_one_target(zookeeper_server: Any, zk_path: str) -> None:
    target = f"zk://{zookeeper_server.hosts}{zk_path}"
    with targets.publisher(target, close_delay=0) as publisher:
        publisher.wait_ready(10)
        with targets.registrar(target, "127.0.0.1:8080"):
            eventually(lambda: addresses(publisher) == ["127.0.0.1:8080"], 10, "registered")
        eventually(lambda: addresses(publisher) == [], 10, "deregistered")
    with targets.publisher(f"zookeeper://{zookeeper_server.hosts}{zk_path}") as alias:  # the CLI's old name
        alias.wait_ready(10)


# -- Consul -------------------------------------------------------------------------------------------


def test_consul_with_tags_and_passing(consul_server: ConsulServer, monkeypatch: pytest.MonkeyPatch) -> None:
    unset_consul_variables(monkeypatch)
    consul_server.register("api", "api-1", 9001, Tags=["v2"])
    consul_server.register("api", "api-2", 9002)
    consul_server.register("api", "api-3", 9003, Check={"TTL": "1h"})  # critical
    authority = consul_server.url.removeprefix("http://")
    with targets.publisher(f"consul://{authority}/api?tag=v2", close_delay=0) as tagged:
        tagged.wait_ready(10)
        assert addresses(tagged) == ["127.0.0.1:9001"]
    with targets.publisher(f"consul://{authority}/api?passing=false", close_delay=0) as every:
        every.wait_ready(10)
        assert sorted(addresses(every)) == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]


def test_consul_reads_consuls_environment(consul_server: ConsulServer, monkeypatch: pytest.MonkeyPatch) -> None:
    unset_consul_variables(monkeypatch)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul_server.url)
    with targets.publisher("consul:///web", close_delay=0) as publisher:
        publisher.wait_ready(10)
        with targets.registrar("consul:///web?ttl=5", "127.0.0.1:8080"):
            eventually(lambda: addresses(publisher) == ["127.0.0.1:8080"], 10, "registered")


# -- Kubernetes ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_api() -> Iterator[K8sApiServer]:
    with K8sApiServer(token="t-token") as server:
        yield server


def _kubeconfig(path: Path, server: str, namespace: str = "default") -> Path:
    path.write_text(yaml.safe_dump({
        "current-context": "t",
        "contexts": [{"name": "t", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t-token"}}],
    }))  # fmt: skip
    return path


def test_k8s_service_namespace_and_port(k8s_api: K8sApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ports = [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "admin", "port": 9090, "protocol": "TCP"}]
    k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")], ports=ports), "shop")
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "config", k8s_api.url)))
    # a set KUBECONFIG wins over the pod's service account (client-go's order)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.255.255.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with targets.publisher("k8s:///web.shop:admin", close_delay=0) as named:
        named.wait_ready(10)
        assert addresses(named) == ["10.0.0.1:9090"]
    with targets.publisher("k8s:///web.shop:8080", close_delay=0) as numbered:
        numbered.wait_ready(10)
        assert addresses(numbered) == ["10.0.0.1:8080"]
    assert plan("k8s:///web.shop:8080").kwargs["port"] == 8080  # a number, not the name "8080"


# -- Eureka and HTTP seeds ---------------------------------------------------------------------------


def test_eureka_servers_and_app(tmp_path: Path) -> None:
    with EurekaServer() as server:
        server.register("api", "i-1", "127.0.0.1", 9001)
        dead = "127.0.0.1:1"  # the first server answers nothing: the next is asked
        with targets.publisher(f"eureka://{dead},127.0.0.1:{server.port}/eureka/API", close_delay=0) as p:
            p.wait_ready(10)
            assert addresses(p) == ["127.0.0.1:9001"]
        with targets.registrar(f"eureka://127.0.0.1:{server.port}/eureka/WEB?id=web-1", "127.0.0.1:9002"):
            eventually(lambda: "web-1" in str(server.get("apps")), 10, "registered with the id asked for")


def test_httppoll_seeds_and_service() -> None:
    seed = SeedServer().start()
    try:
        seed.publish([{"service": "api", "host": "127.0.0.1", "port": 9001}], "list.json")
        target = f"httppoll+http://127.0.0.1:{seed.port}/list.json?service=api&interval=0.2"
        with targets.publisher(target, close_delay=0) as p:
            p.wait_ready(10)
            assert addresses(p) == ["127.0.0.1:9001"]
    finally:
        seed.close()


def test_httppoll_over_https_with_the_ca_in_the_query(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    seed = SeedServer(certs=certs).start()
    try:
        seed.publish([{"host": "127.0.0.1", "port": 9443}], "list.json")
        target = f"httppoll+https://127.0.0.1:{seed.port}/list.json?cacert={certs['ca']}"
        with targets.publisher(target, close_delay=0) as p:
            p.wait_ready(10)
            assert addresses(p) == ["127.0.0.1:9443"] and p.last_error is None
    finally:
        seed.close()


def test_every_builtin_scheme_has_a_row_in_the_readme_table() -> None:
    readme = (Path(__file__).resolve().parent.parent / "docs" / "targets.md").read_text()
    for scheme in targets.schemes():
        if scheme.adapter is not None:
            assert f"`{scheme.name}:" in readme, f"the README's table of targets has no {scheme.name}: row"


def test_the_readmes_targets_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parent.parent / "docs" / "targets.md").read_text()
    section = readme[readme.index("# Targets: one string") :]
    block = section[section.index("```python\n") + len("```python\n") : section.index("```\n\n|")]
    exec(compile(block, "README.md (targets)", "exec"), {})
    assert capsys.readouterr().out.splitlines() == ["['127.0.0.1:8001', '127.0.0.1:8002']", "{'tag': 'v2'}"]
