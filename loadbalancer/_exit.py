"""The one exit-cleanup registry: what must be undone when the interpreter exits (registrations).

Registrars add themselves while registered and leave when closed. At exit each one's
``_at_exit()`` coroutine runs on the library's runtime, all together, bounded in time,
before the runtime stops (atexit runs hooks in reverse order of registration, and this
module registers after importing the runtime).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, Protocol

from ._runtime import RUNTIME

EXIT_WAIT = 3.0  # seconds the interpreter's exit waits for every registration to be undone


class Cleanup(Protocol):
    def _at_exit(self) -> Coroutine[Any, Any, None]:
        """Undo what must not outlive the process (best effort, quickly)."""
        ...


_live: set[Any] = set()  # held strongly: a registration must be undone even if its registrar was dropped
_lock = threading.Lock()


def track(item: Cleanup) -> None:
    """Undo ``item`` at exit unless ``untrack``-ed first."""
    with _lock:
        _live.add(item)


def untrack(item: Cleanup) -> None:
    with _lock:
        _live.discard(item)


def run_all(wait: float = EXIT_WAIT) -> None:
    """Run every tracked item's ``_at_exit()`` on the runtime and wait up to ``wait`` seconds."""
    with _lock:
        live = list(_live)
        _live.clear()
    futures = []
    for item in live:
        try:
            futures.append(RUNTIME.submit(item._at_exit()))
        except Exception:  # pragma: no cover - the runtime is gone: nothing more can be done
            continue
    if futures:
        concurrent.futures.wait(futures, timeout=wait)


atexit.register(run_all)
