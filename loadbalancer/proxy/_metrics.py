"""The proxy's Prometheus metrics, in one place (prometheus-client; multi-process across workers).

What every request counts (its answer, its backend's latency) is tallied in plain numbers and
written to the shared files at each sweep (``flush``, at most a second apart): prometheus'
multi-process values take a lock and write a file-backed page on every increment, a quarter
of an HTTP/1.1 request's time in the proxy. The rare counts (timeouts, refusals) go at once.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A list, not the tuple: the compiled build keeps a tuple of floats unboxed and would box all
# fourteen into a new tuple to hand it to a function such as bisect_left, on every answer.
_BOUNDS: Final[list[float]] = list(_LATENCY_BUCKETS)
_BUCKETS: Final = len(_LATENCY_BUCKETS)


class _Tally:
    """One backend's answer times since the last flush: their sum and a count per bucket (the last +Inf)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.total = 0.0
        self.counts = [0] * (_BUCKETS + 1)


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
        self._answers: dict[tuple[str, bytes, int], int] = {}  # (backend, method, status class): answers
        self._latencies: dict[str, _Tally] = {}

    def collectors(self) -> tuple[Counter | Gauge | Histogram, ...]:
        """Every metric made here: to take them out of a registry again (as tests do)."""
        return (
            self.requests, self.latency, self.active, self.healthy, self.backends, self.retries, self.cache,
            self.unavailable, self.rejected, self.timeouts, self.refused,
        )  # fmt: skip

    def answered(self, backend: str, method: bytes, status: int) -> None:
        """Count an answer (written at the next ``flush``)."""
        key = (backend, method, status // 100)
        answers = self._answers
        answers[key] = answers.get(key, 0) + 1

    def observe(self, backend: str, seconds: float) -> None:
        """Count a backend's answer time (written at the next ``flush``)."""
        tally = self._latencies.get(backend)
        if tally is None:
            tally = self._latencies[backend] = _Tally()
        tally.total += seconds
        # The first bucket whose bound is >= seconds: a scan, not a bisection, as most answers
        # fall in the first few buckets (and the compiled build compares unboxed floats).
        index = 0
        while index < _BUCKETS and seconds > _BOUNDS[index]:
            index += 1
        tally.counts[index] += 1

    def flush(self) -> None:
        """Write the tallies since the last flush to prometheus' values."""
        answers, self._answers = self._answers, {}
        for (backend, method, kind), count in answers.items():
            # an HTTP/2 client may send any token as its method: the series stay bounded
            name = method.decode("latin-1") if method in _METHODS else "other" if method else "-"
            labels = (backend, name, _CLASSES.get(kind, "other"))
            self.requests.labels(*labels).inc(count)
        latencies, self._latencies = self._latencies, {}
        for backend, tally in latencies.items():
            # A histogram child keeps its sum and a count per bucket (summed up when collected);
            # prometheus-client has no public call to add many observations at once.
            child = self.latency.labels(backend)
            child._sum.inc(tally.total)
            for bucket, observed in zip(child._buckets, tally.counts, strict=True):
                if observed:
                    bucket.inc(observed)


_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"})
