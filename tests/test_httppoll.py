"""``loadbalancer.httppoll`` against real HTTP seeds (``http.server`` processes on loopback)."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadbalancer import DiscoveryError, Instance, TLSConfig, httppoll
from tests.etcd_server import make_certs
from tests.helpers import events, eventually
from tests.seed_daemon import SeedServer
from tests.test_etcd import MISSING_HTTPX


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
    with pytest.raises(ValueError, match="at least one seed URL"):
        httppoll.Backend([])
    with pytest.raises(ValueError, match="cannot load the CA file 'missing.pem'"):
        httppoll.Registry("https://h/peers.json", tls=TLSConfig(ca="missing.pem"))


def test_records_of_another_service_are_not_left_out_silently(
    seed_servers: list[SeedServer], logs: pytest.LogCaptureFixture
) -> None:
    seed = seed_servers[0]
    api = [{"id": f"a{n}", "name": "api", "address": "127.0.0.1", "port": 9000 + n} for n in range(3)]
    seed.publish(api)
    with httppoll.Publisher(seed.url(), interval=0.05) as publisher:  # service= left at "default"
        assert publisher.wait_ready(10) and addresses(publisher) == []
        seed.publish(api[:2])  # other answers, the same situation: said once only
        eventually(lambda: publisher.requests["200"] >= 2, 10, "the second answer read")
        seed.publish(api[1:])
        eventually(lambda: publisher.requests["200"] >= 3, 10, "the third answer read")
        (skipped,) = events(logs, "httppoll_records_skipped")
        assert skipped.levelno == logging.WARNING
        assert (skipped.seed, skipped.service, skipped.skipped, skipped.named, skipped.kept) == (
            seed.url(), "default", 3, {"api": 3}, 0
        )  # fmt: skip
        assert "another service than 'default'" in skipped.reason
        seed.publish([*api, {"id": "b1", "name": "billing", "address": "127.0.0.1", "port": 9100}])
        eventually(lambda: len(events(logs, "httppoll_records_skipped")) == 2, 10, "a new situation said")
        assert events(logs, "httppoll_records_skipped")[1].named == {"api": 3, "billing": 1}
        seed.publish(["127.0.0.1:9200"])
        eventually(lambda: addresses(publisher) == ["127.0.0.1:9200"], 10, "records without a name")
        assert len(events(logs, "httppoll_records_skipped_none")) == 1
    assert len(events(logs, "httppoll_records_skipped")) == 2


def test_a_seed_listing_several_services_says_so_at_info_and_serves_each(
    seed_servers: list[SeedServer], logs: pytest.LogCaptureFixture
) -> None:
    seed = seed_servers[0]
    seed.publish({"services": {"api": ["127.0.0.1:9001", "127.0.0.1:9002"], "db": ["127.0.0.1:5432"]}})
    with httppoll.Registry(seed.url()) as registry:
        assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:9001", "127.0.0.1:9002"]
        assert [str(i) for i in registry.discover("db")] == ["127.0.0.1:5432"]  # one URL, each service its own
        assert [str(i) for i in registry.discover("api")] == ["127.0.0.1:9001", "127.0.0.1:9002"]
        assert registry.discover("other") == []
    said = {(r.service, r.levelname, r.skipped) for r in events(logs, "httppoll_records_skipped")}
    assert said == {("api", "INFO", 1), ("db", "INFO", 2), ("other", "WARNING", 3)}
    assert httppoll.read_answer([{"name": "db", "host": "h", "port": 1}, "h:2"], "api") == (
        {"h:2": Instance("h", 2)},
        {"db": 1},
    )


def test_the_old_seeds_and_verify_keywords_still_work_and_warn(seed_servers: list[SeedServer]) -> None:
    seed = seed_servers[0]
    seed.publish(["127.0.0.1:9001"])
    with pytest.warns(DeprecationWarning, match=r"Publisher\(seeds=\.\.\.\) is deprecated: write endpoints="):
        publisher = httppoll.Publisher(seeds=seed.url(), interval=0.1)
    with publisher:
        assert publisher.wait_ready(10) and addresses(publisher) == ["127.0.0.1:9001"]
        assert repr(publisher) == f"httppoll.Publisher({seed.url()!r})"
    with pytest.warns(DeprecationWarning, match=r"Registry\(seeds=\.\.\.\) is deprecated: write endpoints="):
        registry = httppoll.Registry(seeds=[seed.url()])
    with registry:
        assert [str(i) for i in registry.discover("default")] == ["127.0.0.1:9001"]
    with pytest.warns(DeprecationWarning, match=r"Backend\(seeds=\.\.\.\) is deprecated: write endpoints="):
        backend = httppoll.Backend(seeds=seed.url())
    with pytest.warns(DeprecationWarning, match=r"\.seeds is deprecated: read \.endpoints"):
        assert backend.seeds == backend.endpoints == (seed.url(),)
    with pytest.warns(DeprecationWarning, match="verify= is deprecated: write tls="):
        publisher = httppoll.Publisher(seed.url(), verify=False, interval=0.1)
    with publisher:  # verify= concerns https:// seeds only; this one is http://
        assert publisher.wait_ready(10) and addresses(publisher) == ["127.0.0.1:9001"]
    with pytest.raises(TypeError, match="both seeds= and endpoints="):
        httppoll.Publisher(seeds=seed.url(), endpoints=seed.url())


@pytest.mark.server
def test_tls_with_a_ca_and_a_client_certificate(tmp_path: Path) -> None:
    try:
        certs = make_certs(tmp_path)
    except RuntimeError as error:
        pytest.skip(str(error))
    tls = TLSConfig(ca=certs["ca"], cert=certs["client_cert"], key=certs["client_key"])
    with SeedServer(certs=certs, client_cert_auth=True) as seed:
        assert seed.url().startswith("https://127.0.0.1:")
        seed.publish(["127.0.0.1:9001"])
        bare = seed.url().removeprefix("https://")  # no scheme: https, since tls= is given
        for given in (tls, tls.context()):
            with httppoll.Publisher(bare, tls=given, interval=0.1) as publisher:
                assert publisher.wait_ready(10) and addresses(publisher) == ["127.0.0.1:9001"]
                assert publisher.backend.endpoints == (seed.url(),)  # type: ignore[attr-defined]
        no_client_cert = httppoll.Registry(seed.url(), tls=TLSConfig(ca=certs["ca"]), timeout=2)
        with no_client_cert as registry, pytest.raises(DiscoveryError, match=seed.url()):  # refused
            registry.discover("default")
        with httppoll.Registry(seed.url(), timeout=2) as registry, pytest.raises(DiscoveryError) as caught:
            registry.discover("default")
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)  # the system's CAs do not know the test CA
    assert httppoll.Backend("h/peers.json").endpoints == ("http://h/peers.json",)
    assert httppoll.Backend("h/peers.json,http://g/p", tls=True).endpoints == ("https://h/peers.json", "http://g/p")


def test_a_missing_httpx_names_the_extra() -> None:
    code = MISSING_HTTPX.format(package="httppoll")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip().split("|") == [
        "httppoll",
        "httpx",
        "True",
        "loadbalancer.httppoll needs an optional dependency (httpx): pip install 'loadbalancer[httppoll]'",
    ]
    assert issubclass(httppoll.SeedError, DiscoveryError)
