"""The response cache of ``-cache``: GET/HEAD, keyed on method, full URL and ``Vary``, bounded in bytes."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cachetools

__all__ = ["Cache", "Entry", "freshness"]

Headers = Sequence[tuple[bytes, bytes]]
CACHEABLE_METHODS = frozenset({b"GET", b"HEAD"})
CACHEABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 410})


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored answer: status, the backend's end-to-end headers, the body, when it goes stale."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    stored: float
    expires: float
    vary: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(name) + len(value) + 4 for name, value in self.headers) + 64


def _directives(value: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in value.decode("latin-1").split(","):
        name, _, argument = part.strip().partition("=")
        if name:
            found[name.lower()] = argument.strip().strip('"')
    return found


def _seconds(text: str | None) -> float | None:
    if text is None or not text.isdigit():
        return None
    return float(text)


def freshness(headers: Headers, now: float, default_ttl: float = 0.0) -> float | None:
    """How long a shared cache may keep an answer with ``headers``, or None when it must not store it.

    ``no-store`` and ``private`` forbid storing; ``s-maxage`` beats ``max-age``, which beats
    ``Expires`` (against ``Date``); without any of these, ``default_ttl`` (0: not stored).
    """
    control: dict[str, str] = {}
    expires = date = None
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"cache-control":
            control.update(_directives(value))
        elif lowered == b"expires":
            expires = value
        elif lowered == b"date":
            date = value
        elif lowered == b"set-cookie":
            return None  # a personal answer
    if "no-store" in control or "private" in control or "no-cache" in control:
        return None
    for directive in ("s-maxage", "max-age"):
        if directive in control:
            ttl = _seconds(control[directive])
            return ttl if ttl else None
    if expires is not None:
        try:
            expires_at = email.utils.parsedate_to_datetime(expires.decode("latin-1")).timestamp()
            base = email.utils.parsedate_to_datetime(date.decode("latin-1")).timestamp() if date else time.time()
        except (TypeError, ValueError):
            return None  # an invalid Expires means already expired
        ttl = expires_at - base
        return ttl if ttl > 0 else None
    return default_ttl or None


class Cache:
    """A byte-bounded LRU (cachetools) of answers; ``hits``/``misses`` count lookups."""

    def __init__(
        self,
        max_bytes: int,
        *,
        max_entry: int = 1 << 20,
        default_ttl: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: cachetools.LRUCache[bytes, Entry] = cachetools.LRUCache(
            maxsize=max_bytes, getsizeof=lambda entry: entry.size
        )
        self._vary: dict[bytes, tuple[bytes, ...]] = {}  # base key -> the request headers it varies on
        self.max_entry = min(max_entry, max_bytes)
        self.default_ttl = default_ttl
        self._clock = clock
        self.hits = 0
        self.misses = 0

    @staticmethod
    def base_key(method: bytes, url: bytes) -> bytes:
        return method + b" " + url

    def _key(self, base: bytes, vary: tuple[bytes, ...], request_headers: dict[bytes, bytes]) -> bytes:
        if not vary:
            return base
        return base + b"\n" + b"\n".join(name + b":" + request_headers.get(name, b"") for name in vary)

    def lookup(self, base: bytes, request_headers: dict[bytes, bytes]) -> Entry | None:
        """The fresh entry for this request (``request_headers``: lower-case names), counting a hit or miss."""
        vary = self._vary.get(base)
        entry = None if vary is None else self._entries.get(self._key(base, vary, request_headers))
        if entry is not None and entry.expires <= self._clock():
            entry = None
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def store(
        self, base: bytes, request_headers: dict[bytes, bytes], status: int, headers: Headers, body: bytes
    ) -> bool:
        """Store an answer if the rules allow it; True if stored."""
        if status not in CACHEABLE_STATUSES or len(body) > self.max_entry:
            return False
        now = self._clock()
        ttl = freshness(headers, time.time(), self.default_ttl)
        if ttl is None:
            return False
        vary: list[bytes] = []
        for name, value in headers:
            if name.lower() == b"vary":
                vary += [part.strip().lower() for part in value.split(b",") if part.strip()]
        if b"*" in vary:
            return False
        vary_names = tuple(sorted(set(vary)))
        entry = Entry(status, tuple(headers), body, now, now + ttl, vary_names)
        if entry.size > self._entries.maxsize:
            return False
        self._vary[base] = vary_names
        self._entries[self._key(base, vary_names, request_headers)] = entry
        if len(self._vary) > 4 * max(len(self._entries), 1024):  # forget keys whose entries were evicted
            self._vary = {key: names for key, names in self._vary.items() if self._key(key, names, {}) in self._entries}
        return True

    @property
    def size(self) -> int:
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)
