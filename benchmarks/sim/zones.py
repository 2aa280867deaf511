"""Scenarios: zone-aware routing (``loadbalancer.zones.ZoneAware``) against full-mesh P2C.

Balanced zones: clients and servers spread evenly over three zones; the figure is the
share of calls that cross zones. Zone outage: every server of one zone refuses calls
from ``start`` on (they stay registered, as after a network partition); each client runs
an ``OutlierDetector`` under its balancer, which ejects the refusing servers, and the
figure is the success rate. The factories here build the balancer stacks both compare.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from loadbalancer import LeastLoaded, OutlierDetector
from loadbalancer.zones import ZoneAware

from .model import Client, Scenario

Factory = Callable[[Any, Client], Any]


def client_zones(scenario: Scenario) -> dict[str, float]:
    """How many clients each zone holds (what ``ZoneAware(peers=...)`` wants)."""
    counts: collections.Counter[str] = collections.Counter(scenario.client_zone(j) for j in range(scenario.clients))
    return {zone: float(n) for zone, n in counts.items()}


def full_mesh(*, detector: bool = False) -> Factory:
    """The baseline: P2C least loaded over every server (over an ``OutlierDetector`` if asked)."""

    def factory(publisher: Any, client: Client) -> Any:
        source = _detector(publisher, client) if detector else publisher
        return LeastLoaded(source, seed=client.seed)

    return factory


def zone_aware(scenario: Scenario, *, detector: bool = False, min_cluster_size: int = 6) -> Factory:
    """``ZoneAware`` in the client's zone, P2C least loaded within each zone."""
    peers = client_zones(scenario)

    def factory(publisher: Any, client: Client) -> Any:
        source = _detector(publisher, client) if detector else publisher
        return ZoneAware(
            source,
            zone=client.zone,
            peers=peers,
            balancer=lambda p: LeastLoaded(p, seed=client.seed),
            min_cluster_size=min_cluster_size,
            seed=client.seed,
        )

    return factory


def _detector(publisher: Any, client: Client) -> OutlierDetector[Any]:
    return OutlierDetector(publisher, consecutive_failures=3, base_ejection_time=30.0, own=False, clock=client.clock)
