"""The build backend: setuptools', asking for mypy (whose mypyc compiles) when LOADBALANCER_COMPILE=1.

setup.py compiles the proxy's per-request modules only then. mypyc compiles from the types,
so the build environment then holds what its type check reads too: the package's own
dependencies, the proxy's extra, and the stubs and APIs the checked modules import.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every hook as setuptools has it, but the one below)

_TYPE_CHECKED = ["mypy>=1.11", "types-cachetools>=5.3", "opentelemetry-api>=1.25"]


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    compile_ = os.environ.pop("LOADBALANCER_COMPILE", None)
    try:  # setuptools runs setup.py to learn its needs: not compiling yet, with mypy not installed yet
        needs = _setuptools.get_requires_for_build_wheel(config_settings)
    finally:
        if compile_ is not None:
            os.environ["LOADBALANCER_COMPILE"] = compile_
    if compile_ != "1":
        return needs
    with open("pyproject.toml", "rb") as file:
        project = tomllib.load(file)["project"]
    return [*needs, *project["dependencies"], *project["optional-dependencies"]["proxy"], *_TYPE_CHECKED]
