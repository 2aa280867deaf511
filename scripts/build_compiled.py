"""Copy this checkout to DIR and build its compiled modules there, in place (setup.py's COMPILED).

The copy is what a compiled install runs: the same sources, with the proxy's per-request
modules as C extensions beside them. Run from DIR (or with DIR first on PYTHONPATH), Python
imports the copy, not the checkout. Used by scripts/test-compiled and by
benchmarks/bench_proxy.py --compiled; needs a C compiler and mypy (the dev extra has it).

    python scripts/build_compiled.py DIR
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def build(target: str) -> None:
    """The checkout's files (tracked or not ignored) copied to ``target``, its compiled modules built."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for path in filter(None, listed.split("\0")):
        source = os.path.join(root, path)
        if os.path.isfile(source):  # (a file deleted but not yet committed is still listed)
            os.makedirs(os.path.dirname(os.path.join(target, path)), exist_ok=True)
            shutil.copy2(source, os.path.join(target, path))
    built = subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"],
        cwd=target, env={**os.environ, "LOADBALANCER_COMPILE": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    if built.returncode != 0:
        raise SystemExit(f"the compiled build failed:\n{built.stdout[-3000:]}{built.stderr[-3000:]}")
    check = "import sys; from loadbalancer.proxy._supervisor import compiled; sys.exit(not compiled())"
    if subprocess.run([sys.executable, "-c", check], cwd=target).returncode != 0:
        raise SystemExit(f"the build in {target} did not compile the proxy's modules")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    build(os.path.abspath(sys.argv[1]))
