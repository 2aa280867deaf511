"""The proxy's status page beside ``/metrics``: backends, health, ejections, request rate, latency.

``/status`` is a small page for people who would rather look than scrape; its script reads
``/status.json`` every two seconds and works the request rate out between two readings.
``/status.json`` is read from the same figures as ``/metrics`` (every worker's, summed).

Each worker health-checks and ejects on its own; once a second it writes its view of every
backend (``write_state``). The supervisor merges the views (``BackendStates``): a backend
is healthy when every worker's checks say so, ejected when any worker ejected it, and an
ejection counts once however many workers made it: one more each time a backend goes from
ejected by none to ejected by some (an ejection lasts 10 s at least, a view is a second old
at most, so none is missed).
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._library import write_file

__all__ = ["PAGE", "BackendStates", "forget_state", "state_path", "status", "write_state"]

_PREFIX = "state_"


def _state_path(directory: str, pid: int) -> str:
    return os.path.join(directory, f"{_PREFIX}{pid}.json")


def state_path(directory: str, pid: int | None = None) -> str:
    """Where a worker (this process, unless ``pid``) writes its view of the backends."""
    return _state_path(directory, os.getpid() if pid is None else pid)


def write_state(directory: str, states: dict[str, dict[str, Any]], pid: int | None = None) -> None:
    """Write this worker's view of the backends for the supervisor (atomically)."""
    write_file(state_path(directory, pid), json.dumps(states))


def forget_state(directory: str, pid: int) -> None:
    """Drop the view of a worker that is gone."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_state_path(directory, pid))


class BackendStates(Collector):
    """Every worker's view of the backends, merged; ejections counted once across workers."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self.backends: dict[str, dict[str, Any]] = {}
        self.ejections: dict[str, int] = defaultdict(int)

    def refresh(self) -> dict[str, dict[str, Any]]:
        """Read the workers' views now; the merged one."""
        merged: dict[str, dict[str, Any]] = {}
        for path in sorted(glob.glob(os.path.join(self._directory, f"{_PREFIX}*.json"))):
            try:
                with open(path, encoding="utf-8") as found:
                    view = json.load(found)
            except (OSError, ValueError):
                continue  # a worker that just went
            for backend, state in view.items():
                into = merged.setdefault(backend, {"healthy": True, "error": None, "ejected": False})
                if not state.get("healthy", True):
                    into["healthy"] = False
                    into["error"] = into["error"] or state.get("error")
                into["ejected"] = into["ejected"] or bool(state.get("ejected"))
        for backend, state in merged.items():
            if state["ejected"] and not self.backends.get(backend, {}).get("ejected"):
                self.ejections[backend] += 1
        self.backends = merged
        return merged

    def collect(self) -> Iterator[Metric]:
        healthy = GaugeMetricFamily(
            "loadbalancer_proxy_backend_healthy", "1 while a backend passes its health checks (in every worker)",
            labels=["backend"],
        )  # fmt: skip
        ejected = GaugeMetricFamily(
            "loadbalancer_proxy_backend_ejected", "1 while a backend is ejected (by any worker)", labels=["backend"]
        )
        ejections = CounterMetricFamily(
            "loadbalancer_proxy_ejections", "Backend ejections by outlier detection, each counted once across workers",
            labels=["backend"],
        )  # fmt: skip
        for backend, state in sorted(self.backends.items()):
            healthy.add_metric([backend], 1.0 if state["healthy"] else 0.0)
            ejected.add_metric([backend], 1.0 if state["ejected"] else 0.0)
        for backend, count in sorted(self.ejections.items()):
            ejections.add_metric([backend], float(count))
        yield healthy
        yield ejected
        yield ejections


