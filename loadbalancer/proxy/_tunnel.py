"""A tunnel: after a backend's 101 (WebSocket), bytes go both ways unparsed, each side paced by the other."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from ._upstream import Backend, UpstreamConnection

__all__ = ["Tunnel"]


class Tunnel:
    """Joins a client's transport to a backend connection that switched protocols.

    A side that cannot take more stops the other from being read (both ways), and the tunnel
    closes once nothing has moved either way for ``idle_timeout`` seconds (the proxy's
    ``--read-timeout``, as nginx's ``proxy_read_timeout`` bounds a WebSocket). Closing either
    side closes the other; the backend connection then leaves its pool and frees its slot.
    """

    __slots__ = ("backend", "client", "closed", "idle_timeout", "last_active", "loop", "upstream")

    def __init__(
        self,
        client: asyncio.Transport,
        upstream: UpstreamConnection,
        backend: Backend,
        loop: asyncio.AbstractEventLoop,
        idle_timeout: float,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.backend = backend
        self.loop = loop
        self.idle_timeout = idle_timeout
        self.last_active = loop.time()
        self.closed = False
        upstream.relay = self
        upstream.reusable = False

    # -- from the client's side --

    def from_client(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        self.upstream.write(data)

    def client_paused(self) -> None:
        self.upstream.pause_reading()

    def client_resumed(self) -> None:
        self.upstream.resume_reading()

    def client_lost(self) -> None:
        self.close()

    # -- from the backend's side (the upstream connection's relay) --

    def from_backend(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if not self.client.is_closing():
            self.client.write(data)

    def backend_paused(self) -> None:
        if not self.client.is_closing():
            self.client.pause_reading()

    def backend_resumed(self) -> None:
        if not self.client.is_closing():
            self.client.resume_reading()

    def backend_lost(self) -> None:
        self.close()

    # -- both --

    def expired(self, now: float) -> bool:
        """Whether nothing moved for the idle timeout (the tunnel is closed then)."""
        if now - self.last_active < self.idle_timeout:
            return False
        self.close()
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.upstream.close()
        if not self.client.is_closing():
            self.client.close()
        self.backend.release(self.upstream)  # not reusable: closed, and its slot goes to the next waiter
