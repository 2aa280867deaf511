"""Passive outlier ejection: take an instance out of the set after it fails calls in a row."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from ._feedback import track
from ._filtered import Filtered, count, percent
from ._runtime import RUNTIME
from ._util import describe, seconds
from .budget import retryable
from .instance import Instance
from .publisher import EndpointSet, Publisher
from .tracked import TrackedEndpoint

__all__ = ["OutlierDetector"]

E = TypeVar("E")

Failure = Callable[[BaseException], bool] | type[BaseException] | tuple[type[BaseException], ...]


class _Record:
    """What the detector knows of one address; outlives the wrappers made for it."""

    __slots__ = ("ejected_at", "ejections", "failures", "return_at", "returned_at", "token")

    def __init__(self) -> None:
        self.failures = 0  # consecutive failed calls
        self.ejections = 0  # how many ejections the next ejection time is multiplied by, less decay
        self.ejected_at = 0.0
        self.return_at = 0.0  # when an ejection ends, by the detector's clock
        self.returned_at = 0.0
        self.token = 0  # bumped by every ejection, so a stale return timer does nothing


class OutlierDetector(Filtered[E, TrackedEndpoint[E]]):
    """Ejects an instance that fails ``consecutive_failures`` calls in a row, for a while.

    A publisher over ``publisher``: its set is the inner set less the ejected instances, so
    every balancer over it stops picking them. It learns from the calls themselves: its
    endpoints are ``TrackedEndpoint`` wrappers (sync or async) that report each outcome.
    A failure is an exception for which ``failure`` holds (exception types or a predicate;
    by default ``loadbalancer.retryable``: anything but programming errors; cancellation
    never counts); a success resets the count.

    An ejected instance comes back after ``base_ejection_time`` x the number of times it was
    ejected (at most ``max_ejection_time``); each ``base_ejection_time`` it then stays in
    without an ejection forgives one of them. At most ``max_ejection_percent`` of the set is
    ejected at once (rounded down: with 3 instances and 50%, one). If fewer than
    ``panic_threshold`` percent of the instances are left in, all are passed on (panic).
    Times are read from ``clock`` (default ``time.monotonic``; any function returning
    seconds, such as a test's fake clock). An ejection ends when ``clock`` says its time is
    up: checked by a timer on the library's background loop at the expected time, and at
    every call outcome the detector learns of (so a fake clock moved forward takes effect
    at the next call).
    Events: ``instance_ejected`` (WARNING), ``instance_returned``, ``ejection_refused``.
    Counters: ``ejections``, ``returns``, ``failures``. Closing it closes ``publisher``
    unless ``own=False``.

    >>> from loadbalancer import RoundRobin, static
    >>> def factory(address):
    ...     def call(request):
    ...         if address.endswith(":1"):
    ...             raise ConnectionRefusedError(address)
    ...         return "ok"
    ...     return call
    >>> detector = OutlierDetector(static.Publisher(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], factory),
    ...                            consecutive_failures=2)
    >>> bad = detector.endpoints()[0]
    >>> for _ in range(2):
    ...     try:
    ...         bad("ping")
    ...     except ConnectionRefusedError:
    ...         pass
    >>> [str(e) for e in detector.endpoints()], detector.ejections
    (['127.0.0.1:2', '127.0.0.1:3'], 1)
    >>> detector.close()
    """

    def __init__(
        self,
        publisher: Publisher[E],
        *,
        consecutive_failures: int = 5,
        failure: Failure = retryable,
        base_ejection_time: float | timedelta = 30.0,
        max_ejection_time: float | timedelta = 300.0,
        max_ejection_percent: float = 50.0,
        panic_threshold: float = 50.0,
        logger: Any = None,
        own: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be a function returning seconds, such as time.monotonic, got {clock!r}")
        self._clock = clock
        self._next_return = math.inf  # the earliest return_at of an ejected instance
        self._threshold = count(consecutive_failures, "consecutive_failures")
        self._counts = _classifier(failure)
        self._base = seconds(base_ejection_time, "base_ejection_time", allow_zero=False)
        self._max_time = seconds(max_ejection_time, "max_ejection_time", allow_zero=False)
        if self._max_time < self._base:
            raise ValueError(
                f"max_ejection_time ({self._max_time}) must not be below base_ejection_time ({self._base})"
            )
        self._max_percent = percent(max_ejection_percent, "max_ejection_percent")
        self._records: dict[str, _Record] = {}
        self._wrappers: dict[str, TrackedEndpoint[E]] = {}
        self._count_lock = threading.Lock()
        self.ejections = 0  # counters a metrics layer can read
        self.returns = 0
        self.failures = 0
        super().__init__(publisher, panic_threshold=panic_threshold, logger=logger, own=own)

    def ejected(self) -> list[str]:
        """The addresses ejected now."""
        with self._lock:
            return [address for address, why in self._excluded.items() if why == "ejected"]

    # -- the observer the wrappers report to ---------------------------------------------------

    def attach(self, tracked: TrackedEndpoint[Any]) -> None:
        pass  # the per-address _Record is found by address: it outlives wrappers

    def started(self, tracked: TrackedEndpoint[Any]) -> None:
        pass

    def finished(self, tracked: TrackedEndpoint[Any], latency: float, error: BaseException | None) -> None:
        if self._next_return != math.inf and self._clock() >= self._next_return:
            self._return_due()
        record = self._records.get(tracked.instance.address)
        if record is None:
            return  # the instance left the set while the call ran
        if error is None:
            record.failures = 0
            return
        if not isinstance(error, Exception) or not self._counts(error):
            return  # cancellation, exits, or an error that is not the instance's fault
        with self._count_lock:
            self.failures += 1
            record.failures += 1
            tripped = record.failures >= self._threshold
        if tripped:
            self._eject(tracked.instance.address, record, error)

    # -- ejection and return ---------------------------------------------------------------------

    def _eject(self, address: str, record: _Record, error: BaseException) -> None:
        with self._lock:
            if self._closed or self._records.get(address) is not record or address in self._excluded:
                return
            total = len(self._inner_set)
            ejected = sum(1 for why in self._excluded.values() if why == "ejected")
            limit = math.floor(total * self._max_percent / 100)
            if ejected >= limit:
                if record.failures == self._threshold:  # log once per run of failures
                    self._log.warning(
                        "ejection_refused",
                        instance=address,
                        failures=record.failures,
                        ejected=ejected,
                        max_ejection_percent=self._max_percent,
                    )
                return
            now = self._clock()
            if record.ejections:
                forgiven = int((now - record.returned_at) // self._base)
                record.ejections = max(0, record.ejections - forgiven)
            record.ejections += 1
            duration = min(self._base * record.ejections, self._max_time)
            record.token += 1
            record.ejected_at = now
            record.return_at = now + duration
            self._next_return = min(self._next_return, record.return_at)
            self._excluded[address] = "ejected"
            self.ejections += 1
            self._log.warning(
                "instance_ejected",
                instance=address,
                failures=record.failures,
                error=describe(error),
                seconds=duration,
                times=record.ejections,
            )
            RUNTIME.call_later(duration, self._return, address, record, record.token)
            self._refilter()

    def _return(self, address: str, record: _Record, token: int) -> None:
        """The return timer: bring the instance back if the clock says it is time, else wait on."""
        with self._lock:
            if self._closed or record.token != token or self._excluded.get(address) != "ejected":
                return
            remaining = record.return_at - self._clock()
            if remaining > 0:  # the loop's timer ran early, or a fake clock has not got there yet
                RUNTIME.call_later(max(remaining, 0.001), self._return, address, record, token)
                return
        self._return_due()

    def _return_due(self) -> None:
        """Bring back every ejected instance whose time is up."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            earliest = math.inf
            returned = False
            for address, why in list(self._excluded.items()):
                record = self._records.get(address)
                if why != "ejected" or record is None:
                    continue
                if record.return_at > now:
                    earliest = min(earliest, record.return_at)
                    continue
                del self._excluded[address]
                record.failures = 0
                record.returned_at = now
                self.returns += 1
                returned = True
                self._log.info("instance_returned", instance=address, after=round(now - record.ejected_at, 3))
            self._next_return = earliest
            if returned:
                self._refilter()

    # -- the filter's hooks ---------------------------------------------------------------------

    def _inner_changed(self, endpoints: EndpointSet[E]) -> None:
        present = {instance.address for instance in endpoints.instances}
        for address in list(self._records):
            if address not in present:  # gone from the source: forget it, ejected or not
                del self._records[address]
                self._wrappers.pop(address, None)
                self._excluded.pop(address, None)
        for address in present:
            if address not in self._records:
                self._records[address] = _Record()

    def _wrap(self, endpoint: E, instance: Instance) -> TrackedEndpoint[E]:
        wrapper = self._wrappers.get(instance.address)
        if wrapper is None or wrapper.endpoint is not endpoint:
            wrapper = self._wrappers[instance.address] = track(endpoint, instance, self, service=self._service)
        else:
            wrapper.instance = instance
        return wrapper


def _classifier(failure: Failure) -> Callable[[BaseException], bool]:
    if isinstance(failure, type) and issubclass(failure, BaseException):
        kind: type[BaseException] = failure
        return lambda error: isinstance(error, kind)
    if isinstance(failure, tuple) and all(isinstance(k, type) and issubclass(k, BaseException) for k in failure):
        kinds = failure
        return lambda error: isinstance(error, kinds)
    if callable(failure):
        return failure  # type: ignore[return-value]
    raise TypeError(f"failure must be exception types or a predicate, got {failure!r}")
