"""Small helpers shared by the modules of the package."""

from __future__ import annotations

import math
from datetime import timedelta


def seconds(value: float | timedelta, name: str, *, allow_zero: bool = True, allow_inf: bool = False) -> float:
    """Return ``value`` as seconds, or raise a ``ValueError`` that names the argument.

    Infinity is refused unless ``allow_inf``: where "for ever" is meant, the arguments
    take ``None``, and an infinite deadline or interval is a mistake to report early.
    """
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or a timedelta, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number of seconds, got nan")
    if value < 0 or (value == 0 and not allow_zero):
        bound = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    if math.isinf(value) and not allow_inf:
        raise ValueError(f"{name} must be finite, got inf")
    return value


def describe(error: BaseException) -> str:
    """``ErrorType: message``, the form used in log events and aggregated error messages."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
