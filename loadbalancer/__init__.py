"""Client-side service discovery and load balancing, composed the way go-kit composes it.

Publishers emit the latest set of endpoints of a service; balancers pick one; ``Retry``
turns a balancer into a single endpoint that retries within a deadline::

    call = Retry(3, 5.0, RoundRobin(dnssrv.Publisher("_api._tcp.example.", 5.0, factory)))
"""

from ._feedback import TrackedEndpoint
from ._tls import TLSConfig
from .balancer import Balancer, Random, RoundRobin
from .budget import RetryBudget, retryable
from .endpointer import Endpointer
from .errors import (
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
from .health import HealthChecker, HttpCheck
from .hedge import Hedge
from .instance import Instance
from .least_loaded import LeastLoaded, PeakEwma
from .outlier import OutlierDetector
from .publisher import EndpointSet, Factory, Publisher, Subscription
from .retry import Retry, deadline, remaining
from .weighted import SmoothWeightedRoundRobin, Weighted

__all__ = [
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
    "HttpCheck",
    "Instance",
    "InvalidInstanceError",
    "InvalidTargetError",
    "LeastLoaded",
    "NoEndpointsError",
    "NotReadyError",
    "OutlierDetector",
    "PeakEwma",
    "Publisher",
    "PublisherClosedError",
    "Random",
    "Retry",
    "RetryBudget",
    "RetryBudgetExhaustedError",
    "RetryError",
    "RetryTimeoutError",
    "RoundRobin",
    "SmoothWeightedRoundRobin",
    "Subscription",
    "TLSConfig",
    "TrackedEndpoint",
    "UnhealthyError",
    "Weighted",
    "deadline",
    "remaining",
    "retryable",
]
