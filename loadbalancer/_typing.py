"""The type variable of what a publisher publishes: ``Instance`` objects unless a factory says otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .instance import Instance

if TYPE_CHECKING:
    # PEP 696 default: a publisher built without a factory is a publisher of Instances, so
    # ``dnssrv.Publisher(name, 5.0)`` needs no annotation. Only type checkers see it.
    from typing_extensions import TypeVar

    E = TypeVar("E", covariant=True, default=Instance)
else:
    from typing import TypeVar

    E = TypeVar("E", covariant=True)

__all__ = ["E"]
