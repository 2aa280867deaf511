"""The Consul API test server, driven by py-consul (Consul's maintained Python client): proof that it
behaves as Consul documents, before the library's own tests rely on it."""

from __future__ import annotations

import threading
import time
from typing import Any

import consul as pyconsul
import pytest

from tests.consul_fixtures import ConsulServer
from tests.helpers import eventually

pytestmark = pytest.mark.server


def client(server: ConsulServer, token: str | None = None) -> pyconsul.Consul:
    return pyconsul.Consul(host="127.0.0.1", port=server.port, token=token)


def statuses(entry: dict[str, Any]) -> dict[str, str]:
    return {check["CheckID"]: check["Status"] for check in entry["Checks"]}


def test_agent_registration_with_lowercase_keys_and_a_ttl_check_that_starts_critical(
    consul_server: ConsulServer,
) -> None:
    c = client(consul_server)
    c.agent.service.register(
        "web", service_id="web-1", address="10.0.0.1", port=80, tags=["a", "b"], meta={"zone": "eu"},
        check=pyconsul.Check.ttl("30s"),
    )  # fmt: skip
    services = c.agent.services()
    assert services["web-1"]["Service"] == "web" and services["web-1"]["Port"] == 80
    assert services["web-1"]["Tags"] == ["a", "b"] and services["web-1"]["Meta"] == {"zone": "eu"}
    assert services["web-1"]["Weights"] == {"Passing": 1, "Warning": 1}
    _, entries = c.health.service("web")
    assert statuses(entries[0]) == {"serfHealth": "passing", "service:web-1": "critical"}
    assert c.health.service("web", passing=True)[1] == []  # critical until first passed
    c.agent.check.ttl_pass("service:web-1", notes="fine")
    _, entries = c.health.service("web", passing=True)
    assert [e["Service"]["ID"] for e in entries] == ["web-1"]
    assert entries[0]["Checks"][1]["Output"] == "fine"
    c.agent.check.ttl_warn("service:web-1")
    assert c.health.service("web", passing=True)[1] == []  # passing means passing only
    c.agent.check.ttl_fail("service:web-1")
    assert statuses(c.health.service("web")[1][0])["service:web-1"] == "critical"
    assert c.agent.checks()["service:web-1"]["Status"] == "critical"


def test_a_ttl_check_not_passed_in_time_turns_critical(consul_server: ConsulServer) -> None:
    c = client(consul_server)
    c.agent.service.register("web", service_id="web-1", port=80, check=pyconsul.Check.ttl("1s"))
    c.agent.check.ttl_pass("service:web-1")
    assert len(c.health.service("web", passing=True)[1]) == 1
    eventually(lambda: c.health.service("web", passing=True)[1] == [], timeout=10, what="TTL expiry")
    assert "TTL expired" in c.health.service("web")[1][0]["Checks"][1]["Output"]


def test_deregister_critical_service_after_removes_the_service(consul_server: ConsulServer) -> None:
    c = client(consul_server)
    check = pyconsul.Check.ttl("1s")
    check["DeregisterCriticalServiceAfter"] = "1s"
    c.agent.service.register("web", service_id="web-1", port=80, check=check)
    c.agent.service.register("web", service_id="web-2", port=81, check=pyconsul.Check.ttl("1h"))
    eventually(lambda: "web-1" not in c.agent.services(), timeout=10, what="the critical service reaped")
    assert "web-2" in c.agent.services()  # critical too, but without DeregisterCriticalServiceAfter


def test_deregistration_and_unknown_ids(consul_server: ConsulServer) -> None:
    c = client(consul_server)
    c.agent.service.register("web", service_id="web-1", port=80)
    assert c.agent.service.deregister("web-1") is True
    assert c.agent.services() == {}
    assert c.agent.check.ttl_pass("service:nope") is False  # 404: py-consul answers False
    assert c.agent.service.deregister("web-1") is False


def test_health_filters_on_passing_several_tags_and_the_datacenter(consul_server: ConsulServer) -> None:
    c = client(consul_server)
    for n, tags in enumerate((["a"], ["a", "b"], ["b"]), 1):
        c.agent.service.register("web", service_id=f"web-{n}", port=80 + n, tags=tags, check=pyconsul.Check.ttl("1h"))
        c.agent.check.ttl_pass(f"service:web-{n}")
    ids = lambda entries: [e["Service"]["ID"] for e in entries]  # noqa: E731
    assert ids(c.health.service("web", tag="a")[1]) == ["web-1", "web-2"]
    assert ids(c.health.service("web", tag=["a", "b"])[1]) == ["web-2"]  # every tag must match
    assert ids(c.health.service("web", dc="dc1")[1]) == ["web-1", "web-2", "web-3"]
    with pytest.raises(pyconsul.ConsulException, match="No path to datacenter"):
        c.health.service("web", dc="elsewhere")
    assert c.health.service("nothing")[1] == []


