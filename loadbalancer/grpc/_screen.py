"""What the channels watch on each sub-channel to leave an instance out of the balancer's set.

``Screen`` is a filter over the sub-channels fed by watchers, each reporting per instance
why it should not be called (or ``None``). Two kinds: its connectivity, as grpc's own
``round_robin`` reads it (out on TRANSIENT_FAILURE, until READY or IDLE again, unless every
instance is out: then a failing connection is still tried, since its call fails fast); and,
with ``health_check=True``, its ``grpc.health.v1`` status, which is absolute (an instance
that says it does not serve is never called).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from .._filtered import Filtered
from ..publisher import EndpointSet, Publisher

__all__ = ["LoopTasks", "Report", "Screen", "StatePoller", "Watcher", "connectivity_task", "connectivity_thread"]

Report = Callable[[str | None], None]  # None: fit to call; else why not
Watcher = Callable[[Any, Report], Callable[[], None]]  # (sub-channel, report) -> stop
_SOFT = "connectivity"  # watchers of this kind give way when every instance is out


class Screen(Filtered[Any, Any]):
    """A filter over the sub-channels: out while a watcher says so."""

    def __init__(self, publisher: Publisher[Any], watchers: dict[str, Watcher], logger: Any) -> None:
        self._watchers = watchers
        self._stops: dict[str, list[Callable[[], None]]] = {}
        self._why: dict[str, dict[str, str]] = {}  # address -> kind -> why out
        super().__init__(publisher, panic_threshold=0, logger=logger, own=False)

    def _inner_changed(self, endpoints: EndpointSet[Any]) -> None:
        current = {instance.address: sub for sub, instance in zip(endpoints, endpoints.instances, strict=True)}
        for address in [a for a in self._stops if a not in current]:
            for stop in self._stops.pop(address):
                stop()
            self._why.pop(address, None)
        for address, sub in current.items():
            if address not in self._stops:
                self._stops[address] = [
                    watcher(sub, self._reporter(address, kind)) for kind, watcher in self._watchers.items()
                ]
        self._rule()

    def _reporter(self, address: str, kind: str) -> Report:
        def report(why: str | None) -> None:
            with self._lock:
                if address not in self._stops:
                    return
                reasons = self._why.setdefault(address, {})
                if reasons.get(kind) == why:
                    return
                if why is None:
                    reasons.pop(kind, None)
                else:
                    reasons[kind] = why
                if kind != _SOFT:
                    log = self._log.info if why is None else self._log.warning
                    log("instance_healthy" if why is None else "instance_unhealthy", instance=address, health=why)
                self._rule()
            self._refilter()

        return report

    def _rule(self) -> None:
        """Who is out: every instance a hard reason rules out; the soft ones only if some instance is left."""
        hard = {a: r[k] for a, r in self._why.items() for k in r if k != _SOFT}
        soft = {a: r[_SOFT] for a, r in self._why.items() if _SOFT in r and a not in hard}
        left = len(self._stops) - len(hard) - len(soft)
        self._excluded = {**hard, **soft} if left > 0 else hard

    def _stop(self) -> None:
        with self._lock:
            stops, self._stops = [s for group in self._stops.values() for s in group], {}
        for stop in stops:
            stop()


def _verdict(state: grpc.ChannelConnectivity, out: bool) -> bool:
    """Whether a sub-channel is out after ``state``: from TRANSIENT_FAILURE until READY (or IDLE)."""
    if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
        return True
    if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE):
        return False
    return out


def connectivity_thread(sub: Any, report: Report) -> Callable[[], None]:
    """Watches a sync sub-channel's connectivity (grpc calls back on its own thread)."""
    out = [False]

    def changed(state: grpc.ChannelConnectivity) -> None:
        out[0] = _verdict(state, out[0])
        report(state.name if out[0] else None)

    sub.channel.subscribe(changed)
    return lambda: sub.channel.unsubscribe(changed)


class LoopTasks:
    """The watch tasks of an aio channel, on its loop, started from any thread.

    A watch ends by itself when its sub-channel closes (its stream or its wait for a state
    change ends with the channel): cancelling it instead would leave grpc's operation
    pending in grpc's core, to complete later on a loop that may be closed by then.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.tasks: set[asyncio.Task[None]] = set()
        self.idle: set[asyncio.Task[None]] = set()  # tasks that only sleep between reads: cancelled at once

    def watcher(self, run: Callable[[Any, Report], Coroutine[Any, Any, None]]) -> Watcher:
        """A watcher that runs ``run(sub, report)`` as a task, until the sub-channel closes."""
        loop = self.loop

        def watcher(sub: Any, report: Report) -> Callable[[], None]:
            def start() -> None:
                if not sub.closed:
                    task = loop.create_task(run(sub, report))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)

            if not loop.is_closed():
                loop.call_soon_threadsafe(start)
            return _nothing  # the instance left: its watch ends with its channel

        return watcher

    async def aclose(self, patience: float = 1.0) -> None:
        """Once the sub-channels are closed: wait for the watches to end (cancelled past ``patience`` seconds)."""
        for task in self.idle:
            task.cancel()
        tasks = list(self.tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=patience)
            for task in late:
                task.cancel()


def _nothing() -> None:
    pass


class StatePoller:
    """Reads every aio sub-channel's connectivity a few times a second, in one task on the loop.

    Polled rather than awaited: grpc.aio's ``wait_for_state_change`` leaves an operation in
    grpc's core when the channel closes under it, which then never ends (or ends on a loop
    closed by then). A read is cheap and leaves nothing behind.
    """

    def __init__(self, tasks: LoopTasks, period: float = 0.25) -> None:
        self._tasks = tasks
        self._period = period
        self._watched: dict[Any, tuple[Report, list[bool]]] = {}  # sub -> (report, [out])
        self._task: asyncio.Task[None] | None = None

    def watcher(self, sub: Any, report: Report) -> Callable[[], None]:
        loop = self._tasks.loop

        def start() -> None:
            self._watched[sub] = (report, [False])
            if self._task is None or self._task.done():
                self._task = task = loop.create_task(self._run())
                self._tasks.tasks.add(task)
                self._tasks.idle.add(task)
                task.add_done_callback(self._tasks.tasks.discard)
                task.add_done_callback(self._tasks.idle.discard)

        def stop() -> None:
            self._watched.pop(sub, None)

        def stop_soon() -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(stop)

        if not loop.is_closed():
            loop.call_soon_threadsafe(start)
        return stop_soon

    async def _run(self) -> None:
        while self._watched:
            for sub, (report, out) in list(self._watched.items()):
                channel = sub._channel
                if sub.closed or channel is None:
                    continue  # not made yet: nothing has been sent to it
                state = channel.get_state()
                out[0] = _verdict(state, out[0])
                report(state.name if out[0] else None)
            await asyncio.sleep(self._period)


def connectivity_task(tasks: LoopTasks) -> Watcher:
    """Watches the aio sub-channels' connectivity (one poller per channel)."""
    return StatePoller(tasks).watcher
