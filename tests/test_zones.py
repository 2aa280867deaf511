"""Zone awareness: Instance.zone, and ZoneAware's local preference with proportional spill-over (Envoy's)."""

from __future__ import annotations

import collections
from typing import Any

import pytest

from loadbalancer import Instance, LeastLoaded, NoEndpointsError, OutlierDetector, static
from loadbalancer.consul._backend import instance_of as consul_instance
from loadbalancer.eureka._records import instance_of as eureka_instance
from loadbalancer.zones import ZoneAware, zone_shares

PICKS = 40_000


def fleet(counts: dict[str, int]) -> list[Instance]:
    return [
        Instance(f"10.{z}.0.{i}", 80, metadata={"zone": name})
        for z, (name, n) in enumerate(counts.items())
        for i in range(1, n + 1)
    ]


def zone_of(address: str) -> str:
    return "abcdef"[int(address.split(".")[1])]


def zone_counts(lb: ZoneAware[Any], picks: int = PICKS) -> dict[str, float]:
    counts = collections.Counter(zone_of(str(lb.endpoint())) for _ in range(picks))
    return {z: n / picks for z, n in sorted(counts.items())}


# -- Instance.zone and the backends -----------------------------------------------------------


def test_the_zone_comes_from_metadata_then_tags() -> None:
    assert Instance("10.0.0.1", 80).zone is None
    assert Instance("10.0.0.1", 80, tags=("v2", "zone=eu-1a")).zone == "eu-1a"
    assert Instance("10.0.0.1", 80, metadata={"topology.kubernetes.io/zone": "z1"}).zone == "z1"
    assert Instance("10.0.0.1", 80, metadata={"availabilityZone": "us-east-1c"}).zone == "us-east-1c"
    both = Instance("10.0.0.1", 80, tags=("zone=tag",), metadata={"zone": "meta"})
    assert both.zone == "meta"


def test_consul_reads_the_service_or_node_zone() -> None:
    entry: dict[str, Any] = {"Node": {"Address": "10.0.0.2", "Meta": {"zone": "node-z"}},
                             "Service": {"Port": 80, "Meta": {}}, "Checks": []}  # fmt: skip
    assert consul_instance(entry).zone == "node-z"
    entry["Service"]["Meta"] = {"zone": "svc-z"}
    assert consul_instance(entry).zone == "svc-z"


def test_eureka_reads_the_aws_availability_zone() -> None:
    record = {"ipAddr": "10.0.0.7", "port": {"$": 8080, "@enabled": "true"},
              "dataCenterInfo": {"name": "Amazon", "metadata": {"availability-zone": "us-east-1d"}}}  # fmt: skip
    instance = eureka_instance(record, secure=None, address="ip")
    assert instance is not None and instance.zone == "us-east-1d"
    record["metadata"] = {"zone": "spring-zone"}
    instance = eureka_instance(record, secure=None, address="ip")
    assert instance is not None and instance.zone == "spring-zone"


# -- the routing rule -------------------------------------------------------------------------


def test_balanced_zones_stay_local() -> None:
    assert zone_shares("a", {"a": 3, "b": 3, "c": 3}, {"a": 5, "b": 5, "c": 5}) == {"a": 1.0}
    assert zone_shares("a", {"a": 4, "b": 3, "c": 3}, {"a": 1, "b": 1, "c": 1}) == {"a": 1.0}  # more room


def test_an_unbalanced_zone_spills_in_proportion_to_residual_capacity() -> None:
    # local: 40% of the clients, 20% of the servers: half stays, half spills; b and c have
    # 5% and 15% of room above their own clients (35% and 25%)
    shares = zone_shares("a", {"a": 2, "b": 4, "c": 4}, {"a": 8, "b": 7, "c": 5})
    assert shares["a"] == pytest.approx(0.5)
    assert shares["b"] == pytest.approx(0.5 * 0.05 / 0.2)
    assert shares["c"] == pytest.approx(0.5 * 0.15 / 0.2)


