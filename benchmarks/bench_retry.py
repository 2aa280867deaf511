"""Target 2: ``Retry(3, 5.0, RoundRobin(pub))(req)`` on a first-attempt success costs at most
1/10 of tenacity wrapping a direct ``ep(req)`` call with ``stop_after_attempt(3)``.

The baseline is the cheapest of tenacity's spellings (all measured, the cheapest shown):
  sync:  ``retrying(ep, req)``, ``for attempt in retrying: with attempt: return ep(req)``
         (``retrying`` built once), and the same loop over ``Retrying(...)`` built per call;
  async: ``await retrying(ep, req)``, ``async for attempt in retrying: ...`` (built once),
         and ``async for attempt in AsyncRetrying(...): ...`` built per call.
The subject includes the balancer pick; the baseline calls one endpoint directly. An async
endpoint that suspends once (``await asyncio.sleep(0)``) is reported for information, as are
two parts of the async floor: ``await`` through one more coroutine layer, and what arming a
deadline per call costs at the least (``asyncio.current_task()`` and one ``loop.call_at()``).
"""

from __future__ import annotations

import asyncio
import functools
import time

import _harness as h
from tenacity import AsyncRetrying, Retrying, stop_after_attempt

from loadbalancer import Retry, RoundRobin, static

ROUNDS = 15
ADDRESSES = [f"10.0.0.{i}:8080" for i in range(1, 11)]


def sync_factory(address: str):
    def ep(request):
        return request

    return ep


def async_factory(address: str):
    async def ep(request):
        return request

    return ep


def suspending_factory(address: str):
    async def ep(request):
        await asyncio.sleep(0)
        return request

    return ep


def sync_cases(ep, call) -> dict[str, h.Sampler]:
    retrying = Retrying(stop=stop_after_attempt(3))

    def loop_prebuilt(req):
        for attempt in retrying:
            with attempt:
                return ep(req)
        raise AssertionError("unreachable: tenacity raises when the attempts run out")

    def loop_per_call(req):
        for attempt in Retrying(stop=stop_after_attempt(3)):
            with attempt:
                return ep(req)
        raise AssertionError("unreachable: tenacity raises when the attempts run out")

    for f in (functools.partial(retrying, ep), loop_prebuilt, loop_per_call, call):
        assert f("x") == "x"
    return {
        "bare": h.stmt_sampler("ep(req)", ep=ep, req="x"),
        "retrying(ep, req)": h.stmt_sampler("retrying(ep, req)", retrying=retrying, ep=ep, req="x"),
        "for attempt in retrying (built once)": h.stmt_sampler("f(req)", f=loop_prebuilt, req="x"),
        "for attempt in Retrying(...) per call": h.stmt_sampler("f(req)", f=loop_per_call, req="x"),
        "subject": h.stmt_sampler("call(req)", call=call, req="x"),
    }


def async_cases(loop: asyncio.AbstractEventLoop, ep, call) -> dict[str, h.Sampler]:
    retrying = AsyncRetrying(stop=stop_after_attempt(3))

    async def loop_prebuilt(req):
        async for attempt in retrying:
            with attempt:
                return await ep(req)
        raise AssertionError("unreachable: tenacity raises when the attempts run out")

    async def loop_per_call(req):
        async for attempt in AsyncRetrying(stop=stop_after_attempt(3)):
            with attempt:
                return await ep(req)
        raise AssertionError("unreachable: tenacity raises when the attempts run out")

    def sampler(fn) -> h.Sampler:
        async def run(n: int) -> float:
            req = "x"
            start = time.perf_counter()
            for _ in range(n):
                await fn(req)
            return (time.perf_counter() - start) / n

        assert loop.run_until_complete(fn("x")) == "x"
        return lambda n: loop.run_until_complete(run(n))

    async def layer(req):
        return await ep(req)

    async def arm(req):
        # what arming a deadline per call costs at the least: the task, and one timer handle
        asyncio.current_task()
        loop.call_at(1e9, _nothing).cancel()
        return req

    return {
        "bare": sampler(ep),
        "floor: one coroutine layer": sampler(layer),
        "floor: current_task() + call_at()": sampler(arm),
        "await retrying(ep, req)": sampler(functools.partial(retrying, ep)),
        "async for attempt in retrying (built once)": sampler(loop_prebuilt),
        "async for attempt in AsyncRetrying(...) per call": sampler(loop_per_call),
        "subject": sampler(call),
    }


def _nothing() -> None:
    pass


def compare(title: str, samples: dict[str, list[float]], subject_label: str, goal: float | None) -> None:
    tenacity_forms = [name for name in samples if name not in ("bare", "subject") and not name.startswith("floor")]
    cheapest = min(tenacity_forms, key=lambda name: sorted(samples[name])[len(samples[name]) // 2])
    h.report(
        title,
        f"tenacity: {cheapest}",
        samples[cheapest],
        subject_label,
        samples["subject"],
        goal=goal,
        goal_text=None if goal is None else f"<= {goal:g}x (1/10)",
        width=52,
    )
    others = ", ".join(f"{name} {h.fmt(min(samples[name])).strip()}" for name in tenacity_forms if name != cheapest)
    print(f"    info      other tenacity forms: {others}")
    bare = h.Comparison(samples["bare"], samples["subject"])
    print(f"    info      bare ep(req) {h.fmt(bare.baseline).strip()}; subject = bare x {bare.ratio:.2f}")
    for name in samples:
        if name.startswith("floor"):
            print(f"    info      {name}: {h.fmt(min(samples[name])).strip()}")


def main() -> None:
    started = h.header("target 2: Retry, first attempt succeeds")
    pub = static.Publisher(ADDRESSES, sync_factory)
    call = Retry(3, 5.0, RoundRobin(pub))
    samples = h.interleave(sync_cases(pub.endpoints()[0], call), ROUNDS)
    compare("2a. sync: call(req)", samples, "call(req)  [Retry(3, 5.0, RoundRobin(pub))]", 0.1)

    loop = asyncio.new_event_loop()
    for factory, title, goal in [
        (async_factory, "2b. async: await call(req)", 0.1),
        (suspending_factory, "2c. async, endpoint suspends once (sleep(0))", None),
    ]:
        pub = static.Publisher(ADDRESSES, factory)
        call = Retry(3, 5.0, RoundRobin(pub))
        samples = h.interleave(async_cases(loop, pub.endpoints()[0], call), ROUNDS)
        compare(title, samples, "await call(req)  [Retry(3, 5.0, RoundRobin(pub))]", goal)
    loop.close()
    h.footer(started)


if __name__ == "__main__":
    main()
