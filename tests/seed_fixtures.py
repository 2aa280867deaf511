"""Pytest fixtures of the HTTP seeds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.seed_daemon import SeedServer


@pytest.fixture
def seed_servers() -> Iterator[list[SeedServer]]:
    """Two seeds, started."""
    seeds = [SeedServer(), SeedServer()]
    try:
        for seed in seeds:
            seed.start()
        yield seeds
    finally:
        for seed in seeds:
            seed.close()
