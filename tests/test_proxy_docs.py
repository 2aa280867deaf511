"""Every flag of ``loadbalancer proxy`` is in the README with its default, and the defaults agree."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from loadbalancer.proxy._flags import build_parser
from loadbalancer.proxy._limits import Limits

README = (Path(__file__).resolve().parent.parent / "docs" / "proxy.md").read_text()
SECTION = README[README.index("# HTTP proxy: `loadbalancer proxy`") :]


def long_flags() -> list[argparse.Action]:
    return [action for action in build_parser()._actions if any(o.startswith("--") for o in action.option_strings)]


def test_every_flag_is_documented_in_the_readme() -> None:
    missing = [
        action.option_strings[-1]
        for action in long_flags()
        if action.option_strings[-1] != "--help"
        and not any(f"`{option}" in SECTION for option in action.option_strings)
    ]
    assert not missing, f"flags not in the README's proxy section: {missing}"


def test_every_limit_has_a_flag_whose_default_is_the_limits_default() -> None:
    defaults = Limits()
    by_dest = {action.dest: action for action in long_flags()}
    for field in Limits.__dataclass_fields__:
        action = by_dest[field]
        if field != "max_connections":  # worked out from the open-files limit when not given
            assert action.default == getattr(defaults, field), field
        assert re.search(r"\(default: [^)]+\)", action.help or ""), field
