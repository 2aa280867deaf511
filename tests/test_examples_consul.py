"""The Consul and ContainerPilot examples run against the Consul API test server and show what they say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.server


def run(name: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--throwaway"], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stderr == ""
    return result.stdout


def test_the_consul_example_follows_registrations_and_deregistrations() -> None:
    out = run("consul.py")
    counts = [int(n) for n in re.findall(r"-> (\d) endpoints", out)]
    assert counts == [2, 3, 2]
    assert "'api-3 handled /hello'" in out.split("api-3 starts")[1]
    after = out.split("api-1 shuts down cleanly")[1]
    assert "api-1 handled" not in after  # nothing goes to the instance that left
    assert re.search(r"list_services\(\): \['api', 'consul'\]", out)


def test_the_containerpilot_example_rotates_refreshes_on_sighup_and_names_its_errors() -> None:
    out = run("containerpilot.py")
    assert out.splitlines()[:3] == ["db -> 127.0.0.1:5432", "db -> 127.0.0.1:5433", "db -> 127.0.0.1:5432"]
    assert "cache -> NoHealthyInstanceError: service 'cache' has no healthy instance" in out
    assert "search -> ServiceNotConfiguredError: service 'search' is not configured" in out
    assert out.rstrip().endswith("db -> 127.0.0.1:5433")
