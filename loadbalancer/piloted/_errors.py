"""The base of ``loadbalancer.piloted``'s errors."""

from __future__ import annotations

from ..errors import Error

__all__ = ["PilotedError"]


class PilotedError(Error):
    """Base class of the errors of ``loadbalancer.piloted``."""
