"""Shared fixtures. Real servers come from ``tests/servers.py``."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest

from tests.consul_fixtures import consul_acl_server, consul_server
from tests.servers import BindServer, require_named

__all__ = ["consul_acl_server", "consul_server"]  # fixtures of the Consul API test server

_names = itertools.count()


@pytest.fixture(scope="session")
def bind() -> Iterator[BindServer]:
    """One BIND 9 for the session (tests use names of their own: see ``srv_name``)."""
    require_named()
    with BindServer() as server:
        yield server


@pytest.fixture
def private_bind() -> Iterator[BindServer]:
    """A BIND 9 for one test, free to be stopped and restarted."""
    require_named()
    with BindServer() as server:
        yield server


@pytest.fixture
def srv_name() -> str:
    """A relative SRV name no other test uses (``"_t7._tcp"``)."""
    return f"_t{next(_names)}._tcp"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """``caplog`` recording the library's events from INFO up."""
    caplog.set_level(logging.INFO, logger="loadbalancer")
    return caplog


# Fixtures that start a real server: a test using one is marked ``server`` (as are those
# marked by hand because they start their own), so ``-m "not server"`` is the quick run.
_SERVER_FIXTURES = frozenset(
    {"bind", "private_bind", "zookeeper_server", "private_zookeeper", "zk_client", "unstarted_zookeeper",
     "server", "cluster", "etcd_server", "k8s_api", "k8s_server", "avahi",
     "eureka_server", "seed_servers", "consul_server", "consul_acl_server"}
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
