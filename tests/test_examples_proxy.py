"""The proxy example runs and shows what its docstring says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.server
def test_the_proxy_example_balances_replaces_and_fails_over() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "proxy.py")], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.splitlines() == [
        "balanced: a a b b",
        "socket: ok: http://127.0.0.1:B",
        "now: b b b b",
        "bad line: error",
        "unhealthy, still served: 200",
        "gone: 502 no backend could be reached",
    ]
