"""HTTP facts the clients and the proxy share: which methods are idempotent, which answers invite a retry.

In the core so that the proxy and the HTTP clients read one definition without importing
each other (nor httpx, which only the clients need).
"""

from __future__ import annotations

__all__ = ["FAILURE_STATUSES", "IDEMPOTENT", "RETRY_STATUSES"]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110, 9.2.2
RETRY_STATUSES = frozenset({502, 503, 504, 429})
FAILURE_STATUSES = range(500, 600)
