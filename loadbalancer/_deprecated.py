"""Old keyword spellings, still accepted for a while with a ``DeprecationWarning``."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["renamed", "warn"]

F = TypeVar("F", bound=Callable[..., Any])

# old name -> the new keyword, or a function folding the old value into the keywords
Rename = str | Callable[[dict[str, Any], str, Any], None]


def warn(message: str, *, stacklevel: int = 3) -> None:
    """A ``DeprecationWarning`` pointing at the caller's caller (the user's line)."""
    warnings.warn(message, DeprecationWarning, stacklevel=stacklevel)


def renamed(**names: Rename) -> Callable[[F], F]:
    """Let a function take its keywords' old names (``old="new"``), each with a ``DeprecationWarning``.

    The signature keeps only the new names: type checkers flag the old ones, and ``help()``
    shows what to write. Giving both an old and its new name is a ``TypeError``.
    """

    def decorate(function: F) -> F:
        owner = function.__qualname__.removesuffix(".__init__")

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in names.items():
                if old not in kwargs:
                    continue
                value = kwargs.pop(old)
                if callable(new):
                    new(kwargs, old, value)
                    continue
                if new in kwargs:
                    raise TypeError(f"{owner}() got both {old}= and {new}=; {old}= is the old name of {new}=")
                warn(f"{owner}({old}=...) is deprecated: write {new}=")
                kwargs[new] = value
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