def test_routing_is_off_for_small_clusters_single_zones_and_panic() -> None:
    spread = {"a": 0.5, "b": 0.5}
    assert zone_shares("a", {"a": 2, "b": 2}, {"a": 1, "b": 1}) == spread  # under min_cluster_size
    assert zone_shares("a", {"a": 2, "b": 2}, {"a": 1, "b": 1}, min_cluster_size=4) == {"a": 1.0}
    assert zone_shares("a", {"a": 5, "b": 5}, {"a": 1, "b": 1}, panic=True) == spread
    assert zone_shares("a", {"a": 5, "b": 5}, {"a": 1}) == spread  # clients in one zone only
    assert zone_shares("a", {"a": 5, "b": 5}, {"b": 1, "c": 1}) == spread  # no client share for "a"
    assert zone_shares("a", {}, None) == {}


# -- the balancer -----------------------------------------------------------------------------


def test_balanced_zones_send_every_pick_local() -> None:
    servers = static.Publisher(fleet({"a": 4, "b": 4, "c": 4}), str)
    lb = ZoneAware(servers, zone="b", peers={"a": 10, "b": 10, "c": 10}, seed=1)
    assert lb.shares == {"b": 1.0}
    assert zone_counts(lb) == {"b": 1.0}


def test_unbalanced_zones_spill_over_in_proportion() -> None:
    servers = static.Publisher(fleet({"a": 2, "b": 4, "c": 4}), str)
    lb = ZoneAware(servers, zone="a", peers={"a": 8, "b": 7, "c": 5}, seed=1)
    counts = zone_counts(lb)
    assert counts["a"] == pytest.approx(0.5, abs=0.01)
    assert counts["b"] == pytest.approx(0.125, abs=0.01)
    assert counts["c"] == pytest.approx(0.375, abs=0.01)


def test_the_local_zone_down_sends_all_to_the_others_without_failures() -> None:
    instances = fleet({"a": 4, "b": 4, "c": 4})
    servers = static.Publisher(instances, str)
    lb = ZoneAware(servers, zone="a", peers={"a": 1, "b": 1, "c": 1}, seed=1)
    assert zone_counts(lb) == {"a": 1.0}
    servers.replace([i for i in instances if i.zone != "a"])  # the zone's instances leave the set
    counts = zone_counts(lb)  # no NoEndpointsError
    assert set(counts) == {"b", "c"} and counts["b"] == pytest.approx(0.5, abs=0.02)
    servers.replace(instances)
    assert zone_counts(lb) == {"a": 1.0}


def test_peers_learnt_from_a_publisher() -> None:
    servers = static.Publisher(fleet({"a": 2, "b": 4, "c": 4}), str)
    peers = static.Publisher(fleet({"a": 1, "b": 1, "c": 1}))
    lb = ZoneAware(servers, zone="a", peers=peers, seed=1)
    assert lb.shares["a"] == pytest.approx(0.6)  # 20% of the servers for 33% of the clients
    peers.replace(fleet({"a": 1, "b": 4, "c": 4}))  # fewer clients in a: room enough
    assert lb.shares == {"a": 1.0}


class Panicky(static.Publisher[Any]):
    """A stand-in for a filter (HealthChecker, OutlierDetector) that can be put in panic."""

    panicking = False


def test_panic_of_a_filter_underneath_spreads_over_all_zones() -> None:
    instances = fleet({"a": 3, "b": 3, "c": 3})
    servers = Panicky(instances, lambda address: lambda: address)
    lb = ZoneAware(servers, zone="a", peers={"a": 1, "b": 1, "c": 1}, balancer=LeastLoaded, seed=1)
    assert lb.shares == {"a": 1.0}
    servers.panicking = True  # the filter passes on all its instances: zones no longer mean health
    servers.replace(instances[::-1])
    assert lb.shares == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert OutlierDetector(servers, own=False).panicking is False  # the real filters have the property


def test_instances_without_a_zone_and_an_empty_set() -> None:
    servers = static.Publisher([], str)
    lb = ZoneAware(servers, zone="a")
    with pytest.raises(NoEndpointsError):
        lb.endpoint()
    servers.replace([f"10.9.0.{i}:80" for i in range(1, 8)])  # no zones: one zone "", all of it
    assert lb.shares == {"": 1.0} and len(lb.candidates()) == 7


def test_options_are_checked() -> None:
    servers = static.Publisher(fleet({"a": 1}), str)
    with pytest.raises(TypeError, match="zone"):
        ZoneAware(servers, zone="")
    with pytest.raises(ValueError, match="min_cluster_size"):
        ZoneAware(servers, zone="a", min_cluster_size=0)
    with pytest.raises(TypeError, match="peers"):
        ZoneAware(servers, zone="a", peers=3)  # type: ignore[arg-type]
