"""User code written as the README shows must type-check under ``mypy --strict``, without casts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.mark.timeout(300)
def test_the_readme_compositions_type_check() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(HERE / "typing" / "readme_usage.py")],
        capture_output=True,
        text=True,
        check=False,
        cwd=HERE.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
