"""Refresh publishers when the process gets a signal (SIGHUP by default), as ContainerPilot expects."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from .._runtime import RUNTIME
from ..publisher import Publisher

__all__ = ["SignalRefresh", "refresh_on_signal"]

_Handler = Any  # what signal.getsignal returns: a callable, SIG_DFL, SIG_IGN or None


class SignalRefresh:
    """An installed signal handler that refreshes publishers; ``remove()`` puts the old one back.

    Returned by ``refresh_on_signal``; also a context manager:

    >>> from loadbalancer import static
    >>> publisher = static.Publisher(["10.0.0.1:80"], str)
    >>> handler = refresh_on_signal(publisher, signum=signal.SIGUSR2)
    >>> handler.remove()  # SIGUSR2 does what it did before
    >>> publisher.close()
    """

    def __init__(self, publishers: tuple[Publisher[Any], ...], signum: int) -> None:
        self.publishers = publishers
        self.signum = signum
        self._previous: _Handler = signal.getsignal(signum)
        self._installed = True
        signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes of whatever it was doing: only
        # schedule work on the runtime; take no lock, wait for nothing.
        for publisher in self.publishers:
            if publisher.closed:
                continue
            refresh_soon = getattr(publisher, "refresh_soon", None)
            if callable(refresh_soon):
                refresh_soon()
            else:
                RUNTIME.call_soon(RUNTIME.submit, publisher.arefresh())
        if callable(self._previous):
            self._previous(signum, frame)

    def remove(self) -> None:
        """Restore the handler that was there before (idempotent; main thread only).

        If another handler replaced this one meanwhile, that one is left in place.
        """
        if not self._installed:
            return
        _require_main_thread("SignalRefresh.remove()")
        self._installed = False
        if signal.getsignal(self.signum) == self._handle:
            signal.signal(self.signum, self._previous if self._previous is not None else signal.SIG_DFL)

    def __enter__(self) -> SignalRefresh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "installed" if self._installed else "removed"
        return f"SignalRefresh({signal.Signals(self.signum).name}, {len(self.publishers)} publishers, {state})"


def refresh_on_signal(*publishers: Publisher[Any], signum: int = signal.SIGHUP) -> SignalRefresh:
    """Refresh ``publishers`` (without waiting) each time the process receives ``signum``.

    ContainerPilot and similar supervisors send SIGHUP when the service catalogue changes.
    A handler that was there before is called too after the refreshes are scheduled; call
    ``remove()`` on the result (or leave its ``with`` block) to restore it. Python runs
    signal handlers in the main thread only, so this must be called there.

    >>> import signal
    >>> from loadbalancer import static
    >>> publisher = static.Publisher(["10.0.0.1:80"], str)
    >>> with refresh_on_signal(publisher, signum=signal.SIGUSR1):
    ...     pass  # SIGUSR1 now refreshes the publisher
    >>> publisher.close()
    """
    if not publishers:
        raise ValueError("refresh_on_signal() needs at least one publisher")
    for publisher in publishers:
        if not isinstance(publisher, Publisher):
            raise TypeError(f"refresh_on_signal() takes loadbalancer publishers, got {publisher!r}")
    signum = signal.Signals(signum)  # a clear ValueError for a number that is no signal
    _require_main_thread("refresh_on_signal()")
    return SignalRefresh(tuple(publishers), signum)


def _require_main_thread(what: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(f"{what} must be called from the main thread: Python runs signal handlers only there")
