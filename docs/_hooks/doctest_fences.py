"""A griffe extension for the API reference: the library's docstrings are plain reStructuredText-ish
prose with doctest examples (``>>>`` lines) and no fences. In Markdown a ``>>>`` line is a
blockquote and ``[...]`` output a link, so each doctest run is fenced as ``pycon`` before
mkdocstrings renders it. The docstrings themselves are left as they are (doctest reads them).
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """Wrap every run of lines starting at a ``>>>`` line, up to a blank line, in a pycon fence."""
    out: list[str] = []
    in_example = False
    in_fence = False
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            in_fence = not in_fence
        if in_example and not stripped:
            out.append("```")
            in_example = False
        elif not in_example and not in_fence and stripped.startswith(">>>"):
            if out and out[-1].strip():
                out.append("")
            out.append("```pycon")
            in_example = True
        out.append(line)
    if in_example:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
