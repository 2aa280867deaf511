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
    """One backend's figures since the last flush: its answers by method and status class, their times."""

    __slots__ = ("answers", "counts", "observed", "total")

    def __init__(self) -> None:
        self.answers: dict[bytes, list[int]] = {}  # method: answers by status // 100 (0: none of 1-9)
        self.observed = False  # any time counted (else no histogram series is made for the backend)
        self.total = 0.0
        self.counts = [0] * (_BUCKETS + 1)  # a count per bucket, the last +Inf

    def count(self, method: bytes, status: int) -> None:
        counts = self.answers.get(method)
        if counts is None:
            if method and method not in _METHODS:
                method = _OTHER  # any token an HTTP/2 client sends: one entry (and one series) for all
            counts = self.answers.get(method)
            if counts is None:
                counts = self.answers[method] = [0] * 10
        kind = status // 100
        counts[kind if 0 < kind < 10 else 0] += 1

    def time(self, seconds: float) -> None:
        self.observed = True
        self.total += seconds
        # The first bucket whose bound is >= seconds: a scan, not a bisection, as most answers
        # fall in the first few buckets (and the compiled build compares unboxed floats).
        index = 0
        while index < _BUCKETS and seconds > _BOUNDS[index]:
            index += 1
        self.counts[index] += 1


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
        self._tallies: dict[str, _Tally] = {}  # by backend (or "none", "cache")

    def collectors(self) -> tuple[Counter | Gauge | Histogram, ...]:
        """Every metric made here: to take them out of a registry again (as tests do)."""
        return (
            self.requests, self.latency, self.active, self.healthy, self.backends, self.retries, self.cache,
            self.unavailable, self.rejected, self.timeouts, self.refused,
        )  # fmt: skip

    def _tally(self, backend: str) -> _Tally:
        tally = self._tallies.get(backend)
        if tally is None:
            tally = self._tallies[backend] = _Tally()
        return tally

    def answered(self, backend: str, method: bytes, status: int) -> None:
        """Count an answer (written at the next ``flush``)."""
        self._tally(backend).count(method, status)

    def observe(self, backend: str, seconds: float) -> None:
        """Count a backend's answer time (written at the next ``flush``)."""
        self._tally(backend).time(seconds)

    def completed(self, backend: str, method: bytes, status: int, seconds: float) -> None:
        """A backend's answer, relayed: ``answered`` and ``observe`` in one."""
        tally = self._tally(backend)
        tally.count(method, status)
        tally.time(seconds)

    def flush(self) -> None:
        """Write the tallies since the last flush to prometheus' values."""
        tallies, self._tallies = self._tallies, {}
        for backend, tally in tallies.items():
            for method, counts in tally.answers.items():
                # an HTTP/2 client may send any token as its method: the series stay bounded
                name = method.decode("latin-1") if method in _METHODS else "other" if method else "-"
                for kind in range(10):
                    if counts[kind]:
                        self.requests.labels(backend, name, _CLASSES.get(kind, "other")).inc(counts[kind])
            if tally.observed:
                # A histogram child keeps its sum and a count per bucket (summed up when collected);
                # prometheus-client has no public call to add many observations at once.
                child = self.latency.labels(backend)
                child._sum.inc(tally.total)
                for bucket, observed in zip(child._buckets, tally.counts, strict=True):
                    if observed:
                        bucket.inc(observed)


_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_OTHER = b"*"  # not one of _METHODS: written as "other"
_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"})
