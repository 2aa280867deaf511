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


def test_backend_states_merge_and_an_ejection_counts_once_across_workers(tmp_path: Path) -> None:
    from loadbalancer.proxy._status import BackendStates, forget_state, write_state

    up = {"healthy": True, "error": None, "ejected": False}
    ejected = {"healthy": True, "error": None, "ejected": True}
    down = {"healthy": False, "error": "GET /health: status 500", "ejected": False}
    states = BackendStates(str(tmp_path))
    write_state(str(tmp_path), {"a:1": up, "b:2": up}, pid=101)
    write_state(str(tmp_path), {"a:1": up, "b:2": up}, pid=102)
    assert states.refresh() == {"a:1": up, "b:2": up}
    write_state(str(tmp_path), {"a:1": ejected, "b:2": down}, pid=101)  # both workers eject a, one at a time
    states.refresh()
    write_state(str(tmp_path), {"a:1": ejected, "b:2": up}, pid=102)
    merged = states.refresh()
    assert merged["a:1"]["ejected"] is True and merged["b:2"] == down  # any worker's doubt wins
    for pid in (101, 102):
        write_state(str(tmp_path), {"a:1": up, "b:2": up}, pid=pid)
    states.refresh()
    write_state(str(tmp_path), {"a:1": ejected, "b:2": up}, pid=102)  # a second ejection, later
    states.refresh()
    forget_state(str(tmp_path), 102)
    assert states.refresh()["a:1"]["ejected"] is False
    registry = CollectorRegistry()
    registry.register(states)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    assert samples[("loadbalancer_proxy_ejections_total", (("backend", "a:1"),))] == 2  # not 3: once per episode
    assert samples[("loadbalancer_proxy_backend_healthy", (("backend", "b:2"),))] == 1
