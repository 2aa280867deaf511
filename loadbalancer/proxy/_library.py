"""The library's own figures (``loadbalancer.metrics.rows()``) on the proxy's ``/metrics``, across workers.

Each worker has its own balancing stack (publisher, health checks, outlier detection), so
its figures live in its own process. A worker writes a snapshot of them beside
prometheus-client's multiprocess files once a second; the supervisor reads every live
worker's snapshot at each scrape and merges them: counters and histograms are summed (each
worker counted its own), gauges take the largest (every worker watches the same backends,
as the proxy's own ``livemax`` gauges do). A snapshot is at most a second old.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from .. import _metrics
from ..metrics import NAMES, Row, prometheus_families, rows

__all__ = ["LibraryCollector", "forget", "snapshot", "snapshot_path", "write_file", "write_snapshot"]

_PREFIX = "library_"


def _path(directory: str, pid: int) -> str:
    return os.path.join(directory, f"{_PREFIX}{pid}.json")


def snapshot_path(directory: str, pid: int | None = None) -> str:
    """Where a worker (this process, unless ``pid``) writes its snapshot."""
    return _path(directory, os.getpid() if pid is None else pid)


def snapshot() -> str:
    """This process's figures, as the JSON text of its snapshot."""
    found: list[list[Any]] = []
    for row in rows():
        value = row.value
        if isinstance(value, _metrics.CallStats):
            value = {"requests": value.requests, "failures": value.failures, "total": value.total,
                     "buckets": value.buckets}  # fmt: skip
        found.append([row.name, [list(label) for label in row.labels], value])
    # dumps, not dump: dump encodes in Python, chunk by chunk (several times slower)
    return json.dumps(found)


def write_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a reader finds the old text or the new, never half."""
    with open(path + ".tmp", "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(path + ".tmp", path)


def write_snapshot(directory: str, pid: int | None = None) -> None:
    """Write this process's figures for the supervisor (atomically: a scrape never reads half a file)."""
    write_file(snapshot_path(directory, pid), snapshot())


def forget(directory: str, pid: int) -> None:
    """Drop the snapshot of a worker that is gone (its figures go with it, as a dead process's gauges do)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_path(directory, pid))


def _merged(directory: str) -> Iterator[Row]:
    sums: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
    for path in sorted(glob.glob(os.path.join(directory, f"{_PREFIX}*.json"))):
        try:
            with open(path, encoding="utf-8") as found:
                snapshot = json.load(found)
        except (OSError, ValueError):
            continue  # a worker that just went: its figures with it
        for name, labels, value in snapshot:
            if name not in NAMES:
                continue  # written by another version of the library
            key = (name, tuple((str(k), str(v)) for k, v in labels))
            kind = NAMES[name][0]
            before = sums.get(key)
            if kind == "histogram":
                named = dict(key[1])
                stats = before if before is not None else _metrics.CallStats(named["service"], named["instance"])
                stats.requests += value["requests"]
                stats.failures += value["failures"]
                stats.total += value["total"]
                stats.buckets = [a + b for a, b in zip(stats.buckets, value["buckets"], strict=True)]
                sums[key] = stats
            elif kind == "counter":
                sums[key] = (before or 0.0) + value
            else:
                sums[key] = value if before is None else max(before, value)
    for (name, labels), value in sums.items():
        yield Row(name, labels, value)


class LibraryCollector(Collector):
    """The library's figures of every worker, merged, read at each scrape."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        yield from prometheus_families(_merged(self._directory))
