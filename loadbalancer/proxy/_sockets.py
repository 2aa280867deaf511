"""The proxy's listening sockets: the port its supervisor holds, and each worker's own socket on it."""

from __future__ import annotations

import socket

__all__ = ["claim_port", "listening_socket"]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def claim_port(host: str, port: int) -> socket.socket:
    """Hold ``host:port`` for this proxy's workers alone; ``OSError`` (EADDRINUSE) if anything listens there.

    A probe bound without ``SO_REUSEPORT`` fails if any socket is bound to the address, a
    running proxy's included, where a ``SO_REUSEPORT`` socket would silently join it and take
    part of its traffic. The holder, bound next with ``SO_REUSEPORT`` only, keeps the port
    while the workers (same user, ``SO_REUSEPORT``) listen beside it, and makes the probe of
    any later proxy fail: a socket bound without ``SO_REUSEADDR`` conflicts with it.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        probe.bind((host, port))
        port = probe.getsockname()[1]
    holder = socket.socket(_family(host), socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError:
        holder.close()
        raise
    return holder


def listening_socket(host: str, port: int) -> socket.socket:
    """A worker's own listening socket on the port its supervisor holds (the kernel spreads connections)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock
