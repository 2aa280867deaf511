"""Packaging beyond pyproject.toml: the optional compiled build of the proxy's per-request modules.

``LOADBALANCER_COMPILE=1 pip install 'loadbalancer[proxy]'`` compiles the modules below with
mypyc (from their own type annotations: the same source, as C extension modules); without it,
or in an editable install, the package is pure Python. Both behave the same: the tests run on
both (scripts/test-compiled).
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

# Every request of the proxy runs through these; each is compiled whole.
COMPILED = [
    "loadbalancer/proxy/_exchange.py",
    "loadbalancer/proxy/_fields.py",
    "loadbalancer/proxy/_h2.py",
    "loadbalancer/proxy/_h2core.py",
    "loadbalancer/proxy/_h2fields.py",
    "loadbalancer/proxy/_hpack.py",
    "loadbalancer/proxy/_http1.py",
    "loadbalancer/proxy/_metrics.py",
    "loadbalancer/proxy/_proxy.py",
    "loadbalancer/proxy/_request.py",
    "loadbalancer/proxy/_upstream.py",
]

ext_modules = []
# Only when a wheel (or the modules in place) is built: not for metadata, and never in an
# editable install, where a module compiled beside its source would shadow later edits to it.
if os.environ.get("LOADBALANCER_COMPILE") == "1" and {"bdist_wheel", "build_ext"} & set(sys.argv):
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED, opt_level="3")

setup(ext_modules=ext_modules)