def test_the_node_address_stands_in_for_an_empty_service_address(consul_server: ConsulServer) -> None:
    c = client(consul_server)
    c.agent.service.register("web", service_id="web-1", port=80)
    entry = c.health.service("web")[1][0]
    assert entry["Service"]["Address"] == "" and entry["Node"]["Address"] == "127.0.0.1"


def test_a_blocking_query_returns_when_the_index_moves(consul_server: ConsulServer) -> None:
    c = client(consul_server)
    c.agent.service.register("web", service_id="web-1", port=80)
    index, _ = c.health.service("web")
    answer: list[Any] = []
    waiter = threading.Thread(target=lambda: answer.append(c.health.service("web", index=index, wait="30s")))
    waiter.start()
    # the query must be waiting when the change comes: the server says when it is
    eventually(lambda: consul_server.request("GET", "/_test/blocked")["Blocked"] == 1, 10, "the query waiting")
    assert not answer  # blocked: nothing changed
    c.agent.service.register("web", service_id="web-2", port=81)
    waiter.join(timeout=20)
    new_index, entries = answer[0]
    assert int(new_index) > int(index) and len(entries) == 2


def test_a_blocking_query_returns_when_wait_runs_out_with_the_same_index(consul_server: ConsulServer) -> None:
    c = client(consul_server)
    c.agent.service.register("web", service_id="web-1", port=80)
    index, _ = c.health.service("web")
    started = time.monotonic()
    again, entries = c.health.service("web", index=index, wait="1s")
    assert again == index and len(entries) == 1
    assert time.monotonic() - started >= 1.0  # it blocked for the wait (a lower bound, not a timing test)


def test_an_index_of_zero_answers_at_once_and_a_change_elsewhere_leaves_the_service_index(
    consul_server: ConsulServer,
) -> None:
    c = client(consul_server)
    c.agent.service.register("web", service_id="web-1", port=80)
    index, _ = c.health.service("web", index=0, wait="30s")
    c.agent.service.register("other", service_id="other-1", port=90)
    assert c.health.service("web")[0] == index  # the index of the service's own last change


def test_the_index_can_be_set_back_as_a_snapshot_restore_does(consul_server: ConsulServer) -> None:
    c = client(consul_server)
    c.agent.service.register("web", service_id="web-1", port=80)
    index, _ = c.health.service("web")
    consul_server.request("PUT", "/_test/index/3")
    assert int(c.health.service("web")[0]) == 3 < int(index)


def test_catalog_services_lists_names_with_their_tags(consul_server: ConsulServer) -> None:
    c = client(consul_server)
    c.agent.service.register("web", service_id="web-1", port=80, tags=["a"])
    c.agent.service.register("web", service_id="web-2", port=81, tags=["b"])
    c.agent.service.register("db", service_id="db-1", port=5432)
    index, services = c.catalog.services()
    assert services == {"consul": [], "web": ["a", "b"], "db": []}
    assert int(index) > 0
    _, nodes = c.catalog.service("web")
    assert [(n["ServiceID"], n["Address"]) for n in nodes] == [("web-1", "127.0.0.1"), ("web-2", "127.0.0.1")]


def test_acl_tokens_other_than_the_right_one_are_rejected_with_403(consul_acl_server: ConsulServer) -> None:
    good = client(consul_acl_server, token="root-token")
    good.agent.service.register("web", service_id="web-1", port=80)
    assert len(good.health.service("web")[1]) == 1
    with pytest.raises(pyconsul.ACLPermissionDenied, match="ACL not found"):
        client(consul_acl_server, token="wrong").health.service("web")
    with pytest.raises(pyconsul.ACLPermissionDenied, match="Permission denied"):
        client(consul_acl_server).agent.service.register("web", service_id="web-2", port=81)
    assert client(consul_acl_server).health.service("web")[1] == []  # anonymous reads are filtered


def test_an_http_check_is_run_by_the_agent(consul_server: ConsulServer) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        c = client(consul_server)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/health"
        c.agent.service.register("web", service_id="web-1", port=80, check=pyconsul.Check.http(url, "100ms"))
        eventually(lambda: len(c.health.service("web", passing=True)[1]) == 1, timeout=10, what="passing")
        status["code"] = 429
        eventually(lambda: statuses(c.health.service("web")[1][0])["service:web-1"] == "warning", timeout=10)
        status["code"] = 500
        eventually(lambda: statuses(c.health.service("web")[1][0])["service:web-1"] == "critical", timeout=10)
    finally:
        httpd.shutdown()
        httpd.server_close()
