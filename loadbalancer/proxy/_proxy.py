"""One worker's state: the balancer, cache, metrics and limits, and the client connections it bounds.

Every wait a client can make the proxy sit through is swept here, a few times a second, rather
than timed per request: connections still sending their head (``--header-timeout``), idle
keep-alive ones (``--keepalive-timeout``), and those the sweep is asked to watch (a body in
progress, an answer the client does not take, a tunnel). The first two are kept in insertion
order, oldest first, so the sweep stops at the first that is not due, and so that shedding
(``--max-connections``) finds the oldest one still sending its head at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any, Protocol

import tenacity

from .._engine import Policy
from ..budget import RetryBudget
from . import _heap as heap
from ._cache import Cache
from ._limits import Limits
from ._metrics import Metrics

__all__ = ["Connection", "Proxy", "reset"]

_RETRY_WAIT = tenacity.wait_random_exponential(multiplier=0.025, max=0.25)

_LINGER_ZERO = struct.pack("ii", 1, 0)


def _clock() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return 0.0


def reset(transport: asyncio.Transport) -> None:
    """Abort a client's connection with a reset: what the kernel still holds for it is dropped at once.

    A plain close would leave a client that reads nothing owning the socket's send buffer
    (megabytes) for as long as the kernel keeps retrying.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()


_GIVE_BACK = 1.0  # seconds between returns of the heap's free pages (see _heap)


class Connection(Protocol):
    """What the sweep asks of a client connection (HTTP/1.1, HTTP/2 or a tunnel)."""

    def head_timed_out(self) -> None: ...
    def expire(self, now: float) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class Proxy:
    """One worker's state: what serving needs, and the registries the sweep reads."""

    def __init__(
        self,
        balancer: Any,
        *,
        metrics: Metrics,
        cache: Cache | None = None,
        attempts: int = 3,
        scheme: str = "http",
        limits: Limits | None = None,
    ) -> None:
        self.balancer = balancer
        self.metrics = metrics
        self.cache = cache
        self.attempts = attempts
        self.scheme = scheme.encode()
        self.limits = limits or Limits()
        # Retries wait a little, with jitter (Envoy's 25 ms base), and spend a budget: at most
        # 20% of the requests plus 10 a second, so that retries cannot multiply an outage's load.
        self.budget = RetryBudget()
        self.policy = Policy(attempts=attempts, wait=_RETRY_WAIT, budget=self.budget)
        self.first_wait = min(self.limits.timeout, self.limits.read_timeout)  # an attempt's first timer
        self.connections: set[Connection] = set()
        self.heads: dict[Connection, float] = {}  # still sending a head: since when (oldest first)
        self.idle: dict[Connection, float] = {}  # idle keep-alive: since when (oldest first)
        self.watched: dict[Connection, None] = {}  # to be asked at every sweep whether a wait expired
        self.now = _clock()  # the loop's time, as of the last sweep: what client waits are measured with
        self.draining = False
        self.drained = asyncio.Event()  # set when draining and the last client connection closed

    # -- connections ---------------------------------------------------------------------------

    def admit(self, connection: Connection) -> bool:
        """Count a new connection in; at ``max_connections`` shed one to make room, or refuse (False)."""
        if len(self.connections) >= self.limits.max_connections and not self._shed():
            self.metrics.refused.labels("max_connections").inc()
            return False
        self.connections.add(connection)
        return True

    def _shed(self) -> bool:
        """Close the connection longest in its head, else the longest idle one: True if one went."""
        for registry, reason in ((self.heads, "shed_head"), (self.idle, "shed_idle")):
            for victim in registry:
                del registry[victim]
                self.connections.discard(victim)  # counted out now; its connection_lost comes later
                victim.abort()
                self.metrics.refused.labels(reason).inc()
                return True
        return False

    def gone(self, connection: Connection) -> None:
        """A connection closed: forget it everywhere."""
        self.connections.discard(connection)
        self.heads.pop(connection, None)
        self.idle.pop(connection, None)
        self.watched.pop(connection, None)
        if self.draining and not self.connections:
            self.drained.set()

    def sweep(self, now: float) -> None:
        """Act on every wait that has expired by ``now`` (the loop's clock)."""
        limits = self.limits
        due = now - limits.header_timeout
        late = []
        for connection, since in self.heads.items():
            if since > due:
                break
            late.append(connection)
        for connection in late:
            del self.heads[connection]
            connection.head_timed_out()
        due = now - limits.keepalive_timeout
        late = []
        for connection, since in self.idle.items():
            if since > due:
                break
            late.append(connection)
        for connection in late:
            del self.idle[connection]
            connection.close()
        for connection in list(self.watched):
            if not connection.expire(now):
                self.watched.pop(connection, None)

    async def sweeping(self) -> None:
        """Sweep every ``limits.tick`` seconds, for ever; give the heap's free pages back every second."""
        loop = asyncio.get_running_loop()
        tick = self.limits.tick
        trimmed = loop.time()
        while True:
            self.now = loop.time()
            await asyncio.sleep(tick)
            self.now = loop.time()
            self.sweep(self.now)
            self.metrics.flush()
            if self.now - trimmed >= _GIVE_BACK:
                trimmed = self.now
                heap.give_back()

    def close_idle(self) -> None:
        for connection in list(self.idle):
            connection.close()
