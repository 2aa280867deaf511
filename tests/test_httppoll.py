"""``loadbalancer.httppoll`` against real HTTP seeds (``http.server`` processes on loopback)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loadbalancer import Instance, httppoll
from tests.helpers import eventually
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


def addresses(publisher: httppoll.Publisher[Instance]) -> list[str]:
    return sorted(str(i) for i in publisher.endpoints())


def test_a_seed_list_in_both_formats_is_published_and_follows_changes(seed_servers: list[SeedServer]) -> None:
    seed = seed_servers[0]
    seed.publish([
        "127.0.0.1:9001",
        {"id": "b", "name": "api", "version": "1.2", "address": "127.0.0.1", "port": 9002, "tags": ["blue"],
         "metadata": {"zone": "eu"}, "status": "passing", "weight": 3},
        {"id": "c", "name": "api", "address": "127.0.0.1", "port": 9003, "status": "critical"},
        {"id": "d", "name": "billing", "address": "127.0.0.1", "port": 9004},
    ])  # fmt: skip
    with httppoll.Publisher(seed.url(), service="api", interval=0.1) as publisher:
        assert publisher.wait_ready(10)
        assert addresses(publisher) == ["127.0.0.1:9001", "127.0.0.1:9002"]
        (b,) = [i for i in publisher.endpoints() if i.port == 9002]
        assert b == Instance("127.0.0.1", 9002, weight=3, tags=("blue",), metadata={"zone": "eu", "version": "1.2"})
        seed.publish(["127.0.0.1:9001", {"id": "c", "address": "127.0.0.1", "port": 9003, "status": "up"}])
        eventually(lambda: addresses(publisher) == ["127.0.0.1:9001", "127.0.0.1:9003"], 10, "the new list")


def test_an_unchanged_answer_is_a_304_and_is_not_parsed(seed_servers: list[SeedServer]) -> None:
    seed = seed_servers[0]
    seed.publish([f"127.0.0.1:{9000 + n}" for n in range(1, 50)])
    with httppoll.Publisher(seed.url(), interval=0.05) as publisher:
        assert publisher.wait_ready(10)
        eventually(lambda: publisher.requests["304"] >= 5, 10, "five conditional polls")
        assert publisher.requests["200"] == 1  # parsed once
        assert seed.stats()["304"] >= 5


def test_a_seed_down_keeps_its_last_answer_and_all_down_makes_the_set_stale(
    seed_servers: list[SeedServer], logs: pytest.LogCaptureFixture
) -> None:
    first, second = seed_servers
    first.publish(["127.0.0.1:9001"])
    second.publish(["127.0.0.1:9002"])
    with httppoll.Publisher([first.url(), second.url()], interval=0.1, max_backoff=0.2) as publisher:
        assert publisher.wait_ready(10)
        assert addresses(publisher) == ["127.0.0.1:9001", "127.0.0.1:9002"]
        first.stop()
        second.publish(["127.0.0.1:9002", "127.0.0.1:9003"])
        eventually(lambda: len(publisher.endpoints()) == 3, 10, "the second seed's change")
        assert not publisher.endpoints().stale  # one seed still answers
        assert any(getattr(r, "event", None) == "httppoll_seed_failed" for r in logs.records)
        second.stop()
        eventually(lambda: publisher.endpoints().stale, 10, "stale once every seed fails")
        assert addresses(publisher) == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
        first.start()
        first.publish(["127.0.0.1:9005"])
        eventually(lambda: not publisher.endpoints().stale and "127.0.0.1:9005" in addresses(publisher), 10, "fresh")


def test_seeds_that_disagree_are_merged_and_the_first_seed_wins_an_id(seed_servers: list[SeedServer]) -> None:
    first, second = seed_servers
    first.publish(
        [{"id": "x", "address": "127.0.0.1", "port": 9001}, {"id": "y", "address": "127.0.0.1", "port": 9002}]
    )
    second.publish(
        [{"id": "x", "address": "127.0.0.1", "port": 9101}, {"id": "z", "address": "127.0.0.1", "port": 9003}]
    )
    with httppoll.Registry([first.url(), second.url()]) as registry:
        assert [str(i) for i in registry.discover("default")] == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"]
        with pytest.raises(NotImplementedError, match="cannot register"):
            registry.register("default", "127.0.0.1:1")


def test_a_templated_seed_per_service_and_404_as_no_instances(seed_servers: list[SeedServer]) -> None:
    seed = seed_servers[0]
    seed.publish({"instances": ["127.0.0.1:9001"]}, name="api.json")
    with httppoll.Registry(seed.base + "{service}.json") as registry:
        assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:9001"]
        assert registry.discover("nothing") == []


def test_a_malformed_answer_is_an_error_naming_the_seed_and_the_set_stays(seed_servers: list[SeedServer]) -> None:
    seed = seed_servers[0]
    seed.publish(["127.0.0.1:9001"])
    with httppoll.Publisher(seed.url(), interval=0.1, max_backoff=0.2) as publisher:
        assert publisher.wait_ready(10)
        seed.publish([{"address": "127.0.0.1", "port": "http"}])
        eventually(lambda: publisher.endpoints().stale, 10, "the bad answer to be refused")
        error = str(publisher.endpoints().error)
        assert seed.url() in error and "'port' is missing or not a number" in error
        assert addresses(publisher) == ["127.0.0.1:9001"]


def test_bad_seeds_are_refused_with_the_value_named() -> None:
    with pytest.raises(ValueError, match="invalid seed URL 'ftp://x/peers'"):
        httppoll.Publisher("ftp://x/peers")
    with pytest.raises(ValueError, match="at least one URL"):
        httppoll.Backend([])
