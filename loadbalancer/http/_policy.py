"""A target string as the clients' publisher of instances (the rules themselves are in the core's ``_httppolicy``)."""

from __future__ import annotations

from typing import Any

from ..publisher import Publisher

__all__ = ["publisher_of"]


def publisher_of(target: str) -> Publisher[Any]:
    """The publisher of instances a target string names (``"dns:///_api._tcp.example."``), for the clients' mappings."""
    from .. import targets

    return targets.publisher(target)
