"""Client-side service discovery and load balancing, composed the way go-kit composes it.

Publishers emit the latest set of endpoints of a service; balancers pick one; ``Retry``
turns a balancer into a single endpoint that retries within a deadline::

    call = Retry(3, 5.0, RoundRobin(dnssrv.Publisher("_api._tcp.example.", 5.0, factory)))
"""

from ._tls import TLSConfig
from .aperture import Aperture, PeerSet
from .balancer import Balancer, Random, RoundRobin
from .budget import RetryBudget, retryable
from .endpointer import Endpointer
from .errors import (
    AttemptTimeoutError,
    DiscoveryError,
    Error,
    ExtraNotInstalledError,
    InvalidInstanceError,
    InvalidTargetError,
    NoEndpointsError,
    NotReadyError,
    PublisherClosedError,
    RetryBudgetExhaustedError,
    RetryError,
    RetryTimeoutError,
    UnhealthyError,
)
from .hashing import ConsistentHash
from .health import HealthChecker
from .hedge import Hedge
from .instance import Instance
from .least_loaded import LeastLoaded, PeakEwma
from .outlier import OutlierDetector
from .publisher import EndpointSet, Factory, Publisher, Subscription
from .retry import Retry, deadline, remaining
from .slowstart import SlowStart
from .tracked import TrackedEndpoint
from .weighted import SmoothWeightedRoundRobin, Weighted
from .zones import ZoneAware

__all__ = [
    "Aperture",
    "AttemptTimeoutError",
    "Balancer",
    "ConsistentHash",
    "DiscoveryError",
    "EndpointSet",
    "Endpointer",
    "Error",
    "ExtraNotInstalledError",
    "Factory",
    "HealthChecker",
    "Hedge",
    "Instance",
    "InvalidInstanceError",
    "InvalidTargetError",
    "LeastLoaded",
    "NoEndpointsError",
    "NotReadyError",
    "OutlierDetector",
    "PeakEwma",
    "PeerSet",
    "Publisher",
    "PublisherClosedError",
    "Random",
    "Retry",
    "RetryBudget",
    "RetryBudgetExhaustedError",
    "RetryError",
    "RetryTimeoutError",
    "RoundRobin",
    "SlowStart",
    "SmoothWeightedRoundRobin",
    "Subscription",
    "TLSConfig",
    "TrackedEndpoint",
    "UnhealthyError",
    "Weighted",
    "ZoneAware",
    "deadline",
    "remaining",
    "retryable",
]


def __getattr__(name: str) -> object:
    # names that moved to where they belong: still found here for a while, with a warning
    if name == "HttpCheck":
        from . import health
        from ._deprecated import warn

        warn("loadbalancer.HttpCheck is deprecated: import it from loadbalancer.health")
        return health.HttpCheck
    raise AttributeError(f"module 'loadbalancer' has no attribute {name!r}")
