"""What a client may cost the proxy: every bound and every wait, with its default in one place.

The defaults follow nginx where it has the setting (``client_body_timeout``, ``send_timeout``,
``proxy_read_timeout``, ``keepalive_timeout``, ``http2_max_concurrent_streams``) and Envoy
where nginx has none (``max_request_headers_count``); the whole request head gets 10 s, not
nginx's 60 s, since a head that takes longer is a slow client holding a connection.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_CONNECTIONS", "Limits", "connections_allowed", "raise_open_files"]

KIB = 1024
DEFAULT_MAX_CONNECTIONS = 10_000


@dataclass(frozen=True, slots=True)
class Limits:
    """The proxy's bounds; each field is a ``loadbalancer proxy`` flag of the same name."""

    header_timeout: float = 10.0  # the whole request head, from its first byte (or the connection's start)
    body_timeout: float = 60.0  # between two reads of the request body
    send_timeout: float = 60.0  # a client that takes none of the answer for this long is closed
    read_timeout: float = 60.0  # between two reads of the backend's answer (and for it to take the body)
    timeout: float = 30.0  # from the end of the request to the beginning of the answer
    keepalive_timeout: float = 75.0  # an idle client connection between requests
    max_header_size: int = 32 * KIB  # request line (else 414) and whole head (else 431)
    max_headers: int = 100  # header fields in one request (else 431)
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # client connections per worker
    buffer_size: int = 256 * KIB  # bytes held per direction of a connection before the sender is paused
    h2_max_streams: int = 128  # concurrent HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS)

    @property
    def tick(self) -> float:
        """How often the connections are swept for expired waits: a quarter of the shortest wait."""
        shortest = min(self.header_timeout, self.body_timeout, self.send_timeout, self.keepalive_timeout)
        return max(0.02, min(1.0, shortest / 4))


def raise_open_files() -> int:
    """Raise the soft open-files limit to the hard one (as nginx's ``worker_rlimit_nofile``); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = (1 << 20) if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a container may refuse: keep what there is
            pass
    return soft


def connections_allowed(open_files: int) -> int:
    """Client connections a worker can hold within ``open_files`` descriptors: each may hold a backend's too."""
    return max(16, (open_files - 64) // 2)
