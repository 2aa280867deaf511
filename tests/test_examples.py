"""The quick start's demo runs and shows what the README says it shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_quickstart_spreads_requests_retries_failures_and_ejects_the_failing_backend() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")], capture_output=True, text=True, timeout=60, check=True
    )
    out = result.stdout
    assert "30 answered, 0 failed" in out
    assert "10 requests took 10 attempts" in out
    assert "instance_ejected" in out and "30 requests took 33 attempts, 3 of them on the failing backend" in out
    assert out.index("with OutlierDetector") < out.index("instance_ejected"), "the log line belongs to its section"
    assert result.stderr == ""


def test_the_memory_registry_example_balances_over_tagged_instances_and_sees_one_leave() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "memory.py")], capture_output=True, text=True, timeout=60, check=True
    )
    out = result.stdout
    assert "api, v2: ['127.0.0.1:9001', '127.0.0.1:9002']" in out
    assert "9003" not in out  # the v1 instance is filtered out by its tags
    assert "kept past its TTL: ['127.0.0.1:9001', '127.0.0.1:9002', '127.0.0.1:9004']" in out
    # its client is closed on the runtime thread as the set changes: either line may come first
    assert "closed the client of 127.0.0.1:9004" in out and "left -> ['127.0.0.1:9001', '127.0.0.1:9002']" in out
    assert result.stderr == ""


def test_the_kubernetes_example_follows_pods_starting_draining_and_a_410() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "kubernetes.py")], capture_output=True, text=True, timeout=120, check=True
    )
    out = result.stdout
    assert out.splitlines()[1] == "  -> 2 endpoints: 10.1.0.5:8080 (eu-1a), 10.1.0.6:8080 (eu-1b)"  # shown, then picks
    # The example waits until the publisher has read the not-ready pod's slice: anything it
    # published of it would come before the next step's header, not a sleep later.
    starting = out.split("web-3 starts (not ready yet): not published\n")[1]
    assert starting.startswith("web-3 turns ready\n  -> 3 endpoints: ")
    assert "-> 3 endpoints: 10.1.0.5:8080 (eu-1a), 10.1.0.6:8080 (eu-1b), 10.1.0.7:8080 (eu-1a)" in out
    assert "-> 2 endpoints: 10.1.0.6:8080 (eu-1b), 10.1.0.7:8080 (eu-1a)" in out
    assert "-> 3 endpoints: 10.1.0.8:8080 (eu-1c), 10.1.0.6:8080 (eu-1b), 10.1.0.7:8080 (eu-1a)" in out
    assert "list_services(): ['web']" in out
    assert result.stderr == ""
