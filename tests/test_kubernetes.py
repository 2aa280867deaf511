"""kubernetes.Publisher / Registry against the Kubernetes API test server (a separate process)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadbalancer import Instance, kubernetes
from loadbalancer.kubernetes import Config, ConfigError, TokenSource
from tests.helpers import Factory, events, eventually
from tests.k8s_api_server import K8sApiServer, endpoint, endpoint_slice

TOKEN = "test-token"


@pytest.fixture(scope="module")
def k8s_api() -> Iterator[K8sApiServer]:
    with K8sApiServer(token=TOKEN) as server:
        yield server


_namespaces = iter(range(10_000))


@pytest.fixture
def ns() -> str:
    return f"ns{next(_namespaces)}"


def config(server: K8sApiServer, token: str = TOKEN) -> Config:
    return Config(server.url, token=TokenSource(token))


def publisher(server: K8sApiServer, service: str, ns: str, factory: Any = None, **options: Any) -> Any:
    p = kubernetes.Publisher(service, factory, namespace=ns, config=config(server), close_delay=0, **options)
    p.wait_ready(10)
    return p


def addresses(p: Any) -> list[str]:
    return [i.address for i in p.endpoints().instances]


def test_publishes_ready_endpoints_of_the_service_with_zone_and_pod(k8s_api: K8sApiServer, ns: str) -> None:
    k8s_api.apply(
        endpoint_slice("web-a", "web", [
            endpoint("10.0.0.1", zone="z1", node="n1", pod="web-1"),
            endpoint("10.0.0.2", ready=False),
            endpoint("10.0.0.3", ready=None),  # unset: ready, as the API says
        ]),
        ns,
    )  # fmt: skip
    k8s_api.apply(endpoint_slice("other-a", "other", [endpoint("10.9.0.1")]), ns)
    with publisher(k8s_api, "web", ns) as p:
        assert addresses(p) == ["10.0.0.1:8080", "10.0.0.3:8080"]
        first = p.endpoints().instances[0]
        assert first.metadata["zone"] == "z1" and first.metadata["node"] == "n1" and first.metadata["pod"] == "web-1"
        assert first.metadata["slice"] == "web-a" and first.metadata["port_name"] == "http"
        assert p.resource_version is not None


def test_follows_slices_added_changed_and_deleted(k8s_api: K8sApiServer, ns: str) -> None:
    k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")]), ns)
    factory = Factory()
    with publisher(k8s_api, "web", ns, factory) as p:
        k8s_api.apply(endpoint_slice("web-b", "web", [endpoint("10.0.1.1"), endpoint("10.0.1.2")]), ns)
        eventually(lambda: len(p.endpoints()) == 3, 10, "the new slice")
        k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1", ready=False)]), ns)
        eventually(lambda: addresses(p) == ["10.0.1.1:8080", "10.0.1.2:8080"], 10, "not ready leaves")
        k8s_api.delete("web-b", ns)
        eventually(lambda: addresses(p) == [], 10, "deleted slice")
        k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")]), ns)
        eventually(lambda: addresses(p) == ["10.0.0.1:8080"], 10, "ready again")
    assert factory.calls == {"10.0.0.1:8080": 2, "10.0.1.1:8080": 1, "10.0.1.2:8080": 1}


def test_one_endpoint_changing_in_a_large_slice_is_one_change(k8s_api: K8sApiServer, ns: str) -> None:
    many = [endpoint(f"10.1.{n // 250}.{n % 250}") for n in range(100)]
    k8s_api.apply(endpoint_slice("big-a", "big", many), ns)
    factory = Factory()
    with publisher(k8s_api, "big", ns, factory) as p:
        seen: list[int] = []
        with p.subscribe(lambda eps: seen.append(len(eps))):
            changed = [dict(e) for e in many]
            changed[42] = endpoint("10.1.9.9")
            k8s_api.apply(endpoint_slice("big-a", "big", changed), ns)
            eventually(lambda: "10.1.9.9:8080" in addresses(p), 10, "the change")
        assert len(factory.made) == 101  # one new endpoint made; the other 99 kept
        assert sum(e.closed for e in factory.made) == 1
        assert seen == [100, 100]


def test_serving_accepts_terminating_endpoints_that_still_serve(k8s_api: K8sApiServer, ns: str) -> None:
    k8s_api.apply(
        endpoint_slice("web-a", "web", [
            endpoint("10.0.0.1"),
            endpoint("10.0.0.2", ready=False, serving=True, terminating=True),
            endpoint("10.0.0.3", ready=False, serving=False, terminating=True),
        ]),
        ns,
    )  # fmt: skip
    with publisher(k8s_api, "web", ns, accept="serving") as p:
        assert addresses(p) == ["10.0.0.1:8080", "10.0.0.2:8080"]
        assert p.endpoints().instances[1].metadata["terminating"] == "true"
    with publisher(k8s_api, "web", ns, accept="all") as p:
        assert len(addresses(p)) == 3


def test_named_ports_and_a_slice_without_the_port_is_skipped_and_logged(
    k8s_api: K8sApiServer, ns: str, logs: pytest.LogCaptureFixture
) -> None:
    ports = [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "grpc", "port": 9090, "protocol": "TCP"}]
    k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")], ports=ports), ns)
    k8s_api.apply(endpoint_slice("web-b", "web", [endpoint("10.0.0.2")], ports=ports[:1]), ns)
    with publisher(k8s_api, "web", ns, port="grpc") as p:
        assert addresses(p) == ["10.0.0.1:9090"]
    skipped = events(logs, "kubernetes_slice_skipped")
    assert skipped and "has no port 'grpc'" in skipped[0].reason
    with publisher(k8s_api, "web", ns, port=8080) as p:
        assert addresses(p) == ["10.0.0.1:8080", "10.0.0.2:8080"]
    with publisher(k8s_api, "web", ns) as p:  # several ports and none chosen: that slice is ambiguous
        assert addresses(p) == ["10.0.0.2:8080"]


def test_ipv6_slices(k8s_api: K8sApiServer, ns: str) -> None:
    k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("fd00::1")], address_type="IPv6"), ns)
    with publisher(k8s_api, "web", ns) as p:
        assert addresses(p) == ["[fd00::1]:8080"]


def test_a_label_selector_narrows_the_slices(k8s_api: K8sApiServer, ns: str) -> None:
    k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")], labels={"track": "stable"}), ns)
    k8s_api.apply(endpoint_slice("web-b", "web", [endpoint("10.0.0.2")], labels={"track": "canary"}), ns)
    with publisher(k8s_api, "web", ns, label_selector="track!=canary") as p:
        assert addresses(p) == ["10.0.0.1:8080"]


def test_410_gone_lists_again_without_losing_changes(
    k8s_api: K8sApiServer, ns: str, logs: pytest.LogCaptureFixture
) -> None:
    k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")]), ns)
    with publisher(k8s_api, "web", ns) as p:
        k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1", zone="z")]), ns)
        eventually(lambda: p.endpoints().instances[0].metadata.get("zone") == "z", 10, "the watch is open")
        lists = k8s_api.stats()["list"]
        k8s_api.control("compact")
        k8s_api.control("expire")  # the open watch gets ERROR 410, and its version is gone for a new one
        k8s_api.apply(endpoint_slice("web-b", "web", [endpoint("10.0.0.2")]), ns)
        eventually(lambda: addresses(p) == ["10.0.0.1:8080", "10.0.0.2:8080"], 10, "the change after 410")
        assert k8s_api.stats()["list"] > lists
        assert events(logs, "kubernetes_resync")
        assert p.endpoints().stale is False


def test_bookmarks_move_the_version_forward(k8s_api: K8sApiServer, ns: str) -> None:
    k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")]), ns)
    with publisher(k8s_api, "web", ns) as p:
        before = int(p.resource_version)
        k8s_api.apply(endpoint_slice("x-a", "x", [endpoint("10.0.0.9")]), "elsewhere")  # moves the version only

        def bookmarked() -> bool:
            k8s_api.control("bookmark")  # again until the watch, perhaps not open yet, has one
            return int(p.resource_version) > before

        eventually(bookmarked, 10, "a bookmark's version")
        assert addresses(p) == ["10.0.0.1:8080"]


def test_a_server_that_ends_the_watch_is_resumed_without_a_relist(k8s_api: K8sApiServer, ns: str) -> None:
    k8s_api.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")]), ns)
    with publisher(k8s_api, "web", ns, watch_timeout=1) as p:
        lists, watches = k8s_api.stats()["list"], k8s_api.stats()["watch"]
        eventually(lambda: k8s_api.stats()["watch"] >= watches + 2, 10, "watches renewed")
        k8s_api.apply(endpoint_slice("web-b", "web", [endpoint("10.0.0.2")]), ns)
        eventually(lambda: len(p.endpoints()) == 2, 10, "a change on a renewed watch")
        assert k8s_api.stats()["list"] == lists


def test_a_dropped_connection_and_a_dead_server_keep_the_stale_set() -> None:
    with K8sApiServer(token=TOKEN) as server:
        server.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")]))
        with publisher(server, "web", "default", max_backoff=0.2) as p:
            server.control("drop")
            server.apply(endpoint_slice("web-b", "web", [endpoint("10.0.0.2")]))
            eventually(lambda: len(p.endpoints()) == 2, 10, "resumed after a dropped stream")
            server.stop()
            eventually(lambda: p.endpoints().stale, 10, "stale")
            assert addresses(p) == ["10.0.0.1:8080", "10.0.0.2:8080"]
            assert "kubernetes http://127.0.0.1" in str(p.last_error)
            server.start()  # an empty store: a fresh server lists what it has (nothing)
            eventually(lambda: not p.endpoints().stale and addresses(p) == [], 15, "fresh again")


def test_a_rotated_token_file_is_read_again(tmp_path: Path, logs: pytest.LogCaptureFixture) -> None:
    with K8sApiServer(token="first") as server:
        server.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")]))
        token_file = tmp_path / "token"
        token_file.write_text("first\n")
        source = TokenSource(path=token_file)
        with kubernetes.Publisher("web", config=Config(server.url, token=source), close_delay=0, max_backoff=0.2) as p:
            p.wait_ready(10)
            assert addresses(p) == ["10.0.0.1:8080"]
            # The watch is open: no request is in flight while the token rotates. As in a cluster, the
            # old token stays valid until the kubelet has replaced the file (a request between the two
            # would otherwise be refused, and its 401 re-read the old file: a read too many).
            eventually(lambda: server.stats()["open_watches"] == 1, 10, "the watch open")
            server.set_tokens("first", "second")  # the cluster issued a new token ...
            (tmp_path / "token.new").write_text("second\n")
            os.replace(tmp_path / "token.new", token_file)  # ... the kubelet replaced the file ...
            server.set_tokens("second")  # ... and the old one expired
            server.control("drop")
            server.apply(endpoint_slice("web-b", "web", [endpoint("10.0.0.2")]))
            eventually(lambda: len(p.endpoints()) == 2, 10, "changes seen with the new token")
            stats = server.stats()
            assert stats["tokens_seen"][-1] == "second"
            assert stats["unauthorized"] == 0  # the file was read again because it changed, not after a 401
            assert source.reads == 2


def test_in_cluster_configuration_over_https(tmp_path: Path) -> None:
    with K8sApiServer(token="sa-token", tls=True) as server:
        server.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")]), "shop")
        (tmp_path / "token").write_text("sa-token")
        assert server.ca is not None
        (tmp_path / "ca.crt").write_bytes(server.ca.read_bytes())
        (tmp_path / "namespace").write_text("shop")
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(server.port)}
        cluster = Config.in_cluster(root=tmp_path, environ=env)
        assert cluster.server == server.url and cluster.namespace == "shop"
        with kubernetes.Publisher("web", config=cluster, close_delay=0) as p:
            p.wait_ready(10)
            assert addresses(p) == ["10.0.0.1:8080"] and p.last_error is None


def test_in_cluster_without_the_environment_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        Config.in_cluster(root=tmp_path, environ={})
    with pytest.raises(ConfigError, match="no service account token at"):
        Config.in_cluster(
            root=tmp_path, environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
        )


def _kubeconfig(path: Path, server: str, user: dict[str, Any], cluster: dict[str, Any] | None = None) -> Path:
    import yaml

    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "test",
        "contexts": [
            {"name": "test", "context": {"cluster": "c", "user": "u", "namespace": "shop"}},
            {"name": "other", "context": {"cluster": "c", "user": "u"}},
        ],
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user}],
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_kubeconfig_with_a_token_and_inline_ca(tmp_path: Path) -> None:
    with K8sApiServer(token="kc-token", tls=True) as server:
        assert server.ca is not None
        server.apply(endpoint_slice("web-a", "web", [endpoint("10.0.0.1")]), "shop")
        ca = base64.b64encode(server.ca.read_bytes()).decode()
        file = _kubeconfig(tmp_path / "config", server.url, {"token": "kc-token"}, {"certificate-authority-data": ca})
        with kubernetes.Publisher("web", kubeconfig=file, close_delay=0) as p:
            p.wait_ready(10)
            assert p.namespace == "shop" and addresses(p) == ["10.0.0.1:8080"]
        assert Config.from_kubeconfig(file, context="other").namespace == "default"
        with kubernetes.Registry(kubeconfig=file) as registry:
            assert registry.discover("web") == [
                Instance("10.0.0.1", 8080, metadata=registry.discover("web")[0].metadata)
            ]
            assert registry.list_services() == ["web"]
            assert registry.health().healthy
            with pytest.raises(NotImplementedError):
                registry.register("web", "10.0.0.5:8080")


def test_a_kubeconfig_with_a_token_file_and_a_ca_file_relative_to_it(tmp_path: Path) -> None:
    with K8sApiServer(token="from-file", tls=True) as server:
        assert server.ca is not None
        (tmp_path / "ca.pem").write_bytes(server.ca.read_bytes())
        (tmp_path / "tok").write_text("from-file")
        file = _kubeconfig(tmp_path / "config", server.url, {"tokenFile": "tok"}, {"certificate-authority": "ca.pem"})
        with kubernetes.Registry(kubeconfig=file) as registry:
            assert registry.discover("web") == []


def test_kubeconfig_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the kubeconfig"):
        Config.from_kubeconfig(tmp_path / "missing")
    file = _kubeconfig(tmp_path / "config", "https://127.0.0.1:6443", {"exec": {"command": "aws"}})
    with pytest.raises(ConfigError, match="authenticates with 'exec'"):
        Config.from_kubeconfig(file)
    with pytest.raises(ConfigError, match="no context named 'nope'"):
        Config.from_kubeconfig(file, context="nope")
    file = _kubeconfig(tmp_path / "bad-ca", "https://127.0.0.1:6443", {"token": "t"}, {"certificate-authority": "x"})
    with pytest.raises(ConfigError, match="cannot load the cluster's CA"):
        kubernetes.Publisher("web", kubeconfig=file)


def test_a_refused_token_keeps_the_set_stale_with_the_reason(k8s_api: K8sApiServer) -> None:
    p = kubernetes.Publisher("web", config=config(k8s_api, token="wrong"), close_delay=0)
    with p:
        p.wait_ready(10)
        assert p.endpoints().stale and "HTTP 401 Unauthorized" in str(p.last_error)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"port": 0}, "invalid port 0"),
        ({"port": True}, "invalid port True"),
        ({"accept": "maybe"}, "invalid accept='maybe'"),
        ({"namespace": "a/b"}, "invalid namespace 'a/b'"),
    ],
)
def test_bad_options_raise_naming_the_value(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kubernetes.Publisher("web", config=Config("http://127.0.0.1:1"), **options)


def test_a_bad_service_name_raises() -> None:
    with pytest.raises(ValueError, match="invalid service name 'a=b'"):
        kubernetes.Publisher("a=b", config=Config("http://127.0.0.1:1"))
