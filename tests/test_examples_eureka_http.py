"""The Eureka and HTTP polling examples run and show what their docstrings say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.server
def test_the_eureka_example_follows_status_changes_and_a_cancellation() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "eureka.py"), "--throwaway"], capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    assert result.stdout.splitlines()[1:] == [
        "calls: ['api-1', 'api-2']",
        "api-1 out of service; calls: ['api-2', 'api-2']",
        "api-1 up again; instances: 2",
        "api-2 cancelled; calls: ['api-1', 'api-1']",
    ]
    assert result.stderr == ""


@pytest.mark.server
def test_the_http_polling_example_merges_seeds_and_keeps_a_dead_seeds_answer() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "httppoll.py")], capture_output=True, text=True, timeout=120, check=True
    )
    out = result.stdout
    assert "merged: 127.0.0.1:9001, 127.0.0.1:9002 v1.4, 127.0.0.1:9003\n" in out  # 9004 is critical
    assert "b moved: 127.0.0.1:9001, 127.0.0.1:9005 v1.5, 127.0.0.1:9003\n" in out
    assert "first seed down, its last answer kept: 127.0.0.1:9001, 127.0.0.1:9005 v1.5, 127.0.0.1:9003\n" in out
    assert "requests: 3 read, most not modified" in out and "httppoll_seed_failed" in out
    assert result.stderr == ""
