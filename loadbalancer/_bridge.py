"""The one bridge between callers' threads and event loops and the library's runtime loop.

Discovery clients live on the runtime loop. A sync caller waits for work submitted there;
an async caller in another loop awaits it; a caller *on* the runtime thread must not block
it (it would wait for itself for ever), so the sync forms refuse there with an error that
names the async form to use instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._runtime import RUNTIME

T = TypeVar("T")


def wait_on_runtime(
    work: Coroutine[Any, Any, T] | concurrent.futures.Future[T], what: str, instead: str = "its async form"
) -> T:
    """Run ``work`` (a coroutine, or a future already submitted) on the runtime and wait for its result.

    Raises ``RuntimeError`` on the runtime's own thread, naming ``what`` was called and
    what to use ``instead``.
    """
    if RUNTIME.in_loop_thread():
        if isinstance(work, Coroutine):
            work.close()
        raise RuntimeError(f"{what} would block the library's runtime thread; use {instead} there")
    future = RUNTIME.submit(work) if isinstance(work, Coroutine) else work
    return future.result()


async def await_on_runtime(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` on the library's runtime and await it from any loop (directly when already there)."""
    if RUNTIME.in_loop_thread():
        return await work
    return await asyncio.wrap_future(RUNTIME.submit(work))