def _percentile(buckets: list[tuple[float, float]], fraction: float) -> float | None:
    """The bound of the first bucket reaching ``fraction`` of the count (cumulative ``(le, count)``)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    wanted = fraction * buckets[-1][1]
    for bound, count in buckets:
        if count >= wanted:
            return None if math.isinf(bound) else bound
    return None


def status(registry: Any, states: dict[str, dict[str, Any]] | None = None) -> bytes:
    """The JSON the page reads: totals, and per backend its state, requests, errors, latency and load."""
    backends: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": 0.0, "errors": 0.0, "active": 0.0})
    latency: dict[str, list[tuple[float, float]]] = defaultdict(list)
    totals: dict[str, float] = defaultdict(float)
    for family in registry.collect():
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            backend = labels.get("backend")
            if name == "loadbalancer_proxy_requests_total":
                totals["requests"] += value
                if backend is not None:
                    backends[backend]["requests"] += value
                    if labels.get("status") == "5xx":
                        backends[backend]["errors"] += value
            elif name == "loadbalancer_proxy_upstream_latency_seconds_bucket" and backend is not None:
                latency[backend].append((float(labels["le"]), value))
            elif name == "loadbalancer_proxy_active_connections" and backend is not None:
                backends[backend]["active"] += value
            elif name in ("loadbalancer_proxy_healthy_backends", "loadbalancer_proxy_backends"):
                totals[name.removeprefix("loadbalancer_proxy_")] = value
            elif name == "loadbalancer_proxy_ejections_total":
                totals["ejections"] += value
            elif name == "loadbalancer_proxy_unavailable_total":
                totals["unavailable"] += value
    for backend, buckets in latency.items():
        merged: dict[float, float] = defaultdict(float)
        for bound, count in buckets:
            merged[bound] += count
        ordered = sorted(merged.items())
        backends[backend]["p50"] = _percentile(ordered, 0.5)
        backends[backend]["p99"] = _percentile(ordered, 0.99)
    for backend, state in (states or {}).items():
        backends[backend].update(state)
    rows = [{"backend": name, **figures} for name, figures in sorted(backends.items()) if name != "none"]
    return json.dumps({"totals": totals, "backends": rows}).encode()


PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>loadbalancer proxy</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; } th, td { padding: .3em .8em; text-align: right; border-bottom: 1px solid #ddd; }
th:first-child, td:first-child { text-align: left; } .bad { color: #b00; }
</style></head>
<body>
<h1>loadbalancer proxy</h1>
<p id="summary">reading...</p>
<table><thead><tr><th>backend</th><th>state</th><th>requests</th><th>req/s</th><th>5xx</th><th>p50</th><th>p99</th>
<th>in use</th></tr></thead><tbody id="backends"></tbody></table>
<script>
let last = null;
function ms(seconds) { return seconds === null || seconds === undefined ? "-" : (seconds * 1000).toFixed(1) + " ms"; }
async function refresh() {
  const now = Date.now();
  const data = await (await fetch("/status.json", {cache: "no-store"})).json();
  const t = data.totals;
  document.getElementById("summary").textContent =
    `${t.healthy_backends ?? 0} of ${t.backends ?? 0} backends healthy; ${t.requests ?? 0} requests;` +
    ` ${t.ejections ?? 0} ejections; ${t.unavailable ?? 0} answered 503 by the proxy`;
  const body = document.getElementById("backends");
  body.textContent = "";
  for (const b of data.backends) {
    const before = last && last.counts[b.backend];
    const known = before !== undefined && before !== null;
    const rate = known ? ((b.requests - before) * 1000 / (now - last.at)).toFixed(1) : "-";
    const row = document.createElement("tr");
    row.className = "backend";
    const state = b.healthy === false ? "down: " + (b.error ?? "failed its health check")
      : b.ejected ? "ejected" : b.healthy === true ? "healthy" : "-";
    for (const cell of [b.backend, state, b.requests, rate, b.errors, ms(b.p50), ms(b.p99), b.active]) {
      const td = document.createElement("td");
      td.textContent = String(cell);
      row.appendChild(td);
    }
    if (b.errors > 0 || b.healthy === false || b.ejected) row.classList.add("bad");
    body.appendChild(row);
  }
  last = {at: now, counts: Object.fromEntries(data.backends.map(b => [b.backend, b.requests]))};
}
refresh();
setInterval(refresh, 2000);
</script>
</body></html>
"""
