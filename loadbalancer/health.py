"""Active health checks: probe each instance on an interval and pass on only the healthy ones."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import random
import ssl as _ssl
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from ._filtered import Filtered, count
from ._runtime import RUNTIME
from ._util import describe, seconds
from .errors import UnhealthyError
from .instance import Instance
from .publisher import EndpointSet, Publisher

__all__ = ["HealthChecker", "HttpCheck"]

E = TypeVar("E")

Check = Callable[[Instance], Any]
"""A health check: called with the instance (sync or ``async``); healthy unless it returns ``False`` or raises."""

_MAX_HEADER = 16 * 1024


class HttpCheck:
    """An HTTP health check: ``GET path`` on the instance's address.

    Healthy when the answer's body is a JSON object whose ``"state"`` is ``"healthy"``
    (whatever the status), or, when the body says no ``"state"``, when the status is 200.
    An explicit other state (``{"state": "draining"}``) is unhealthy even with a 200. A
    refused connection, a timeout or a malformed answer is unhealthy. Each probe is one
    HTTP/1.0 request on a fresh connection (``https`` with ``ssl=``, a context or ``True``),
    run on the library's background loop; the body is read up to ``max_body`` bytes.

    >>> check = HttpCheck("/healthz")
    >>> check.url(Instance("127.0.0.1", 8080))
    'http://127.0.0.1:8080/healthz'
    """

    def __init__(
        self,
        path: str = "/health",
        *,
        ssl: _ssl.SSLContext | bool | None = None,
        headers: Mapping[str, str] | None = None,
        max_body: int = 64 * 1024,
    ) -> None:
        if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in " \r\n"):
            raise ValueError(f"path must be an absolute HTTP path such as '/health', got {path!r}")
        self.path = path
        self.ssl: _ssl.SSLContext | None = _ssl.create_default_context() if ssl is True else (ssl or None)
        self.headers = dict(headers or {})
        self.max_body = count(max_body, "max_body")

    def url(self, instance: Instance) -> str:
        """The URL probed for ``instance``."""
        return f"{'https' if self.ssl else 'http'}://{instance.address}{self.path}"

    async def __call__(self, instance: Instance) -> bool:
        """Probe ``instance``: ``True`` if healthy, else ``UnhealthyError`` saying why."""
        host = instance.host
        reader, writer = await asyncio.open_connection(host, instance.port, ssl=self.ssl)
        try:
            lines = [f"GET {self.path} HTTP/1.0", f"Host: {instance.address}", "Accept: application/json, */*"]
            lines += [f"{name}: {value}" for name, value in self.headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            answer = await reader.read(_MAX_HEADER + self.max_body)
            while len(answer) < _MAX_HEADER + self.max_body:
                more = await reader.read(_MAX_HEADER + self.max_body - len(answer))
                if not more:
                    break
                answer += more
        finally:
            writer.close()
        status, body = self._parse(answer, instance)
        state = _state(body)
        if state == "healthy" or (state is None and status == 200):
            return True
        said = f"state {state!r}" if state is not None else f"status {status}"
        raise UnhealthyError(f"GET {self.url(instance)}: {said}")

    def _parse(self, answer: bytes, instance: Instance) -> tuple[int, bytes]:
        head, separator, body = answer.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0]
        parts = status_line.split(None, 2)
        if not separator or len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise UnhealthyError(f"GET {self.url(instance)}: not an HTTP answer: {answer[:60]!r}")
        return int(parts[1]), body[: self.max_body]

    def __repr__(self) -> str:
        return f"HttpCheck({self.path!r})"


def _state(body: bytes) -> str | None:
    stripped = body.strip()
    if not stripped.startswith(b"{"):
        return None
    try:
        document = json.loads(stripped)
    except ValueError:
        return None
    state = document.get("state") if isinstance(document, dict) else None
    return state if isinstance(state, str) else None


class _Status:
    __slots__ = ("error", "failures", "healthy", "proven", "running", "since", "successes", "thread")

    def __init__(self, now: float) -> None:
        self.healthy = True  # in until a check says otherwise, so a new fleet is usable at once
        self.proven = False  # passed a check since it appeared
        self.successes = 0  # consecutive
        self.failures = 0  # consecutive
        self.running: asyncio.Lock | None = None  # held while a probe runs
        self.thread: concurrent.futures.Future[Any] | None = None  # its last sync check, perhaps hung still
        self.error: str | None = None
        self.since = now  # when it entered its current state (healthy or not), by the checker's clock


class HealthChecker(Filtered[E, E]):
    """Checks each instance of ``publisher`` every ``interval`` seconds; passes on the healthy ones.

    A publisher over ``publisher`` whose set is the inner set less the unhealthy instances
    (the endpoints themselves, unchanged). ``check`` is an ``HttpCheck`` (the default:
    ``GET /health``) or any function of the ``Instance``, sync or ``async``, that returns
    ``False`` or raises when the instance is unhealthy; a check that takes longer than
    ``timeout`` fails. An instance goes out after ``unhealthy_threshold`` failed checks in a
    row and comes back after ``healthy_threshold`` passed ones; an instance that is out is
    checked every ``unhealthy_interval`` seconds instead (Envoy's ``unhealthy_interval``;
    default: ``interval``), so that one back up is let in soon. A new instance counts as
    healthy and is checked at once; until its first check passes, one failure takes it out.
    If fewer than ``panic_threshold`` percent of the instances are healthy, all are passed
    on (panic). Checks run on the library's background loop, spread by ``jitter`` (a fraction
    of the interval); sync checks run on the library's own threads (16 at a time, never the
    application's default executor), a check that hangs is given up at its ``timeout`` and
    leaves the others their threads, and its instance gets no new one while it still hangs. Events:
    ``instance_unhealthy`` (WARNING, with the error), ``instance_healthy``, each with
    ``after``: the seconds the instance spent in its previous state, read from ``clock``
    (default ``time.monotonic``; any function returning seconds, such as a test's fake
    clock; the check interval itself runs on the background loop's timer). Counters:
    ``checks``, ``checks_failed``. Closing it closes ``publisher`` unless ``own=False``.
    ``check_now()`` waits for the checks, which run on the library's background loop: on
    that loop's thread (in a subscriber callback, say) use ``await acheck_now()``.

    >>> from loadbalancer import static
    >>> checker = HealthChecker(static.Publisher(["127.0.0.1:1", "127.0.0.1:2"], str),
    ...                         check=lambda instance: instance.port != 1)
    >>> checker.check_now()
    EndpointSet([127.0.0.1:2])
    >>> checker.close()
    """

    def __init__(
        self,
        publisher: Publisher[E],
        check: Check | None = None,
        *,
        interval: float | timedelta = 5.0,
        timeout: float | timedelta = 1.0,
        unhealthy_interval: float | timedelta | None = None,
        healthy_threshold: int = 2,
        unhealthy_threshold: int = 2,
        jitter: float = 0.1,
        panic_threshold: float = 50.0,
        logger: Any = None,
        own: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be a function returning seconds, such as time.monotonic, got {clock!r}")
        self._clock = clock
        check = HttpCheck() if check is None else check
        if not callable(check):
            raise TypeError(f"check must be an HttpCheck or a function of an Instance, got {check!r}")
        self._check = check
        self._async_check = inspect.iscoroutinefunction(check) or inspect.iscoroutinefunction(
            getattr(type(check), "__call__", None)  # noqa: B004 - the type's method: is it async?
        )
        self._interval = seconds(interval, "interval", allow_zero=False)
        self._unhealthy_interval = (
            self._interval
            if unhealthy_interval is None
            else seconds(unhealthy_interval, "unhealthy_interval", allow_zero=False)
        )
        self._timeout = seconds(timeout, "timeout", allow_zero=False)
        self._healthy_threshold = count(healthy_threshold, "healthy_threshold")
        self._unhealthy_threshold = count(unhealthy_threshold, "unhealthy_threshold")
        if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter < 1:
            raise ValueError(f"jitter must be a fraction from 0 to below 1, got {jitter!r}")
        self._jitter = float(jitter)
        self._status: dict[str, _Status] = {}
        self._instances: dict[str, Instance] = {}
        self.checks = 0  # counters a metrics layer can read
        self.checks_failed = 0
        super().__init__(publisher, panic_threshold=panic_threshold, logger=logger, own=own)
        self._start(self._run())

    def unhealthy(self) -> dict[str, str]:
        """The addresses out now, each with the last failed check's error."""
        with self._lock:
            return {address: self._status[address].error or "" for address in self._excluded}

    def check_now(self) -> EndpointSet[E]:
        """Check every instance now (waits for the checks) and return the resulting set.

        Raises ``RuntimeError`` on the library's background loop's thread (a subscriber
        callback runs there), where waiting would block the very loop that runs the checks:
        use ``await acheck_now()`` there.
        """
        if RUNTIME.in_loop_thread():
            raise RuntimeError(
                "HealthChecker.check_now() would block the library's runtime thread, on which the checks run;"
                " use `await checker.acheck_now()` in a coroutine there"
            )
        RUNTIME.submit(self._check_all()).result()
        return self.endpoints()

    async def acheck_now(self) -> EndpointSet[E]:
        """Async form of ``check_now()``."""
        await asyncio.wrap_future(RUNTIME.submit(self._check_all()))
        return self.endpoints()

    # -- checking ------------------------------------------------------------------------------

    async def _run(self) -> None:
        rng = random.Random()
        loop = asyncio.get_running_loop()
        while True:
            spread = self._interval * self._jitter
            due = loop.time() + self._interval + rng.uniform(-spread, spread)
            while due - loop.time() > self._unhealthy_interval:  # the ones that are out, more often
                await asyncio.sleep(self._unhealthy_interval)
                await self._check_all(unhealthy_only=True)
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self._check_all()

    async def _check_all(self, unhealthy_only: bool = False) -> None:
        with self._lock:
            instances = [
                instance
                for address, instance in self._instances.items()
                if not unhealthy_only or address in self._excluded
            ]
        await asyncio.gather(*(self._probe(instance) for instance in instances))

    async def _probe(self, instance: Instance) -> None:
        address = instance.address
        with self._lock:
            status = self._status.get(address)
            if status is None or self._closed:
                return
        # Probes run on the runtime loop only, so this lock needs no thread safety. A probe
        # that finds one running waits for its verdict instead of checking twice.
        if status.running is None:
            status.running = asyncio.Lock()
        if status.running.locked():
            async with status.running:
                return
        async with status.running:
            error = await self._verdict(instance, status)
        self._record(address, status, error)

    async def _verdict(self, instance: Instance, status: _Status) -> str | None:
        """``None`` if the check passed, else what went wrong."""
        try:
            if self._async_check:
                verdict = await asyncio.wait_for(self._check(instance), self._timeout)
            else:
                # On the runtime's own bounded threads, never the application's default executor;
                # an instance whose last check hangs still is not given another thread.
                if status.thread is not None and not status.thread.done():
                    return f"its last check is still running, past its {self._timeout:g}s"
                ticket = RUNTIME.workers.submit(self._check, instance, wait=0)
                if ticket is None:
                    return f"no thread free to check it: all {RUNTIME.workers.size} are checking"
                status.thread = ticket.future
                try:
                    verdict = await asyncio.wait_for(asyncio.wrap_future(ticket.future), self._timeout)
                except TimeoutError:
                    ticket.abandon()  # hung: its thread no longer counts (one per instance at most)
                    raise
                if inspect.isawaitable(verdict):
                    verdict = await asyncio.wait_for(verdict, self._timeout)
        except TimeoutError:
            return f"no answer within {self._timeout:g}s"
        except Exception as failure:
            return describe(failure)
        return "the check returned False" if verdict is False else None

    def _record(self, address: str, status: _Status, error: str | None) -> None:
        with self._lock:
            if self._closed or self._status.get(address) is not status:
                return  # the instance left while it was checked
            self.checks += 1
            if error is None:
                status.proven = True
                status.failures = 0
                status.successes += 1
                if not status.healthy and status.successes >= self._healthy_threshold:
                    now = self._clock()
                    status.healthy = True
                    status.error = None
                    after, status.since = now - status.since, now
                    del self._excluded[address]
                    self._log.info("instance_healthy", instance=address, checks=status.successes, after=round(after, 3))
                    self._refilter()
                return
            self.checks_failed += 1
            status.successes = 0
            status.failures += 1
            status.error = error
            if status.healthy and (status.failures >= self._unhealthy_threshold or not status.proven):
                now = self._clock()
                status.healthy = False
                after, status.since = now - status.since, now
                self._excluded[address] = "unhealthy"
                self._log.warning(
                    "instance_unhealthy", instance=address, error=error, checks=status.failures, after=round(after, 3)
                )
                self._refilter()

    # -- the filter's hooks ---------------------------------------------------------------------

    def _inner_changed(self, endpoints: EndpointSet[E]) -> None:
        present = {instance.address: instance for instance in endpoints.instances}
        for address in list(self._status):
            if address not in present:
                del self._status[address]
                self._excluded.pop(address, None)
        new = [instance for address, instance in present.items() if address not in self._status]
        for instance in new:
            self._status[instance.address] = _Status(self._clock())
        self._instances = present
        for instance in new:  # a newcomer is checked at once, not at the next round
            RUNTIME.submit(self._probe(instance))
