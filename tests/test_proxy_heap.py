"""The proxy's workers keep freed memory for the next body chunks (glibc), unless told otherwise."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = "from loadbalancer.proxy._heap import keep; print(keep())"


def run(env: dict[str, str]) -> str:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    return subprocess.run(
        [sys.executable, "-c", CODE], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_workers_keep_their_heap_unless_the_environment_says_otherwise() -> None:
    assert run({}) == "True"
    assert run({"MALLOC_TRIM_THRESHOLD_": "131072"}) == "False"  # the user's setting wins
    assert run({"MALLOC_MMAP_THRESHOLD_": "131072"}) == "False"
