"""The Eureka API test server is faithful: py-eureka-client (a maintained Eureka client) drives it.

py-eureka-client registers with JSON, sends heartbeats and status changes, cancels, and
reads the registry, deltas, applications and instances as XML; its own reconciliation (its
local apps hash against the server's ``apps__hashcode``) must agree with the server's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.eureka_daemon import EurekaServer
from tests.helpers import aeventually


@pytest.fixture
def eureka_server() -> Iterator[EurekaServer]:
    with EurekaServer() as server:
        yield server


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # py-eureka-client's logger.warn

eureka_basic = pytest.importorskip("py_eureka_client.eureka_basic")
eureka_client = pytest.importorskip("py_eureka_client.eureka_client")


async def make_client(server: EurekaServer, app: str, port: int, **options: object) -> Any:
    """A registering client, its instance prepared as ``start()`` does, without its heartbeat thread."""
    client = eureka_client.EurekaClient(
        eureka_server=server.url,
        app_name=app,
        instance_host="127.0.0.1",
        instance_ip="127.0.0.1",
        instance_port=port,
        renewal_interval_in_secs=1,
        duration_in_secs=3,
        should_discover=False,
        **options,
    )
    await client._EurekaClient__parepare_instance_info()
    return client


async def test_a_registration_by_py_eureka_client_is_read_back_by_it_as_xml(eureka_server: EurekaServer) -> None:
    client = await make_client(eureka_server, "orders", 8081)
    await client.register()
    apps = await eureka_basic.get_applications(eureka_server.url)
    (application,) = apps.applications
    assert application.name == "ORDERS"
    (instance,) = application.instances
    assert (instance.ipAddr, instance.port.port, instance.port.enabled, instance.status) == (
        "127.0.0.1",
        8081,
        True,
        "UP",
    )
    assert instance.actionType == "ADDED"
    assert apps.appsHashcode == "UP_1_"
    one = await eureka_basic.get_app_instance(eureka_server.url, "ORDERS", instance.instanceId)
    assert one.instanceId == instance.instanceId
    assert eureka_server.get(f"instances/{instance.instanceId}")["instance"]["app"] == "ORDERS"
    # the same registry as JSON, as Eureka answers when asked for it
    document = eureka_server.get("apps")["applications"]
    assert document["apps__hashcode"] == "UP_1_"
    assert document["application"][0]["instance"][0]["port"] == {"$": 8081, "@enabled": "true"}


async def test_status_changes_heartbeats_and_cancel_are_seen_in_deltas_with_the_hash(
    eureka_server: EurekaServer,
) -> None:
    first, second = await make_client(eureka_server, "orders", 8081), await make_client(eureka_server, "orders", 8082)
    await first.register()
    await second.register()
    await second.status_update("OUT_OF_SERVICE")
    delta = await eureka_basic.get_delta(eureka_server.url)
    assert delta.appsHashcode == "OUT_OF_SERVICE_1_UP_1_"
    actions = [(i.instanceId.split(":")[-1], i.actionType, i.status) for a in delta.applications for i in a.instances]
    assert ("8082", "MODIFIED", "OUT_OF_SERVICE") in actions
    await first.send_heartbeat()
    assert eureka_server.stats()["renew"] == 1
    await first.cancel()
    delta = await eureka_basic.get_delta(eureka_server.url)
    assert delta.appsHashcode == "OUT_OF_SERVICE_1_"
    actions = [(i.instanceId.split(":")[-1], i.actionType) for a in delta.applications for i in a.instances]
    assert ("8081", "DELETED") in actions


async def test_a_heartbeat_for_an_unknown_instance_is_404_and_the_client_registers_again(
    eureka_server: EurekaServer,
) -> None:
    client = await make_client(eureka_server, "orders", 8081)
    await client.register()
    instance_id = eureka_server.get("apps")["applications"]["application"][0]["instance"][0]["instanceId"]
    assert eureka_server.cancel("orders", instance_id) == 200
    with pytest.raises(Exception, match="404"):
        await eureka_basic.send_heartbeat(eureka_server.url, "ORDERS", instance_id, "0")
    await client.send_heartbeat()  # py-eureka-client registers again after a failed heartbeat
    assert eureka_server.get("apps")["applications"]["apps__hashcode"] == "UP_1_"


async def test_a_lease_not_renewed_expires_and_is_a_deleted_change(eureka_server: EurekaServer) -> None:
    eureka_server.register("orders", "o-1", "127.0.0.1", 8081, leaseInfo={"durationInSecs": 1})

    def gone() -> bool:
        return eureka_server.get("apps")["applications"]["apps__hashcode"] == ""

    await aeventually(gone, 10, "the unrenewed instance to be evicted")
    delta = await eureka_basic.get_delta(eureka_server.url)  # py-eureka-client keeps the last change by id
    assert [i.actionType for a in delta.applications for i in a.instances] == ["DELETED"]
    raw = eureka_server.get("apps/delta")["applications"]["application"][0]["instance"]
    assert [i["actionType"] for i in raw] == ["ADDED", "DELETED"]


async def test_py_eureka_clients_own_delta_reconciliation_agrees_with_the_server(eureka_server: EurekaServer) -> None:
    for n in range(3):
        eureka_server.register("orders", f"o-{n}", "127.0.0.1", 8080 + n)
    eureka_server.set_status("orders", "o-2", "DOWN")
    client = eureka_client.EurekaClient(
        eureka_server=eureka_server.url, app_name="watcher", instance_port=9999, should_register=False
    )
    # py-eureka-client fetches the registry, then deltas: its local hash must match the server's
    await client._EurekaClient__pull_full_registry()  # type: ignore[attr-defined]
    eureka_server.cancel("orders", "o-0")
    before = eureka_server.stats()["full"]
    await client._EurekaClient__fetch_delta()  # type: ignore[attr-defined]
    assert eureka_server.stats()["full"] == before  # the delta sufficed: hashes matched
    up = client.applications.get_application("ORDERS").up_instances
    assert sorted(i.instanceId for i in up) == ["o-1"]


def test_the_v2_prefix_xml_default_and_unknown_things(eureka_server: EurekaServer) -> None:
    base = f"http://127.0.0.1:{eureka_server.port}"
    reply = httpx.get(base + "/eureka/v2/apps")
    assert reply.status_code == 200 and reply.text.startswith("<applications>")
    assert httpx.get(base + "/eureka/apps/NOPE").status_code == 404
    assert httpx.put(base + "/eureka/apps/NOPE/x").status_code == 404
    assert httpx.delete(base + "/eureka/apps/NOPE/x").status_code == 404
    assert httpx.post(base + "/eureka/apps/NOPE", content=b"{}").status_code == 400


async def test_the_server_runs_as_a_separate_process() -> None:
    with EurekaServer() as server:
        assert server.pid is not None and server.running
    assert not server.running
    await asyncio.sleep(0)
