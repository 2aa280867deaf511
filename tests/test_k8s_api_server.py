"""The Kubernetes API test server answers as the real API does: proven with the official ``kubernetes`` client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.k8s_api_server import K8sApiServer, endpoint, endpoint_slice

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k8s  # noqa: E402
from kubernetes import watch as k8s_watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def k8s_server() -> Iterator[K8sApiServer]:
    with K8sApiServer(token="s3cret") as server:
        yield server


def api(server: K8sApiServer, token: str | None = "s3cret") -> Any:
    configuration = k8s.Configuration(host=server.url)
    if token is not None:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    if server.ca is not None:
        configuration.ssl_ca_cert = str(server.ca)
    return k8s.DiscoveryV1Api(k8s.ApiClient(configuration))


def official_slice(name: str, service: str, *addresses: str, port: int = 8080) -> Any:
    return k8s.V1EndpointSlice(
        metadata=k8s.V1ObjectMeta(name=name, labels={"kubernetes.io/service-name": service}),
        address_type="IPv4",
        endpoints=[
            k8s.V1Endpoint(addresses=[a], conditions=k8s.V1EndpointConditions(ready=True), zone="z1") for a in addresses
        ],
        ports=[k8s.DiscoveryV1EndpointPort(name="http", port=port, protocol="TCP")],
    )


def test_create_get_replace_list_and_delete_with_the_official_client(k8s_server: K8sApiServer) -> None:
    discovery = api(k8s_server)
    created = discovery.create_namespaced_endpoint_slice("crud", official_slice("web-a", "web", "10.0.0.1"))
    assert created.metadata.resource_version and created.metadata.uid
    assert created.endpoints[0].zone == "z1" and created.ports[0].name == "http"
    got = discovery.read_namespaced_endpoint_slice("web-a", "crud")
    assert got.endpoints[0].addresses == ["10.0.0.1"]
    got.endpoints.append(k8s.V1Endpoint(addresses=["10.0.0.2"], conditions=k8s.V1EndpointConditions(ready=False)))
    replaced = discovery.replace_namespaced_endpoint_slice("web-a", "crud", got)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    discovery.create_namespaced_endpoint_slice("crud", official_slice("other-a", "other", "10.0.9.9"))

    listed = discovery.list_namespaced_endpoint_slice("crud", label_selector="kubernetes.io/service-name=web")
    assert [s.metadata.name for s in listed.items] == ["web-a"]
    assert [e.conditions.ready for e in listed.items[0].endpoints] == [True, False]
    assert int(listed.metadata.resource_version) >= int(replaced.metadata.resource_version)

    with pytest.raises(ApiException) as conflict:
        discovery.create_namespaced_endpoint_slice("crud", official_slice("web-a", "web", "10.0.0.3"))
    assert conflict.value.status == 409
    discovery.delete_namespaced_endpoint_slice("web-a", "crud")
    with pytest.raises(ApiException) as gone:
        discovery.read_namespaced_endpoint_slice("web-a", "crud")
    assert gone.value.status == 404


def test_paging_with_limit_and_continue(k8s_server: K8sApiServer) -> None:
    discovery = api(k8s_server)
    for n in range(5):
        discovery.create_namespaced_endpoint_slice("paging", official_slice(f"p-{n}", "p", f"10.1.0.{n}"))
    first = discovery.list_namespaced_endpoint_slice("paging", limit=2)
    assert len(first.items) == 2 and first.metadata._continue and first.metadata.remaining_item_count == 3
    k8s_server.apply(endpoint_slice("p-9", "p", [endpoint("10.1.0.9")]), "paging")  # after the first page
    names = [s.metadata.name for s in first.items]
    token = first.metadata._continue
    while token:
        page = discovery.list_namespaced_endpoint_slice("paging", limit=2, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version  # one consistent snapshot
        names += [s.metadata.name for s in page.items]
        token = page.metadata._continue
    assert names == [f"p-{n}" for n in range(5)]


def test_a_watch_replays_from_a_resource_version_then_streams_live_with_bookmarks(k8s_server: K8sApiServer) -> None:
    discovery = api(k8s_server)
    discovery.create_namespaced_endpoint_slice("watching", official_slice("w-a", "w", "10.2.0.1"))
    listed = discovery.list_namespaced_endpoint_slice("watching", label_selector="kubernetes.io/service-name=w")
    version = listed.metadata.resource_version
    k8s_server.apply(endpoint_slice("w-a", "w", [endpoint("10.2.0.1"), endpoint("10.2.0.2")]), "watching")
    k8s_server.apply(endpoint_slice("w-b", "w", [endpoint("10.2.0.3")]), "watching")
    k8s_server.apply(endpoint_slice("x-a", "x", [endpoint("10.2.9.9")]), "watching")  # not selected
    k8s_server.delete("w-b", "watching")

    stream = k8s_watch.Watch()
    seen: list[tuple[str, str, int]] = []
    for event in stream.stream(
        discovery.list_namespaced_endpoint_slice,
        "watching",
        label_selector="kubernetes.io/service-name=w",
        resource_version=version,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    ):
        obj = event["object"]
        if event["type"] == "BOOKMARK":  # the official client leaves a bookmark undecoded (it has only a version)
            assert set(obj) == {"kind", "apiVersion", "metadata"}
            assert int(obj["metadata"]["resourceVersion"]) == k8s_server.version()
            seen.append(("BOOKMARK", "", 0))
            stream.stop()
            continue
        seen.append((event["type"], obj.metadata.name, len(obj.endpoints or [])))
        if len(seen) == 3:
            k8s_server.control("bookmark")
    assert seen == [("MODIFIED", "w-a", 2), ("ADDED", "w-b", 1), ("DELETED", "w-b", 1), ("BOOKMARK", "", 0)]
    assert stream.resource_version == str(k8s_server.version())  # the client resumes from the bookmark


def test_a_watch_from_a_compacted_version_gets_410_gone(k8s_server: K8sApiServer) -> None:
    discovery = api(k8s_server)
    discovery.create_namespaced_endpoint_slice("gone", official_slice("g-a", "g", "10.3.0.1"))
    old = discovery.list_namespaced_endpoint_slice("gone").metadata.resource_version
    k8s_server.apply(endpoint_slice("g-a", "g", [endpoint("10.3.0.2")]), "gone")
    k8s_server.control("compact")
    with pytest.raises(ApiException) as gone:
        for _ in k8s_watch.Watch().stream(
            discovery.list_namespaced_endpoint_slice, "gone", resource_version=old, timeout_seconds=5
        ):
            pass
    assert gone.value.status == 410
    assert "too old resource version" in gone.value.reason


def test_the_raw_watch_stream_is_chunked_json_lines(k8s_server: K8sApiServer) -> None:
    import httpx

    k8s_server.apply(endpoint_slice("r-a", "r", [endpoint("10.4.0.1")]), "raw")
    with httpx.stream(
        "GET",
        f"{k8s_server.url}/apis/discovery.k8s.io/v1/namespaces/raw/endpointslices",
        params={"watch": "1", "timeoutSeconds": "1"},
        headers={"Authorization": "Bearer s3cret"},
    ) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        lines = [line for line in response.iter_lines() if line]
    assert len(lines) == 1 and '"type":"ADDED"' in lines[0] and '"name":"r-a"' in lines[0]


def test_a_wrong_token_gets_401_with_a_status(k8s_server: K8sApiServer) -> None:
    with pytest.raises(ApiException) as refused:
        api(k8s_server, token="wrong").list_namespaced_endpoint_slice("default")
    assert refused.value.status == 401


def test_https_with_the_official_client() -> None:
    with K8sApiServer(token="t", tls=True) as server:
        server.apply(endpoint_slice("tls-a", "tls", [endpoint("10.5.0.1")]))
        items = api(server, token="t").list_namespaced_endpoint_slice("default").items
        assert [s.metadata.name for s in items] == ["tls-a"]
