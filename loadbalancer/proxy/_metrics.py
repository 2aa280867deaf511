"""The proxy's Prometheus metrics, in one place (prometheus-client; multi-process across workers)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters and gauges a worker updates; the supervisor serves all workers' values on ``/metrics``."""

    def __init__(self) -> None:
        self.requests = Counter(
            "loadbalancer_proxy_requests",
            "Requests answered, by backend (or 'none'), method and status class",
            ["backend", "method", "status"],
        )
        self.latency = Histogram(
            "loadbalancer_proxy_upstream_latency_seconds",
            "Time from sending a request to a backend to the end of its answer",
            ["backend"],
            buckets=_LATENCY_BUCKETS,
        )
        self.active = Gauge(
            "loadbalancer_proxy_active_connections",
            "Connections to each backend in use now",
            ["backend"],
            multiprocess_mode="livesum",
        )
        self.healthy = Gauge(
            "loadbalancer_proxy_healthy_backends",
            "Backends passing health checks and not ejected",
            multiprocess_mode="livemax",
        )
        self.backends = Gauge(
            "loadbalancer_proxy_backends", "Backends known from the source", multiprocess_mode="livemax"
        )
        self.retries = Counter("loadbalancer_proxy_retries", "Requests retried on another backend", ["reason"])
        self.cache = Counter("loadbalancer_proxy_cache", "Cache lookups, by result", ["result"])
        self.unavailable = Counter(
            "loadbalancer_proxy_unavailable", "Requests answered 503 by the proxy itself, by reason", ["reason"]
        )
        self.rejected = Counter(
            "loadbalancer_proxy_rejected",
            "Requests the proxy refused before any backend saw them (malformed, too large, bad Host), by status",
            ["status"],
        )
        self.timeouts = Counter(
            "loadbalancer_proxy_timeouts",
            "Waits that ran out: header, body, send (client), backend, stall (backend), tunnel",
            ["kind"],
        )
        self.refused = Counter(
            "loadbalancer_proxy_connections_refused",
            "Client connections refused or shed: max_connections, shed_head, shed_idle, h2_flood",
            ["reason"],
        )
        self._requests: dict[tuple[str, str, str], object] = {}

    def answered(self, backend: str, method: str, status: int) -> None:
        key = (backend, method, _CLASSES.get(status // 100, "other"))
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(*key)
        child.inc()  # type: ignore[attr-defined]


_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
