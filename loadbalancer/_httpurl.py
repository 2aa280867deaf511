"""A server's address, ``host:port`` or ``http[s]://host:port``, as the base URL an HTTP client is given.

In the core so that a backend and what is built over it (``consul`` and ``piloted``) read
addresses by one rule without importing each other's private modules.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["base_url"]


def base_url(address: str, *, default_port: int, what: str) -> str:
    """``address`` as ``scheme://host:port``: http when it has no scheme; ``default_port`` (https: 443) when no port.

    ``what`` names the address in errors: ``invalid Consul address 'ftp://x': ...``.

    >>> base_url("127.0.0.1", default_port=8500, what="Consul address")
    'http://127.0.0.1:8500'
    >>> base_url("https://[::1]", default_port=8500, what="Consul address")
    'https://[::1]:443'
    """
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"invalid {what} {address!r}: give host:port or http[s]://host:port")
    text = address.strip()
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid {what} {address!r}: give host:port or http[s]://host:port")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid {what} {address!r}: the port is not a number") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port or (443 if parts.scheme == 'https' else default_port)}"
