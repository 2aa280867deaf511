"""Pytest fixtures of the Eureka API test server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.eureka_daemon import EurekaServer


@pytest.fixture
def eureka_server() -> Iterator[EurekaServer]:
    with EurekaServer() as server:
        yield server
