"""The library's figures on the proxy's /metrics: each worker's snapshot, merged across workers."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loadbalancer import OutlierDetector, _metrics, static
from loadbalancer.instance import Instance
from loadbalancer.proxy._library import LibraryCollector, forget, write_snapshot


def scraped(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(LibraryCollector(str(directory)))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_add_up_across_workers_gauges_do_not_and_a_gone_worker_leaves(tmp_path: Path) -> None:
    service = "merged-" + tmp_path.name
    source = static.Publisher([Instance("127.0.0.1", 1), Instance("127.0.0.1", 2)], service=service)
    detector = OutlierDetector(source)
    _metrics.stats(service, "127.0.0.1:1").record(0.002, True)  # one call in this "worker"
    # two "workers": the same process's figures, written under two pids
    write_snapshot(str(tmp_path), pid=101)
    write_snapshot(str(tmp_path), pid=102)
    (tmp_path / "library_103.json").write_text("{not json")  # a worker caught mid-exit: skipped, not fatal
    samples = scraped(tmp_path)
    labels = (("publisher", "static.Publisher"), ("service", service))
    assert samples[("loadbalancer_publisher_instances", labels)] == 2.0  # a gauge: the largest, not 4
    assert samples[("loadbalancer_ejected", (("service", service),))] == 0.0
    single = samples[("loadbalancer_publisher_updates_total", labels)]
    instance = (("instance", "127.0.0.1:1"), ("service", service))
    assert samples[("loadbalancer_requests_total", (*instance[:1], ("outcome", "success"), *instance[1:]))] == 2
    assert samples[("loadbalancer_request_duration_seconds_count", instance)] == 2  # histograms summed
    assert (
        samples[("loadbalancer_request_duration_seconds_bucket", (*instance[:1], ("le", "0.0025"), *instance[1:]))] == 2
    )
    assert (
        samples[("loadbalancer_request_duration_seconds_bucket", (*instance[:1], ("le", "0.001"), *instance[1:]))] == 0
    )
    assert single >= 2.0 and single % 2 == 0  # a counter: each worker's own, summed
    forget(str(tmp_path), 101)
    assert scraped(tmp_path)[("loadbalancer_publisher_updates_total", labels)] == single / 2
    forget(str(tmp_path), 102)
    forget(str(tmp_path), 102)  # twice: nothing to do, no error
    assert ("loadbalancer_publisher_updates_total", labels) not in scraped(tmp_path)
    detector.close()
