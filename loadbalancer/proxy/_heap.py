"""The workers' heap: kept for the next body chunks while bodies flow, given back when they stop (glibc).

Relayed bodies pass through as chunks of some 256 KiB. By default glibc serves each from a
fresh mmap, or trims the heap once they are freed, so the next chunk faults its pages in
again: some 390,000 minor faults a GiB, half the kernel's time. ``keep()`` has chunks below
4 MiB come from the heap and the heap keep up to 64 MiB free; ``give_back()``, called by the
worker's sweep every second, returns the free pages to the system (``malloc_trim``),
so that memory a burst took is not held for ever. Nothing happens elsewhere than glibc, or
when ``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_MMAP_THRESHOLD_`` is set (the user's choice).
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

__all__ = ["give_back", "keep"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_TRIM_THRESHOLD = 64 << 20
_MMAP_THRESHOLD = 4 << 20
_libc: Any = None  # set once the heap is kept


def keep() -> bool:
    """Keep freed memory in the heap for the next chunks; whether that was done."""
    global _libc
    if platform.libc_ver()[0] != "glibc" or {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"} & set(os.environ):
        return False
    try:
        libc = ctypes.CDLL(None)
        if not (libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)):
            return False
    except (OSError, AttributeError):
        return False
    _libc = libc
    return True


def give_back() -> None:
    """Return the heap's free pages to the system (a no-op unless ``keep()`` was done)."""
    if _libc is not None:
        _libc.malloc_trim(0)
