"""The options every discovery publisher takes, written once: a backend's publisher passes them on whole."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, TypedDict

__all__ = ["PublisherOptions", "SourceOptions"]


class SourceOptions(TypedDict, total=False):
    """``max_backoff``: the longest wait between retries after a failure (5 s); ``logger``: a
    structlog logger of yours; ``invalidate_after``: how long a stale set may serve (for ever);
    ``close_delay``: how long a departed instance's endpoint lives on for calls in flight (1 s)."""

    max_backoff: float | timedelta
    logger: Any
    invalidate_after: float | timedelta | None
    close_delay: float | timedelta


class PublisherOptions(SourceOptions, total=False):
    """``SourceOptions`` and ``tags``: publish only instances carrying all of them."""

    tags: Iterable[str] | str | None
