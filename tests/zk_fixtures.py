"""pytest fixtures for a real ZooKeeper; a test module uses them with ``pytest_plugins = ["tests.zk_fixtures"]``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from tests.zk_server import ZooKeeperServer, require_zookeeper, require_zookeeper_tls

_paths = itertools.count()


@pytest.fixture(scope="session")
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    """One ZooKeeper for the session (tests use paths of their own: see ``zk_path``)."""
    require_zookeeper()
    with ZooKeeperServer() as server:
        yield server


@pytest.fixture(scope="session")
def tls_zookeeper() -> Iterator[ZooKeeperServer]:
    """A ZooKeeper that also takes TLS connections (client certificates required) on ``tls_hosts``."""
    require_zookeeper_tls()
    with ZooKeeperServer(tls=True) as server:
        yield server


@pytest.fixture
def private_zookeeper() -> Iterator[ZooKeeperServer]:
    """A ZooKeeper for one test, free to be stopped and restarted."""
    require_zookeeper()
    with ZooKeeperServer() as server:
        yield server


@pytest.fixture
def zk_client(zookeeper_server: ZooKeeperServer) -> Iterator[Any]:
    """A started ``KazooClient`` on the session's server, to change nodes the way another process would."""
    client = zookeeper_server.client()
    yield client
    client.stop()
    client.close()


@pytest.fixture
def zk_path() -> str:
    """A service path no other test uses (``"/tests/s7/api"``)."""
    return f"/tests/s{next(_paths)}/api"


@pytest.fixture
def unstarted_zookeeper() -> Iterator[ZooKeeperServer]:
    """A ZooKeeper for one test, with its port chosen but not started: nothing listens until ``start()``."""
    require_zookeeper()
    server = ZooKeeperServer()
    try:
        yield server
    finally:
        server.close()
